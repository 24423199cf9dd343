// What the machine offers, so tests can skip with a reason instead of failing on a missing tool.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addonAvailable, addonPath } from '../../runtime/native.js';

/** Repository root (two levels above dist/test/helpers). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = join(ROOT, 'bin', 'capybara.js');
/** Compiled helper scripts (dist/test/helpers). */
export const HELPERS = dirname(fileURLToPath(import.meta.url));

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** undefined when the real addon loads, else why not (for { skip }). */
export function addonSkip(): string | undefined {
  return addonAvailable() ? undefined : `native addon not built (${addonPath()})`;
}

/**
 * `full` scaled by $CAPYBARA_TEST_SCALE (default 1, must be in (0, 1]), rounded, never below `min`. The
 * long mem-wire tests size their work with it so the sanitizer run (scripts/test-asan.sh, ~5-10x slower)
 * still runs every path, just on less data.
 */
export function scaled(full: number, min: number): number {
  const raw = process.env.CAPYBARA_TEST_SCALE;
  const s = raw === undefined || raw === '' ? 1 : Number(raw);
  if (!(s > 0 && s <= 1)) throw new RangeError(`CAPYBARA_TEST_SCALE must be in (0, 1], got ${raw}`);
  return Math.max(min, Math.round(full * s));
}

/** undefined when network namespaces can be made, else why not. */
export function netnsSkip(): string | undefined {
  if (!isRoot()) return 'needs root for network namespaces';
  if (!hasCommand('ip')) return 'iproute2 (ip) not installed';
  if (spawnSync('ip', ['netns', 'list'], { stdio: 'ignore' }).status !== 0) return 'ip netns not usable here';
  return undefined;
}

/** Runs the CLI synchronously (with a time limit); returns status and output. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like cli() but without blocking this process (needed when the CLI talks to a server in this process). */
export function cliAsync(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
