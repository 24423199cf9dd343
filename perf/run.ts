// `capybara bench [suite...] [--out DIR] [--quick]`: runs the suites in order, each comparing capybara with
// the kernel and Node in the same run, and writes OUT/<date>-<suite>/{result.json,summary.md,*.hgrm,*.svg,*.png}.
// A suite that cannot run (a server that does not start, a tool that fails or hangs) is reported and the
// run throws at the end; a slow number is just a number.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status as testbedStatus } from '../dataplane/testbed.js';
import { runThroughput } from './bulk.js';
import { BenchContext, type BenchOptions } from './context.js';
import { runCps } from './cps.js';
import { runHttp } from './http.js';
import { runMicro } from './micro.js';
import { runMigration } from './migration.js';
import { BenchError } from './proc.js';
import type { Measure } from './result.js';
import { runRtt } from './rtt.js';

export { BenchError } from './proc.js';
export type { BenchOptions } from './context.js';

export type SuiteFn = (ctx: BenchContext) => Promise<{ dir: string; result: Record<string, unknown> }>;

export interface Suite {
  run: SuiteFn;
  summary: string;
  needsTestbed: boolean;
}

/**
 * Every suite, in the order a full run takes them. A suite is one file (perf/<name>.ts) exporting a SuiteFn
 * that writes its folder with ctx.write(suite, result, summary, {systems, measures}, plots); adding one is
 * one line here. TLS variants (perf/tls*.ts) go on the line marked below.
 */
export const SUITES: Readonly<Record<string, Suite>> = Object.freeze({
  micro: { run: runMicro, summary: 'benchmark.js: frame parse/emit, checksum, TCP input, TCB snapshot+adopt, AEAD sealing (ops/s)', needsTestbed: false },
  rtt: { run: runRtt, summary: 'TCP ping-pong 64 B / 1 KB (sockperf, HDR): capybara vs kernel vs Node net', needsTestbed: true },
  throughput: { run: runThroughput, summary: 'bulk Gbit/s, 1 and 16 flows, upload and download: capybara vs Node net vs kernel (iperf3)', needsTestbed: true },
  cps: { run: runCps, summary: 'new connections/s and connect time (HDR), memory per held connection: capybara vs Node net vs kernel', needsTestbed: true },
  http: { run: runHttp, summary: 'wrk requests/s and latency (HDR): capybara serve http vs Node http vs the same app on Node net', needsTestbed: true },
  migration: { run: runMigration, summary: 'live-migration blackout (HDR, histogram) and phases: capybara (TCP and TLS) vs a TCP_REPAIR kernel handoff', needsTestbed: true },
  dpdk: { run: (ctx) => import('./dpdk.js').then((m) => m.runDpdk(ctx)), summary: 'dpdk:net_af_xdp vs xdp: vs kernel (rtt p50/p99, bulk), raw backend pps vs dpdk-testpmd', needsTestbed: true },
  l7: { run: (ctx) => import('./l7.js').then((m) => m.runL7(ctx)), summary: 'L7 direct server return (connection migrates to the owner) vs proxy: wrk req/s and p99, 1 KB/100 KB/1 MB, TCP and TLS', needsTestbed: true },
  // TLS suites: one line each, e.g. `tls: { run: runTls, summary: '...', needsTestbed: true },`
  tls: { run: (ctx) => import('./tls.js').then((m) => m.runTls(ctx)), summary: 'TLS: handshakes/s, 64 B request/response p50/p99, bulk echo: capybara vs Node tls on the kernel', needsTestbed: true },
});

export const DEFAULT_SUITES = ['micro', 'rtt', 'throughput', 'cps', 'http', 'migration', 'tls', 'l7'] as const;

export interface SuiteOutcome {
  suite: string;
  ok: boolean;
  /** Folder with result.json, summary.md, histograms and plots (when ok). */
  dir?: string;
  systems?: string[];
  measures?: Measure[];
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
        void result;
        outcomes.push({ suite: name, ok: true, dir, ...numbersOf(dir), seconds: (Date.now() - t0) / 1000 });
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
    ctx.progress.clear();
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

/** The systems and measures a suite wrote into its result.json. */
function numbersOf(dir: string): Pick<SuiteOutcome, 'systems' | 'measures'> {
  try {
    const doc = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as { systems?: string[]; measures?: Measure[] };
    return { systems: doc.systems, measures: doc.measures };
  } catch {
    return {};
  }
}
