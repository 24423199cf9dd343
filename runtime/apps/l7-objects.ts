// The objects the L7 app serves (GET /obj/<name>) and who owns them.
//
// Content: deterministic per name, so any host can produce any byte of any object without storing it and
// a client can check what it got: byte i of object `name` is byte base(name) + i of the pattern stream
// (apps/pattern.ts), base(name) a word-aligned 32-bit hash of the name. Two names give different bytes.
//
// Sizes (a "manifest"): either a JSON file given with --manifest, {"<name>": <bytes>, ...} (only those
// names exist), or the rule from the name: a name ending in -<N>, -<N>k or -<N>m is N bytes, N KiB or N
// MiB (e.g. /obj/logo-100k is 102400 bytes); any other name is 1024 + (hash(name) mod 64 KiB) bytes.
// Names are 1..200 of [A-Za-z0-9._-]; objects are at most 1 GiB.
//
// Ownership: rendezvous (highest-random-weight) hashing of the path over the backend names, so every host
// computes the same owner with no coordination and removing a backend moves only its own objects.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fmix32, patternChunk } from './pattern.js';
import { ConfigError } from '../errors.js';

export const OBJECT_PREFIX = '/obj/';
export const MAX_OBJECT_BYTES = 1024 * 1024 * 1024;
const NAME = /^[A-Za-z0-9._-]{1,200}$/;
const SIZE_SUFFIX = /-(\d{1,10})([kKmM]?)$/;

function hash32(s: string): number {
  // FNV-1a, then murmur3's finaliser: cheap, and good enough to spread names over the pattern.
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix32(h);
}

/** Where the object's bytes start in the pattern stream. */
function base(name: string): number {
  return hash32(name) * 4;
}

/** Bytes off .. off+len-1 of the object. */
export function objectChunk(name: string, off: number, len: number): Buffer {
  return patternChunk(base(name) + off, len);
}

/** sha256 (hex) of the whole object. */
export function objectSha256(name: string, size: number): string {
  const h = createHash('sha256');
  const step = 1 << 20;
  for (let off = 0; off < size; off += step) h.update(objectChunk(name, off, Math.min(step, size - off)));
  return h.digest('hex');
}

export function isObjectName(name: string): boolean {
  return NAME.test(name);
}

/** Size by the naming rule (see the header); null for names that are not object names. */
export function ruleSize(name: string): number | null {
  if (!isObjectName(name)) return null;
  const m = SIZE_SUFFIX.exec(name);
  if (!m) return 1024 + (hash32(`size:${name}`) % 65536);
  const n = Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024);
  return n <= MAX_OBJECT_BYTES ? n : null;
}

/** Object name -> size; the rule, or a fixed list from a manifest file. */
export class Catalogue {
  readonly #fixed: Map<string, number> | null;

  constructor(fixed: Map<string, number> | null = null) {
    this.#fixed = fixed;
  }

  /** Reads a JSON manifest {"name": bytes, ...}; throws ConfigError on anything else. */
  static fromFile(path: string): Catalogue {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new ConfigError(`manifest ${path}: ${(err as Error).message}`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError(`manifest ${path}: expected {"name": bytes, ...}`);
    const m = new Map<string, number>();
    for (const [name, size] of Object.entries(doc as Record<string, unknown>)) {
      if (!isObjectName(name)) throw new ConfigError(`manifest ${path}: bad object name "${name}"`);
      if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || size > MAX_OBJECT_BYTES) {
        throw new ConfigError(`manifest ${path}: size of "${name}" must be an integer in 0..${MAX_OBJECT_BYTES}`);
      }
      m.set(name, size);
    }
    return new Catalogue(m);
  }

  /** Size of the object, or null when there is no such object. */
  size(name: string): number | null {
    if (this.#fixed) return this.#fixed.get(name) ?? null;
    return ruleSize(name);
  }
}

/** The backend that owns path: rendezvous hashing over the backend names (same answer on every host). */
export function ownerOf(path: string, backends: readonly string[]): string {
  if (backends.length === 0) throw new ConfigError('no backends to own objects');
  let best = backends[0]!;
  let bestScore = -1n;
  for (const b of backends) {
    const score = createHash('sha256').update(b).update('\0').update(path).digest().readBigUInt64BE(0);
    if (score > bestScore) {
      bestScore = score;
      best = b;
    }
  }
  return best;
}
