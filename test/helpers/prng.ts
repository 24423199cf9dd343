// The seeded PRNG lives in the runtime (the soak uses it too), so every randomized test failure
// reproduces from its seed.
import { prng } from '../../runtime/prng.js';

export { prng };

/** An integer in [0, n). */
export const int = (r: () => number, n: number): number => Math.floor(r() * n);

/** n random bytes from r. */
export const bytesFrom = (r: () => number, n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(r, 256));
