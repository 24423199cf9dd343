// micro: operations of the engine and the migration protocol measured one by one with benchmark.js,
// reported as ops/s ± relative margin of error (99 % confidence, benchmark.js's rme).
//   native  frame parse / emit, Internet checksum, TCP input fast path, snapshot + adopt of a TCB (idle,
//           and with 64 KiB buffered): `micro(op, N)` of the addon (native/addon/micro.cc) runs N
//           operations in C per call, so what benchmark.js times is N operations, not an N-API call
//   JS      AEAD sealing and opening of migration-channel messages (runtime/migration/keys.ts, AES-256-GCM
//           through Node's OpenSSL) for a 64 B control message and a 16 KiB snapshot
import { randomBytes } from 'node:crypto';
import Benchmark from 'benchmark';
import { open, seal, type DirectionKeys } from '../runtime/migration/keys.js';
import { addonPath, loadBinding } from '../runtime/native.js';
import type { BenchContext } from './context.js';
import { fmt, markdownTable } from './format.js';
import { rankedBarSpec } from './plot.js';
import { BenchError } from './proc.js';
import type { Measure } from './result.js';

type MicroFn = (op: string, iterations: number) => number;

interface MicroCase {
  name: string;
  group: 'native' | 'js';
  /** operations per call of fn */
  batch: number;
  fn: () => void;
}

export interface MicroResult {
  name: string;
  group: string;
  opsPerSecond: number;
  /** relative margin of error, percent */
  rmePercent: number;
  nsPerOp: number;
  samples: number;
  batch: number;
}

function nativeMicro(): MicroFn {
  const b = loadBinding() as unknown as { micro?: MicroFn };
  if (typeof b.micro !== 'function') throw new BenchError(`the addon (${addonPath()}) has no micro(): rebuild it (npx node-gyp rebuild)`);
  return b.micro;
}

function cases(): MicroCase[] {
  const micro = nativeMicro();
  const native = (name: string, op: string, batch: number): MicroCase => {
    const first = micro(op, 1); // builds the fixture once, outside the timing
    if (first !== 1) throw new BenchError(`micro ${op}: fixture failed (${first})`);
    return { name, group: 'native', batch, fn: () => void micro(op, batch) };
  };
  const keys: DirectionKeys = { key: randomBytes(32), iv: randomBytes(12) };
  const aad = Buffer.alloc(13, 2);
  const small = randomBytes(64);
  const large = randomBytes(16 * 1024);
  const sealedSmall = seal(keys, 1, aad, small);
  const sealedLarge = seal(keys, 2, aad, large);
  let seq = 10;
  return [
    native('frame parse (eth+ipv4+tcp, 64 B payload, checksums verified)', 'frame_parse', 10_000),
    native('frame emit (eth+ipv4+tcp headers, payload copy, checksum)', 'frame_emit', 10_000),
    native('checksum 64 B', 'checksum_64', 10_000),
    native('checksum 1460 B', 'checksum_1460', 2000),
    native('TCP input fast path (in-order 64 B segment)', 'tcp_input', 2000),
    native('TCB snapshot + adopt, idle', 'snapshot_restore_empty', 200),
    native('TCB snapshot + adopt, 64 KiB buffered', 'snapshot_restore_64k', 20),
    { name: 'AEAD seal migration message 64 B', group: 'js', batch: 1, fn: () => void seal(keys, seq++, aad, small) },
    { name: 'AEAD open migration message 64 B', group: 'js', batch: 1, fn: () => void open(keys, 1, aad, sealedSmall) },
    { name: 'AEAD seal migration message 16 KiB', group: 'js', batch: 1, fn: () => void seal(keys, seq++, aad, large) },
    { name: 'AEAD open migration message 16 KiB', group: 'js', batch: 1, fn: () => void open(keys, 2, aad, sealedLarge) },
  ];
}

/** Runs every case with benchmark.js (synchronously, one after the other). */
export function runMicroCases(maxTime: number, onCase?: (name: string, done: boolean) => void, filter?: (name: string) => boolean): MicroResult[] {
  const out: MicroResult[] = [];
  for (const c of cases().filter((x) => !filter || filter(x.name))) {
    onCase?.(c.name, false);
    const bench = new Benchmark(c.name, c.fn, { maxTime, minSamples: 5, initCount: 1 });
    bench.run({ async: false });
    if (bench.error) throw new BenchError(`micro ${c.name}: ${String(bench.error)}`);
    const ops = bench.hz * c.batch;
    out.push({ name: c.name, group: c.group, opsPerSecond: ops, rmePercent: bench.stats.rme, nsPerOp: 1e9 / ops, samples: bench.stats.sample.length, batch: c.batch });
    onCase?.(c.name, true);
  }
  return out;
}

export async function runMicro(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const maxTime = ctx.quick ? 0.2 : 2;
  ctx.progress.plan(11);
  const results = runMicroCases(maxTime, (name, done) => (done ? ctx.progress.tick() : ctx.progress.step(`micro ${name}`)));
  const measures: Measure[] = results.map((r) => ({ name: r.name, unit: 'ops/s', better: 'higher', values: { capybara: r.opsPerSecond } }));
  const plots = [await ctx.plot('micro', 'micro', rankedBarSpec('Micro-benchmarks (benchmark.js): time per operation', 'ns per operation (log, lower is better)',
    results.map((r) => ({ label: r.name.replace(/ \(.*\)$/, ''), kind: r.group, value: r.nsPerOp }))))];
  const summary = [
    '# micro: operations one by one (benchmark.js, higher ops/s is better)',
    '',
    'Native operations run N at a time inside the addon (`micro(op, N)`, native/addon/micro.cc), so the N-API call is',
    'amortized; the fixtures are built once outside the timing: a frame, and TCP instances joined by an in-memory wire',
    '(the TCP input case replays the peer\'s next in-order segment, reads the receive buffer every 512 segments, and',
    'recomputes the checksum the input verifies). AEAD cases call runtime/migration/keys.ts (AES-256-GCM, Node\'s OpenSSL).',
    `benchmark.js maxTime ${maxTime} s per case; ± is the relative margin of error at 99 %.`,
    '',
    markdownTable(['operation', 'ops/s', '±', 'ns/op', 'samples', 'ops per call'],
      results.map((r) => [r.name, fmt(r.opsPerSecond, 0), `${fmt(r.rmePercent, 2)}%`, fmt(r.nsPerOp, 1), r.samples, r.batch])),
  ].join('\n');
  const result = { config: { maxTime, tool: `benchmark.js ${Benchmark.version}` }, results };
  return { dir: ctx.write('micro', result, summary, { systems: ['capybara'], measures }, plots), result };
}
