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
import { PatternVerifier, patternSha256 } from './apps/pattern.js';
import { CapybaraError, NetnsError } from './errors.js';
import { packageRoot } from './native.js';
import { Stack } from './stack.js';

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
  fetches?: number;
  bytes?: number;
  timeoutMs?: number;
  log?: (line: string) => void;
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoSummary> {
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
  const serverStack = await Stack.open({ device: wire, address: '10.99.0.1/24', mac: '02:00:00:99:00:01' });
  let clientStack: Stack | undefined;
  const detail: string[] = [];
  let errors = 0;
  let verified = 0;
  try {
    clientStack = await Stack.open({ device: wire, address: '10.99.0.2/24', mac: '02:00:00:99:00:02' });
    const server = serverStack.createServer({ allowHalfOpen: true }, httpApp());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(80, () => resolve());
    });
    const conn = clientStack.connect(80, '10.99.0.1');
    await withTimeout(new Promise<void>((resolve, reject) => {
      conn.once('connect', () => resolve());
      conn.once('error', reject);
    }), opts.timeoutMs ?? 60_000, 'connect');
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
  }
  return summary('mem', start, { bytesVerified: verified, errors, fetches, connections: 1, detail });
}

async function runXdpDemo(opts: DemoOptions): Promise<DemoSummary> {
  const start = Date.now();
  const fetches = opts.fetches ?? 3;
  const bytes = opts.bytes ?? 10_000_000;
  const log = opts.log ?? (() => {});
  const detail: string[] = [];
  const wasUp = (await status()).up;
  await up();
  log(`testbed up (client ${PLAN.client.ip} -> lb -> hostA ${PLAN.hosts.hostA.ip} over ${PLAN.hosts.hostA.device})`);
  let server: ChildProcess | undefined;
  let errors = 0;
  let verified = 0;
  let connections = 0;
  try {
    server = spawn(process.execPath, [join(packageRoot(), 'bin', 'capybara.js'), 'serve', 'http', '--on', 'hostA', '--port', '80', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const listening = await waitForListening(server, opts.timeoutMs ?? 30_000);
    log(`server: capybara http on ${listening}`);
    const url = `http://${PLAN.hosts.hostA.ip}/bytes/${bytes}`;
    const result = await curlFetch(Array.from({ length: fetches }, () => url), opts.timeoutMs ?? 120_000);
    const want = patternSha256(bytes, fetches);
    connections = result.connects;
    const allOk = result.code === 0 && result.statuses.length === fetches && result.statuses.every((s) => s === 200);
    if (allOk && result.sha256 === want && result.bytes === bytes * fetches) {
      verified = result.bytes;
    } else {
      errors++;
    }
    const line = `curl: ${result.statuses.length} responses (${result.statuses.join(',')}), ${result.bytes} bytes, ${result.connects} connection(s), sha256 ${result.sha256 === want ? 'ok' : 'MISMATCH'}${result.code !== 0 ? `, exit ${result.code}: ${result.stderr.trim()}` : ''}`;
    detail.push(line);
    log(line);
  } catch (err) {
    errors++;
    detail.push(`error: ${(err as Error).message}`);
    log(`error: ${(err as Error).message}`);
  } finally {
    if (server) await stopProcess(server, 'SIGTERM', 5000);
    if (!wasUp) await down().catch(() => {});
  }
  return summary('xdp', start, { bytesVerified: verified, errors, fetches, connections, detail });
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
export function curlFetch(urls: string[], timeoutMs: number, ns = PLAN.client.ns): Promise<CurlResult> {
  return new Promise((resolve) => {
    const args = ['netns', 'exec', ns, 'curl', '-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)),
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
