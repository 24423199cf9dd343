// Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table the XDP load balancer
// indexes with a flow hash to choose the backend of a new flow.
//
// Each backend walks its own permutation of the table slots (offset + j·skip mod M, both derived from
// its name) and the backends take turns claiming the next free slot of their permutation. Every
// backend ends up with M/N slots give or take one, and removing or adding one backend moves few slots
// that belonged to the others, so new flows of an unchanged backend mostly keep landing where they did.
// M must be prime so that every skip in [1, M-1] generates a full permutation.
import { createHash } from 'node:crypto';

/** Size of the table in native/bpf/lb.bpf.c (LB_TABLE_SIZE): a prime. */
export const MAGLEV_TABLE_SIZE = 65537;

function hashes(name: string): [number, number] {
  const d = createHash('sha256').update(name).digest();
  return [d.readUInt32BE(0), d.readUInt32BE(4)];
}

/**
 * The lookup table for these backends: entry k is the index (into names) of the backend that owns
 * slot k. Names identify backends, so a backend keeps its permutation wherever it sits in the list.
 */
export function maglevTable(names: readonly string[], size = MAGLEV_TABLE_SIZE): Uint32Array {
  if (!Number.isInteger(size) || size < 2) throw new RangeError(`table size must be an integer >= 2 (got ${size})`);
  if (names.length === 0) throw new RangeError('maglev needs at least one backend');
  if (names.length > size) throw new RangeError(`more backends (${names.length}) than table slots (${size})`);
  if (new Set(names).size !== names.length) throw new RangeError('backend names must be unique');
  const n = names.length;
  const pos = new Array<number>(n);
  const skip = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const [h1, h2] = hashes(names[i]!);
    pos[i] = h1 % size;
    skip[i] = (h2 % (size - 1)) + 1;
  }
  const owner = new Int32Array(size).fill(-1);
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = pos[i]!;
      while (owner[c] !== -1) c = (c + skip[i]!) % size;
      owner[c] = i;
      pos[i] = (c + skip[i]!) % size;
      if (++filled === size) return Uint32Array.from(owner);
    }
  }
}
