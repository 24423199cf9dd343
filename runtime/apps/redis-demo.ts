// `capybara demo --app redis`: the Redis front end on the testbed. redis-server in the `store` namespace,
// `capybara serve redis` on hostA and hostB behind the VIP, and redis-benchmark in `client` (20 connections,
// SET and INCR; --tls with --tls) while every connection is migrated between the hosts every ~10 ms. The
// INCR counter must equal the INCRs sent (each command ran exactly once) and nothing may fail.
import type { ChildProcess } from 'node:child_process';
import { run, stopProcess } from '../../dataplane/exec.js';
import { startStore, stopStore } from '../../dataplane/store.js';
import { PLAN } from '../../dataplane/testbed.js';
import { adminRequest, adminSocketPath } from '../admin.js';
import { makeCerts, type CertSet } from '../tls-cert.js';
import type { DemoOptions, DemoSummary } from '../demo.js';
import { DEMO_HOSTS, demoTestbed, emptySummary, hostAppStats, startHostServers, type DemoHost } from './l7-demo.js';

const PORT = 6379;
const CONNECTIONS = 20;

interface MigrateAnswer {
  migrated: number;
  failed: number;
  timings: { blackoutUs: number }[];
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runRedisDemo(opts: DemoOptions): Promise<DemoSummary> {
  const start = Date.now();
  const log = opts.log ?? (() => {});
  const s = emptySummary(start);
  const say = (l: string) => {
    s.detail.push(l);
    log(l);
  };
  const n = opts.fetches ?? 10_000;
  const teardown = await demoTestbed(log);
  let servers: ChildProcess[] = [];
  let certs: CertSet | undefined;
  try {
    const store = await startStore();
    say(`store: redis-server on ${store.address} (namespace ${store.ns}), reached by both hosts through lb`);
    certs = opts.tls ? await makeCerts({ san: [`IP:${PLAN.vip}`] }) : undefined;
    const tlsServe = certs ? ['--tls-cert', certs.certFile, '--tls-key', certs.keyFile] : [];
    const tlsClient = certs ? ['--tls', '--cacert', certs.caFile] : [];
    servers = await startHostServers('redis', PORT, ['--store', store.address, ...tlsServe], log);
    const cli = (...args: string[]) => run('ip', ['netns', 'exec', PLAN.client.ns, 'redis-cli', ...tlsClient, '-h', PLAN.vip, '-p', String(PORT), ...args], { timeoutMs: 10_000 });
    await cli('flushall');
    say(`redis-benchmark${certs ? ' --tls' : ''} in ${PLAN.client.ns}: ${CONNECTIONS} connections, ${n} SET + ${n} INCR through ${PLAN.vip}:${PORT}, connections migrated every ~10 ms`);
    let running = true;
    const blackouts: number[] = [];
    let failed = 0;
    const loop = (async () => {
      let from: DemoHost = 'hostA';
      while (running) {
        try {
          const r = (await adminRequest({ path: adminSocketPath(from) }, { cmd: 'migrate', flow: 'all', to: from === 'hostA' ? 'hostB' : 'hostA' }, 10_000)) as MigrateAnswer;
          s.migrations += r.migrated;
          failed += r.failed;
          for (const t of r.timings) blackouts.push(t.blackoutUs);
        } catch {
          failed++;
        }
        from = from === 'hostA' ? 'hostB' : 'hostA';
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const bench = await run('ip', ['netns', 'exec', PLAN.client.ns, 'redis-benchmark', ...tlsClient, '-h', PLAN.vip, '-p', String(PORT),
      '-c', String(CONNECTIONS), '-n', String(n), '-t', 'set,incr', '--csv'], { timeoutMs: 180_000 });
    running = false;
    await loop;
    for (const line of bench.stdout.split('\n')) if (/^"(SET|INCR)"/.test(line)) say(`  ${line.replace(/"/g, '')}`);
    if (bench.code !== 0 || /error/i.test(bench.stdout + bench.stderr)) {
      s.errors++;
      say(`redis-benchmark failed (exit ${bench.code}): ${bench.stderr.trim().slice(0, 500)}`);
    }
    const counter = (await cli('get', 'counter:__rand_int__')).stdout.trim();
    if (counter !== String(n)) s.errors++;
    say(`GET counter:__rand_int__ = ${counter} after ${n} INCRs (${counter === String(n) ? 'exactly once' : 'MISMATCH'})`);
    for (const h of DEMO_HOSTS) {
      const a = await hostAppStats(h);
      s.errors += a.errors ?? 0;
      say(`${h}: ${a.commands ?? 0} commands forwarded, ${a.migratedIn ?? 0} connections adopted, ${a.storeLinks ?? 0} store links, ${a.captureWaits ?? 0} captures waited for in-flight replies`);
    }
    say(`${s.migrations} migrations (${failed} refused and retried later; the connection stayed where it was)`);
    // The blackout here is the source's measure per migration (capture, which waits for in-flight replies,
    // to forwarded), not a client-side gap: redis-benchmark has no per-request timeline to take one from.
    const sorted = blackouts.sort((a, b) => a - b);
    say(`blackout per migration as the source measured it (capture incl. waiting for in-flight replies -> forwarded): p50 ${Math.round(percentile(sorted, 50) ?? 0)} us, p99 ${Math.round(percentile(sorted, 99) ?? 0)} us`);
    s.blackoutUs = { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.length ? sorted[sorted.length - 1]! : null };
    s.fetches = 2 * n;
    s.connections = CONNECTIONS;
  } catch (err) {
    s.errors++;
    say(`error: ${(err as Error).message}`);
  } finally {
    for (const c of servers) await stopProcess(c, 'SIGTERM', 5000);
    certs?.cleanup();
    await stopStore().catch(() => {});
    await teardown();
  }
  s.seconds = (Date.now() - start) / 1000;
  return s;
}
