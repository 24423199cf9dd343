// A small tool the interop tests run inside namespaces (ip netns exec NS node tcp-tool.js MODE ...).
// Prints one JSON line with the outcome. Does nothing when imported or run without a mode, because the
// test runner executes every file under dist/test.
//   send HOST PORT BYTES [--echo]       kernel TCP client: sends BYTES pattern bytes, half-closes, and
//                                       checks what comes back (the same bytes with --echo, none otherwise)
//   probe HOST PORT                     connects once; prints the outcome ("connected" or the error code)
//   close HOST PORT                     sends 5 bytes, half-closes, waits for the echo and the peer's FIN
//   http-server PORT                    kernel HTTP server serving GET /bytes/N with the pattern
//   stack-fetch DEVICE CIDR GW HOST PORT N [COUNT]
//                                       capybara Stack client fetching /bytes/N COUNT times over one connection
import { createServer as createHttpServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { HttpClient } from '../../runtime/apps/http-client.js';
import { PatternVerifier, patternFill } from '../../runtime/apps/pattern.js';
import { Stack } from '../../runtime/stack.js';

function out(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function connectTo(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function send(host: string, port: number, bytes: number, echo: boolean): Promise<void> {
  const s = await connectTo(host, port);
  const v = new PatternVerifier();
  let received = 0;
  let error: string | null = null;
  s.on('data', (d: Buffer) => {
    received += d.length;
    v.update(d);
  });
  s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  const ended = new Promise<void>((resolve) => {
    s.once('end', () => resolve());
    s.once('close', () => resolve());
  });
  const chunk = 64 * 1024;
  let sent = 0;
  while (sent < bytes && !error) {
    const len = Math.min(chunk, bytes - sent);
    const b = Buffer.allocUnsafe(len);
    patternFill(b, sent);
    sent += len;
    if (!s.write(b)) await new Promise<void>((r) => {
      s.once('drain', () => r());
      s.once('close', () => r());
    });
  }
  s.end();
  await ended;
  s.destroy();
  const ok = !error && sent === bytes && (echo ? received === bytes && v.ok : received === 0);
  out({ ok, sent, received, firstMismatch: v.firstMismatch, error });
}

async function probe(host: string, port: number): Promise<void> {
  try {
    const s = await connectTo(host, port);
    s.destroy();
    out({ outcome: 'connected' });
  } catch (e) {
    out({ outcome: (e as NodeJS.ErrnoException).code ?? String(e) });
  }
}

async function closeTest(host: string, port: number): Promise<void> {
  const s = await connectTo(host, port);
  let data = '';
  let endSeen = false;
  let error: string | null = null;
  s.setEncoding('utf8');
  s.on('data', (d: string) => (data += d));
  s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  s.on('end', () => (endSeen = true));
  const closed = new Promise<boolean>((resolve) => s.once('close', (hadError: boolean) => resolve(hadError)));
  s.end('hello');
  const hadError = await closed;
  out({ echoed: data, endSeen, hadError, error });
}

function httpServer(port: number): void {
  const server = createHttpServer((req, res) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404).end('not found\n');
      return;
    }
    const n = Number(m[1]);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(n) });
    let off = 0;
    const pump = () => {
      while (off < n) {
        const len = Math.min(64 * 1024, n - off);
        const b = Buffer.allocUnsafe(len);
        patternFill(b, off);
        off += len;
        if (!res.write(b)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  server.listen(port, '0.0.0.0', () => out({ listening: port }));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function stackFetch(device: string, cidr: string, gw: string, host: string, port: number, n: number, count: number): Promise<void> {
  const stack = await Stack.open({ device, address: cidr, gateway: gw });
  let result: Record<string, unknown> = {};
  try {
    const conn = stack.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      conn.once('connect', () => resolve());
      conn.once('error', reject);
    });
    const client = new HttpClient(conn);
    let okAll = true;
    let bytes = 0;
    const statuses: number[] = [];
    for (let i = 0; i < count; i++) {
      const v = new PatternVerifier();
      const r = await client.get(`/bytes/${n}`, (c) => v.update(c), host);
      statuses.push(r.status);
      bytes += v.offset;
      okAll &&= r.status === 200 && v.offset === n && v.ok;
    }
    conn.end();
    await new Promise<void>((resolve) => (conn.destroyed ? resolve() : conn.once('close', () => resolve())));
    result = { ok: okAll, bytes, statuses, flowId: conn.id, localPort: conn.localPort };
  } catch (e) {
    result = { ok: false, error: (e as NodeJS.ErrnoException).code ?? String(e), message: (e as Error).message };
  } finally {
    await stack.close({ timeoutMs: 2000 });
  }
  out(result);
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...a] = argv;
  switch (mode) {
    case 'send': return send(a[0]!, Number(a[1]), Number(a[2]), a.includes('--echo'));
    case 'probe': return probe(a[0]!, Number(a[1]));
    case 'close': return closeTest(a[0]!, Number(a[1]));
    case 'http-server': return httpServer(Number(a[0]));
    case 'stack-fetch': return stackFetch(a[0]!, a[1]!, a[2]!, a[3]!, Number(a[4]), Number(a[5]), Number(a[6] ?? 1));
    default: return undefined; // imported, or run by the test runner: nothing to do
  }
}

const MODES = new Set(['send', 'probe', 'close', 'http-server', 'stack-fetch']);
if (MODES.has(process.argv[2] ?? '')) {
  main(process.argv.slice(2)).then(
    () => {
      if (process.argv[2] !== 'http-server') process.exit(0);
    },
    (e: unknown) => {
      out({ ok: false, error: (e as NodeJS.ErrnoException).code ?? String(e), message: (e as Error)?.message });
      process.exit(1);
    },
  );
}
