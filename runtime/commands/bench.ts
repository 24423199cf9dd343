// capybara bench: runs the perf suites (perf/run.ts) and writes JSON + summary.md per suite.
import { UsageError } from '../errors.js';
import { str, type Command } from '../cli.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'measure capybara side by side with the kernel TCP stack and Node net (rtt, bulk, idle, migration)',
  usage: 'capybara bench [rtt|bulk|idle|migration ...] [--out DIR] [--quick] [--only SYSTEMS] [--json]',
  help: `Suites (default: rtt, bulk, idle):
  rtt        64 B and 1 KB TCP ping-pong with sockperf from the testbed client: p50..max, ratios
             (capybara with the JS app, capybara-native on the engine thread, kernel, Node net)
  bulk       single-flow upload and download throughput (Gbit/s), ratios
  idle       memory per idle connection (arena slots/chunks) vs kernel sockets
  migration  client-visible blackout and phases of live migrations vs a TCP_REPAIR kernel handoff

Options:
  --out DIR    where to write <date>-<suite>/ (default perf/results)
  --quick      a short smoke version (about a minute per suite)
  --only LIST  systems to measure (e.g. capybara,kernel,node; migration: capybara,tcp_repair,tcp_repair_fwd)
  --json       print the report as one JSON document

Needs root and network namespaces for rtt and bulk (the testbed is brought up and down if it was not up).
Exit status 1 when a suite failed to run; a slow number is never a failure.`,
  options: { out: { type: 'string' }, quick: { type: 'boolean' }, only: { type: 'string' } },
  async run(positionals, values, io) {
    const { runBench, SUITES } = await import('../../perf/run.js');
    for (const s of positionals) if (!(s in SUITES)) throw new UsageError(`unknown suite "${s}" (known: ${Object.keys(SUITES).join(', ')})`);
    const only = str(values, 'only');
    const command = ['capybara', 'bench', ...process.argv.slice(3)].join(' ');
    const report = await runBench(positionals, {
      outDir: str(values, 'out'),
      quick: values.quick === true,
      command,
      targets: only?.split(',').filter(Boolean),
    });
    if (values.json) io.out(JSON.stringify(report));
    else for (const o of report.outcomes) io.out(`${o.suite}: ok in ${o.seconds.toFixed(1)} s -> ${o.dir}`);
    return 0;
  },
};
