// Typed errors of migration (MigrationError: ERR_MIGRATION_*) and of its channel. Fatal ones close the channel (the stream cannot be trusted or
// resynchronised afterwards); ERR_CHANNEL_REPLAY only drops the offending frame.
import { CapybaraError } from '../errors.js';

export type ChannelErrorCode =
  | 'ERR_CHANNEL_AUTH'             // peer could not prove the cluster key, or a frame failed its AEAD tag
  | 'ERR_CHANNEL_REPLAY'           // duplicate, too old, or from a retired key epoch: frame dropped
  | 'ERR_CHANNEL_FRAME_TOO_LARGE'  // declared frame length over the limit (before or after the handshake)
  | 'ERR_CHANNEL_TRUNCATED'        // the transport ended in the middle of a frame
  | 'ERR_CHANNEL_PROTOCOL'         // malformed frame or message, or one out of turn
  | 'ERR_CHANNEL_EPOCH'            // the peer moved to a key epoch this side never got (at end of stream)
  | 'ERR_CHANNEL_MESSAGE'          // a message given to send() is invalid
  | 'ERR_CHANNEL_CONFIG'           // invalid options or rotateKey arguments
  | 'ERR_CHANNEL_TIMEOUT'          // the handshake did not finish in time
  | 'ERR_CHANNEL_TRANSPORT'        // the underlying stream failed (cause attached)
  | 'ERR_CHANNEL_CLOSED';          // used after close

export class ChannelError extends CapybaraError {
  declare readonly code: ChannelErrorCode;
  /** Whether the channel was closed because of it. */
  readonly fatal: boolean;
  constructor(code: ChannelErrorCode, message: string, options?: { cause?: unknown; fatal?: boolean }) {
    super(code, message, options);
    this.fatal = options?.fatal ?? code !== 'ERR_CHANNEL_REPLAY';
  }
}

/** A migration failed; the connection carries on where it was unless the code says otherwise. */
export class MigrationError extends CapybaraError {}

/** A layer's failure during a migration (stack/tls.ts tlsLayer's `fail`) as the MigrationError it is. */
export function layerFailure(what: string, detail: string, cause?: unknown): MigrationError {
  return new MigrationError(what === 'snapshot' ? 'ERR_MIGRATION_SNAPSHOT' : 'ERR_MIGRATION_ADOPT', detail, { cause });
}
