// mulberry32: a small seeded PRNG, so every randomized test failure reproduces from its seed.
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, n). */
export const int = (r: () => number, n: number): number => Math.floor(r() * n);

/** n random bytes from r. */
export const bytesFrom = (r: () => number, n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(r, 256));
