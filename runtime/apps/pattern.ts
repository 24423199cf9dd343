// The deterministic byte stream served by GET /bytes/N and checked by every test and the demo.
// Byte i is one byte of a 32-bit hash (murmur3's finaliser) of word i/4, so any offset can be produced
// without state, a shifted, repeated or dropped chunk cannot go unnoticed (no short period), and
// generating it costs one multiply-xor round per 4 bytes.
import { createHash } from 'node:crypto';

/** murmur3's 32-bit finaliser: every input bit reaches every output bit. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mix32(word: number): number {
  return fmix32((word ^ 0x9e3779b9) >>> 0);
}

/** Byte at absolute offset i (0 <= i < 2^53) of the pattern. */
export function patternByte(i: number): number {
  return (mix32(Math.floor(i / 4) >>> 0) >>> ((i & 3) * 8)) & 0xff;
}

/** Fills buf with pattern bytes offset .. offset+buf.length-1 and returns buf. */
export function patternFill(buf: Uint8Array, offset: number): Uint8Array {
  let pos = 0;
  let i = offset;
  const n = buf.length;
  while (pos < n && (i & 3) !== 0) buf[pos++] = patternByte(i++);
  let word = Math.floor(i / 4);
  while (pos + 4 <= n) {
    const h = mix32(word >>> 0);
    buf[pos] = h & 0xff;
    buf[pos + 1] = (h >>> 8) & 0xff;
    buf[pos + 2] = (h >>> 16) & 0xff;
    buf[pos + 3] = h >>> 24;
    pos += 4;
    word++;
  }
  i = word * 4;
  while (pos < n) buf[pos++] = patternByte(i++);
  return buf;
}

/** A fresh Buffer with pattern bytes offset .. offset+len-1. */
export function patternChunk(offset: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  patternFill(b, offset);
  return b;
}

/** Offset of the first byte of data that differs from the pattern starting at offset, or -1. */
export function patternMismatch(data: Uint8Array, offset: number): number {
  const want = patternChunk(offset, data.length);
  for (let k = 0; k < data.length; k++) if (data[k] !== want[k]) return offset + k;
  return -1;
}

/** sha256 (hex) of the first n pattern bytes, repeated `times` times back to back. */
export function patternSha256(n: number, times = 1): string {
  const h = createHash('sha256');
  const step = 1 << 20;
  const buf = Buffer.allocUnsafe(Math.min(step, Math.max(n, 1)));
  for (let t = 0; t < times; t++) {
    for (let off = 0; off < n; off += step) {
      const len = Math.min(step, n - off);
      const view = buf.subarray(0, len);
      patternFill(view, off);
      h.update(view);
    }
  }
  return h.digest('hex');
}

/** Incremental checker: feed received bytes in order; tells where the stream first went wrong. */
export class PatternVerifier {
  offset = 0;
  firstMismatch = -1;
  update(data: Uint8Array): void {
    if (this.firstMismatch < 0) {
      const m = patternMismatch(data, this.offset);
      if (m >= 0) this.firstMismatch = m;
    }
    this.offset += data.length;
  }
  get ok(): boolean {
    return this.firstMismatch < 0;
  }
}
