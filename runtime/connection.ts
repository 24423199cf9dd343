// A TCP connection of the stack as a Node Duplex stream, shaped like net.Socket.
//
// The engine signals edges (Readable, Writable, Closed); after an edge we call recv/send until -EAGAIN.
// Reads are pulled only while the stream wants data (push() true), so a slow consumer leaves bytes in the
// engine's receive buffer and TCP's window closes: backpressure reaches the peer. Writes hand bytes to
// the engine's send buffer; when it is full the write callback is held until the Writable edge, so the
// stream's own buffer fills and write() returns false, exactly as with a kernel socket.
import { Duplex } from 'node:stream';
import { EAGAIN, ENOTCONN, EPIPE, SystemError, fromAddonError, fromErrno } from './errors.js';
import type { FlowEvents, FlowOwner } from './internal.js';
import type { FlowInfo } from './native.js';
import type { MigrationHooks } from './apps/resumable.js';

const READ_MAX = 64 * 1024;

export interface ConnectionOptions {
  allowHalfOpen?: boolean;
  readableHighWaterMark?: number;
  writableHighWaterMark?: number;
}

export interface ConnectionInit {
  connecting: boolean;
  remoteAddress?: string;
  remotePort?: number;
  localPort?: number;
}

interface PendingWrite {
  buf: Buffer;
  off: number;
  cb: (err?: Error | null) => void;
}

export interface AddressInfo {
  address: string;
  family: 'IPv4';
  port: number;
}

export class Connection extends Duplex implements FlowEvents {
  readonly id: number;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  localAddress: string;
  localPort: number | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  connecting: boolean;

  #owner: FlowOwner;
  #released = false;
  #wantRead = false;
  #eof = false;
  #closedErr: number | null = null;
  #pending: PendingWrite | null = null;
  #pendingFinal: ((err?: Error | null) => void) | null = null;
  #readHeld = false; // a migration is capturing this connection: bytes stay in the engine
  #wasFlowing: boolean | null = null; // the stream's flowing state before the migration paused it
  /** How often this connection moved between runtimes (travels with it). */
  migrations = 0;
  /** Set by an app that can continue this connection on another host (runtime/apps/resumable.ts). */
  migrationHooks: MigrationHooks | undefined;

  /** @internal Created by Stack.connect and Server; not meant to be constructed by users. */
  constructor(owner: FlowOwner, id: number, init: ConnectionInit, opts: ConnectionOptions = {}) {
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      readableHighWaterMark: opts.readableHighWaterMark,
      writableHighWaterMark: opts.writableHighWaterMark,
      decodeStrings: true,
      emitClose: true,
      autoDestroy: true,
    });
    this.#owner = owner;
    this.id = id;
    this.connecting = init.connecting;
    this.localAddress = owner.address;
    this.remoteAddress = init.remoteAddress;
    this.remotePort = init.remotePort;
    this.localPort = init.localPort;
    owner.registerFlow(id, this);
    this.#refreshAddresses();
  }

  #refreshAddresses(): void {
    const fi = this.info();
    if (!fi) return;
    this.localAddress = fi.localAddress || this.localAddress;
    if (fi.localPort) this.localPort = fi.localPort;
    if (fi.remoteAddress && fi.remoteAddress !== '0.0.0.0') this.remoteAddress = fi.remoteAddress;
    if (fi.remotePort) this.remotePort = fi.remotePort;
  }

  /** Engine view of this flow (TCP state, windows, RTT, counters); null once the handle is released. */
  info(): FlowInfo | null {
    if (this.#released) return null;
    try {
      return this.#owner.engine.flowInfo(this.id);
    } catch {
      return null;
    }
  }

  address(): AddressInfo {
    return { address: this.localAddress, family: 'IPv4', port: this.localPort ?? 0 };
  }

  get remoteFamily(): 'IPv4' {
    return 'IPv4';
  }

  get readyState(): 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this.connecting) return 'opening';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }

  setNoDelay(noDelay = true): this {
    this.#setOption('nodelay', noDelay ? 1 : 0);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    if (enable && initialDelay > 0) this.#setOption('keepidle', Math.floor(initialDelay));
    this.#setOption('keepalive', enable ? 1 : 0);
    return this;
  }

  #setOption(opt: 'nodelay' | 'keepalive' | 'keepidle', value: number): void {
    if (this.#released) return;
    const r = this.#owner.engine.setOption(this.id, opt, value);
    if (r < 0) throw fromErrno(r, 'setsockopt');
  }

  // ---- engine events -------------------------------------------------------------------------

  onConnected(): void {
    if (!this.connecting) return;
    this.connecting = false;
    this.#refreshAddresses();
    this.emit('connect');
    this.emit('ready');
    this.#flushWrite();
    if (this.#pendingFinal) {
      const cb = this.#pendingFinal;
      this.#pendingFinal = null;
      this.#shutdown(cb);
    }
    if (this.#wantRead) this.#pull();
  }

  onReadable(): void {
    if (this.#wantRead) this.#pull();
  }

  onWritable(): void {
    this.#flushWrite();
  }

  onClosed(err: number): void {
    if (this.#released) return;
    this.#closedErr = err;
    if (err !== 0) {
      const syscall = this.connecting ? 'connect' : 'read';
      const e = fromErrno(err, syscall);
      if (this.connecting && e.code === 'ECONNREFUSED') {
        e.message = `connect ECONNREFUSED ${this.remoteAddress}:${this.remotePort}`;
      }
      this.destroy(e);
      return;
    }
    // Orderly: both FINs exchanged. Data before our peer's FIN may still sit in the engine; drain it
    // (pull stops at push() false and resumes in _read) and let autoDestroy release the handle.
    this.connecting = false;
    if (this.#pending) {
      const p = this.#pending;
      this.#pending = null;
      p.cb(new SystemError(-EPIPE, 'write', 'write EPIPE: the connection was closed'));
    }
    if (this.#wantRead) this.#pull();
  }

  // ---- Duplex plumbing ------------------------------------------------------------------------

  override _read(): void {
    this.#wantRead = true;
    this.#pull();
  }

  #pull(): void {
    if (this.#released || this.#eof || this.connecting || this.#readHeld) return;
    const engine = this.#owner.engine;
    while (this.#wantRead) {
      let r: Buffer | number;
      try {
        r = engine.recv(this.id, READ_MAX);
      } catch (err) {
        this.destroy(fromAddonError(err, 'read'));
        return;
      }
      if (typeof r === 'number') {
        if (r === -EAGAIN && this.#closedErr === null) return; // wait for the Readable edge
        if (this.#closedErr === 0) { // closed in order and nothing left: that is the end
          this.#endOfStream();
          return;
        }
        this.destroy(fromErrno(r, 'read'));
        return;
      }
      if (r.length === 0) {
        this.#endOfStream();
        return;
      }
      this.bytesRead += r.length;
      if (!this.push(r)) this.#wantRead = false;
    }
  }

  #endOfStream(): void {
    this.#eof = true;
    this.#wantRead = false;
    this.push(null);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#pending = { buf: chunk, off: 0, cb };
    this.#flushWrite();
  }

  #flushWrite(): void {
    const p = this.#pending;
    if (!p || this.connecting || this.#released) return;
    const engine = this.#owner.engine;
    while (p.off < p.buf.length) {
      let n: number;
      try {
        n = engine.send(this.id, p.off === 0 ? p.buf : p.buf.subarray(p.off));
      } catch (err) {
        this.#pending = null;
        p.cb(fromAddonError(err, 'write'));
        return;
      }
      if (n > 0) {
        p.off += n;
        this.bytesWritten += n;
        continue;
      }
      if (n === 0 || n === -EAGAIN) return; // send buffer full: the Writable edge resumes us
      this.#pending = null;
      p.cb(fromErrno(n, 'write'));
      return;
    }
    this.#pending = null;
    p.cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.connecting) {
      this.#pendingFinal = cb;
      return;
    }
    this.#shutdown(cb);
  }

  #shutdown(cb: (err?: Error | null) => void): void {
    if (this.#released || this.#closedErr !== null) {
      cb();
      return;
    }
    let r: number;
    try {
      r = this.#owner.engine.shutdown(this.id);
    } catch (err) {
      cb(fromAddonError(err, 'shutdown'));
      return;
    }
    cb(r < 0 && r !== -ENOTCONN /* already gone */ ? fromErrno(r, 'shutdown') : null);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#release(err);
    cb(err);
  }

  /** Frees the engine handle: graceful close when the stream ended cleanly, RST otherwise. */
  #release(err: Error | null): void {
    if (this.#released) return;
    const clean = this.#closedErr === 0 || (err === null && this.writableFinished);
    this.#released = true;
    this.#wantRead = false;
    this.#pending = null;
    try {
      if (clean || this.#closedErr !== null) this.#owner.engine.close(this.id);
      else this.#owner.engine.abort(this.id);
    } catch {
      // engine already destroyed: nothing left to free
    }
    this.#owner.unregisterFlow(this.id);
  }

  // ---- live migration (runtime/migration/migrator.ts drives these) ------------------------------

  /**
   * @internal Source side, first step: no more bytes move from the engine into this stream; what the
   * stream already holds but the app has not read is returned, to travel with the connection.
   */
  _holdForMigration(): Buffer {
    this.#readHeld = true;
    this.#wasFlowing = this.readableFlowing;
    this.pause();
    // read() would also emit 'data' to the app's listeners (a pipe would echo these bytes here AND they would
    // travel): take them with the listeners detached, so they exist only in what travels.
    const listeners = this.rawListeners('data') as ((chunk: Buffer) => void)[];
    this.removeAllListeners('data');
    const parts: Buffer[] = [];
    try {
      for (let b = this.read() as Buffer | null; b !== null; b = this.read() as Buffer | null) parts.push(b);
    } finally {
      for (const l of listeners) this.on('data', l);
    }
    return Buffer.concat(parts);
  }

  /** @internal The migration failed: give the unread bytes back and carry on as before. */
  _resumeAfterMigration(unread: Buffer): void {
    this.#readHeld = false;
    if (this.destroyed) return; // closed while the migration was being prepared: nothing to give back
    if (unread.length > 0) this.unshift(unread);
    if (this.#wasFlowing) this.resume();
    this.#wasFlowing = null;
    if (this.#wantRead) this.#pull();
    this.#flushWrite();
  }

  /** True from the start of a migration away from this runtime until it failed or the stream closed. */
  get migrating(): boolean {
    return this.#readHeld;
  }

  /** @internal Everything written is inside the engine (nothing held in this stream). */
  get _writesFlushed(): boolean {
    return this.#pending === null && this.writableLength === 0;
  }

  /** @internal The target owns the flow now and the engine forgot it here: close the stream quietly. */
  _detachMigrated(target: string): void {
    this.#released = true;
    this.#wantRead = false;
    this.#owner.unregisterFlow(this.id);
    this.emit('migrate', target);
    this.destroy();
  }

  /** @internal True when the handle is closed. */
  get released(): boolean {
    return this.#released;
  }
}
