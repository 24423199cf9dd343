// A bounded mutation fuzzer for the migration channel's parsers, using the real code (the channel is
// TypeScript, so libFuzzer cannot reach it; this is the honest equivalent without coverage feedback):
//   stream    a recorded initiator->responder stream (HELLO, FINISHED, every message type, a KEY_UPDATE
//             and messages under the new key) is mutated (bit flips, truncation, insertion, deletion,
//             length-prefix rewrites, duplicated / reordered / dropped / foreign frames: replay, reordering
//             and forgery) and fed in random pieces to a fresh responder that would accept the original.
//             Invariants: receive() never throws; every error is a ChannelError with a known code; every
//             delivered message was sent and none is delivered more often than it was sent; the decoder
//             never holds more than one frame's limit; after end() the session is closed or clean.
//   message   decodeMessage on mutated encodings of every type (the AEAD keeps mutated bytes from reaching
//             it through a stream): it returns a message or throws ERR_CHANNEL_PROTOCOL, and what it
//             returns encodes and decodes back to itself.
//   snapshot  decodeSnapshot (the CPBY container every layer's snapshot travels in) on mutated
//             containers: typed SnapshotError only; what it accepts re-encodes to a container it accepts.
// Usage: node dist/test/fuzz/channel-fuzz.js [--seconds N] [--seed S]. Prints executions per part; exits
// 1 on the first violation with the seed and iteration that reproduce it.
import { ChannelError, type ChannelErrorCode } from '../../runtime/migration/errors.js';
import { decodeMessage, encodeMessage, type MigrationMessage } from '../../runtime/migration/messages.js';
import { ChannelSession, type SessionOutput } from '../../runtime/migration/session.js';
import { SnapshotError } from '../../stack/errors.js';
import { decodeSnapshot, encodeSnapshot } from '../../stack/snapshot.js';
import { bytesFrom, int, prng } from '../helpers/prng.js';

const KEY = Buffer.alloc(32, 0x5a);
const KEY2 = Buffer.alloc(32, 0xa5);
const FOREIGN = Buffer.alloc(32, 0x77);
const CODES: ReadonlySet<ChannelErrorCode> = new Set<ChannelErrorCode>([
  'ERR_CHANNEL_AUTH', 'ERR_CHANNEL_REPLAY', 'ERR_CHANNEL_FRAME_TOO_LARGE', 'ERR_CHANNEL_TRUNCATED',
  'ERR_CHANNEL_PROTOCOL', 'ERR_CHANNEL_EPOCH', 'ERR_CHANNEL_CLOSED',
]);
const MAX_FRAME = 64 * 1024;
const WINDOW = 32;

class FuzzFinding extends Error {
  readonly code = 'ERR_FUZZ_FINDING';
}

type Rng = () => number;

function messages(r: Rng): MigrationMessage[] {
  const flow = { localAddress: '10.77.9.1', localPort: 80, remoteAddress: '10.77.0.2', remotePort: 1 + int(r, 65535) };
  const snapshot = encodeSnapshot([{ kind: 'tcp', version: 1, bytes: bytesFrom(r, 1 + int(r, 200)) }, { kind: 'app', version: 1, bytes: bytesFrom(r, int(r, 40)) }]);
  return [
    { type: 'offer', migrationId: int(r, 1e9), epoch: int(r, 100), flow, snapshot },
    { type: 'adopted', migrationId: int(r, 1e9), epoch: 1 },
    { type: 'rejected', migrationId: int(r, 1e9), epoch: 2, reason: 'ERR_SNAPSHOT: nein ✗' },
    { type: 'release', migrationId: int(r, 1e9), epoch: 3 },
    { type: 'forward', migrationId: int(r, 1e9), epoch: 4, segments: [{ src: '10.77.0.2', dst: '10.77.9.1', bytes: bytesFrom(r, 20 + int(r, 60)) }] },
    { type: 'ping', nonce: int(r, 1e9) },
    { type: 'pong', nonce: int(r, 1e9) },
  ];
}

function session(role: 'initiator' | 'responder', seed: number, key: Uint8Array = KEY): ChannelSession {
  const r = prng(seed);
  return new ChannelSession({
    name: role === 'initiator' ? 'fuzzA' : 'fuzzB', role, key, keyEpoch: 0, maxFrameBytes: MAX_FRAME, replayWindow: WINDOW,
    randomBytes: (n) => bytesFrom(r, n),
  });
}

/** A clean exchange; returns the frames A sent (what a fresh B with the same seed accepts) and the messages. */
function record(r: Rng, seed: number): { frames: Buffer[]; sent: MigrationMessage[]; foreign: Buffer[] } {
  const a = session('initiator', seed);
  const b = session('responder', seed + 1);
  let toB: Buffer[] = [a.start()];
  let toA: Buffer[] = [b.start()];
  const all: Buffer[] = [...toB];
  const pump = (o: SessionOutput, into: Buffer[]) => {
    if (o.error) throw new FuzzFinding(`clean exchange failed: ${o.error.message}`);
    into.push(...o.frames);
  };
  for (let round = 0; round < 4 && (toA.length || toB.length); round++) {
    const nextA: Buffer[] = [];
    const nextB: Buffer[] = [];
    for (const f of toB) pump(b.receive(f), nextA);
    for (const f of toA) pump(a.receive(f), nextB);
    all.push(...nextB);
    toA = nextA;
    toB = nextB;
  }
  if (a.state !== 'ready' || b.state !== 'ready') throw new FuzzFinding('clean handshake did not finish');
  const sent: MigrationMessage[] = [];
  const ms = messages(r);
  for (const m of ms.slice(0, 4)) {
    all.push(a.seal(m));
    sent.push(m);
  }
  all.push(...a.rotateKey(KEY2, 1).frames);
  for (const m of ms.slice(4)) {
    all.push(a.seal(m));
    sent.push(m);
  }
  // frames of another cluster (another key): forgeries that look right
  const x = session('initiator', seed + 7, FOREIGN);
  const y = session('responder', seed + 8, FOREIGN);
  const foreign: Buffer[] = [x.start()];
  const yHello = y.start();
  pump(y.receive(foreign[0]!), []);
  pump(x.receive(yHello), foreign);
  return { frames: all, sent, foreign };
}

function mutate(r: Rng, frames: Buffer[], foreign: Buffer[]): Buffer {
  const fs = [...frames];
  const x = int(r, fs.length);
  const y = int(r, fs.length);
  let s: Buffer;
  switch (int(r, 12)) {
    case 0: fs.splice(Math.max(x, y) + 1, 0, fs[Math.min(x, y)]!); return Buffer.concat(fs);        // replay
    case 1: [fs[x], fs[y]] = [fs[y]!, fs[x]!]; return Buffer.concat(fs);                             // reorder
    case 2: fs.splice(x, 1); return Buffer.concat(fs);                                               // loss
    case 3: fs.splice(x, 0, foreign[int(r, foreign.length)]!); return Buffer.concat(fs);              // forgery
    case 4: { const f = Buffer.from(fs[x]!); if (f.length > 17) f.writeUInt32LE(int(r, 2 ** 32), 9); fs[x] = f; return Buffer.concat(fs); } // seq rewrite
    default: s = Buffer.concat(fs);
  }
  for (let k = 1 + int(r, 3); k > 0; k--) {
    switch (int(r, 6)) {
      case 0: s[int(r, s.length)]! ^= 1 << int(r, 8); break;
      case 1: s = s.subarray(0, int(r, s.length)); break;
      case 2: { const at = int(r, s.length + 1); s = Buffer.concat([s.subarray(0, at), Buffer.from(bytesFrom(r, 1 + int(r, 16))), s.subarray(at)]); break; }
      case 3: { const at = int(r, s.length); s = Buffer.concat([s.subarray(0, at), s.subarray(at + 1 + int(r, 16))]); break; }
      case 4: if (s.length >= 4) { s = Buffer.from(s); s.writeUInt32LE([0, 1, 13, 300, MAX_FRAME, MAX_FRAME + 1, 0xffffffff][int(r, 7)]!, int(r, s.length - 3)); } break;
      default: { const at = int(r, s.length); const n = 1 + int(r, 64); s = Buffer.concat([s.subarray(0, at + n), s.subarray(at, at + n), s.subarray(at + n)]); }
    }
  }
  return s;
}

/** Key-order and byte-container independent text of a value (Buffer and Uint8Array alike). */
function canonical(v: unknown): string {
  if (v instanceof Uint8Array) return `"${Buffer.from(v).toString('hex')}"`;
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

const seen = { codes: new Map<string, number>(), delivered: 0 };

function checkError(e: unknown, where: string): ChannelError {
  if (!(e instanceof ChannelError) || !CODES.has(e.code)) throw new FuzzFinding(`${where}: untyped or unexpected error ${String(e)}`);
  seen.codes.set(e.code, (seen.codes.get(e.code) ?? 0) + 1);
  return e;
}

function streamCase(r: Rng, seed: number, rec: ReturnType<typeof record>): void {
  const s = mutate(r, rec.frames, rec.foreign);
  const b = session('responder', seed + 1);
  b.start();
  const got: MigrationMessage[] = [];
  let needKey = false;
  for (let i = 0; i < s.length;) {
    const n = 1 + int(r, 200);
    let o: SessionOutput;
    try {
      o = b.receive(s.subarray(i, i + n));
    } catch (e) {
      throw new FuzzFinding(`receive threw: ${String(e)}`);
    }
    i += n;
    for (const e of o.events) {
      if (e.type === 'message') got.push(e.message);
      else if (e.type === 'rejected') checkError(e.error, 'rejected');
      else if (e.type === 'keyNeeded' && !needKey) {
        needKey = true;
        try {
          for (const ev of b.rotateKey(KEY2, 1).events) if (ev.type === 'message') got.push(ev.message);
        } catch (err) {
          checkError(err, 'rotateKey');
        }
      }
    }
    if (o.error) {
      checkError(o.error, 'receive');
      break;
    }
  }
  const end = b.end();
  if (end) checkError(end, 'end');
  if (b.state !== 'closed') throw new FuzzFinding(`session not closed after end (${b.state})`);
  const left = rec.sent.map(canonical);
  for (const m of got) {
    const j = left.indexOf(canonical(m));
    if (j < 0) throw new FuzzFinding(`delivered a message that was not sent, or twice: ${m.type}`);
    left.splice(j, 1);
    seen.delivered++;
  }
}

function messageCase(r: Rng): void {
  const ms = messages(r);
  const m = ms[int(r, ms.length)]!;
  const enc = Buffer.from(encodeMessage(m));
  let s: Buffer = enc;
  switch (int(r, 4)) {
    case 0: s[int(r, s.length)]! ^= 1 << int(r, 8); break;
    case 1: s = s.subarray(0, int(r, s.length)); break;
    case 2: s = Buffer.concat([s, Buffer.from(bytesFrom(r, 1 + int(r, 8)))]); break;
    default: for (let k = 0; k < 4; k++) s[int(r, s.length)] = int(r, 256);
  }
  let d: MigrationMessage;
  try {
    d = decodeMessage(s);
  } catch (e) {
    if (!(e instanceof ChannelError) || e.code !== 'ERR_CHANNEL_PROTOCOL') throw new FuzzFinding(`decodeMessage threw ${String(e)}`);
    return;
  }
  let again: MigrationMessage;
  try {
    again = decodeMessage(encodeMessage(d));
  } catch (e) {
    throw new FuzzFinding(`decoded message does not re-encode: ${String(e)}`);
  }
  if (canonical(again) !== canonical(d)) throw new FuzzFinding(`decode(encode(decode(x))) differs for ${d.type}`);
}

function snapshotCase(r: Rng): void {
  const recs = [{ kind: 'tcp', version: 1, bytes: bytesFrom(r, 1 + int(r, 100)) }, { kind: 'tls', version: 1, bytes: bytesFrom(r, int(r, 50)) }, { kind: 'app', version: 1, bytes: bytesFrom(r, int(r, 30)) }];
  const s = Buffer.from(encodeSnapshot(recs.slice(0, 1 + int(r, 3))));
  for (let k = 1 + int(r, 3); k > 0; k--) {
    if (int(r, 2)) s[int(r, s.length)]! ^= 1 << int(r, 8);
    else s.writeUInt32LE(int(r, 2 ** 32), int(r, s.length - 3));
  }
  const cut = int(r, 4) === 0 ? s.subarray(0, int(r, s.length)) : s;
  let snap;
  try {
    snap = decodeSnapshot(cut);
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw new FuzzFinding(`decodeSnapshot threw ${String(e)}`);
    return;
  }
  try {
    decodeSnapshot(encodeSnapshot(snap.records));
  } catch (e) {
    throw new FuzzFinding(`an accepted snapshot does not re-encode: ${String(e)}`);
  }
}

function main(argv: string[]): number {
  let seconds = 20;
  let seed = 0x5eed;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seconds') seconds = Number(argv[++i]);
    else if (argv[i] === '--seed') seed = Number(argv[++i]);
    else {
      console.error('usage: channel-fuzz [--seconds N] [--seed S]');
      return 64;
    }
  }
  if (!Number.isFinite(seconds) || seconds < 0 || !Number.isInteger(seed)) {
    console.error('--seconds and --seed must be numbers');
    return 64;
  }
  const deadline = Date.now() + seconds * 1000;
  const counts = { stream: 0, message: 0, snapshot: 0 };
  const r = prng(seed);
  let iter = 0;
  try {
    while (Date.now() < deadline || iter === 0) {
      const s = int(r, 2 ** 30);
      const rec = record(prng(s), s);
      for (let k = 0; k < 20; k++, iter++) {
        streamCase(r, s, rec);
        counts.stream++;
        messageCase(r);
        counts.message++;
        snapshotCase(r);
        counts.snapshot++;
      }
    }
  } catch (e) {
    console.error(`fuzz channel: FINDING at iteration ${iter} (seed ${seed}): ${e instanceof Error ? e.stack : String(e)}`);
    return 1;
  }
  const total = counts.stream + counts.message + counts.snapshot;
  console.log(`fuzz channel: ${total} executions in ${seconds} s (stream ${counts.stream}, message ${counts.message}, snapshot ${counts.snapshot}), 0 findings; ` +
    `${seen.delivered} messages delivered through mutated streams; errors ${JSON.stringify(Object.fromEntries(seen.codes))}`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
