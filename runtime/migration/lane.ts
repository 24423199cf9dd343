// The runtime's side of the engines' migration lane (native/mig/lane.h): flows served by a native app on
// the engine thread migrate engine to engine, with no JavaScript between the call and the target's answer.
// This file gives the engine what it cannot know itself — the lane keys of every channel session (derived
// by the channel handshake, runtime/migration/keys.ts laneKeys), the balancer's table and this runtime's
// backend in it — starts migrations and turns the engine's outcome events into promises.
import { CapybaraError, errnoName, errnoNumber } from '../errors.js';
import type { EngineInstance, LaneOutcome } from '../native.js';
import type { MigrationChannel } from './channel.js';

/** How the engine reaches the balancer: the XDP balancer's pinned redirect map or a mem: switch. */
export interface LaneSteering {
  kind: 'lb' | 'mem';
  /** The pinned map's path (lb) or the switch's wire name (mem). */
  where: string;
  /** Backend number (lb backend index, mem switch port) of every runtime by name. */
  backends: ReadonlyMap<string, number>;
}

/** What one lane migration cost (µs) and carried. */
export interface LaneResult {
  calledAtUs: number; // when the call began (monotonic µs): the flow froze within it
  callUs: number;   // freeze + snapshot + seal + send, on the caller's thread
  workUs: number;   // freeze + snapshot + seal (under the engine lock)
  sendUs: number;   // the offer's TX: the kernel takes the frame through the veth path on this thread
  answeredUs: number;
  /** The offer's arrival at the target (from the call; meaningful when both runtimes share a clock). */
  targetAtUs: number;
  forwarded: number;
  snapshotBytes: number;
}

export class LaneError extends CapybaraError {
  readonly errno: number;
  /** False when the engine refused to start (nothing was frozen or sent): another path may be tried. */
  readonly started: boolean;
  constructor(code: string, errno: number, message: string, started = true) {
    super(code, message);
    this.errno = errno;
    this.started = started;
  }
}

const ENOENT = errnoNumber('ENOENT');
const EBUSY = errnoNumber('EBUSY');
const EMSGSIZE = errnoNumber('EMSGSIZE');
const ETIMEDOUT = errnoNumber('ETIMEDOUT');
/** A JS-side bound on waiting for the engine's outcome beyond the budget (the engine always decides). */
const OUTCOME_SLACK_MS = 5000;
const TAKEN_EARLY_MAX = 4096;

export class MigrationLane {
  readonly #engine: () => EngineInstance;
  readonly #name: string;
  readonly #backends: ReadonlyMap<string, number>;
  readonly #waiting = new Map<number, (err: number) => void>();
  /** Adoptions through the lane (the engine's native app serves them; counted for `ctl stats`). */
  adoptedIn = 0;

  constructor(engine: () => EngineInstance, name: string, steering?: LaneSteering) {
    this.#engine = engine;
    this.#name = name;
    this.#backends = steering?.backends ?? new Map();
    this.#steering = steering;
  }

  readonly #steering: LaneSteering | undefined;

  /** Tells the engine how to steer (once, when the runtime starts migrating). */
  start(): void {
    const steering = this.#steering;
    const self = steering?.backends.get(this.#name);
    const e = this.#engine();
    if (steering && self !== undefined && e.laneSteer) {
      const rc = e.laneSteer(steering.kind, steering.where, self);
      if (rc < 0) throw new LaneError('ERR_MIGRATION_LANE', rc, `the lane cannot steer through ${steering.where} (${errnoName(rc)})`);
    }
  }

  /** Whether this engine has a lane (test bindings and older builds do not). */
  get available(): boolean {
    return typeof this.#engine().laneMigrate === 'function';
  }

  /**
   * Gives the engine the lane keys of a channel to peer (at its address) once it is ready and again after
   * each key rotation; the keys are forgotten when the channel closes.
   */
  attach(ch: MigrationChannel, peer: string, address: string): void {
    if (!this.available) return;
    const ids: Buffer[] = [];
    const install = () => {
      const k = ch.laneKeys;
      if (!k) return;
      const rc = this.#engine().laneKey!(address, k.id, k.tx.key, k.tx.iv, k.rx.key, k.rx.iv, this.#backends.get(peer) ?? -1);
      if (rc === 0) ids.push(Buffer.from(k.id));
    };
    install();
    ch.on('rekeyed', install);
    ch.once('close', () => {
      try {
        for (const id of ids) this.#engine().laneDropKey?.(address, id);
      } catch {
        // the stack closed first: its engine, lane and keys are gone with it
      }
    });
  }

  /**
   * Moves flow flowId to the peer at address; resolves once the target owns it, rejects (the flow runs on
   * here) when the engine refused to start or the target refused or never answered. A native flow goes
   * alone; a flow served in JS takes `record`, its layers above TCP (lane-record.ts).
   */
  async migrate(flowId: number, address: string, migrationId: number, epoch: number, budgetMs: number,
    record?: Uint8Array): Promise<LaneResult> {
    const e = this.#engine();
    const decided = new Promise<number>((resolve) => this.#waiting.set(migrationId, resolve));
    const t0 = process.hrtime.bigint();
    const r = record ? e.laneMigrate!(flowId, address, migrationId, epoch, budgetMs, record)
      : e.laneMigrate!(flowId, address, migrationId, epoch, budgetMs);
    const callUs = Number(process.hrtime.bigint() - t0) / 1000;
    const [rc, , workUs, sendUs] = typeof r === 'number' ? [r, 0, 0, 0] : r;
    if (rc < 0) {
      this.#waiting.delete(migrationId);
      // Not native, or not now (replies still waiting to be sent, already moving): the caller may try again later.
      if (rc === -EMSGSIZE) {
        throw new LaneError('ERR_MIGRATION_BUSY', rc, `flow ${flowId} has more bytes buffered than a lane offer carries: try again when fewer are in flight`, false);
      }
      const transient = rc === -ENOENT || rc === -EBUSY;
      throw new LaneError(transient ? 'ERR_MIGRATION_STATE' : 'ERR_MIGRATION_LANE', rc,
        `the engine cannot move flow ${flowId} through the lane (${errnoName(rc)})`, false);
    }
    let timer: NodeJS.Timeout | undefined;
    let err = await Promise.race([decided, new Promise<number>((resolve) => {
      timer = setTimeout(() => resolve(-ETIMEDOUT), budgetMs + OUTCOME_SLACK_MS);
    })]);
    clearTimeout(timer);
    this.#waiting.delete(migrationId);
    const o: LaneOutcome | null = e.laneOutcome!(migrationId);
    if (o) err = o.err; // the engine's word, should its event have been lost on the way here
    if (err !== 0) {
      const code = err === -ETIMEDOUT ? 'ERR_MIGRATION_TIMEOUT' : 'ERR_MIGRATION_REJECTED';
      throw new LaneError(code, err, err === -ETIMEDOUT
        ? `no answer through the lane within ${budgetMs} ms: the flow stays here`
        : `the target refused the flow (${errnoName(err)})`);
    }
    return { calledAtUs: Number(t0 / 1000n), callUs, workUs, sendUs, answeredUs: o?.answeredUs ?? 0, targetAtUs: o?.targetAtUs ?? 0, forwarded: o?.forwarded ?? 0, snapshotBytes: o?.snapshotBytes ?? 0 };
  }

  /** The engine decided migration id (EV_LANE_OUT). */
  onOut(migrationId: number, err: number): void {
    this.#waiting.get(migrationId)?.(err);
    // A burst of outcomes and adoptions can push older events out of the engine's event ring (the oldest
    // go); their outcomes are still on record there: settle every migration that is decided.
    if (this.#waiting.size > 1) {
      const e = this.#engine();
      for (const [id, done] of this.#waiting) {
        const o = id === migrationId ? null : e.laneOutcome!(id);
        if (o) done(o.err);
      }
    }
  }

  /**
   * The engine adopted flow flowId (EV_LANE_IN). Returns every flow served in JS whose record waits, with
   * it (their own events may have been lost to a full event ring: this one drains them all), and whether
   * flowId itself is a native app's flow (served by the engine, nothing for JS to do).
   */
  onIn(flowId: number): { records: [number, Buffer][]; native: boolean } {
    this.adoptedIn++;
    const records: [number, Buffer][] = [];
    const e = this.#engine();
    for (let r = e.laneTake?.() ?? null; r !== null; r = e.laneTake!()) records.push(r);
    for (const [id] of records) this.#takenEarly.add(id);
    const native = !this.#takenEarly.delete(flowId);
    if (this.#takenEarly.size > TAKEN_EARLY_MAX) this.#takenEarly.clear(); // ids whose events were lost
    return { records, native };
  }

  readonly #takenEarly = new Set<number>(); // JS flows taken, whose own EV_LANE_IN is still to come

  close(): void {
    for (const done of this.#waiting.values()) done(-ETIMEDOUT);
    this.#waiting.clear();
  }

  get name(): string {
    return this.#name;
  }
}
