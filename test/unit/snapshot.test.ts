import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CapybaraError } from '../../runtime/errors.js';
import { ByteReader, equalBytes, withWiped, zero } from '../../stack/bytes.js';
import { crc32c } from '../../stack/crc32c.js';
import { SnapshotError, type SnapshotErrorCode } from '../../stack/errors.js';
import { APP_USER_DATA_MAX, AppLayer, PluggedLayer, type AppConn } from '../../stack/layer.js';
import {
  SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAX_BYTES, SNAPSHOT_MAX_LAYERS, SNAPSHOT_MIN_BYTES, SnapshotFlags,
  decodeSnapshot, encodeSnapshot, snapshotSize, zeroRecords, type SnapshotRecord,
} from '../../stack/snapshot.js';
import { bytesFrom as randomBytes, int, prng } from '../helpers/prng.js';

function throwsCode(fn: () => unknown, code: SnapshotErrorCode, msg?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SnapshotError, `expected SnapshotError, got ${String(err)}`);
    assert.ok(err instanceof CapybaraError && err instanceof Error);
    assert.equal(err.code, code, `${msg ?? ''}: ${err.message}`);
    return true;
  });
}

const u32 = (b: Uint8Array, at: number, v: number) => new DataView(b.buffer, b.byteOffset).setUint32(at, v, true);
const u16 = (b: Uint8Array, at: number, v: number) => new DataView(b.buffer, b.byteOffset).setUint16(at, v, true);
/** Recomputes the trailer so a structural mutation gets past the checksum. */
function reseal(b: Uint8Array): Uint8Array {
  u32(b, b.length - 4, crc32c(b.subarray(0, b.length - 4)));
  return b;
}

const rec = (kind: string, bytes: number[] | Uint8Array, version = 1): SnapshotRecord =>
  ({ kind, version, bytes: bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes) });
const sample = () => encodeSnapshot([rec('tcp', [1, 2, 3, 4, 5]), rec('tls', [9, 9], 2), rec('app', [])]);

describe('crc32c', () => {
  it('matches the standard check value and test vectors', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(0)), 0);
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // RFC 3720 B.4: 32 bytes of 0xff
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e); // incrementing
  });

  it('equals a bit-at-a-time reference and continues across chunks', () => {
    const ref = (b: Uint8Array) => {
      let c = 0xffffffff;
      for (const x of b) {
        c ^= x;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return ~c >>> 0;
    };
    const r = prng(7);
    for (let n = 0; n < 200; n++) {
      const b = randomBytes(r, n);
      assert.equal(crc32c(b), ref(b), `length ${n}`);
      const cut = int(r, n + 1);
      assert.equal(crc32c(b.subarray(cut), crc32c(b.subarray(0, cut))), ref(b));
    }
  });
});

describe('snapshot container', () => {
  it('round trips records, flags and versions, canonically', () => {
    const records = [rec('tcp', [1, 2, 3]), rec('tls', new Uint8Array(1000).fill(7), 3), rec('app', [])];
    const bytes = encodeSnapshot(records, { flags: SnapshotFlags.SECRETS });
    assert.equal(bytes.length, snapshotSize(records));
    assert.deepEqual([...bytes.subarray(0, 4)], [0x43, 0x50, 0x42, 0x59]);
    const snap = decodeSnapshot(bytes);
    assert.equal(snap.version, 1);
    assert.equal(snap.flags, SnapshotFlags.SECRETS);
    assert.deepEqual(snap.records.map((x) => [x.kind, x.version, [...x.bytes]]), records.map((x) => [x.kind, x.version, [...x.bytes]]));
    assert.deepEqual(encodeSnapshot(snap.records, { flags: snap.flags }), bytes);
    // payloads are views: wiping the input wipes them
    zero(bytes);
    assert.ok(snap.records[1]!.bytes.every((x) => x === 0));
  });

  it('lays the header out as the spec says (for the C side)', () => {
    const bytes = encodeSnapshot([rec('tcp', [0xaa, 0xbb], 0x0102)]);
    assert.deepEqual([...bytes], [
      0x43, 0x50, 0x42, 0x59, 1, 0, 0, 0, // magic, version 1, flags 0
      bytes.length, 0, 0, 0, 1, 0, 0, 0, // total length, 1 layer, reserved
      3, 0x74, 0x63, 0x70, 0x02, 0x01, 2, 0, 0, 0, 0xaa, 0xbb, // "tcp" v0x0102 len 2
      ...[0, 8, 16, 24].map((s) => (crc32c(bytes.subarray(0, bytes.length - 4)) >>> s) & 0xff),
    ]);
    assert.equal(bytes.length, 32);
    assert.equal(SNAPSHOT_MIN_BYTES, 28);
    assert.equal(decodeSnapshot(encodeSnapshot([rec('x', [])])).records[0]!.bytes.length, 0);
  });

  it('rejects truncation at every length', () => {
    const bytes = sample();
    for (let n = 0; n < bytes.length; n++) throwsCode(() => decodeSnapshot(bytes.subarray(0, n)), 'ERR_SNAPSHOT_TRUNCATED', `cut ${n}`);
  });

  it('rejects bad magic, versions, flags and sizes', () => {
    const bad = (f: (b: Uint8Array) => void) => { const b = sample(); f(b); return b; };
    throwsCode(() => decodeSnapshot(bad((b) => { b[0] = 0x63; })), 'ERR_SNAPSHOT_MAGIC');
    throwsCode(() => decodeSnapshot(bad((b) => { b[3] = 0; })), 'ERR_SNAPSHOT_MAGIC');
    throwsCode(() => decodeSnapshot(bad((b) => u16(b, 4, 2))), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => decodeSnapshot(bad((b) => u16(b, 4, 0))), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => decodeSnapshot(bad((b) => u16(b, 6, 2))), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => decodeSnapshot(bad((b) => u16(b, 6, 0x8000))), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => decodeSnapshot(bad((b) => u32(b, 8, SNAPSHOT_MAX_BYTES + 1))), 'ERR_SNAPSHOT_TOO_LARGE');
    throwsCode(() => decodeSnapshot(bad((b) => u32(b, 8, 0xffffffff))), 'ERR_SNAPSHOT_TOO_LARGE');
    throwsCode(() => decodeSnapshot(sample(), { maxBytes: 40 }), 'ERR_SNAPSHOT_TOO_LARGE');
    throwsCode(() => decodeSnapshot(bad((b) => u32(b, 8, 20))), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => decodeSnapshot(bad((b) => u32(b, 8, b.length + 1))), 'ERR_SNAPSHOT_TRUNCATED');
    throwsCode(() => decodeSnapshot(bad((b) => u32(b, 8, b.length - 1))), 'ERR_SNAPSHOT_CORRUPT'); // a trailing byte
    const long = new Uint8Array(sample().length + 1);
    long.set(sample());
    throwsCode(() => decodeSnapshot(long), 'ERR_SNAPSHOT_CORRUPT');
  });

  it('catches any single corrupted byte with the checksum', () => {
    const bytes = sample();
    for (let i = SNAPSHOT_HEADER_BYTES; i < bytes.length; i++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const b = bytes.slice();
        b[i]! ^= flip;
        throwsCode(() => decodeSnapshot(b), 'ERR_SNAPSHOT_CHECKSUM', `byte ${i}`);
      }
    }
    const b = bytes.slice();
    b[12] = 2; // layer count: covered by the CRC too
    throwsCode(() => decodeSnapshot(b), 'ERR_SNAPSHOT_CHECKSUM');
  });

  it('rejects structural errors even with a valid checksum', () => {
    // sample(): header 16 | "tcp" rec at 16 (kind len, kind, ver, len, 5 bytes) | "tls" at 28 | "app" at 38
    const bad = (f: (b: Uint8Array) => void) => { const b = sample(); f(b); return reseal(b); };
    const cases: [string, (b: Uint8Array) => void, SnapshotErrorCode][] = [
      ['zero layers', (b) => { b[12] = 0; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['9 layers', (b) => { b[12] = SNAPSHOT_MAX_LAYERS + 1; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['count above records', (b) => { b[12] = 4; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['bytes after the last record', (b) => { b[12] = 2; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['reserved byte', (b) => { b[13] = 1; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['reserved u16', (b) => { b[15] = 1; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['zero-length kind', (b) => { b[16] = 0; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['kind longer than 16', (b) => { b[16] = 17; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['kind length overruns', (b) => { b[38] = 16; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['uppercase kind', (b) => { b[17] = 0x54; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['kind starting with a digit', (b) => { b[17] = 0x31; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['NUL in kind', (b) => { b[18] = 0; }, 'ERR_SNAPSHOT_CORRUPT'],
      ['duplicate layer', (b) => { b.set([0x74, 0x63, 0x70], 29); }, 'ERR_SNAPSHOT_CORRUPT'],
      ['record version 0', (b) => { u16(b, 20, 0); }, 'ERR_SNAPSHOT_CORRUPT'],
      ['payload overruns', (b) => { u32(b, 22, 1000); }, 'ERR_SNAPSHOT_CORRUPT'],
      ['payload length huge', (b) => { u32(b, 22, 0xffffffff); }, 'ERR_SNAPSHOT_CORRUPT'],
      ['payload shorter, garbage after', (b) => { u32(b, 22, 4); }, 'ERR_SNAPSHOT_CORRUPT'],
    ];
    for (const [name, f, code] of cases) throwsCode(() => decodeSnapshot(bad(f)), code, name);
    // sanity: the offsets used above are the ones of sample()
    const s = decodeSnapshot(sample());
    assert.deepEqual(s.records.map((r) => r.kind), ['tcp', 'tls', 'app']);
  });

  it('rejects layers out of order, missing or extra for the receiving stack', () => {
    const bytes = sample();
    assert.equal(decodeSnapshot(bytes, { expect: ['tcp', 'tls', 'app'] }).records.length, 3);
    throwsCode(() => decodeSnapshot(bytes, { expect: ['tls', 'tcp', 'app'] }), 'ERR_SNAPSHOT_LAYERS');
    throwsCode(() => decodeSnapshot(bytes, { expect: ['tcp', 'app'] }), 'ERR_SNAPSHOT_LAYERS');
    throwsCode(() => decodeSnapshot(bytes, { expect: ['tcp', 'tls', 'app', 'x'] }), 'ERR_SNAPSHOT_LAYERS');
    const swapped = encodeSnapshot([rec('app', []), rec('tcp', [1])]);
    throwsCode(() => decodeSnapshot(swapped, { expect: ['tcp', 'app'] }), 'ERR_SNAPSHOT_LAYERS');
  });

  it('refuses to encode what it would refuse to decode', () => {
    throwsCode(() => encodeSnapshot([]), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => encodeSnapshot(Array.from({ length: 9 }, (_, i) => rec(`l${i}`, []))), 'ERR_SNAPSHOT_TOO_LARGE');
    throwsCode(() => encodeSnapshot([rec('tcp', []), rec('tcp', [])]), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => encodeSnapshot([rec('', [])]), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => encodeSnapshot([rec('TCP', [])]), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => encodeSnapshot([rec('a'.repeat(17), [])]), 'ERR_SNAPSHOT_CORRUPT');
    throwsCode(() => encodeSnapshot([rec('tcp', [], 0)]), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => encodeSnapshot([rec('tcp', [], 65536)]), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => encodeSnapshot([rec('tcp', [])], { flags: 4 }), 'ERR_SNAPSHOT_VERSION');
    throwsCode(() => encodeSnapshot([rec('tcp', new Uint8Array(100))], { maxBytes: 64 }), 'ERR_SNAPSHOT_TOO_LARGE');
    throwsCode(() => encodeSnapshot([rec('tcp', new Uint8Array(SNAPSHOT_MAX_BYTES))]), 'ERR_SNAPSHOT_TOO_LARGE');
    // the largest snapshot still round trips
    const payload = SNAPSHOT_MAX_BYTES - snapshotSize([rec('tcp', [])]);
    const big = encodeSnapshot([rec('tcp', new Uint8Array(payload).fill(3))]);
    assert.equal(big.length, SNAPSHOT_MAX_BYTES);
    assert.equal(decodeSnapshot(big).records[0]!.bytes.length, payload);
  });
});

describe('wiping helpers', () => {
  it('zero() and withWiped() overwrite secrets, also on failure', () => {
    const a = Uint8Array.of(1, 2, 3);
    const b = Buffer.from([4, 5]);
    zero(a, null, b, undefined);
    assert.deepEqual([...a, ...b], [0, 0, 0, 0, 0]);
    const c = Uint8Array.of(7, 7);
    assert.equal(withWiped(c, (x) => x[0]! + x[1]!), 14);
    assert.deepEqual([...c], [0, 0]);
    const d = Uint8Array.of(9);
    assert.throws(() => withWiped(d, () => { throw new Error('boom'); }), /boom/);
    assert.deepEqual([...d], [0]);
    const recs = [rec('a', [1, 2]), rec('b', [3])];
    zeroRecords(recs);
    assert.ok(recs.every((r) => r.bytes.every((x) => x === 0)));
    assert.ok(equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2)));
    assert.ok(!equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 3)));
    assert.ok(!equalBytes(Uint8Array.of(1), Uint8Array.of(1, 3)));
  });

  it('ByteReader never reads past the end', () => {
    const r = new ByteReader(Uint8Array.of(1, 0, 0), (what) => new SnapshotError('ERR_SNAPSHOT_TRUNCATED', what));
    assert.equal(r.u16('a'), 1);
    throwsCode(() => r.u16('b'), 'ERR_SNAPSHOT_TRUNCATED');
    assert.equal(r.u8('c'), 0);
    throwsCode(() => r.bytes(1, 'd'), 'ERR_SNAPSHOT_TRUNCATED');
    const big = new ByteReader(Uint8Array.of(0, 0, 0, 0, 0, 0, 0x20, 0), (w) => new Error(w));
    assert.equal(big.u64('x'), undefined); // 2^53 is not a safe integer
  });
});

// A stand-in for the native engine: flows are byte strings; snapshot copies one out, adopt makes a new
// flow from bytes after checking them, abort removes one. Enough to watch what the layers do to it.
class FakeEngine {
  flows = new Map<number, Uint8Array>();
  next = 1;
  handed: Uint8Array[] = [];
  adopted = 0;
  open(state: Uint8Array): number { this.flows.set(this.next, state.slice()); return this.next++; }
  snapshot(id: number): Uint8Array {
    const s = this.flows.get(id);
    if (!s) throw new Error(`no flow ${id}`);
    const copy = Uint8Array.from([0x54, ...s]); // 'T' tag + state, as a native record might carry
    this.handed.push(copy);
    return copy;
  }
  adopt(bytes: Uint8Array): number {
    if (bytes[0] !== 0x54) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'tcp record without its tag');
    this.adopted++;
    return this.open(bytes.subarray(1));
  }
  abort(id: number): void { this.flows.delete(id); }
}

interface Conn extends AppConn { flowId: number }

function tcpLayer(engine: FakeEngine, opts: { version?: number; minVersion?: number } = {}) {
  return new PluggedLayer<Conn, number>({
    kind: 'tcp', version: opts.version ?? 1, minVersion: opts.minVersion, maxBytes: 4096,
    serialize: (c) => engine.snapshot(c.flowId),
    check: (b) => { if (b.length < 1) throw new SnapshotError('ERR_SNAPSHOT_CORRUPT', 'empty tcp record'); },
    deserialize: (b) => engine.adopt(b),
    discard: (id) => engine.abort(id),
  });
}

describe('layers (onion)', () => {
  it('serializes the lower layer inside and restores it first', () => {
    const src = new FakeEngine();
    const dst = new FakeEngine();
    const flowId = src.open(Uint8Array.of(10, 20, 30));
    const stack = new AppLayer<Conn, void, number>({ lower: tcpLayer(src) });
    assert.deepEqual(stack.kinds, ['tcp', 'app']);
    const userData = Uint8Array.of(1, 2, 3, 4);
    const bytes = stack.serialize({ flowId, userData }, undefined);
    assert.deepEqual([...userData], [1, 2, 3, 4], 'the app keeps its buffer');
    assert.ok(src.handed[0]!.every((x) => x === 0), 'native record bytes are wiped after encoding');
    const snap = decodeSnapshot(bytes);
    assert.deepEqual(snap.records.map((r) => r.kind), ['tcp', 'app']);
    assert.equal(snap.flags, 0);

    const order: string[] = [];
    const restoreStack = new AppLayer<Conn, void, number>({
      lower: new PluggedLayer<Conn, number>({
        kind: 'tcp', version: 1, serialize: () => new Uint8Array(0),
        deserialize: (b) => { order.push('tcp'); return dst.adopt(b); },
      }),
    });
    const state = restoreStack.deserialize(bytes, undefined);
    order.push('app');
    assert.deepEqual(order, ['tcp', 'app']);
    assert.deepEqual([...dst.flows.get(state.lower)!], [10, 20, 30]);
    zero(bytes);
    assert.deepEqual([...state.userData], [1, 2, 3, 4], 'restored user data is a copy, not a view');
  });

  it('app layer alone, empty and maximal user data', () => {
    const app = new AppLayer<AppConn>();
    assert.deepEqual([...app.deserialize(app.serialize({}, undefined), undefined).userData], []);
    const max = new Uint8Array(APP_USER_DATA_MAX).fill(5);
    const st = app.deserialize(app.serialize({ userData: max }, undefined), undefined);
    assert.equal(st.userData.length, APP_USER_DATA_MAX);
    assert.equal(st.lower, null);
    throwsCode(() => app.serialize({ userData: new Uint8Array(APP_USER_DATA_MAX + 1) }, undefined), 'ERR_SNAPSHOT_TOO_LARGE');
  });

  it('validates every layer before restoring any', () => {
    const src = new FakeEngine();
    const dst = new FakeEngine();
    const flowId = src.open(Uint8Array.of(1));
    const bytes = new AppLayer<Conn, void, number>({ lower: tcpLayer(src) }).serialize({ flowId, userData: new Uint8Array(100) }, undefined);
    const strict = new AppLayer<Conn, void, number>({ lower: tcpLayer(dst), maxUserData: 50 });
    throwsCode(() => strict.deserialize(bytes, undefined), 'ERR_SNAPSHOT_TOO_LARGE');
    assert.equal(dst.adopted, 0, 'the engine never saw the snapshot');
    // a record version the receiver does not read
    const v2 = new AppLayer<Conn, void, number>({ lower: tcpLayer(src, { version: 2 }) }).serialize({ flowId }, undefined);
    throwsCode(() => new AppLayer<Conn, void, number>({ lower: tcpLayer(dst) }).deserialize(v2, undefined), 'ERR_SNAPSHOT_VERSION');
    assert.equal(dst.adopted, 0);
    // a newer reader still reads version 1 when it says so
    const v3reader = new AppLayer<Conn, void, number>({ lower: tcpLayer(dst, { version: 3, minVersion: 1 }) });
    assert.equal(typeof v3reader.deserialize(bytes, undefined).lower, 'number');
    // stacks that differ
    const tlsStack = new AppLayer<Conn, void, number>({
      lower: new PluggedLayer<Conn, number, void, number>({
        kind: 'tls', version: 1, secret: true, lower: tcpLayer(dst),
        serialize: () => new Uint8Array(1), deserialize: (_b, _v, id) => id,
      }),
    });
    throwsCode(() => tlsStack.deserialize(bytes, undefined), 'ERR_SNAPSHOT_LAYERS');
  });

  it('undoes the lower layers when an upper one fails, and marks secrets', () => {
    const src = new FakeEngine();
    const dst = new FakeEngine();
    const flowId = src.open(Uint8Array.of(42));
    const secret = new Uint8Array(32).fill(0x5e);
    const mk = (engine: FakeEngine, fail: boolean) => new AppLayer<Conn, void, number>({
      lower: new PluggedLayer<Conn, number, void, number>({
        kind: 'tls', version: 1, secret: true, lower: tcpLayer(engine),
        serialize: () => secret.slice(),
        deserialize: (b, _v, id) => {
          if (fail) throw new Error('key schedule refused');
          assert.deepEqual([...b], [...secret]);
          return id;
        },
      }),
    });
    const bytes = mk(src, false).serialize({ flowId, userData: Uint8Array.of(1) }, undefined);
    assert.equal(decodeSnapshot(bytes).flags, SnapshotFlags.SECRETS);
    assert.deepEqual(decodeSnapshot(bytes).records.map((r) => r.kind), ['tcp', 'tls', 'app']);
    assert.throws(() => mk(dst, true).deserialize(bytes, undefined), (err: unknown) => {
      assert.ok(err instanceof SnapshotError);
      assert.equal(err.code, 'ERR_SNAPSHOT_RESTORE');
      assert.match(err.message, /key schedule refused/);
      return true;
    });
    assert.equal(dst.adopted, 1, 'tcp was adopted');
    assert.equal(dst.flows.size, 0, '...and discarded again');
    const ok = mk(dst, false).deserialize(bytes, undefined);
    assert.deepEqual([...dst.flows.get(ok.lower)!], [42]);
    // typed errors from a layer pass through unchanged
    throwsCode(() => new AppLayer<Conn, void, number>({
      lower: new PluggedLayer<Conn, number>({ kind: 'tcp', version: 1, serialize: () => Uint8Array.of(0), deserialize: (b) => dst.adopt(b) }),
    }).deserialize(new AppLayer<Conn, void, number>({
      lower: new PluggedLayer<Conn, number>({ kind: 'tcp', version: 1, serialize: () => Uint8Array.of(0), deserialize: () => 0 }),
    }).serialize({ flowId: 0 }, undefined), undefined), 'ERR_SNAPSHOT_CORRUPT');
  });

  it('refuses malformed stacks', () => {
    assert.throws(() => new PluggedLayer({ kind: 'TCP', version: 1, serialize: () => new Uint8Array(0), deserialize: () => 0 }), SnapshotError);
    assert.throws(() => new PluggedLayer({ kind: 'tcp', version: 0, serialize: () => new Uint8Array(0), deserialize: () => 0 }), RangeError);
    const tcp = new PluggedLayer<AppConn, number>({ kind: 'tcp', version: 1, serialize: () => new Uint8Array(0), deserialize: () => 0 });
    assert.throws(() => new PluggedLayer<AppConn, number, void, number>({ kind: 'tcp', version: 1, lower: tcp, serialize: () => new Uint8Array(0), deserialize: () => 0 }), RangeError);
    assert.throws(() => new AppLayer({ maxUserData: APP_USER_DATA_MAX + 1 }), RangeError);
  });
});

describe('snapshot fuzz (seeded)', () => {
  const CODES = new Set<SnapshotErrorCode>(['ERR_SNAPSHOT_TRUNCATED', 'ERR_SNAPSHOT_MAGIC', 'ERR_SNAPSHOT_VERSION',
    'ERR_SNAPSHOT_CHECKSUM', 'ERR_SNAPSHOT_CORRUPT', 'ERR_SNAPSHOT_TOO_LARGE', 'ERR_SNAPSHOT_LAYERS', 'ERR_SNAPSHOT_RESTORE']);
  const KINDS = ['tcp', 'tls', 'app', 'x', 'quic-1', 'a_b', 'zzzzzzzzzzzzzzzz'];

  function randomSnapshot(r: () => number): { records: SnapshotRecord[]; flags: number } {
    const n = 1 + int(r, SNAPSHOT_MAX_LAYERS);
    const kinds = [...KINDS, 'l0', 'l1', 'l2', 'l3', 'l4', 'l5', 'l6', 'l7'].sort(() => r() - 0.5).slice(0, n);
    return {
      records: kinds.map((kind) => rec(kind, randomBytes(r, int(r, 5) === 0 ? 0 : int(r, 80)), 1 + int(r, 3))),
      flags: int(r, 2),
    };
  }

  function mutate(r: () => number, src: Uint8Array): Uint8Array {
    let b = src.slice();
    const rounds = 1 + int(r, 3);
    for (let k = 0; k < rounds; k++) {
      switch (int(r, 7)) {
        case 0: if (b.length) b[int(r, b.length)]! ^= 1 + int(r, 255); break;                 // flip
        case 1: b = b.slice(0, int(r, b.length + 1)); break;                                // truncate
        case 2: b = Uint8Array.from([...b, ...randomBytes(r, 1 + int(r, 8))]); break;       // append
        case 3: { const at = int(r, b.length + 1); b = Uint8Array.from([...b.subarray(0, at), ...randomBytes(r, 1 + int(r, 4)), ...b.subarray(at)]); break; }
        case 4: { const at = int(r, b.length + 1); b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + 1 + int(r, 6))]); break; }
        case 5: if (b.length >= 16) { const at = 4 + int(r, 12); b[at] = int(r, 256); } break; // header field
        case 6: if (b.length > 20) { const at = SNAPSHOT_HEADER_BYTES + int(r, b.length - 20); b[at] = [0, 1, 16, 17, 0xff][int(r, 5)]!; } break;
      }
    }
    // most of the time fix the checksum, so the structural checks behind it get exercised
    if (r() < 0.7 && b.length >= 8) reseal(b);
    return b;
  }

  it('20k mutated snapshots: a typed error or a canonical re-encoding, nothing else', () => {
    const r = prng(0xcab1ba7a);
    const engine = new FakeEngine();
    const stack = new AppLayer<Conn, void, number>({ lower: tcpLayer(engine) });
    const outcomes = new Map<string, number>();
    const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    for (let i = 0; i < 20_000; i++) {
      let src: Uint8Array;
      if (i % 4 === 0) {
        const flowId = engine.open(randomBytes(r, int(r, 40)));
        src = stack.serialize({ flowId, userData: randomBytes(r, int(r, 60)) }, undefined);
        engine.abort(flowId);
      } else {
        const s = randomSnapshot(r);
        src = encodeSnapshot(s.records, { flags: s.flags });
      }
      const input = mutate(r, src);
      try {
        const snap = decodeSnapshot(input);
        assert.deepEqual(encodeSnapshot(snap.records, { flags: snap.flags }), input, `seed case ${i}`);
        count('decoded');
      } catch (err) {
        if (!(err instanceof SnapshotError) || !CODES.has(err.code)) throw new Error(`case ${i}: untyped failure ${String(err)}`, { cause: err });
        count(err.code);
      }
      try {
        const st = stack.deserialize(input, undefined);
        engine.abort(st.lower);
        count('restored');
      } catch (err) {
        if (!(err instanceof SnapshotError) || !CODES.has(err.code)) throw new Error(`case ${i}: untyped restore failure ${String(err)}`, { cause: err });
      }
    }
    assert.equal(engine.flows.size, 0, 'no flow leaked by a failed restore');
    // the mutations reach past the checksum into every kind of check
    for (const k of ['ERR_SNAPSHOT_TRUNCATED', 'ERR_SNAPSHOT_MAGIC', 'ERR_SNAPSHOT_VERSION', 'ERR_SNAPSHOT_CHECKSUM', 'ERR_SNAPSHOT_CORRUPT', 'decoded', 'restored']) {
      assert.ok((outcomes.get(k) ?? 0) > 0, `outcome ${k} never seen: ${JSON.stringify([...outcomes])}`);
    }
  });
});
