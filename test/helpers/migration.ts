// Fixtures for the live-migration interop tests: the testbed with the XDP balancer, the stream client in
// `client`, a client-side capture, and a small admin client (a unix-socket request per migration is much
// cheaper than a `capybara ctl` process). Every wait is bounded; everything started here can be stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before } from 'node:test';
import { run, runIn, stopProcess } from '../../dataplane/exec.js';
import { PLAN, down, status, up } from '../../dataplane/testbed.js';
import { adminRequest } from '../../runtime/admin.js';
import { HELPERS } from './env.js';
import { startServe, type Running } from './testbed.js';
import { delay } from './wait.js';

export type Host = 'hostA' | 'hostB';
export const HOSTS: readonly Host[] = ['hostA', 'hostB'];
export const other = (h: Host): Host => (h === 'hostA' ? 'hostB' : 'hostA');

/** Brings the testbed up with the XDP balancer; the teardown removes it only if this call made it. */
export async function useLbTestbed(): Promise<() => Promise<void>> {
  const s = await status();
  const wasUp = s.up;
  if (!s.up || s.lb.balancer !== 'xdp') await up({ lb: 'xdp' });
  return async () => {
    if (!wasUp) await down();
  };
}

// ---- admin requests ---------------------------------------------------------------------------

export interface FlowRow {
  id: number; state: string; localAddress: string; localPort: number; remoteAddress: string; remotePort: number;
  owner: string | null; migrations: number; frozen: boolean; heldSegments: number; bytesIn: number; bytesOut: number;
}

export interface MigrateResult {
  migrated: number;
  failed: number;
  timings: { migrationId: number; blackoutUs: number; freezeUs: number; snapshotUs: number; shipUs: number; steerUs: number; releaseUs: number; totalUs: number; snapshotBytes: number; forwardedSegments: number }[];
  errors: { code: string; message: string }[];
}

export interface HostStats {
  tcp: Record<string, number>;
  dev?: Record<string, number>;
  migration: { out: number; in: number; failed: number; rejectedIn: number; forwardedIn: number } | null;
}

export function flows(host: Host): Promise<FlowRow[]> {
  return adminRequest({ name: host }, { cmd: 'flows' }) as Promise<FlowRow[]>;
}

export function stats(host: Host): Promise<HostStats> {
  return adminRequest({ name: host }, { cmd: 'stats' }) as Promise<HostStats>;
}

export async function runtimePid(host: Host): Promise<number> {
  const info = (await adminRequest({ name: host }, { cmd: 'info' })) as { pid: number };
  return info.pid;
}

export function migrate(from: Host, flow: number | 'all', timeoutMs = 30_000): Promise<MigrateResult> {
  return adminRequest({ name: from }, { cmd: 'migrate', flow, to: other(from) }, timeoutMs) as Promise<MigrateResult>;
}

/** Application flows of the client (the VIP side) on host. */
export async function clientFlows(host: Host, port: number): Promise<FlowRow[]> {
  return (await flows(host)).filter((f) => f.remoteAddress === PLAN.client.ip && f.localPort === port && f.localAddress === PLAN.vip);
}

/** Which host owns (has an unfrozen established flow for) the client's local port, and its flow. */
export async function ownerOf(clientPort: number, port: number): Promise<{ host: Host; flow: FlowRow } | null> {
  for (const h of HOSTS) {
    const f = (await clientFlows(h, port)).find((x) => x.remotePort === clientPort && !x.frozen && x.state === 'ESTABLISHED');
    if (f) return { host: h, flow: f };
  }
  return null;
}

// ---- the stream client ----------------------------------------------------------------------

export interface StreamStatus {
  conns: number;
  sent: number;
  received: number;
  maxGapMs: number;
  errors: string[];
  elapsedMs: number;
  maxInFlight?: number;
  ok?: boolean;
}

export interface StreamClient {
  child: ChildProcess;
  localPorts: number[];
  status(): Promise<StreamStatus>;
  /** Stops sending, waits for every echo and the server's FIN; the final result. */
  stop(): Promise<StreamStatus>;
  kill(): Promise<void>;
  stderr(): string;
}

/** stream-client.js MODE ARGS in `client`; resolves when every socket is connected. */
export async function startStreamClient(args: string[], timeoutMs = 20_000): Promise<StreamClient> {
  const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(HELPERS, 'stream-client.js'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-20_000);
  });
  child.stdin!.on('error', () => {});
  const waiters: { event: string; resolve: (j: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  let exited = false;
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (line) => {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const i = waiters.findIndex((w) => w.event === j.event || j.event === 'error');
    if (i >= 0) {
      const [w] = waiters.splice(i, 1);
      if (j.event === 'error') w!.reject(new Error(`stream client failed: ${String(j.error)}`));
      else w!.resolve(j);
    }
  });
  child.on('exit', (code) => {
    exited = true;
    for (const w of waiters.splice(0)) w.reject(new Error(`stream client exited (${code}) before "${w.event}"; stderr: ${err}`));
  });
  const next = (event: string, ms: number): Promise<Record<string, unknown>> => {
    if (exited) return Promise.reject(new Error(`stream client already exited; stderr: ${err}`));
    return new Promise((resolve, reject) => {
      const w = { event, resolve: (j: Record<string, unknown>) => { clearTimeout(t); resolve(j); }, reject: (e: Error) => { clearTimeout(t); reject(e); } };
      const t = setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) waiters.splice(i, 1);
        reject(new Error(`stream client: no "${event}" within ${ms} ms; stderr: ${err}`));
      }, ms);
      waiters.push(w);
    });
  };
  const kill = () => stopProcess(child, 'SIGKILL', 1000);
  let ready: Record<string, unknown>;
  try {
    ready = await next('ready', timeoutMs);
  } catch (e) {
    await kill();
    throw e;
  }
  return {
    child,
    localPorts: ready.localPorts as number[],
    async status() {
      const p = next('status', 5000);
      child.stdin!.write('status\n');
      return (await p) as unknown as StreamStatus;
    },
    async stop() {
      const p = next('result', 30_000);
      child.stdin!.write('stop\n');
      try {
        return (await p) as unknown as StreamStatus;
      } finally {
        await stopProcess(child, 'SIGTERM', 3000);
      }
    },
    kill,
    stderr: () => err,
  };
}

/** Waits until the stream has received at least `more` further units (bytes or messages) than now. */
export async function waitProgress(c: StreamClient, more: number, timeoutMs: number, what: string): Promise<StreamStatus> {
  const start = (await c.status()).received;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await c.status();
    if (s.errors.length) throw new Error(`${what}: stream failed: ${s.errors.join('; ')}`);
    if (s.received >= start + more) return s;
    if (Date.now() > deadline) {
      const report = await stallReport(c.localPorts).catch((e: Error) => `(no stall report: ${e.message})`);
      throw new Error(`${what}: stream made no progress (${s.received - start} of ${more} in ${timeoutMs} ms)\n${report}`);
    }
    await delay(20);
  }
}

/** What each side thinks of a stalled stream: the client kernel's sockets (ss -tin), each host's flows
 * for those ports with their TCP state, and each engine's counters. A stall is a bug to find, and CI
 * only keeps the log. */
export async function stallReport(clientPorts: readonly number[]): Promise<string> {
  const lines: string[] = [];
  const ss = await runIn(PLAN.client.ns, 'ss', ['-tinm', 'dst', PLAN.vip]);
  lines.push(`client ss:\n${ss.stdout.trim()}`);
  const wanted = new Set(clientPorts);
  for (const h of HOSTS) {
    try {
      const fl = (await flows(h)).filter((f) => wanted.has(f.remotePort) && f.remoteAddress === PLAN.client.ip);
      lines.push(`${h} flows: ${JSON.stringify(fl)}`);
      lines.push(`${h} stats: ${JSON.stringify(await stats(h))}`);
    } catch (e) {
      lines.push(`${h}: ${(e as Error).message}`);
    }
  }
  return lines.join('\n');
}

// ---- a capture on the client's interface ----------------------------------------------------

export interface Capture {
  file: string;
  stop(): Promise<void>;
  /** tcpdump -r with a filter; the packet lines. */
  read(filter: string): Promise<string[]>;
  /** Stops the capture; the RSTs the VIP sent to the client (the migration tests want none). */
  rstsFromVip(): Promise<string[]>;
  cleanup(): void;
}

export async function startCapture(): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), 'capy-mig-'));
  const file = join(dir, 'client.pcap');
  const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, 'tcpdump', '-Z', 'root', '--immediate-mode', '-n', '-i', PLAN.client.iface, '-w', file, 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  // tcpdump says "listening on ..." on stderr once the capture is live.
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`tcpdump exited (${code}): ${err}`));
    });
  });
  const cap: Capture = {
    file,
    stop: () => stopProcess(child, 'SIGINT', 3000),
    async read(filter: string) {
      const r = await run('tcpdump', ['-n', '-r', file, filter], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`tcpdump -r failed (${r.code}): ${r.stderr}`);
      return r.stdout.split('\n').filter((l) => l.trim() !== '');
    },
    async rstsFromVip() {
      await cap.stop();
      return cap.read(`src host ${PLAN.vip} and tcp[tcpflags] & tcp-rst != 0`);
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
  return cap;
}

/** Runs fn with a client-side capture that is stopped and removed afterwards, whatever happens. */
export async function withCapture<T>(fn: (cap: Capture) => Promise<T>): Promise<T> {
  const cap = await startCapture();
  try {
    return await fn(cap);
  } finally {
    await cap.stop().catch(() => {});
    cap.cleanup();
  }
}

/** For a describe block: the testbed with the balancer and `serve APP --on H` on each host; stopped after. */
export function useServes(app: string, port: number, hosts: readonly Host[] = HOSTS, extra: readonly string[] = []): void {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    for (const h of hosts) servers.push(await startServe(app, h, port, h, 30_000, [...extra]));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await teardown?.();
  });
}

/** Percentile of a list of numbers (nearest rank). */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** stream-client.js raw in ns: sends bytes to host:port, reports what the server did within waitMs. */
export async function rawPeer(ns: string, host: string, port: number, bytes: Uint8Array, waitMs: number): Promise<{ outcome: string; received?: number; ms?: number; error?: string }> {
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, join(HELPERS, 'stream-client.js'), 'raw', host, String(port), Buffer.from(bytes).toString('hex'), String(waitMs)], { timeoutMs: waitMs + 10_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as { outcome: string; received?: number; ms?: number };
  } catch {
    throw new Error(`stream-client raw in ${ns} gave no result (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

export interface MigrationLoop {
  /** Stops the loop; resolves with the number of migrations done. */
  stop(): Promise<number>;
  count(): number;
  /** Migrations that failed (the loop stops at the first). */
  errors: string[];
  /** Engine-side blackout of each migration, µs. */
  blackouts: number[];
}

/**
 * Moves every client flow on `port` to the other host, again and again, `gapMs` apart, until stopped.
 * The old host keeps a given-away flow held for 50 ms, so gaps shorter than that are pointless.
 */
export function migrationLoop(port: number, gapMs = 60): MigrationLoop {
  let stopped = false;
  let n = 0;
  const errors: string[] = [];
  const blackouts: number[] = [];
  const loop = (async () => {
    let owner: Host | null = null;
    while (!stopped && errors.length === 0) {
      if (!owner) {
        for (const h of ['hostA', 'hostB'] as const) {
          if ((await clientFlows(h, port)).some((f) => f.state === 'ESTABLISHED' && !f.frozen)) owner = h;
        }
        if (!owner) {
          await delay(10);
          continue;
        }
      }
      const r = await migrate(owner, 'all');
      if (r.migrated >= 1) {
        n++;
        for (const t of r.timings) blackouts.push(t.blackoutUs);
        owner = other(owner);
      } else if (r.failed > 0) {
        // A connection in its TLS handshake, or one this host is still handing over, cannot move right now
        // (ERR_MIGRATION_STATE), nor a native flow with more in flight than a lane datagram carries
        // (ERR_MIGRATION_BUSY): look for the owner again. Anything else is a failure.
        if (r.errors.every((e) => e.code === 'ERR_MIGRATION_STATE' || e.code === 'ERR_MIGRATION_BUSY')) owner = null;
        else errors.push(JSON.stringify(r.errors));
      } else {
        owner = null;
      }
      await delay(gapMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return n;
    },
    count: () => n,
    errors,
    blackouts,
  };
}
