// L7 direct server return (runtime/apps/l7.ts) on the testbed: `capybara serve l7` on hostA and hostB behind
// the XDP balancer's VIP. Real clients in `client`: curl fetching 200 objects over one keep-alive
// connection, a Node client pipelining requests, and wrk against DSR and against --mode proxy in the same
// run. The objects are spread over both hosts by their hash; the connection has to follow them. Over TLS
// (--tls-cert/--tls-key) the TLS session moves with the connection: curl https does the same fetches.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../dataplane/exec.js';
import { PLAN } from '../../dataplane/testbed.js';
import { objectSha256, ownerOf, ruleSize } from '../../runtime/apps/l7-objects.js';
import { runWrk } from '../../perf/l7-wrk.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { stats, useLbTestbed, type Host } from '../helpers/migration.js';
import { startServe, type Running } from '../helpers/testbed.js';
import { certsFor, type CertSet } from '../helpers/tls.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('curl') ? undefined : 'curl not installed');
const PORT = 80;
const TLS_PORT = 443;
const BACKENDS: Host[] = ['hostA', 'hostB'];
const SIZES = ['1k', '3', '17k', '100k', '250k', '512', '40k', '4k'];

interface L7Stats { requests: number; objects: number; servedBytes: number; routeMigrations: number; routeFailures: number; migratedIn: number; proxied: number; proxiedBytes: number; errors: number }

async function appStats(h: Host): Promise<L7Stats> {
  return ((await stats(h)) as unknown as { app: L7Stats }).app;
}

function owner(name: string): Host {
  return ownerOf(`/obj/${name}`, BACKENDS) as Host;
}

async function startBoth(servers: Running[], extra: string[] = [], port = PORT): Promise<void> {
  for (const h of BACKENDS) servers.push(await startServe('l7', h, port, h, 30_000, ['--backends', BACKENDS.join(','), ...extra]));
}

/**
 * One curl run fetching /obj/<name> for every name over one keep-alive connection: checks statuses, one
 * connection, every body's size and sha256, and that each host answered (and wrote the bytes of) exactly
 * the objects it owns, with one routing migration per ownership change.
 */
async function fetchAndCheck(names: string[], base: string, curlArgs: string[] = []): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'capy-l7-'));
  const before = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
  try {
    const args = ['netns', 'exec', PLAN.client.ns, 'curl', '-sS', '--max-time', '60', ...curlArgs, '-w', '%{http_code} %{num_connects}\\n'];
    names.forEach((n, i) => args.push('-o', join(dir, String(i)), `${base}/obj/${n}`));
    const r = await run('ip', args, { timeoutMs: 70_000 });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, names.length);
    assert.ok(lines.every((l) => l.startsWith('200 ')), `statuses: ${lines.filter((l) => !l.startsWith('200 ')).join('; ')}`);
    assert.equal(lines.reduce((a, l) => a + Number(l.split(' ')[1]), 0), 1, 'one connection for all requests');
    names.forEach((n, i) => {
      const body = readFileSync(join(dir, String(i)));
      assert.equal(body.length, ruleSize(n), `size of ${n}`);
      assert.equal(createHash('sha256').update(body).digest('hex'), objectSha256(n, ruleSize(n)!), `sha256 of ${n}`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const afterStats = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
  let changes = 0;
  for (let i = 1; i < names.length; i++) if (owner(names[i]!) !== owner(names[i - 1]!)) changes++;
  let routed = 0;
  for (const h of BACKENDS) {
    const mine = names.filter((n) => owner(n) === h);
    const d = (k: keyof L7Stats) => afterStats[h][k] - before[h][k];
    assert.equal(d('objects'), mine.length, `${h} answered exactly the objects it owns`);
    assert.equal(d('servedBytes'), mine.reduce((a, n) => a + ruleSize(n)!, 0), `${h} wrote the bytes of its own objects`);
    assert.equal(d('routeFailures'), 0);
    routed += d('routeMigrations');
  }
  // The balancer's first choice may or may not own the first object.
  assert.ok(routed === changes || routed === changes + 1, `${routed} routing migrations for ${changes} ownership changes`);
  process.stderr.write(`# ${base}: ${names.length} objects, ${changes} ownership changes, ${routed} routing migrations; served ${afterStats.hostA.servedBytes - before.hostA.servedBytes} B by hostA, ${afterStats.hostB.servedBytes - before.hostB.servedBytes} B by hostB\n`);
}

async function stopAll(servers: Running[]): Promise<void> {
  for (const s of servers.splice(0)) await s.stop();
}

describe('L7 direct server return through the VIP', { skip: skip ?? false }, () => {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    await startBoth(servers);
  });
  after(async () => {
    await stopAll(servers);
    await teardown?.();
  });

  it('curl fetches 200 objects on one keep-alive connection: every sha256 matches, each owner served its own', async () => {
    await fetchAndCheck(Array.from({ length: 200 }, (_, i) => `o${i}-${SIZES[i % SIZES.length]}`), `http://${PLAN.vip}`);
  });

  it('pipelined requests are answered in order, each by its owner', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `p${i}-${SIZES[(i * 3) % SIZES.length]}`);
    // A Node client in `client` writes all requests at once and checks the responses in order.
    const script = `
      import { connect } from 'node:net';
      import { createHash } from 'node:crypto';
      const names = ${JSON.stringify(names)};
      const s = connect(${PORT}, '${PLAN.vip}');
      let buf = Buffer.alloc(0); const got = [];
      s.on('connect', () => s.write(names.map((n) => 'GET /obj/' + n + ' HTTP/1.1\\r\\nHost: v\\r\\n\\r\\n').join('')));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const e = buf.indexOf('\\r\\n\\r\\n'); if (e < 0) return;
          const head = buf.subarray(0, e).toString('latin1');
          const len = Number(/content-length: (\\d+)/i.exec(head)[1]);
          if (buf.length < e + 4 + len) return;
          const by = /x-served-by: (\\S+)/i.exec(head)[1];
          got.push({ status: Number(head.split(' ')[1]), by, len, sha: createHash('sha256').update(buf.subarray(e + 4, e + 4 + len)).digest('hex') });
          buf = buf.subarray(e + 4 + len);
          if (got.length === names.length) { console.log(JSON.stringify(got)); s.destroy(); }
        }
      });
      s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
      setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got: got.length })); process.exit(1); }, 20000).unref();
    `;
    const r = await run('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, '--input-type=module', '-e', script], { timeoutMs: 30_000 });
    const got = JSON.parse(r.stdout.trim()) as { status: number; by: string; len: number; sha: string }[] | { error: string };
    assert.ok(Array.isArray(got), `client: ${JSON.stringify(got)} ${r.stderr}`);
    names.forEach((n, i) => {
      const g = got[i]!;
      assert.equal(g.status, 200);
      assert.equal(g.by, owner(n), `response ${i} (${n}) came from its owner`);
      assert.equal(g.sha, objectSha256(n, ruleSize(n)!), `response ${i} is ${n}`);
    });
  });

  it('wrk: DSR and proxy mode in the same run (throughput and p99)', { skip: hasCommand('wrk') ? false : 'wrk not installed' }, async () => {
    const paths = Array.from({ length: 16 }, (_, i) => `/obj/w${i}-4k`);
    const results: Record<string, Awaited<ReturnType<typeof runWrk>>> = {};
    for (const mode of ['dsr', 'proxy'] as const) {
      if (mode === 'proxy') {
        await stopAll(servers);
        await startBoth(servers, ['--mode', 'proxy']);
      }
      const before = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
      results[mode] = await runWrk({ ns: PLAN.client.ns, base: `http://${PLAN.vip}`, paths, connections: 8, seconds: 3 });
      const r = results[mode]!;
      const e = r.errors;
      assert.ok(r.requests > 0, `${mode}: wrk completed no request:\n${r.output}`);
      assert.equal(e.connect + e.read + e.write + e.timeout + e.non2xx, 0, `${mode}: wrk saw errors:\n${r.output}`);
      const after = { hostA: await appStats('hostA'), hostB: await appStats('hostB') };
      const delta = (k: keyof L7Stats) => BACKENDS.reduce((a, h) => a + after[h][k] - before[h][k], 0);
      if (mode === 'dsr') assert.ok(delta('routeMigrations') > 0, 'DSR moved connections to the owners');
      else {
        assert.equal(delta('routeMigrations'), 0, 'proxy mode does not migrate');
        assert.ok(delta('proxied') > 0, 'proxy mode relayed requests');
      }
    }
    const f = (r: Awaited<ReturnType<typeof runWrk>>) => `${r.rps.toFixed(0)} req/s, p50 ${r.p50Ms?.toFixed(2)} ms, p99 ${r.p99Ms?.toFixed(2)} ms`;
    process.stderr.write(`# wrk 4 KiB objects, 8 connections, 3 s: DSR ${f(results.dsr!)}; proxy ${f(results.proxy!)}; DSR/proxy ${(results.dsr!.rps / results.proxy!.rps).toFixed(2)}x\n`);
  });
});

describe('L7 direct server return over TLS through the VIP', { skip: skip ?? (hasCommand('openssl') ? false : 'openssl not installed') }, () => {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  let certs: CertSet | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    certs = await certsFor();
    await startBoth(servers, ['--tls-cert', certs.certFile, '--tls-key', certs.keyFile], TLS_PORT);
  });
  after(async () => {
    await stopAll(servers);
    certs?.cleanup();
    await teardown?.();
  });

  it('curl https fetches 200 objects on one keep-alive TLS session that follows the owners', async () => {
    await fetchAndCheck(Array.from({ length: 200 }, (_, i) => `t${i}-${SIZES[(i + 3) % SIZES.length]}`), `https://${PLAN.vip}:${TLS_PORT}`, ['--cacert', certs!.caFile]);
  });
});
