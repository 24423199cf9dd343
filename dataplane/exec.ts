// Running system tools (ip, ethtool, sysctl, mount) without a shell, with a bound on time, and running
// programs inside a network namespace. Everything the testbed does to the host goes through here.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { CommandError } from '../runtime/errors.js';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

/** Runs a command to completion (killed after timeoutMs); never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    } catch (err) {
      resolve({ code: 127, stdout: '', stderr: (err as Error).message });
      return;
    }
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs ?? 15000} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 15000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

/** Like run() but throws CommandError unless the exit status is 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new CommandError(`${cmd} ${args.join(' ')}`, r.code, r.stderr);
  return r.stdout;
}

/** Runs cmd inside network namespace ns (ip netns exec). */
export function runIn(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export async function runInOk(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return runOk('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Starts a long-running process in ns; the caller must kill it (see killTree). */
export function spawnIn(ns: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** Sends sig, then SIGKILL after graceMs if the process has not exited; resolves when it is gone. */
export function stopProcess(child: ChildProcess, sig: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const give = setTimeout(() => resolve(), graceMs + 2000); // never wait forever
    child.once('exit', () => {
      clearTimeout(kill);
      clearTimeout(give);
      resolve();
    });
    child.kill(sig);
  });
}
