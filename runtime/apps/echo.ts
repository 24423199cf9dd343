// Echo (RFC 862): every byte comes back; the peer's FIN is answered with ours after the last byte.
// Backpressure by pulling: a chunk is read only when the previous write did not fill the socket, so a
// client that stops reading stops us reading from it. Unlike pipe(), this lets capture() stop at an exact
// byte: nothing is read after it, and every byte read before it was already handed back to the socket.
import type { Duplex } from 'node:stream';
import {
  MAX_STATE_BYTES, StateReader, StateWriter, offerHooks, type MigrationHooks, type ResumableApp,
} from './resumable.js';

export const ECHO_PORT = 7;

/** Most bytes echoed in one event-loop turn, so one busy connection cannot hold the loop. */
const TURN_BYTES = 256 * 1024;

/** Per-connection handler; a capybara Connection gets the hooks so the migrator can use them. */
export function echoApp(sock: Duplex): void {
  offerHooks(sock, ECHO.onConnection(sock));
}

export function echoResumable(): ResumableApp {
  return ECHO;
}

/** Echo's state between events. */
export interface EchoState {
  /** The app answered the peer's FIN with its own (nothing is left to do). */
  ended: boolean;
  /** Bytes read but not written back yet (to write first on resume). */
  pending: Buffer;
}

const ECHO: ResumableApp = {
  onConnection: (sock) => echoSession(sock, { ended: false, pending: Buffer.alloc(0) }),
  resume: (sock, state) => echoSession(sock, decodeEchoState(state)),
};

function echoSession(sock: Duplex, state: EchoState): MigrationHooks {
  let { ended, pending } = state;
  let frozen = false;
  let waitingDrain = false;
  let pumping = false;
  let turn = 0;
  let yielded = false;

  const write = (d: Buffer): void => {
    if (sock.destroyed || sock.writableEnded) {
      ended = true;
      return;
    }
    turn += d.length;
    if (!sock.write(d)) waitingDrain = true;
  };
  const pump = (): void => {
    if (pumping) return;
    pumping = true;
    turn = 0;
    try {
      while (!frozen && !waitingDrain && !ended) {
        if (turn >= TURN_BYTES) {
          if (!yielded) {
            yielded = true;
            setImmediate(() => {
              yielded = false;
              pump();
            });
          }
          break;
        }
        if (pending.length > 0) {
          const p = pending;
          pending = Buffer.alloc(0);
          write(p);
          continue;
        }
        const d = sock.read() as Buffer | string | null;
        if (d === null) {
          if (sock.readableEnded) {
            ended = true;
            if (!sock.destroyed && !sock.writableEnded) sock.end();
          }
          break;
        }
        write(typeof d === 'string' ? Buffer.from(d, 'latin1') : d);
      }
    } finally {
      pumping = false;
    }
  };

  sock.on('readable', pump);
  sock.on('end', pump);
  sock.on('drain', () => {
    waitingDrain = false;
    pump();
  });
  sock.on('error', () => sock.destroy());
  pump();
  return {
    capture: () => {
      frozen = true;
      return Promise.resolve(encodeEchoState({ ended, pending }));
    },
    abort: () => {
      if (!frozen) return;
      frozen = false;
      pump();
    },
  };
}

// State format, little-endian, version 1:
//   0 4 magic "CPEC" | 4 2 version (1) | 6 1 flags: bit0 ended, others zero | 7 1 reserved (0)
//   8 4 P = pending length (<= 4 MiB) | 12 P pending bytes
// Nothing may follow. An empty state means a fresh connection.

const ECHO_MAGIC = 'CPEC';
const ECHO_VERSION = 1;

export function encodeEchoState(s: EchoState): Uint8Array {
  return new StateWriter(12 + s.pending.length)
    .head(ECHO_MAGIC, ECHO_VERSION).u8(s.ended ? 1 : 0).u8(0)
    .u32(s.pending.length).raw(s.pending)
    .done();
}

/** Validates and decodes a captured echo state (throws AppStateError, code ERR_APP_STATE). */
export function decodeEchoState(bytes: Uint8Array): EchoState {
  if (bytes instanceof Uint8Array && bytes.length === 0) return { ended: false, pending: Buffer.alloc(0) };
  const rd = new StateReader(bytes, 'echo');
  rd.head(ECHO_MAGIC, ECHO_VERSION);
  const flags = rd.flags(1);
  rd.reserved();
  const n = rd.u32('pending length');
  if (n > MAX_STATE_BYTES) rd.fail(`pending length ${n} over ${MAX_STATE_BYTES}`);
  const pending = rd.raw(n, 'pending bytes');
  rd.end();
  if ((flags & 1) !== 0 && n > 0) rd.fail('ended with bytes still pending');
  return { ended: (flags & 1) !== 0, pending };
}
