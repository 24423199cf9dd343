// The versioned snapshot container: what one migrated connection is on the wire between runtimes.
//
//   offset  size  field (all integers little-endian)
//   0       4     magic "CPBY" (43 50 42 59)
//   4       2     container version (1)
//   6       2     flags: bit 0 SECRETS (some record holds key material: wipe after use); others must be 0
//   8       4     total length in bytes, header and trailer included (28 .. 16 MiB)
//   12      1     layer count (1 .. 8)
//   13      3     reserved, zero
//   16      ...   layer records, bottom layer first (tcp, then tls, then app):
//                   u8 kind length k (1 .. 16) | kind: k bytes [a-z][a-z0-9_-]* | u16 record version (>= 1)
//                   | u32 payload length n | n payload bytes
//   total-4 4     CRC32C over bytes [0, total-4)
//
// Decoding checks, in order: header present (TRUNCATED), magic (MAGIC), version and flags (VERSION),
// total length within caps (TOO_LARGE / CORRUPT), input length vs total (TRUNCATED / CORRUPT for
// trailing bytes), CRC (CHECKSUM), then every record field (CORRUPT). The encoding is canonical:
// decode then encode gives back the same bytes. Payloads are returned as views into the input, so a
// caller that wipes the input wipes them too.
import { ByteReader, ByteWriter } from './bytes.js';
import { crc32c } from './crc32c.js';
import { SnapshotError } from './errors.js';

export const SNAPSHOT_MAGIC = Uint8Array.of(0x43, 0x50, 0x42, 0x59);
export const SNAPSHOT_VERSION = 1;
export const SNAPSHOT_HEADER_BYTES = 16;
export const SNAPSHOT_TRAILER_BYTES = 4;
export const SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024;
export const SNAPSHOT_MAX_LAYERS = 8;
export const SNAPSHOT_MAX_KIND = 16;
/** Bytes of a record besides its kind and payload: kind length, version, payload length. */
export const SNAPSHOT_RECORD_OVERHEAD = 1 + 2 + 4;
/** Smallest valid snapshot: one record with a 1-byte kind and no payload. */
export const SNAPSHOT_MIN_BYTES = SNAPSHOT_HEADER_BYTES + SNAPSHOT_RECORD_OVERHEAD + 1 + SNAPSHOT_TRAILER_BYTES;

export const SnapshotFlags = {
  /** Some record carries key material (TLS secrets): receivers wipe the bytes after restoring. */
  SECRETS: 0x0001,
} as const;
const KNOWN_FLAGS = SnapshotFlags.SECRETS;

const KIND_RE = /^[a-z][a-z0-9_-]*$/;

export interface SnapshotRecord {
  readonly kind: string;
  readonly version: number;
  readonly bytes: Uint8Array;
}

export interface Snapshot {
  readonly version: number;
  readonly flags: number;
  readonly records: readonly SnapshotRecord[];
}

export interface DecodeOptions {
  /** Lower cap than SNAPSHOT_MAX_BYTES for this receiver. */
  maxBytes?: number;
  /** Kinds the receiver's layer stack expects, bottom first; any other layout is ERR_SNAPSHOT_LAYERS. */
  expect?: readonly string[];
}

export interface EncodeOptions {
  flags?: number;
  maxBytes?: number;
}

function validKind(kind: string): boolean {
  return kind.length >= 1 && kind.length <= SNAPSHOT_MAX_KIND && KIND_RE.test(kind);
}

/** Checks a layer kind tag as the container requires it; throws ERR_SNAPSHOT_CORRUPT otherwise. */
export function checkKind(kind: string): void {
  if (!validKind(kind)) {
    throw new SnapshotError('ERR_SNAPSHOT_CORRUPT',
      `layer kind ${JSON.stringify(kind)} is not 1..${SNAPSHOT_MAX_KIND} chars of [a-z][a-z0-9_-]*`);
  }
}

/** Size in bytes of the container for these records. */
export function snapshotSize(records: readonly SnapshotRecord[]): number {
  let n = SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES;
  for (const r of records) n += SNAPSHOT_RECORD_OVERHEAD + r.kind.length + r.bytes.length;
  return n;
}

function capOf(maxBytes: number | undefined): number {
  if (maxBytes === undefined) return SNAPSHOT_MAX_BYTES;
  if (!Number.isInteger(maxBytes) || maxBytes < SNAPSHOT_MIN_BYTES) {
    throw new RangeError(`maxBytes must be an integer >= ${SNAPSHOT_MIN_BYTES}`);
  }
  return Math.min(maxBytes, SNAPSHOT_MAX_BYTES);
}

/** Builds the container. Payloads are copied: the caller still owns (and should wipe) its records. */
export function encodeSnapshot(records: readonly SnapshotRecord[], options: EncodeOptions = {}): Uint8Array {
  const flags = options.flags ?? 0;
  if (!Number.isInteger(flags) || (flags & ~KNOWN_FLAGS) !== 0 || flags < 0) {
    throw new SnapshotError('ERR_SNAPSHOT_VERSION', `unknown snapshot flags 0x${flags.toString(16)}`);
  }
  if (records.length < 1) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'a snapshot holds at least one layer');
  if (records.length > SNAPSHOT_MAX_LAYERS) {
    throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `${records.length} layers (at most ${SNAPSHOT_MAX_LAYERS})`);
  }
  const seen = new Set<string>();
  for (const r of records) {
    checkKind(r.kind);
    if (seen.has(r.kind)) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `duplicate layer ${r.kind}`);
    seen.add(r.kind);
    if (!Number.isInteger(r.version) || r.version < 1 || r.version > 0xffff) {
      throw new SnapshotError('ERR_SNAPSHOT_VERSION', `layer ${r.kind}: record version ${r.version} is not 1..65535`);
    }
  }
  const cap = capOf(options.maxBytes);
  const total = snapshotSize(records);
  if (total > cap) throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `snapshot of ${total} bytes exceeds ${cap}`);

  const w = new ByteWriter(total);
  w.raw(SNAPSHOT_MAGIC).u16(SNAPSHOT_VERSION).u16(flags).u32(total).u8(records.length).u8(0).u16(0);
  for (const r of records) {
    w.u8(r.kind.length);
    for (let i = 0; i < r.kind.length; i++) w.u8(r.kind.charCodeAt(i));
    w.u16(r.version).u32(r.bytes.length).raw(r.bytes);
  }
  w.u32(crc32c(w.bytes.subarray(0, total - SNAPSHOT_TRAILER_BYTES)));
  return w.bytes;
}

const corrupt = (what: string) => new SnapshotError('ERR_SNAPSHOT_CORRUPT', `snapshot record overruns its length at ${what}`);

/** Parses and validates a container; the records' bytes are views into `bytes`. */
export function decodeSnapshot(bytes: Uint8Array, options: DecodeOptions = {}): Snapshot {
  const cap = capOf(options.maxBytes);
  if (!(bytes instanceof Uint8Array)) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'snapshot is not a byte array');
  if (bytes.length < SNAPSHOT_HEADER_BYTES) {
    throw new SnapshotError('ERR_SNAPSHOT_TRUNCATED', `snapshot of ${bytes.length} bytes is shorter than its header`);
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== SNAPSHOT_MAGIC[i]) throw new SnapshotError('ERR_SNAPSHOT_MAGIC', 'not a capybara snapshot (bad magic)');
  }
  const h = new ByteReader(bytes.subarray(4, SNAPSHOT_HEADER_BYTES), corrupt);
  const version = h.u16('version');
  if (version !== SNAPSHOT_VERSION) {
    throw new SnapshotError('ERR_SNAPSHOT_VERSION', `snapshot version ${version} is not supported (this reader: ${SNAPSHOT_VERSION})`);
  }
  const flags = h.u16('flags');
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    throw new SnapshotError('ERR_SNAPSHOT_VERSION', `snapshot uses unknown flags 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
  }
  const total = h.u32('total length');
  if (total > cap) throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `snapshot declares ${total} bytes, cap is ${cap}`);
  if (total < SNAPSHOT_MIN_BYTES) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `snapshot declares ${total} bytes, below the minimum`);
  if (bytes.length < total) {
    throw new SnapshotError('ERR_SNAPSHOT_TRUNCATED', `snapshot has ${bytes.length} of its ${total} bytes`);
  }
  if (bytes.length > total) {
    throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `${bytes.length - total} trailing bytes after the snapshot`);
  }
  const body = bytes.subarray(0, total - SNAPSHOT_TRAILER_BYTES);
  const stored = new DataView(bytes.buffer, bytes.byteOffset + total - 4, 4).getUint32(0, true);
  if (crc32c(body) !== stored) throw new SnapshotError('ERR_SNAPSHOT_CHECKSUM', 'snapshot checksum mismatch (corrupted)');

  const count = h.u8('layer count');
  if (count < 1 || count > SNAPSHOT_MAX_LAYERS) {
    throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer count ${count} is not 1..${SNAPSHOT_MAX_LAYERS}`);
  }
  if (h.u8('reserved') !== 0 || h.u16('reserved') !== 0) {
    throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'reserved header bytes are not zero');
  }

  const r = new ByteReader(body.subarray(SNAPSHOT_HEADER_BYTES), corrupt);
  const records: SnapshotRecord[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const klen = r.u8('kind length');
    if (klen < 1 || klen > SNAPSHOT_MAX_KIND) {
      throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${i}: kind length ${klen} is not 1..${SNAPSHOT_MAX_KIND}`);
    }
    const kind = String.fromCharCode(...r.bytes(klen, 'kind'));
    if (!validKind(kind)) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${i}: invalid kind tag`);
    if (seen.has(kind)) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${kind} appears twice`);
    seen.add(kind);
    const rversion = r.u16('record version');
    if (rversion < 1) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${kind}: record version 0`);
    const len = r.u32('payload length');
    if (len > r.remaining) {
      throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${kind}: payload of ${len} bytes overruns the snapshot`);
    }
    records.push({ kind, version: rversion, bytes: r.bytes(len, 'payload') });
  }
  if (r.remaining !== 0) {
    throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `${r.remaining} bytes after the last layer record`);
  }
  if (options.expect) checkLayout(records, options.expect);
  return { version, flags, records };
}

/** Checks that records are exactly the expected kinds in order (bottom first). */
export function checkLayout(records: readonly SnapshotRecord[], expect: readonly string[]): void {
  const got = records.map((x) => x.kind);
  const same = got.length === expect.length && got.every((k, i) => k === expect[i]);
  if (!same) {
    throw new SnapshotError('ERR_SNAPSHOT_LAYERS',
      `snapshot layers [${got.join(', ')}] do not match this stack's [${expect.join(', ')}]`);
  }
}

/** Wipes every payload of a decoded snapshot (they are views: this wipes the source bytes too). */
export function zeroRecords(records: readonly SnapshotRecord[]): void {
  for (const r of records) r.bytes.fill(0);
}
