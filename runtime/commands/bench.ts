// capybara bench: runs the perf suites (perf/run.ts); each writes result.json, summary.md, .hgrm latency
// distributions and SVG/PNG plots into <out>/<date>-<suite>/.
import { UsageError } from '../errors.js';
import { str, type Command } from '../cli.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'measure capybara side by side with the kernel TCP stack and Node (micro, rtt, throughput, cps, http, migration, tls, l7, dpdk)',
  usage: 'capybara bench [micro|rtt|throughput|cps|http|migration|tls|l7|dpdk ...] [--quick] [--out DIR] [--compare OLD] [--only SYSTEMS] [--json]',
  help: `Suites (default: micro rtt throughput cps http migration tls l7, in this order):
  micro       benchmark.js: frame parse/emit, checksums, TCP input fast path, TCB snapshot+adopt (idle, 64 KiB
              buffered), AEAD sealing of migration messages: ops/s ± error
  rtt         64 B and 1 KB TCP ping-pong, sockperf from the testbed client: p50/p90/p99/p99.9/max from HDR
              histograms (capybara, capybara-native on the engine thread, kernel sockperf server, Node net)
  throughput  bulk Gbit/s, 1 and 16 flows, upload and download (capybara, Node net, kernel with iperf3)
  cps         new connections per second and connect time (capybara, Node net, kernel sockperf server);
              memory per held idle connection (arena slot vs kernel socket + Node net)
  http        wrk requests/s and latency: capybara serve http, Node http, the same app on Node net
  migration   client-visible blackout and phases of live migrations vs a TCP_REPAIR handoff: the JS echo
              over the channel (capybara) and through the engines' lane (capybara-lane), the native echo
              (capybara-native), TLS (capybara-tls)
  tls         TLS handshakes/s, 64 B request/response p50/p99, bulk echo: capybara vs Node tls on the kernel
  l7          L7 direct server return vs proxy mode: wrk req/s and p99, 1 KB/100 KB/1 MB objects, TCP and TLS
  dpdk        (only when asked; needs the DPDK build) dpdk:net_af_xdp vs xdp: vs kernel, raw pps vs testpmd

Every suite runs capybara and its baselines in the same run on the same path and writes
<out>/<date>-<suite>/: result.json (machine, kernel, versions, config, systems, measures, ratios, raw
percentiles), summary.md (tables with capybara/baseline ratios), *.hgrm (HDR percentile distributions),
*.svg and *.png (plots).

Options:
  --quick         a short smoke version (the whole run in about 3 minutes: fewer samples)
  --out DIR       where to write <date>-<suite>/ (default perf/results; -2, -3, ... if an earlier run wrote it)
  --compare OLD   print the change of every measure vs an earlier run (a suite folder or a folder of them)
  --only LIST     systems to measure (e.g. capybara,kernel,node; migration: capybara,capybara-lane,
                  capybara-native,capybara-tls,tcp_repair,tcp_repair_fwd)
  --json          print {"outcomes": [{suite, ok, dir, systems, measures, seconds, error?}], "compare"?} on stdout

A progress bar is drawn on stderr when it is a terminal. Needs root and network namespaces for the
testbed suites (the testbed is brought up and down if it was not up), build/tcp_repair for migration.
Exit status 1 when a suite failed to run; a slow number is never a failure.`,
  options: { out: { type: 'string' }, quick: { type: 'boolean' }, only: { type: 'string' }, compare: { type: 'string' } },
  async run(positionals, values, io) {
    const { runBench, SUITES } = await import('../../perf/run.js');
    const { compareResults, formatChanges, loadResults } = await import('../../perf/compare.js');
    for (const s of positionals) if (!(s in SUITES)) throw new UsageError(`unknown suite "${s}" (known: ${Object.keys(SUITES).join(', ')})`);
    const only = str(values, 'only');
    const compare = str(values, 'compare');
    // Read the old results first: a bad --compare folder is a usage error, not a failure after a long run.
    let old: ReturnType<typeof loadResults> | null = null;
    try {
      if (compare !== undefined) old = loadResults(compare);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const command = ['capybara', 'bench', ...process.argv.slice(3)].join(' ');
    const report = await runBench(positionals, {
      outDir: str(values, 'out'),
      quick: values.quick === true,
      command,
      targets: only?.split(',').filter(Boolean),
    });
    const now = report.outcomes.filter((o) => o.ok).map((o) => ({ suite: o.suite, measures: o.measures ?? [] }));
    const changes = old ? compareResults(old, now) : null;
    if (values.json) {
      io.out(JSON.stringify({ ...report, ...(changes ? { compare: { from: compare, changes } } : {}) }));
    } else {
      for (const o of report.outcomes) io.out(`${o.suite}: ok in ${o.seconds.toFixed(1)} s -> ${o.dir}`);
      if (changes) io.out(`\n${formatChanges(changes, compare!)}`);
    }
    return 0;
  },
};
