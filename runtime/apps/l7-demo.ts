// `capybara demo --app l7`: L7 direct server return on the testbed. `capybara serve l7` on hostA and hostB
// behind the XDP balancer's VIP; the kernel's curl in `client` fetches objects spread over both hosts on
// one keep-alive connection (https with --tls); every body is checked against its sha256, and the hosts'
// counters show that each object came from its owner, the connection following the objects.
// Also the process plumbing the app demos share (servers on the hosts, their counters).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, stopProcess } from '../../dataplane/exec.js';
import { PLAN, down, status, up } from '../../dataplane/testbed.js';
import { adminRequest, adminSocketPath } from '../admin.js';
import { CapybaraError } from '../errors.js';
import { packageRoot } from '../native.js';
import { makeCerts, type CertSet } from '../tls-cert.js';
import { objectSha256, ownerOf, ruleSize } from './l7-objects.js';
import type { DemoOptions, DemoSummary } from '../demo.js';

export type DemoHost = 'hostA' | 'hostB';
export const DEMO_HOSTS: readonly DemoHost[] = ['hostA', 'hostB'];

/** `capybara serve APP --on HOST ... --json` on both hosts; resolves once both print their listening line. */
export async function startHostServers(app: string, port: number, extra: string[], log: (l: string) => void): Promise<ChildProcess[]> {
  const children: ChildProcess[] = [];
  try {
    for (const h of DEMO_HOSTS) {
      const child = spawn(process.execPath, [join(packageRoot(), 'bin', 'capybara.js'), 'serve', app, '--on', h, '--port', String(port), '--json', ...extra], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      log(`${h}: capybara ${app} on ${await listening(child, 30_000)}, VIP ${PLAN.vip}`);
    }
  } catch (err) {
    for (const c of children) await stopProcess(c, 'SIGTERM', 5000);
    throw err;
  }
  return children;
}

function listening(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(new CapybaraError('ERR_CAPYBARA_TIMEOUT', `server did not start within ${timeoutMs} ms: ${err.trim()}`)), timeoutMs);
    const finish = (e: Error | null, v = '') => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners('data');
      child.stdout?.resume();
      child.removeListener('exit', onExit);
      if (e) reject(e);
      else resolve(v);
    };
    const onExit = (code: number | null) => finish(new CapybaraError('ERR_CAPYBARA_SERVER_EXITED', `server exited (${code}) before listening: ${err.trim()}`));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (const line of out.split('\n')) {
        try {
          const j = JSON.parse(line) as { event?: string; address?: string; port?: number; device?: string };
          if (j.event === 'listening') finish(null, `${j.address}:${j.port} (${j.device})`);
        } catch {
          // partial line
        }
      }
    });
    child.once('exit', onExit);
  });
}

/** The app counters of a host (`capybara ctl stats` → app). */
export async function hostAppStats(h: DemoHost): Promise<Record<string, number>> {
  const s = (await adminRequest({ path: adminSocketPath(h) }, { cmd: 'stats' })) as { app?: Record<string, number> };
  return s.app ?? {};
}

/** Testbed with the XDP balancer; the returned function takes it down if this call brought it up. */
export async function demoTestbed(log: (l: string) => void): Promise<() => Promise<void>> {
  const wasUp = (await status()).up;
  await up({ lb: 'xdp' });
  log(`testbed up: client ${PLAN.client.ip} -> VIP ${PLAN.vip} (XDP balancer in lb) -> hostA ${PLAN.hosts.hostA.ip} | hostB ${PLAN.hosts.hostB.ip}`);
  return async () => {
    if (!wasUp) await down().catch(() => {});
  };
}

export function emptySummary(start: number): DemoSummary {
  return {
    migrations: 0, bytesVerified: 0, blackoutUs: { p50: null, p99: null, max: null }, errors: 0, mode: 'xdp',
    fetches: 0, connections: 1, seconds: (Date.now() - start) / 1000, detail: [],
  };
}

const SIZES = ['1k', '100k', '5', '33k', '1m', '4k', '250k', '512'];

export async function runL7Demo(opts: DemoOptions): Promise<DemoSummary> {
  const start = Date.now();
  const log = opts.log ?? (() => {});
  const s = emptySummary(start);
  const say = (l: string) => {
    s.detail.push(l);
    log(l);
  };
  const count = opts.fetches ?? 100;
  const names = Array.from({ length: count }, (_, i) => `demo${i}-${SIZES[i % SIZES.length]}`);
  const backends = [...DEMO_HOSTS];
  const teardown = await demoTestbed(log);
  let servers: ChildProcess[] = [];
  let certs: CertSet | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'capy-l7demo-'));
  try {
    certs = opts.tls ? await makeCerts({ san: [`IP:${PLAN.vip}`] }) : undefined;
    const port = certs ? 443 : 80;
    servers = await startHostServers('l7', port, ['--backends', backends.join(','), ...(certs ? ['--tls-cert', certs.certFile, '--tls-key', certs.keyFile] : [])], log);
    const before = { hostA: await hostAppStats('hostA'), hostB: await hostAppStats('hostB') };
    const base = `${certs ? 'https' : 'http'}://${PLAN.vip}:${port}`;
    const args = ['netns', 'exec', PLAN.client.ns, 'curl', '-sS', '--max-time', '120', ...(certs ? ['--cacert', certs.caFile] : []), '-w', '%{http_code} %{num_connects}\\n'];
    names.forEach((n, i) => args.push('-o', join(dir, String(i)), `${base}/obj/${n}`));
    say(`curl in ${PLAN.client.ns}: ${count} objects from ${base}/obj/... on one keep-alive connection`);
    const r = await run('ip', args, { timeoutMs: 130_000 });
    if (r.code !== 0) {
      s.errors++;
      say(`curl failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
    const lines = r.stdout.trim().split('\n');
    s.connections = lines.reduce((a, l) => a + Number(l.split(' ')[1] ?? 0), 0);
    names.forEach((n, i) => {
      let body: Buffer;
      try {
        body = readFileSync(join(dir, String(i)));
      } catch {
        s.errors++;
        return;
      }
      const size = ruleSize(n)!;
      if (lines[i]?.startsWith('200 ') && body.length === size && createHash('sha256').update(body).digest('hex') === objectSha256(n, size)) {
        s.bytesVerified += size;
        s.fetches++;
      } else {
        s.errors++;
      }
    });
    const after = { hostA: await hostAppStats('hostA'), hostB: await hostAppStats('hostB') };
    let changes = 0;
    for (let i = 1; i < names.length; i++) if (ownerOf(`/obj/${names[i]}`, backends) !== ownerOf(`/obj/${names[i - 1]}`, backends)) changes++;
    for (const h of DEMO_HOSTS) {
      const d = (k: string) => (after[h][k] ?? 0) - (before[h][k] ?? 0);
      const own = names.filter((n) => ownerOf(`/obj/${n}`, backends) === h);
      const ownBytes = own.reduce((a, n) => a + ruleSize(n)!, 0);
      s.migrations += d('routeMigrations');
      if (d('servedBytes') !== ownBytes) s.errors++;
      say(`${h}: owns ${own.length} objects (${ownBytes} B); answered ${d('objects')} itself, wrote ${d('servedBytes')} body bytes, moved the connection to an owner ${d('routeMigrations')} times`);
    }
    say(`${s.fetches} of ${count} bodies matched their sha256 (${s.bytesVerified} B) over ${s.connections} connection(s); ${changes} ownership changes, ${s.migrations} routing migrations`);
    if (s.connections !== 1) s.errors++;
  } catch (err) {
    s.errors++;
    say(`error: ${(err as Error).message}`);
  } finally {
    for (const c of servers) await stopProcess(c, 'SIGTERM', 5000);
    rmSync(dir, { recursive: true, force: true });
    certs?.cleanup();
    await teardown();
  }
  s.seconds = (Date.now() - start) / 1000;
  return s;
}
