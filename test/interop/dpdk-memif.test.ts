// (2) Runtimes joined only by DPDK memif (shared memory; no kernel in the data path).
//
//   A. two runtimes on one memif cable: this test's stack (memif server) streams 50 MB through an echo
//      runtime (`capybara serve`, memif client) and checks every byte.
//   B. migration to a third runtime. memif is point-to-point, so three runtimes that must all reach each
//      other need a switch, as VPP/OVS-DPDK provide in production: test/helpers/dpdk-memif-switch.c, a
//      small DPDK switch on the engine's own dpdk: backend with one memif port per runtime. It forwards by
//      MAC and learns TCP flows from the port that sends their segments, so a migrated flow follows its new
//      owner without a balancer. The migration channel between the two servers runs through it too. The
//      target holds the source's address as its VIP (as the testbed hosts share one), so the client's
//      connection keeps its addresses. The flow moves s1 -> s3 -> s1 while the client checks every byte.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { run, stopProcess } from '../../dataplane/exec.js';
import { adminRequest } from '../../runtime/admin.js';
import type { Connection } from '../../runtime/connection.js';
import { Stack } from '../../runtime/stack.js';
import { BIN, ROOT } from '../helpers/env.js';
import { dpdkSkip } from '../helpers/dpdk.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const skip = dpdkSkip();
const DIR = '/run/capybara/memif-test';
const MB50 = 50 * 1024 * 1024;

interface Proc { child: ChildProcess; stderr: () => string; info: Record<string, unknown> }

/** Spawns a program and waits (bounded) for its first JSON line on stdout. */
async function spawnReady(cmd: string, args: string[], what: string, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
  const info = await withTimeout(new Promise<Record<string, unknown>>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      try {
        resolve(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not JSON
      }
    });
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}): ${err}`)));
  }), 30_000, `${what} to start; stderr: ${err}`).catch(async (e: Error) => {
    await stopProcess(child, 'SIGKILL', 1000);
    throw e;
  });
  child.stdout!.resume();
  return { child, stderr: () => err, info };
}

function serveMemif(name: string, socket: string, vdev: number, address: string, extra: string[]): Promise<Proc> {
  return spawnReady(process.execPath, [BIN, 'serve', 'echo', '--device', `dpdk:net_memif${vdev},role=client,socket=${socket},id=0`,
    '--address', address, '--port', '7', '--name', name, '--json', ...extra], `serve ${name}`);
}

/** Byte i of the stream the client sends (not periodic within a TCP window). */
function patternAt(i: number): number {
  return (i * 31 + (i >>> 11) * 7 + (i >>> 19)) & 0xff;
}

/**
 * Writes `total` bytes to an echo connection and checks every byte that comes back; onProgress sees the
 * count received (the migrations are driven from there). Resolves with the bytes verified.
 */
function echoStream(conn: Connection, total: number, onProgress: (received: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let received = 0;
    const chunk = 64 * 1024;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk, total - sent);
        const b = Buffer.allocUnsafe(n);
        for (let k = 0; k < n; k++) b[k] = patternAt(sent + k);
        sent += n;
        if (!conn.write(b)) {
          conn.once('drain', pump);
          return;
        }
      }
    };
    conn.on('data', (d: Buffer) => {
      for (let k = 0; k < d.length; k++) {
        if (d[k] !== patternAt(received + k)) {
          reject(new Error(`byte ${received + k} differs`));
          conn.destroy();
          return;
        }
      }
      received += d.length;
      onProgress(received);
      if (received === total) resolve(received);
    });
    conn.on('error', reject);
    conn.on('close', () => {
      if (received !== total) reject(new Error(`connection closed after ${received} of ${total} bytes`));
    });
    pump();
  });
}

describe('runtimes joined only by DPDK memif', { skip: skip ?? false }, () => {
  const procs: Proc[] = [];
  const stacks: Stack[] = [];

  before(() => {
    rmSync(DIR, { recursive: true, force: true });
    mkdirSync(DIR, { recursive: true });
  });

  after(async () => {
    for (const s of stacks) await s.close({ timeoutMs: 1000 }).catch(() => {});
    for (const p of procs.reverse()) await stopProcess(p.child, 'SIGTERM', 5000);
    rmSync(DIR, { recursive: true, force: true });
  });

  it('A. 50 MB echoed byte-exact over one memif cable', { timeout: 120_000 }, async () => {
    const socket = join(DIR, 'cable.sock');
    // This process is the memif server (it creates the socket); the echo runtime connects to it.
    const stack = await Stack.open({ device: `dpdk:net_memif0,role=server,socket=${socket},id=0`, address: '10.88.1.2/24' });
    stacks.push(stack);
    const echo = await serveMemif('memif-s0', socket, 0, '10.88.1.10/24', []);
    procs.push(echo);
    const conn = stack.connect(7, '10.88.1.10');
    const got = await withTimeout(echoStream(conn, MB50, () => {}), 100_000, '50 MB echo over memif');
    assert.equal(got, MB50);
    conn.end();
    const dev = stack.stats().dev;
    process.stderr.write(`# memif cable: ${JSON.stringify({ rx: dev.rxFrames, tx: dev.txFrames, linkUp: dev.linkUp, drops: dev.rxDropped })}\n`);
    assert.equal(dev.linkUp, 1);
    await stopProcess(echo.child, 'SIGTERM', 5000);
  });

  it('B. a live flow migrates to a third runtime through a memif switch, and back, byte-exact', { timeout: 150_000 }, async () => {
    const bin = join(DIR, 'memif-switch');
    const cc = await run('sh', ['-c', `cc -std=c11 -D_GNU_SOURCE -O2 -I${ROOT}/native $(pkg-config --cflags-only-I libdpdk) `
      + `${ROOT}/test/helpers/dpdk-memif-switch.c ${ROOT}/native/dev/dpdk.c -o ${bin} $(pkg-config --libs libdpdk)`], { timeoutMs: 60_000 });
    assert.equal(cc.code, 0, cc.stderr);
    const sock = (n: string) => join(DIR, `sw-${n}.sock`);
    procs.push(await spawnReady(bin, [sock('c'), sock('s1'), sock('s3')], 'memif switch', { CAPYBARA_DPDK_NO_HUGE: '1' }));
    procs.push(await serveMemif('memif-s1', sock('s1'), 1, '10.88.0.10/24', ['--peers', 'memif-s3=10.88.0.30']));
    procs.push(await serveMemif('memif-s3', sock('s3'), 1, '10.88.0.30/24', ['--vip', '10.88.0.10', '--peers', 'memif-s1=10.88.0.10']));
    const client = await Stack.open({ device: `dpdk:net_memif1,role=client,socket=${sock('c')},id=0`, address: '10.88.0.2/24' });
    stacks.push(client);

    type Flow = { id: number; remoteAddress: string; frozen: boolean; state: string };
    const clientFlows = async (name: string) =>
      ((await adminRequest({ name }, { cmd: 'flows' })) as Flow[]).filter((f) => f.remoteAddress === '10.88.0.2' && !f.frozen && f.state === 'ESTABLISHED');
    const total = 24 * 1024 * 1024;
    const marks = [4, 12].map((m) => m * 1024 * 1024);
    const moves: Promise<void>[] = [];
    const results: { from: string; migrated: number; blackoutUs?: number }[] = [];
    const move = async (from: string, to: string) => {
      await waitFor(async () => (await clientFlows(from)).length === 1, 10_000, `the client's flow on ${from}`);
      const r = (await adminRequest({ name: from }, { cmd: 'migrate', flow: 'all', to }, 30_000)) as { migrated: number; failed: number; errors: unknown[]; timings: { blackoutUs: number }[] };
      assert.equal(r.failed, 0, JSON.stringify(r.errors));
      results.push({ from, migrated: r.migrated, blackoutUs: r.timings[0]?.blackoutUs });
    };
    const conn = client.connect(7, '10.88.0.10');
    let next = 0;
    const got = await withTimeout(echoStream(conn, total, (rx) => {
      if (next < marks.length && rx >= marks[next]!) {
        moves.push(next === 0 ? move('memif-s1', 'memif-s3') : moves[0]!.then(() => move('memif-s3', 'memif-s1')));
        next++;
      }
    }), 120_000, 'the echo stream across migrations');
    await Promise.all(moves);
    conn.end();
    process.stderr.write(`# memif migrations: ${JSON.stringify(results)}\n`);
    assert.equal(got, total);
    assert.deepEqual(results.map((r) => [r.from, r.migrated]), [['memif-s1', 1], ['memif-s3', 1]]);
  });
});
