// perf/hdr.ts: the HDR histograms every latency of the benchmarks goes through. Known samples in, the
// percentiles out, checked against the exact nearest-rank values (HDR keeps 3 significant digits, so
// within 0.1 %), plus the .hgrm text the result folders keep.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HistogramError, LatencyHistogram, histogramOf } from '../../perf/hdr.js';
import { prng } from '../helpers/prng.js';

/** Exact nearest-rank percentile of the samples. */
function exact(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

function near(actual: number, expected: number, rel = 0.001, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= Math.abs(expected) * rel + 1e-9, `${what}: ${actual} is not within ${rel * 100}% of ${expected}`);
}

describe('LatencyHistogram', () => {
  it('1..10000 µs uniformly: percentiles, min, max, mean', () => {
    const h = histogramOf('uniform', Array.from({ length: 10_000 }, (_, i) => i + 1));
    const s = h.summary();
    assert.equal(s.count, 10_000);
    near(s.p50Us, 5000, 0.001, 'p50');
    near(s.p90Us, 9000, 0.001, 'p90');
    near(s.p99Us, 9900, 0.001, 'p99');
    near(s.p999Us, 9990, 0.001, 'p99.9');
    near(s.maxUs, 10_000, 0.001, 'max');
    near(s.minUs, 1, 0.001, 'min');
    near(s.meanUs, 5000.5, 0.001, 'mean');
    h.destroy();
  });

  it('matches exact nearest-rank percentiles of random long-tailed samples within 0.1 %', () => {
    const r = prng(7);
    // a 20 µs floor and a tail several times longer: the shape of a ping-pong on a shared machine
    const values = Array.from({ length: 50_000 }, () => 20 + Math.round(1000 * (-Math.log(1 - r())) ** 2) / 1000);
    const h = histogramOf('tail', values);
    for (const p of [1, 25, 50, 75, 90, 99, 99.9, 99.99, 100]) near(h.percentileUs(p), exact(values, p), 0.001, `p${p}`);
    h.destroy();
  });

  it('keeps sub-microsecond precision (values are recorded in ns)', () => {
    const h = histogramOf('fast', [0.25, 0.25, 0.5, 0.75]);
    near(h.percentileUs(50), 0.25, 0.001, 'p50');
    near(h.percentileUs(100), 0.75, 0.001, 'max');
    h.destroy();
  });

  it('counts: 99 samples of 100 µs and one of 10 ms', () => {
    const h = new LatencyHistogram('counts');
    h.recordUs(100, 99);
    h.recordUs(10_000, 1);
    assert.equal(h.count, 100);
    near(h.percentileUs(99), 100, 0.001, 'p99');
    near(h.percentileUs(99.5), 10_000, 0.001, 'p99.5');
    h.recordUs(5, 0); // nothing
    assert.equal(h.count, 100);
    h.destroy();
  });

  it('zero is a value (a migration without a visible pause)', () => {
    const h = histogramOf('zeros', [0, 0, 0, 1000]);
    assert.equal(h.percentileUs(50), 0);
    near(h.percentileUs(100), 1000, 0.001, 'max');
    h.destroy();
  });

  it('writes the .hgrm percentile distribution in microseconds', () => {
    const h = histogramOf('hgrm', Array.from({ length: 1000 }, (_, i) => i + 1));
    const text = h.hgrm();
    assert.match(text, /Value\s+Percentile\s+TotalCount\s+1\/\(1-Percentile\)/);
    assert.match(text, /#\[Max\s+=\s+1000\.\d+, Total count\s+=\s+1000\]/);
    const p50 = text.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[1] === '0.500000000000');
    assert.ok(p50, text);
    near(Number(p50[0]), 500, 0.002, 'hgrm p50');
    assert.ok(h.encoded().length > 10);
    h.destroy();
  });

  it('plot points rise with the percentile', () => {
    const h = histogramOf('plot', Array.from({ length: 5000 }, (_, i) => (i % 97) + 1));
    const pts = h.plotPoints();
    assert.ok(pts.length >= 10);
    for (let i = 1; i < pts.length; i++) assert.ok(pts[i]!.valueUs >= pts[i - 1]!.valueUs);
    assert.deepEqual(new LatencyHistogram('empty').plotPoints(), []);
    h.destroy();
  });

  it('refuses negative and non-finite values and bad counts', () => {
    const h = new LatencyHistogram('bad');
    assert.throws(() => h.recordUs(-1), HistogramError);
    assert.throws(() => h.recordUs(Number.NaN), HistogramError);
    assert.throws(() => h.recordUs(1, 1.5), HistogramError);
    assert.ok(Number.isNaN(h.summary().p50Us));
    h.destroy();
  });
});
