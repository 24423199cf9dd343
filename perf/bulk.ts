// throughput: bulk transfer between the client namespace and hostA, 1 and 16 flows, upload and download,
// aggregate Gbit/s measured on the client:
//   capybara  `capybara serve discard|http --on hostA` (xdp:a0), driven by perf/bulk-client.js (Node net):
//             upload writes to discard, download GETs /bytes/N from http
//   node      the same discard/http apps over Node `net` on hostA's kernel address, the same client
//   kernel    iperf3 server and client (C on Linux TCP at both ends: the kernel's own best), -P flows, -R down
// One server at a time; each transfer is repeated and the median reported.
import type { BenchContext } from './context.js';
import { fmt, gbitPerSec, markdownTable, median } from './format.js';
import { barSpec } from './plot.js';
import { BenchError, kernelListening, runTool, withServer, type ServerSpec } from './proc.js';
import type { Measure } from './result.js';

export const THROUGHPUT_SYSTEMS = ['capybara', 'kernel', 'node'] as const;
type System = (typeof THROUGHPUT_SYSTEMS)[number];
type Direction = 'upload' | 'download';
const DIRECTIONS: readonly Direction[] = ['upload', 'download'];
const FLOWS = [1, 16] as const;

const PORTS: Record<System, Record<Direction, number>> = {
  capybara: { upload: 7011, download: 7021 },
  node: { upload: 7012, download: 7022 },
  kernel: { upload: 7013, download: 7013 },
};

interface Transfer {
  direction: Direction;
  flows: number;
  system: System;
  run: number;
  bytes: number;
  ms: number;
  gbps: number;
}

/** Lowest rate a transfer may take before it counts as hung: 2 MB/s, and never less than 60 s. */
function transferTimeoutMs(bytes: number): number {
  return Math.max(60_000, (bytes / 2e6) * 1000) + 15_000;
}

function serverSpec(ctx: BenchContext, s: System, dir: Direction): ServerSpec {
  const h = ctx.plan.hosts.hostA;
  const port = String(PORTS[s][dir]);
  const app = dir === 'upload' ? 'discard' : 'http';
  switch (s) {
    case 'capybara':
      return { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', app, '--on', 'hostA', '--port', port, '--name', 'bench-bulk'], readyLine: /listening on/, readyTimeoutMs: 30_000 };
    case 'node':
      return { name: 'node', cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('kernel-servers'), app, h.kernelIp, port], readyLine: /listening on/ };
    case 'kernel':
      return { name: 'kernel', cmd: 'ip', args: ['netns', 'exec', h.ns, 'iperf3', '-s', '-B', h.kernelIp, '-p', port], probe: kernelListening(h.ns, PORTS.kernel.upload) };
  }
}

async function transfer(ctx: BenchContext, s: System, dir: Direction, flows: number, bytes: number, commands: Record<string, string>): Promise<{ bytes: number; ms: number }> {
  const h = ctx.plan.hosts.hostA;
  const client = ctx.plan.client.ns;
  const ip = s === 'capybara' ? h.ip : h.kernelIp;
  const port = String(PORTS[s][dir]);
  if (s === 'kernel') {
    const args = ['netns', 'exec', client, 'iperf3', '-c', ip, '-p', port, '-P', String(flows), '-n', String(bytes), '-J', ...(dir === 'download' ? ['-R'] : [])];
    commands[`${dir}-${flows}-${s}`] = `ip ${args.join(' ')}`;
    const r = await runTool(`iperf3 ${dir} ${flows} flow(s)`, 'ip', args, transferTimeoutMs(bytes));
    const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bytes?: number; seconds?: number } }; error?: string };
    const got = j.end?.sum_received;
    if (j.error || typeof got?.bytes !== 'number' || typeof got.seconds !== 'number' || got.seconds <= 0) throw new BenchError(`iperf3 ${dir}: ${j.error ?? 'no end.sum_received'}`);
    return { bytes: got.bytes, ms: got.seconds * 1000 };
  }
  const args = ['netns', 'exec', client, process.execPath, ctx.script('bulk-client'), dir === 'upload' ? 'up' : 'down', ip, port, String(bytes), String(flows)];
  commands[`${dir}-${flows}-${s}`] = `ip ${args.join(' ')}`;
  const r = await runTool(`bulk ${dir} ${flows} flow(s) with ${s}`, 'ip', args, transferTimeoutMs(bytes));
  const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { bytes?: number; ms?: number };
  const want = Math.floor(bytes / flows) * flows;
  if (typeof j.bytes !== 'number' || typeof j.ms !== 'number' || j.bytes !== want) throw new BenchError(`bulk ${dir} with ${s}: bad client report ${r.stdout.trim()}`);
  return { bytes: j.bytes, ms: j.ms };
}

export async function runThroughput(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const bytes = (ctx.quick ? 100 : 500) * 1_000_000;
  const repeats = ctx.quick ? 1 : 3;
  await ctx.testbed();
  const systems = ctx.pick(THROUGHPUT_SYSTEMS);
  const transfers: Transfer[] = [];
  const commands: Record<string, string> = {};
  ctx.progress.plan(systems.length * DIRECTIONS.length * FLOWS.length * repeats);

  for (const s of systems) {
    for (const dir of DIRECTIONS) {
      await withServer(serverSpec(ctx, s, dir), async () => {
        for (const flows of FLOWS) {
          for (let i = 0; i < repeats; i++) {
            ctx.progress.step(`throughput ${s} ${dir} ${flows} flow(s) ${i + 1}/${repeats}`);
            ctx.log(`throughput: ${dir} ${bytes / 1e6} MB, ${flows} flow(s), ${s} (run ${i + 1}/${repeats})`);
            const t = await transfer(ctx, s, dir, flows, bytes, commands);
            transfers.push({ direction: dir, flows, system: s, run: i + 1, bytes: t.bytes, ms: t.ms, gbps: gbitPerSec(t.bytes, t.ms) });
            ctx.progress.tick();
          }
        }
      });
    }
  }

  const med = (dir: Direction, flows: number, s: System) => {
    const v = transfers.filter((x) => x.direction === dir && x.flows === flows && x.system === s).map((x) => x.gbps);
    return v.length ? median(v) : null;
  };
  const measures: Measure[] = [];
  for (const dir of DIRECTIONS) {
    for (const flows of FLOWS) {
      measures.push({ name: `${dir} ${flows} flow${flows > 1 ? 's' : ''}`, unit: 'Gbit/s', better: 'higher', values: Object.fromEntries(systems.map((s) => [s, med(dir, flows, s)])) });
    }
  }
  const rows = transfers.map((t) => [t.direction, t.flows, t.system, t.run, fmt(t.gbps, 2), fmt(t.ms, 0)]);
  const plots = [await ctx.plot('throughput', 'throughput', barSpec('Bulk throughput, aggregate of all flows (median)', 'Gbit/s',
    measures.flatMap((m) => systems.map((s) => ({ group: m.name, system: s, value: m.values[s] ?? null })))))];
  const summary = [
    '# throughput: bulk transfer (Gbit/s, higher is better)',
    '',
    `${bytes / 1e6} MB per transfer split over 1 or 16 flows, ${repeats} run(s) each, median shown; measured in netns`,
    `\`${ctx.plan.client.ns}\` through the \`lb\` router to hostA. capybara and node: perf/bulk-client.js (Node net) uploads to the`,
    'discard app or downloads GET /bytes/N from the http app (capybara serve on xdp:a0 / the same apps over Node net on the kernel).',
    'kernel: iperf3 at both ends (C on Linux TCP; -P flows, -R for download), the kernel stack without a JS app on either side.',
    'The testbed veths run with checksum/segmentation offloads off (AF_XDP needs whole frames), for every server alike.',
    '',
    '## Every transfer',
    '',
    markdownTable(['direction', 'flows', 'system', 'run', 'Gbit/s', 'ms'], rows),
  ].join('\n');
  const result = { config: { bytes, repeats, flows: FLOWS, ports: PORTS, commands }, transfers };
  return { dir: ctx.write('throughput', result, summary, { systems: [...systems], measures }, plots), result };
}
