// Digest: reads everything the peer sends, keeping a running SHA-256 and a byte count; when the peer
// closes its side it answers one line "<bytes> <sha256 hex>\n" and closes too. An upload sink whose
// answer proves every byte arrived once and in order, even when the connection moved between runtimes
// during the upload: the running hash travels in the app's state (runtime/apps/resumable.ts).
// Pulls with 'readable' + read(), so a byte is either hashed here (and in the state) or still in the socket.
import type { Duplex } from 'node:stream';
import { Sha256 } from './digest-sha256.js';
import { StateReader, StateWriter, offerHooks, type MigrationHooks, type ResumableApp } from './resumable.js';

export const DIGEST_PORT = 7900;

/** Most bytes hashed in one event-loop turn, so one busy upload cannot hold the loop. */
const TURN_BYTES = 1024 * 1024;

export function digestApp(sock: Duplex): void {
  offerHooks(sock, DIGEST.onConnection(sock));
}

export function digestResumable(): ResumableApp {
  return DIGEST;
}

const DIGEST: ResumableApp = {
  onConnection: (sock) => digestSession(sock, new Sha256(), false),
  resume: (sock, state) => {
    const s = decodeDigestState(state);
    return digestSession(sock, s.hash, s.answered);
  },
};

/** The answer line for a byte count and digest. */
export function digestLine(bytes: number, hex: string): string {
  return `${bytes} ${hex}\n`;
}

function digestSession(sock: Duplex, hash: Sha256, answeredAtStart: boolean): MigrationHooks {
  let answered = answeredAtStart;
  let frozen = false;
  let yielded = false;

  const pump = (): void => {
    let turn = 0;
    while (!frozen && !answered) {
      if (turn >= TURN_BYTES) {
        if (!yielded) {
          yielded = true;
          setImmediate(() => {
            yielded = false;
            pump();
          });
        }
        return;
      }
      const d = sock.read() as Buffer | string | null;
      if (d === null) {
        if (sock.readableEnded) {
          answered = true;
          if (!sock.destroyed && !sock.writableEnded) sock.end(digestLine(hash.length, hash.hex()));
        }
        return;
      }
      const b = typeof d === 'string' ? Buffer.from(d, 'latin1') : d;
      hash.update(b);
      turn += b.length;
    }
  };

  sock.on('readable', pump);
  sock.on('end', pump);
  sock.on('error', () => sock.destroy());
  pump();
  return {
    capture: () => {
      frozen = true;
      return Promise.resolve(encodeDigestState(hash, answered));
    },
    abort: () => {
      if (!frozen) return;
      frozen = false;
      pump();
    },
  };
}

// State format, little-endian, version 1:
//   0 4 magic "CPDG" | 4 2 version (1) | 6 1 flags: bit0 answered, others zero | 7 1 reserved (0)
//   8 8 bytes hashed | 16 32 chaining words (8 x u32) | 48 P partial block, P = bytes hashed % 64
// Nothing may follow. An empty state means a fresh connection.

const MAGIC = 'CPDG';
const VERSION = 1;

export function encodeDigestState(hash: Sha256, answered: boolean): Uint8Array {
  const s = hash.state();
  const w = new StateWriter(48 + s.partial.length)
    .head(MAGIC, VERSION).u8(answered ? 1 : 0).u8(0)
    .u64(s.length);
  for (const x of s.h) w.u32(x);
  return w.raw(s.partial).done();
}

/** Validates and decodes a captured digest state (throws AppStateError, code ERR_APP_STATE). */
export function decodeDigestState(bytes: Uint8Array): { hash: Sha256; answered: boolean } {
  if (bytes instanceof Uint8Array && bytes.length === 0) return { hash: new Sha256(), answered: false };
  const rd = new StateReader(bytes, 'digest');
  rd.head(MAGIC, VERSION);
  const flags = rd.flags(1);
  rd.reserved();
  const length = rd.u64('bytes hashed');
  const h = new Uint32Array(8);
  for (let i = 0; i < 8; i++) h[i] = rd.u32('chaining word');
  const partial = rd.raw(length % 64, 'partial block');
  rd.end();
  return { hash: Sha256.from({ h, length, partial }), answered: (flags & 1) !== 0 };
}
