// `capybara demo`: serve the http app on a capybara stack and fetch from it with a verified client.
// On the netns testbed (root) the server runs over AF_XDP in hostA and the client is the kernel's curl in
// `client`; elsewhere (or with --mem) two stacks share an in-memory wire in this process.
// The summary keeps the keys live migration will fill in (migrations, blackoutUs).
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { PLAN, checkNetnsSupport, down, status, up } from '../dataplane/testbed.js';
import { stopProcess } from '../dataplane/exec.js';
import { HttpClient } from './apps/http-client.js';
import { httpApp } from './apps/http.js';
import { PatternVerifier } from './apps/pattern.js';
import { CapybaraError, NetnsError } from './errors.js';
import { packageRoot } from './native.js';
import { Stack } from './stack.js';
import { adminRequest, adminSocketPath } from './admin.js';
import type { MigrationTimings } from './migration/migrator.js';
import type { StreamReport } from './demo/stream-client.js';
import { makeCerts, type CertSet } from './tls-cert.js';

export interface DemoSummary {
  migrations: number;
  bytesVerified: number;
  blackoutUs: { p50: number | null; p99: number | null; max: number | null };
  errors: number;
  mode: 'xdp' | 'mem';
  fetches: number;
  connections: number;
  seconds: number;
  detail: string[];
}

export interface DemoOptions {
  mem?: boolean;
  /** Migrations on the testbed (default 20). */
  migrations?: number;
  fetches?: number;
  bytes?: number;
  timeoutMs?: number;
  log?: (line: string) => void;
  /** Run the client stream over TLS (certificates made with the openssl CLI): the TLS state migrates too. */
  tls?: boolean;
  /** Which story: echo (default), l7 (L7 direct server return, apps/l7-demo.ts) or redis (apps/redis-demo.ts). */
  app?: 'echo' | 'l7' | 'redis';
  /** The echo runs on the engine thread (serve --native) and migrates through the engines' lane. */
  native?: boolean;
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoSummary> {
  if (opts.app === 'l7' || opts.app === 'redis') {
    await checkNetnsSupport(); // these need the testbed: no in-memory variant
    return opts.app === 'l7' ? (await import('./apps/l7-demo.js')).runL7Demo(opts) : (await import('./apps/redis-demo.js')).runRedisDemo(opts);
  }
  if (!opts.mem) {
    try {
      await checkNetnsSupport();
    } catch (err) {
      if (!(err instanceof NetnsError)) throw err;
      opts.log?.(`no testbed here (${err.message}); running on the in-memory wire`);
      return runMemDemo(opts);
    }
    return runXdpDemo(opts);
  }
  return runMemDemo(opts);
}

function summary(mode: 'xdp' | 'mem', start: number, fields: Partial<DemoSummary>): DemoSummary {
  return {
    migrations: 0,
    bytesVerified: 0,
    blackoutUs: { p50: null, p99: null, max: null },
    errors: 0,
    mode,
    fetches: 0,
    connections: 0,
    seconds: (Date.now() - start) / 1000,
    detail: [],
    ...fields,
  };
}

async function runMemDemo(opts: DemoOptions): Promise<DemoSummary> {
  const start = Date.now();
  const fetches = opts.fetches ?? 3;
  const bytes = opts.bytes ?? 10_000_000;
  const wire = `mem:demo`;
  const certs = opts.tls ? await makeCerts({ san: ['IP:10.99.0.1'] }) : undefined;
  const serverStack = await Stack.open({ device: wire, address: '10.99.0.1/24', mac: '02:00:00:99:00:01' });
  let clientStack: Stack | undefined;
  const detail: string[] = [];
  let errors = 0;
  let verified = 0;
  try {
    clientStack = await Stack.open({ device: wire, address: '10.99.0.2/24', mac: '02:00:00:99:00:02' });
    const tls = certs ? { key: certs.key, cert: certs.cert } : undefined;
    const server = serverStack.createServer({ allowHalfOpen: true, tls }, httpApp());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(80, () => resolve());
    });
    const conn = clientStack.connect({ port: 80, host: '10.99.0.1', tls: certs ? { ca: certs.ca } : undefined });
    await withTimeout(new Promise<void>((resolve, reject) => {
      conn.once(certs ? 'secureConnect' : 'connect', () => resolve());
      conn.once('error', reject);
    }), opts.timeoutMs ?? 60_000, 'connect');
    if (certs) {
      const line = `TLS: ${conn.getProtocol()} ${conn.getCipher()?.name}`;
      detail.push(line);
      opts.log?.(line);
    }
    const client = new HttpClient(conn);
    for (let i = 0; i < fetches; i++) {
      const v = new PatternVerifier();
      const t0 = Date.now();
      const r = await withTimeout(client.get(`/bytes/${bytes}`, (c) => v.update(c)), opts.timeoutMs ?? 60_000, 'fetch');
      const ok = r.status === 200 && v.offset === bytes && v.ok;
      if (ok) verified += bytes;
      else errors++;
      const line = `fetch ${i + 1}: ${r.status}, ${v.offset} bytes, ${ok ? 'pattern ok' : `MISMATCH at ${v.firstMismatch}`} (${Date.now() - t0} ms)`;
      detail.push(line);
      opts.log?.(line);
    }
    conn.end();
    await withTimeout(new Promise<void>((resolve) => (conn.closed ? resolve() : conn.once('close', () => resolve()))), 5000, 'close').catch(() => conn.destroy());
  } catch (err) {
    errors++;
    detail.push(`error: ${(err as Error).message}`);
    opts.log?.(`error: ${(err as Error).message}`);
  } finally {
    await clientStack?.close({ timeoutMs: 1000 });
    await serverStack.close({ timeoutMs: 1000 });
    certs?.cleanup();
  }
  return summary('mem', start, { bytesVerified: verified, errors, fetches, connections: 1, detail });
}

/** The owner of the demo's one application flow, asked of both runtimes. */
async function owner(): Promise<'hostA' | 'hostB' | null> {
  for (const h of ['hostA', 'hostB'] as const) {
    const flows = (await adminRequest({ path: adminSocketPath(h) }, { cmd: 'flows' })) as { localPort: number; state: string }[];
    if (flows.some((f) => f.localPort === DEMO_PORT && f.state === 'ESTABLISHED')) return h;
  }
  return null;
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const DEMO_PORT = 7;

/**
 * The story on the testbed: echo on hostA and hostB behind the XDP balancer's VIP, a kernel client in
 * `client` streaming numbered messages through the VIP, and the connection migrated back and forth
 * between the hosts while it streams. The client's longest pause around each migration is the blackout
 * it saw.
 */
async function runXdpDemo(opts: DemoOptions): Promise<DemoSummary> {
  const start = Date.now();
  const rounds = opts.migrations ?? 20;
  const log = opts.log ?? (() => {});
  const detail: string[] = [];
  const wasUp = (await status()).up;
  await up({ lb: 'xdp' });
  log(`testbed up: client ${PLAN.client.ip} -> VIP ${PLAN.vip} (XDP balancer in lb) -> hostA ${PLAN.hosts.hostA.ip} | hostB ${PLAN.hosts.hostB.ip}`);
  const servers: ChildProcess[] = [];
  let client: ChildProcess | undefined;
  let errors = 0;
  let migrations = 0;
  const blackouts: number[] = [];
  const phases: MigrationTimings[] = [];
  let report: StreamReport | undefined;
  let certs: CertSet | undefined;
  try {
    certs = opts.tls ? await makeCerts({ san: [`IP:${PLAN.vip}`] }) : undefined;
    const tlsArgs = certs ? ['--tls-cert', certs.certFile, '--tls-key', certs.keyFile] : [];
    const nativeArgs = opts.native ? ['--native'] : [];
    for (const h of ['hostA', 'hostB'] as const) {
      const child = spawn(process.execPath, [join(packageRoot(), 'bin', 'capybara.js'), 'serve', 'echo', '--on', h, '--port', String(DEMO_PORT), '--json', ...tlsArgs, ...nativeArgs], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      servers.push(child);
      log(`${h}: capybara echo${opts.native ? ' (native: on the engine thread, migrating through the lane)' : ''} on ${await waitForListening(child, opts.timeoutMs ?? 30_000)}, VIP ${PLAN.vip}`);
    }
    const seconds = Math.max(3, Math.ceil(rounds * 0.15) + 2);
    client = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(packageRoot(), 'dist', 'runtime', 'demo', 'stream-client.js'),
      PLAN.vip, String(DEMO_PORT), String(seconds), ...(certs ? [certs.caFile] : [])],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, CAPYBARA_STREAM_WINDOWS: '1' } });
    client.stdin?.on('error', () => {});
    const out = collect(client);
    let found: 'hostA' | 'hostB' | null = null;
    for (let i = 0; i < 50 && !found; i++) {
      await delay(100);
      found = await owner();
    }
    if (!found) throw new CapybaraError('ERR_CAPYBARA_DEMO', 'the client stream did not reach either host');
    let from: 'hostA' | 'hostB' = found;
    log(`client streaming through the VIP; the balancer chose ${from}`);
    await delay(300);
    const starts: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const to: 'hostA' | 'hostB' = from === 'hostA' ? 'hostB' : 'hostA';
      starts.push(Number(process.hrtime.bigint() / 1000n));
      const r = (await adminRequest({ path: adminSocketPath(from) }, { cmd: 'migrate', flow: 'all', to }, 10_000)) as MigrateAnswer;
      if (r.migrated === 1 && r.timings[0]) {
        migrations++;
        phases.push(r.timings[0]);
        // The handoff on the shared monotonic clock: the client reports its longest echo interval across it.
        const t = r.timings[0];
        const end = Number(process.hrtime.bigint() / 1000n);
        client.stdin?.write(`W ${Math.floor(t.frozenAtUs ?? starts[starts.length - 1]!)} ${Math.ceil(t.doneAtUs ?? end)}\n`);
        from = to;
      } else {
        errors++;
        detail.push(`migration ${i + 1} ${from} -> ${to} failed: ${r.errors.map((e) => `${e.code} ${e.message}`).join('; ') || 'no flow'}`);
        starts.pop();
      }
      await delay(100);
    }
    client.stdin?.end(); // the client stops and reports
    report = JSON.parse((await out).trim().split('\n').pop() ?? '{}') as StreamReport;
    if (report.error) {
      errors++;
      detail.push(`client: ${report.error}`);
    }
    if (report.bad > 0) errors++;
    if (certs && report.tls?.handshakes !== 1) {
      errors++;
      detail.push(`client: ${report.tls?.handshakes ?? 0} TLS handshakes (expected exactly one)`);
    }
    // Each migration's blackout: the client's longest echo interval across its handoff (as capybara bench
    // migration measures it); without window answers, its longest pause overlapping the migration.
    if (report.windows && report.windows.length === starts.length) blackouts.push(...report.windows);
    else {
      for (const t of starts) {
        let worst = 0;
        for (const [at, gap] of report.gaps) if (at <= t + 200_000 && at + gap >= t) worst = Math.max(worst, gap);
        blackouts.push(worst);
      }
    }
  } catch (err) {
    errors++;
    detail.push(`error: ${(err as Error).message}`);
    log(`error: ${(err as Error).message}`);
  } finally {
    if (client) await stopProcess(client, 'SIGTERM', 3000);
    for (const s of servers) await stopProcess(s, 'SIGTERM', 5000);
    if (!wasUp) await down().catch(() => {});
    certs?.cleanup();
  }
  const sorted = [...blackouts].sort((a, b) => a - b);
  const med = (k: keyof MigrationTimings) => percentile(phases.map((p) => Number(p[k])).sort((a, b) => a - b), 50);
  if (phases.length) {
    const line = `phases (median us): capture ${med('captureUs')?.toFixed(0)}, freeze ${med('freezeUs')?.toFixed(0)}, snapshot ${med('snapshotUs')?.toFixed(0)}, ship+adopt ${med('shipUs')?.toFixed(0)}, steer ${med('steerUs')?.toFixed(0)}, forward ${med('releaseUs')?.toFixed(0)}`;
    detail.push(line);
    log(line);
  }
  if (report) {
    const line = `client: ${report.echoed} messages echoed, ${report.bytes} bytes verified, ${report.bad} bad, ${report.error ?? 'no error'}`;
    detail.push(line);
    log(line);
    if (report.tls) {
      const t = `client TLS: ${report.tls.protocol} ${report.tls.cipher}, ${report.tls.handshakes} handshake(s) for the whole stream`;
      detail.push(t);
      log(t);
    }
  }
  return summary('xdp', start, {
    migrations, bytesVerified: report && report.bad === 0 ? report.bytes : 0, errors, connections: 1,
    blackoutUs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.length ? sorted[sorted.length - 1]! : null },
    detail,
  });
}

interface MigrateAnswer {
  migrated: number;
  failed: number;
  timings: MigrationTimings[];
  errors: { code: string; message: string }[];
}

function collect(child: ChildProcess): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.resume();
    child.once('close', () => resolve(out));
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function waitForListening(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => done(new CapybaraError('ERR_CAPYBARA_TIMEOUT', `server did not start within ${timeoutMs} ms: ${err.trim()}`)), timeoutMs);
    const done = (e: Error | null, v?: string) => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners('data');
      child.stdout?.resume(); // keep draining so the server never blocks on a full pipe
      child.removeListener('exit', onExit);
      if (e) reject(e);
      else resolve(v ?? '');
    };
    const onExit = (code: number | null) => done(new CapybaraError('ERR_CAPYBARA_SERVER_EXITED', `server exited (${code}) before listening: ${err.trim()}`));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (const line of out.split('\n')) {
        try {
          const j = JSON.parse(line) as { event?: string; address?: string; port?: number; device?: string };
          if (j.event === 'listening') done(null, `${j.address}:${j.port} (${j.device})`);
        } catch {
          // partial line
        }
      }
    });
    child.once('exit', onExit);
  });
}

export interface CurlResult {
  code: number | null;
  bytes: number;
  sha256: string;
  statuses: number[];
  connects: number;
  stderr: string;
}

/** Fetches urls with one curl run in the client namespace (one keep-alive connection) and hashes stdout. */
export function curlFetch(urls: string[], timeoutMs: number, ns = PLAN.client.ns, extra: string[] = []): Promise<CurlResult> {
  return new Promise((resolve) => {
    const args = ['netns', 'exec', ns, 'curl', '-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...extra,
      '-w', '%{stderr}RESULT %{http_code} %{num_connects}\\n'];
    for (const u of urls) args.push('-o', '-', u);
    const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = createHash('sha256');
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 5000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const statuses: number[] = [];
      let connects = 0;
      const rest: string[] = [];
      for (const line of stderr.split('\n')) {
        const m = /^RESULT (\d{3}) (\d+)$/.exec(line.trim());
        if (m) {
          statuses.push(Number(m[1]));
          connects += Number(m[2]);
        } else if (line.trim()) rest.push(line);
      }
      resolve({ code, bytes, sha256: h.digest('hex'), statuses, connects, stderr: rest.join('\n') });
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new CapybaraError('ERR_CAPYBARA_TIMEOUT', `${what} took longer than ${ms} ms`)), ms);
    }),
  ]);
}
