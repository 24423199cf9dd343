// Idempotency of migration messages. Every offer/adopted/rejected/release names a migration by
// (migrationId, epoch): the id is allocated by the source runtime, increasing within the source's epoch
// (its incarnation, bumped on restart). A receiver keeps, per origin runtime and per stream of messages,
// the newest epoch seen and a sliding window over the ids of that epoch. That is bounded memory
// (origins x window bits) and exact within the window:
//   'new'        first sighting: act on it
//   'duplicate'  seen before: answer as before (the reply may have been lost), do not act again
//   'stale'      from an older epoch of that origin (sent before it restarted), or an id so far below
//                the newest that it fell out of the window: drop it
// Origins beyond maxOrigins are forgotten least-recently-used first.
import type { MigrationMessage } from './messages.js';
import { SlidingWindow } from './window.js';

export type DedupeVerdict = 'new' | 'duplicate' | 'stale';

interface OriginState { epoch: number; window: SlidingWindow }

export interface DedupeOptions {
  /** Ids remembered below the newest, per origin (multiple of 32). Default 4096. */
  window?: number;
  /** Origins (runtime x stream) tracked. Default 1024. */
  maxOrigins?: number;
}

export class MigrationDedupe {
  readonly windowSize: number;
  readonly maxOrigins: number;
  readonly #origins = new Map<string, OriginState>();

  constructor(options: DedupeOptions = {}) {
    this.windowSize = options.window ?? 4096;
    this.maxOrigins = options.maxOrigins ?? 1024;
    new SlidingWindow(this.windowSize); // validates the size
    if (!Number.isInteger(this.maxOrigins) || this.maxOrigins < 1) throw new RangeError('maxOrigins must be a positive integer');
  }

  get size(): number { return this.#origins.size; }

  #get(origin: string): OriginState | undefined {
    const s = this.#origins.get(origin);
    if (s) {
      this.#origins.delete(origin); // most recently used goes last
      this.#origins.set(origin, s);
    }
    return s;
  }

  #put(origin: string, s: OriginState): void {
    this.#origins.set(origin, s);
    while (this.#origins.size > this.maxOrigins) {
      const oldest = this.#origins.keys().next().value as string;
      this.#origins.delete(oldest);
    }
  }

  /** Classifies and records (origin, epoch, migrationId). */
  observe(origin: string, epoch: number, migrationId: number): DedupeVerdict {
    let s = this.#get(origin);
    if (!s || epoch > s.epoch) {
      s = { epoch, window: new SlidingWindow(this.windowSize) };
      this.#put(origin, s);
    } else if (epoch < s.epoch) {
      return 'stale';
    }
    const v = s.window.accept(migrationId);
    return v === 'new' ? 'new' : v === 'duplicate' ? 'duplicate' : 'stale';
  }

  /** Raises the known epoch of an origin (e.g. a peer announced its restart): older ones become stale. */
  setEpoch(origin: string, epoch: number): void {
    const s = this.#get(origin);
    if (!s || epoch > s.epoch) this.#put(origin, { epoch, window: new SlidingWindow(this.windowSize) });
  }

  /**
   * Classifies a received message. Offers and releases are keyed by their sender (it allocated the id);
   * adopted/rejected answer our own offers, so they are keyed by us, in one stream (one answer per
   * migration, whichever it is). ping/pong are not migration messages: always 'new'.
   */
  observeMessage(msg: MigrationMessage, from: string, self: string): DedupeVerdict {
    switch (msg.type) {
      case 'offer':
      case 'release':
        return this.observe(`${msg.type}\u0000${from}`, msg.epoch, msg.migrationId);
      case 'adopted':
      case 'rejected':
        return this.observe(`answer\u0000${self}\u0000${from}`, msg.epoch, msg.migrationId);
      default:
        return 'new';
    }
  }
}
