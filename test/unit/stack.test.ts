// The runtime API on the real addon over the in-memory wire (no root needed). Skipped with a reason
// when the addon is not built.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AdminServer, adminRequest, stackAdminHandlers } from '../../runtime/admin.js';
import { PatternVerifier, echoApp, patternChunk } from '../../runtime/apps/index.js';
import type { Connection } from '../../runtime/connection.js';
import { Stack } from '../../runtime/stack.js';
import { addonSkip } from '../helpers/env.js';
import { onceEvent, waitFor, withTimeout } from '../helpers/wait.js';

const skip = addonSkip();

async function connected(c: Connection): Promise<void> {
  if (!c.connecting) return;
  await onceEvent(c, 'connect', 10_000);
}

describe('Stack on mem:', { skip: skip ?? false }, () => {
  let a: Stack;
  let b: Stack;
  const wire = `mem:unit-${process.pid}`;

  before(async () => {
    a = await Stack.open({ device: wire, address: '10.98.0.1/24', mac: '02:00:00:98:00:01' });
    b = await Stack.open({ device: wire, address: '10.98.0.2/24', mac: '02:00:00:98:00:02' });
  });
  after(async () => {
    await b?.close({ timeoutMs: 1000 });
    await a?.close({ timeoutMs: 1000 });
  });

  it('echoes bytes exactly and reports addresses and flow info', async () => {
    const server = a.createServer({ allowHalfOpen: true }, echoApp);
    await onceEvent(server.listen(7), 'listening', 5000);
    assert.deepEqual(server.address(), { address: '10.98.0.1', family: 'IPv4', port: 7 });
    const c = b.connect(7, '10.98.0.1');
    await connected(c);
    assert.equal(c.remoteAddress, '10.98.0.1');
    assert.equal(c.remotePort, 7);
    assert.equal(c.localAddress, '10.98.0.2');
    assert.ok((c.localPort ?? 0) > 0);
    assert.equal(c.info()?.state, 'ESTABLISHED');
    const v = new PatternVerifier();
    c.on('data', (d: Buffer) => v.update(d));
    const closed = onceEvent(c, 'close', 30_000);
    const n = 4_000_000;
    for (let off = 0; off < n; off += 65536) {
      if (!c.write(patternChunk(off, Math.min(65536, n - off)))) await onceEvent(c, 'drain', 10_000);
    }
    c.end();
    await closed;
    assert.equal(v.offset, n);
    assert.ok(v.ok, `mismatch at ${v.firstMismatch}`);
    assert.equal(c.bytesWritten, n);
    assert.equal(c.bytesRead, n);
    await withTimeout(new Promise<void>((r) => server.close(() => r())), 10_000, 'server close');
  });

  it('applies backpressure: write() returns false while the peer does not read, drain follows', async () => {
    let serverSide: Connection | undefined;
    const server = a.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => (serverSide = s));
    await onceEvent(server.listen(9000), 'listening', 5000);
    const c = b.connect(9000, '10.98.0.1');
    await connected(c);
    await waitFor(() => serverSide !== undefined, 5000, 'accept');
    let sent = 0;
    let blocked = false;
    // Bounded: receive window + send buffer are far below 64 MiB.
    while (sent < 64 * 1024 * 1024) {
      const ok = c.write(patternChunk(sent, 16384));
      sent += 16384;
      if (!ok) {
        blocked = true;
        break;
      }
      if (sent % (1 << 20) === 0) await new Promise((r) => setImmediate(r));
    }
    assert.ok(blocked, 'write() returned false');
    const drained = onceEvent(c, 'drain', 20_000);
    const v = new PatternVerifier();
    serverSide!.on('data', (d: Buffer) => v.update(d));
    serverSide!.resume();
    await drained;
    c.end();
    await onceEvent(serverSide!, 'end', 20_000);
    assert.equal(v.offset, sent);
    assert.ok(v.ok);
    const closed = onceEvent(c, 'close', 10_000);
    c.resume(); // read to EOF so the client stream can end
    serverSide!.end();
    await closed;
    server.close();
  });

  it('half-close: the server still writes after the client ended', async () => {
    const server = a.createServer({ allowHalfOpen: true }, (s) => {
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (got += d));
      s.on('end', () => s.end(`got ${got}`));
    });
    await onceEvent(server.listen(9001), 'listening', 5000);
    const c = b.connect({ port: 9001, host: '10.98.0.1', allowHalfOpen: true });
    await connected(c);
    let reply = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => (reply += d));
    const ended = onceEvent(c, 'end', 10_000);
    const closed = onceEvent(c, 'close', 10_000);
    c.end('ping');
    await ended;
    assert.equal(reply, 'got ping');
    await closed;
    server.close();
  });

  it('typed errors: refused, reset, address in use', async () => {
    const refused = b.connect(9999, '10.98.0.1');
    const [err] = await onceEvent<[Error & { code: string }]>(refused, 'error', 10_000);
    assert.equal(err.code, 'ECONNREFUSED');

    const s1 = a.createServer(() => {});
    await onceEvent(s1.listen(9002), 'listening', 5000);
    const s2 = a.createServer(() => {});
    const [inUse] = await onceEvent<[Error & { code: string }]>(s2.listen(9002), 'error', 5000);
    assert.equal(inUse.code, 'EADDRINUSE');
    s1.close();

    let serverSide: Connection | undefined;
    const s3 = a.createServer((s) => (serverSide = s));
    await onceEvent(s3.listen(9003), 'listening', 5000);
    const c = b.connect(9003, '10.98.0.1');
    await connected(c);
    await waitFor(() => serverSide !== undefined, 5000, 'accept');
    const reset = onceEvent<[Error & { code: string }]>(serverSide!, 'error', 10_000);
    c.write('unfinished');
    c.destroy(); // not ended: abort -> RST
    const [rst] = await reset;
    assert.equal(rst.code, 'ECONNRESET');
    s3.close();
  });

  it('stats, flows and the admin endpoint', async () => {
    const st = a.stats();
    assert.ok(st.tcp.segsIn! > 0 && st.tcp.segsOut! > 0);
    assert.ok(st.arena.slots > 0);
    assert.ok(Array.isArray(a.flows()));
    const dir = mkdtempSync(join(tmpdir(), 'capybara-stack-admin-'));
    const admin = await AdminServer.start({ name: 'a', dir, handlers: stackAdminHandlers(a) });
    try {
      const s = (await adminRequest({ path: admin.path }, { cmd: 'stats' })) as typeof st;
      assert.ok(s.tcp.segsIn! >= st.tcp.segsIn!);
      const info = (await adminRequest({ path: admin.path }, { cmd: 'info' })) as { address: string };
      assert.equal(info.address, '10.98.0.1');
    } finally {
      await admin.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a closed stack refuses new work', async () => {
    const c = await Stack.open({ device: `mem:unit-closed-${process.pid}`, address: '10.97.0.1/24' });
    await c.close();
    assert.equal(c.closed, true);
    assert.throws(() => c.createServer(), { code: 'ERR_CAPYBARA_STACK_CLOSED' });
    assert.throws(() => c.connect(80, '10.97.0.2'), { code: 'ERR_CAPYBARA_STACK_CLOSED' });
    await c.close(); // idempotent
  });
});
