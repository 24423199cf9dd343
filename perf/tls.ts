// tls: TLS termination on capybara vs Node's `tls` on the kernel stack, same run, same client.
//   handshakes   perf/tls-peer.js hs (Node tls in `client`) opens TLS connections to hostA for a fixed time,
//                8 at a time, each closed after its handshake: handshakes/s and handshake time (HDR).
//   rr           one connection, 64 B request/response round trips: p50/p99 (HDR).
//   bulk         one connection, 64 MB sent and echoed back: MB/s.
// Servers: `capybara serve echo --tls-cert/--tls-key` (xdp:a0; OpenSSL handshake, capybara's record layer)
// and a Node `tls` echo server (perf/tls-peer.js server) on hostA's kernel address. One RSA-2048 certificate
// from a throwaway CA (runtime/tls-cert.ts, openssl CLI); TLS 1.3, the suite both sides choose.
import { makeCerts } from '../runtime/tls-cert.js';
import type { BenchContext } from './context.js';
import { fmt, markdownTable } from './format.js';
import { histogramOf, type LatencySummary } from './hdr.js';
import { barSpec, percentileSpec, type PlotFiles } from './plot.js';
import { kernelListening, runTool, withServer, type ServerSpec } from './proc.js';
import type { Measure } from './result.js';

export const TLS_SYSTEMS = ['capybara', 'node'] as const;
type System = (typeof TLS_SYSTEMS)[number];
const PORTS: Record<System, number> = { capybara: 7443, node: 7444 };
const CONCURRENCY = 8;

interface SystemRun {
  system: System;
  handshakes: number;
  handshakesPerSecond: number;
  hsErrors: number;
  handshake: LatencySummary & { hgrm: string };
  rr: LatencySummary & { hgrm: string };
  rrPoints: { percentile: number; valueUs: number }[];
  bulkMBps: number;
  protocol: string;
  cipher: string;
}

export async function runTls(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const seconds = ctx.quick ? 2 : 8;
  const rrCount = ctx.quick ? 2000 : 20_000;
  const bulkBytes = (ctx.quick ? 16 : 64) * 1024 * 1024;
  await ctx.testbed();
  const systems = ctx.pick(TLS_SYSTEMS);
  const h = ctx.plan.hosts.hostA;
  const ns = ctx.plan.client.ns;
  const certs = await makeCerts({ san: [`IP:${h.ip}`, `IP:${h.kernelIp}`, 'DNS:capybara.test'] });
  const runs: SystemRun[] = [];
  ctx.progress.plan(systems.length);
  try {
    for (const s of systems) {
      ctx.progress.step(`tls ${s}`);
      const ip = s === 'capybara' ? h.ip : h.kernelIp;
      const port = String(PORTS[s]);
      const spec: ServerSpec = s === 'capybara'
        ? { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', 'echo', '--on', 'hostA', '--port', port, '--name', 'bench-tls', '--tls-cert', certs.certFile, '--tls-key', certs.keyFile], readyLine: /listening on/, readyTimeoutMs: 30_000 }
        : { name: 'node', cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('tls-peer'), 'server', h.kernelIp, port, certs.certFile, certs.keyFile], probe: kernelListening(h.ns, PORTS.node) };
      await withServer(spec, async () => {
        const peer = (args: string[], ms: number) => runTool(`tls ${args[0]} against ${s}`, 'ip', ['netns', 'exec', ns, process.execPath, ctx.script('tls-peer'), ...args], ms)
          .then((r) => JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>);
        ctx.log(`tls: handshakes against ${s} for ${seconds} s, ${CONCURRENCY} at a time`);
        const hs = await peer(['hs', ip, port, certs.caFile, String(seconds), String(CONCURRENCY)], (seconds + 60) * 1000);
        ctx.log(`tls: ${rrCount} round trips of 64 B against ${s}`);
        const rr = await peer(['rr', ip, port, certs.caFile, String(rrCount), '64'], 120_000);
        ctx.log(`tls: ${bulkBytes >> 20} MB echoed by ${s}`);
        const bulk = await peer(['bulk', ip, port, certs.caFile, String(bulkBytes)], 180_000);
        const hh = histogramOf(`tls-handshake-${s}`, hs.handshakeUs as number[]);
        const rh = histogramOf(`tls-rr64-${s}`, rr.rttUs as number[]);
        runs.push({
          system: s, handshakes: hs.handshakes as number, handshakesPerSecond: (hs.handshakes as number) / (hs.seconds as number),
          hsErrors: hs.errors as number, handshake: ctx.saveHistogram('tls', hh), rr: ctx.saveHistogram('tls', rh), rrPoints: rh.plotPoints(),
          bulkMBps: bulk.mbPerSecond as number, protocol: String(rr.protocol), cipher: String(rr.cipher),
        });
        hh.destroy();
        rh.destroy();
      });
      ctx.progress.tick();
    }
  } finally {
    certs.cleanup();
  }
  const by = (s: System) => runs.find((r) => r.system === s);
  const values = (f: (r: SystemRun) => number) => Object.fromEntries(systems.map((s) => [s, by(s) ? f(by(s)!) : null]));
  const measures: Measure[] = [
    { name: 'TLS handshakes per second', unit: 'hs/s', better: 'higher', values: values((r) => r.handshakesPerSecond) },
    { name: 'TLS handshake p50', unit: 'µs', better: 'lower', values: values((r) => r.handshake.p50Us) },
    { name: 'TLS handshake p99', unit: 'µs', better: 'lower', values: values((r) => r.handshake.p99Us) },
    { name: 'TLS rr 64 B p50', unit: 'µs', better: 'lower', values: values((r) => r.rr.p50Us) },
    { name: 'TLS rr 64 B p99', unit: 'µs', better: 'lower', values: values((r) => r.rr.p99Us) },
    { name: 'TLS bulk echo', unit: 'MB/s', better: 'higher', values: values((r) => r.bulkMBps) },
  ];
  const plots: PlotFiles[] = [
    await ctx.plot('tls', 'tls-handshakes', barSpec(`TLS handshakes per second (${CONCURRENCY} concurrent)`, 'handshakes / s',
      systems.map((s) => ({ group: 'handshakes/s', system: s, value: by(s)?.handshakesPerSecond ?? null })))),
    await ctx.plot('tls', 'tls-rr64', percentileSpec('TLS 64 B request/response round trip by percentile (HDR)', runs.map((r) => ({ series: r.system, points: r.rrPoints })))),
  ];
  const summary = [
    '# tls: TLS termination, capybara vs Node tls on the kernel',
    '',
    `Client: perf/tls-peer.js (Node \`tls\`) in netns \`${ns}\`. capybara: \`capybara serve echo --tls-cert/--tls-key\` on xdp:a0`,
    '(OpenSSL for the handshake, capybara\'s record layer after it); node: a Node `tls` echo server on hostA\'s kernel address.',
    `Handshakes: ${CONCURRENCY} loops for ${seconds} s, each a new connection closed after its handshake (no resumption).`,
    '',
    markdownTable(['system', 'protocol / cipher', 'handshakes/s', 'hs p50 µs', 'hs p99 µs', 'rr 64 B p50 µs', 'rr p99 µs', 'bulk echo MB/s', 'errors'],
      runs.map((r) => [r.system, `${r.protocol} ${r.cipher}`, fmt(r.handshakesPerSecond, 0), fmt(r.handshake.p50Us), fmt(r.handshake.p99Us), fmt(r.rr.p50Us), fmt(r.rr.p99Us), fmt(r.bulkMBps, 1), r.hsErrors])),
  ].join('\n');
  const result = { config: { seconds, concurrency: CONCURRENCY, rrCount, bulkBytes, ports: PORTS }, runs };
  return { dir: ctx.write('tls', result, summary, { systems: [...systems], measures }, plots), result };
}
