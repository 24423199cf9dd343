// Hop-by-hop timestamps of migrations, for finding where a blackout goes. Off unless the environment
// names a file (CAPYBARA_MIGRATION_TRACE=/path): then each side of each migration appends one JSON line
// {side, peer, migrationId, hops: {name: µs}} to it. Times are process.hrtime, i.e. CLOCK_MONOTONIC in
// µs, the clock the engine stamps with too, so lines from the two runtimes of one machine line up.
// The line is written after the migration's critical path (setImmediate), never inside it.
import { appendFile } from 'node:fs';
import type { EngineInstance } from '../native.js';

const PATH = process.env.CAPYBARA_MIGRATION_TRACE;

export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export class MigrationTrace {
  readonly #hops: Record<string, number> = {};
  readonly #meta: Record<string, string | number>;

  private constructor(meta: Record<string, string | number>) {
    this.#meta = meta;
  }

  /** A trace when tracing is on, else null (every call site is then a cheap `?.`). */
  static start(meta: Record<string, string | number>): MigrationTrace | null {
    return PATH ? new MigrationTrace(meta) : null;
  }

  hop(name: string, at = nowUs()): void {
    this.#hops[name] = at;
  }

  /** The engine's side of the message just received: its wake-up, RX round and notify, and our dispatch. */
  wake(prefix: string, engine: EngineInstance): void {
    const t = engine.wakeTrace?.();
    if (!t) return;
    this.#hops[`${prefix}.engineWoke`] = t[0];
    this.#hops[`${prefix}.engineRx`] = t[1];
    this.#hops[`${prefix}.notify`] = t[2];
    this.#hops[`${prefix}.dispatch`] = t[3];
  }

  set(key: string, value: string | number): void {
    this.#meta[key] = value;
  }

  end(): void {
    const line = `${JSON.stringify({ ...this.#meta, hops: this.#hops })}\n`;
    setImmediate(() => appendFile(PATH!, line, () => {}));
  }
}
