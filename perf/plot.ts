// Plots of the benchmarks, made with Vega-Lite (compiled to Vega, rendered to SVG headless) and turned
// into PNG by resvg, so every picture is a declarative spec rather than hand-built SVG. Three kinds:
// latency percentile curves (HDR style: the x axis stretches the tail), grouped bars (throughput,
// rates), and a histogram of migration blackouts on log-spaced bins.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const FONT = 'DejaVu Sans';
const WIDTH = 640;
const HEIGHT = 320;

export interface PlotFiles {
  svg: string;
  png: string;
}

/** Renders a Vega-Lite spec to DIR/NAME.svg and DIR/NAME.png; returns the file names. */
export async function renderPlot(spec: TopLevelSpec, dir: string, name: string): Promise<PlotFiles> {
  const vg = compile({ ...spec, config: { font: FONT, background: 'white', ...(spec.config ?? {}) } } as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(vg), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    const png = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: FONT }, fitTo: { mode: 'zoom', value: 2 } }).render().asPng();
    writeFileSync(join(dir, `${name}.svg`), svg);
    writeFileSync(join(dir, `${name}.png`), png);
    return { svg: `${name}.svg`, png: `${name}.png` };
  } finally {
    view.finalize();
  }
}

export interface PercentileSeries {
  /** Legend entry, e.g. "capybara 64 B". */
  series: string;
  points: readonly { percentile: number; valueUs: number }[];
}

/** The x position of a percentile: 1/(1-p), so 90, 99, 99.9 are evenly spaced on a log axis. */
function tail(p: number): number {
  return 1 / Math.max(1e-6, 1 - p / 100);
}

/** Latency by percentile, one line per series (log x: 0 %, 90 %, 99 %, 99.9 %, ...). */
export function percentileSpec(title: string, series: readonly PercentileSeries[]): TopLevelSpec {
  const values = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.valueUs)).map((p) => ({ series: s.series, percentile: p.percentile, x: tail(p.percentile), us: Math.max(p.valueUs, 0.1) })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'x', type: 'quantitative', scale: { type: 'log' }, title: 'percentile',
        axis: { values: [1, 2, 10, 100, 1000, 10000, 100000], labelExpr: "datum.value == 1 ? '0%' : datum.value == 2 ? '50%' : format(100 - 100 / datum.value, '.3~f') + '%'" },
      },
      y: { field: 'us', type: 'quantitative', scale: { type: 'log' }, title: 'latency (µs, log)' },
      color: { field: 'series', type: 'nominal', title: null },
      tooltip: [{ field: 'series' }, { field: 'percentile' }, { field: 'us' }],
    },
  };
}

export interface Bar {
  /** The x group (e.g. "upload 16 flows"). */
  group: string;
  system: string;
  value: number | null;
}

/** Grouped bars: one group per measure, one bar per system. */
export function barSpec(title: string, unit: string, bars: readonly Bar[]): TopLevelSpec {
  const values = bars.filter((b) => b.value !== null && Number.isFinite(b.value)).map((b) => ({ group: b.group, system: b.system, value: b.value }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: { step: 28 },
    height: HEIGHT,
    data: { values },
    mark: 'bar',
    encoding: {
      x: { field: 'group', type: 'nominal', title: null, sort: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'system', type: 'nominal' },
      y: { field: 'value', type: 'quantitative', title: unit },
      color: { field: 'system', type: 'nominal', title: null },
      tooltip: [{ field: 'group' }, { field: 'system' }, { field: 'value' }],
    },
  };
}

/** Upper bounds (µs) of the blackout histogram's bins: 1-2-5 steps from 100 µs to 1 s. */
export const BLACKOUT_BINS_US = [100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000] as const;

function binLabel(us: number): string {
  return us >= 1000 ? `${us / 1000} ms` : `${us} µs`;
}

/** Counts per bin for each system: values above the last bin go into a final "more" bin. */
export function blackoutBins(valuesUs: readonly number[]): { bin: string; order: number; count: number }[] {
  const counts = new Array<number>(BLACKOUT_BINS_US.length + 1).fill(0);
  for (const v of valuesUs) {
    const i = BLACKOUT_BINS_US.findIndex((b) => v <= b);
    counts[i < 0 ? BLACKOUT_BINS_US.length : i]! += 1;
  }
  return counts.map((count, i) => ({ bin: i < BLACKOUT_BINS_US.length ? `≤ ${binLabel(BLACKOUT_BINS_US[i]!)}` : `> ${binLabel(BLACKOUT_BINS_US.at(-1)!)}`, order: i, count }));
}

/** Histogram of per-migration blackouts, one colour per system, on log-spaced bins. */
export function blackoutSpec(title: string, bySystem: Readonly<Record<string, readonly number[]>>): TopLevelSpec {
  const values = Object.entries(bySystem).flatMap(([system, vs]) => blackoutBins(vs).map((b) => ({ system, ...b })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: { step: 14 },
    height: HEIGHT,
    data: { values },
    mark: 'bar',
    encoding: {
      x: { field: 'bin', type: 'ordinal', sort: { field: 'order' }, title: 'client-visible blackout', axis: { labelAngle: -40 } },
      xOffset: { field: 'system', type: 'nominal' },
      y: { field: 'count', type: 'quantitative', title: 'migrations' },
      color: { field: 'system', type: 'nominal', title: null },
      tooltip: [{ field: 'system' }, { field: 'bin' }, { field: 'count' }],
    },
  };
}

/** One horizontal bar per item on a log axis (values that span orders of magnitude, e.g. ns per op). */
export function rankedBarSpec(title: string, unit: string, items: readonly { label: string; kind: string; value: number }[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: WIDTH,
    height: { step: 22 },
    data: { values: items.map((x, order) => ({ ...x, order })) },
    mark: 'bar',
    encoding: {
      y: { field: 'label', type: 'nominal', sort: { field: 'order' }, title: null, axis: { labelLimit: 360 } },
      x: { field: 'value', type: 'quantitative', scale: { type: 'log' }, title: unit },
      color: { field: 'kind', type: 'nominal', title: null },
      tooltip: [{ field: 'label' }, { field: 'value' }],
    },
  };
}
