import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { PatternVerifier, patternByte, patternChunk, patternFill, patternMismatch, patternSha256 } from '../../runtime/apps/pattern.js';

describe('deterministic byte pattern', () => {
  it('fills any offset and length consistently with patternByte', () => {
    for (const offset of [0, 1, 2, 3, 5, 4095, 65537, 2 ** 32 + 3, 2 ** 40 + 1]) {
      for (const len of [0, 1, 3, 4, 7, 100]) {
        const b = patternChunk(offset, len);
        for (let k = 0; k < len; k++) assert.equal(b[k], patternByte(offset + k), `offset ${offset} + ${k}`);
      }
    }
  });

  it('a chunk split anywhere equals the whole', () => {
    const whole = patternChunk(10, 1000);
    const parts = Buffer.concat([patternChunk(10, 333), patternChunk(343, 1), patternChunk(344, 666)]);
    assert.deepEqual(parts, whole);
  });

  it('has no short period (a shifted or repeated chunk is detected)', () => {
    const a = patternChunk(0, 4096);
    for (const shift of [1, 4, 256, 1024, 4096, 65536, 1 << 20]) {
      assert.notDeepEqual(patternChunk(shift, 4096), a, `shift ${shift}`);
    }
    // roughly uniform bytes: every value shows up in 64 KiB
    const seen = new Set(patternChunk(0, 65536));
    assert.equal(seen.size, 256);
  });

  it('sha256 helper matches hashing the bytes', () => {
    const n = 3 * (1 << 20) + 17;
    const want = createHash('sha256').update(patternChunk(0, n)).digest('hex');
    assert.equal(patternSha256(n), want);
    const twice = createHash('sha256').update(patternChunk(0, 1000)).update(patternChunk(0, 1000)).digest('hex');
    assert.equal(patternSha256(1000, 2), twice);
  });

  it('verifier finds the first wrong byte', () => {
    const data = patternChunk(0, 10000);
    const v = new PatternVerifier();
    v.update(data.subarray(0, 5000));
    assert.ok(v.ok);
    const bad = Buffer.from(data.subarray(5000));
    bad[1234] = (bad[1234]! + 1) & 0xff;
    v.update(bad);
    assert.equal(v.ok, false);
    assert.equal(v.firstMismatch, 6234);
    assert.equal(v.offset, 10000);
    assert.equal(patternMismatch(patternFill(new Uint8Array(10), 7), 7), -1);
  });
});
