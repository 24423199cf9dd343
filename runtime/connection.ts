// A TCP connection of the stack as a Node Duplex stream, shaped like net.Socket.
//
// The engine signals edges (Readable, Writable, Closed); after an edge we call recv/send until -EAGAIN.
// Reads are pulled only while the stream wants data (push() true), so a slow consumer leaves bytes in the
// engine's receive buffer and TCP's window closes: backpressure reaches the peer. Writes hand bytes to
// the engine's send buffer; when it is full the write callback is held until the Writable edge, so the
// stream's own buffer fills and write() returns false, exactly as with a kernel socket.
import { Duplex } from 'node:stream';
import { EAGAIN, ENOTCONN, EPIPE, SystemError, TlsError, fromAddonError, fromErrno } from './errors.js';
import type { FlowEvents, FlowOwner } from './internal.js';
import type { FlowInfo } from './native.js';
import type { MigrationHooks } from './apps/resumable.js';
import type { CipherInfo, TlsFlow } from './tls-flow.js';

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
  /** TLS on this flow (runtime/tls-flow.ts): 'data' is plaintext, the stream opens after the handshake. */
  tls?: TlsFlow;
}

/** How often a TLS write that found no room for a record retries without a Writable edge. */
const TLS_RETRY_MS = 2;

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
  #diverted: Buffer[] | null = null; // a migration took the app's writes that had not reached the engine
  #wasFlowing: boolean | null = null; // the stream's flowing state before the migration paused it
  #tls: TlsFlow | null = null;
  #handshaking = false; // TLS: TCP is up, the handshake is not done (no app bytes move yet)
  #sniWait = false;     // TLS server: the handshake waits for the SNI callback
  #closeNotifyWait: ((err?: Error | null) => void) | null = null; // end() found no room for close_notify
  #tlsRetry: NodeJS.Timeout | null = null;
  #handshakeTimer: NodeJS.Timeout | null = null; // tls.handshakeTimeout
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
    if (init.tls) {
      this.#tls = init.tls;
      this.#handshaking = init.tls.handshaking;
    }
    owner.registerFlow(id, this);
    this.#refreshAddresses();
    // A server's ClientHello may have arrived before this flow was accepted: try right away.
    if (this.#handshaking && !this.connecting) {
      this.#armHandshakeTimer();
      process.nextTick(() => this.#driveHandshake());
    }
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

  /**
   * Not in Node: this connection's floor for the retransmission timeout in µs (1000 .. the engine's maximum;
   * 0 = the engine's, 200 ms by default), like Linux's per-route rto_min. For a peer known to answer within
   * milliseconds (the migration channel); a lost segment then costs that, not 200 ms. Not carried by migration.
   */
  setRtoMin(us: number): this {
    this.#setOption('rtoMinUs', us);
    return this;
  }

  #setOption(opt: 'nodelay' | 'keepalive' | 'keepidle' | 'rtoMinUs', value: number): void {
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
    if (this.#handshaking) {
      this.#armHandshakeTimer();
      this.#driveHandshake();
      return;
    }
    this.#opened();
  }

  /** The stream carries application bytes from here on (TCP up, TLS handshake done). */
  #opened(): void {
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
    if (this.#handshaking) {
      this.#driveHandshake();
      return;
    }
    if (this.#wantRead) this.#pull();
  }

  onWritable(): void {
    if (this.#handshaking) {
      this.#driveHandshake();
      return;
    }
    this.#flushWrite();
    if (this.#closeNotifyWait) {
      const cb = this.#closeNotifyWait;
      this.#closeNotifyWait = null;
      this.#shutdown(cb);
    }
  }

  onClosed(err: number): void {
    if (this.#released) return;
    this.#closedErr = err;
    if (this.#handshaking && !this.connecting) {
      this.#driveHandshake(); // the peer's alert may be the last thing it sent
      if (this.destroyed) return;
      if (this.#handshaking) {
        this.destroy(err !== 0 ? fromErrno(err, 'read') : new TlsError('ERR_TLS_HANDSHAKE', 'the peer closed the connection during the TLS handshake'));
        return;
      }
    }
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
    if (this.#released || this.#eof || this.connecting || this.#handshaking || this.#readHeld) return;
    const engine = this.#owner.engine;
    const tls = this.#tls;
    while (this.#wantRead) {
      let r: Buffer | number;
      try {
        r = tls ? tls.recv(READ_MAX) : engine.recv(this.id, READ_MAX);
      } catch (err) {
        this.destroy(fromAddonError(err, 'read'));
        return;
      }
      if (typeof r === 'number') {
        if (r === -EAGAIN && this.#closedErr === null) return; // wait for the Readable edge
        if (tls && r !== -EAGAIN) { // a bad record (alert sent) or the stream cut without close_notify
          this.destroy(tls.error(r, 'read'));
          return;
        }
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
    if (this.#diverted) { // being migrated: these bytes travel with the connection (_divertWrites)
      this.#diverted.push(chunk);
      cb();
      return;
    }
    this.#pending = { buf: chunk, off: 0, cb };
    this.#flushWrite();
  }

  #flushWrite(): void {
    const p = this.#pending;
    if (!p || this.connecting || this.#handshaking || this.#released) return;
    const engine = this.#owner.engine;
    const tls = this.#tls;
    while (p.off < p.buf.length) {
      let n: number;
      try {
        const chunk = p.off === 0 ? p.buf : p.buf.subarray(p.off);
        n = tls ? tls.send(chunk) : engine.send(this.id, chunk);
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
      if (n === 0 || n === -EAGAIN) { // send buffer full: the Writable edge resumes us
        if (tls) this.#retryTlsWrite();
        return;
      }
      this.#pending = null;
      p.cb(tls ? tls.error(n, 'write') : fromErrno(n, 'write'));
      return;
    }
    this.#pending = null;
    if (tls && !tls.rotateIfDue()) this.#retryTlsWrite(); // a KeyUpdate owed by keyUpdateBytes
    p.cb();
  }

  /** TCP may have had some room but not a whole record's: no Writable edge follows that, so look again soon. */
  #retryTlsWrite(): void {
    if (this.#tlsRetry) return;
    this.#tlsRetry = setTimeout(() => {
      this.#tlsRetry = null;
      if (this.#released) return;
      if (!this.#pending && this.#tls && !this.#tls.rotateIfDue()) this.#retryTlsWrite();
      this.#flushWrite();
      if (this.#closeNotifyWait) this.onWritable();
    }, TLS_RETRY_MS);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.connecting || this.#handshaking) {
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
      if (this.#tls) { // close_notify, then FIN
        const n = this.#tls.closeNotify();
        if (n === -EAGAIN) {
          this.#closeNotifyWait = cb;
          this.#retryTlsWrite();
          return;
        }
      }
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
    if (this.#tlsRetry) clearTimeout(this.#tlsRetry);
    this.#clearHandshakeTimer();
    this.#tls?.release();
    try {
      if (err instanceof TlsError && this.#closedErr === null) this.#closeAfterTlsError();
      else if (clean || this.#closedErr !== null) this.#owner.engine.close(this.id); // frees the TLS session too
      else this.#owner.engine.abort(this.id);
    } catch {
      // engine already destroyed: nothing left to free
    }
    this.#owner.unregisterFlow(this.id);
  }

  /**
   * A TLS failure: the alert the engine queued (if any) goes out, then FIN. Unread input would turn the
   * close into a RST that overtakes the alert, so it is dropped first (bounded: the receive buffer is).
   */
  #closeAfterTlsError(): void {
    const engine = this.#owner.engine;
    engine.shutdown(this.id);
    for (let i = 0; i < 4096; i++) {
      const r = engine.recv(this.id, READ_MAX);
      if (typeof r === 'number' || r.length === 0) break;
    }
    engine.close(this.id);
  }

  // ---- TLS (runtime/tls-flow.ts) ----------------------------------------------------------------

  /** One handshake step after an edge; opens the stream when it is done. */
  #driveHandshake(): void {
    const tls = this.#tls;
    if (!tls || !this.#handshaking || this.#sniWait || this.#released || this.destroyed) return;
    let step;
    try {
      step = tls.step();
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    if (step === 'again') return;
    if (step === 'sni') {
      this.#sniWait = true;
      tls.resolveSni((err) => {
        this.#sniWait = false;
        if (err) this.destroy(err);
        else this.#driveHandshake();
      });
      return;
    }
    this.#handshaking = false;
    this.#clearHandshakeTimer();
    this.#refreshAddresses();
    this.emit('secure');
    if (tls.role === 'client') this.emit('secureConnect');
    this.#opened();
  }

  /**
   * tls.handshakeTimeout: a handshake still running when it fires (also one waiting on SNICallback) ends
   * the connection as Node does, with ERR_TLS_HANDSHAKE_TIMEOUT ('tlsClientError' on a server). Unref'd:
   * a stalled handshake does not keep the process alive.
   */
  #armHandshakeTimer(): void {
    const ms = this.#tls?.handshakeTimeout ?? 0;
    if (ms <= 0 || this.#handshakeTimer || this.#released) return;
    this.#handshakeTimer = setTimeout(() => {
      this.#handshakeTimer = null;
      if (!this.#handshaking || this.#released || this.destroyed) return;
      this.destroy(new TlsError('ERR_TLS_HANDSHAKE_TIMEOUT', `TLS handshake timeout: not done within ${ms} ms`));
    }, ms);
    this.#handshakeTimer.unref();
  }

  #clearHandshakeTimer(): void {
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = null;
  }

  /** True on a TLS connection (as TLSSocket.encrypted). */
  get encrypted(): boolean {
    return this.#tls !== null;
  }

  /** True while the TLS handshake runs. */
  get handshaking(): boolean {
    return this.#handshaking;
  }

  /** "TLSv1.3" / "TLSv1.2" once the handshake is done, else null (as TLSSocket.getProtocol). */
  getProtocol(): string | null {
    const i = this.#released ? null : this.#tls?.info();
    return i && i.done ? i.protocol : null;
  }

  /** { name, standardName, version } of the negotiated suite (as TLSSocket.getCipher). */
  getCipher(): CipherInfo | null {
    return this.#released ? null : this.#tls?.cipher() ?? null;
  }

  /** The negotiated ALPN protocol, or false (as TLSSocket.alpnProtocol). */
  get alpnProtocol(): string | false {
    const i = this.#released ? null : this.#tls?.info();
    return i && i.alpn ? i.alpn : false;
  }

  /** The SNI name (the client's on a server, ours on a client), or undefined. */
  get servername(): string | undefined {
    const i = this.#released ? null : this.#tls?.info();
    return i && i.servername ? i.servername : undefined;
  }

  /** Sends a TLS 1.3 KeyUpdate (our write key changes); requestPeer asks the peer to update its key too. */
  keyUpdate(requestPeer = false): void {
    if (!this.#tls) throw new TlsError('ERR_TLS_HANDSHAKE', 'keyUpdate on a connection without TLS');
    if (this.#handshaking || this.#released) throw new TlsError('ERR_TLS_HANDSHAKE', 'keyUpdate before the TLS handshake finished or after close');
    const r = this.#tls.keyUpdate(requestPeer);
    if (r < 0) throw this.#tls.error(r, 'keyUpdate');
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

  /**
   * @internal Source side, after the app was captured: the bytes it wrote that are not in the engine yet (the
   * rest of the write in progress, then what the stream buffered) are taken out of the stream at once instead
   * of waiting for the network to make room for them; they travel with the connection (_diverted). False, and
   * nothing changes, when the stream is ending (its FIN must follow those bytes here), corked, or holds more
   * than `max` bytes. _restoreDiverted puts them back in front if the migration fails.
   */
  _divertWrites(max: number): boolean {
    if (this.#diverted || this.writableEnded || this.writableCorked > 0 || this.writableLength > max || this.#released) return false;
    const out: Buffer[] = [];
    this.#diverted = out;
    const p = this.#pending;
    if (p) {
      this.#pending = null;
      out.push(p.off === 0 ? p.buf : p.buf.subarray(p.off));
      p.cb(); // the Writable hands over what it buffered now: _write appends it to #diverted
    }
    return true;
  }

  /** @internal The bytes _divertWrites took so far, in order. */
  _diverted(): Buffer {
    return this.#diverted ? Buffer.concat(this.#diverted) : Buffer.alloc(0);
  }

  /** @internal The migration failed: what was diverted is written again, before anything the app writes next. */
  _restoreDiverted(): void {
    const d = this._diverted();
    this.#diverted = null;
    if (d.length > 0 && !this.destroyed) this.write(d);
  }

  /** @internal Everything written is inside the engine (nothing held in this stream). */
  get _writesFlushed(): boolean {
    return this.#pending === null && this.writableLength === 0;
  }

  /** @internal The target owns the flow now and the engine forgot it here: close the stream quietly. */
  _detachMigrated(target: string): void {
    if (this.#tlsRetry) clearTimeout(this.#tlsRetry);
    this.#clearHandshakeTimer();
    this.#tls?.release();
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
