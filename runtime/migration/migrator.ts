// Live migration of connections between runtimes (DESIGN "Migration protocol").
//
// Source:  hold (app captures its state, stream stops pulling) -> writes drained into the engine ->
//          freeze -> snapshot (tcp + app layers) -> offer over the sealed channel -> target adopts ->
//          steer (the balancer's redirect table) -> forward what was held meanwhile -> release.
//          Any failure before 'adopted' unfreezes the flow and the connection carries on here: exactly one
//          side owns a flow at any time.
// Target:  validate + adopt (engine) -> Server 'migrated' (conn, userData) -> reply 'adopted'; later
//          'forward' messages feed held segments into TCP input.
// The channel runs over connections of the stacks themselves, one per peer, opened on first use.
import { CapybaraError } from '../errors.js';
import { AppLayer, PluggedLayer } from '../../stack/layer.js';
import { MigrationChannel } from './channel.js';
import { MigrationDedupe } from './dedupe.js';
import type { FlowKey, ForwardedSegment, MigrationMessage, OfferMessage } from './messages.js';
import { MAX_FORWARD_SEGMENTS } from './messages.js';
import type { Connection } from '../connection.js';
import type { Server } from '../server.js';
import type { EngineInstance } from '../native.js';

export class MigrationError extends CapybaraError {}

export interface MigrationPeer {
  name: string;
  address: string;
  port?: number;
}

export interface MigratorOptions {
  /** This runtime's name as peers know it. */
  name: string;
  /** Shared cluster key (32..64 bytes): peers that cannot prove it are refused. */
  clusterKey: Uint8Array;
  keyEpoch?: number;
  /** Port of the migration channel on every runtime's stack address (default 7400). */
  port?: number;
  peers: MigrationPeer[];
  /** Re-steers the network after the target adopted (e.g. the L4 balancer's redirect table). */
  steer?: (flow: FlowKey, peer: string) => Promise<void>;
  /** How long the source waits for the target's answer before it takes the flow back (default 2 s). */
  timeoutMs?: number;
}

/** Per-phase times of one migration, microseconds, measured on the source. */
export interface MigrationTimings {
  migrationId: number;
  peer: string;
  captureUs: number;  // app stopped, unread bytes taken, writes drained into the engine (the client's pause starts here)
  freezeUs: number;
  snapshotUs: number;
  shipUs: number;     // offer sent -> 'adopted' received (includes the target's adopt)
  steerUs: number;
  releaseUs: number;  // forward what was held (the source forgets the flow RELEASE_GRACE_MS later)
  blackoutUs: number; // capture -> forwarded: the time the connection could not move bytes
  totalUs: number;
  snapshotBytes: number;
  forwardedSegments: number;
}

export interface MigrateOptions {
  /** State of the application; without it the app's migrationHooks.capture() is asked (or nothing). */
  userData?: Uint8Array;
  timeoutMs?: number;
}

/** The runtime side a migrator needs from its Stack (kept narrow: no import cycle). */
export interface MigrationHost {
  readonly engine: EngineInstance;
  readonly address: string;
  createServer(onConnection: (conn: Connection) => void): Server;
  connect(port: number, host: string): Connection;
  migrationServer(port: number): Server | undefined;
}

interface Pending {
  channel: MigrationChannel;
  resolve: () => void;
  reject: (err: MigrationError) => void;
}

interface AdoptedFlow {
  flowId: number;
}

const DEFAULT_PORT = 7400;
const MAX_ADOPTED_TRACKED = 4096;
const RELEASE_GRACE_MS = 50;
const PING_TIMEOUT_MS = 300;
const TCP_SNAPSHOT_MAX = 64 * 1024 * 1024;

function flowTuple(f: FlowKey): string {
  return `${f.localAddress}:${f.localPort}-${f.remoteAddress}:${f.remotePort}`;
}

function us(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1000;
}

/**
 * The app record: [u32 migrations so far][u32 unread length][unread bytes][userData]. Unread bytes are
 * what the source's stream had taken from the engine but the app had not read yet.
 */
function encodeApp(migrations: number, unread: Uint8Array, userData: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + unread.length + userData.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, migrations >>> 0, true);
  v.setUint32(4, unread.length, true);
  out.set(unread, 8);
  out.set(userData, 8 + unread.length);
  return out;
}

function decodeApp(bytes: Uint8Array): { migrations: number; unread: Uint8Array; userData: Uint8Array } {
  if (bytes.length < 8) throw new MigrationError('ERR_MIGRATION_SNAPSHOT', 'app record shorter than its header');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const n = v.getUint32(4, true);
  if (n > bytes.length - 8) throw new MigrationError('ERR_MIGRATION_SNAPSHOT', 'app record: unread length beyond the record');
  return { migrations: v.getUint32(0, true), unread: bytes.slice(8, 8 + n), userData: bytes.slice(8 + n) };
}

interface SourceConn {
  flowId: number;
  userData: Uint8Array;
}

export class Migrator {
  readonly name: string;
  // Rises with every start (deciseconds since 2024): peers take offers and answers of an earlier run of this
  // runtime as stale, and ids may start again at 1.
  readonly epoch = Math.floor((Date.now() - Date.UTC(2024, 0, 1)) / 100) >>> 0;
  readonly #host: MigrationHost;
  readonly #opts: MigratorOptions;
  readonly #port: number;
  readonly #peers = new Map<string, MigrationPeer>();
  readonly #channels = new Map<string, Promise<MigrationChannel>>();
  readonly #pending = new Map<number, Pending>();
  readonly #adopted = new Map<string, AdoptedFlow>(); // `${peer}/${epoch}/${id}` -> flow on this host
  readonly #dedupe = new MigrationDedupe();
  readonly #layers;
  #server: Server | null = null;
  #nextId = 1;
  #closed = false;
  readonly stats = { out: 0, in: 0, failed: 0, rejectedIn: 0, forwardedIn: 0, channelsRefused: 0 };
  readonly #pongs = new Map<number, () => void>();
  readonly #graceful = new Map<string, () => void>(); // flows given away, still held here for stragglers
  #nonce = 1;

  constructor(host: MigrationHost, opts: MigratorOptions) {
    this.#host = host;
    this.#opts = opts;
    this.name = opts.name;
    this.#port = opts.port ?? DEFAULT_PORT;
    for (const p of opts.peers) if (p.name !== opts.name) this.#peers.set(p.name, p);
    const engine = () => this.#host.engine;
    const tcp = new PluggedLayer<SourceConn, number>({
      kind: 'tcp',
      version: 1,
      maxBytes: TCP_SNAPSHOT_MAX,
      serialize: (c) => {
        const r = engine().snapshot(c.flowId);
        if (typeof r === 'number') throw new MigrationError('ERR_MIGRATION_SNAPSHOT', `engine snapshot failed (errno ${r})`);
        return r;
      },
      deserialize: (bytes) => {
        const id = engine().adopt(bytes);
        if (id < 0) throw new MigrationError('ERR_MIGRATION_ADOPT', `engine refused the TCP snapshot (errno ${id})`);
        return id;
      },
      discard: (id) => {
        engine().abort(id);
      },
    });
    this.#layers = new AppLayer<SourceConn, void, number>({ lower: tcp, maxUserData: 1024 * 1024 });
  }

  get port(): number {
    return this.#port;
  }

  peers(): string[] {
    return [...this.#peers.keys()];
  }

  /** Listens for peers' channels on the stack's own address. */
  start(): void {
    this.#server = this.#host.createServer((conn) => this.#accept(conn));
    this.#server.listen(this.#port);
  }

  close(): void {
    this.#closed = true;
    this.#server?.close();
    for (const p of this.#pending.values()) p.reject(new MigrationError('ERR_MIGRATION_CLOSED', 'runtime closing'));
    this.#pending.clear();
    for (const ch of this.#channels.values()) void ch.then((c) => c.close(), () => {});
    this.#channels.clear();
  }

  #accept(conn: Connection): void {
    conn.setNoDelay(true);
    const ch = new MigrationChannel(conn, { name: this.name, role: 'responder', key: this.#opts.clusterKey, keyEpoch: this.#opts.keyEpoch ?? 0 });
    ch.on('message', (m) => this.#onMessage(ch, m));
    ch.on('close', () => {
      conn.destroy();
      this.#failPending(ch);
    });
    void ch.ready.then((peer) => {
      if (!this.#channels.has(peer)) this.#channels.set(peer, Promise.resolve(ch));
      ch.on('close', () => {
        void this.#channels.get(peer)?.then((c) => { if (c === ch) this.#channels.delete(peer); }, () => {});
      });
    }, () => {
      this.stats.channelsRefused++;
      conn.destroy();
    });
  }

  /** Migrations waiting on a channel that closed will never be answered: fail them now (the flow unfreezes). */
  #failPending(ch: MigrationChannel): void {
    for (const [id, p] of this.#pending) {
      if (p.channel !== ch) continue;
      this.#pending.delete(id);
      p.reject(new MigrationError('ERR_MIGRATION_PEER_LOST', `the channel to ${ch.peer ?? 'the peer'} closed before it answered`));
    }
  }

  /** Resolves when the peer answers a ping within ms; a dead peer is found before the flow is frozen. */
  #alive(ch: MigrationChannel, peer: string, ms: number): Promise<void> {
    const nonce = this.#nonce++;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pongs.delete(nonce);
        reject(new MigrationError('ERR_MIGRATION_PEER_LOST', `${peer} did not answer a ping within ${ms} ms`));
      }, ms);
      this.#pongs.set(nonce, () => {
        clearTimeout(timer);
        resolve();
      });
      ch.send({ type: 'ping', nonce });
    });
  }

  #channel(peer: string): Promise<MigrationChannel> {
    const have = this.#channels.get(peer);
    if (have) return have;
    const p = this.#peers.get(peer);
    if (!p) return Promise.reject(new MigrationError('ERR_MIGRATION_NO_PEER', `no peer called "${peer}" (known: ${this.peers().join(', ') || 'none'})`));
    const opening = (async () => {
      const conn = this.#host.connect(p.port ?? DEFAULT_PORT, p.address);
      conn.setNoDelay(true);
      const ch = new MigrationChannel(conn, {
        name: this.name, role: 'initiator', key: this.#opts.clusterKey, keyEpoch: this.#opts.keyEpoch ?? 0, expectedPeer: peer,
      });
      ch.on('message', (m) => this.#onMessage(ch, m));
      ch.on('close', () => {
        conn.destroy();
        this.#failPending(ch);
        void this.#channels.get(peer)?.then((c) => { if (c === ch) this.#channels.delete(peer); }, () => {});
      });
      conn.on('error', () => {});
      await ch.ready;
      return ch;
    })();
    this.#channels.set(peer, opening);
    opening.catch(() => {
      if (this.#channels.get(peer) === opening) this.#channels.delete(peer);
    });
    return opening;
  }

  /** Moves conn to peer; resolves with per-phase timings once the target owns it. */
  async migrate(conn: Connection, peer: string, opts: MigrateOptions = {}): Promise<MigrationTimings> {
    if (this.#closed) throw new MigrationError('ERR_MIGRATION_CLOSED', 'migrator closed');
    if (conn.destroyed || conn.connecting) throw new MigrationError('ERR_MIGRATION_STATE', 'connection is not open');
    if (conn.migrating) throw new MigrationError('ERR_MIGRATION_STATE', 'connection is already being migrated');
    const t0 = process.hrtime.bigint();
    const ch = await this.#channel(peer).catch((err: unknown) => {
      throw err instanceof MigrationError ? err : new MigrationError('ERR_MIGRATION_NO_PEER', `peer ${peer} unreachable: ${(err as Error).message}`, { cause: err });
    });
    const engine = this.#host.engine;
    const migrationId = this.#nextId++;
    const flow: FlowKey = {
      localAddress: conn.localAddress, localPort: conn.localPort ?? 0,
      remoteAddress: conn.remoteAddress ?? '0.0.0.0', remotePort: conn.remotePort ?? 0,
    };

    // 0. a ping first, so a dead or wedged peer is found while the connection still runs normally.
    try {
      await this.#alive(ch, peer, PING_TIMEOUT_MS);
    } catch (err) {
      this.stats.failed++;
      ch.close();
      throw err;
    }

    // 1. capture: the app stops, the stream stops pulling, everything written reaches the engine. From here
    // on the client sees a pause, so nothing here waits on the network.
    const tCapture = process.hrtime.bigint();
    const unread = conn._holdForMigration();
    let userData: Uint8Array;
    let frozen = false;
    const giveBack = () => {
      if (frozen) engine.unfreeze(conn.id);
      conn.migrationHooks?.abort();
      conn._resumeAfterMigration(unread);
    };
    try {
      userData = opts.userData ?? (conn.migrationHooks ? await conn.migrationHooks.capture() : new Uint8Array(0));
      const deadline = Date.now() + (opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000);
      while (!conn._writesFlushed) {
        if (Date.now() > deadline) throw new MigrationError('ERR_MIGRATION_BUSY', 'written data did not drain into the engine in time');
        await new Promise((r) => setImmediate(r));
      }
    } catch (err) {
      giveBack();
      throw err;
    }
    const captureUs = us(tCapture);

    // 2. freeze + snapshot.
    const tFreeze = process.hrtime.bigint();
    const fr = engine.freeze(conn.id);
    if (fr < 0) {
      giveBack();
      throw new MigrationError('ERR_MIGRATION_STATE', `flow ${conn.id} cannot be frozen (errno ${fr})`);
    }
    frozen = true;
    const freezeUs = us(tFreeze);
    const tSnap = process.hrtime.bigint();
    let snapshot: Uint8Array;
    try {
      snapshot = this.#layers.serialize({ flowId: conn.id, userData: encodeApp(conn.migrations, unread, userData) }, undefined);
    } catch (err) {
      giveBack();
      throw err instanceof CapybaraError ? err : new MigrationError('ERR_MIGRATION_SNAPSHOT', String(err), { cause: err });
    }
    const snapshotUs = us(tSnap);
    const snapshotBytes = snapshot.length;

    // 3. ship; the target answers 'adopted' or 'rejected'.
    const tShip = process.hrtime.bigint();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#pending.delete(migrationId);
          reject(new MigrationError('ERR_MIGRATION_TIMEOUT', `${peer} did not answer within ${opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000} ms`));
        }, opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000);
        this.#pending.set(migrationId, {
          channel: ch,
          resolve: () => { clearTimeout(timer); resolve(); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        });
        ch.send({ type: 'offer', migrationId, epoch: this.epoch, flow, snapshot } satisfies OfferMessage);
      });
    } catch (err) {
      this.stats.failed++;
      giveBack();
      throw err;
    } finally {
      snapshot.fill(0);
    }
    const shipUs = us(tShip);

    // 4. steer, then hand over what arrived here meanwhile, then forget the flow.
    const tSteer = process.hrtime.bigint();
    if (this.#opts.steer) {
      try {
        await this.#opts.steer(flow, peer);
      } catch {
        // The target owns the flow now; until the balancer follows, packets arriving here are held and
        // forwarded below, and TCP's retransmissions cover the rest.
      }
    }
    const steerUs = us(tSteer);
    const tRel = process.hrtime.bigint();
    const forwardedSegments = this.#forwardHeld(ch, conn.id, migrationId);
    const releaseUs = us(tRel);
    const blackoutUs = us(tCapture);
    // Packets already past the balancer keep arriving here for a moment; a released flow would answer
    // them with RST. Keep it frozen (holding) a little longer, forward the stragglers, then forget it.
    const tuple = flowTuple(flow);
    let timer: NodeJS.Timeout | undefined;
    let straggler: NodeJS.Timeout | undefined;
    const finish = () => {
      if (timer) clearTimeout(timer);
      if (straggler) clearInterval(straggler);
      this.#graceful.delete(tuple);
      this.#forwardHeld(ch, conn.id, migrationId);
      engine.release(conn.id);
      conn._detachMigrated(peer);
      if (!ch.closed) ch.send({ type: 'release', migrationId, epoch: this.epoch });
    };
    if (this.#opts.steer) {
      this.#graceful.set(tuple, finish); // the flow may come straight back: then the grace ends early
      timer = setTimeout(finish, RELEASE_GRACE_MS);
      timer.unref();
      // A straggler must not wait for the end of the grace: pass on what arrives as it arrives.
      straggler = setInterval(() => this.#forwardHeld(ch, conn.id, migrationId), 1);
      straggler.unref();
    } else {
      finish();
    }
    this.stats.out++;
    return {
      migrationId, peer, captureUs, freezeUs, snapshotUs, shipUs, steerUs, releaseUs,
      blackoutUs, totalUs: us(t0), snapshotBytes, forwardedSegments,
    };
  }

  #forwardHeld(ch: MigrationChannel, flowId: number, migrationId: number): number {
    const held = this.#host.engine.drainHeld(flowId);
    if (typeof held === 'number' || held.length === 0) return 0;
    if (ch.closed) return 0; // the peer is gone: the client's retransmissions will reach it after steering
    for (let i = 0; i < held.length; i += MAX_FORWARD_SEGMENTS) {
      const segments: ForwardedSegment[] = held.slice(i, i + MAX_FORWARD_SEGMENTS).map(([src, dst, bytes]) => ({ src, dst, bytes }));
      ch.send({ type: 'forward', migrationId, epoch: this.epoch, segments });
    }
    return held.length;
  }

  #onMessage(ch: MigrationChannel, m: MigrationMessage): void {
    switch (m.type) {
      case 'offer': this.#onOffer(ch, m); break;
      case 'adopted':
      case 'rejected': {
        if (m.epoch !== this.epoch) return; // an answer to an earlier run of this runtime
        const p = this.#pending.get(m.migrationId);
        if (!p) return; // late (timed out) or duplicate
        this.#pending.delete(m.migrationId);
        if (m.type === 'adopted') p.resolve();
        else p.reject(new MigrationError('ERR_MIGRATION_REJECTED', `${ch.peer ?? 'peer'} refused the connection: ${m.reason}`));
        break;
      }
      case 'forward': {
        const a = this.#adopted.get(`${ch.peer}/${m.epoch}/${m.migrationId}`);
        if (!a) return;
        for (const seg of m.segments) {
          this.#host.engine.inject(seg.src, seg.dst, seg.bytes);
          this.stats.forwardedIn++;
        }
        break;
      }
      case 'release':
        this.#adopted.delete(`${ch.peer}/${m.epoch}/${m.migrationId}`);
        break;
      case 'ping':
        ch.send({ type: 'pong', nonce: m.nonce });
        break;
      case 'pong': {
        const done = this.#pongs.get(m.nonce);
        this.#pongs.delete(m.nonce);
        done?.();
        break;
      }
      default:
        break;
    }
  }

  #onOffer(ch: MigrationChannel, m: OfferMessage): void {
    const peer = ch.peer ?? '?';
    const verdict = this.#dedupe.observeMessage(m, peer, this.name);
    const key = `${peer}/${m.epoch}/${m.migrationId}`;
    if (verdict === 'duplicate') {
      // The answer may have been lost: answer again, idempotently.
      if (this.#adopted.has(key)) ch.send({ type: 'adopted', migrationId: m.migrationId, epoch: m.epoch });
      return;
    }
    if (verdict === 'stale') return;
    const reject = (reason: string) => {
      this.stats.rejectedIn++;
      ch.send({ type: 'rejected', migrationId: m.migrationId, epoch: m.epoch, reason });
    };
    const server = this.#host.migrationServer(m.flow.localPort);
    if (!server) {
      reject(`no server on port ${m.flow.localPort} takes migrated connections here`);
      return;
    }
    this.#graceful.get(flowTuple(m.flow))?.(); // our own old copy of this flow, still in its grace: drop it
    let state;
    try {
      state = this.#layers.deserialize(m.snapshot, undefined);
    } catch (err) {
      reject((err as Error).message);
      return;
    } finally {
      m.snapshot.fill(0);
    }
    let app;
    try {
      app = decodeApp(state.userData);
    } catch (err) {
      this.#host.engine.abort(state.lower);
      reject((err as Error).message);
      return;
    }
    if (this.#adopted.size >= MAX_ADOPTED_TRACKED) {
      const oldest = this.#adopted.keys().next().value; // its release was lost: forwarding for it is over
      if (oldest !== undefined) this.#adopted.delete(oldest);
    }
    this.#adopted.set(key, { flowId: state.lower });
    ch.send({ type: 'adopted', migrationId: m.migrationId, epoch: m.epoch });
    this.stats.in++;
    server.takeMigrated(state.lower, app.unread, app.userData, app.migrations + 1);
  }
}
