// cps: how fast connections are made and what holding them costs.
//   rate      perf/cps-client.js (Node net) in the client namespace opens connections to hostA for a fixed
//             time, 32 at a time, each closed at once (client first), and records every connection's
//             connect time and life in HDR histograms. Servers: capybara `serve echo` (xdp:a0), the same
//             echo app over Node `net`, and `sockperf server --tcp` (C on the kernel). The client namespace
//             gets a wide port range and tcp_tw_reuse for the run (restored after), so TIME_WAIT does not
//             run it out of ports.
//   held      many idle connections held at once (perf/idle.ts): capybara's arena slots vs kernel sockets
//             (slab) with Node `net` (JS heap).
import { run } from '../dataplane/exec.js';
import type { BenchContext } from './context.js';
import { fmt, markdownTable } from './format.js';
import { histogramOf, type LatencySummary } from './hdr.js';
import { capybaraIdle, fdLimit, kernelIdle } from './idle.js';
import { barSpec, percentileSpec, type PlotFiles } from './plot.js';
import { BenchError, kernelListening, runTool, withServer, type ServerSpec } from './proc.js';
import type { Measure } from './result.js';

export const CPS_SYSTEMS = ['capybara', 'kernel', 'node'] as const;
type System = (typeof CPS_SYSTEMS)[number];
const PORTS: Record<System, number> = { capybara: 7031, node: 7032, kernel: 7033 };
const CONCURRENCY = 32;

interface RateRun {
  system: System;
  connections: number;
  errors: number;
  lastError: string;
  seconds: number;
  perSecond: number;
  connect: LatencySummary & { hgrm: string };
  lifetime: LatencySummary & { hgrm: string };
  connectPoints: { percentile: number; valueUs: number }[];
}

function serverSpec(ctx: BenchContext, s: System): ServerSpec {
  const h = ctx.plan.hosts.hostA;
  const port = String(PORTS[s]);
  switch (s) {
    case 'capybara':
      return { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', 'echo', '--on', 'hostA', '--port', port, '--name', 'bench-cps'], readyLine: /listening on/, readyTimeoutMs: 30_000 };
    case 'node':
      return { name: 'node', cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('kernel-servers'), 'echo', h.kernelIp, port], readyLine: /listening on/ };
    case 'kernel':
      return { name: 'kernel', cmd: 'ip', args: ['netns', 'exec', h.ns, 'sockperf', 'server', '--tcp', '-i', h.kernelIp, '-p', port], probe: kernelListening(h.ns, PORTS.kernel) };
  }
}

async function sysctl(ns: string, key: string, value?: string): Promise<string> {
  const args = ['netns', 'exec', ns, 'sysctl', '-n', ...(value === undefined ? [key] : ['-w', `${key}=${value}`])];
  const r = await run('ip', args, { timeoutMs: 5000 });
  if (r.code !== 0) throw new BenchError(`sysctl ${key} in ${ns}: ${r.stderr.trim()}`);
  return r.stdout.trim().replace(/\s+/g, ' ');
}

export async function runCps(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const seconds = ctx.quick ? 2 : 10;
  const held = ctx.quick ? 2000 : 20_000;
  await ctx.testbed();
  const systems = ctx.pick(CPS_SYSTEMS);
  const ns = ctx.plan.client.ns;
  ctx.progress.plan(systems.length + 2);
  const rates: RateRun[] = [];
  const saved = { range: await sysctl(ns, 'net.ipv4.ip_local_port_range'), reuse: await sysctl(ns, 'net.ipv4.tcp_tw_reuse') };
  try {
    await sysctl(ns, 'net.ipv4.ip_local_port_range', '1024 65000');
    await sysctl(ns, 'net.ipv4.tcp_tw_reuse', '1');
    for (const s of systems) {
      ctx.progress.step(`cps ${s}`);
      ctx.log(`cps: new connections to ${s} for ${seconds} s, ${CONCURRENCY} at a time`);
      const ip = s === 'capybara' ? ctx.plan.hosts.hostA.ip : ctx.plan.hosts.hostA.kernelIp;
      await withServer(serverSpec(ctx, s), async () => {
        const args = ['netns', 'exec', ns, process.execPath, ctx.script('cps-client'), ip, String(PORTS[s]), String(seconds), String(CONCURRENCY)];
        const r = await runTool(`cps client against ${s}`, 'ip', args, (seconds + 60) * 1000);
        const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { connections: number; errors: number; lastError: string; seconds: number; connectUs: number[]; lifetimeUs: number[] };
        const c = histogramOf(`connect-${s}`, j.connectUs);
        const l = histogramOf(`lifetime-${s}`, j.lifetimeUs);
        rates.push({ system: s, connections: j.connections, errors: j.errors, lastError: j.lastError, seconds: j.seconds, perSecond: j.connections / j.seconds,
          connect: ctx.saveHistogram('cps', c), lifetime: ctx.saveHistogram('cps', l), connectPoints: c.plotPoints() });
        c.destroy();
        l.destroy();
      });
      ctx.progress.tick();
    }
  } finally {
    await sysctl(ns, 'net.ipv4.ip_local_port_range', saved.range.replace(' ', ' ')).catch(() => {});
    await sysctl(ns, 'net.ipv4.tcp_tw_reuse', saved.reuse).catch(() => {});
  }

  ctx.progress.step(`cps: ${held} held capybara connections`);
  ctx.log(`cps: ${held} idle capybara connections held over mem:`);
  const cpb = await capybaraIdle(held);
  ctx.progress.tick();
  const nk = Math.max(1, Math.min(held, Math.floor((fdLimit() - 256) / 2)));
  ctx.progress.step(`cps: ${nk} held kernel connections`);
  ctx.log(`cps: ${nk} idle Node net connections held over kernel loopback`);
  const ker = await kernelIdle(nk);
  ctx.progress.tick();

  const rate = (s: System) => rates.find((r) => r.system === s);
  const measures: Measure[] = [
    { name: 'new connections per second', unit: 'conn/s', better: 'higher', values: Object.fromEntries(systems.map((s) => [s, rate(s)?.perSecond ?? null])) },
    { name: 'connect p50', unit: 'µs', better: 'lower', values: Object.fromEntries(systems.map((s) => [s, rate(s)?.connect.p50Us ?? null])) },
    { name: 'connect p99', unit: 'µs', better: 'lower', values: Object.fromEntries(systems.map((s) => [s, rate(s)?.connect.p99Us ?? null])) },
    { name: 'connection life p50 (open, close, closed)', unit: 'µs', better: 'lower', values: Object.fromEntries(systems.map((s) => [s, rate(s)?.lifetime.p50Us ?? null])) },
    // Held: capybara's endpoint is an arena slot (+ its JS objects); the kernel's a socket in slab caches;
    // Node net's the same socket plus its JS objects.
    { name: 'memory per held connection (stack + JS)', unit: 'bytes', better: 'lower', values: {
      capybara: cpb.bytesPerEndpoint + Math.max(0, cpb.jsHeapBytesPerEndpoint),
      kernel: ker.slabBytesPerEndpoint,
      node: ker.slabBytesPerEndpoint === null ? null : ker.slabBytesPerEndpoint + Math.max(0, ker.jsHeapBytesPerEndpoint),
    } },
    { name: 'stack memory per held connection', unit: 'bytes', better: 'lower', values: { capybara: cpb.bytesPerEndpoint, kernel: ker.slabBytesPerEndpoint, node: ker.slabBytesPerEndpoint } },
  ];
  for (const m of measures) for (const k of Object.keys(m.values)) if (!systems.includes(k as System)) delete m.values[k];
  const plots: PlotFiles[] = [
    await ctx.plot('cps', 'cps-rate', barSpec('New TCP connections per second (32 concurrent, client closes first)', 'connections / s',
      systems.map((s) => ({ group: 'connections/s', system: s, value: rate(s)?.perSecond ?? null })))),
    await ctx.plot('cps', 'cps-connect', percentileSpec('Connect time (SYN to established) by percentile (HDR)', rates.map((r) => ({ series: r.system, points: r.connectPoints })))),
  ];
  const summary = [
    '# cps: new connections per second, and memory per held connection',
    '',
    `Rate: perf/cps-client.js (Node net) in netns \`${ns}\`, ${CONCURRENCY} loops for ${seconds} s, each connecting, closing at once`,
    'and waiting for the server\'s close. capybara: `capybara serve echo` on xdp:a0; node: the same echo app over Node `net` on',
    'the kernel; kernel: `sockperf server --tcp` (C, epoll). Client namespace: port range 1024-65000 and tcp_tw_reuse=1 during the run.',
    '',
    markdownTable(['system', 'connections', 'per second', 'errors', 'connect p50 µs', 'connect p99 µs', 'life p50 µs'],
      rates.map((r) => [r.system, r.connections, fmt(r.perSecond, 0), r.errors ? `${r.errors} (${r.lastError})` : 0, fmt(r.connect.p50Us), fmt(r.connect.p99Us), fmt(r.lifetime.p50Us)])),
    '',
    `Held: ${cpb.connections} idle capybara connections between two Stacks over a mem: wire (arena: ${fmt(cpb.slotsPerConnection.server, 3)} slot +`,
    `${fmt(cpb.chunksPerConnection.server, 3)} chunk per endpoint, ${fmt(cpb.bytesPerEndpoint, 0)} B; JS heap ${fmt(cpb.jsHeapBytesPerEndpoint, 0)} B per endpoint);`,
    `${ker.connections} Node \`net\` connections over 127.0.0.1 (kernel slab growth ${fmt(ker.slabBytesPerEndpoint, 0)} B per endpoint, machine-wide so`,
    `approximate; JS heap ${fmt(ker.jsHeapBytesPerEndpoint, 0)} B). "kernel" is a socket held by a C program: the slab bytes alone.`,
  ].join('\n');
  const result = { config: { seconds, concurrency: CONCURRENCY, ports: PORTS, held, heldKernel: nk }, rates, held: { capybara: cpb, kernel: ker } };
  return { dir: ctx.write('cps', result, summary, { systems: [...systems], measures }, plots), result };
}
