// How an application takes part in live migration (Capybara's model: the connection moves, the app
// hands over an opaque state and resumes from it on the target).
//
// The contract the apps here follow: bytes the app took out of the socket (read()) and has not acted on
// are the app's and travel in its state; bytes still inside the socket belong to the runtime and travel
// with the connection. The apps pull with 'readable' + read() rather than 'data' events, so "taken out"
// is exactly "returned by a read() the app made": nothing reaches the app behind its back while it is
// captured, and the runtime can drain the stream's own buffer without the app seeing those bytes.
import type { Duplex } from 'node:stream';
import { ByteWriter } from '../../stack/bytes.js';
import { CapybaraError } from '../errors.js';

export interface MigrationHooks {
  /** Source: stop producing output (no write after this resolves) and return the app's state. */
  capture(): Promise<Uint8Array>;
  /** Source: the migration failed after capture; carry on exactly where it stopped. */
  abort(): void;
}

export interface ResumableApp {
  /** Starts serving a new connection. */
  onConnection(sock: Duplex): MigrationHooks;
  /** Continues a migrated connection from the state its source captured (throws code ERR_APP_STATE). */
  resume(sock: Duplex, state: Uint8Array): MigrationHooks;
}

/** A state handed to resume() is malformed, of an unknown version, or out of bounds. */
export class AppStateError extends CapybaraError {
  constructor(message: string) {
    super('ERR_APP_STATE', message);
  }
}

/** Largest byte run (buffered input, pending output) any app state here may carry. */
export const MAX_STATE_BYTES = 4 * 1024 * 1024;

/**
 * Lets a runtime Connection (which has a `migrationHooks` slot the migrator asks) find the app's hooks.
 * Other Duplexes (net.Socket) have no such slot and are left alone.
 */
export function offerHooks(sock: Duplex, hooks: MigrationHooks): void {
  if ('migrationHooks' in sock) (sock as Duplex & { migrationHooks: MigrationHooks | undefined }).migrationHooks = hooks;
}

/**
 * Handlers for a server that serves a resumable app: pass `onConnection` as the connection listener and
 * `onMigrated` to the server's 'migrated' (conn, userData) event. A state the app refuses destroys the
 * connection with the AppStateError.
 */
export function serveResumable(app: ResumableApp): {
  onConnection(sock: Duplex): void;
  onMigrated(sock: Duplex, userData: Uint8Array): void;
} {
  return {
    onConnection(sock) {
      offerHooks(sock, app.onConnection(sock));
    },
    onMigrated(sock, userData) {
      let hooks: MigrationHooks;
      try {
        hooks = app.resume(sock, userData);
      } catch (err) {
        sock.destroy(err as Error);
        return;
      }
      offerHooks(sock, hooks);
    },
  };
}

/** Little-endian writer for app states (stack/bytes.ts's writer); the caller sizes it exactly. */
export class StateWriter extends ByteWriter {
  /** Every app state starts with its 4-character magic and a u16 version (StateReader.head checks them). */
  head(magic: string, version: number): this {
    return this.raw(Buffer.from(magic, 'latin1')).u16(version);
  }

  /** The encoded state; throws if the size given to the constructor was not used up exactly. */
  done(): Uint8Array {
    if (this.offset !== this.bytes.length) throw new Error(`state writer: wrote ${this.offset} of ${this.bytes.length} bytes`);
    return this.bytes;
  }
}

/** Bounds-checked little-endian reader; every failure is an AppStateError naming the state kind. */
export class StateReader {
  #bytes: Uint8Array;
  #view: DataView;
  #off = 0;
  #what: string;

  constructor(bytes: Uint8Array, what: string) {
    if (!(bytes instanceof Uint8Array)) throw new AppStateError(`${what} state: not a byte array`);
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
  }

  fail(message: string): never {
    throw new AppStateError(`${this.#what} state: ${message}`);
  }

  #need(n: number, field: string): void {
    if (this.#bytes.length - this.#off < n) this.fail(`truncated at ${field} (offset ${this.#off})`);
  }

  u8(field: string): number {
    this.#need(1, field);
    return this.#view.getUint8(this.#off++);
  }

  u16(field: string): number {
    this.#need(2, field);
    const v = this.#view.getUint16(this.#off, true);
    this.#off += 2;
    return v;
  }

  u32(field: string): number {
    this.#need(4, field);
    const v = this.#view.getUint32(this.#off, true);
    this.#off += 4;
    return v;
  }

  /** A u64 that must fit a JS number exactly. */
  u64(field: string): number {
    this.#need(8, field);
    const v = this.#view.getBigUint64(this.#off, true);
    this.#off += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${field} ${v} out of range`);
    return Number(v);
  }

  /** n bytes, copied (the state buffer may be reused by its owner); n is bounded by the caller. */
  raw(n: number, field: string): Buffer {
    this.#need(n, field);
    const b = Buffer.from(this.#bytes.subarray(this.#off, this.#off + n));
    this.#off += n;
    return b;
  }

  magic(expect: string): void {
    this.#need(expect.length, 'magic');
    for (let i = 0; i < expect.length; i++) {
      if (this.#bytes[this.#off + i] !== expect.charCodeAt(i)) this.fail('bad magic');
    }
    this.#off += expect.length;
  }

  /** The magic and version StateWriter.head wrote; anything else is refused. */
  head(magic: string, version: number): void {
    this.magic(magic);
    const v = this.u16('version');
    if (v !== version) this.fail(`unsupported version ${v}`);
  }

  /** A flags byte with only the bits of `known` allowed. */
  flags(known: number): number {
    const f = this.u8('flags');
    if ((f & ~known) !== 0) this.fail(`unknown flags 0x${f.toString(16)}`);
    return f;
  }

  /** A reserved byte, which must be zero. */
  reserved(): void {
    if (this.u8('reserved') !== 0) this.fail('reserved byte not zero');
  }

  /** Nothing may follow the last field. */
  end(): void {
    if (this.#off !== this.#bytes.length) this.fail(`${this.#bytes.length - this.#off} trailing bytes`);
  }
}
