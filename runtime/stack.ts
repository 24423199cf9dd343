// Stack: one engine (one device queue, one IPv4 address) and the Node-style objects on top of it.
// The engine reports events as a flat array [type, id, err, ...]; they are routed by id to the Server
// or Connection that owns it. Nothing here touches packets.
import { EventEmitter } from 'node:events';
import { Connection, type ConnectionOptions } from './connection.js';
import { ConfigError, StackClosedError, deviceOpenError, fromAddonError } from './errors.js';
import type { FlowEvents, FlowOwner, ListenerEvents } from './internal.js';
import {
  EV_ACCEPTABLE, EV_CLOSED, EV_CONNECTED, EV_LANE_IN, EV_LANE_OUT, EV_READABLE, EV_WRITABLE, loadBinding,
  type Binding, type EngineInstance, type EngineOptions, type EngineStats, type FlowInfo,
} from './native.js';
import { engineOptions, isIPv4, type Tuning } from './options.js';
import { Server, type ServerOptions } from './server.js';
import { Migrator, type MigrateOptions, type MigrationTimings, type MigratorOptions } from './migration/migrator.js';
import { createSecureContext, defaultServername, type TlsConnectOptions } from './tls.js';
import { TlsFlow } from './tls-flow.js';

export interface StackOptions extends Tuning {
  /** "mem:NAME[?faults]" | "xdp:IFACE[@queue]" | "dpdk:ARGS" */
  device: string;
  /** The stack's own address with prefix, e.g. "10.77.1.10/24". */
  address: string;
  gateway?: string;
  /** A second local address shared with other hosts behind the L4 balancer (the testbed's VIP). */
  vip?: string;
  mac?: string;
  /** Test hook: use this binding instead of the built addon. */
  binding?: Binding;
}

export interface ConnectOptions extends ConnectionOptions {
  port: number;
  host: string;
  localPort?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  /** TLS over the connection (as tls.connect): 'secureConnect' after the handshake, 'data' is plaintext. */
  tls?: TlsConnectOptions;
}

export interface CloseOptions {
  /** Let flows finish sending (FIN after queued data) before the engine goes; false aborts them (RST). */
  graceful?: boolean;
  /** Upper bound for the graceful part. */
  timeoutMs?: number;
}

const MAX_ORPHAN_CLOSES = 4096;

export class Stack extends EventEmitter implements FlowOwner {
  readonly device: string;
  readonly address: string;
  readonly prefixLength: number;
  readonly gateway: string | undefined;
  readonly options: Readonly<EngineOptions>;
  #engine: EngineInstance | null;
  #flows = new Map<number, FlowEvents>();
  #listeners = new Map<number, ListenerEvents>();
  #connections = new Set<Connection>();
  #servers = new Set<Server>();
  // Closed edges that arrived for flows not yet accepted: replayed when the flow is registered.
  #orphanCloses = new Map<number, number>();
  #closed = false;
  #closing: Promise<void> | null = null;
  #migrator: Migrator | null = null;

  private constructor(opts: EngineOptions, binding: Binding) {
    super();
    this.options = Object.freeze({ ...opts });
    this.device = opts.device;
    this.address = opts.address;
    this.prefixLength = opts.prefixLength;
    this.gateway = opts.gateway;
    try {
      this.#engine = new binding.Engine(opts, (events) => this.#onEvents(events));
    } catch (err) {
      throw deviceOpenError(err, opts.device);
    }
  }

  /** Validates options, opens the device and starts the engine thread. */
  static async open(opts: StackOptions): Promise<Stack> {
    const { binding, ...rest } = opts ?? ({} as StackOptions);
    const eo = engineOptions(rest);
    const b = binding ?? loadBinding();
    return new Stack(eo, b);
  }

  get engine(): EngineInstance {
    if (!this.#engine) throw new StackClosedError();
    return this.#engine;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The device's MAC address as the engine uses it. */
  mac(): string {
    return this.engine.mac();
  }

  assertOpen(): void {
    if (this.#closed || this.#closing) throw new StackClosedError();
  }

  createServer(onConnection?: (conn: Connection) => void): Server;
  createServer(opts?: ServerOptions, onConnection?: (conn: Connection) => void): Server;
  createServer(a?: ServerOptions | ((conn: Connection) => void), b?: (conn: Connection) => void): Server {
    this.assertOpen();
    const opts = typeof a === 'function' ? {} : a ?? {};
    const cb = typeof a === 'function' ? a : b;
    const server = new Server(this, opts, cb);
    this.#servers.add(server);
    server.once('close', () => this.#servers.delete(server));
    return server;
  }

  connect(port: number, host: string, cb?: () => void): Connection;
  connect(opts: ConnectOptions, cb?: () => void): Connection;
  connect(a: number | ConnectOptions, b?: string | (() => void), c?: () => void): Connection {
    this.assertOpen();
    const opts: ConnectOptions = typeof a === 'number' ? { port: a, host: b as string } : a;
    const cb = typeof a === 'number' ? c : (b as (() => void) | undefined);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
      throw new ConfigError(`port must be an integer in 1..65535 (got ${String(opts.port)})`);
    }
    if (!isIPv4(opts.host)) throw new ConfigError(`host must be an IPv4 address (got ${String(opts.host)})`);
    const localPort = opts.localPort ?? 0;
    if (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535) {
      throw new ConfigError(`localPort must be an integer in 0..65535 (got ${String(localPort)})`);
    }
    let id: number;
    try {
      id = this.engine.connect(opts.host, opts.port, localPort);
    } catch (err) {
      throw fromAddonError(err, 'connect');
    }
    if (id < 0) throw fromAddonError({ code: undefined, errno: id, message: `connect to ${opts.host}:${opts.port}` }, 'connect');
    let tls: TlsFlow | undefined;
    if (opts.tls) {
      try {
        const ctx = opts.tls.secureContext ?? createSecureContext(opts.tls, 'client');
        tls = TlsFlow.client(this, id, ctx, defaultServername(opts.host, opts.tls.servername), opts.tls.handshakeTimeout);
      } catch (err) {
        this.engine.abort(id);
        throw err;
      }
    }
    const conn = new Connection(this, id, { connecting: true, remoteAddress: opts.host, remotePort: opts.port, tls }, opts);
    if (opts.noDelay) conn.setNoDelay(true);
    if (opts.keepAlive) conn.setKeepAlive(true, opts.keepAliveInitialDelay ?? 0);
    if (cb) conn.once(tls ? 'secureConnect' : 'connect', cb);
    return conn;
  }

  #track(conn: Connection): void {
    this.#connections.add(conn);
    conn.once('close', () => this.#connections.delete(conn));
  }

  stats(): EngineStats {
    return this.engine.stats();
  }

  // ---- live migration ------------------------------------------------------------------------

  /** Joins a cluster of runtimes: listens for peers' migration channels on this stack's address. */
  enableMigration(opts: MigratorOptions): Migrator {
    this.assertOpen();
    if (this.#migrator) throw new ConfigError('migration is already enabled on this stack');
    const m = new Migrator(this, opts);
    m.start();
    this.#migrator = m;
    return m;
  }

  get migrator(): Migrator | null {
    return this.#migrator;
  }

  /** Moves a connection to a peer runtime; resolves with per-phase timings once the peer owns it. */
  migrate(conn: Connection, peer: string, opts?: MigrateOptions): Promise<MigrationTimings> {
    if (!this.#migrator) return Promise.reject(new ConfigError('migration is not enabled on this stack (enableMigration)'));
    return this.#migrator.migrate(conn, peer, opts);
  }

  /** @internal The server that takes migrated connections for a local port, if any. */
  migrationServer(port: number): Server | undefined {
    for (const s of this.#servers) if (s.acceptsMigrated(port)) return s;
    return undefined;
  }

  /** Open connections of this stack (accepted, connected and adopted). */
  connections(): Connection[] {
    return [...this.#connections];
  }

  /** Every flow the engine holds, including orphans in TIME_WAIT and flows not yet accepted. */
  flows(): FlowInfo[] {
    return this.engine.flows();
  }

  // ---- FlowOwner ----------------------------------------------------------------------------

  registerFlow(id: number, obj: FlowEvents): void {
    this.#flows.set(id, obj);
    if (obj instanceof Connection) this.#track(obj);
    const err = this.#orphanCloses.get(id);
    if (err !== undefined) {
      this.#orphanCloses.delete(id);
      process.nextTick(() => obj.onClosed(err));
    }
  }

  unregisterFlow(id: number): void {
    this.#flows.delete(id);
  }

  registerListener(id: number, obj: ListenerEvents): void {
    this.#listeners.set(id, obj);
  }

  unregisterListener(id: number): void {
    this.#listeners.delete(id);
  }

  // ---- events ---------------------------------------------------------------------------------

  #onEvents(events: number[]): void {
    if (this.#closed) return;
    let thrown: unknown;
    let threw = false;
    for (let i = 0; i + 2 < events.length; i += 3) {
      const type = events[i]!;
      const id = events[i + 1]!;
      const err = events[i + 2]!;
      try {
        this.#dispatch(type, id, err);
      } catch (e) {
        // A user handler threw: finish the batch (later events would be lost otherwise), then rethrow.
        if (!threw) {
          threw = true;
          thrown = e;
        }
      }
    }
    if (threw) process.nextTick(() => {
      throw thrown;
    });
  }

  #dispatch(type: number, id: number, err: number): void {
    if (type === EV_ACCEPTABLE) {
      this.#listeners.get(id)?.onAcceptable();
      return;
    }
    if (type === EV_LANE_OUT || type === EV_LANE_IN) {
      this.#migrator?.onLaneEvent(type === EV_LANE_OUT ? 'out' : 'in', id, err);
      return;
    }
    const flow = this.#flows.get(id);
    if (!flow) {
      if (type === EV_CLOSED) {
        if (this.#orphanCloses.size >= MAX_ORPHAN_CLOSES) {
          const first = this.#orphanCloses.keys().next().value;
          if (first !== undefined) this.#orphanCloses.delete(first);
        }
        this.#orphanCloses.set(id, err);
      }
      return;
    }
    switch (type) {
      case EV_CONNECTED: flow.onConnected(); break;
      case EV_READABLE: flow.onReadable(); break;
      case EV_WRITABLE: flow.onWritable(); break;
      case EV_CLOSED: flow.onClosed(err); break;
      default: break; // newer engine, event this runtime does not know
    }
  }

  // ---- shutdown -------------------------------------------------------------------------------

  /**
   * Closes servers, ends or aborts connections, waits (bounded) for queued data and FINs to be sent,
   * then stops the engine thread and closes the device (which detaches XDP).
   */
  close(opts: CloseOptions = {}): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = this.#doClose(opts.graceful ?? true, opts.timeoutMs ?? 2000);
    return this.#closing;
  }

  async #doClose(graceful: boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + Math.max(0, timeoutMs);
    this.#migrator?.close();
    for (const s of [...this.#servers]) if (s.listening) s.close();
    const conns = [...this.#connections];
    if (graceful) {
      for (const c of conns) if (!c.destroyed && !c.writableEnded) c.end();
      await waitUntil(() => conns.every((c) => c.destroyed || c.writableFinished), deadline);
    }
    for (const c of conns) if (!c.destroyed) c.destroy(); // close if finished, RST otherwise
    if (graceful && this.#engine) {
      const engine = this.#engine;
      await waitUntil(() => {
        try {
          return engine.flows().every((f) => f.unsentBytes === 0 && f.unackedBytes === 0);
        } catch {
          return true;
        }
      }, deadline);
    }
    for (const s of this.#servers) s.closeAllConnections();
    this.#closed = true;
    const engine = this.#engine;
    this.#engine = null;
    this.#flows.clear();
    this.#listeners.clear();
    this.#orphanCloses.clear();
    try {
      engine?.destroy();
    } catch (err) {
      this.emit('error', fromAddonError(err, 'destroy'));
    }
    this.emit('close');
  }
}

async function waitUntil(pred: () => boolean, deadline: number): Promise<void> {
  while (!pred() && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
}
