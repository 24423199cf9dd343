// The TLS side of one Connection: the engine's session for the flow (native/tls via the addon), the
// handshake steps, the asynchronous SNI callback, and the mapping of the engine's errno values to
// TlsErrors. Connection calls it instead of the plain TCP recv/send once it has one; the session itself
// (keys, sequence numbers) never leaves the engine except as a migration snapshot.
import { SystemError, TlsError, errnoName, errnoNumber, fromAddonError, fromErrno } from './errors.js';
import type { FlowOwner } from './internal.js';
import type { TlsInfo } from './native.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, createSecureContext, handshakeTimeoutMs, type SecureContext, type TlsServerOptions } from './tls.js';

export type HandshakeStep = 'done' | 'again' | 'sni';
export type SniCallback = NonNullable<TlsServerOptions['SNICallback']>;

const HS_DONE = 0;
const HS_AGAIN = 1;
const HS_WANT_SNI = 2;
const EPROTO = errnoNumber('EPROTO');
const ECONNRESET = errnoNumber('ECONNRESET');
const EAGAIN = errnoNumber('EAGAIN');

/** What Node's getCipher() returns. */
export interface CipherInfo {
  name: string;
  standardName: string;
  version: string;
}

export class TlsFlow {
  readonly role: 'server' | 'client';
  readonly #owner: FlowOwner;
  readonly #id: number;
  readonly #sni: SniCallback | undefined;
  #handshaking: boolean;
  #gone = false; // the connection released the flow: its id may already name another flow
  #handshakeTimeout = 0;
  #keyUpdateBytes = 0; // 0: never on our own
  #sinceUpdate = 0;

  private constructor(owner: FlowOwner, id: number, role: 'server' | 'client', handshaking: boolean, sni?: SniCallback) {
    this.#owner = owner;
    this.#id = id;
    this.role = role;
    this.#handshaking = handshaking;
    this.#sni = sni;
  }

  /** A server session for an accepted flow; the handshake starts when the ClientHello is there. */
  static server(owner: FlowOwner, id: number, ctx: SecureContext, sni?: SniCallback, keyUpdateBytes?: number, handshakeTimeout?: number): TlsFlow {
    const ms = handshakeTimeoutMs(handshakeTimeout, DEFAULT_HANDSHAKE_TIMEOUT_MS);
    TlsFlow.#create(owner, id, ctx, null);
    const f = new TlsFlow(owner, id, 'server', true, ctx.sni ? sni : undefined);
    f.#keyUpdateBytes = keyUpdateBytes ?? 0;
    f.#handshakeTimeout = ms;
    return f;
  }

  /** A client session for a connecting flow; the handshake starts once TCP is established. */
  static client(owner: FlowOwner, id: number, ctx: SecureContext, servername: string | null, handshakeTimeout?: number): TlsFlow {
    const ms = handshakeTimeoutMs(handshakeTimeout, 0); // checked before a session exists
    TlsFlow.#create(owner, id, ctx, servername);
    const f = new TlsFlow(owner, id, 'client', true);
    f.#handshakeTimeout = ms;
    return f;
  }

  /** The session of a migrated flow, already restored in the engine (handshake long done). */
  static adopted(owner: FlowOwner, id: number, keyUpdateBytes?: number): TlsFlow {
    const f = new TlsFlow(owner, id, 'server', false);
    f.#keyUpdateBytes = keyUpdateBytes ?? 0;
    return f;
  }

  static #create(owner: FlowOwner, id: number, ctx: SecureContext, servername: string | null): void {
    try {
      owner.engine.tlsCreate(id, ctx.native, servername);
    } catch (err) {
      throw new TlsError('ERR_TLS_CONTEXT', `cannot start TLS on flow ${id}: ${fromAddonError(err, 'tls').message}`, { cause: err });
    }
  }

  get handshaking(): boolean {
    return this.#handshaking;
  }

  /** Milliseconds the handshake may take (the Connection runs the timer); 0 = no limit. */
  get handshakeTimeout(): number {
    return this.#handshakeTimeout;
  }

  /** The connection let the flow go (closed, timed out, migrated): a late SNI answer must not touch the engine. */
  release(): void {
    this.#gone = true;
  }

  /** One handshake step with what TCP holds; throws TlsError when the handshake failed (alert sent). */
  step(): HandshakeStep {
    const r = this.#owner.engine.tlsHandshake(this.#id);
    if (r === HS_DONE) {
      this.#handshaking = false;
      return 'done';
    }
    if (r === HS_AGAIN) return 'again';
    if (r === HS_WANT_SNI) return 'sni';
    throw this.error(r, 'handshake');
  }

  /** Server paused for SNI: asks the callback, installs its context; cb(err) when the handshake may go on. */
  resolveSni(cb: (err: Error | null) => void): void {
    const engine = this.#owner.engine;
    const name = engine.tlsServername(this.#id) ?? '';
    const sni = this.#sni;
    let called = false;
    const answer = (err: Error | null, ctx?: SecureContext | TlsServerOptions | null): void => {
      if (called) return;
      called = true;
      if (this.#gone) return; // e.g. the handshake timed out while the callback ran: nobody is waiting
      if (err) return cb(new TlsError('ERR_TLS_SNI', `SNICallback failed for "${name}": ${err.message}`, { cause: err }));
      try {
        const c = ctx == null ? null : 'native' in ctx ? ctx : createSecureContext(ctx, 'server');
        const r = this.#owner.engine.tlsSetContext(this.#id, c ? c.native : null);
        if (r < 0) return cb(fromErrno(r, 'tls'));
      } catch (e) {
        return cb(e as Error);
      }
      cb(null);
    };
    if (!sni) return answer(null, null);
    try {
      sni(name, answer);
    } catch (err) {
      answer(err as Error);
    }
  }

  recv(max: number): Buffer | number {
    return this.#owner.engine.tlsRecv(this.#id, max);
  }

  send(data: Uint8Array): number {
    // A due KeyUpdate goes first: after a bulk write filled TCP it found no room and is still owed.
    if (this.#keyUpdateBytes > 0 && this.#sinceUpdate >= this.#keyUpdateBytes) this.#rotate();
    const n = this.#owner.engine.tlsSend(this.#id, data);
    if (n > 0 && this.#keyUpdateBytes > 0) {
      this.#sinceUpdate += n;
      if (this.#sinceUpdate >= this.#keyUpdateBytes) this.#rotate();
    }
    return n;
  }

  /** keyUpdateBytes reached: KeyUpdate with update_requested; no room now means at the next write. */
  #rotate(): void {
    const r = this.#owner.engine.tlsKeyUpdate(this.#id, true);
    if (r === 0) this.#sinceUpdate = 0;
    else if (r !== -EAGAIN) this.#keyUpdateBytes = 0; // TLS 1.2 has no KeyUpdate; errors surface on the next call
  }

  /** Sends a KeyUpdate that keyUpdateBytes made due and that found no room yet; true when none is owed. */
  rotateIfDue(): boolean {
    if (this.#keyUpdateBytes === 0 || this.#sinceUpdate < this.#keyUpdateBytes) return true;
    this.#rotate();
    return this.#keyUpdateBytes === 0 || this.#sinceUpdate < this.#keyUpdateBytes;
  }

  closeNotify(): number {
    return this.#owner.engine.tlsCloseNotify(this.#id);
  }

  keyUpdate(requestPeer: boolean): number {
    return this.#owner.engine.tlsKeyUpdate(this.#id, requestPeer);
  }

  info(): TlsInfo | null {
    try {
      return this.#owner.engine.tlsInfo(this.#id);
    } catch {
      return null;
    }
  }

  cipher(): CipherInfo | null {
    const i = this.info();
    if (!i || !i.done) return null;
    return { name: i.cipher, standardName: i.standardCipher, version: i.protocol };
  }

  /** The typed error for a negative result of a TLS call. */
  error(r: number, what: 'handshake' | 'read' | 'write' | 'shutdown' | 'keyUpdate'): SystemError | TlsError {
    let why = '';
    try {
      why = this.#owner.engine.tlsLastError(this.#id);
    } catch {
      // engine gone
    }
    if (what === 'handshake') {
      const cert = r === -EPROTO && /certificate|verify/i.test(why);
      return new TlsError(cert ? 'ERR_TLS_CERT' : 'ERR_TLS_HANDSHAKE', `TLS handshake failed: ${why || errnoName(r)}`, { alertSent: r === -EPROTO });
    }
    if (r === -EPROTO) return new TlsError('ERR_TLS_ALERT', `TLS ${what} failed: ${why || 'bad record'}`, { alertSent: true });
    if (r === -ECONNRESET && what === 'read') {
      return new TlsError('ERR_TLS_TRUNCATED', `TLS stream ended without close_notify${why ? ` (${why})` : ''}`);
    }
    return fromErrno(r, what);
  }
}
