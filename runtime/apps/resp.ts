// RESP (the Redis serialization protocol) framing, as much as a forwarding front end needs: where a client's
// command ends (and its arguments, for the few commands the front end acts on), and where a server's reply
// ends. Stateless scanners over a byte buffer: a partial command or reply is "not yet" (null / -1), and the
// bytes themselves are the whole parser position, which is what lets a half-received command migrate as
// plain bytes. Bulk payloads are skipped by their length, never scanned.
//
// Commands: RESP arrays of bulk strings (what redis-cli and redis-benchmark send) and inline commands
// (a line of space-separated words, as typed into nc). Replies: every RESP2 and RESP3 type.
import { CapybaraError } from '../errors.js';

/** The peer sent something that is not RESP; the connection cannot continue. */
export class RespError extends CapybaraError {
  constructor(message: string) {
    super('ERR_RESP_PROTOCOL', message);
  }
}

export interface RespLimits {
  /** Most bytes of one command (array header, every bulk). */
  maxCommand: number;
  /** Most arguments of one command. */
  maxArgs: number;
}

export const DEFAULT_RESP_LIMITS: RespLimits = { maxCommand: 512 * 1024, maxArgs: 1024 * 1024 };
const MAX_INLINE = 64 * 1024;
const MAX_DEPTH = 32;
const CR = 0x0d;
const LF = 0x0a;

export interface Command {
  /** Bytes of buf the command takes (forwarded verbatim). */
  length: number;
  /** Its arguments (views into buf); empty for an empty inline line. */
  args: Buffer[];
}

/** Index of the CRLF ending the line that starts at off, or -1. */
function lineEnd(buf: Buffer, off: number): number {
  const i = buf.indexOf(LF, off);
  if (i < 0) return -1;
  if (i === off || buf[i - 1] !== CR) throw new RespError('line not terminated by CRLF');
  return i - 1;
}

/** A decimal integer in buf[from, to); throws on anything else. */
function integer(buf: Buffer, from: number, to: number, what: string): number {
  if (to <= from || to - from > 18) throw new RespError(`bad ${what}`);
  let neg = false;
  let i = from;
  if (buf[i] === 0x2d) {
    neg = true;
    i++;
    if (i === to) throw new RespError(`bad ${what}`);
  }
  let n = 0;
  for (; i < to; i++) {
    const c = buf[i]! - 0x30;
    if (c < 0 || c > 9) throw new RespError(`bad ${what}`);
    n = n * 10 + c;
  }
  return neg ? -n : n;
}

/**
 * The first complete command at the start of buf, or null when it is not all there yet. Throws RespError
 * on malformed input or a command over the limits (also when what is there already exceeds them).
 */
export function scanCommand(buf: Buffer, limits: RespLimits = DEFAULT_RESP_LIMITS): Command | null {
  if (buf.length === 0) return null;
  if (buf[0] !== 0x2a /* '*' */) return scanInline(buf);
  const e = lineEnd(buf, 1);
  if (e < 0) {
    if (buf.length > 32) throw new RespError('array header too long');
    return null;
  }
  const n = integer(buf, 1, e, 'array length');
  if (n < 0 || n > limits.maxArgs) throw new RespError(`array length ${n} out of range`);
  let off = e + 2;
  const args: Buffer[] = [];
  for (let k = 0; k < n; k++) {
    if (off >= buf.length) return null;
    if (buf[off] !== 0x24 /* '$' */) throw new RespError(`expected a bulk string, got "${String.fromCharCode(buf[off]!)}"`);
    const le = lineEnd(buf, off + 1);
    if (le < 0) {
      if (buf.length - off > 32) throw new RespError('bulk header too long');
      return null;
    }
    const len = integer(buf, off + 1, le, 'bulk length');
    if (len < 0 || len > limits.maxCommand) throw new RespError(`bulk length ${len} out of range`);
    const start = le + 2;
    if (start + len > limits.maxCommand) throw new RespError(`command over ${limits.maxCommand} bytes`);
    if (start + len + 2 > buf.length) return null;
    if (buf[start + len] !== CR || buf[start + len + 1] !== LF) throw new RespError('bulk string not terminated by CRLF');
    args.push(buf.subarray(start, start + len));
    off = start + len + 2;
  }
  return { length: off, args };
}

function scanInline(buf: Buffer): Command | null {
  const i = buf.indexOf(LF);
  if (i < 0) {
    if (buf.length > MAX_INLINE) throw new RespError('inline command too long');
    return null;
  }
  const end = i > 0 && buf[i - 1] === CR ? i - 1 : i;
  const words = buf.subarray(0, end).toString('latin1').split(/[ \t]+/).filter((w) => w.length > 0);
  return { length: i + 1, args: words.map((w) => Buffer.from(w, 'latin1')) };
}

/**
 * End (exclusive) of the complete reply starting at off, or -1 when it is not all there yet. Throws
 * RespError on malformed input.
 */
export function scanReply(buf: Buffer, off = 0, depth = 0): number {
  if (depth > MAX_DEPTH) throw new RespError('reply nested too deeply');
  if (off >= buf.length) return -1;
  const type = buf[off]!;
  const e = lineEnd(buf, off + 1);
  if (e < 0) return -1;
  switch (type) {
    case 0x2b: case 0x2d: case 0x3a: case 0x5f: case 0x2c: case 0x23: case 0x28: // + - : _ , # (
      return e + 2;
    case 0x24: case 0x21: case 0x3d: { // $ ! = : length-prefixed
      const len = integer(buf, off + 1, e, 'bulk length');
      if (len < 0) return e + 2; // null bulk
      const end = e + 2 + len + 2;
      if (end > buf.length) return -1;
      if (buf[end - 2] !== CR || buf[end - 1] !== LF) throw new RespError('bulk reply not terminated by CRLF');
      return end;
    }
    case 0x2a: case 0x7e: case 0x3e: case 0x25: case 0x7c: { // * ~ > : n elements; % | : n pairs
      const n = integer(buf, off + 1, e, 'aggregate length');
      if (n < 0) return e + 2; // null array
      const count = type === 0x25 || type === 0x7c ? 2 * n : n;
      let at = e + 2;
      for (let k = 0; k < count; k++) {
        at = scanReply(buf, at, depth + 1);
        if (at < 0) return -1;
      }
      // An attribute (|) precedes the reply it describes: both make one reply.
      return type === 0x7c ? scanReply(buf, at, depth + 1) : at;
    }
    default:
      throw new RespError(`unknown reply type "${String.fromCharCode(type)}"`);
  }
}

/** The RESP encoding of a command (arrays of bulk strings), for requests the front end makes itself. */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}
