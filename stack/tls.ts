// The TLS layer of the onion: its record is the engine's TLS session ("CTLS", native/tls/record.h:
// version, suite, keys, IVs, sequence numbers, traffic secrets), sitting on the TCP layer's record.
// Restoring goes bottom up: the TCP flow is adopted first, then the session is built on that flow id.
// The record holds key material, so the layer is `secret` (the container's SECRETS flag) and every
// buffer that held it is wiped by the layer machinery (stack/layer.ts) and the migration code.
import { PluggedLayer, type Layer } from './layer.js';
import { SnapshotError } from './errors.js';
import { decodeSnapshot } from './snapshot.js';

export const TLS_RECORD_MAGIC = 'CTLS';
export const TLS_RECORD_VERSION = 1;
/** Far above a real session's record (keys, IVs, secrets, one partial record); a cap for untrusted input. */
export const TLS_RECORD_MAX = 64 * 1024;

/** What the TLS layer needs from the engine (the addon's tlsSnapshot / tlsAdopt / tlsFree, abort). */
export interface TlsLayerEngine {
  tlsSnapshot(flowId: number): Uint8Array | number;
  tlsAdopt(flowId: number, record: Uint8Array): number;
  tlsFree(flowId: number): void;
  abort(flowId: number): number;
}

/** Cheap structural check done before anything is restored; the engine validates every field itself. */
export function checkTlsRecord(bytes: Uint8Array): void {
  if (bytes.length < 16) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `tls record of ${bytes.length} bytes is shorter than its header`);
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== TLS_RECORD_MAGIC.charCodeAt(i)) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'tls record: bad magic (not "CTLS")');
  }
  // "CTLS" | u16 version | u16 flags | u32 total length | ... (native/tls/record.h)
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const version = v.getUint16(4, true);
  if (version !== TLS_RECORD_VERSION) throw new SnapshotError('ERR_SNAPSHOT_VERSION', `tls record version ${version} is not supported`);
  const total = v.getUint32(8, true);
  if (total !== bytes.length) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', `tls record declares ${total} bytes but has ${bytes.length}`);
}

/**
 * The TLS layer over a TCP layer whose restored state is the adopted flow id. Its own state is that
 * same flow id, now with a TLS session in the engine. Discarding it undoes both (abort frees the session).
 */
export function tlsLayer<C extends { flowId: number }, R = void>(tcp: Layer<C, number, R>, engine: () => TlsLayerEngine,
  fail: (what: string, detail: string, cause?: unknown) => Error): PluggedLayer<C, number, R, number> {
  return new PluggedLayer<C, number, R, number>({
    kind: 'tls',
    version: TLS_RECORD_VERSION,
    secret: true,
    lower: tcp,
    maxBytes: TLS_RECORD_MAX,
    serialize: (c) => {
      const r = engine().tlsSnapshot(c.flowId);
      if (typeof r === 'number') throw fail('snapshot', `engine TLS snapshot failed (errno ${r})`);
      return r;
    },
    check: (bytes) => checkTlsRecord(bytes),
    deserialize: (bytes, _version, flowId) => {
      try {
        engine().tlsAdopt(flowId, bytes);
      } catch (err) {
        throw fail('adopt', `engine refused the TLS record: ${(err as Error).message}`, err);
      }
      return flowId;
    },
    discard: (flowId) => {
      const e = engine();
      e.tlsFree(flowId);
      e.abort(flowId);
    },
  });
}

/** The layer kinds of a snapshot container, bottom first (validates the container as a whole). */
export function snapshotKinds(bytes: Uint8Array): string[] {
  return decodeSnapshot(bytes).records.map((r) => r.kind);
}
