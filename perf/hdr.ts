// Latency histograms of the benchmarks: HDR histograms (hdr-histogram-js) at 3 significant digits, values
// recorded in nanoseconds and reported in microseconds, so sub-microsecond latencies keep their precision
// and a 10 s stall still fits. Every suite keeps each histogram's percentile distribution as a `.hgrm` file
// (the format HdrHistogram's tools and plotters read) next to its result.json.
import hdr from 'hdr-histogram-js';
import type { Histogram } from 'hdr-histogram-js';

/** The percentiles every result reports (as in sockperf's and wrk's own output). */
export const REPORTED_PERCENTILES = [50, 90, 99, 99.9] as const;

export interface LatencySummary {
  count: number;
  minUs: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

/** Percentiles drawn in percentile plots: dense towards the tail, the way HDR plots are read. */
export const PLOT_PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999] as const;

export class HistogramError extends Error {
  readonly code = 'ERR_CAPYBARA_BENCH_HISTOGRAM';
  constructor(message: string) {
    super(message);
    this.name = 'HistogramError';
  }
}

export class LatencyHistogram {
  readonly name: string;
  readonly #h: Histogram;

  constructor(name: string) {
    this.name = name;
    this.#h = hdr.build({ bitBucketSize: 64, autoResize: true, lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3 });
  }

  /** Adds `count` samples of `us` microseconds (negative or non-finite values are a caller's bug). */
  recordUs(us: number, count = 1): void {
    if (!Number.isFinite(us) || us < 0) throw new HistogramError(`${this.name}: cannot record ${us} µs`);
    if (!Number.isInteger(count) || count < 0) throw new HistogramError(`${this.name}: bad sample count ${count}`);
    if (count === 0) return;
    this.#h.recordValueWithCount(Math.round(us * 1000), count);
  }

  recordAllUs(values: Iterable<number>): this {
    for (const v of values) this.recordUs(v);
    return this;
  }

  get count(): number {
    return this.#h.totalCount;
  }

  /** The value at or below which `p` percent of the samples fall (µs; highest equivalent value, ±0.1%). */
  percentileUs(p: number): number {
    if (this.count === 0) return NaN;
    // A bucket's highest equivalent value can lie just above the largest sample: never report more than it.
    return Math.min(this.#h.getValueAtPercentile(p), this.#h.maxValue) / 1000;
  }

  summary(): LatencySummary {
    const h = this.#h;
    if (h.totalCount === 0) return { count: 0, minUs: NaN, meanUs: NaN, p50Us: NaN, p90Us: NaN, p99Us: NaN, p999Us: NaN, maxUs: NaN };
    return {
      count: h.totalCount,
      minUs: h.minNonZeroValue === Number.MAX_SAFE_INTEGER ? 0 : Math.min(h.minNonZeroValue, h.getValueAtPercentile(0)) / 1000,
      meanUs: h.mean / 1000,
      p50Us: this.percentileUs(50),
      p90Us: this.percentileUs(90),
      p99Us: this.percentileUs(99),
      p999Us: this.percentileUs(99.9),
      maxUs: h.maxValue / 1000,
    };
  }

  /** [percentile, µs] pairs for plots. */
  plotPoints(): { percentile: number; valueUs: number }[] {
    if (this.count === 0) return [];
    return PLOT_PERCENTILES.map((p) => ({ percentile: p, valueUs: this.percentileUs(p) }));
  }

  /** The percentile distribution in HdrHistogram's .hgrm text format, values in microseconds. */
  hgrm(): string {
    return this.#h.outputPercentileDistribution(5, 1000);
  }

  /** Compressed base64 of the whole histogram (HdrHistogram's interchange encoding), for result.json. */
  encoded(): string {
    return hdr.encodeIntoCompressedBase64(this.#h);
  }

  destroy(): void {
    this.#h.destroy();
  }
}

/** A histogram of the given microsecond samples. */
export function histogramOf(name: string, valuesUs: Iterable<number>): LatencyHistogram {
  return new LatencyHistogram(name).recordAllUs(valuesUs);
}
