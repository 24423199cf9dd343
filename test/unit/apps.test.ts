// The apps run on Node net sockets here (real TCP on loopback), the same code that runs on capybara.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Agent, get as httpGet } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { discardApp, echoApp, httpApp, sockperfApp, PatternVerifier, patternChunk, patternSha256 } from '../../runtime/apps/index.js';
import { HttpClient } from '../../runtime/apps/http-client.js';
import { hasCommand } from '../helpers/env.js';
import { onceEvent, waitFor, withTimeout } from '../helpers/wait.js';

function listen(handler: (s: Socket) => void): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    handler(s);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, sockets })));
}

function rawExchange(port: number, request: string, timeoutMs = 10_000): Promise<string> {
  return withTimeout(new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let data = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (data += d));
    s.on('error', reject);
    s.on('end', () => s.end()); // the server closed first: close our side too
    s.on('close', () => resolve(data));
    s.write(request);
  }), timeoutMs, 'raw HTTP exchange');
}

describe('http app over node net', () => {
  let srv: Awaited<ReturnType<typeof listen>>;
  before(async () => {
    srv = await listen(httpApp());
  });
  after(async () => {
    for (const s of srv.sockets) s.destroy();
    await new Promise((r) => srv.server.close(r));
  });

  it('serves /health and 404 with keep-alive, through node http', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const fetch = (path: string) => withTimeout(new Promise<{ status: number; body: string; socket: unknown }>((resolve, reject) => {
      httpGet({ host: '127.0.0.1', port: srv.port, path, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, socket: res.socket }));
      }).on('error', reject);
    }), 10_000, path);
    const a = await fetch('/health');
    assert.equal(a.status, 200);
    assert.equal(a.body, 'ok');
    const b = await fetch('/nope');
    assert.equal(b.status, 404);
    assert.equal(a.socket, b.socket, 'second request reused the connection');
    agent.destroy();
  });

  it('streams /bytes/N with the exact pattern over one connection', async () => {
    const s = connect({ port: srv.port, host: '127.0.0.1' });
    await onceEvent(s, 'connect', 5000);
    const client = new HttpClient(s);
    for (const n of [0, 1, 65535, 65536, 65537, 3_000_001]) {
      const v = new PatternVerifier();
      const r = await withTimeout(client.get(`/bytes/${n}`, (c) => v.update(c)), 20_000, `/bytes/${n}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-length'), String(n));
      assert.equal(v.offset, n);
      assert.ok(v.ok, `mismatch at ${v.firstMismatch}`);
    }
    s.destroy();
  });

  it('answers pipelined requests in order', async () => {
    const reqs = 'GET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
    const data = await rawExchange(srv.port, reqs);
    const parts = data.split('HTTP/1.1 ').slice(1);
    assert.equal(parts.length, 3, data);
    assert.match(parts[0]!, /^200 OK[\s\S]*Content-Length: 5\r\n\r\n/);
    assert.ok(parts[0]!.endsWith(patternChunk(0, 5).toString('latin1')));
    assert.match(parts[1]!, /^200 OK[\s\S]*\r\n\r\nok$/);
    assert.match(parts[2]!, /^200 OK[\s\S]*Connection: close\r\n/);
    assert.ok(parts[2]!.endsWith(patternChunk(0, 3).toString('latin1')));
  });

  it('closes after Connection: close, HTTP/1.0, and errors; handles bodies and HEAD', async () => {
    const closeReq = await rawExchange(srv.port, 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n');
    assert.match(closeReq, /Connection: close\r\n\r\nok$/);
    const http10 = await rawExchange(srv.port, 'GET /health HTTP/1.0\r\n\r\n');
    assert.match(http10, /^HTTP\/1\.1 200 OK[\s\S]*ok$/);
    const bad = await rawExchange(srv.port, 'garbage\r\n\r\n');
    assert.match(bad, /^HTTP\/1\.1 400 /);
    const post = await rawExchange(srv.port, 'POST /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET /health HTTP/1.1\r\nConnection: close\r\n\r\n');
    assert.match(post, /^HTTP\/1\.1 405 [\s\S]*HTTP\/1\.1 200 OK[\s\S]*ok$/);
    const head = await rawExchange(srv.port, 'HEAD /bytes/100 HTTP/1.1\r\nConnection: close\r\n\r\n');
    assert.match(head, /Content-Length: 100\r\nConnection: close\r\n\r\n$/);
    const big = await rawExchange(srv.port, `GET /${'a'.repeat(20000)} HTTP/1.1\r\n\r\n`);
    assert.match(big, /^HTTP\/1\.1 431 /);
  });

  it('answers a request whose client half-closed right after sending it', async () => {
    const data = await withTimeout(new Promise<string>((resolve, reject) => {
      const s = connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
      let d = '';
      s.setEncoding('latin1');
      s.on('data', (x: string) => (d += x));
      s.on('error', reject);
      s.on('close', () => resolve(d));
      s.end('GET /bytes/100000 HTTP/1.1\r\n\r\n');
    }), 10_000, 'half-closed request');
    const body = data.slice(data.indexOf('\r\n\r\n') + 4);
    assert.equal(body.length, 100000);
    assert.equal(Buffer.from(body, 'latin1').equals(patternChunk(0, 100000)), true);
  });

  it('does not buffer a large response for a client that stops reading', async () => {
    const s = connect({ port: srv.port, host: '127.0.0.1' });
    await onceEvent(s, 'connect', 5000);
    s.write('GET /bytes/200000000 HTTP/1.1\r\nConnection: close\r\n\r\n');
    s.pause();
    // Wait until the server side is blocked on backpressure, then look at what it holds.
    await waitFor(() => [...srv.sockets].some((x) => x.writableNeedDrain), 10_000, 'server to hit backpressure');
    const held = Math.max(...[...srv.sockets].map((x) => x.writableLength));
    assert.ok(held <= 256 * 1024, `server buffered ${held} bytes in user space`);
    s.destroy();
  });

  it('serves curl (several URLs over one keep-alive connection)', { skip: hasCommand('curl') ? false : 'curl not installed' }, async () => {
    const n = 2_000_000;
    const url = `http://127.0.0.1:${srv.port}/bytes/${n}`;
    const child = spawn('curl', ['-sS', '--max-time', '30', '-w', '%{stderr}%{http_code} %{num_connects}\\n', '-o', '-', url, '-o', '-', url, '-o', '-', url]);
    const h = createHash('sha256');
    let bytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = await onceEvent<[number]>(child, 'close', 40_000);
    assert.equal(code, 0, err);
    assert.equal(bytes, 3 * n);
    assert.equal(h.digest('hex'), patternSha256(n, 3));
    assert.deepEqual(err.trim().split('\n'), ['200 1', '200 0', '200 0']);
  });
});

describe('echo, discard and sockperf apps over node net', () => {
  it('echo returns every byte and closes after the peer half-closes', async () => {
    const srv = await listen(echoApp);
    try {
      const s = connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
      await onceEvent(s, 'connect', 5000);
      const v = new PatternVerifier();
      s.on('data', (d: Buffer) => v.update(d));
      const closed = onceEvent(s, 'close', 30_000);
      const n = 5_000_000;
      for (let off = 0; off < n; off += 100_000) {
        if (!s.write(patternChunk(off, 100_000))) await onceEvent(s, 'drain', 10_000);
      }
      s.end();
      await closed;
      assert.equal(v.offset, n);
      assert.ok(v.ok);
    } finally {
      await new Promise((r) => srv.server.close(r));
    }
  });

  it('discard drops everything and answers FIN with FIN', async () => {
    let dropped = 0;
    const srv = await listen(discardApp({ onBytes: (n) => (dropped += n) }));
    try {
      const s = connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
      await onceEvent(s, 'connect', 5000);
      let got = 0;
      s.on('data', (d: Buffer) => (got += d.length));
      const ended = onceEvent(s, 'end', 10_000);
      s.end(Buffer.alloc(1_000_000, 1));
      await ended;
      assert.equal(got, 0);
      assert.equal(dropped, 1_000_000);
      s.destroy();
    } finally {
      await new Promise((r) => srv.server.close(r));
    }
  });

  it('sockperf responder answers pong requests with the client bit cleared', async () => {
    const srv = await listen(sockperfApp);
    try {
      const s = connect({ port: srv.port, host: '127.0.0.1' });
      await onceEvent(s, 'connect', 5000);
      const msg = (seq: number, flags: number, len: number) => {
        const b = Buffer.alloc(len, 0xab);
        b.writeBigUInt64BE(BigInt(seq), 0);
        b.writeUInt16BE(flags, 8);
        b.writeUInt32BE(len, 10);
        return b;
      };
      const replies: Buffer[] = [];
      s.on('data', (d: Buffer) => replies.push(d));
      // one without pong request (no answer), two with; sent in pieces that split headers
      const all = Buffer.concat([msg(1, 1, 20), msg(2, 3, 64), msg(3, 3, 14)]);
      s.write(all.subarray(0, 25));
      s.write(all.subarray(25));
      await waitFor(() => Buffer.concat(replies).length >= 78, 5000, 'replies');
      const r = Buffer.concat(replies);
      assert.equal(r.length, 78);
      assert.equal(r.readBigUInt64BE(0), 2n);
      assert.equal(r.readUInt16BE(8), 2);
      assert.equal(r.readBigUInt64BE(64), 3n);
      s.destroy();
    } finally {
      await new Promise((r) => srv.server.close(r));
    }
  });
});
