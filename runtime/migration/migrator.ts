// Live migration of connections between runtimes (DESIGN "Migration protocol").
//
// Source:  hold (app captures its state, stream stops pulling) -> writes drained into the engine ->
//          freeze -> snapshot (tcp + app layers) -> offer over the sealed channel -> target adopts and
//          steers (the balancer's redirect table) -> 'adopted' -> forward what was held meanwhile -> release.
//          A refusal, or a target that cannot be reached, unfreezes the flow and the connection carries on
//          here; a late answer is asked for again (the offer is idempotent), never assumed lost: exactly
//          one side owns a flow at any time.
// Target:  validate + adopt (engine) -> steer -> Server 'migrated' (conn, userData) -> reply 'adopted';
//          later 'forward' messages feed held segments into TCP input.
// The channel runs over connections of the stacks themselves, one per peer, opened on first use.
import { CapybaraError } from '../errors.js';
import { AppLayer, PluggedLayer } from '../../stack/layer.js';
import { snapshotKinds, tlsLayer } from '../../stack/tls.js';
import { MigrationChannel } from './channel.js';
import { ChannelError, MigrationError, layerFailure } from './errors.js';
import { MigrationDedupe } from './dedupe.js';
import type { FlowKey, ForwardedSegment, ForwardMessage, MigrationMessage, OfferMessage } from './messages.js';
import { MAX_FORWARD_SEGMENTS } from './messages.js';
import { claimToken, type ClaimResult } from './claim.js';
import { LaneError, MigrationLane, type LaneSteering } from './lane.js';
import { LaneRecord } from './lane-record.js';
import { MigrationTrace } from './trace.js';
import { decodeApp, encodeApp } from './app-record.js';
import { warmUpMigrationPath } from './warmup.js';
import type { Connection } from '../connection.js';
import type { Server } from '../server.js';
import type { EngineInstance } from '../native.js';

export { MigrationError };

export type { ClaimResult };

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
  /** Re-steers the network to the runtime that adopted a flow (the L4 balancer's redirect table); called by the target. */
  steer?: (flow: FlowKey, peer: string) => Promise<void>;
  /**
   * Which runtime the network delivers a flow's client packets to now (the balancer's redirect entry), null
   * when it has no entry. Asked by a source whose target never answered: the runtime the balancer points
   * at owns the flow (only a target that adopted steers), so the source takes its frozen copy back only
   * when that is not the target. Without it a silent target is assumed not to have adopted.
   */
  owner?: (flow: FlowKey) => Promise<string | null>;
  /**
   * The balancer's arbiter of a migration (native/dev/lbsteer.h cpb_lb_claim): claims (flow, token) for
   * `runtime` unless another runtime claimed it first: 'won' (now or before), 'lost', or 'none' when there
   * is no arbiter. The target claims before it adopts, a source before it takes a flow back, so exactly one
   * of them owns the flow however late an offer or an answer is. `unclaim` undoes a target's claim when
   * its adoption failed after all.
   */
  claim?: (flow: FlowKey, token: number, runtime: string) => ClaimResult;
  unclaim?: (flow: FlowKey, token: number) => void;
  /** How long the source waits for the target's answer before asking again (default 2 s; see OFFER_ASKS). */
  timeoutMs?: number;
  /**
   * Fault injection for tests of the failure handling: a target that drops its answers adopts and steers
   * but never says so, as if every 'adopted' were lost on the way; one that drops offers never sees them;
   * one that delays offers handles each that long after it arrived (a wedged runtime waking up).
   */
  faults?: { dropAnswers?: boolean; dropOffers?: boolean; delayOffersMs?: number };
  /** How the engines' migration lane (native flows) reaches the balancer; without it the lane does not steer. */
  lane?: LaneSteering;
  /**
   * Connections served in JS move through the engines' lane too when the peer's lane keys are installed:
   * no JavaScript runs between the freeze and the target's answer. Default false, the channel (DESIGN's
   * protocol): the soak with eight concurrent migrators under faults still loses a connection now and
   * then on the lane (see the README). Fault injection above keeps a runtime on the channel either way.
   */
  jsLane?: boolean;
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
  /** 'lane' for a native flow moved engine to engine (freezeUs then covers freeze + snapshot + send). */
  path?: 'channel' | 'lane';
  /** When the flow stopped here and when the handoff was done (the answer, or the forward after it): µs on
   *  the monotonic clock, which every process of a machine shares (a client can match its pauses to them). */
  frozenAtUs?: number;
  doneAtUs?: number;
  /** Lane: the offer reached the target this long after the call (one machine: the clocks agree). */
  offerArrivedUs?: number;
  /** Lane: sending the offer (freezeUs then is freeze + snapshot + seal, under the engine lock). */
  sendUs?: number;
}

export interface MigrateOptions {
  /** State of the application; without it the app's migrationHooks.capture() is asked (or nothing). */
  userData?: Uint8Array;
  timeoutMs?: number;
  /** This one over the engines' lane or the channel, whatever MigratorOptions.jsLane says. */
  via?: 'lane' | 'channel';
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
  trace: MigrationTrace | null;
  resolve: () => void;
  reject: (err: MigrationError) => void;
  /** The channel closed before the answer: ask again on a new one (the target may own the flow already). */
  lost?: () => void;
}

interface OfferMark {
  end: number;
  retransmits: number;
}

interface AdoptedFlow {
  flowId: number;
  trace: MigrationTrace | null;
}

const DEFAULT_PORT = 7400;
/** How long open channels accept a peer's frames under the previous cluster key after a rotation. */
export const DEFAULT_KEY_GRACE_MS = 300_000;
const MAX_ADOPTED_TRACKED = 4096;
// Times the source asks again (re-sends the offer, which is idempotent) when the answer is late, before
// it takes its frozen copy back. Taking it back while the target may have adopted would leave two owners,
// so a late answer is asked for, not assumed lost: only a target that cannot be reached at all, or stays
// silent for (OFFER_ASKS + 1) timeouts, leaves the flow at the source.
const OFFER_ASKS = 4;
// Event-loop turns an offer for a flow we are still giving away waits for that to finish (see #outgoing).
const MAX_OFFER_DEFERRALS = 1000;
const RELEASE_GRACE_MS = 50;
// The ping comes before the capture, so waiting longer costs the client nothing; on a loaded 2-core
// machine a live peer's pong took over 300 ms now and then (load average 8) and failed the migration.
const PING_TIMEOUT_MS = 1000;
// The channel's peer is another runtime a link away: a lost segment of an offer (a bulk flow's can be
// hundreds of KB) should cost tens of milliseconds of blackout, not the 200 ms RTO floor meant for the
// Internet. Above the peer's delayed-ACK timer (40 ms), so a lone last segment is not resent spuriously.
const CHANNEL_RTO_MIN_US = 50_000;
// Connecting and authenticating a channel: a handful of round trips, even on a loaded machine.
const CHANNEL_OPEN_TIMEOUT_MS = 2000;
const TCP_SNAPSHOT_MAX = 64 * 1024 * 1024;
const MAX_UNWRITTEN = 256 * 1024; // more than this written and not yet in the engine: wait for it to drain

function flowTuple(f: FlowKey): string {
  return `${f.localAddress}:${f.localPort}-${f.remoteAddress}:${f.remotePort}`;
}

function us(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1000;
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
  readonly #refused = new Set<string>(); // offers refused here, so an offer asked again is refused again
  readonly #dedupe = new MigrationDedupe();
  readonly #layers;
  readonly #tlsLayers; // tcp, tls, app: connections with TLS (their record holds keys)
  #server: Server | null = null;
  #nextId = 1;
  readonly #lane: MigrationLane;
  readonly #laneRecord: LaneRecord;
  #closed = false;
  // unanswered: migrations whose answer never came but the balancer showed the target owning the flow
  // lateOffers: offers refused because the source had claimed the flow back (it gave up waiting)
  // laneLost: connections adopted through the lane whose record JS could not restore (reset: see #takeLaneFlow)
  readonly stats = { out: 0, in: 0, failed: 0, rejectedIn: 0, forwardedIn: 0, channelsRefused: 0, unanswered: 0, lateOffers: 0, laneLost: 0 };
  readonly #pongs = new Map<number, () => void>();
  #lastTrace: MigrationTrace | null = null; // the migration waiting for a pong (tracing only)
  readonly #graceful = new Map<string, () => void>(); // flows given away, still held here for stragglers
  readonly #transports = new WeakMap<MigrationChannel, Connection>(); // our channels' own TCP connections
  // Flows offered from here whose migrate() has not reached its grace yet: an offer of the same flow coming
  // back (a fast bounce, e.g. L7 DSR) can be read in the same turn as our 'adopted' answer, before migrate()
  // resumes and registers its grace; adopting then would meet our own frozen copy (-EEXIST).
  readonly #outgoing = new Set<string>();
  #nonce = 1;
  #warmup: { stop(): void } | null = null; // JIT warm-up of the offer path (warmup.ts)

  constructor(host: MigrationHost, opts: MigratorOptions) {
    this.#host = host;
    this.#lane = new MigrationLane(() => this.#host.engine, opts.name, opts.lane);
    this.#laneRecord = new LaneRecord(() => this.#host.engine);
    this.#opts = { ...opts, clusterKey: Buffer.from(opts.clusterKey) }; // our copy: rotateKey replaces and wipes it
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
    const tls = tlsLayer<SourceConn>(tcp, engine, layerFailure);
    this.#tlsLayers = new AppLayer<SourceConn, void, number>({ lower: tls, maxUserData: 1024 * 1024 });
  }

  get port(): number {
    return this.#port;
  }

  peers(): string[] {
    return [...this.#peers.keys()];
  }

  /** Listens for peers' channels on the stack's own address. */
  start(): void {
    this.#lane.start();
    this.#server = this.#host.createServer((conn) => this.#accept(conn));
    this.#server.listen(this.#port);
    this.#warmup = warmUpMigrationPath(200, 5);
  }

  close(): void {
    this.#closed = true;
    this.#lane.close();
    this.#warmup?.stop();
    this.#server?.close();
    for (const p of this.#pending.values()) p.reject(new MigrationError('ERR_MIGRATION_CLOSED', 'runtime closing'));
    this.#pending.clear();
    for (const ch of this.#channels.values()) void ch.then((c) => c.close(), () => {});
    this.#channels.clear();
  }

  get keyEpoch(): number {
    return this.#opts.keyEpoch ?? 0;
  }

  /**
   * Key rotation (`capybara ctl rotate-key`; the operator gives the new key to every runtime of the
   * cluster). New channels use the new key at once. Every open channel switches in-band (KEY_UPDATE under
   * the new epoch) and keeps accepting the peer's frames under the previous key until the peer has rotated
   * too; a peer that has not followed within graceMs is disconnected, so the old key stops being accepted.
   * A channel whose peer rotated first waits (keyNeeded) for this call, then continues. Until every runtime
   * has rotated, new handshakes between rotated and unrotated ones are refused (the channel HELLO proves
   * one key) and a migration toward an unrotated peer fails safe: the flow stays where it is.
   */
  async rotateKey(key: Uint8Array, keyEpoch?: number, graceMs = DEFAULT_KEY_GRACE_MS): Promise<{ keyEpoch: number; channels: number }> {
    const current = this.#opts.keyEpoch ?? 0;
    const epoch = keyEpoch ?? current + 1;
    if (!(key instanceof Uint8Array) || key.length < 32 || key.length > 64) throw new MigrationError('ERR_MIGRATION_KEY', 'the cluster key must be 32..64 bytes');
    if (!Number.isInteger(epoch) || epoch <= current || epoch > 0xffffffff) throw new MigrationError('ERR_MIGRATION_KEY', `key epoch ${epoch} must be after the current ${current}`);
    if (!Number.isInteger(graceMs) || graceMs < 0) throw new MigrationError('ERR_MIGRATION_KEY', 'graceMs must be a whole number of milliseconds');
    const old = this.#opts.clusterKey;
    this.#opts.clusterKey = Buffer.from(key);
    this.#opts.keyEpoch = epoch;
    old.fill(0);
    this.#keyGraceMs = graceMs;
    let channels = 0;
    for (const opening of [...this.#channels.values()]) {
      const ch = await opening.catch(() => null);
      if (!ch || ch.closed || ch.keyEpoch >= epoch) continue;
      channels++;
      this.#rotateChannel(ch, epoch, graceMs);
    }
    return { keyEpoch: epoch, channels };
  }

  #keyGraceMs = DEFAULT_KEY_GRACE_MS;

  #rotateChannel(ch: MigrationChannel, epoch: number, graceMs: number): void {
    const timer = setTimeout(() => ch.destroy(new ChannelError('ERR_CHANNEL_EPOCH', `${ch.peer ?? 'peer'} did not move to key epoch ${epoch} within ${graceMs} ms`)), graceMs);
    timer.unref();
    ch.rotateKey(this.#opts.clusterKey, epoch).then(() => clearTimeout(timer), () => clearTimeout(timer));
  }

  /** The peer sent frames under a newer key epoch: ours already (rotate this channel), or one we wait for. */
  #onKeyNeeded(ch: MigrationChannel, epoch: number): void {
    if (epoch === (this.#opts.keyEpoch ?? 0)) {
      this.#rotateChannel(ch, epoch, this.#keyGraceMs);
      return;
    }
    const timer = setTimeout(() => {
      if (!ch.closed && ch.keyEpoch < epoch) ch.destroy(new ChannelError('ERR_CHANNEL_EPOCH', `no key for epoch ${epoch} after ${this.#keyGraceMs} ms`));
    }, this.#keyGraceMs);
    timer.unref();
    ch.once('close', () => clearTimeout(timer));
  }

  #accept(conn: Connection): void {
    conn.setNoDelay(true);
    conn.setRtoMin(CHANNEL_RTO_MIN_US);
    const ch = new MigrationChannel(conn, { name: this.name, role: 'responder', key: this.#opts.clusterKey, keyEpoch: this.#opts.keyEpoch ?? 0 });
    ch.on('message', (m) => this.#onMessage(ch, m));
    ch.on('keyNeeded', (e) => this.#onKeyNeeded(ch, e));
    ch.on('close', () => {
      conn.destroy();
      this.#failPending(ch);
    });
    void ch.ready.then((peer) => {
      if (conn.remoteAddress) this.#attachLane(ch, peer, conn.remoteAddress);
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
      if (p.lost) {
        p.lost();
        continue;
      }
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
      conn.setRtoMin(CHANNEL_RTO_MIN_US);
      const ch = new MigrationChannel(conn, {
        name: this.name, role: 'initiator', key: this.#opts.clusterKey, keyEpoch: this.#opts.keyEpoch ?? 0, expectedPeer: peer,
      });
      this.#transports.set(ch, conn);
      ch.on('message', (m) => this.#onMessage(ch, m));
      ch.on('keyNeeded', (e) => this.#onKeyNeeded(ch, e));
      ch.on('close', () => {
        conn.destroy();
        this.#failPending(ch);
        void this.#channels.get(peer)?.then((c) => { if (c === ch) this.#channels.delete(peer); }, () => {});
      });
      conn.on('error', () => {});
      // A dead peer's host may drop our SYN without a RST: do not let a migrate() wait out TCP's SYN retries.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new MigrationError('ERR_MIGRATION_NO_PEER', `no channel to ${peer} within ${CHANNEL_OPEN_TIMEOUT_MS} ms`)), CHANNEL_OPEN_TIMEOUT_MS);
      });
      try {
        await Promise.race([ch.ready, late]);
        this.#attachLane(ch, peer, p.address);
      } catch (err) {
        ch.close();
        conn.destroy();
        throw err;
      } finally {
        clearTimeout(timer);
      }
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
    if (conn.handshaking) throw new MigrationError('ERR_MIGRATION_STATE', 'the TLS handshake is still running');
    const t0 = process.hrtime.bigint();
    const trace = MigrationTrace.start({ side: 'source', name: this.name, peer });
    const ch = await this.#channel(peer).catch((err: unknown) => {
      this.stats.failed++;
      throw err instanceof MigrationError ? err : new MigrationError('ERR_MIGRATION_NO_PEER', `peer ${peer} unreachable: ${(err as Error).message}`, { cause: err });
    });
    const engine = this.#host.engine;
    const migrationId = this.#nextId++;
    const flow: FlowKey = {
      localAddress: conn.localAddress, localPort: conn.localPort ?? 0,
      remoteAddress: conn.remoteAddress ?? '0.0.0.0', remotePort: conn.remotePort ?? 0,
    };

    trace?.set('migrationId', migrationId);
    trace?.hop('start', Number(t0 / 1000n));
    // 0. a ping first, so a dead or wedged peer is found while the connection still runs normally.
    try {
      this.#lastTrace = trace;
      trace?.hop('pingSend');
      await this.#alive(ch, peer, PING_TIMEOUT_MS);
      trace?.hop('pongResumed');
    } catch (err) {
      this.stats.failed++;
      ch.close();
      throw err;
    }

    // 1. capture: the app stops, the stream stops pulling, everything written reaches the engine. From here
    // on the client sees a pause, so nothing here waits on the network.
    // Another migrate() of this connection may have started while this one waited for the channel and the
    // pong: only one of them may take it (the other would ship a copy of a flow that is already moving).
    if (conn.migrating || conn.destroyed) {
      throw new MigrationError('ERR_MIGRATION_STATE', 'connection is already being migrated');
    }
    const tCapture = process.hrtime.bigint();
    trace?.hop('capture', Number(tCapture / 1000n));
    const unread = conn._holdForMigration();
    let userData: Uint8Array;
    let frozen = false;
    // Segments the frozen flow holds go to the target as they arrive, from the offer on (each held segment
    // raises the flow's Readable event): the client's segment caught by the freeze then reaches the target
    // right behind the offer instead of after the 'adopted' round trip, the steering and another hop. The
    // target injects them only if it adopted; until it said so, `sent` keeps them for giving back here.
    let forwarding: 'no' | 'speculative' | 'owned' = 'no';
    const sent: ForwardedSegment[] = [];
    let forwarded = 0;
    const onReadable = conn.onReadable;
    conn.onReadable = () => {
      if (forwarding !== 'no') forwarded += this.#forwardHeld(ch, conn.id, migrationId, forwarding === 'speculative' ? sent : null);
      onReadable.call(conn);
    };
    const outTuple = flowTuple(flow);
    const giveBack = () => {
      this.#outgoing.delete(outTuple);
      forwarding = 'no';
      conn.onReadable = onReadable;
      if (frozen) {
        // Everything held comes back in arrival order: what was sent on first, then what is still here.
        const rest = engine.drainHeld(conn.id);
        if (typeof rest !== 'number') for (const [src, dst, bytes] of rest) sent.push({ src, dst, bytes });
        engine.unfreeze(conn.id);
        for (const seg of sent) engine.inject(seg.src, seg.dst, seg.bytes);
      }
      conn._restoreDiverted(); // before the app writes again
      conn.migrationHooks?.abort();
      conn._resumeAfterMigration(unread);
    };
    try {
      userData = opts.userData ?? (conn.migrationHooks ? await conn.migrationHooks.capture() : new Uint8Array(0));
      // What the app wrote and the engine could not take yet travels too, instead of waiting (network bound)
      // for room in the send buffer; the loop below then only waits for the stream to hand it over.
      conn._divertWrites(MAX_UNWRITTEN);
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
    trace?.hop('captured');

    // 2'. Through the engines' lane when it can: one engine call freezes, snapshots and sends the offer with
    // the record of the layers above TCP; the target's engine adopts, steers and answers, and its JS builds
    // the connection afterwards. An engine that cannot start it (no lane key for the peer, too much buffered)
    // leaves the flow untouched, and the channel below carries it instead.
    if (this.#jsLaneUsable(opts.via)) {
      const budgetMs = opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000;
      let record: Uint8Array;
      try {
        record = this.#laneRecord.serialize(conn.id, conn.encrypted, encodeApp(conn.migrations, unread, conn._diverted(), userData));
      } catch (err) {
        this.stats.failed++;
        giveBack();
        throw err instanceof CapybaraError ? err : new MigrationError('ERR_MIGRATION_SNAPSHOT', String(err), { cause: err });
      }
      try {
        const r = await this.#lane.migrate(conn.id, this.#peers.get(peer)!.address, migrationId, this.epoch, budgetMs, record);
        conn.onReadable = onReadable; // the engine forwards what the flow holds, and releases it after its grace
        if (conn.encrypted) engine.tlsFree(conn.id);
        conn._detachMigrated(peer);
        this.stats.out++;
        trace?.end();
        const blackoutUs = us(tCapture);
        return {
          migrationId, peer, captureUs, freezeUs: r.workUs, snapshotUs: 0, sendUs: r.sendUs, shipUs: r.answeredUs, steerUs: 0,
          releaseUs: 0, offerArrivedUs: r.targetAtUs, blackoutUs, totalUs: us(t0), snapshotBytes: r.snapshotBytes + record.length,
          forwardedSegments: r.forwarded, path: 'lane', frozenAtUs: Number(tCapture / 1000n), doneAtUs: Number(tCapture / 1000n) + blackoutUs,
        };
      } catch (err) {
        if (!(err instanceof LaneError) || err.started) {
          this.stats.failed++;
          giveBack(); // the engine took the flow back (unfrozen, what it had sent ahead injected again)
          throw err;
        }
      } finally {
        record.fill(0);
      }
    }

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
      const layers = conn.encrypted ? this.#tlsLayers : this.#layers; // TLS: tcp + tls + app records
      snapshot = layers.serialize({ flowId: conn.id, userData: encodeApp(conn.migrations, unread, conn._diverted(), userData) }, undefined);
    } catch (err) {
      giveBack();
      throw err instanceof CapybaraError ? err : new MigrationError('ERR_MIGRATION_SNAPSHOT', String(err), { cause: err });
    }
    const snapshotUs = us(tSnap);
    const snapshotBytes = snapshot.length;
    trace?.hop('snapshotted');

    // 3. ship; the target answers 'adopted' or 'rejected'.
    this.#outgoing.add(outTuple);
    const tShip = process.hrtime.bigint();
    try {
      await new Promise<void>((resolve, reject) => {
        const budgetMs = opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000;
        const offer: OfferMessage = { type: 'offer', migrationId, epoch: this.epoch, flow, snapshot };
        let asked = 0;
        let reopened = false;
        const fail = (e: MigrationError) => {
          if (!this.#pending.delete(migrationId)) return;
          clearTimeout(timer);
          reject(e);
        };
        let mark: OfferMark | null = null; // where the last copy of the offer ends in the channel's TCP stream
        const askAgain = (on: MigrationChannel): boolean => {
          try {
            on.send(offer);
            mark = this.#offerMark(on);
            return true;
          } catch {
            return false;
          }
        };
        const onTimeout = () => {
          const p = this.#pending.get(migrationId);
          if (!p) return;
          if (mark && this.#neverAcknowledged(p.channel, mark)) {
            // The peer's TCP did not acknowledge the offer although ours retransmitted it: its runtime is gone
            // (a live but busy one still ACKs from its engine thread). It cannot have adopted what it never
            // got; abort the channel (RST: no copy of the offer is retransmitted later) and give the flow back
            // now rather than after every ask.
            this.#transports.get(p.channel)?.destroy(new MigrationError('ERR_MIGRATION_PEER_LOST', 'peer unresponsive'));
            p.channel.destroy();
            fail(new MigrationError('ERR_MIGRATION_PEER_LOST', `${peer} did not acknowledge the offer at the TCP level within ${budgetMs} ms (its runtime is gone or unreachable)`));
            return;
          }
          if (asked < OFFER_ASKS && !p.channel.closed && askAgain(p.channel)) {
            asked++;
            timer = setTimeout(onTimeout, budgetMs);
            return;
          }
          fail(new MigrationError('ERR_MIGRATION_TIMEOUT', `${peer} did not answer within ${budgetMs} ms (asked ${asked + 1} times)`));
        };
        let timer = setTimeout(onTimeout, budgetMs);
        const pending: Pending = {
          channel: ch,
          trace,
          resolve: () => { clearTimeout(timer); resolve(); },
          reject: (e) => { clearTimeout(timer); reject(e); },
          lost: () => {
            // Once: a new channel to a live target gets the same offer; a duplicate there is answered as
            // before (adopted or refused). A target that cannot be reached lost its copy with it.
            if (reopened) {
              fail(new MigrationError('ERR_MIGRATION_PEER_LOST', `the channel to ${peer} closed twice before it answered`));
              return;
            }
            reopened = true;
            this.#channel(peer).then((nc) => {
              if (!this.#pending.has(migrationId)) return;
              pending.channel = nc;
              if (!askAgain(nc)) fail(new MigrationError('ERR_MIGRATION_PEER_LOST', `the channel to ${peer} closed before it answered`));
            }, () => fail(new MigrationError('ERR_MIGRATION_PEER_LOST', `the channel to ${peer} closed before it answered and ${peer} cannot be reached`)));
          },
        };
        this.#pending.set(migrationId, pending);
        trace?.hop('offerSeal');
        // What the flow held since the freeze rides in the same write as the offer.
        const early = this.#heldMessages(conn.id, migrationId, sent);
        for (const f of early) forwarded += f.segments.length;
        ch.sendAll([offer, ...early]);
        mark = this.#offerMark(ch);
        trace?.hop('offerSent');
        forwarding = 'speculative';
      });
    } catch (err) {
      // No answer (or the channel is gone for good): the balancer says who owns the flow. The target
      // steers right after adopting, so pointing at it means it adopted and its answers were lost: taking
      // the frozen copy back would make two owners (or revive state the target has moved past).
      if (!(await this.#ownedByTarget(err, flow, peer, migrationId))) {
        this.stats.failed++;
        giveBack();
        throw err;
      }
      this.stats.unanswered++;
    } finally {
      snapshot.fill(0);
    }
    forwarding = 'owned';
    sent.length = 0;
    trace?.hop('adoptedResumed');
    const shipUs = us(tShip);

    // 4. the target steered the balancer when it adopted (before answering), so the source does not: by
    // the time a late answer arrives here the flow may have moved on from the target, and steering it back
    // there would send the client to a runtime that no longer has it (the soak found this: a channel
    // segment lost to an RTO delays the answer). Hand over what arrived here meanwhile, then forget the flow.
    const tSteer = process.hrtime.bigint();
    const steerUs = us(tSteer);
    trace?.hop('steered');
    const tRel = process.hrtime.bigint();
    forwarded += this.#forwardHeld(ch, conn.id, migrationId);
    const forwardedSegments = forwarded;
    const releaseUs = us(tRel);
    const blackoutUs = us(tCapture);
    trace?.hop('forwarded');
    trace?.set('forwardedSegments', forwardedSegments);
    trace?.end();
    // Packets already past the balancer keep arriving here for a moment; a released flow would answer
    // them with RST. Keep it frozen (holding) a little longer, forward the stragglers, then forget it.
    const tuple = flowTuple(flow);
    let timer: NodeJS.Timeout | undefined;
    let straggler: NodeJS.Timeout | undefined;
    const finish = () => {
      if (timer) clearTimeout(timer);
      if (straggler) clearInterval(straggler);
      this.#graceful.delete(tuple);
      if (this.#closed) return; // the stack closed during the grace: its engine and the flow are gone
      this.#forwardHeld(ch, conn.id, migrationId);
      forwarding = 'no';
      conn.onReadable = onReadable;
      engine.release(conn.id);
      conn._detachMigrated(peer);
      if (!ch.closed) ch.send({ type: 'release', migrationId, epoch: this.epoch });
    };
    this.#outgoing.delete(outTuple);
    if (this.#opts.steer) {
      this.#graceful.set(tuple, finish); // the flow may come straight back: then the grace ends early
      timer = setTimeout(finish, RELEASE_GRACE_MS);
      timer.unref();
      // A straggler must not wait for the end of the grace: pass on what arrives as it arrives.
      straggler = setInterval(() => {
        if (this.#closed) clearInterval(straggler);
        else this.#forwardHeld(ch, conn.id, migrationId);
      }, 1);
      straggler.unref();
    } else {
      finish();
    }
    this.stats.out++;
    return {
      migrationId, peer, captureUs, freezeUs, snapshotUs, shipUs, steerUs, releaseUs,
      blackoutUs, totalUs: us(t0), snapshotBytes, forwardedSegments, path: 'channel',
      frozenAtUs: Number(tCapture / 1000n), doneAtUs: Number(tCapture / 1000n) + blackoutUs,
    };
  }

  /**
   * Moves a flow served by a native app on the engine thread (serve --native) to peer through the engines'
   * migration lane: after the ping (as for migrate()), one engine call freezes, snapshots and sends; the
   * target's engine adopts, steers and answers with no JavaScript on either side until the outcome.
   */
  async migrateNative(flowId: number, peer: string, opts: { timeoutMs?: number } = {}): Promise<MigrationTimings> {
    if (this.#closed) throw new MigrationError('ERR_MIGRATION_CLOSED', 'migrator closed');
    if (!this.#lane.available) throw new MigrationError('ERR_MIGRATION_LANE', 'this engine has no migration lane');
    const t0 = process.hrtime.bigint();
    const p = this.#peers.get(peer);
    const ch = await this.#channel(peer).catch((err: unknown) => {
      this.stats.failed++;
      throw err instanceof MigrationError ? err : new MigrationError('ERR_MIGRATION_NO_PEER', `peer ${peer} unreachable: ${(err as Error).message}`, { cause: err });
    });
    try {
      await this.#alive(ch, peer, PING_TIMEOUT_MS);
    } catch (err) {
      this.stats.failed++;
      ch.close();
      throw err;
    }
    const migrationId = this.#nextId++;
    try {
      const r = await this.#lane.migrate(flowId, p!.address, migrationId, this.epoch, opts.timeoutMs ?? this.#opts.timeoutMs ?? 2000);
      this.stats.out++;
      // The engine measures the answer from the instant of the call (its clock is this one).
      const blackoutUs = Math.max(r.callUs, r.answeredUs);
      return {
        migrationId, peer, captureUs: 0, freezeUs: r.workUs, snapshotUs: 0, sendUs: r.sendUs, shipUs: r.answeredUs, steerUs: 0, releaseUs: 0, offerArrivedUs: r.targetAtUs,
        blackoutUs, totalUs: us(t0), snapshotBytes: r.snapshotBytes, forwardedSegments: r.forwarded, path: 'lane',
        frozenAtUs: r.calledAtUs, doneAtUs: r.calledAtUs + blackoutUs,
      };
    } catch (err) {
      this.stats.failed++;
      throw err;
    }
  }

  /** @internal The engine's lane decided a migration from here (EV_LANE_OUT) or adopted a flow (EV_LANE_IN). */
  onLaneEvent(type: 'out' | 'in', id: number, err: number): void {
    if (type === 'out') {
      this.#lane.onOut(id, err);
      return;
    }
    const { records, native } = this.#lane.onIn(id);
    if (native) this.stats.in++; // a native app's flow: the engine serves it already
    for (const [flowId, record] of records) this.#takeLaneFlow(flowId, record);
  }

  /**
   * The engine gets the lane keys of every channel session, except on a runtime under fault injection: the
   * faults act on the channel protocol, so such a runtime stays off the lane both ways (its engine, holding
   * no key, drops lane offers unanswered: to a source it looks like a wedged runtime).
   */
  #attachLane(ch: MigrationChannel, peer: string, address: string): void {
    if (!this.#opts.faults) this.#lane.attach(ch, peer, address);
  }

  #jsLaneUsable(via: MigrateOptions['via']): boolean {
    const wanted = via === undefined ? this.#opts.jsLane === true : via === 'lane';
    return wanted && this.#lane.available && !this.#opts.faults;
  }

  /**
   * Target: the engine adopted flowId from a lane offer, steered the balancer and answered; what is left is
   * JavaScript's part, the connection. TCP has been acknowledging and buffering the client's bytes meanwhile.
   * The source has released the flow, so a record that cannot be restored (a peer's bug: it was sealed
   * and authenticated) costs the connection, which is reset rather than left without an owner.
   */
  #takeLaneFlow(flowId: number, record: Uint8Array): void {
    const engine = this.#host.engine;
    const fi = engine.flowInfo(flowId);
    const server = fi ? this.#host.migrationServer(fi.localPort) : undefined;
    try {
      if (!fi || !server) throw new MigrationError('ERR_MIGRATION_ADOPT', fi ? `no server takes migrated connections on port ${fi.localPort} any more` : 'the flow closed before JavaScript took it');
      const { tls, state } = this.#laneRecord.restore(flowId, record);
      const app = decodeApp(state.userData);
      if (!this.#opts.lane && this.#opts.steer) { // the engine steers only when it knows the balancer
        this.#opts.steer({ localAddress: fi.localAddress, localPort: fi.localPort, remoteAddress: fi.remoteAddress, remotePort: fi.remotePort }, this.name).catch(() => {});
      }
      this.stats.in++;
      server.takeMigrated(flowId, app.unread, app.userData, app.migrations + 1, tls, app.unwritten);
    } catch (err) {
      this.stats.laneLost++;
      if (fi) engine.abort(flowId);
      process.emitWarning(`capybara: a connection adopted through the migration lane was lost: ${(err as Error).message}`, { code: 'CAPYBARA_LANE_ADOPT' });
    } finally {
      record.fill(0);
    }
  }

  /** The end of what was written to the channel so far in its TCP sequence space, and the retransmissions until now. */
  #offerMark(ch: MigrationChannel): OfferMark | null {
    const conn = this.#transports.get(ch);
    const fi = conn?.info();
    if (!conn || !fi) return null;
    return { end: (fi.sndUna + fi.unackedBytes + fi.unsentBytes + conn.writableLength) >>> 0, retransmits: fi.retransmits };
  }

  /** Our TCP retransmitted towards the peer, whose window is open, and it still has not acknowledged the offer. */
  #neverAcknowledged(ch: MigrationChannel, mark: OfferMark): boolean {
    const fi = this.#transports.get(ch)?.info();
    if (!fi) return false;
    const unacked = ((mark.end - fi.sndUna) | 0) > 0; // sequence numbers wrap: compare as a signed difference
    return unacked && fi.retransmits > mark.retransmits && fi.sndWnd > 0;
  }

  /**
   * Before taking a flow back: does the target own it? With an arbiter the source's own claim decides
   * (losing it means the target claimed, i.e. adopted). Without one, after a timeout or a lost channel, the
   * balancer delivering the flow to the target is the sign (only a target that adopted steers).
   */
  async #ownedByTarget(err: unknown, flow: FlowKey, peer: string, migrationId: number): Promise<boolean> {
    const claimed = this.#claim(flow, claimToken(this.name, this.epoch, migrationId));
    if (claimed !== 'none') return claimed === 'lost';
    if (!this.#opts.owner || !(err instanceof MigrationError)) return false;
    if (err.code !== 'ERR_MIGRATION_TIMEOUT' && err.code !== 'ERR_MIGRATION_PEER_LOST') return false;
    try {
      return (await this.#opts.owner(flow)) === peer;
    } catch {
      return false; // unknown: as without a balancer, a target that never answered did not adopt
    }
  }

  #claim(flow: FlowKey, token: number): ClaimResult {
    if (!this.#opts.claim) return 'none';
    try {
      return this.#opts.claim(flow, token, this.name);
    } catch {
      return 'none';
    }
  }

  /** What the frozen flow holds, as forward messages; `keep` (before adoption) collects it for giving back. */
  #heldMessages(flowId: number, migrationId: number, keep: ForwardedSegment[] | null): ForwardMessage[] {
    const held = this.#host.engine.drainHeld(flowId);
    if (typeof held === 'number' || held.length === 0) return [];
    const all: ForwardedSegment[] = held.map(([src, dst, bytes]) => ({ src, dst, bytes }));
    if (keep) keep.push(...all);
    const out: ForwardMessage[] = [];
    for (let i = 0; i < all.length; i += MAX_FORWARD_SEGMENTS) {
      out.push({ type: 'forward', migrationId, epoch: this.epoch, segments: all.slice(i, i + MAX_FORWARD_SEGMENTS) });
    }
    return out;
  }

  /** Sends what the frozen flow holds to the target; `keep` (before adoption) collects it for giving back. */
  #forwardHeld(ch: MigrationChannel, flowId: number, migrationId: number, keep: ForwardedSegment[] | null = null): number {
    if (ch.closed) return 0; // before adoption it stays held for giving back; after, the client retransmits to the target
    const msgs = this.#heldMessages(flowId, migrationId, keep);
    if (msgs.length === 0) return 0;
    try {
      ch.sendAll(msgs);
    } catch {
      return 0; // the channel closed under us: kept copies (before adoption) still go back
    }
    return msgs.reduce((n, m) => n + m.segments.length, 0);
  }

  #onMessage(ch: MigrationChannel, m: MigrationMessage): void {
    switch (m.type) {
      case 'offer': {
        const delay = this.#opts.faults?.delayOffersMs;
        if (delay) { // a wedged target: it gets to the offer long after it arrived (the view's buffer is reused: copy)
          const late = { ...m, snapshot: Uint8Array.from(m.snapshot) };
          setTimeout(() => this.#onOffer(ch, late), delay).unref();
        } else {
          this.#onOffer(ch, m);
        }
        break;
      }
      case 'adopted':
      case 'rejected': {
        if (m.epoch !== this.epoch) return; // an answer to an earlier run of this runtime
        const p = this.#pending.get(m.migrationId);
        if (!p) return; // late (timed out) or duplicate
        this.#pending.delete(m.migrationId);
        p.trace?.hop('adoptedRecv');
        p.trace?.wake('adopted', this.#host.engine);
        if (m.type === 'adopted') p.resolve();
        else p.reject(new MigrationError('ERR_MIGRATION_REJECTED', `${ch.peer ?? 'peer'} refused the connection: ${m.reason}`));
        break;
      }
      case 'forward': {
        const a = this.#adopted.get(`${ch.peer}/${m.epoch}/${m.migrationId}`);
        if (!a) return;
        // The flow may have moved on from here (and been released) while its first source was still in its
        // grace: its stragglers would meet no flow here and make TCP answer the client with RST. Drop them;
        // the client retransmits to where the flow is now.
        if (this.#host.engine.flowInfo(a.flowId) === null) return;
        if (a.trace) {
          a.trace.hop('forwardRecv');
          a.trace.wake('forward', this.#host.engine);
        }
        for (const seg of m.segments) {
          this.#host.engine.inject(seg.src, seg.dst, seg.bytes);
          this.stats.forwardedIn++;
        }
        if (a.trace) {
          a.trace.hop('injected');
          a.trace.end();
          a.trace = null;
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
        this.#lastTrace?.hop('pongRecv');
        this.#lastTrace?.wake('pong', this.#host.engine);
        this.#lastTrace = null;
        const done = this.#pongs.get(m.nonce);
        this.#pongs.delete(m.nonce);
        done?.();
        break;
      }
      default:
        break;
    }
  }

  #onOffer(ch: MigrationChannel, m: OfferMessage, deferrals = 0): void {
    if (this.#opts.faults?.dropOffers) return;
    if (this.#outgoing.has(flowTuple(m.flow)) && deferrals < MAX_OFFER_DEFERRALS) {
      setImmediate(() => this.#onOffer(ch, m, deferrals + 1)); // let our own migrate() of it finish first
      return;
    }
    const peer = ch.peer ?? '?';
    const trace = MigrationTrace.start({ side: 'target', name: this.name, peer, migrationId: m.migrationId });
    trace?.hop('offerRecv');
    if (trace) trace.wake('offer', this.#host.engine);
    const verdict = this.#dedupe.observeMessage(m, peer, this.name);
    const key = `${peer}/${m.epoch}/${m.migrationId}`;
    if (verdict === 'duplicate') {
      // The source asks again when an answer is late or its channel broke: answer as before, idempotently.
      if (this.#adopted.has(key)) {
        if (!this.#opts.faults?.dropAnswers) ch.send({ type: 'adopted', migrationId: m.migrationId, epoch: m.epoch });
      }
      else if (this.#refused.has(key)) ch.send({ type: 'rejected', migrationId: m.migrationId, epoch: m.epoch, reason: 'refused before' });
      return;
    }
    if (verdict === 'stale') return;
    const reject = (reason: string) => {
      this.stats.rejectedIn++;
      if (this.#refused.size >= MAX_ADOPTED_TRACKED) this.#refused.delete(this.#refused.values().next().value as string);
      this.#refused.add(key);
      ch.send({ type: 'rejected', migrationId: m.migrationId, epoch: m.epoch, reason });
    };
    const server = this.#host.migrationServer(m.flow.localPort);
    if (!server) {
      reject(`no server on port ${m.flow.localPort} takes migrated connections here`);
      return;
    }
    // The balancer arbitrates (MigratorOptions.claim): a source that gave up waiting claimed the flow back
    // first, and this offer must not make a second owner however late it came.
    const token = claimToken(peer, m.epoch, m.migrationId);
    const claimed = this.#claim(m.flow, token);
    if (claimed === 'lost') {
      m.snapshot.fill(0);
      this.stats.lateOffers++;
      reject('the source took the flow back before this offer arrived');
      return;
    }
    const unclaim = () => {
      if (claimed === 'won') this.#opts.unclaim?.(m.flow, token);
    };
    this.#graceful.get(flowTuple(m.flow))?.(); // our own old copy of this flow, still in its grace: drop it
    let state;
    let tls = false;
    try {
      tls = snapshotKinds(m.snapshot).includes('tls');
      state = (tls ? this.#tlsLayers : this.#layers).deserialize(m.snapshot, undefined);
    } catch (err) {
      unclaim();
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
      unclaim();
      reject((err as Error).message);
      return;
    }
    if (this.#adopted.size >= MAX_ADOPTED_TRACKED) {
      const oldest = this.#adopted.keys().next().value; // its release was lost: forwarding for it is over
      if (oldest !== undefined) this.#adopted.delete(oldest);
    }
    trace?.hop('adopted');
    // This runtime owns the flow from here on (the source stays frozen until it hears from us), so the
    // balancer can follow at once: the client's next segment comes here without waiting for the answer
    // to reach the source. Only the target steers: the flow may move on from here before the source hears.
    if (this.#opts.steer) this.#opts.steer(m.flow, this.name).catch(() => {});
    trace?.hop('steered');
    this.#adopted.set(key, { flowId: state.lower, trace });
    // The answer only lets the source forget its frozen copy: the client's traffic already comes here
    // (steered above, held segments forwarded speculatively). Sealing and sending it wakes the source's
    // threads, which on a small machine compete with this one for the CPU, so it leaves after this turn
    // has handed the connection to the app and injected what was forwarded along with the offer.
    setImmediate(() => {
      // The client's segment the source held usually reaches us (forwarded) while this turn adopts: take it
      // in now, so the app answers the client before the answer's wake-ups compete with it for the CPU.
      this.#host.engine.pollEvents?.();
      if (ch.closed || this.#opts.faults?.dropAnswers) return;
      try {
        ch.send({ type: 'adopted', migrationId: m.migrationId, epoch: m.epoch });
      } catch {
        // closed meanwhile: the source times out and takes its frozen copy back
      }
      trace?.hop('replySent');
    });
    this.stats.in++;
    server.takeMigrated(state.lower, app.unread, app.userData, app.migrations + 1, tls, app.unwritten);
    trace?.hop('taken');
    if (trace) setTimeout(() => { // no forward came (nothing was held): write what we have
      const a = this.#adopted.get(key);
      if (a?.trace) {
        a.trace.end();
        a.trace = null;
      }
    }, 100).unref();
  }
}
