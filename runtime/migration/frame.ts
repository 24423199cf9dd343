// Length-prefixed framing over a byte stream: u32 little-endian body length, then the body. Bytes are
// accumulated until a whole frame is there (a truncated frame just waits); a declared length over the
// limit fails at once, before any of the body is buffered, because the stream cannot be resynchronised
// and a peer must not make us hold arbitrary amounts of memory.
import { ChannelError } from './errors.js';

export const FRAME_LENGTH_BYTES = 4;

export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(4096);
  #start = 0;
  #end = 0;
  /** Limit on a frame body; the owner lowers it before authentication. */
  maxFrameBytes: number;

  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held (partial frames and frames not consumed yet). */
  get buffered(): number { return this.#end - this.#start; }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#end + chunk.length > this.#buf.length) {
      const live = this.#end - this.#start;
      const need = live + chunk.length;
      if (need <= this.#buf.length && this.#start >= this.#buf.length / 2) {
        this.#buf.copy(this.#buf, 0, this.#start, this.#end);
      } else {
        let size = this.#buf.length;
        while (size < need) size *= 2;
        const next = Buffer.allocUnsafe(size);
        this.#buf.copy(next, 0, this.#start, this.#end);
        this.#buf.fill(0); // may hold plaintext-equivalent ciphertext; cheap to wipe
        this.#buf = next;
      }
      this.#buf.fill(0, live);
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The next complete frame body (a view valid until the next push/consume), or null. */
  peek(): Buffer | null {
    const avail = this.#end - this.#start;
    if (avail < FRAME_LENGTH_BYTES) return null;
    const len = this.#buf.readUInt32LE(this.#start);
    if (len > this.maxFrameBytes) {
      throw new ChannelError('ERR_CHANNEL_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    if (avail < FRAME_LENGTH_BYTES + len) return null;
    const at = this.#start + FRAME_LENGTH_BYTES;
    return this.#buf.subarray(at, at + len);
  }

  /** Drops the frame peek() returned. */
  consume(): void {
    const len = this.#buf.readUInt32LE(this.#start);
    this.#start += FRAME_LENGTH_BYTES + len;
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      // a 16 MiB offer must not pin 32 MiB for the life of the channel
      if (this.#buf.length > 65536) {
        this.#buf.fill(0);
        this.#buf = Buffer.alloc(4096);
      }
    }
  }

  wipe(): void {
    this.#buf.fill(0);
    this.#start = this.#end = 0;
  }
}

/** Prefixes a body with its length. */
export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_LENGTH_BYTES + body.length);
  out.writeUInt32LE(body.length, 0);
  out.set(body, FRAME_LENGTH_BYTES);
  return out;
}
