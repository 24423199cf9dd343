// What every suite gets: where things are, the testbed (brought up once on demand and taken down at the
// end only if the bench brought it up), and how results are written.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLAN, down, status, up } from '../dataplane/testbed.js';
import { packageRoot } from '../runtime/native.js';
import { dateStamp } from './format.js';
import { machineInfo, type MachineInfo } from './machine.js';

export interface BenchOptions {
  outDir?: string;
  quick?: boolean;
  /** The command line that started the run, written into every summary ("how it was made"). */
  command?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
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
  #testbedUp = false;
  #broughtUp = false;

  constructor(opts: BenchOptions) {
    this.root = packageRoot();
    this.outDir = opts.outDir ?? join(this.root, 'perf', 'results');
    this.quick = opts.quick === true;
    this.command = opts.command ?? 'capybara bench';
    this.machine = machineInfo();
    this.started = new Date();
    this.log = opts.log ?? ((l) => process.stderr.write(`[bench] ${l}\n`));
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

  /** Folder of one suite's results: OUT/<YYYY-MM-DD>-<suite>. */
  suiteDir(suite: string): string {
    return join(this.outDir, `${dateStamp(this.started)}-${suite}`);
  }

  /** Writes result.json and summary.md of a suite; returns the folder. */
  write(suite: string, result: Record<string, unknown>, summary: string): string {
    const dir = this.suiteDir(suite);
    mkdirSync(dir, { recursive: true });
    const doc = {
      suite,
      date: this.started.toISOString(),
      command: this.command,
      quick: this.quick,
      machine: this.machine,
      ...result,
    };
    writeFileSync(join(dir, 'result.json'), `${JSON.stringify(doc, null, 2)}\n`);
    const m = this.machine;
    const footer = [
      '',
      `Machine: ${m.cpuModel}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node}.`,
      `Made by: \`${this.command}\` on ${this.started.toISOString()}${this.quick ? ' (quick mode)' : ''}; raw numbers in result.json.`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'summary.md'), `${summary.trimEnd()}\n${footer}`);
    return dir;
  }
}
