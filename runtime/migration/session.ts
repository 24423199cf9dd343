// The migration channel's protocol engine, without I/O (bytes in, bytes and events out, as picotls):
// channel.ts plugs it onto a Duplex, tests drive it directly.
//
// Frames (u32 LE body length, then the body; see frame.ts):
//   HELLO  (clear)  u8 1 | u8 protocol version 1 | u8 role (1 initiator, 2 responder) | u8 0
//                   | u32 keyEpoch | 32 salt | u8 n (1..64) | n name | 32 HMAC-SHA256(hello key, all before)
//   SEALED          u8 2 | u32 keyEpoch | u64 seq | AES-256-GCM(plaintext) | 16 tag; AAD = the first 13 bytes
//   plaintext       u8 type | fields: migration messages (messages.ts, types 1..6) or control:
//                   0x80 FINISHED u8[32] SHA-256(initiator hello body | responder hello body)
//                   0x81 KEY_UPDATE u32 keyEpoch (equal to the frame's)
//
// Handshake: both sides send HELLO at once. A HELLO whose MAC does not verify under the cluster key
// (or with the wrong key epoch, the wrong role, our own name, or another name than expected) is
// ERR_CHANNEL_AUTH. Each side then derives per-direction keys (keys.ts) and sends FINISHED as its first
// sealed frame. A valid FINISHED proves the peer holds the key *now*: its keys depend on our fresh salt,
// so a recorded hello replayed by someone without the key gets no further. Only then is the session ready.
//
// Sequence numbers count per direction and key epoch from 0. Received ones go through a sliding window
// (window.ts) checked before decryption and committed after the tag verified: duplicates and numbers
// that fell out of the window are dropped with a non-fatal ERR_CHANNEL_REPLAY; reordering within the
// window is accepted. A tag that fails is fatal (ERR_CHANNEL_AUTH): on a byte stream a bad frame means
// the stream can no longer be trusted.
//
// Key rotation: rotateKey(newKey, epoch) on each side. A side switches its sending direction at once and
// sends KEY_UPDATE under the new epoch; it keeps the receive keys of the previous epoch (frames still in
// flight or reordered) until the peer's first frame under the new one. If the peer's frames arrive under
// an epoch this side has no key for yet, input stops there (event keyNeeded, nothing is dropped) until
// rotateKey is called here too.
import { createHash, randomBytes as nodeRandomBytes, timingSafeEqual } from 'node:crypto';
import { ByteReader, ByteWriter } from '../../stack/bytes.js';
import { ChannelError } from './errors.js';
import { FrameDecoder, frame } from './frame.js';
import {
  MAC_BYTES, SALT_BYTES, TAG_BYTES, helloKey, helloMac, laneKeys, open, seal, sessionKeys, wipeKeys,
  type DirectionKeys, type LaneKeys, type SessionKeys,
} from './keys.js';
import { decodeMessage, encodeMessage, type MigrationMessage } from './messages.js';
import { SlidingWindow } from './window.js';

export type Role = 'initiator' | 'responder';

export const PROTOCOL_VERSION = 1;
export const FRAME_HELLO = 1;
export const FRAME_SEALED = 2;
export const CONTROL_FINISHED = 0x80;
export const CONTROL_KEY_UPDATE = 0x81;
export const SEALED_HEADER_BYTES = 1 + 4 + 8;
/** Frames before the handshake are hellos: never accept more than this from an unauthenticated peer. */
export const MAX_HELLO_FRAME = 256;
/** Default frame limit: a 16 MiB snapshot in an offer plus headers. */
export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024 + 1024;
export const DEFAULT_REPLAY_WINDOW = 1024;
export const MAX_NAME_BYTES = 64;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const ROLE_BYTE: Record<Role, number> = { initiator: 1, responder: 2 };

export interface SessionOptions {
  /** This runtime's name (1..64 chars of [A-Za-z0-9._:@-]). */
  name: string;
  /** The side that opened the connection is the initiator. */
  role: Role;
  /** Cluster key, 32..64 bytes. Copied; the copy is wiped once the handshake is done. */
  key: Uint8Array;
  /** Epoch of the cluster key (both sides must agree). */
  keyEpoch: number;
  /** Refuse a peer with another name (ERR_CHANNEL_AUTH). */
  expectedPeer?: string;
  maxFrameBytes?: number;
  replayWindow?: number;
  /** Source of salts (tests make it deterministic). */
  randomBytes?: (n: number) => Uint8Array;
}

export type SessionEvent =
  | { readonly type: 'ready'; readonly peer: string }
  | { readonly type: 'message'; readonly message: MigrationMessage }
  | { readonly type: 'rejected'; readonly error: ChannelError }
  | { readonly type: 'rekeyed'; readonly keyEpoch: number }
  | { readonly type: 'keyNeeded'; readonly keyEpoch: number };

export interface SessionOutput {
  /** Framed bytes to write to the transport, in order. */
  readonly frames: Buffer[];
  readonly events: SessionEvent[];
  /** Set when the session failed and closed; events before it are still valid. */
  error?: ChannelError;
}

type State = 'new' | 'hello' | 'finished' | 'ready' | 'closed';

interface RecvState { readonly keys: DirectionKeys; readonly window: SlidingWindow }
interface SendState { readonly epoch: number; readonly keys: DirectionKeys; seq: number }

function checkName(name: unknown, what: string): string {
  if (typeof name !== 'string' || name.length < 1 || name.length > MAX_NAME_BYTES || !NAME_RE.test(name)) {
    throw new ChannelError('ERR_CHANNEL_CONFIG', `${what} must be 1..${MAX_NAME_BYTES} chars of [A-Za-z0-9._:@-]`);
  }
  return name;
}

function checkKey(key: unknown, what: string): Buffer {
  if (!(key instanceof Uint8Array) || key.length < 32 || key.length > 64) {
    throw new ChannelError('ERR_CHANNEL_CONFIG', `${what} must be 32..64 bytes`);
  }
  return Buffer.from(key); // a copy we can wipe
}

function checkEpoch(epoch: unknown, what: string): number {
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw new ChannelError('ERR_CHANNEL_CONFIG', `${what} must be an integer in 0..2^32-1`);
  }
  return epoch;
}

const protocol = (message: string) => new ChannelError('ERR_CHANNEL_PROTOCOL', message);
const auth = (message: string) => new ChannelError('ERR_CHANNEL_AUTH', message);

export class ChannelSession {
  readonly name: string;
  readonly role: Role;
  readonly maxFrameBytes: number;
  readonly #expectedPeer: string | undefined;
  readonly #windowSize: number;
  readonly #random: (n: number) => Uint8Array;
  readonly #decoder: FrameDecoder;
  #state: State = 'new';
  #clusterKey: Buffer | null;
  readonly #handshakeEpoch: number;
  readonly #salt: Buffer;
  #peerSalt: Buffer | null = null;
  #helloBody: Buffer | null = null;
  #transcript: Buffer | null = null;
  #peer: string | null = null;
  #send: SendState | null = null;
  readonly #recv = new Map<number, RecvState>();
  #recvEpoch = -1;
  #blockedOn: number | null = null;

  constructor(options: SessionOptions) {
    this.name = checkName(options.name, 'name');
    if (options.role !== 'initiator' && options.role !== 'responder') {
      throw new ChannelError('ERR_CHANNEL_CONFIG', "role must be 'initiator' or 'responder'");
    }
    this.role = options.role;
    this.#handshakeEpoch = checkEpoch(options.keyEpoch, 'keyEpoch');
    this.#expectedPeer = options.expectedPeer === undefined ? undefined : checkName(options.expectedPeer, 'expectedPeer');
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME;
    if (!Number.isInteger(max) || max < MAX_HELLO_FRAME || max > 0x7fffffff) {
      throw new ChannelError('ERR_CHANNEL_CONFIG', `maxFrameBytes must be an integer in ${MAX_HELLO_FRAME}..2^31-1`);
    }
    this.maxFrameBytes = max;
    this.#windowSize = options.replayWindow ?? DEFAULT_REPLAY_WINDOW;
    try {
      new SlidingWindow(this.#windowSize);
    } catch (err) {
      throw new ChannelError('ERR_CHANNEL_CONFIG', (err as Error).message);
    }
    this.#random = options.randomBytes ?? nodeRandomBytes;
    this.#clusterKey = checkKey(options.key, 'key');
    this.#salt = Buffer.from(this.#random(SALT_BYTES));
    if (this.#salt.length !== SALT_BYTES) throw new ChannelError('ERR_CHANNEL_CONFIG', 'randomBytes returned the wrong length');
    this.#decoder = new FrameDecoder(MAX_HELLO_FRAME);
  }

  get state(): State { return this.#state; }
  get peer(): string | null { return this.#peer; }
  /** Send key epoch (the newest this side rotated to). */
  get keyEpoch(): number { return this.#send?.epoch ?? this.#handshakeEpoch; }
  /** Key epoch of the frames being received. */
  get peerKeyEpoch(): number { return this.#recvEpoch; }
  /** The epoch input is stopped at, waiting for rotateKey; null when not blocked. */
  get blockedOn(): number | null { return this.#blockedOn; }

  /** Our HELLO, to write first. */
  start(): Buffer {
    if (this.#state !== 'new') throw new ChannelError('ERR_CHANNEL_PROTOCOL', 'session already started', { fatal: false });
    const name = Buffer.from(this.name, 'ascii');
    const w = new ByteWriter(8 + SALT_BYTES + 1 + name.length + MAC_BYTES);
    w.u8(FRAME_HELLO).u8(PROTOCOL_VERSION).u8(ROLE_BYTE[this.role]).u8(0).u32(this.#handshakeEpoch).raw(this.#salt);
    w.u8(name.length).raw(name);
    const hk = helloKey(this.#clusterKey!, this.#handshakeEpoch);
    w.raw(helloMac(hk, w.bytes.subarray(0, w.offset)));
    hk.fill(0);
    this.#helloBody = Buffer.from(w.bytes);
    this.#state = 'hello';
    return frame(w.bytes);
  }

  /** Feeds transport bytes. Never throws: a failure is in `error` and closes the session. */
  receive(chunk: Uint8Array): SessionOutput {
    const out: SessionOutput = { frames: [], events: [] };
    if (this.#state === 'closed') {
      out.error = new ChannelError('ERR_CHANNEL_CLOSED', 'session is closed');
      return out;
    }
    if (this.#state === 'new') {
      out.error = new ChannelError('ERR_CHANNEL_PROTOCOL', 'receive before start', { fatal: false });
      return out;
    }
    this.#decoder.push(chunk);
    this.#drain(out);
    return out;
  }

  /** The transport ended: fine between frames once ready, an error otherwise. */
  end(): ChannelError | null {
    if (this.#state === 'closed') return null;
    let err: ChannelError | null = null;
    if (this.#blockedOn !== null) {
      err = new ChannelError('ERR_CHANNEL_EPOCH', `stream ended while waiting for the key of epoch ${this.#blockedOn}`);
    } else if (this.#decoder.buffered > 0) {
      err = new ChannelError('ERR_CHANNEL_TRUNCATED', `stream ended inside a frame (${this.#decoder.buffered} bytes held)`);
    } else if (this.#state !== 'ready') {
      err = new ChannelError('ERR_CHANNEL_CLOSED', 'peer closed the connection during the handshake');
    }
    this.close();
    return err;
  }

  /** A sealed frame carrying msg. Throws (not fatal) ERR_CHANNEL_MESSAGE / ERR_CHANNEL_FRAME_TOO_LARGE. */
  seal(msg: MigrationMessage): Buffer {
    if (this.#state === 'closed') throw new ChannelError('ERR_CHANNEL_CLOSED', 'session is closed');
    if (this.#state !== 'ready') throw new ChannelError('ERR_CHANNEL_PROTOCOL', 'handshake not finished', { fatal: false });
    const pt = encodeMessage(msg);
    try {
      return this.#sealPlaintext(pt);
    } finally {
      if (msg.type === 'offer') pt.fill(0);
    }
  }

  /** Moves this side to a new cluster key; both sides must do it with the same key and epoch. */
  rotateKey(newKey: Uint8Array, keyEpoch: number): SessionOutput {
    if (this.#state !== 'ready') throw new ChannelError('ERR_CHANNEL_CONFIG', 'rotateKey needs a ready channel');
    const epoch = checkEpoch(keyEpoch, 'keyEpoch');
    const send = this.#send!;
    if (epoch <= send.epoch) {
      throw new ChannelError('ERR_CHANNEL_CONFIG', `key epoch ${epoch} is not after the current ${send.epoch}`);
    }
    const key = checkKey(newKey, 'key');
    const keys = this.#derive(key, epoch);
    key.fill(0);
    const mine = this.role === 'initiator' ? keys.i2r : keys.r2i;
    const theirs = this.role === 'initiator' ? keys.r2i : keys.i2r;
    this.#recv.set(epoch, { keys: theirs, window: new SlidingWindow(this.#windowSize) });
    wipeKeys(send.keys);
    this.#send = { epoch, keys: mine, seq: 0 };
    const out: SessionOutput = { frames: [], events: [] };
    out.frames.push(this.#sealPlaintext(new ByteWriter(5).u8(CONTROL_KEY_UPDATE).u32(epoch).bytes));
    if (this.#blockedOn !== null && this.#blockedOn <= epoch) {
      if (this.#blockedOn < epoch) {
        this.#fail(out, new ChannelError('ERR_CHANNEL_EPOCH', `peer uses key epoch ${this.#blockedOn}, skipped here (now ${epoch})`));
        return out;
      }
      this.#blockedOn = null;
      this.#drain(out);
    }
    return out;
  }

  /** Wipes every key and buffer. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#clusterKey?.fill(0);
    this.#clusterKey = null;
    wipeKeys(this.#send?.keys);
    this.#send = null;
    for (const r of this.#recv.values()) wipeKeys(r.keys);
    this.#recv.clear();
    this.#wipeLane();
    this.#decoder.wipe();
    this.#blockedOn = null;
  }

  #fail(out: SessionOutput, err: ChannelError): void {
    out.error = err;
    this.close();
  }

  #drain(out: SessionOutput): void {
    try {
      while (this.#state !== 'closed' && this.#blockedOn === null) {
        // until the peer's FINISHED verified, only handshake-sized frames (a replayed HELLO gets that far)
        this.#decoder.maxFrameBytes = this.#state === 'ready' ? this.maxFrameBytes : MAX_HELLO_FRAME;
        const body = this.#decoder.peek();
        if (!body) return;
        if (!this.#onFrame(body, out)) return; // blocked: leave the frame where it is
        this.#decoder.consume();
      }
    } catch (err) {
      if (!(err instanceof ChannelError)) throw err;
      this.#fail(out, err.fatal ? err : new ChannelError(err.code, err.message));
    }
  }

  /** false when the frame must wait (key epoch not installed here yet). */
  #onFrame(body: Buffer, out: SessionOutput): boolean {
    if (body.length < 1) throw protocol('empty frame');
    switch (body[0]) {
      case FRAME_HELLO:
        if (this.#state !== 'hello') throw protocol('unexpected HELLO');
        this.#onHello(body, out);
        return true;
      case FRAME_SEALED:
        if (this.#state === 'hello') throw protocol('sealed frame before HELLO');
        return this.#onSealed(body, out);
      default:
        throw protocol(`unknown frame type ${body[0]}`);
    }
  }

  #onHello(body: Buffer, out: SessionOutput): void {
    const r = new ByteReader(body, (what) => protocol(`HELLO truncated at ${what}`));
    r.u8('type');
    const version = r.u8('version');
    if (version !== PROTOCOL_VERSION) throw protocol(`peer speaks channel protocol ${version}, this side ${PROTOCOL_VERSION}`);
    const role = r.u8('role');
    if (r.u8('reserved') !== 0) throw protocol('HELLO reserved byte is not zero');
    const epoch = r.u32('keyEpoch');
    const salt = r.bytes(SALT_BYTES, 'salt');
    const n = r.u8('name length');
    if (n < 1 || n > MAX_NAME_BYTES) throw protocol(`HELLO name length ${n}`);
    const name = String.fromCharCode(...r.bytes(n, 'name'));
    if (!NAME_RE.test(name)) throw protocol('HELLO name has invalid characters');
    const signedEnd = r.offset;
    const mac = r.bytes(MAC_BYTES, 'mac');
    if (r.remaining !== 0) throw protocol('trailing bytes after HELLO');

    if (epoch !== this.#handshakeEpoch) throw auth(`peer uses key epoch ${epoch}, this side ${this.#handshakeEpoch}`);
    const hk = helloKey(this.#clusterKey!, epoch);
    const expected = helloMac(hk, body.subarray(0, signedEnd));
    hk.fill(0);
    if (!timingSafeEqual(expected, mac)) throw auth('peer could not prove the cluster key (HELLO MAC mismatch)');
    const wanted = this.role === 'initiator' ? ROLE_BYTE.responder : ROLE_BYTE.initiator;
    if (role !== wanted) throw auth('peer HELLO has our own role (reflected?)');
    if (name === this.name) throw auth('peer HELLO carries our own name (reflected?)');
    if (this.#expectedPeer !== undefined && name !== this.#expectedPeer) {
      throw auth(`peer is ${name}, expected ${this.#expectedPeer}`);
    }

    this.#peer = name;
    this.#peerSalt = Buffer.from(salt);
    const peerHello = Buffer.from(body);
    const [helloI, helloR] = this.role === 'initiator' ? [this.#helloBody!, peerHello] : [peerHello, this.#helloBody!];
    this.#transcript = createHash('sha256').update(helloI).update(helloR).digest();
    const keys = this.#derive(this.#clusterKey!, epoch);
    const mine = this.role === 'initiator' ? keys.i2r : keys.r2i;
    const theirs = this.role === 'initiator' ? keys.r2i : keys.i2r;
    this.#send = { epoch, keys: mine, seq: 0 };
    this.#recv.set(epoch, { keys: theirs, window: new SlidingWindow(this.#windowSize) });
    this.#recvEpoch = epoch;
    this.#state = 'finished';
    out.frames.push(this.#sealPlaintext(Buffer.concat([Uint8Array.of(CONTROL_FINISHED), this.#transcript])));
  }

  #onSealed(body: Buffer, out: SessionOutput): boolean {
    if (body.length < SEALED_HEADER_BYTES + TAG_BYTES + 1) throw protocol(`sealed frame of ${body.length} bytes is too short`);
    const epoch = body.readUInt32LE(1);
    const hi = body.readUInt32LE(9);
    if (hi >= 0x200000) throw auth('sequence number out of range');
    const seq = hi * 2 ** 32 + body.readUInt32LE(5);

    const rs = this.#recv.get(epoch);
    if (!rs) {
      if (this.#state !== 'ready') throw auth(`handshake frame under key epoch ${epoch}`);
      if (epoch > this.#recvEpoch) {
        this.#blockedOn = epoch;
        out.events.push({ type: 'keyNeeded', keyEpoch: epoch });
        return false;
      }
      out.events.push({ type: 'rejected', error: new ChannelError('ERR_CHANNEL_REPLAY', `frame under retired key epoch ${epoch}`) });
      return true;
    }
    const verdict = rs.window.check(seq);
    if (verdict !== 'new') {
      out.events.push({
        type: 'rejected',
        error: new ChannelError('ERR_CHANNEL_REPLAY', `${verdict === 'old' ? 'too old' : 'replayed'} frame (epoch ${epoch}, seq ${seq})`),
      });
      return true;
    }
    const pt = open(rs.keys, seq, body.subarray(0, SEALED_HEADER_BYTES), body.subarray(SEALED_HEADER_BYTES));
    if (!pt) throw auth(`frame failed authentication (epoch ${epoch}, seq ${seq})`);
    rs.window.commit(seq);
    if (epoch > this.#recvEpoch) {
      // the peer moved on: keep the previous epoch for stragglers, forget older ones
      for (const [e, old] of this.#recv) {
        if (e < this.#recvEpoch) {
          wipeKeys(old.keys);
          this.#recv.delete(e);
        }
      }
      this.#recvEpoch = epoch;
      out.events.push({ type: 'rekeyed', keyEpoch: epoch });
    }
    this.#onPlaintext(pt, epoch, out);
    return true;
  }

  #onPlaintext(pt: Buffer, epoch: number, out: SessionOutput): void {
    if (pt.length < 1) throw protocol('empty sealed message');
    const t = pt[0]!;
    if (this.#state === 'finished') {
      if (t !== CONTROL_FINISHED || pt.length !== 1 + 32) throw protocol('first sealed frame is not FINISHED');
      if (!timingSafeEqual(pt.subarray(1), this.#transcript!)) throw auth('FINISHED does not match the handshake');
      this.#state = 'ready';
      this.#clusterKey!.fill(0);
      this.#clusterKey = null;
      out.events.push({ type: 'ready', peer: this.#peer! });
      return;
    }
    if (t === CONTROL_FINISHED) throw protocol('FINISHED after the handshake');
    if (t === CONTROL_KEY_UPDATE) {
      if (pt.length !== 5 || pt.readUInt32LE(1) !== epoch) throw protocol('malformed KEY_UPDATE');
      return;
    }
    out.events.push({ type: 'message', message: decodeMessage(pt) });
  }

  #sealPlaintext(pt: Uint8Array): Buffer {
    const send = this.#send!;
    const len = SEALED_HEADER_BYTES + pt.length + TAG_BYTES;
    if (len > this.maxFrameBytes) {
      throw new ChannelError('ERR_CHANNEL_FRAME_TOO_LARGE', `message needs a ${len}-byte frame, limit ${this.maxFrameBytes}`, { fatal: false });
    }
    if (send.seq > Number.MAX_SAFE_INTEGER - 1) throw new ChannelError('ERR_CHANNEL_CONFIG', 'sequence numbers exhausted: rotate the key');
    const header = new ByteWriter(SEALED_HEADER_BYTES).u8(FRAME_SEALED).u32(send.epoch).u64(send.seq).bytes;
    const sealed = seal(send.keys, send.seq, header, pt);
    send.seq++;
    const out = Buffer.allocUnsafe(4 + len);
    out.writeUInt32LE(len, 0);
    out.set(header, 4);
    out.set(sealed, 4 + SEALED_HEADER_BYTES);
    return out;
  }

  #derive(key: Uint8Array, epoch: number): SessionKeys {
    const [nameI, nameR] = this.role === 'initiator' ? [this.name, this.#peer!] : [this.#peer!, this.name];
    const [saltI, saltR] = this.role === 'initiator' ? [this.#salt, this.#peerSalt!] : [this.#peerSalt!, this.#salt];
    this.#wipeLane();
    this.#lane = laneKeys(key, epoch, nameI, nameR, saltI, saltR);
    return sessionKeys(key, epoch, nameI, nameR, saltI, saltR);
  }

  #lane: LaneKeys | null = null;

  /**
   * The lane keys of the newest key epoch, this side's way round ({id, tx, rx}); null before the peer's
   * HELLO and after close. The engine copies them (engine.laneKey); these buffers are wiped on close.
   */
  get laneKeys(): { id: Buffer; tx: DirectionKeys; rx: DirectionKeys } | null {
    const l = this.#lane;
    if (!l || this.#state === 'closed') return null;
    return this.role === 'initiator' ? { id: l.id, tx: l.i2r, rx: l.r2i } : { id: l.id, tx: l.r2i, rx: l.i2r };
  }

  #wipeLane(): void {
    wipeKeys(this.#lane?.i2r);
    wipeKeys(this.#lane?.r2i);
    this.#lane = null;
  }
}
