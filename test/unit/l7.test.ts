// The L7 app (runtime/apps/l7.ts) on Node's own net sockets over loopback: object catalogue and ownership,
// the state format, and proxy mode (front end a relays what backend b owns) with pipelined keep-alive
// requests. Live migration itself (DSR) needs two runtimes: test/interop/l7.test.ts.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Catalogue, objectChunk, objectSha256, ownerOf, ruleSize } from '../../runtime/apps/l7-objects.js';
import { L7Phase, decodeL7State, encodeL7State, l7App, type L7App } from '../../runtime/apps/l7.js';

describe('l7 objects', () => {
  it('sizes by name, content by (name, offset), owners by rendezvous hash', () => {
    assert.equal(ruleSize('logo-100k'), 102_400);
    assert.equal(ruleSize('x-3'), 3);
    assert.equal(ruleSize('big-2m'), 2 * 1024 * 1024);
    const d = ruleSize('plain')!;
    assert.ok(d >= 1024 && d < 1024 + 65536);
    assert.equal(ruleSize('../etc'), null);
    assert.deepEqual(objectChunk('a-1k', 100, 50), objectChunk('a-1k', 0, 200).subarray(100, 150));
    assert.notDeepEqual(objectChunk('a-1k', 0, 64), objectChunk('b-1k', 0, 64));
    assert.equal(objectSha256('a-1k', 1024), createHash('sha256').update(objectChunk('a-1k', 0, 1024)).digest('hex'));
    const owners = new Set(Array.from({ length: 64 }, (_, i) => ownerOf(`/obj/o${i}`, ['hostA', 'hostB'])));
    assert.deepEqual([...owners].sort(), ['hostA', 'hostB']);
    assert.equal(ownerOf('/obj/x', ['hostB', 'hostA']), ownerOf('/obj/x', ['hostA', 'hostB']));
    const fixed = new Catalogue(new Map([['only', 7]]));
    assert.equal(fixed.size('only'), 7);
    assert.equal(fixed.size('other-1k'), null);
  });

  it('state round-trips; malformed states are refused', () => {
    const s = {
      phase: L7Phase.Respond, peerEof: false, served: 4, routed: true, headWritten: true, bodyOffset: 512,
      response: { status: 200, minor: 1, keepAlive: true, isHead: false, name: 'a-1k', size: 1024, text: null },
      buffered: Buffer.from('GET /obj/b HTTP/1.1\r\n'),
    };
    assert.deepEqual(decodeL7State(encodeL7State(s)), s);
    const enc = Buffer.from(encodeL7State(s));
    for (let n = 1; n < enc.length; n++) assert.throws(() => decodeL7State(enc.subarray(0, n)), { code: 'ERR_APP_STATE' });
    const bad = Buffer.from(enc);
    bad.writeBigUInt64LE(2048n, 28); // body offset beyond the body
    assert.throws(() => decodeL7State(bad), { code: 'ERR_APP_STATE' });
  });
});

function listen(app: L7App): Promise<Server> {
  return new Promise((resolve) => {
    const srv = createServer({ allowHalfOpen: true }, (sock) => app.onConnection(sock));
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

function port(s: Server): number {
  return (s.address() as { port: number }).port;
}

describe('l7 proxy mode over loopback', () => {
  let a: L7App;
  let b: L7App;
  let sa: Server;
  let sb: Server;
  before(async () => {
    b = l7App({ self: 'b', backends: ['a', 'b'] });
    sb = await listen(b);
    a = l7App({ self: 'a', backends: ['a', 'b'], mode: 'proxy', connect: () => connect(port(sb), '127.0.0.1') });
    sa = await listen(a);
  });
  after(() => {
    a.close();
    sa.close();
    sb.close();
  });

  it('pipelined requests: the front end answers its own objects and relays the owner\'s, in order', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `q${i}-${[1, 70, 3][i % 3]}k`);
    const got = await new Promise<{ by: string; sha: string; status: number }[]>((resolve, reject) => {
      const s = connect(port(sa), '127.0.0.1');
      let buf = Buffer.alloc(0);
      const out: { by: string; sha: string; status: number }[] = [];
      s.on('connect', () => s.write(names.map((n) => `GET /obj/${n} HTTP/1.1\r\nHost: t\r\n\r\n`).join('')));
      s.on('error', reject);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const e = buf.indexOf('\r\n\r\n');
          if (e < 0) return;
          const head = buf.subarray(0, e).toString('latin1');
          const len = Number(/content-length: (\d+)/i.exec(head)![1]);
          if (buf.length < e + 4 + len) return;
          out.push({ status: Number(head.split(' ')[1]), by: /x-served-by: (\S+)/i.exec(head)![1]!, sha: createHash('sha256').update(buf.subarray(e + 4, e + 4 + len)).digest('hex') });
          buf = buf.subarray(e + 4 + len);
          if (out.length === names.length) {
            s.destroy();
            resolve(out);
          }
        }
      });
    });
    names.forEach((n, i) => {
      assert.equal(got[i]!.status, 200);
      assert.equal(got[i]!.by, ownerOf(`/obj/${n}`, ['a', 'b']), n);
      assert.equal(got[i]!.sha, objectSha256(n, ruleSize(n)!), n);
    });
    const relayed = names.filter((n) => ownerOf(`/obj/${n}`, ['a', 'b']) === 'b');
    assert.equal(a.counters.proxied, relayed.length);
    assert.equal(a.counters.proxiedBytes, relayed.reduce((x, n) => x + ruleSize(n)!, 0));
    assert.equal(a.counters.objects, names.length - relayed.length);
    assert.equal(b.counters.objects, relayed.length);
    assert.equal(a.counters.upstreamConnects, 1, 'one pooled keep-alive upstream');
  });
});
