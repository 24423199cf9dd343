// Fixtures for interop tests: start `capybara serve --on HOST` and tools inside namespaces, always with
// a time limit, and stop them for sure in after() hooks.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { run, stopProcess } from '../../dataplane/exec.js';
import { down, status, up } from '../../dataplane/testbed.js';
import { BIN, HELPERS } from './env.js';

export interface Running {
  child: ChildProcess;
  info: Record<string, unknown>;
  stderr(): string;
  stop(): Promise<void>;
}

/** Waits for the first JSON line on stdout that satisfies accept(); rejects if the process exits first. */
function firstJsonLine(child: ChildProcess, accept: (j: Record<string, unknown>) => boolean, timeoutMs: number, what: string, err: () => string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => finish(new Error(`${what}: no ready line within ${timeoutMs} ms; stderr: ${err()}`)), timeoutMs);
    const finish = (e: Error | null, v?: Record<string, unknown>) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      child.stdout?.resume();
      if (e) reject(e);
      else resolve(v!);
    };
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        try {
          const j = JSON.parse(l) as Record<string, unknown>;
          if (accept(j)) return finish(null, j);
        } catch {
          // not JSON
        }
      }
    };
    const onExit = (code: number | null) => finish(new Error(`${what} exited (${code}) before it was ready; stderr: ${err()}`));
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}

function track(child: ChildProcess): () => string {
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  return () => stderr;
}

/** capybara serve APP --on HOST [...extra]; resolves once it printed its listening line. */
export async function startServe(app: string, host: string, port: number, name: string, timeoutMs = 30_000, extra: string[] = []): Promise<Running> {
  const child = spawn(process.execPath, [BIN, 'serve', app, '--on', host, '--port', String(port), '--name', name, '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  const err = track(child);
  const r: Running = { child, info: {}, stderr: err, stop: () => stopProcess(child, 'SIGTERM', 5000) };
  try {
    r.info = await firstJsonLine(child, (j) => j.event === 'listening', timeoutMs, `serve ${app} --on ${host}`, err);
  } catch (e) {
    await r.stop();
    throw e;
  }
  return r;
}

/** A long-running tcp-tool mode in ns (e.g. http-server); resolves when it printed its ready line. */
export async function startTool(ns: string, args: string[], timeoutMs = 15_000): Promise<Running> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, join(HELPERS, 'tcp-tool.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const err = track(child);
  const r: Running = { child, info: {}, stderr: err, stop: () => stopProcess(child, 'SIGTERM', 3000) };
  try {
    r.info = await firstJsonLine(child, () => true, timeoutMs, `tcp-tool ${args[0]} in ${ns}`, err);
  } catch (e) {
    await r.stop();
    throw e;
  }
  return r;
}

/** Runs a tcp-tool mode in ns to completion and returns its JSON line. */
export async function runTool(ns: string, args: string[], timeoutMs: number): Promise<Record<string, unknown>> {
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, join(HELPERS, 'tcp-tool.js'), ...args], { timeoutMs });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`tcp-tool ${args.join(' ')} in ${ns} gave no result (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

/**
 * Brings the testbed up for a test file and returns the matching teardown: it removes the testbed
 * only when this file made it, so a testbed someone is using by hand survives the test run.
 */
export async function useTestbed(): Promise<() => Promise<void>> {
  const wasUp = (await status()).up;
  await up();
  return async () => {
    if (!wasUp) await down();
  };
}
