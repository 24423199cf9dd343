import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MigrationChannel, type ChannelOptions } from '../../runtime/migration/channel.js';
import { MigrationDedupe } from '../../runtime/migration/dedupe.js';
import { ChannelError, type ChannelErrorCode } from '../../runtime/migration/errors.js';
import { FrameDecoder, frame } from '../../runtime/migration/frame.js';
import { decodeMessage, encodeMessage, MAX_REASON_BYTES, type MigrationMessage } from '../../runtime/migration/messages.js';
import { ChannelSession, MAX_HELLO_FRAME, type SessionEvent, type SessionOptions } from '../../runtime/migration/session.js';
import { SlidingWindow } from '../../runtime/migration/window.js';
import { encodeSnapshot } from '../../stack/snapshot.js';
import { bytesFrom, int, prng } from '../helpers/prng.js';


const KEY = Buffer.alloc(32, 0x11);
const KEY2 = Buffer.alloc(32, 0x22);
const KEY3 = Buffer.alloc(32, 0x33);
const FLOW = { localAddress: '10.0.0.1', localPort: 443, remoteAddress: '192.168.7.9', remotePort: 51000 };

function offer(id: number, snapshot: Uint8Array = Uint8Array.of(1, 2, 3), epoch = 1): MigrationMessage {
  return { type: 'offer', migrationId: id, epoch, flow: FLOW, snapshot };
}
function sample(): MigrationMessage[] {
  return [
    offer(1, encodeSnapshot([{ kind: 'tcp', version: 1, bytes: Uint8Array.of(9, 8, 7) }])),
    { type: 'adopted', migrationId: 1, epoch: 1 },
    { type: 'rejected', migrationId: 2 ** 53 - 1, epoch: 0xffffffff, reason: 'ERR_SNAPSHOT_VERSION: vielleicht später ✓' },
    { type: 'release', migrationId: 0, epoch: 0 },
    { type: 'ping', nonce: 12345 },
    { type: 'pong', nonce: 12345 },
  ];
}

function isCode(code: ChannelErrorCode) {
  return (err: unknown) => {
    assert.ok(err instanceof ChannelError, `expected ChannelError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

// ---- sans-IO helpers -------------------------------------------------------------------------------

function sessions(a: Partial<SessionOptions> = {}, b: Partial<SessionOptions> = {}) {
  return {
    a: new ChannelSession({ name: 'hostA', role: 'initiator', key: KEY, keyEpoch: 0, ...a }),
    b: new ChannelSession({ name: 'hostB', role: 'responder', key: KEY, keyEpoch: 0, ...b }),
  };
}

interface Log { events: SessionEvent[]; errors: ChannelError[] }
const msgs = (log: Log) => log.events.flatMap((e) => (e.type === 'message' ? [e.message] : []));
const rejected = (log: Log) => log.events.flatMap((e) => (e.type === 'rejected' ? [e.error] : []));

/** Runs both hellos and finished through; returns what each side saw and the A→B stream bytes. */
function handshake(a: ChannelSession, b: ChannelSession) {
  const la: Log = { events: [], errors: [] };
  const lb: Log = { events: [], errors: [] };
  const aToB: Buffer[] = [a.start()];
  let toB = [...aToB];
  let toA = [b.start()];
  for (let round = 0; round < 4 && (toA.length || toB.length); round++) {
    const nextA: Buffer[] = [];
    const nextB: Buffer[] = [];
    for (const f of toB) {
      const o = b.receive(f);
      lb.events.push(...o.events);
      if (o.error) lb.errors.push(o.error);
      nextA.push(...o.frames);
    }
    for (const f of toA) {
      const o = a.receive(f);
      la.events.push(...o.events);
      if (o.error) la.errors.push(o.error);
      nextB.push(...o.frames);
    }
    aToB.push(...nextB);
    toA = nextA;
    toB = nextB;
  }
  return { la, lb, aToB };
}

function feed(s: ChannelSession, ...frames: Uint8Array[]): Log {
  const log: Log = { events: [], errors: [] };
  for (const f of frames) {
    const o = s.receive(f);
    log.events.push(...o.events);
    if (o.error) log.errors.push(o.error);
  }
  return log;
}

describe('sliding window', () => {
  it('accepts new and reordered numbers, rejects duplicates and old ones', () => {
    const w = new SlidingWindow(64);
    assert.equal(w.accept(0), 'new');
    assert.equal(w.accept(0), 'duplicate');
    assert.equal(w.accept(5), 'new');
    assert.equal(w.accept(3), 'new');
    assert.equal(w.accept(3), 'duplicate');
    assert.equal(w.accept(4), 'new');
    assert.equal(w.accept(100), 'new');
    assert.equal(w.check(36), 'old');   // 100 - 36 = 64: out of the window
    assert.equal(w.check(37), 'new');
    assert.equal(w.accept(5), 'old');
    assert.equal(w.accept(99), 'new');
    assert.equal(w.accept(99), 'duplicate');
    // bits of numbers that scroll by are cleared, not mistaken for the ones 64 later
    assert.equal(w.accept(164), 'new');
    assert.equal(w.accept(163), 'new');
    assert.equal(w.accept(2 ** 53 - 1), 'new');
    assert.equal(w.accept(2 ** 53 - 2), 'new');
    assert.equal(w.accept(2 ** 53 - 1), 'duplicate');
    assert.throws(() => new SlidingWindow(33), RangeError);
  });

  it('agrees with an exact set over a random walk', () => {
    const r = prng(3);
    const w = new SlidingWindow(128);
    const seen = new Set<number>();
    let top = -1;
    for (let i = 0; i < 20_000; i++) {
      const n = Math.max(0, top + int(r, 40) - 30);
      const expected = n > top ? 'new' : top - n >= 128 ? 'old' : seen.has(n) ? 'duplicate' : 'new';
      assert.equal(w.accept(n), expected, `step ${i} n=${n}`);
      if (expected === 'new') { seen.add(n); top = Math.max(top, n); }
    }
  });
});

describe('migration messages', () => {
  it('round trip every type', () => {
    for (const m of sample()) assert.deepEqual(decodeMessage(encodeMessage(m)), m);
  });

  it('refuse invalid messages to send (not fatal)', () => {
    const bad: unknown[] = [
      { ...offer(1), migrationId: -1 }, { ...offer(1), migrationId: 2 ** 53 }, { ...offer(1), epoch: 2 ** 32 },
      { ...offer(1), flow: { ...FLOW, localAddress: '10.0.0.256' } }, { ...offer(1), flow: { ...FLOW, remoteAddress: '::1' } },
      { ...offer(1), flow: { ...FLOW, localPort: 65536 } }, { ...offer(1), snapshot: 'abc' },
      { type: 'rejected', migrationId: 1, epoch: 1, reason: 'x'.repeat(MAX_REASON_BYTES + 1) },
      { type: 'ping', nonce: 1.5 }, { type: 'hello' },
    ];
    for (const m of bad) {
      assert.throws(() => encodeMessage(m as MigrationMessage), (err: unknown) => {
        assert.ok(err instanceof ChannelError && err.code === 'ERR_CHANNEL_MESSAGE' && !err.fatal, String(err));
        return true;
      });
    }
  });

  it('decode every truncation and corruption to ERR_CHANNEL_PROTOCOL', () => {
    for (const m of sample()) {
      const b = encodeMessage(m);
      for (let n = 0; n < b.length; n++) assert.throws(() => decodeMessage(b.subarray(0, n)), isCode('ERR_CHANNEL_PROTOCOL'));
      assert.throws(() => decodeMessage(Uint8Array.from([...b, 0])), isCode('ERR_CHANNEL_PROTOCOL'));
    }
    assert.throws(() => decodeMessage(Uint8Array.of(0)), isCode('ERR_CHANNEL_PROTOCOL'));
    assert.throws(() => decodeMessage(Uint8Array.of(0x80, 1)), isCode('ERR_CHANNEL_PROTOCOL'));
    const ping = encodeMessage({ type: 'ping', nonce: 0 });
    ping[8] = 0x20; // 2^53
    assert.throws(() => decodeMessage(ping), isCode('ERR_CHANNEL_PROTOCOL'));
    const rej = encodeMessage({ type: 'rejected', migrationId: 1, epoch: 1, reason: 'ab' });
    rej[rej.length - 1] = 0xff; // invalid UTF-8
    assert.throws(() => decodeMessage(rej), isCode('ERR_CHANNEL_PROTOCOL'));
    const off = encodeMessage(offer(1));
    off[13] = 6; // address family
    assert.throws(() => decodeMessage(off), isCode('ERR_CHANNEL_PROTOCOL'));
  });
});

describe('frame decoder', () => {
  it('waits for whole frames, split anywhere', () => {
    const frames = [Buffer.from('a'), Buffer.alloc(5000, 7), Buffer.alloc(0), Buffer.from('xyz')].map(frame);
    const all = Buffer.concat(frames);
    for (const step of [1, 3, 4, 5, 999, all.length]) {
      const d = new FrameDecoder(10_000);
      const got: string[] = [];
      for (let i = 0; i < all.length; i += step) {
        d.push(all.subarray(i, i + step));
        for (let body = d.peek(); body; body = d.peek()) { got.push(body.toString('hex')); d.consume(); }
      }
      assert.deepEqual(got, frames.map((f) => f.subarray(4).toString('hex')));
      assert.equal(d.buffered, 0);
    }
  });

  it('fails on a length over the limit before buffering the body', () => {
    const d = new FrameDecoder(100);
    d.push(Uint8Array.of(101, 0, 0));
    assert.equal(d.peek(), null);
    d.push(Uint8Array.of(0));
    assert.throws(() => d.peek(), isCode('ERR_CHANNEL_FRAME_TOO_LARGE'));
  });
});

describe('channel session (sans-IO)', () => {
  it('handshakes and carries every message both ways', () => {
    const { a, b } = sessions();
    const { la, lb } = handshake(a, b);
    assert.deepEqual(la.errors, []);
    assert.deepEqual(lb.errors, []);
    assert.deepEqual(la.events, [{ type: 'ready', peer: 'hostB' }]);
    assert.deepEqual(lb.events, [{ type: 'ready', peer: 'hostA' }]);
    assert.equal(a.state, 'ready');
    const m = sample();
    assert.deepEqual(msgs(feed(b, ...m.map((x) => a.seal(x)))), m);
    assert.deepEqual(msgs(feed(a, ...m.map((x) => b.seal(x)))), m);
    // all frames in one chunk, too
    assert.deepEqual(msgs(feed(b, Buffer.concat(m.map((x) => a.seal(x))))), m);
  });

  it('refuses a peer without the cluster key', () => {
    const { a, b } = sessions({}, { key: KEY2 });
    const { la, lb } = handshake(a, b);
    assert.throws(() => { throw la.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    assert.throws(() => { throw lb.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    assert.ok(!la.events.some((e) => e.type === 'ready') && !lb.events.some((e) => e.type === 'ready'));
    assert.equal(a.state, 'closed');
    assert.throws(() => a.seal({ type: 'ping', nonce: 1 }), isCode('ERR_CHANNEL_CLOSED'));
  });

  it('refuses key epoch mismatch, unexpected names, reflected hellos, bad configs', () => {
    const e = sessions({}, { keyEpoch: 1 });
    assert.throws(() => { throw handshake(e.a, e.b).lb.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    const n = sessions({ expectedPeer: 'hostC' });
    assert.throws(() => { throw handshake(n.a, n.b).la.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    const same = sessions({}, { name: 'hostA' });
    assert.throws(() => { throw handshake(same.a, same.b).la.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    const r = sessions().a;
    const hello = r.start();
    assert.throws(() => { throw feed(r, hello).errors[0]; }, isCode('ERR_CHANNEL_AUTH')); // reflected: our own role
    const both = sessions({}, { role: 'initiator' });
    assert.throws(() => { throw handshake(both.a, both.b).la.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    for (const bad of [{ key: Buffer.alloc(16) }, { name: '' }, { name: 'a b' }, { keyEpoch: -1 }, { maxFrameBytes: 10 }, { replayWindow: 7 }]) {
      assert.throws(() => sessions(bad as Partial<SessionOptions>), isCode('ERR_CHANNEL_CONFIG'));
    }
  });

  it('a recorded handshake replayed to a fresh responder gets nowhere', () => {
    const first = sessions();
    const { aToB } = handshake(first.a, first.b);
    const fresh = sessions().b;
    fresh.start();
    const log = feed(fresh, ...aToB); // old hello (valid MAC) then old FINISHED under old salts
    assert.throws(() => { throw log.errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    assert.ok(!log.events.some((e) => e.type === 'ready'));
  });

  it('drops replayed frames, accepts reordering within the window, drops too-old ones', () => {
    const { a, b } = sessions({}, { replayWindow: 64 });
    handshake(a, b);
    const f = Array.from({ length: 100 }, (_, i) => a.seal({ type: 'ping', nonce: i }));
    const order = [2, 0, 1, 4, 3, 6, 5];
    assert.deepEqual(msgs(feed(b, ...order.map((i) => f[i]!))).map((m) => (m as { nonce: number }).nonce), order);
    const dup = feed(b, f[3]!);
    assert.deepEqual(msgs(dup), []);
    assert.equal(rejected(dup).length, 1);
    assert.throws(() => { throw rejected(dup)[0]; }, isCode('ERR_CHANNEL_REPLAY'));
    assert.equal(rejected(dup)[0]!.fatal, false);
    assert.equal(b.state, 'ready');
    assert.equal(msgs(feed(b, f[99]!)).length, 1);
    const old = feed(b, f[10]!); // 99 - 10 >= 64
    assert.match(rejected(old)[0]!.message, /too old/);
    assert.equal(msgs(feed(b, f[50]!)).length, 1); // still inside the window
    assert.equal(rejected(feed(b, f[50]!)).length, 1);
    assert.equal(msgs(feed(b, f[98]!, f[97]!)).length, 2);
    assert.deepEqual(feed(b, a.seal({ type: 'pong', nonce: 7 })).events, [{ type: 'message', message: { type: 'pong', nonce: 7 } }]);
  });

  it('closes on a corrupt tag, ciphertext or header', () => {
    for (const at of [-1, -16, -17, 4 + 5, 4 + 12, 4 + 1 + 4 + 7]) { // tag, ciphertext, sequence number
      const { a, b } = sessions();
      handshake(a, b);
      const f = Buffer.from(a.seal({ type: 'ping', nonce: 1 }));
      const i = at < 0 ? f.length + at : at;
      f[i]! ^= 0x40;
      const log = feed(b, f);
      assert.deepEqual(msgs(log), []);
      assert.throws(() => { throw log.errors[0]; }, isCode('ERR_CHANNEL_AUTH'), `byte ${i}`);
      assert.equal(b.state, 'closed');
      assert.throws(() => { throw feed(b, a.seal({ type: 'ping', nonce: 2 })).errors[0]; }, isCode('ERR_CHANNEL_CLOSED'));
    }
  });

  it('a corrupted key epoch field stops input (keyNeeded) and fails at the end of the stream', () => {
    const { a, b } = sessions();
    handshake(a, b);
    const f = Buffer.from(a.seal({ type: 'ping', nonce: 1 }));
    f[8]! ^= 0x40;
    const log = feed(b, f, a.seal({ type: 'ping', nonce: 2 }));
    assert.deepEqual(log.events, [{ type: 'keyNeeded', keyEpoch: 0x40000000 }]);
    assert.throws(() => { throw b.end(); }, isCode('ERR_CHANNEL_EPOCH'));
  });

  it('waits for truncated frames and reports a stream that ends inside one', () => {
    const { a, b } = sessions();
    handshake(a, b);
    const f = a.seal(offer(9, new Uint8Array(300).fill(1)));
    for (let i = 0; i < f.length - 1; i++) assert.deepEqual(feed(b, f.subarray(i, i + 1)), { events: [], errors: [] });
    assert.equal(msgs(feed(b, f.subarray(f.length - 1))).length, 1);
    assert.equal(b.end(), null, 'ending between frames is clean');
    const s = sessions();
    handshake(s.a, s.b);
    feed(s.b, s.a.seal({ type: 'ping', nonce: 1 }).subarray(0, 10));
    assert.throws(() => { throw s.b.end(); }, isCode('ERR_CHANNEL_TRUNCATED'));
    const h = sessions().b;
    h.start();
    assert.throws(() => { throw h.end(); }, isCode('ERR_CHANNEL_CLOSED'));
  });

  it('bounds frames: before authentication, after it, and on send', () => {
    const pre = sessions().b;
    pre.start();
    const log = feed(pre, Uint8Array.of(MAX_HELLO_FRAME + 1, 1, 0, 0));
    assert.throws(() => { throw log.errors[0]; }, isCode('ERR_CHANNEL_FRAME_TOO_LARGE'));
    const { a, b } = sessions({ maxFrameBytes: 1024 }, { maxFrameBytes: 1024 });
    handshake(a, b);
    assert.throws(() => a.seal(offer(1, new Uint8Array(1024))), (err: unknown) => {
      assert.ok(err instanceof ChannelError && err.code === 'ERR_CHANNEL_FRAME_TOO_LARGE' && !err.fatal);
      return true;
    });
    assert.equal(msgs(feed(b, a.seal(offer(1, new Uint8Array(900))))).length, 1, 'still usable');
    const big = feed(b, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    assert.throws(() => { throw big.errors[0]; }, isCode('ERR_CHANNEL_FRAME_TOO_LARGE'));
    assert.equal(b.state, 'closed');
  });

  it('rotates keys: the side behind waits for its key, stragglers of the last epoch pass', () => {
    const { a, b } = sessions();
    handshake(a, b);
    const bOld = b.seal({ type: 'ping', nonce: 100 });       // b's frame under epoch 0, delivered late
    const aRot = a.rotateKey(KEY2, 1);
    assert.equal(a.keyEpoch, 1);
    const m1 = a.seal({ type: 'ping', nonce: 1 });
    const blocked = feed(b, ...aRot.frames, m1);
    assert.deepEqual(blocked.events, [{ type: 'keyNeeded', keyEpoch: 1 }]);
    assert.equal(b.blockedOn, 1);
    assert.deepEqual(msgs(feed(a, bOld)), [{ type: 'ping', nonce: 100 }], 'a still reads epoch 0 from b');
    const bRot = b.rotateKey(KEY2, 1);
    assert.deepEqual(bRot.events, [{ type: 'rekeyed', keyEpoch: 1 }, { type: 'message', message: { type: 'ping', nonce: 1 } }]);
    assert.equal(b.blockedOn, null);
    const bLate = b.seal({ type: 'ping', nonce: 2 });
    assert.deepEqual(feed(a, ...bRot.frames, bLate).events,
      [{ type: 'rekeyed', keyEpoch: 1 }, { type: 'message', message: { type: 'ping', nonce: 2 } }]);
    // a second rotation retires epoch 0 entirely
    const a2 = a.rotateKey(KEY3, 2);
    const b2 = b.rotateKey(KEY3, 2);
    assert.deepEqual(feed(b, ...a2.frames).events, [{ type: 'rekeyed', keyEpoch: 2 }]);
    assert.deepEqual(feed(a, ...b2.frames).events, [{ type: 'rekeyed', keyEpoch: 2 }]);
    const stale = feed(a, bOld);
    assert.throws(() => { throw rejected(stale)[0]; }, isCode('ERR_CHANNEL_REPLAY'));
    assert.deepEqual(msgs(feed(b, a.seal({ type: 'pong', nonce: 3 }))), [{ type: 'pong', nonce: 3 }]);
    assert.throws(() => a.rotateKey(KEY, 2), isCode('ERR_CHANNEL_CONFIG'));
  });

  it('rotation to different keys, or skipping an epoch, fails', () => {
    const s = sessions();
    handshake(s.a, s.b);
    const ar = s.a.rotateKey(KEY2, 1);
    s.b.rotateKey(KEY3, 1);
    assert.throws(() => { throw feed(s.b, ...ar.frames).errors[0]; }, isCode('ERR_CHANNEL_AUTH'));
    const t = sessions();
    handshake(t.a, t.b);
    feed(t.b, ...t.a.rotateKey(KEY2, 1).frames);
    assert.equal(t.b.blockedOn, 1);
    assert.throws(() => { throw t.b.rotateKey(KEY3, 2).error; }, isCode('ERR_CHANNEL_EPOCH'));
    const u = sessions();
    handshake(u.a, u.b);
    feed(u.b, ...u.a.rotateKey(KEY2, 1).frames);
    assert.throws(() => { throw u.b.end(); }, isCode('ERR_CHANNEL_EPOCH'));
  });

  it('20k mutated streams: typed errors only, never a wrong message, never stuck', () => {
    const r = prng(0xc0ffee);
    const codes = new Map<string, number>();
    let clean = 0;
    for (let round = 0; round < 2000; round++) {
      const seed = int(r, 2 ** 31);
      const make = (opts: Partial<SessionOptions>, s: number) => ({ ...opts, randomBytes: (n: number) => bytesFrom(prng(s), n) });
      const { a, b } = sessions(make({ replayWindow: 64 }, seed), make({ replayWindow: 64 }, seed + 1));
      const { aToB } = handshake(a, b);
      const sent = Array.from({ length: 1 + int(r, 3) }, (_, i): MigrationMessage =>
        i % 2 ? { type: 'ping', nonce: int(r, 1e9) } : offer(int(r, 1e6), bytesFrom(r, int(r, 50))));
      const frames = [...aToB, ...sent.map((m) => a.seal(m))];
      const stream = Buffer.concat(frames);
      for (let k = 0; k < 10; k++) {
        let s: Buffer = Buffer.from(stream);
        const fs = [...frames];
        const x = int(r, fs.length);
        const y = int(r, fs.length);
        switch (int(r, 9)) {
          case 6: fs.splice(Math.max(x, y) + 1, 0, fs[Math.min(x, y)]!); s = Buffer.concat(fs); break; // replay a frame
          case 7: [fs[x], fs[y]] = [fs[y]!, fs[x]!]; s = Buffer.concat(fs); break;                      // reorder
          case 8: fs.splice(x, 1); s = Buffer.concat(fs); break;                                        // lose one
          case 0: s[int(r, s.length)]! ^= 1 + int(r, 255); break;
          case 1: s = s.subarray(0, int(r, s.length)); break;
          case 2: { const at = int(r, s.length); s = Buffer.concat([s.subarray(0, at), Buffer.from(bytesFrom(r, 1 + int(r, 8))), s.subarray(at)]); break; }
          case 3: { const at = int(r, s.length); s = Buffer.concat([s.subarray(0, at), s.subarray(at + 1 + int(r, 8))]); break; }
          case 4: { const at = int(r, s.length - 4); s.writeUInt32LE(int(r, 4) ? int(r, 300) : 0xffffffff - int(r, 10), at); break; }
          case 5: { const at = int(r, s.length); const n = 1 + int(r, 40); s = Buffer.concat([s.subarray(0, at + n), s.subarray(at, at + n), s.subarray(at + n)]); break; }
        }
        const fresh = new ChannelSession({ name: 'hostB', role: 'responder', key: KEY, keyEpoch: 0, replayWindow: 64, randomBytes: (n) => bytesFrom(prng(seed + 1), n) });
        fresh.start();
        const got: MigrationMessage[] = [];
        const errors: unknown[] = [];
        for (let i = 0; i < s.length;) {
          const n = 1 + int(r, 64);
          const o = fresh.receive(s.subarray(i, i + n));
          i += n;
          for (const e of o.events) {
            if (e.type === 'message') got.push(e.message);
            if (e.type === 'rejected') errors.push(e.error);
          }
          if (o.error) { errors.push(o.error); break; }
        }
        const end = fresh.end();
        if (end) errors.push(end);
        for (const e of errors) {
          if (!(e instanceof ChannelError)) throw new Error(`round ${round}: untyped ${String(e)}`, { cause: e });
          codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
        }
        if (!errors.length) clean++;
        // whatever got through was sent, and at most as often as it was sent: nothing forged, nothing twice
        const left = sent.map((m) => JSON.stringify(m));
        for (const m of got) {
          const j = left.indexOf(JSON.stringify(m));
          assert.ok(j >= 0, `round ${round}: message not sent or delivered twice: ${JSON.stringify(m)}`);
          left.splice(j, 1);
        }
        assert.equal(fresh.state, 'closed');
      }
    }
    for (const c of ['ERR_CHANNEL_AUTH', 'ERR_CHANNEL_PROTOCOL', 'ERR_CHANNEL_TRUNCATED', 'ERR_CHANNEL_FRAME_TOO_LARGE', 'ERR_CHANNEL_REPLAY']) {
      assert.ok((codes.get(c) ?? 0) > 0, `${c} never produced: ${JSON.stringify([...codes])}`);
    }
    assert.ok(clean < 2000, 'most mutations are caught');
  });
});

describe('migration dedupe', () => {
  it('recognises duplicates, stale epochs and ids that fell out of the window', () => {
    const d = new MigrationDedupe({ window: 64 });
    assert.equal(d.observe('hostA', 3, 1), 'new');
    assert.equal(d.observe('hostA', 3, 1), 'duplicate');
    assert.equal(d.observe('hostA', 3, 2), 'new');
    assert.equal(d.observe('hostB', 3, 1), 'new', 'origins are separate');
    assert.equal(d.observe('hostA', 2, 7), 'stale', 'from before the restart');
    assert.equal(d.observe('hostA', 3, 100), 'new');
    assert.equal(d.observe('hostA', 3, 10), 'stale', 'out of the window');
    assert.equal(d.observe('hostA', 3, 99), 'new');
    assert.equal(d.observe('hostA', 4, 1), 'new', 'restart: ids start again');
    assert.equal(d.observe('hostA', 3, 101), 'stale');
    d.setEpoch('hostB', 5);
    assert.equal(d.observe('hostB', 4, 2), 'stale');
    assert.equal(d.observe('hostB', 5, 1), 'new');
  });

  it('keeps per-stream state: offer, release and the answer for the same id', () => {
    const d = new MigrationDedupe();
    const o = offer(7, Uint8Array.of(1), 2);
    assert.equal(d.observeMessage(o, 'hostA', 'hostB'), 'new');
    assert.equal(d.observeMessage(o, 'hostA', 'hostB'), 'duplicate');
    assert.equal(d.observeMessage({ type: 'release', migrationId: 7, epoch: 2 }, 'hostA', 'hostB'), 'new');
    assert.equal(d.observeMessage({ type: 'adopted', migrationId: 7, epoch: 2 }, 'hostB', 'hostA'), 'new');
    assert.equal(d.observeMessage({ type: 'rejected', migrationId: 7, epoch: 2, reason: 'late' }, 'hostB', 'hostA'), 'duplicate');
    assert.equal(d.observeMessage({ type: 'ping', nonce: 1 }, 'hostB', 'hostA'), 'new');
    assert.equal(d.observeMessage({ type: 'ping', nonce: 1 }, 'hostB', 'hostA'), 'new');
  });

  it('bounds its memory', () => {
    const d = new MigrationDedupe({ window: 32, maxOrigins: 10 });
    for (let i = 0; i < 1000; i++) d.observe(`host${i}`, 1, i);
    assert.equal(d.size, 10);
    assert.equal(d.observe('host999', 1, 999), 'duplicate', 'recent origins are remembered');
    for (let id = 0; id < 100_000; id++) d.observe('busy', 1, id);
    assert.equal(d.observe('busy', 1, 99_999), 'duplicate');
  });
});

// ---- over real sockets -----------------------------------------------------------------------------

class Peer {
  readonly messages: MigrationMessage[] = [];
  readonly rejected: ChannelError[] = [];
  readonly errors: ChannelError[] = [];
  closed: ChannelError | null | undefined = undefined;
  #waiters: (() => void)[] = [];
  constructor(readonly ch: MigrationChannel) {
    ch.on('message', (m) => { this.messages.push(m); this.#poke(); });
    ch.on('rejected', (e) => { this.rejected.push(e); this.#poke(); });
    ch.on('error', (e) => { this.errors.push(e); this.#poke(); });
    ch.on('close', (e) => { this.closed = e; this.#poke(); });
  }
  #poke(): void { for (const w of this.#waiters.splice(0)) w(); }
  async until(pred: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await Promise.race([new Promise<void>((res) => this.#waiters.push(res)), sleep(50)]);
    }
  }
}

const servers: net.Server[] = [];
after(() => { for (const s of servers) s.close(); });

async function listen(onConn: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer(onConn);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

type Hook = (frame: Buffer, index: number, up: net.Socket) => void;

/** A and B over loopback, optionally through a man in the middle that sees A→B frames one by one. */
async function pair(optsA: Partial<ChannelOptions> = {}, optsB: Partial<ChannelOptions> = {}, hook?: Hook) {
  let resolveB!: (p: Peer) => void;
  const bReady = new Promise<Peer>((res) => { resolveB = res; });
  const portB = await listen((sock) => {
    resolveB(new Peer(new MigrationChannel(sock, { name: 'hostB', role: 'responder', key: KEY, keyEpoch: 0, ...optsB })));
  });
  let port = portB;
  if (hook) {
    port = await listen((client) => {
      const up = net.connect(portB, '127.0.0.1');
      up.on('error', () => {});
      client.on('error', () => {});
      up.pipe(client);
      let buf = Buffer.alloc(0);
      let index = 0;
      client.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
          const n = 4 + buf.readUInt32LE(0);
          hook(Buffer.from(buf.subarray(0, n)), index++, up);
          buf = buf.subarray(n);
        }
      });
      client.on('end', () => up.end());
    });
  }
  const sock = net.connect(port, '127.0.0.1');
  const a = new Peer(new MigrationChannel(sock, { name: 'hostA', role: 'initiator', key: KEY, keyEpoch: 0, ...optsA }));
  const b = await bReady;
  return { a, b };
}

const pings = (n: number, from = 0) => Array.from({ length: n }, (_, i): MigrationMessage => ({ type: 'ping', nonce: from + i }));
const nonces = (p: Peer) => p.messages.map((m) => (m as { nonce: number }).nonce);

describe('migration channel over loopback TCP', { timeout: 120_000 }, () => {
  it('exchanges 10k messages each way', async () => {
    const { a, b } = await pair();
    assert.equal(await a.ch.ready, 'hostB');
    assert.equal(await b.ch.ready, 'hostA');
    const r = prng(11);
    const snaps = Array.from({ length: 64 }, (_, i) =>
      encodeSnapshot([{ kind: 'tcp', version: 1, bytes: bytesFrom(r, 40 + i) }, { kind: 'app', version: 1, bytes: bytesFrom(r, i) }]));
    b.ch.on('message', (m) => { if (m.type === 'offer') b.ch.send({ type: 'adopted', migrationId: m.migrationId, epoch: m.epoch }); });
    const N = 10_000;
    for (let i = 0; i < N; i++) a.ch.send(offer(i, snaps[i % snaps.length]!, 4));
    await b.until(() => b.messages.length >= N, 'offers');
    await a.until(() => a.messages.length >= N, 'answers');
    for (let i = 0; i < N; i++) {
      const m = b.messages[i]!;
      assert.ok(m.type === 'offer' && m.migrationId === i && m.epoch === 4);
      assert.deepEqual(m.flow, FLOW);
      assert.deepEqual(Buffer.from(m.snapshot), Buffer.from(snaps[i % snaps.length]!));
      assert.deepEqual(a.messages[i], { type: 'adopted', migrationId: i, epoch: 4 });
    }
    assert.deepEqual([a.rejected, b.rejected, a.errors, b.errors], [[], [], [], []]);
    a.ch.close();
    await b.until(() => b.closed !== undefined, 'close');
    assert.equal(b.closed, null, 'a clean end between frames');
  });

  it('sendAll: several messages in one write, in order, queued before the handshake too; an invalid one stops the rest', async () => {
    const { a, b } = await pair();
    const seg = { src: '192.168.7.9', dst: '10.0.0.1', bytes: Uint8Array.of(1, 2, 3) };
    a.ch.sendAll([offer(1), { type: 'forward', migrationId: 1, epoch: 1, segments: [seg] }]); // racing the handshake
    await a.ch.ready;
    a.ch.sendAll([offer(2), { type: 'forward', migrationId: 2, epoch: 1, segments: [seg, seg] }, { type: 'ping', nonce: 7 }]);
    assert.throws(() => a.ch.sendAll([{ type: 'ping', nonce: 8 }, { type: 'ping', nonce: -1 }, { type: 'ping', nonce: 9 }]),
      isCode('ERR_CHANNEL_MESSAGE'));
    await b.until(() => b.messages.length >= 6, 'batched messages');
    assert.deepEqual(b.messages.map((m) => `${m.type}:${'migrationId' in m ? m.migrationId : (m as { nonce: number }).nonce}`),
      ['offer:1', 'forward:1', 'offer:2', 'forward:2', 'ping:7', 'ping:8']);
    const f = b.messages[3]!;
    assert.ok(f.type === 'forward' && f.segments.length === 2 && Buffer.from(f.segments[1]!.bytes).equals(Buffer.from([1, 2, 3])));
    assert.deepEqual([a.rejected, b.rejected, a.errors, b.errors], [[], [], [], []]);
    a.ch.close();
  });

  it('refuses a peer with the wrong key', async () => {
    const { a, b } = await pair({}, { key: KEY2 });
    await assert.rejects(a.ch.ready, isCode('ERR_CHANNEL_AUTH'));
    await assert.rejects(b.ch.ready, isCode('ERR_CHANNEL_AUTH'));
    assert.throws(() => a.ch.send({ type: 'ping', nonce: 1 }), isCode('ERR_CHANNEL_CLOSED'));
  });

  it('queues messages sent before the handshake, times out a silent peer', async () => {
    const { a, b } = await pair();
    a.ch.send({ type: 'ping', nonce: 1 }); // racing the handshake
    await b.until(() => b.messages.length === 1, 'queued message');
    assert.deepEqual(b.messages, [{ type: 'ping', nonce: 1 }]);
    a.ch.close();
    const port = await listen(() => {}); // accepts and says nothing
    const silent = new Peer(new MigrationChannel(net.connect(port, '127.0.0.1'),
      { name: 'hostA', role: 'initiator', key: KEY, keyEpoch: 0, handshakeTimeoutMs: 100 }));
    await assert.rejects(silent.ch.ready, isCode('ERR_CHANNEL_TIMEOUT'));
    assert.equal(silent.closed?.code, 'ERR_CHANNEL_TIMEOUT');
  });

  it('drops a replayed frame and carries on', async () => {
    const { a, b } = await pair({}, {}, (f, i, up) => { up.write(f); if (i === 5) up.write(f); });
    for (const m of pings(10)) a.ch.send(m);
    await b.until(() => b.messages.length === 10 && b.rejected.length === 1, 'messages + one rejection');
    assert.deepEqual(nonces(b), [...Array(10).keys()]);
    assert.equal(b.rejected[0]!.code, 'ERR_CHANNEL_REPLAY');
    assert.equal(b.ch.closed, false);
    a.ch.close();
  });

  it('accepts reordered frames within the window', async () => {
    let held: Buffer | null = null;
    const { a, b } = await pair({}, {}, (f, i, up) => {
      if (i === 4 || i === 8) held = f;            // frames 0, 1 are HELLO and FINISHED; hold ping 2 and ping 6
      else { up.write(f); if (held && (i === 6 || i === 9)) { up.write(held); held = null; } }
    });
    for (const m of pings(10)) a.ch.send(m);
    await b.until(() => b.messages.length === 10, 'all messages');
    assert.deepEqual(nonces(b), [0, 1, 3, 4, 2, 5, 7, 6, 8, 9]);
    assert.deepEqual(b.rejected, []);
    a.ch.close();
  });

  it('reassembles a frame that arrives in pieces', async () => {
    const { a, b } = await pair({}, {}, (f, i, up) => {
      if (i < 3) { up.write(f); return; }
      if (i > 3) { setTimeout(() => up.write(f), 60); return; } // after the pieces, in order
      up.write(f.subarray(0, 2));
      setTimeout(() => up.write(f.subarray(2, 9)), 20);
      setTimeout(() => up.write(f.subarray(9)), 40);
    });
    for (const m of pings(5)) a.ch.send(m);
    await b.until(() => b.messages.length === 5, 'messages');
    assert.deepEqual(nonces(b), [0, 1, 2, 3, 4]);
    a.ch.close();
  });

  it('closes on a corrupt frame, a truncated stream and an oversize frame', async () => {
    const cases: [Hook, ChannelErrorCode][] = [
      [(f, i, up) => { if (i === 3) f[f.length - 1]! ^= 1; up.write(f); }, 'ERR_CHANNEL_AUTH'],
      [(f, i, up) => { if (i === 3) up.end(f.subarray(0, f.length - 3)); else if (i < 3) up.write(f); }, 'ERR_CHANNEL_TRUNCATED'],
      [(f, i, up) => { up.write(i === 3 ? Buffer.from([0, 0, 0, 0x40]) : f); }, 'ERR_CHANNEL_FRAME_TOO_LARGE'],
    ];
    for (const [hook, code] of cases) {
      const { a, b } = await pair({}, { maxFrameBytes: 4096 }, hook);
      for (const m of pings(5)) a.ch.send(m);
      await b.until(() => b.closed !== undefined, `close with ${code}`);
      assert.equal(b.closed?.code, code);
      assert.equal(b.errors[0]?.code, code);
      assert.deepEqual(nonces(b), [0]);
      await a.until(() => a.closed !== undefined, 'the other end to close');
    }
  });

  it('rotates the key mid-stream without losing or repeating a message', async () => {
    const { a, b } = await pair();
    await a.ch.ready;
    const bRotated = new Promise<void>((resolve, reject) => {
      b.ch.on('keyNeeded', (epoch) => { assert.equal(epoch, 7); b.ch.rotateKey(KEY2, 7).then(resolve, reject); });
    });
    for (const m of pings(1500)) a.ch.send(m);
    const aRotated = a.ch.rotateKey(KEY2, 7);
    for (const m of pings(1500, 1500)) a.ch.send(m);
    await Promise.all([aRotated, bRotated]);
    b.ch.send({ type: 'pong', nonce: 42 });
    await b.until(() => b.messages.length === 3000, 'all 3000');
    assert.deepEqual(nonces(b), [...Array(3000).keys()]);
    await a.until(() => a.messages.length === 1, 'pong under the new key');
    assert.equal(a.ch.keyEpoch, 7);
    // both sides rotating at once while both send
    const both = Promise.all([a.ch.rotateKey(KEY3, 8), b.ch.rotateKey(KEY3, 8)]);
    for (const m of pings(500, 3000)) { a.ch.send(m); b.ch.send(m); }
    await both;
    await b.until(() => b.messages.length === 3500, 'b 3500');
    await a.until(() => a.messages.length === 501, 'a 501');
    assert.deepEqual(nonces(b).slice(3000), [...Array(500).keys()].map((i) => 3000 + i));
    assert.deepEqual([a.rejected, b.rejected, a.errors, b.errors], [[], [], [], []]);
    a.ch.close();
  });
});
