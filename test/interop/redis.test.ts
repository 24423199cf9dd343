// The Redis front end (runtime/apps/redis.ts) on the testbed: `capybara serve redis` on hostA and hostB
// behind the VIP, forwarding to one real redis-server in the `store` namespace (dataplane/store.ts). Real
// clients in `client`: redis-cli, redis-benchmark with 20 connections while every connection is migrated
// between the hosts every ~10 ms (zero errors; the INCR counter equals the INCRs sent: exactly once), and
// a raw client whose half-sent command migrates before the rest arrives. Over TLS (--tls-cert/--tls-key)
// the same with redis-cli --tls and redis-benchmark --tls: the TLS sessions move with the connections.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { run, stopProcess } from '../../dataplane/exec.js';
import { startStore, stopStore, STORE } from '../../dataplane/store.js';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { HOSTS, clientFlows, migrate, other, stats, useLbTestbed, type Host } from '../helpers/migration.js';
import { startServe, type Running } from '../helpers/testbed.js';
import { delay, withTimeout } from '../helpers/wait.js';
import { certsFor, type CertSet } from '../helpers/tls.js';

const skip = netnsSkip() ?? addonSkip() ?? (['redis-server', 'redis-cli', 'redis-benchmark'].every(hasCommand) ? undefined : 'redis tools not installed');
const PORT = 6379;
const STORE_ADDR = `${STORE.ip}:${STORE.port}`;

interface RedisStats { commands: number; replies: number; storeLinks: number; migratedIn: number; captureWaits: number; captureRefused: number; errors: number }

async function appStats(h: Host): Promise<RedisStats> {
  return ((await stats(h)) as unknown as { app: RedisStats }).app;
}

/** Extra client arguments (--tls --cacert F) while the TLS suite runs. */
let clientTls: string[] = [];

async function cli(...args: string[]): Promise<string> {
  const r = await run('ip', ['netns', 'exec', PLAN.client.ns, 'redis-cli', ...clientTls, '-h', PLAN.vip, '-p', String(PORT), ...args], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `redis-cli ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

interface BenchRow { test: string; rps: number; p50: number; p99: number }

/** redis-benchmark --csv in `client`; rows per test, the whole output for messages. */
async function benchmark(args: string[], timeoutMs: number): Promise<{ rows: BenchRow[]; out: string; code: number | null }> {
  const r = await run('ip', ['netns', 'exec', PLAN.client.ns, 'redis-benchmark', ...clientTls, '-h', PLAN.vip, '-p', String(PORT), '--csv', ...args], { timeoutMs });
  const rows: BenchRow[] = [];
  for (const line of r.stdout.split('\n')) {
    const f = line.split(',').map((x) => x.replace(/"/g, ''));
    if (f.length >= 7 && /^\d/.test(f[1] ?? '')) rows.push({ test: f[0]!, rps: Number(f[1]), p50: Number(f[4]), p99: Number(f[6]) });
  }
  return { rows, out: `${r.stdout}\n${r.stderr}`, code: r.code };
}

/** Migrates every connection back and forth until stop() is called; counts what happened. */
function migrateLoop(intervalMs: number): { stop(): Promise<{ migrated: number; failed: number; errors: string[] }> } {
  let running = true;
  let migrated = 0;
  let failed = 0;
  const errors: string[] = [];
  const loop = (async () => {
    let from: Host = 'hostA';
    while (running) {
      try {
        const r = await migrate(from, 'all', 10_000);
        migrated += r.migrated;
        failed += r.failed;
        for (const e of r.errors) if (errors.length < 5) errors.push(`${e.code}: ${e.message}`);
      } catch (e) {
        if (errors.length < 5) errors.push((e as Error).message);
      }
      from = other(from);
      await delay(intervalMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { migrated, failed, errors };
    },
  };
}

/**
 * PING latency idle, then redis-benchmark (20 connections) and PING latency again while every connection
 * is migrated between the hosts every ~10 ms: no error anywhere, and the INCR counter equals the INCRs sent.
 */
async function benchmarkWhileMigrating(N: number, tests: string): Promise<void> {
  assert.equal(await cli('flushall'), 'OK');
  const idle = await benchmark(['-c', '20', '-n', '4000', '-t', 'ping_mbulk'], 60_000);
  assert.equal(idle.code, 0, idle.out);
  const before = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
  const mig = migrateLoop(10);
  let run1: Awaited<ReturnType<typeof benchmark>>;
  let pingMig: Awaited<ReturnType<typeof benchmark>>;
  let m: Awaited<ReturnType<ReturnType<typeof migrateLoop>['stop']>>;
  try {
    run1 = await benchmark(['-c', '20', '-n', String(N), '-t', tests], 120_000);
    pingMig = await benchmark(['-c', '20', '-n', '4000', '-t', 'ping_mbulk'], 60_000);
  } finally {
    m = await mig.stop();
  }
  assert.equal(run1.code, 0, run1.out);
  assert.equal(pingMig.code, 0, pingMig.out);
  assert.doesNotMatch(run1.out, /error/i, 'redis-benchmark reported errors');
  assert.deepEqual(run1.rows.map((r) => r.test), tests.toUpperCase().split(','));
  assert.equal(await cli('get', 'counter:__rand_int__'), String(N), 'the counter saw every INCR exactly once');
  const afterStats = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
  for (const h of HOSTS) assert.equal(afterStats[h].errors - before[h].errors, 0, `${h}: no connection failed`);
  assert.ok(m.migrated >= 50, `only ${m.migrated} migrations happened (${m.failed} failed: ${m.errors.join('; ')})`);
  const waits = HOSTS.reduce((a, h) => a + afterStats[h].captureWaits - before[h].captureWaits, 0);
  const p = (r: BenchRow | undefined) => (r ? `p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms` : '-');
  const tag = clientTls.length > 0 ? 'TLS' : 'plain';
  process.stderr.write(`# ${tag}: redis-benchmark with ${m.migrated} migrations (${m.failed} refused${m.errors[0] ? `, e.g. ${m.errors[0]}` : ''}; ${waits} captures waited for in-flight replies): ${run1.rows.map((r) => `${r.test} ${r.rps.toFixed(0)}/s`).join(', ')}\n`);
  process.stderr.write(`# ${tag}: PING latency without migrations ${p(idle.rows[0])}; with migrations ${p(pingMig.rows[0])}\n`);
}

describe('Redis front end with live-migrating connections', { skip: skip ?? false }, () => {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    await startStore();
    for (const h of HOSTS) servers.push(await startServe('redis', h, PORT, h, 30_000, ['--store', STORE_ADDR]));
  });
  after(async () => {
    for (const s of servers.splice(0)) await s.stop();
    await stopStore();
    await teardown?.();
  });

  it('redis-cli through the VIP', async () => {
    assert.equal(await cli('ping'), 'PONG');
    assert.equal(await cli('set', 'capy:k', 'v1'), 'OK');
    assert.equal(await cli('get', 'capy:k'), 'v1');
    assert.equal(await cli('del', 'capy:k'), '1');
  });

  it('redis-benchmark (SET/GET/INCR, 20 connections) while connections migrate every ~10 ms: zero errors, INCR exactly once', async () => {
    await benchmarkWhileMigrating(10_000, 'set,get,incr');
  });

  it('a command sent half before and half after a migration gets its correct reply', async () => {
    // The client writes half of a SET, waits for "rest" on stdin, then writes the rest and a GET.
    const script = `
      import { connect } from 'node:net';
      import { createInterface } from 'node:readline';
      const s = connect(${PORT}, '${PLAN.vip}');
      let got = '';
      s.on('data', (d) => { got += d.toString('latin1'); if (got === '+OK\\r\\n$13\\r\\nmigrated-half\\r\\n') { console.log(JSON.stringify({ event: 'reply', got })); s.destroy(); process.exit(0); } });
      s.on('error', (e) => { console.log(JSON.stringify({ event: 'error', error: e.message, got })); process.exit(1); });
      s.on('connect', () => { s.write('*3\\r\\n$3\\r\\nSET\\r\\n$9\\r\\ncapy:half\\r\\n$13\\r\\nmigra'); console.log(JSON.stringify({ event: 'half', port: s.localPort })); });
      createInterface({ input: process.stdin }).on('line', () => s.write('ted-half\\r\\n*2\\r\\n$3\\r\\nGET\\r\\n$9\\r\\ncapy:half\\r\\n'));
      setTimeout(() => { console.log(JSON.stringify({ event: 'error', error: 'timeout', got })); process.exit(1); }, 15000).unref();
    `;
    const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const lines = createInterface({ input: child.stdout! });
      const events: Record<string, unknown>[] = [];
      let wake: (() => void) | null = null;
      lines.on('line', (l) => {
        try {
          events.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          return;
        }
        wake?.();
      });
      const next = () => withTimeout(new Promise<Record<string, unknown>>((resolve) => {
        const take = () => {
          const e = events.shift();
          if (e) resolve(e);
          else wake = take;
        };
        take();
      }), 15_000, 'raw client event');
      const half = await next();
      assert.equal(half.event, 'half', JSON.stringify(half));
      // Find the connection, let the half command reach the app, then move it.
      let from: Host | null = null;
      let flowId = 0;
      for (let i = 0; i < 100 && from === null; i++) {
        for (const h of HOSTS) {
          const f = (await clientFlows(h, PORT)).find((x) => x.remotePort === half.port && x.state === 'ESTABLISHED' && !x.frozen);
          if (f) {
            from = h;
            flowId = f.id;
          }
        }
        if (from === null) await delay(20);
      }
      assert.ok(from, 'the raw client connection is on one of the hosts');
      await delay(100);
      const target = other(from);
      const inBefore = (await appStats(target)).migratedIn;
      const r = await migrate(from, flowId);
      assert.equal(r.migrated, 1, JSON.stringify(r.errors));
      assert.equal((await appStats(target)).migratedIn, inBefore + 1, `${target} resumed the connection from the app state`);
      child.stdin!.write('rest\n');
      const reply = await next();
      assert.equal(reply.event, 'reply', JSON.stringify(reply));
      // The established flow of that port (an older connection from the same client port may linger in TIME_WAIT).
      const moved = (await clientFlows(target, PORT)).find((x) => x.remotePort === half.port && x.state === 'ESTABLISHED');
      assert.ok(moved === undefined || moved.migrations >= 1, JSON.stringify(await clientFlows(target, PORT)));
      assert.equal(await cli('get', 'capy:half'), 'migrated-half');
    } finally {
      await stopProcess(child, 'SIGKILL', 1000);
    }
  });
});

describe('Redis front end over TLS with live-migrating connections', { skip: skip ?? (hasCommand('openssl') ? false : 'openssl not installed') }, () => {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  let certs: CertSet | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    await startStore();
    certs = await certsFor();
    for (const h of HOSTS) servers.push(await startServe('redis', h, PORT, h, 30_000, ['--store', STORE_ADDR, '--tls-cert', certs.certFile, '--tls-key', certs.keyFile]));
    clientTls = ['--tls', '--cacert', certs.caFile];
  });
  after(async () => {
    clientTls = [];
    for (const s of servers.splice(0)) await s.stop();
    certs?.cleanup();
    await stopStore();
    await teardown?.();
  });

  it('redis-cli --tls through the VIP', async () => {
    assert.equal(await cli('ping'), 'PONG');
    assert.equal(await cli('set', 'capy:tls', 'v2'), 'OK');
    assert.equal(await cli('get', 'capy:tls'), 'v2');
  });

  it('redis-benchmark --tls (SET/INCR, 20 connections) while connections migrate every ~10 ms: zero errors, INCR exactly once', async () => {
    await benchmarkWhileMigrating(6000, 'set,incr');
  });
});
