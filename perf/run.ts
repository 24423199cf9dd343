// `capybara bench [suite...] [--out DIR] [--quick]`: runs the suites in order, each comparing capybara with
// the kernel and Node in the same run, and writes OUT/<date>-<suite>/{result.json,summary.md}.
// A suite that cannot run (a server that does not start, a tool that fails or hangs) is reported and the
// run throws at the end; a slow number is just a number.
import { status as testbedStatus } from '../dataplane/testbed.js';
import { BenchContext, type BenchOptions } from './context.js';
import { BenchError } from './proc.js';
import { runBulk } from './bulk.js';
import { runIdle } from './idle.js';
import { runMigration } from './migration.js';
import { runRtt } from './rtt.js';

export { BenchError } from './proc.js';
export type { BenchOptions } from './context.js';

type SuiteFn = (ctx: BenchContext) => Promise<{ dir: string; result: Record<string, unknown> }>;

export const SUITES: Readonly<Record<string, { run: SuiteFn; summary: string; needsTestbed: boolean }>> = Object.freeze({
  rtt: { run: runRtt, summary: 'TCP ping-pong latency (sockperf): capybara vs kernel vs Node net', needsTestbed: true },
  bulk: { run: runBulk, summary: 'single-flow throughput up (discard) and down (http): capybara vs Node net vs nc', needsTestbed: true },
  idle: { run: runIdle, summary: 'memory per idle connection: capybara arena vs kernel sockets', needsTestbed: false },
  migration: { run: runMigration, summary: 'live-migration blackout and phases: capybara vs a TCP_REPAIR kernel handoff (build/tcp_repair)', needsTestbed: true },
});

export const DEFAULT_SUITES = ['rtt', 'bulk', 'idle'] as const;

export interface SuiteOutcome {
  suite: string;
  ok: boolean;
  /** Folder with result.json and summary.md (when ok). */
  dir?: string;
  result?: Record<string, unknown>;
  error?: string;
  seconds: number;
}

export interface BenchReport {
  outcomes: SuiteOutcome[];
}

/**
 * Runs the named suites (all when the list is empty). Resolves with every outcome when all ran; throws a
 * BenchError naming the failed suites otherwise (after running the rest and cleaning up). The error's
 * `report` carries the outcomes.
 */
export async function runBench(suites: string[], opts: BenchOptions = {}): Promise<BenchReport> {
  const names = suites.length > 0 ? suites : [...DEFAULT_SUITES];
  const unknown = names.filter((s) => !Object.prototype.hasOwnProperty.call(SUITES, s));
  if (unknown.length > 0) {
    throw new BenchError(`unknown suite(s) ${unknown.join(', ')} (known: ${Object.keys(SUITES).join(', ')})`, 'ERR_CAPYBARA_USAGE');
  }
  const ctx = new BenchContext(opts);
  const outcomes: SuiteOutcome[] = [];
  try {
    for (const name of names) {
      const t0 = Date.now();
      ctx.log(`suite ${name}: ${SUITES[name]!.summary}`);
      try {
        const { dir, result } = await SUITES[name]!.run(ctx);
        outcomes.push({ suite: name, ok: true, dir, result, seconds: (Date.now() - t0) / 1000 });
        ctx.log(`suite ${name}: done, results in ${dir}`);
      } catch (err) {
        let message = (err as Error)?.message ?? String(err);
        // The testbed's namespaces are shared by name: a test elsewhere taking it down kills our tools.
        if (SUITES[name]!.needsTestbed && !(await testbedStatus().then((s) => s.up, () => false))) {
          message += '\n(the testbed is no longer up: something else took it down during the run)';
        }
        outcomes.push({ suite: name, ok: false, error: message, seconds: (Date.now() - t0) / 1000 });
        ctx.log(`suite ${name}: FAILED: ${message}`);
      }
    }
  } finally {
    await ctx.cleanup().catch((err: Error) => ctx.log(`testbed cleanup failed: ${err.message}`));
  }
  const failed = outcomes.filter((o) => !o.ok);
  if (failed.length > 0) {
    const e = new BenchError(`bench: ${failed.length} suite(s) failed to run: ${failed.map((f) => `${f.suite} (${f.error?.split('\n')[0]})`).join('; ')}`);
    Object.assign(e, { report: { outcomes } });
    throw e;
  }
  return { outcomes };
}
