// The digest app's exportable SHA-256 agrees with node:crypto for every split of the input, its state
// survives encode/decode at any byte, the app answers "<bytes> <sha256>" on the peer's FIN (also when
// resumed from a captured state halfway), and malformed states are refused with ERR_APP_STATE.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { Sha256 } from '../../runtime/apps/digest-sha256.js';
import { decodeDigestState, digestResumable, encodeDigestState } from '../../runtime/apps/digest.js';
import { bytesFrom, int, prng } from '../helpers/prng.js';

const ref = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('digest app', () => {
  it('SHA-256 matches node:crypto for lengths around block edges, fed in random pieces', () => {
    const r = prng(4);
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 100_003]) {
      const data = bytesFrom(r, n);
      const h = new Sha256();
      for (let off = 0; off < n;) {
        const k = Math.min(n - off, 1 + int(r, 200));
        h.update(data.subarray(off, off + k));
        off += k;
      }
      assert.equal(h.hex(), ref(data), `length ${n}`);
      assert.equal(h.length, n);
    }
  });

  it('the running state survives encode/decode at any byte', () => {
    const r = prng(9);
    const data = bytesFrom(r, 5000);
    for (let cut = 0; cut < 200; cut += 7) {
      const h = new Sha256().update(data.subarray(0, cut));
      const back = decodeDigestState(encodeDigestState(h, false));
      assert.equal(back.answered, false);
      back.hash.update(data.subarray(cut));
      assert.equal(back.hash.hex(), ref(data));
    }
  });

  it('answers bytes and digest on FIN, also after a capture and resume', async () => {
    const data = bytesFrom(prng(3), 300_000);
    const app = digestResumable();
    // A socket-like Duplex: the test pushes what the peer sends, and collects what the app writes.
    const sock = () => {
      let out = '';
      const d = new Duplex({ allowHalfOpen: true, read() {}, write(c: Buffer, _e, cb) { out += c.toString(); cb(); } });
      return { d, out: () => out };
    };
    const a = sock();
    const hooks = app.onConnection(a.d);
    a.d.push(data.subarray(0, 123_457));
    await new Promise((r) => setImmediate(r));
    const state = await hooks.capture();
    const b = sock();
    app.resume(b.d, state);
    b.d.push(data.subarray(123_457));
    b.d.push(null);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(a.out(), '');
    assert.equal(b.out(), `${data.length} ${ref(data)}\n`);
  });

  it('refuses malformed states', () => {
    const good = encodeDigestState(new Sha256().update(new Uint8Array(70)), false);
    for (const bad of [good.subarray(0, 10), Uint8Array.from([...good, 0]), Uint8Array.from(good).fill(0x41, 0, 4)]) {
      assert.throws(() => decodeDigestState(bad), (e: Error & { code?: string }) => e.code === 'ERR_APP_STATE');
    }
    const flags = Uint8Array.from(good);
    flags[6] = 0x80;
    assert.throws(() => decodeDigestState(flags), (e: Error & { code?: string }) => e.code === 'ERR_APP_STATE');
  });
});
