// Sliding window over 64-bit counters (RFC 4303 §3.4.3 / RFC 6479 style): remembers which of the last
// `size` numbers below the highest one were seen, in size/32 words, so memory is fixed whatever the
// peer sends. Used for AEAD sequence numbers (anti-replay that tolerates reordering) and for migration
// ids (dedupe). `check` is separate from `commit` so a frame only moves the window after its tag verified.

export type WindowVerdict = 'new' | 'duplicate' | 'old';

export class SlidingWindow {
  readonly size: number;
  #bits: Uint32Array;
  #highest = -1;

  constructor(size = 1024) {
    if (!Number.isInteger(size) || size < 32 || size > 1 << 20 || size % 32 !== 0) {
      throw new RangeError('window size must be a multiple of 32 in 32..2^20');
    }
    this.size = size;
    this.#bits = new Uint32Array(size / 32);
  }

  /** Highest number committed, -1 when none. */
  get highest(): number { return this.#highest; }

  #bit(n: number): [number, number] {
    const i = n % this.size;
    return [i >>> 5, 1 << (i & 31)];
  }

  check(n: number): WindowVerdict {
    if (n > this.#highest) return 'new';
    if (this.#highest - n >= this.size) return 'old';
    const [w, m] = this.#bit(n);
    return (this.#bits[w]! & m) !== 0 ? 'duplicate' : 'new';
  }

  /** Marks n seen; call only after check(n) === 'new'. */
  commit(n: number): void {
    if (n > this.#highest) {
      if (n - this.#highest >= this.size) {
        this.#bits.fill(0);
      } else {
        for (let k = this.#highest + 1; k < n; k++) {
          const [w, m] = this.#bit(k);
          this.#bits[w] &= ~m;
        }
      }
      this.#highest = n;
    }
    const [w, m] = this.#bit(n);
    this.#bits[w] |= m;
  }

  /** check + commit. */
  accept(n: number): WindowVerdict {
    const v = this.check(n);
    if (v === 'new') this.commit(n);
    return v;
  }
}
