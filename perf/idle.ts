// What an idle connection costs (the "held" half of the cps suite, perf/cps.ts). Two capybara Stacks in this process joined by a mem: wire, the
// client stack opening N connections to the server stack; the arena stats before and after tell how
// many TCB slots and data chunks the connections hold (expected: exactly one slot per endpoint, no
// chunk). Side by side, the same number of idle Node `net` connections over the kernel's loopback: the
// kernel slab caches a TCP socket lives in (read from /proc/slabinfo, when readable) and the JS heap.
// No namespaces needed.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Stack } from '../runtime/stack.js';
import type { Connection } from '../runtime/connection.js';
import { parseSlabinfo, slabDelta, type SlabCache } from './format.js';
import { BenchError, sleep } from './proc.js';

const BUDGET_BYTES = 256 * 1024 * 1024;
const BATCH = 256;
// Caches a kernel TCP socket and its file descriptor take (both ends of a loopback connection).
const KERNEL_CACHES = ['TCP', 'sock_inode_cache', 'filp', 'dentry', 'eventpoll_epi', 'eventpoll_pwq', 'tcp_bind_bucket', 'tcp_bind2_bucket', 'inode_cache', 'kmalloc-64', 'kmalloc-128', 'kmalloc-192', 'kmalloc-256', 'kmalloc-512', 'kmalloc-1k'];

type Arena = ReturnType<Stack['stats']>['arena'];

// A GC before each heap reading makes the per-connection number mean something; without --expose-gc
// on the command line, V8 can still hand one out to a fresh context.
function gcFunction(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  try {
    setFlagsFromString('--expose-gc');
    const f: unknown = runInNewContext('gc');
    return typeof f === 'function' ? (f as () => void) : undefined;
  } catch {
    return undefined;
  }
}

function heapUsed(): number {
  const g = gcFunction();
  if (g) {
    g();
    g();
  }
  return process.memoryUsage().heapUsed;
}

function readSlabs(): Map<string, SlabCache> | null {
  try {
    return parseSlabinfo(readFileSync('/proc/slabinfo', 'utf8'));
  } catch {
    return null;
  }
}

export function fdLimit(): number {
  try {
    const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return 1024;
}

/** Resolves when pred() holds; rejects with BenchError after timeoutMs. */
async function until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new BenchError(`idle: timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Opens `count` connections in batches of BATCH with connectOne; resolves with them when all are up. */
async function openMany<T>(count: number, connectOne: () => Promise<T>, timeoutMs: number): Promise<T[]> {
  const out: T[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    if (Date.now() > deadline) throw new BenchError(`idle: only ${out.length} of ${count} connections opened in ${timeoutMs} ms`);
    const n = Math.min(BATCH, count - out.length);
    out.push(...(await Promise.all(Array.from({ length: n }, connectOne))));
  }
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new BenchError(`idle: ${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

interface CapybaraIdle {
  connections: number;
  maxFlows: number;
  before: { server: Arena; client: Arena };
  after: { server: Arena; client: Arena };
  slotsPerConnection: { server: number; client: number };
  chunksPerConnection: { server: number; client: number };
  bytesPerEndpoint: number;
  fitIn256MiB: number;
  jsHeapBytesPerEndpoint: number;
  openMs: number;
}

export async function capybaraIdle(n: number): Promise<CapybaraIdle> {
  const wire = `bench-idle-${process.pid}`;
  const maxFlows = n + 64;
  const port = 7100;
  let server: Stack | null = null;
  let client: Stack | null = null;
  const conns: Connection[] = [];
  const accepted: Connection[] = [];
  try {
    server = await Stack.open({ device: `mem:${wire}`, address: '10.99.0.2/24', mac: '02:00:00:00:99:02', maxFlows });
    client = await Stack.open({ device: `mem:${wire}`, address: '10.99.0.1/24', mac: '02:00:00:00:99:01', maxFlows });
    const srv = server.createServer({ backlog: 4096 }, (c) => {
      c.on('error', () => {});
      accepted.push(c);
    });
    await withTimeout(new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, () => resolve());
    }), 10_000, 'listen');
    const before = { server: server.stats().arena, client: client.stats().arena };
    const heap0 = heapUsed();
    const t0 = Date.now();
    const c = client;
    conns.push(...(await openMany(n, () => new Promise<Connection>((resolve, reject) => {
      const conn = c.connect(port, '10.99.0.2');
      conn.once('connect', () => {
        conn.off('error', reject);
        conn.on('error', () => {});
        resolve(conn);
      });
      conn.once('error', reject);
    }), 300_000)));
    await until(`${n} accepted connections`, () => accepted.length >= n, 60_000);
    const openMs = Date.now() - t0;
    // Let delayed ACKs and anything else in flight settle: the connections must be idle when counted.
    await sleep(300);
    const after = { server: server.stats().arena, client: client.stats().arena };
    const heap1 = heapUsed();
    const per = (a: Arena, b: Arena, k: 'slotsUsed' | 'chunksUsed') => (a[k] - b[k]) / n;
    const slotsPerConnection = { server: per(after.server, before.server, 'slotsUsed'), client: per(after.client, before.client, 'slotsUsed') };
    const chunksPerConnection = { server: per(after.server, before.server, 'chunksUsed'), client: per(after.client, before.client, 'chunksUsed') };
    const a = after.server;
    const bytesPerEndpoint = slotsPerConnection.server * a.slotSize + chunksPerConnection.server * a.chunkSize;
    return {
      connections: n,
      maxFlows,
      before,
      after,
      slotsPerConnection,
      chunksPerConnection,
      bytesPerEndpoint,
      fitIn256MiB: bytesPerEndpoint > 0 ? Math.floor(BUDGET_BYTES / bytesPerEndpoint) : 0,
      jsHeapBytesPerEndpoint: (heap1 - heap0) / (2 * n),
      openMs,
    };
  } finally {
    for (const x of conns) x.destroy();
    for (const x of accepted) x.destroy();
    await client?.close({ graceful: false }).catch(() => {});
    await server?.close({ graceful: false }).catch(() => {});
  }
}

interface KernelIdle {
  connections: number;
  slabBytesPerEndpoint: number | null;
  slabByCache: Record<string, { objects: number; bytes: number }> | null;
  jsHeapBytesPerEndpoint: number;
  fitIn256MiB: number | null;
  fdLimit: number;
  openMs: number;
}

export async function kernelIdle(n: number): Promise<KernelIdle> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  try {
    await withTimeout(new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => resolve());
    }), 10_000, 'listen');
    const port = (server.address() as net.AddressInfo).port;
    await sleep(100);
    const slabs0 = readSlabs();
    const heap0 = heapUsed();
    const t0 = Date.now();
    const clients = await openMany(n, () => new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.off('error', reject);
        s.on('error', () => {});
        resolve(s);
      });
      s.once('error', reject);
    }), 300_000);
    sockets.push(...clients);
    await until(`${n} accepted kernel connections`, () => sockets.length >= 2 * n, 60_000);
    const openMs = Date.now() - t0;
    await sleep(300);
    const slabs1 = readSlabs();
    const heap1 = heapUsed();
    const d = slabs0 && slabs1 ? slabDelta(slabs0, slabs1, KERNEL_CACHES) : null;
    const per = d ? d.bytes / (2 * n) : null;
    return {
      connections: n,
      slabBytesPerEndpoint: per,
      slabByCache: d?.byCache ?? null,
      jsHeapBytesPerEndpoint: (heap1 - heap0) / (2 * n),
      fitIn256MiB: per && per > 0 ? Math.floor(BUDGET_BYTES / per) : null,
      fdLimit: fdLimit(),
      openMs,
    };
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
