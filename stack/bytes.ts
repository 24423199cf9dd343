// Little-endian byte helpers shared by the snapshot container and the migration channel. The reader
// is the only way untrusted bytes are parsed: every read is bounds-checked and failures go through a
// caller-supplied factory, so each format throws its own typed error and nothing else.

/** Overwrites buffers with zeros. Snapshots and channel keys carry secrets: wipe them after use. */
export function zero(...buffers: (Uint8Array | null | undefined)[]): void {
  for (const b of buffers) if (b) b.fill(0);
}

/** Runs fn with bytes, then wipes bytes whatever happens (also when fn throws). */
export function withWiped<T>(bytes: Uint8Array, fn: (bytes: Uint8Array) => T): T {
  try {
    return fn(bytes);
  } finally {
    bytes.fill(0);
  }
}

/** Constant-time equality (lengths are not secret). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

const TWO32 = 2 ** 32;

export class ByteReader {
  #view: DataView;
  #bytes: Uint8Array;
  #off = 0;
  readonly #fail: (what: string) => Error;

  /** fail(what) builds the error thrown when a field runs past the end. */
  constructor(bytes: Uint8Array, fail: (what: string) => Error) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#fail = fail;
  }

  get offset(): number { return this.#off; }
  get remaining(): number { return this.#bytes.length - this.#off; }

  #need(n: number, what: string): number {
    if (n > this.#bytes.length - this.#off) throw this.#fail(what);
    const at = this.#off;
    this.#off += n;
    return at;
  }

  u8(what: string): number { return this.#view.getUint8(this.#need(1, what)); }
  u16(what: string): number { return this.#view.getUint16(this.#need(2, what), true); }
  u32(what: string): number { return this.#view.getUint32(this.#need(4, what), true); }

  /** u64 as a JS number; undefined when above 2^53-1 (the caller decides which error that is). */
  u64(what: string): number | undefined {
    const at = this.#need(8, what);
    const lo = this.#view.getUint32(at, true);
    const hi = this.#view.getUint32(at + 4, true);
    if (hi >= 0x200000) return undefined;
    return hi * TWO32 + lo;
  }

  /** A view (no copy) of the next n bytes. */
  bytes(n: number, what: string): Uint8Array {
    const at = this.#need(n, what);
    return this.#bytes.subarray(at, at + n);
  }
}

export class ByteWriter {
  readonly bytes: Uint8Array;
  #view: DataView;
  #off = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }

  get offset(): number { return this.#off; }

  u8(v: number): this { this.#view.setUint8(this.#off, v); this.#off += 1; return this; }
  u16(v: number): this { this.#view.setUint16(this.#off, v, true); this.#off += 2; return this; }
  u32(v: number): this { this.#view.setUint32(this.#off, v >>> 0, true); this.#off += 4; return this; }
  u64(v: number): this {
    this.#view.setUint32(this.#off, v % TWO32, true);
    this.#view.setUint32(this.#off + 4, Math.floor(v / TWO32), true);
    this.#off += 8;
    return this;
  }
  raw(b: Uint8Array): this { this.bytes.set(b, this.#off); this.#off += b.length; return this; }
}
