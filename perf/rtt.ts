// rtt: TCP ping-pong latency measured by sockperf from the testbed's client namespace, against
//   capybara  `capybara serve sockperf --on hostA` (the stack on xdp:a0, 10.77.1.10)
//   capybara-native  `capybara serve sockperf --native --on hostA`: the same stack, with the responder in C
//             on the engine thread (native/apps/sockperf.c), so the stack's own latency shows without JS
//   kernel    `sockperf server --tcp` in hostA on the kernel's address (10.77.1.2): C on Linux TCP
//   node      the same sockperf responder app capybara runs, over Node `net` on the kernel's address
// One target runs at a time (its server started, measured for every message size, stopped), so the
// others neither share the CPU nor leave an XDP program on the interface.
//
// sockperf only counts replies whose header has the client bit cleared, so a plain echo is not enough:
// both Node-side servers run runtime/apps/sockperf.ts, a responder that echoes with that bit cleared.
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchContext } from './context.js';
import { fmt, fmtRatio, markdownTable, parseSockperf, parseSockperfFullLog, ratio, type SockperfLatency } from './format.js';
import { histogramOf, type LatencySummary } from './hdr.js';
import { percentileSpec, type PlotFiles } from './plot.js';
import type { Measure } from './result.js';
import { kernelListening, runTool, withServer, type ServerSpec } from './proc.js';

export const RTT_TARGETS = ['capybara', 'capybara-native', 'kernel', 'node'] as const;
export type RttTarget = (typeof RTT_TARGETS)[number];
/** The rows compared with the baselines. */
const CAPYBARA_ROWS = ['capybara', 'capybara-native'] as const;

const PORTS: Record<RttTarget, number> = { capybara: 7007, kernel: 7008, node: 7009, 'capybara-native': 7010 };

interface RttRun {
  target: RttTarget;
  messageSize: number;
  ip: string;
  port: number;
  latency: SockperfLatency;
  /** Every round trip of the run in an HDR histogram (from sockperf --full-log); NAME.hgrm beside result.json. */
  histogram: LatencySummary & { hgrm: string };
  plotPoints: { percentile: number; valueUs: number }[];
  command: string;
}

function serverSpec(ctx: BenchContext, target: RttTarget): ServerSpec {
  const host = ctx.plan.hosts.hostA;
  switch (target) {
    case 'capybara':
      return {
        name: 'capybara',
        cmd: process.execPath,
        args: [ctx.cli, 'serve', 'sockperf', '--on', 'hostA', '--port', String(PORTS.capybara), '--name', 'bench-rtt'],
        readyLine: /listening on/,
        readyTimeoutMs: 30_000,
      };
    case 'capybara-native':
      return {
        name: 'capybara-native',
        cmd: process.execPath,
        args: [ctx.cli, 'serve', 'sockperf', '--native', '--on', 'hostA', '--port', String(PORTS['capybara-native']), '--name', 'bench-rtt'],
        readyLine: /listening on/,
        readyTimeoutMs: 30_000,
      };
    case 'kernel':
      return {
        name: 'kernel',
        cmd: 'ip',
        args: ['netns', 'exec', host.ns, 'sockperf', 'server', '--tcp', '-i', host.kernelIp, '-p', String(PORTS.kernel)],
        probe: kernelListening(host.ns, PORTS.kernel),
      };
    case 'node':
      return {
        name: 'node',
        cmd: 'ip',
        args: ['netns', 'exec', host.ns, process.execPath, ctx.script('kernel-servers'), 'sockperf', host.kernelIp, String(PORTS.node)],
        readyLine: /listening on/,
      };
  }
}

function targetIp(ctx: BenchContext, target: RttTarget): string {
  const h = ctx.plan.hosts.hostA;
  return target === 'capybara' || target === 'capybara-native' ? h.ip : h.kernelIp;
}

export async function runRtt(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const seconds = ctx.quick ? 2 : 10;
  const sizes = [64, 1024];
  await ctx.testbed();
  const runs: RttRun[] = [];
  const targets = ctx.pick(RTT_TARGETS);
  ctx.progress.plan(targets.length * sizes.length);
  for (const target of targets) {
    const ip = targetIp(ctx, target);
    const port = PORTS[target];
    await withServer(serverSpec(ctx, target), async () => {
      for (const size of sizes) {
        const log = join(tmpdir(), `capybara-bench-rtt-${process.pid}-${target}-${size}.csv`);
        const args = ['netns', 'exec', ctx.plan.client.ns, 'sockperf', 'ping-pong', '--tcp', '-i', ip, '-p', String(port), '-m', String(size), '-t', String(seconds), '--full-rtt', '--full-log', log];
        ctx.log(`rtt: ${target} ${size} B for ${seconds} s`);
        ctx.progress.step(`rtt ${target} ${size} B`);
        try {
          const r = await runTool(`sockperf against ${target}`, 'ip', args, (seconds + 30) * 1000);
          const h = histogramOf(`rtt-${size}-${target}`, parseSockperfFullLog(readFileSync(log, 'utf8')));
          runs.push({ target, messageSize: size, ip, port, latency: parseSockperf(`${r.stdout}\n${r.stderr}`), histogram: ctx.saveHistogram('rtt', h), plotPoints: h.plotPoints(), command: `ip ${args.join(' ')}` });
          h.destroy();
        } finally {
          rmSync(log, { force: true });
        }
        ctx.progress.tick();
      }
    });
  }

  const get = (t: RttTarget, size: number) => runs.find((r) => r.target === t && r.messageSize === size)?.latency;
  const keys = ['p50Us', 'p90Us', 'p99Us', 'p999Us', 'maxUs'] as const;
  type Ratios = Record<string, Record<string, { vsKernel: number | null; vsNode: number | null }>>;
  const ratiosOf = (t: (typeof CAPYBARA_ROWS)[number]): Ratios => {
    const out: Ratios = {};
    for (const size of sizes) {
      const c = get(t, size);
      const k = get('kernel', size);
      const n = get('node', size);
      const row: Ratios[string] = {};
      for (const key of keys) row[key] = { vsKernel: ratio(c?.[key], k?.[key]), vsNode: ratio(c?.[key], n?.[key]) };
      out[`${size}`] = row;
    }
    return out;
  };
  const ratios = ratiosOf('capybara');
  const ratiosNative = ratiosOf('capybara-native');

  const rows: (string | number)[][] = [];
  for (const size of sizes) {
    for (const t of targets) {
      const l = get(t, size)!;
      rows.push([`${size} B`, t, fmt(l.p50Us), fmt(l.p90Us), fmt(l.p99Us), fmt(l.p999Us), fmt(l.maxUs), l.observations]);
    }
    for (const [r, t] of [[ratios, 'capybara'], [ratiosNative, 'capybara-native']] as const) {
      if (t === 'capybara-native' && !targets.includes(t)) continue;
      for (const [vs, base] of [['vsKernel', 'kernel'], ['vsNode', 'node']] as const) {
        rows.push([`${size} B`, `**${t} / ${base}**`, ...keys.map((k) => fmtRatio(r[`${size}`]![k]![vs])), '']);
      }
    }
  }
  const h = ctx.plan.hosts.hostA;
  const summary = [
    '# rtt: TCP ping-pong round trip (µs, lower is better)',
    '',
    `sockperf ping-pong --tcp --full-rtt, ${seconds} s per run, from netns \`${ctx.plan.client.ns}\` (${ctx.plan.client.ip}) through the \`lb\` router to hostA.`,
    `capybara: \`capybara serve sockperf\` on ${h.device} (${h.ip}), the responder in JS; capybara-native: the same with`,
    `\`--native\`, the responder in C on the engine thread (no JS per message); kernel: \`sockperf server --tcp\` on ${h.kernelIp};`,
    `node: the same sockperf responder app over Node \`net\` on ${h.kernelIp}. One server runs at a time.`,
    '',
    '## sockperf\'s own percentiles',
    '',
    markdownTable(['msg', 'server', 'p50', 'p90', 'p99', 'p99.9', 'max', 'samples'], rows),
    '',
    'Ratios are capybara divided by the baseline: below 1.00x capybara is faster. The headline table below is computed from',
    'HDR histograms of every round trip (sockperf --full-log, `rtt-<size>-<server>.hgrm`), so it can differ from sockperf\'s by rounding.',
  ].join('\n');
  const hist = (t: RttTarget, size: number) => runs.find((r) => r.target === t && r.messageSize === size)?.histogram;
  const measures: Measure[] = [];
  const hkeys = [['p50Us', 'p50'], ['p90Us', 'p90'], ['p99Us', 'p99'], ['p999Us', 'p99.9'], ['maxUs', 'max']] as const;
  for (const size of sizes) {
    for (const [k, label] of hkeys) {
      measures.push({ name: `rtt ${size} B ${label}`, unit: 'µs', better: 'lower', values: Object.fromEntries(targets.map((t) => [t, hist(t, size)?.[k] ?? null])) });
    }
  }
  const plots: PlotFiles[] = [];
  for (const size of sizes) {
    plots.push(await ctx.plot('rtt', `rtt-${size}`, percentileSpec(`TCP ping-pong round trip, ${size} B (sockperf, HDR percentiles)`,
      targets.map((t) => ({ series: t, points: runs.find((r) => r.target === t && r.messageSize === size)?.plotPoints ?? [] })))));
  }
  const result = {
    config: { targets, seconds, messageSizes: sizes, ports: PORTS, client: ctx.plan.client.ip, tool: 'sockperf ping-pong --tcp --full-rtt --full-log' },
    runs,
    ratiosSockperf: ratios,
    ratiosNativeSockperf: ratiosNative,
  };
  return { dir: ctx.write('rtt', result, summary, { systems: [...targets], measures }, plots), result };
}
