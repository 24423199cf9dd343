// The layer ("onion") interface. Each protocol layer of a connection (tcp, tls, app) serializes its own
// state and, before it, the state of the layer below; restoring goes the other way round: the lower
// layer is restored first and its result handed to the layer above (TLS needs the adopted TCP flow).
//
// In bytes the onion is flattened into the snapshot container's records, bottom layer first, so native
// code finds its record without parsing the layers above it. Restoring is two-phase: every record of
// every layer is validated (pure, no side effects) before any layer touches the engine, and if a layer
// fails after the ones below it were restored, those are discarded top-down, so a failed adopt leaves
// nothing behind (exactly one runtime owns a flow at any time).
//
// Ownership: serializeRecords returns fresh buffers the caller owns and wipes; serialize wipes them
// itself once they are copied into the container. deserialize never keeps views into its input, so
// the caller can wipe the snapshot as soon as it returns.
import { CapybaraError } from '../runtime/errors.js';
import { SnapshotError } from './errors.js';
import {
  SnapshotFlags, checkKind, checkLayout, decodeSnapshot, encodeSnapshot, zeroRecords,
  type DecodeOptions, type SnapshotRecord,
} from './snapshot.js';

export interface Layer<C, S, R = void> {
  /** Record tag: "tcp", "tls", "app". */
  readonly kind: string;
  /** Record version this layer writes. */
  readonly version: number;
  /** Kinds of the layers below and this one, bottom first: the record order in a snapshot. */
  readonly kinds: readonly string[];
  /** Whether this layer or one below carries key material. */
  readonly secret: boolean;
  /** Records of the layers below (bottom first), then this layer's own. The caller owns and wipes them. */
  serializeRecords(conn: C, rt: R): SnapshotRecord[];
  /** Validates, without side effects, the records of this layer and those below (bottom first). */
  checkRecords(records: readonly SnapshotRecord[]): void;
  /** Restores checked records: the lower layer first, then this one; undoes the lower one if this fails. */
  restoreRecords(records: readonly SnapshotRecord[], rt: R): S;
  /** Undoes a restore (a layer above failed). Must not throw. */
  discard(state: S, rt: R): void;
  /** The whole onion as one snapshot container. */
  serialize(conn: C, rt: R): Uint8Array;
  /** Decodes, validates every layer, then restores bottom up. Keeps no reference to `bytes`. */
  deserialize(bytes: Uint8Array, rt: R, options?: Omit<DecodeOptions, 'expect'>): S;
}

/** Builds untyped failures of layer code into typed errors; typed ones pass through. */
function typed(err: unknown, kind: string, what: string): CapybaraError {
  if (err instanceof CapybaraError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SnapshotError('ERR_SNAPSHOT_RESTORE', `layer ${kind}: ${what} failed: ${message}`, { cause: err });
}

/**
 * Shared machinery: the onion recursion, layout and version checks, wiping. A concrete layer says how
 * to encode its own record, how to validate it, and how to restore it on top of the lower state.
 */
export abstract class BaseLayer<C, S, R, LS> implements Layer<C, S, R> {
  readonly kind: string;
  readonly version: number;
  /** Oldest record version this layer still reads. */
  readonly minVersion: number;
  readonly kinds: readonly string[];
  readonly secret: boolean;
  readonly lower: Layer<C, LS, R> | null;

  constructor(spec: { kind: string; version: number; minVersion?: number; secret?: boolean; lower: Layer<C, LS, R> | null }) {
    checkKind(spec.kind);
    const minVersion = spec.minVersion ?? spec.version;
    if (!Number.isInteger(spec.version) || spec.version < 1 || spec.version > 0xffff ||
        !Number.isInteger(minVersion) || minVersion < 1 || minVersion > spec.version) {
      throw new RangeError(`layer ${spec.kind}: versions must satisfy 1 <= minVersion <= version <= 65535`);
    }
    const below = spec.lower?.kinds ?? [];
    if (below.includes(spec.kind)) throw new RangeError(`layer ${spec.kind} appears twice in the stack`);
    this.kind = spec.kind;
    this.version = spec.version;
    this.minVersion = minVersion;
    this.lower = spec.lower;
    this.kinds = Object.freeze([...below, spec.kind]);
    this.secret = (spec.secret ?? false) || (spec.lower?.secret ?? false);
  }

  /** This layer's own record payload (a fresh buffer: the caller wipes it). */
  protected abstract encode(conn: C, rt: R): Uint8Array;
  /** Pure validation of this layer's payload at a supported record version; throws SnapshotError. */
  protected abstract check(bytes: Uint8Array, version: number): void;
  /** Restores this layer on top of the restored lower state. Must copy whatever it keeps from bytes. */
  protected abstract restore(bytes: Uint8Array, version: number, lower: LS, rt: R): S;
  /** Undoes restore. Default: nothing to undo. */
  protected release(_state: S, _rt: R): void {}
  /** The lower state a layer without a lower layer receives. */
  protected abstract bottom(): LS;

  serializeRecords(conn: C, rt: R): SnapshotRecord[] {
    const records = this.lower ? this.lower.serializeRecords(conn, rt) : [];
    let bytes: Uint8Array;
    try {
      bytes = this.encode(conn, rt);
    } catch (err) {
      zeroRecords(records);
      throw err;
    }
    if (!(bytes instanceof Uint8Array)) {
      zeroRecords(records);
      throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `layer ${this.kind}: serialize did not return bytes`);
    }
    records.push({ kind: this.kind, version: this.version, bytes });
    return records;
  }

  checkRecords(records: readonly SnapshotRecord[]): void {
    checkLayout(records, this.kinds);
    this.#checkOwn(records);
  }

  #checkOwn(records: readonly SnapshotRecord[]): void {
    // checkLayout ran once at the top; each layer checks its own record (the last) and recurses down.
    const own = records[records.length - 1]!;
    if (own.version < this.minVersion || own.version > this.version) {
      throw new SnapshotError('ERR_SNAPSHOT_VERSION',
        `layer ${this.kind}: record version ${own.version} not supported (reads ${this.minVersion}..${this.version})`);
    }
    if (this.lower) this.lower.checkRecords(records.slice(0, -1));
    try {
      this.check(own.bytes, own.version);
    } catch (err) {
      throw typed(err, this.kind, 'validation');
    }
  }

  restoreRecords(records: readonly SnapshotRecord[], rt: R): S {
    checkLayout(records, this.kinds);
    const own = records[records.length - 1]!;
    const lowerState = this.lower ? this.lower.restoreRecords(records.slice(0, -1), rt) : this.bottom();
    try {
      return this.restore(own.bytes, own.version, lowerState, rt);
    } catch (err) {
      if (this.lower) this.lower.discard(lowerState, rt);
      throw typed(err, this.kind, 'restore');
    }
  }

  discard(state: S, rt: R): void {
    try {
      this.release(state, rt);
    } catch {
      // discard must not throw: a failing undo cannot be reported better than the error that caused it
    }
  }

  serialize(conn: C, rt: R): Uint8Array {
    const records = this.serializeRecords(conn, rt);
    try {
      return encodeSnapshot(records, { flags: this.secret ? SnapshotFlags.SECRETS : 0 });
    } finally {
      zeroRecords(records);
    }
  }

  deserialize(bytes: Uint8Array, rt: R, options: Omit<DecodeOptions, 'expect'> = {}): S {
    const snap = decodeSnapshot(bytes, { ...options, expect: this.kinds });
    this.checkRecords(snap.records);
    return this.restoreRecords(snap.records, rt);
  }
}

/**
 * A layer whose record bytes come from somewhere else, typically native code. The TCP layer is
 *   new PluggedLayer({ kind: 'tcp', version: 1, serialize: (c) => engine.snapshot(c.flowId),
 *                      deserialize: (bytes) => engine.adopt(bytes), discard: (id) => engine.abort(id) })
 * and TLS sits on it with `lower: tcp` and `deserialize: (bytes, _v, flowId) => engine.tlsAdopt(flowId, bytes)`.
 * `check` is the cheap structural validation done before anything is restored; native restore still
 * validates every field itself.
 */
export interface PluggedLayerSpec<C, S, R, LS> {
  kind: string;
  version: number;
  minVersion?: number;
  /** Record holds key material (sets the container's SECRETS flag). */
  secret?: boolean;
  lower?: Layer<C, LS, R> | null;
  /** Maximum payload length accepted on restore. */
  maxBytes?: number;
  serialize(conn: C, rt: R): Uint8Array;
  check?(bytes: Uint8Array, version: number): void;
  deserialize(bytes: Uint8Array, version: number, lower: LS, rt: R): S;
  discard?(state: S, rt: R): void;
}

export class PluggedLayer<C, S, R = void, LS = null> extends BaseLayer<C, S, R, LS> {
  readonly #spec: PluggedLayerSpec<C, S, R, LS>;
  readonly maxBytes: number;

  constructor(spec: PluggedLayerSpec<C, S, R, LS>) {
    super({ kind: spec.kind, version: spec.version, minVersion: spec.minVersion, secret: spec.secret, lower: spec.lower ?? null });
    this.#spec = spec;
    this.maxBytes = spec.maxBytes ?? 1024 * 1024;
  }

  protected encode(conn: C, rt: R): Uint8Array {
    const bytes = this.#spec.serialize(conn, rt);
    if (bytes instanceof Uint8Array && bytes.length > this.maxBytes) {
      bytes.fill(0);
      throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `layer ${this.kind}: ${bytes.length} bytes exceed ${this.maxBytes}`);
    }
    return bytes;
  }

  protected check(bytes: Uint8Array, version: number): void {
    if (bytes.length > this.maxBytes) {
      throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `layer ${this.kind}: ${bytes.length} bytes exceed ${this.maxBytes}`);
    }
    this.#spec.check?.(bytes, version);
  }

  protected restore(bytes: Uint8Array, version: number, lower: LS, rt: R): S {
    return this.#spec.deserialize(bytes, version, lower, rt);
  }

  protected override release(state: S, rt: R): void {
    this.#spec.discard?.(state, rt);
  }

  protected bottom(): LS {
    return null as LS; // only reached without a lower layer, where LS defaults to null
  }
}

/** The application's part of a migrated connection (Capybara's `accept_migrated(user_data)`). */
export interface AppConn {
  readonly userData?: Uint8Array;
}

export interface AppState<LS> {
  /** A copy owned by the receiver. */
  readonly userData: Uint8Array;
  /** What the layers below restored (e.g. the adopted flow id), null without a lower layer. */
  readonly lower: LS;
}

export const APP_USER_DATA_MAX = 1024 * 1024;

/** Record "app" v1: the payload is the user data itself (0 .. maxUserData bytes). */
export class AppLayer<C extends AppConn, R = void, LS = null> extends BaseLayer<C, AppState<LS>, R, LS> {
  readonly maxUserData: number;

  constructor(options: { lower?: Layer<C, LS, R> | null; maxUserData?: number } = {}) {
    super({ kind: 'app', version: 1, lower: options.lower ?? null });
    const max = options.maxUserData ?? APP_USER_DATA_MAX;
    if (!Number.isInteger(max) || max < 0 || max > APP_USER_DATA_MAX) {
      throw new RangeError(`maxUserData must be an integer in 0..${APP_USER_DATA_MAX}`);
    }
    this.maxUserData = max;
  }

  protected encode(conn: C): Uint8Array {
    const data = conn.userData ?? new Uint8Array(0);
    if (!(data instanceof Uint8Array)) throw new TypeError('userData must be a Uint8Array');
    if (data.length > this.maxUserData) {
      throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `userData of ${data.length} bytes exceeds ${this.maxUserData}`);
    }
    return data.slice(); // the app keeps its buffer; this copy is wiped after encoding
  }

  protected check(bytes: Uint8Array): void {
    if (bytes.length > this.maxUserData) {
      throw new SnapshotError('ERR_SNAPSHOT_TOO_LARGE', `userData of ${bytes.length} bytes exceeds ${this.maxUserData}`);
    }
  }

  protected restore(bytes: Uint8Array, _version: number, lower: LS): AppState<LS> {
    return { userData: bytes.slice(), lower };
  }

  protected bottom(): LS {
    return null as LS;
  }
}
