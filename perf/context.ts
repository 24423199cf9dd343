// What every suite gets: where things are, the testbed (brought up once on demand and taken down at the
// end only if the bench brought it up), and how results are written.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLAN, down, status, up } from '../dataplane/testbed.js';
import { packageRoot } from '../runtime/native.js';
import { dateStamp } from './format.js';
import type { LatencyHistogram, LatencySummary } from './hdr.js';
import { machineInfo, versions, type MachineInfo, type Versions } from './machine.js';
import { renderPlot, type PlotFiles } from './plot.js';
import { Progress } from './progress.js';
import { missingNumbers, ratioTable, ratiosOf, type SuiteNumbers } from './result.js';
import { BenchError } from './proc.js';
import type { TopLevelSpec } from 'vega-lite';

export interface BenchOptions {
  outDir?: string;
  quick?: boolean;
  /** The command line that started the run, written into every summary ("how it was made"). */
  command?: string;
  /** Progress lines (default: stderr, above the progress bar). */
  log?: (line: string) => void;
  /** The progress bar (default: on stderr when it is a terminal). */
  progress?: Progress;
  /** Only these servers (e.g. ["kernel", "node"] to check the baselines alone); default all. */
  targets?: string[];
}

export class BenchContext {
  readonly root: string;
  readonly outDir: string;
  readonly quick: boolean;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly started: Date;
  readonly log: (line: string) => void;
  readonly targets: ReadonlySet<string> | null;
  readonly progress: Progress;
  readonly versions: Versions;
  #testbedUp = false;
  #broughtUp = false;
  /** suite -> the folder this run writes it to (chosen once, see suiteDir). */
  readonly #suiteDirs = new Map<string, string>();

  constructor(opts: BenchOptions) {
    this.root = packageRoot();
    this.outDir = opts.outDir ?? join(this.root, 'perf', 'results');
    this.quick = opts.quick === true;
    this.command = opts.command ?? 'capybara bench';
    this.machine = machineInfo();
    this.started = new Date();
    this.progress = opts.progress ?? new Progress();
    this.log = opts.log ?? ((l) => this.progress.log(`[bench] ${l}`));
    this.versions = versions(this.root);
    this.targets = opts.targets && opts.targets.length > 0 ? new Set(opts.targets) : null;
  }

  /** The targets of a suite this run measures (all unless BenchOptions.targets narrowed them). */
  pick<T extends string>(all: readonly T[]): T[] {
    return all.filter((t) => this.targets === null || this.targets.has(t));
  }

  /** bin/capybara.js of this package. */
  get cli(): string {
    return join(this.root, 'bin', 'capybara.js');
  }

  /** A compiled helper script next to this file (dist/perf/NAME.js). */
  script(name: string): string {
    return join(dirname(fileURLToPath(import.meta.url)), `${name}.js`);
  }

  get plan(): typeof PLAN {
    return PLAN;
  }

  /** Makes sure the netns testbed is up; remembers whether this run created it. */
  async testbed(): Promise<void> {
    if (this.#testbedUp) return;
    const s = await status();
    if (!s.up) {
      this.log('testbed is down: bringing it up');
      await up();
      this.#broughtUp = true;
    }
    this.#testbedUp = true;
  }

  /** Takes the testbed down if (and only if) this run brought it up. */
  async cleanup(): Promise<void> {
    if (!this.#broughtUp) return;
    this.log('taking the testbed down (this run brought it up)');
    await down();
    this.#broughtUp = false;
    this.#testbedUp = false;
  }

  /**
   * Folder of one suite's results: OUT/<YYYY-MM-DD>-<suite>, or OUT/<YYYY-MM-DD>-<suite>-2, -3, ... when an
   * earlier run of the same day already wrote there (results are kept, never overwritten by a later run).
   */
  suiteDir(suite: string): string {
    let d = this.#suiteDirs.get(suite);
    if (d === undefined) {
      const base = join(this.outDir, `${dateStamp(this.started)}-${suite}`);
      d = base;
      for (let n = 2; existsSync(d); n++) d = `${base}-${n}`;
      this.#suiteDirs.set(suite, d);
    }
    return d;
  }

  /** The suite's folder, created. */
  dir(suite: string): string {
    const d = this.suiteDir(suite);
    mkdirSync(d, { recursive: true });
    return d;
  }

  /** Writes the histogram's percentile distribution to the suite's folder as NAME.hgrm; returns its summary. */
  saveHistogram(suite: string, h: LatencyHistogram): LatencySummary & { hgrm: string } {
    const file = `${h.name}.hgrm`;
    writeFileSync(join(this.dir(suite), file), h.hgrm());
    return { ...h.summary(), hgrm: file };
  }

  /** Renders a plot into the suite's folder (SVG and PNG). */
  plot(suite: string, name: string, spec: TopLevelSpec): Promise<PlotFiles> {
    return renderPlot(spec, this.dir(suite), name);
  }

  /**
   * Writes result.json and summary.md of a suite; returns the folder. `numbers` (systems and headline
   * measures) goes into result.json with the ratios, and summary.md gets its ratio table and the plots.
   * A suite whose numbers miss a system throws: a run that measured nothing must not pass for one.
   */
  write(suite: string, result: Record<string, unknown>, summary: string, numbers?: SuiteNumbers, plots: PlotFiles[] = []): string {
    const dir = this.dir(suite);
    if (numbers) {
      const missing = missingNumbers(numbers);
      if (missing.length > 0) throw new BenchError(`${suite}: ${missing.join('; ')}`);
    }
    const doc = {
      suite,
      date: this.started.toISOString(),
      command: this.command,
      quick: this.quick,
      machine: this.machine,
      // 1/5/15-minute load when the suite ended: the machine is shared, and a busy one explains noisy numbers
      loadAverage: loadavg(),
      versions: this.versions,
      ...(numbers ? { systems: numbers.systems, measures: numbers.measures, ratios: ratiosOf(numbers) } : {}),
      ...(plots.length ? { plots } : {}),
      ...result,
    };
    writeFileSync(join(dir, 'result.json'), `${JSON.stringify(doc, null, 2)}\n`);
    const m = this.machine;
    const v = this.versions;
    const parts = [summary.trimEnd()];
    if (numbers) parts.push('', '## Headline numbers and ratios', '', ratioTable(numbers), '', 'A ratio is capybara\'s number divided by the baseline\'s; whether above or below 1.00x is better depends on the unit.');
    if (plots.length) parts.push('', '## Plots', '', ...plots.map((p) => `![${p.svg}](${p.svg})`));
    const footer = [
      '',
      `Machine: ${m.cpuModel}, ${m.cores} cores (load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')} at the end), Linux ${m.kernel}, Node ${m.node}; capybara ${v.capybara}${v.commit ? ` (${v.commit})` : ''},` +
        ` sockperf ${v.sockperf ?? 'n/a'}, wrk ${v.wrk ?? 'n/a'}, iperf3 ${v.iperf3 ?? 'n/a'}.`,
      `Made by: \`${this.command}\` on ${this.started.toISOString()}${this.quick ? ' (quick mode)' : ''}; raw numbers in result.json, latency distributions in *.hgrm.`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'summary.md'), `${parts.join('\n')}\n${footer}`);
    return dir;
  }
}
