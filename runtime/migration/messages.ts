// The migration protocol's messages as they travel inside sealed channel frames (see channel.ts for the
// frame). Plaintext layout, little-endian, one leading type byte:
//
//   1 offer     u64 migrationId | u32 epoch | flow | u32 n | n snapshot bytes (<= 16 MiB)
//   2 adopted   u64 migrationId | u32 epoch
//   3 rejected  u64 migrationId | u32 epoch | u16 n | n bytes UTF-8 reason (<= 1024)
//   4 release   u64 migrationId | u32 epoch
//   5 ping      u64 nonce
//   6 pong      u64 nonce
//   flow = u8 family (4) | 4 local address | u16 local port | 4 remote address | u16 remote port
//
// migrationId is allocated by the source runtime, increasing within its epoch; epoch is the source
// runtime's incarnation (bumped on every restart). (migrationId, epoch) makes every message idempotent:
// see dedupe.ts. Integers are JS numbers: ids above 2^53-1 are rejected. Decoding is total: anything
// malformed is ERR_CHANNEL_PROTOCOL, including trailing bytes.
import { ByteReader, ByteWriter } from '../../stack/bytes.js';
import { SNAPSHOT_MAX_BYTES } from '../../stack/snapshot.js';
import { ChannelError } from './errors.js';

export interface FlowKey {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
}

export interface OfferMessage {
  readonly type: 'offer';
  readonly migrationId: number;
  readonly epoch: number;
  readonly flow: FlowKey;
  /** A snapshot container (stack/snapshot.ts); may hold keys: zero() it after adopting. */
  readonly snapshot: Uint8Array;
}
export interface AdoptedMessage { readonly type: 'adopted'; readonly migrationId: number; readonly epoch: number }
export interface RejectedMessage {
  readonly type: 'rejected'; readonly migrationId: number; readonly epoch: number; readonly reason: string;
}
export interface ReleaseMessage { readonly type: 'release'; readonly migrationId: number; readonly epoch: number }
/** TCP segments that reached the source while the flow was frozen: the target feeds them to its input. */
export interface ForwardMessage {
  readonly type: 'forward'; readonly migrationId: number; readonly epoch: number;
  readonly segments: readonly ForwardedSegment[];
}
export interface ForwardedSegment { readonly src: string; readonly dst: string; readonly bytes: Uint8Array }
export interface PingMessage { readonly type: 'ping'; readonly nonce: number }
export interface PongMessage { readonly type: 'pong'; readonly nonce: number }

export type MigrationMessage =
  | OfferMessage | AdoptedMessage | RejectedMessage | ReleaseMessage | ForwardMessage | PingMessage | PongMessage;
export type MigrationMessageType = MigrationMessage['type'];

export const MESSAGE_TYPES: Readonly<Record<MigrationMessageType, number>> = {
  offer: 1, adopted: 2, rejected: 3, release: 4, ping: 5, pong: 6, forward: 7,
};
/** Bounds of a forward message: what one frozen flow may hold (native/tcp/tcp.h TCP_HOLD_FLOW_SEGS). */
export const MAX_FORWARD_SEGMENTS = 64;
export const MAX_FORWARD_SEGMENT_BYTES = 2048;
export const MAX_REASON_BYTES = 1024;
const FLOW_BYTES = 1 + 4 + 2 + 4 + 2;
const MAX_U32 = 0xffffffff;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function bad(message: string): ChannelError {
  return new ChannelError('ERR_CHANNEL_MESSAGE', message, { fatal: false });
}

function parseIPv4(s: unknown, what: string): number[] {
  const parts = typeof s === 'string' ? s.split('.') : [];
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
    throw bad(`${what} ${String(s)} is not a dotted IPv4 address`);
  }
  return parts.map(Number);
}

function checkInt(v: unknown, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw bad(`${what} must be an integer in 0..${max}`);
  return v;
}

/** Plaintext bytes of a message; throws ERR_CHANNEL_MESSAGE (not fatal) for an invalid one. */
export function encodeMessage(msg: MigrationMessage): Uint8Array {
  switch (msg.type) {
    case 'offer': {
      const id = checkInt(msg.migrationId, Number.MAX_SAFE_INTEGER, 'migrationId');
      const epoch = checkInt(msg.epoch, MAX_U32, 'epoch');
      const la = parseIPv4(msg.flow?.localAddress, 'localAddress');
      const ra = parseIPv4(msg.flow?.remoteAddress, 'remoteAddress');
      const lp = checkInt(msg.flow.localPort, 0xffff, 'localPort');
      const rp = checkInt(msg.flow.remotePort, 0xffff, 'remotePort');
      if (!(msg.snapshot instanceof Uint8Array)) throw bad('snapshot must be a Uint8Array');
      if (msg.snapshot.length > SNAPSHOT_MAX_BYTES) throw bad(`snapshot of ${msg.snapshot.length} bytes is too large`);
      const w = new ByteWriter(1 + 8 + 4 + FLOW_BYTES + 4 + msg.snapshot.length);
      w.u8(MESSAGE_TYPES.offer).u64(id).u32(epoch);
      w.u8(4).raw(Uint8Array.from(la)).u16(lp).raw(Uint8Array.from(ra)).u16(rp);
      w.u32(msg.snapshot.length).raw(msg.snapshot);
      return w.bytes;
    }
    case 'adopted':
    case 'release': {
      const id = checkInt(msg.migrationId, Number.MAX_SAFE_INTEGER, 'migrationId');
      const epoch = checkInt(msg.epoch, MAX_U32, 'epoch');
      return new ByteWriter(13).u8(MESSAGE_TYPES[msg.type]).u64(id).u32(epoch).bytes;
    }
    case 'rejected': {
      const id = checkInt(msg.migrationId, Number.MAX_SAFE_INTEGER, 'migrationId');
      const epoch = checkInt(msg.epoch, MAX_U32, 'epoch');
      if (typeof msg.reason !== 'string') throw bad('reason must be a string');
      const reason = utf8.encode(msg.reason);
      if (reason.length > MAX_REASON_BYTES) throw bad(`reason longer than ${MAX_REASON_BYTES} bytes`);
      return new ByteWriter(15 + reason.length).u8(MESSAGE_TYPES.rejected).u64(id).u32(epoch).u16(reason.length).raw(reason).bytes;
    }
    case 'forward': {
      const id = checkInt(msg.migrationId, Number.MAX_SAFE_INTEGER, 'migrationId');
      const epoch = checkInt(msg.epoch, MAX_U32, 'epoch');
      if (!Array.isArray(msg.segments) || msg.segments.length > MAX_FORWARD_SEGMENTS) {
        throw bad(`forward carries 0..${MAX_FORWARD_SEGMENTS} segments`);
      }
      let size = 1 + 8 + 4 + 1;
      const parts = msg.segments.map((seg) => {
        const src = parseIPv4(seg.src, 'src');
        const dst = parseIPv4(seg.dst, 'dst');
        if (!(seg.bytes instanceof Uint8Array) || seg.bytes.length > MAX_FORWARD_SEGMENT_BYTES) {
          throw bad(`a forwarded segment has 0..${MAX_FORWARD_SEGMENT_BYTES} bytes`);
        }
        size += 4 + 4 + 2 + seg.bytes.length;
        return { src, dst, bytes: seg.bytes };
      });
      const w = new ByteWriter(size);
      w.u8(MESSAGE_TYPES.forward).u64(id).u32(epoch).u8(parts.length);
      for (const p of parts) w.raw(Uint8Array.from(p.src)).raw(Uint8Array.from(p.dst)).u16(p.bytes.length).raw(p.bytes);
      return w.bytes;
    }
    case 'ping':
    case 'pong': {
      const nonce = checkInt(msg.nonce, Number.MAX_SAFE_INTEGER, 'nonce');
      return new ByteWriter(9).u8(MESSAGE_TYPES[msg.type]).u64(nonce).bytes;
    }
    default:
      throw bad(`unknown message type ${String((msg as { type?: unknown }).type)}`);
  }
}

const short = (what: string) => new ChannelError('ERR_CHANNEL_PROTOCOL', `message truncated at ${what}`);

function u64(r: ByteReader, what: string): number {
  const v = r.u64(what);
  if (v === undefined) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `${what} above 2^53-1`);
  return v;
}

function ipv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** Parses plaintext into a message; `snapshot` is a view into `bytes`. Throws ERR_CHANNEL_PROTOCOL. */
export function decodeMessage(bytes: Uint8Array): MigrationMessage {
  const r = new ByteReader(bytes, short);
  const t = r.u8('type');
  let msg: MigrationMessage;
  switch (t) {
    case MESSAGE_TYPES.offer: {
      const migrationId = u64(r, 'migrationId');
      const epoch = r.u32('epoch');
      const family = r.u8('family');
      if (family !== 4) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `address family ${family} unsupported`);
      const localAddress = ipv4(r.bytes(4, 'local address'));
      const localPort = r.u16('local port');
      const remoteAddress = ipv4(r.bytes(4, 'remote address'));
      const remotePort = r.u16('remote port');
      const n = r.u32('snapshot length');
      if (n > SNAPSHOT_MAX_BYTES) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `snapshot of ${n} bytes is too large`);
      const view = r.bytes(n, 'snapshot');
      const snapshot = new Uint8Array(view.buffer, view.byteOffset, view.length); // a plain view, also for Buffer input
      msg = { type: 'offer', migrationId, epoch, flow: { localAddress, localPort, remoteAddress, remotePort }, snapshot };
      break;
    }
    case MESSAGE_TYPES.adopted:
    case MESSAGE_TYPES.release: {
      const migrationId = u64(r, 'migrationId');
      const epoch = r.u32('epoch');
      msg = { type: t === MESSAGE_TYPES.adopted ? 'adopted' : 'release', migrationId, epoch };
      break;
    }
    case MESSAGE_TYPES.rejected: {
      const migrationId = u64(r, 'migrationId');
      const epoch = r.u32('epoch');
      const n = r.u16('reason length');
      if (n > MAX_REASON_BYTES) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `reason of ${n} bytes is too long`);
      let reason: string;
      try {
        reason = utf8Strict.decode(r.bytes(n, 'reason'));
      } catch {
        throw new ChannelError('ERR_CHANNEL_PROTOCOL', 'reason is not valid UTF-8');
      }
      msg = { type: 'rejected', migrationId, epoch, reason };
      break;
    }
    case MESSAGE_TYPES.forward: {
      const migrationId = u64(r, 'migrationId');
      const epoch = r.u32('epoch');
      const count = r.u8('segment count');
      if (count > MAX_FORWARD_SEGMENTS) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `${count} forwarded segments is too many`);
      const segments: ForwardedSegment[] = [];
      for (let i = 0; i < count; i++) {
        const src = ipv4(r.bytes(4, 'segment src'));
        const dst = ipv4(r.bytes(4, 'segment dst'));
        const n = r.u16('segment length');
        if (n > MAX_FORWARD_SEGMENT_BYTES) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `forwarded segment of ${n} bytes`);
        segments.push({ src, dst, bytes: r.bytes(n, 'segment') });
      }
      msg = { type: 'forward', migrationId, epoch, segments };
      break;
    }
    case MESSAGE_TYPES.ping:
    case MESSAGE_TYPES.pong:
      msg = { type: t === MESSAGE_TYPES.ping ? 'ping' : 'pong', nonce: u64(r, 'nonce') };
      break;
    default:
      throw new ChannelError('ERR_CHANNEL_PROTOCOL', `unknown message type ${t}`);
  }
  if (r.remaining !== 0) throw new ChannelError('ERR_CHANNEL_PROTOCOL', `${r.remaining} trailing bytes after a ${msg.type} message`);
  return msg;
}
