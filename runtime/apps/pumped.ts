// The event plumbing of the resumable state-machine apps (http, l7): a connection is driven by one
// `pump` that runs the app's transitions until one has to wait (for input, for the socket to drain, for
// a capture), so between two events the app's whole state is its plain state object and capture() can
// take it at any moment. Input is pulled with read() only when the parser needs it, so bytes the app has
// not asked for stay in the socket (TCP backpressure), not in the state. A turn writes at most TURN_BYTES
// and then yields, so one fast connection cannot starve the others or delay a capture.
import type { Duplex } from 'node:stream';

// Most bytes written in one event-loop turn. A socket that never pushes back (loopback takes 4 MB at
// once) would otherwise let one response hold the loop for the whole burst: other connections starve
// and a migration cannot capture this one until the burst is over.
const TURN_BYTES = 256 * 1024;

/** The part of an app's state the plumbing reads and writes. */
export interface PulledState {
  /** The peer's FIN was seen by the app (before capture). */
  peerEof: boolean;
  /** Bytes pulled from the socket and not consumed by the parser yet. */
  buffered: Buffer;
}

export abstract class PumpedSession<S extends PulledState> {
  protected readonly sock: Duplex;
  protected s: S;
  /** Captured (or moving): no read, no write, no transition. */
  protected frozen = false;
  protected waitingDrain = false;
  #pumping = false;
  #turn = 0; // bytes written in this turn
  #yielded = false;

  protected constructor(sock: Duplex, state: S) {
    this.sock = sock;
    this.s = { ...state };
  }

  /** One transition; false when it has to wait. */
  protected abstract step(): boolean;
  /** The connection is finished for the app (its input is then dropped so the peer's FIN is seen). */
  protected abstract isDone(): boolean;
  protected abstract markDone(): void;
  /** Something outside the pump drives the connection for now (e.g. a relay): the pump stays out. */
  protected parked(): boolean {
    return false;
  }
  /** The socket drained (after a write returned false). */
  protected onDrain(): void {}

  /** Wires the socket's events and runs the first transitions; subclasses call it last in their constructor. */
  protected start(): void {
    const sock = this.sock;
    sock.on('readable', () => this.pump());
    sock.on('end', () => this.pump());
    sock.on('drain', () => {
      this.waitingDrain = false;
      this.onDrain();
      this.pump();
    });
    sock.on('error', () => sock.destroy());
    this.pump();
  }

  protected pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    this.#turn = 0;
    try {
      while (!this.frozen && !this.waitingDrain && !this.isDone() && !this.parked() && this.step()) {
        if (this.#turn >= TURN_BYTES) {
          this.#yield();
          break;
        }
      }
      if (!this.frozen && this.isDone()) this.#discard();
    } finally {
      this.#pumping = false;
    }
  }

  /** Done: input is dropped so the peer's FIN is seen and the socket can close (autoDestroy). */
  #discard(): void {
    this.s.buffered = Buffer.alloc(0);
    while (!this.sock.destroyed && this.sock.read() !== null);
  }

  /** Carries on in a later turn (a capture in between simply finds the state as it is now). */
  #yield(): void {
    if (this.#yielded) return;
    this.#yielded = true;
    setImmediate(() => {
      this.#yielded = false;
      this.pump();
    });
  }

  /** Pulls available input into the parser's buffer, up to readAhead bytes; true if any came. */
  protected fill(readAhead: number): boolean {
    const s = this.s;
    let got = false;
    while (s.buffered.length < readAhead) {
      const room = readAhead - s.buffered.length;
      const d = (this.sock.readableLength > room ? this.sock.read(room) : this.sock.read()) as Buffer | string | null;
      if (d === null) break;
      const b = typeof d === 'string' ? Buffer.from(d, 'latin1') : d;
      s.buffered = s.buffered.length === 0 ? b : Buffer.concat([s.buffered, b]);
      got = true;
    }
    if (this.sock.readableEnded) s.peerEof = true;
    return got;
  }

  /** Hands bytes to the socket; the state has already counted them. False when the socket is gone. */
  protected write(data: Buffer): boolean {
    const sock = this.sock;
    if (sock.destroyed || sock.writableEnded) {
      this.markDone();
      return false;
    }
    this.#turn += data.length;
    if (!sock.write(data)) this.waitingDrain = true;
    return true;
  }

  protected finish(end: boolean): void {
    if (end && !this.sock.destroyed && !this.sock.writableEnded) this.sock.end();
    this.markDone();
  }
}
