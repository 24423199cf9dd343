// Standalone entry to the benchmarks (what `capybara bench` calls into):
//   node [--expose-gc] dist/perf/main.js [suite...] [--out DIR] [--quick]
import { parseArgs } from 'node:util';
import { runBench, SUITES } from './run.js';

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    options: { out: { type: 'string' }, quick: { type: 'boolean' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    // (--compare and --json are the CLI's: `capybara bench`)
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(`usage: main.js [suite...] [--out DIR] [--quick] [--only capybara,kernel,node]\nsuites:\n${Object.entries(SUITES).map(([k, v]) => `  ${k.padEnd(10)} ${v.summary}`).join('\n')}\n`);
    return 0;
  }
  const command = ['node', ...process.execArgv, 'dist/perf/main.js', ...process.argv.slice(2)].join(' ');
  try {
    const r = await runBench(positionals, { outDir: values.out, quick: values.quick === true, command, targets: values.only?.split(',').filter(Boolean) });
    for (const o of r.outcomes) process.stdout.write(`${o.suite}: ok in ${o.seconds.toFixed(1)} s -> ${o.dir}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main();
