// Typed errors of the snapshot format and the layer stack. Codes are stable strings: callers and the
// migration protocol switch on them (a peer's 'rejected' reason carries the code).
import { CapybaraError } from '../runtime/errors.js';

export type SnapshotErrorCode =
  | 'ERR_SNAPSHOT_TRUNCATED'   // fewer bytes than the header or the declared total length
  | 'ERR_SNAPSHOT_MAGIC'       // not "CPBY"
  | 'ERR_SNAPSHOT_VERSION'     // unknown container version or flag bits, or a layer record version this reader lacks
  | 'ERR_SNAPSHOT_CHECKSUM'    // CRC32C mismatch: corrupted on the way
  | 'ERR_SNAPSHOT_CORRUPT'     // structurally invalid: bad lengths, kinds, duplicates, reserved bits, trailing bytes
  | 'ERR_SNAPSHOT_TOO_LARGE'   // over a size cap (container, layer count, user data)
  | 'ERR_SNAPSHOT_LAYERS'      // well-formed, but its layers are not the receiving stack's (missing, extra, out of order)
  | 'ERR_SNAPSHOT_RESTORE';    // a layer's own restore failed with an untyped error (cause attached)

export class SnapshotError extends CapybaraError {
  declare readonly code: SnapshotErrorCode;
  constructor(code: SnapshotErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
