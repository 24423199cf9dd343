// The common shape of every suite's result.json: which systems ran, and the headline measures as numbers
// per system (what summary.md's ratio table, `--compare` and the smoke test read). Suites add their raw
// data (runs, percentiles, histograms) beside it. Pure: no I/O.
import { fmt, fmtRatio, markdownTable, ratio } from './format.js';

export interface Measure {
  /** Stable key, e.g. "rtt 64 B p99" (what --compare matches on). */
  name: string;
  unit: string;
  better: 'lower' | 'higher';
  /** One number per system of the suite; null when the system has no such number. */
  values: Record<string, number | null>;
}

export interface SuiteNumbers {
  /** Every system measured, capybara's first. */
  systems: string[];
  measures: Measure[];
}

/** Systems that are capybara (compared against the others). */
export function isCapybara(system: string): boolean {
  return system.startsWith('capybara');
}

/** capybara-system / baseline for every measure: {measure: {"capybara/kernel": 0.8, ...}}. */
export function ratiosOf(n: SuiteNumbers): Record<string, Record<string, number | null>> {
  const caps = n.systems.filter(isCapybara);
  const bases = n.systems.filter((s) => !isCapybara(s));
  const out: Record<string, Record<string, number | null>> = {};
  for (const m of n.measures) {
    const row: Record<string, number | null> = {};
    for (const c of caps) for (const b of bases) row[`${c}/${b}`] = ratio(m.values[c], m.values[b]);
    out[m.name] = row;
  }
  return out;
}

/** Decimals that suit a number's size (integers none, 0.123, 1.23, 12.3, 123). */
export function digits(v: number | null | undefined): number {
  if (v === null || v === undefined || !Number.isFinite(v)) return 1;
  if (Number.isInteger(v)) return 0;
  const a = Math.abs(v);
  return a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
}

/** Markdown: one row per measure, a column per system, then capybara / baseline ratios. */
export function ratioTable(n: SuiteNumbers): string {
  const caps = n.systems.filter(isCapybara);
  const bases = n.systems.filter((s) => !isCapybara(s));
  const pairs = caps.flatMap((c) => bases.map((b) => [c, b] as const));
  const header = ['measure', 'unit', ...n.systems, ...pairs.map(([c, b]) => `${c} / ${b}`)];
  const rows = n.measures.map((m) => [
    m.name,
    `${m.unit} (${m.better} is better)`,
    ...n.systems.map((s) => fmt(m.values[s], digits(m.values[s]))),
    ...pairs.map(([c, b]) => fmtRatio(ratio(m.values[c], m.values[b]))),
  ]);
  return markdownTable(header, rows);
}

/** Problems that make a result unusable: a system with no number at all, a measure nobody has. */
export function missingNumbers(n: SuiteNumbers): string[] {
  const out: string[] = [];
  if (n.systems.length === 0) out.push('no systems');
  if (n.measures.length === 0) out.push('no measures');
  for (const s of n.systems) {
    if (!n.measures.some((m) => typeof m.values[s] === 'number' && Number.isFinite(m.values[s]))) out.push(`system ${s} has no number`);
  }
  return out;
}
