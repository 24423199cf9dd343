// Key schedule and AEAD of the migration channel.
//
//   hello key   = HKDF-SHA256(ikm = cluster key, salt = "", info = "capybara channel v1 hello" | u32 keyEpoch), 32 bytes
//   direction   = HKDF-SHA256(ikm = cluster key, salt = salt_initiator | salt_responder,
//                             info = "capybara channel v1 " dir | u32 keyEpoch | u8 len | initiator name
//                                    | u8 len | responder name), 44 bytes = 32 key | 12 iv
//                 for dir "i2r" (initiator to responder) and "r2i"
//   lane        = the same with dir "lane i2r" / "lane r2i" (the engines' datagrams, native/mig/lane.h),
//                 named on the wire by HKDF(..., info = "capybara channel v1 lane id" | u32 keyEpoch | names), 8 bytes
//   nonce(seq)  = iv XOR (4 zero bytes | u64 seq big-endian)          (as TLS 1.3 and RFC 8446 §5.3)
//   AEAD        = AES-256-GCM, 16-byte tag
//
// Both salts are fresh per session, so keys are never reused across connections even though the
// cluster key is long-lived; each key epoch (rotation) derives new keys from the new cluster key with the
// same salts and names, and sequence numbers restart at 0 under them.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto';

export const AEAD_ALGORITHM = 'aes-256-gcm';
export const KEY_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;
export const SALT_BYTES = 32;
export const MAC_BYTES = 32;

const LABEL = 'capybara channel v1 ';

export interface DirectionKeys {
  readonly key: Buffer;
  readonly iv: Buffer;
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

function nameField(name: string): Buffer {
  const b = Buffer.from(name, 'utf8');
  return Buffer.concat([Uint8Array.of(b.length), b]);
}

export function helloKey(clusterKey: Uint8Array, keyEpoch: number): Buffer {
  const info = Buffer.concat([Buffer.from(`${LABEL}hello`), u32le(keyEpoch)]);
  return Buffer.from(hkdfSync('sha256', clusterKey, Buffer.alloc(0), info, MAC_BYTES));
}

export function helloMac(key: Uint8Array, bytes: Uint8Array): Buffer {
  return createHmac('sha256', key).update(bytes).digest();
}

export interface SessionKeys {
  readonly i2r: DirectionKeys;
  readonly r2i: DirectionKeys;
}

export function sessionKeys(clusterKey: Uint8Array, keyEpoch: number, initiator: string, responder: string,
  saltI: Uint8Array, saltR: Uint8Array, use = ''): SessionKeys {
  const salt = Buffer.concat([saltI, saltR]);
  const names = Buffer.concat([u32le(keyEpoch), nameField(initiator), nameField(responder)]);
  const derive = (dir: string): DirectionKeys => {
    const info = Buffer.concat([Buffer.from(LABEL + use + dir), names]);
    const okm = Buffer.from(hkdfSync('sha256', clusterKey, salt, info, KEY_BYTES + IV_BYTES));
    const keys = { key: Buffer.from(okm.subarray(0, KEY_BYTES)), iv: Buffer.from(okm.subarray(KEY_BYTES)) };
    okm.fill(0);
    return keys;
  };
  return { i2r: derive('i2r'), r2i: derive('r2i') };
}

/** The engines' migration lane (native/mig/lane.h) under one channel session: its own keys per direction
 *  (labels "lane i2r" / "lane r2i", same inputs as the channel's) and an 8-byte id naming them on the wire. */
export interface LaneKeys extends SessionKeys {
  readonly id: Buffer;
}

export function laneKeys(clusterKey: Uint8Array, keyEpoch: number, initiator: string, responder: string,
  saltI: Uint8Array, saltR: Uint8Array): LaneKeys {
  const lane = sessionKeys(clusterKey, keyEpoch, initiator, responder, saltI, saltR, 'lane ');
  const salt = Buffer.concat([saltI, saltR]);
  const info = Buffer.concat([Buffer.from(`${LABEL}lane id`), u32le(keyEpoch), nameField(initiator), nameField(responder)]);
  const id = Buffer.from(hkdfSync('sha256', clusterKey, salt, info, 8));
  if (id.every((b) => b === 0)) id[0] = 1; // 0 means "no key" to the engine
  return { ...lane, id };
}

export function wipeKeys(k: DirectionKeys | null | undefined): void {
  if (!k) return;
  k.key.fill(0);
  k.iv.fill(0);
}

function nonce(iv: Buffer, seq: number): Buffer {
  const n = Buffer.from(iv);
  const hi = Math.floor(seq / 2 ** 32);
  const lo = seq >>> 0;
  n.writeUInt32BE((n.readUInt32BE(4) ^ hi) >>> 0, 4);
  n.writeUInt32BE((n.readUInt32BE(8) ^ lo) >>> 0, 8);
  return n;
}

/** ciphertext | tag */
export function seal(keys: DirectionKeys, seq: number, aad: Uint8Array, plaintext: Uint8Array): Buffer {
  const c = createCipheriv(AEAD_ALGORITHM, keys.key, nonce(keys.iv, seq), { authTagLength: TAG_BYTES });
  c.setAAD(aad);
  const head = c.update(plaintext);
  const tail = c.final();
  return Buffer.concat([head, tail, c.getAuthTag()]);
}

/** The plaintext, or null when the tag does not verify. */
export function open(keys: DirectionKeys, seq: number, aad: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG_BYTES) return null;
  const d = createDecipheriv(AEAD_ALGORITHM, keys.key, nonce(keys.iv, seq), { authTagLength: TAG_BYTES });
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const head = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    const tail = d.final();
    return tail.length ? Buffer.concat([head, tail]) : head;
  } catch {
    head.fill(0); // unauthenticated plaintext never leaves this function
    return null;
  }
}
