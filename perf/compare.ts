// `bench --compare OLD`: the change of every headline number against an earlier run. OLD is either one
// suite's folder (with result.json) or a folder of them (perf/results); suites and measures are matched
// by name, systems by name. The text is informative only: a slower number never fails a run.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, markdownTable } from './format.js';
import { digits, type Measure } from './result.js';
import { BenchError } from './proc.js';

export interface StoredResult {
  suite: string;
  date?: string;
  measures?: Measure[];
}

/** suite -> its newest result.json under dir (a suite folder, or a folder of <date>-<suite> folders). */
export function loadResults(dir: string): Map<string, StoredResult> {
  const out = new Map<string, StoredResult>();
  const read = (file: string) => {
    try {
      const r = JSON.parse(readFileSync(file, 'utf8')) as StoredResult;
      if (typeof r.suite !== 'string') return;
      const prev = out.get(r.suite);
      if (!prev || String(prev.date ?? '') <= String(r.date ?? '')) out.set(r.suite, r);
    } catch {
      // not a result of ours: skipped
    }
  };
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new BenchError(`--compare: ${dir} is not a folder`, 'ERR_CAPYBARA_USAGE');
  if (existsSync(join(dir, 'result.json'))) read(join(dir, 'result.json'));
  else for (const d of readdirSync(dir).sort()) if (existsSync(join(dir, d, 'result.json'))) read(join(dir, d, 'result.json'));
  if (out.size === 0) throw new BenchError(`--compare: no result.json in ${dir} or its folders`, 'ERR_CAPYBARA_USAGE');
  return out;
}

export interface Change {
  suite: string;
  measure: string;
  system: string;
  unit: string;
  old: number;
  now: number;
  /** now / old - 1 */
  change: number;
  /** true when the change goes the measure's better way */
  better: boolean;
}

export function compareResults(old: Map<string, StoredResult>, now: readonly StoredResult[]): Change[] {
  const out: Change[] = [];
  for (const r of now) {
    const o = old.get(r.suite);
    if (!o?.measures || !r.measures) continue;
    for (const m of r.measures) {
      const om = o.measures.find((x) => x.name === m.name);
      if (!om) continue;
      for (const [system, v] of Object.entries(m.values)) {
        const ov = om.values[system];
        if (typeof v !== 'number' || typeof ov !== 'number' || !Number.isFinite(v) || !Number.isFinite(ov) || ov === 0) continue;
        const change = v / ov - 1;
        out.push({ suite: r.suite, measure: m.name, system, unit: m.unit, old: ov, now: v, change, better: m.better === 'lower' ? change < 0 : change > 0 });
      }
    }
  }
  return out;
}

export function formatChanges(changes: readonly Change[], oldDir: string): string {
  if (changes.length === 0) return `No measure in common with ${oldDir}.`;
  const rows = changes.map((c) => [c.suite, c.measure, c.system, `${fmt(c.old, digits(c.old))} → ${fmt(c.now, digits(c.now))} ${c.unit}`,
    `${c.change >= 0 ? '+' : ''}${(c.change * 100).toFixed(1)}%`, Math.abs(c.change) < 0.02 ? 'same' : c.better ? 'better' : 'worse']);
  return `Change vs ${oldDir}:\n\n${markdownTable(['suite', 'measure', 'system', 'old → now', 'change', ''], rows)}`;
}
