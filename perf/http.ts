// http: wrk from the client namespace against an HTTP server on hostA, GET /bytes/SIZE over keep-alive
// connections, requests/s and the latency distribution (every latency wrk recorded, through a Lua done()
// hook, into an HDR histogram):
//   capybara   `capybara serve http --on hostA` (xdp:a0, the http app of runtime/apps)
//   node       Node's own `http` module on the kernel's TCP (perf/kernel-servers.js node-http): what a
//              Node user would run
//   node-net   the same http app capybara serves, over Node `net` on the kernel: only the stack differs
// There is no C HTTP server on the testbed, so the kernel's TCP appears here under Node.
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchContext } from './context.js';
import { fmt, markdownTable, ParseError } from './format.js';
import { LatencyHistogram, type LatencySummary } from './hdr.js';
import { barSpec, percentileSpec, type PlotFiles } from './plot.js';
import { runTool, withServer, type ServerSpec } from './proc.js';
import type { Measure } from './result.js';

export const HTTP_SYSTEMS = ['capybara', 'node', 'node-net'] as const;
type System = (typeof HTTP_SYSTEMS)[number];
const PORTS: Record<System, number> = { capybara: 7041, node: 7042, 'node-net': 7043 };
const SIZES = [64, 16384] as const;
const CONNECTIONS = 32;
const THREADS = 2;

// wrk's done() hook: totals, then every distinct latency (µs) with its count.
const LUA = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("CPB_WRK %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local v, c = latency(i)
    io.write(string.format("CPB_LAT %d %d\\n", v, c))
  end
end
`;

export interface WrkReport {
  requests: number;
  durationUs: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  /** [latency µs, count] */
  latency: [number, number][];
}

/** Parses what the done() hook above prints; throws ParseError when the totals line is missing. */
export function parseWrkReport(out: string): WrkReport {
  const t = /CPB_WRK (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(out);
  if (!t) throw new ParseError(`wrk printed no report: ${JSON.stringify(out.slice(-300))}`);
  const n = t.slice(1).map(Number) as [number, number, number, number, number, number, number, number];
  const latency: [number, number][] = [];
  for (const m of out.matchAll(/CPB_LAT (\d+) (\d+)/g)) latency.push([Number(m[1]), Number(m[2])]);
  return { requests: n[0], durationUs: n[1], bytes: n[2], errors: { connect: n[3], read: n[4], write: n[5], status: n[6], timeout: n[7] }, latency };
}

interface HttpRun {
  system: System;
  size: number;
  requestsPerSecond: number;
  mbitPerSecond: number;
  report: Omit<WrkReport, 'latency'>;
  latency: LatencySummary & { hgrm: string };
  points: { percentile: number; valueUs: number }[];
}

function serverSpec(ctx: BenchContext, s: System): ServerSpec {
  const h = ctx.plan.hosts.hostA;
  const port = String(PORTS[s]);
  if (s === 'capybara') return { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', 'http', '--on', 'hostA', '--port', port, '--name', 'bench-http'], readyLine: /listening on/, readyTimeoutMs: 30_000 };
  return { name: s, cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('kernel-servers'), s === 'node' ? 'node-http' : 'http', h.kernelIp, port], readyLine: /listening on/ };
}

export async function runHttp(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const seconds = ctx.quick ? 3 : 10;
  await ctx.testbed();
  const systems = ctx.pick(HTTP_SYSTEMS);
  const lua = join(tmpdir(), `capybara-bench-wrk-${process.pid}.lua`);
  writeFileSync(lua, LUA);
  const runs: HttpRun[] = [];
  ctx.progress.plan(systems.length * SIZES.length);
  try {
    for (const s of systems) {
      const ip = s === 'capybara' ? ctx.plan.hosts.hostA.ip : ctx.plan.hosts.hostA.kernelIp;
      await withServer(serverSpec(ctx, s), async () => {
        for (const size of SIZES) {
          ctx.progress.step(`http ${s} ${size} B`);
          ctx.log(`http: wrk ${CONNECTIONS} connections for ${seconds} s, GET /bytes/${size} from ${s}`);
          const args = ['netns', 'exec', ctx.plan.client.ns, 'wrk', '-t', String(THREADS), '-c', String(CONNECTIONS), '-d', `${seconds}s`, '--timeout', '5s', '-s', lua, `http://${ip}:${PORTS[s]}/bytes/${size}`];
          const r = await runTool(`wrk against ${s}`, 'ip', args, (seconds + 30) * 1000);
          const w = parseWrkReport(r.stdout);
          const h = new LatencyHistogram(`http-${size}-${s}`);
          for (const [us, count] of w.latency) h.recordUs(us, count);
          const { latency: _l, ...report } = w;
          void _l;
          runs.push({ system: s, size, requestsPerSecond: w.requests / (w.durationUs / 1e6), mbitPerSecond: (w.bytes * 8) / w.durationUs, report,
            latency: ctx.saveHistogram('http', h), points: h.plotPoints() });
          h.destroy();
          ctx.progress.tick();
        }
      });
    }
  } finally {
    rmSync(lua, { force: true });
  }
  const get = (s: System, size: number) => runs.find((r) => r.system === s && r.size === size);
  const measures: Measure[] = [];
  for (const size of SIZES) {
    measures.push({ name: `${size} B requests per second`, unit: 'req/s', better: 'higher', values: Object.fromEntries(systems.map((s) => [s, get(s, size)?.requestsPerSecond ?? null])) });
    for (const [k, label] of [['p50Us', 'p50'], ['p99Us', 'p99'], ['p999Us', 'p99.9']] as const) {
      measures.push({ name: `${size} B latency ${label}`, unit: 'µs', better: 'lower', values: Object.fromEntries(systems.map((s) => [s, get(s, size)?.latency[k] ?? null])) });
    }
  }
  const plots: PlotFiles[] = [
    await ctx.plot('http', 'http-rps', barSpec(`HTTP requests per second (wrk, ${CONNECTIONS} keep-alive connections)`, 'requests / s',
      SIZES.flatMap((size) => systems.map((s) => ({ group: `GET /bytes/${size}`, system: s, value: get(s, size)?.requestsPerSecond ?? null }))))),
  ];
  for (const size of SIZES) {
    plots.push(await ctx.plot('http', `http-latency-${size}`, percentileSpec(`HTTP latency, GET /bytes/${size} (wrk, HDR percentiles)`, systems.map((s) => ({ series: s, points: get(s, size)?.points ?? [] })))));
  }
  const errs = (r: HttpRun) => Object.values(r.report.errors).reduce((a, b) => a + b, 0);
  const summary = [
    '# http: wrk against HTTP servers (requests/s higher is better, latency lower is better)',
    '',
    `wrk -t${THREADS} -c${CONNECTIONS} -d${seconds}s from netns \`${ctx.plan.client.ns}\`, GET /bytes/SIZE (deterministic pattern bytes) over keep-alive.`,
    'capybara: `capybara serve http` on xdp:a0; node: Node\'s `http` module on the kernel (perf/kernel-servers.js node-http);',
    'node-net: the same http app capybara serves, over Node `net` on the kernel. Latency: every latency wrk recorded (its',
    'done() hook), in HDR histograms (`http-<size>-<system>.hgrm`).',
    '',
    markdownTable(['size', 'system', 'req/s', 'Mbit/s', 'p50 µs', 'p99 µs', 'p99.9 µs', 'max µs', 'errors'],
      runs.map((r) => [r.size, r.system, fmt(r.requestsPerSecond, 0), fmt(r.mbitPerSecond, 0), fmt(r.latency.p50Us), fmt(r.latency.p99Us), fmt(r.latency.p999Us), fmt(r.latency.maxUs), errs(r)])),
  ].join('\n');
  const result = { config: { seconds, connections: CONNECTIONS, threads: THREADS, sizes: SIZES, ports: PORTS }, runs };
  return { dir: ctx.write('http', result, summary, { systems: [...systems], measures }, plots), result };
}
