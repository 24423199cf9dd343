// Child processes of the benchmarks: servers that run until stopped, and measuring tools that run to
// completion. Every one is bounded in time and is killed by whoever started it, in a finally block.
import { spawn, type ChildProcess } from 'node:child_process';
import { run, type RunResult } from '../dataplane/exec.js';

export class BenchError extends Error {
  readonly code: string;
  constructor(message: string, code = 'ERR_CAPYBARA_BENCH') {
    super(message);
    this.name = 'BenchError';
    this.code = code;
  }
}

export interface ServerSpec {
  /** Short name for messages and results ("capybara", "kernel", "node"). */
  name: string;
  cmd: string;
  args: string[];
  /** Ready when a line of stdout/stderr matches... */
  readyLine?: RegExp;
  /** ...or when this probe resolves true (polled every 100 ms). */
  probe?: () => Promise<boolean>;
  readyTimeoutMs?: number;
}

/** A server process started by a benchmark; stop() is idempotent and always resolves. */
export interface RunningServer {
  readonly name: string;
  readonly child: ChildProcess;
  /** Everything it printed so far (bounded), for error messages. */
  output(): string;
  stop(): Promise<void>;
}

const OUTPUT_KEEP = 16 * 1024;

/** Starts a server and waits until it is ready; kills it and throws BenchError if it is not in time. */
export async function startServer(spec: ServerSpec): Promise<RunningServer> {
  const child = spawn(spec.cmd, spec.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exited: string | null = null;
  const keep = (d: Buffer) => {
    out += d.toString('utf8');
    if (out.length > OUTPUT_KEEP) out = out.slice(out.length - OUTPUT_KEEP);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (err) => (exited = `failed to start: ${err.message}`));
  child.on('exit', (code, sig) => (exited = `exited with ${code ?? sig}`));
  let stopped: Promise<void> | null = null;
  const server: RunningServer = {
    name: spec.name,
    child,
    output: () => out,
    stop: () => (stopped ??= stopChild(child)),
  };
  const deadline = Date.now() + (spec.readyTimeoutMs ?? 20_000);
  try {
    for (;;) {
      if (spec.readyLine && spec.readyLine.test(out)) return server;
      if (spec.probe && (await spec.probe().catch(() => false))) return server;
      if (exited !== null) throw new BenchError(`${spec.name} server (${spec.cmd} ${spec.args.join(' ')}) ${exited} before it was ready:\n${out.trim()}`);
      if (Date.now() > deadline) throw new BenchError(`${spec.name} server (${spec.cmd} ${spec.args.join(' ')}) not ready after ${spec.readyTimeoutMs ?? 20_000} ms:\n${out.trim()}`);
      await sleep(100);
    }
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** SIGTERM, then SIGKILL after graceMs; resolves once the process is gone (or after a last bound). */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const giveUp = setTimeout(resolve, graceMs + 2000);
    child.once('exit', () => {
      clearTimeout(kill);
      clearTimeout(giveUp);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Runs a measuring tool to completion with a time bound; throws BenchError on timeout or failure. */
export async function runTool(what: string, cmd: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs });
  if (r.code !== 0) {
    const tail = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n');
    throw new BenchError(`${what} failed (${cmd} ${args.join(' ')}; exit ${r.code}):\n${tail}`);
  }
  return r;
}

/** Polls `ss` inside a namespace until something listens on the TCP port (kernel sockets only). */
export function kernelListening(ns: string | null, port: number): () => Promise<boolean> {
  return async () => {
    const args = ['-Hltn', `sport = :${port}`];
    const r = ns ? await run('ip', ['netns', 'exec', ns, 'ss', ...args], { timeoutMs: 5000 }) : await run('ss', args, { timeoutMs: 5000 });
    return r.code === 0 && r.stdout.trim().length > 0;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs fn with each server started in turn; every server is stopped afterwards, whatever happened. */
export async function withServer<T>(spec: ServerSpec, fn: (s: RunningServer) => Promise<T>): Promise<T> {
  const s = await startServer(spec);
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}
