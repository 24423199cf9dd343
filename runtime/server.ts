// A listening port of the stack, shaped like net.Server: 'listening', 'connection', 'error', 'close'.
// On the Acceptable edge every queued flow is accepted at once and wrapped in a Connection.
import { EventEmitter } from 'node:events';
import { Connection, type AddressInfo, type ConnectionOptions } from './connection.js';
import { ConfigError, EAGAIN, fromAddonError, fromErrno } from './errors.js';
import type { FlowOwner, ListenerEvents } from './internal.js';
import { createSecureContext, type SecureContext, type TlsServerOptions } from './tls.js';
import { TlsFlow } from './tls-flow.js';

export interface ServerOptions extends ConnectionOptions {
  backlog?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  /** Pause new connections (don't read until a listener resumes them), like net's pauseOnConnect. */
  pauseOnConnect?: boolean;
  /**
   * Terminate TLS (as tls.createServer): the connection handler and 'secureConnection' get connections
   * whose handshake is done; 'data' is plaintext. A failed handshake is 'tlsClientError' (err, conn), one
   * not done within tls.handshakeTimeout (default 120 s) too, with ERR_TLS_HANDSHAKE_TIMEOUT.
   */
  tls?: TlsServerOptions;
}

export interface ListenOptions {
  port: number;
  backlog?: number;
}

export const DEFAULT_BACKLOG = 511;

export class Server extends EventEmitter implements ListenerEvents {
  #owner: FlowOwner;
  #opts: ServerOptions;
  #listenerId: number | null = null;
  #port = 0;
  #connections = new Set<Connection>();
  #closing = false;
  #closeEmitted = false;
  #tls: SecureContext | null = null;
  #laneOn = false; // the engine adopts lane offers for our port (we listen and have a 'migrated' handler)

  /** @internal Use stack.createServer(). */
  constructor(owner: FlowOwner, opts: ServerOptions = {}, onConnection?: (conn: Connection) => void) {
    super();
    this.#owner = owner;
    this.#opts = { ...opts };
    if (opts.backlog !== undefined) checkBacklog(opts.backlog);
    if (opts.tls !== undefined) this.#tls = createSecureContext(opts.tls, 'server');
    if (onConnection) this.on(this.#tls ? 'secureConnection' : 'connection', onConnection);
    // 'newListener' comes before the handler is added: look again once it is there.
    const sync = (event: string | symbol) => {
      if (event === 'migrated') process.nextTick(() => this.#syncLane());
    };
    this.on('newListener', sync);
    this.on('removeListener', sync);
  }

  /**
   * The engine decides on its own whether a connection offered through the migration lane may be adopted
   * here (runtime/migration/lane-record.ts): tell it while this server would take one (acceptsMigrated).
   */
  #syncLane(): void {
    const on = this.#listenerId !== null && this.listenerCount('migrated') > 0;
    if (on === this.#laneOn) return;
    this.#laneOn = on;
    let rc = 0;
    try {
      rc = this.#owner.engine.laneListen?.(this.#port, on) ?? 0;
    } catch {
      // the engine is gone: it adopts nothing any more
    }
    if (rc < 0) { // its port table is full: lane offers for this port are refused (the source keeps them)
      this.#laneOn = false;
      process.emitWarning(`capybara: port ${this.#port} cannot take connections through the migration lane (errno ${rc})`, { code: 'CAPYBARA_LANE_LISTEN' });
    }
  }

  /** True when this server terminates TLS. */
  get secure(): boolean {
    return this.#tls !== null;
  }

  get listening(): boolean {
    return this.#listenerId !== null;
  }

  get connections(): number {
    return this.#connections.size;
  }

  listen(port: number | ListenOptions, cb?: () => void): this {
    const o: ListenOptions = typeof port === 'number' ? { port } : port;
    if (typeof o?.port !== 'number' || !Number.isInteger(o.port) || o.port < 1 || o.port > 65535) {
      throw new ConfigError(`port must be an integer in 1..65535 (got ${String(o?.port)})`);
    }
    const backlog = o.backlog ?? this.#opts.backlog ?? DEFAULT_BACKLOG;
    checkBacklog(backlog);
    this.#owner.assertOpen();
    if (this.#listenerId !== null) throw new ConfigError('server is already listening');
    if (cb) this.once('listening', cb);
    let id: number;
    try {
      id = this.#owner.engine.listen(o.port, backlog);
    } catch (err) {
      const e = fromAddonError(err, 'listen');
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    if (id < 0) {
      const e = fromErrno(id, 'listen', `listen ${errName(id)}: port ${o.port} on ${this.#owner.address}`);
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    this.#listenerId = id;
    this.#port = o.port;
    this.#closing = false;
    this.#closeEmitted = false;
    this.#owner.registerListener(id, this);
    this.#syncLane();
    process.nextTick(() => {
      this.emit('listening');
      this.onAcceptable(); // connections that completed before the first edge was routed
    });
    return this;
  }

  address(): AddressInfo | null {
    if (this.#listenerId === null) return null;
    return { address: this.#owner.address, family: 'IPv4', port: this.#port };
  }

  /** Stops accepting; 'close' is emitted once every accepted connection has closed (as net does). */
  close(cb?: (err?: Error) => void): this {
    if (this.#listenerId === null) {
      if (cb) process.nextTick(() => cb(Object.assign(new Error('Server is not running.'), { code: 'ERR_SERVER_NOT_RUNNING' })));
      return this;
    }
    if (cb) this.once('close', () => cb());
    const id = this.#listenerId;
    this.#listenerId = null;
    this.#closing = true;
    this.#owner.unregisterListener(id);
    this.#syncLane();
    try {
      this.#owner.engine.unlisten(id);
    } catch {
      // engine already gone
    }
    this.#maybeEmitClose();
    return this;
  }

  /** Closes the listener and destroys (RST) every accepted connection still open. */
  closeAllConnections(): void {
    for (const c of [...this.#connections]) c.destroy();
  }

  onAcceptable(): void {
    const lid = this.#listenerId;
    if (lid === null) return;
    for (;;) {
      let id: number;
      try {
        id = this.#owner.engine.accept(lid);
      } catch (err) {
        this.emit('error', fromAddonError(err, 'accept'));
        return;
      }
      if (id === -EAGAIN) return;
      if (id < 0) {
        this.emit('error', fromErrno(id, 'accept'));
        return;
      }
      this.#adopt(id);
      if (this.#listenerId !== lid) return; // closed from a 'connection' handler
    }
  }

  /** True when this server takes migrated connections (it listens on `port` and has a 'migrated' handler). */
  acceptsMigrated(port: number): boolean {
    return this.#listenerId !== null && this.#port === port && this.listenerCount('migrated') > 0;
  }

  /**
   * @internal A flow adopted from another runtime (Capybara's accept_migrated): wrapped like an accepted
   * one, bytes the source app had not read yet put back in front, then 'migrated' (conn, userData).
   */
  takeMigrated(id: number, unread: Uint8Array, userData: Uint8Array, migrations: number, tls = false, unwritten?: Uint8Array): Connection {
    const conn = this.#adopt(id, false, tls ? TlsFlow.adopted(this.#owner, id, this.#opts.tls?.keyUpdateBytes) : undefined)!;
    conn.migrations = migrations;
    if (unread.length > 0) conn.unshift(Buffer.from(unread));
    if (unwritten && unwritten.length > 0) conn.write(Buffer.from(unwritten)); // the source app's last writes go first
    this.emit('migrated', conn, userData);
    return conn;
  }

  #adopt(id: number, announce = true, migratedTls?: TlsFlow): Connection | null {
    let tls = migratedTls;
    if (!tls && this.#tls) {
      try {
        const t = this.#opts.tls;
        tls = TlsFlow.server(this.#owner, id, this.#tls, t?.SNICallback, t?.keyUpdateBytes, t?.handshakeTimeout);
      } catch (err) {
        this.#owner.engine.abort(id); // no session, no connection: the client sees a reset
        if (this.listenerCount('tlsClientError') > 0) this.emit('tlsClientError', err, null);
        return null;
      }
    }
    const conn = new Connection(this.#owner, id, { connecting: false, tls }, this.#opts);
    if (tls?.handshaking) this.#watchHandshake(conn);
    this.#connections.add(conn);
    conn.once('close', () => {
      this.#connections.delete(conn);
      this.#maybeEmitClose();
    });
    if (this.#opts.noDelay) conn.setNoDelay(true);
    if (this.#opts.keepAlive) conn.setKeepAlive(true, this.#opts.keepAliveInitialDelay ?? 0);
    if (this.#opts.pauseOnConnect) conn.pause();
    if (announce) this.emit('connection', conn);
    return conn;
  }

  /** Handshake failures (tls.handshakeTimeout's too) go to 'tlsClientError' (as in Node), not to the connection's app. */
  #watchHandshake(conn: Connection): void {
    const onError = (err: Error) => {
      if (this.listenerCount('tlsClientError') > 0) this.emit('tlsClientError', err, conn);
    };
    conn.on('error', onError);
    conn.once('secure', () => {
      conn.off('error', onError);
      this.emit('secureConnection', conn);
    });
  }

  #maybeEmitClose(): void {
    if (!this.#closing || this.#closeEmitted || this.#connections.size > 0) return;
    this.#closeEmitted = true;
    process.nextTick(() => this.emit('close'));
  }
}

function checkBacklog(b: unknown): void {
  if (typeof b !== 'number' || !Number.isInteger(b) || b < 1 || b > 65535) {
    throw new ConfigError(`backlog must be an integer in 1..65535 (got ${String(b)})`);
  }
}

function errName(n: number): string {
  return fromErrno(n, 'listen').code;
}
