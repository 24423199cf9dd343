// l7: L7 direct server return vs the classic proxy (Prism, NSDI'21: 3.7x over a proxy on TCP, 3.4x on TLS,
// on its hardware). `capybara serve l7` on hostA and hostB behind the XDP balancer's VIP, in two modes:
//   capybara-dsr  the host holding the connection reads a request and, when another backend owns the
//                 object, migrates the live connection (TCP, and TLS with --tls-cert) to it; the owner
//                 answers straight to the client through the VIP
//   proxy         the host holding the connection fetches the object from its owner over a second (pooled,
//                 keep-alive) connection and relays it: every byte crosses the front end twice
// wrk in `client` cycles every connection through 16 objects of one size spread over both hosts by their
// hash, so the owner changes from request to request (about half of the requests hit the other host);
// 1 KB, 100 KB and 1 MB objects, plain and TLS, requests/s and p50/p99 (wrk --latency).
import { up } from '../dataplane/testbed.js';
import type { BenchContext } from './context.js';
import { fmt, markdownTable, ratio, fmtRatio } from './format.js';
import { runWrk, type WrkResult } from './l7-wrk.js';
import { BenchError, startServer, type RunningServer } from './proc.js';
import type { Measure } from './result.js';
import { makeCerts, type CertSet } from '../runtime/tls-cert.js';

export const L7_SYSTEMS = ['capybara-dsr', 'proxy'] as const;
type System = (typeof L7_SYSTEMS)[number];
const SIZES = [{ label: '1 KB', suffix: '1k', bytes: 1024 }, { label: '100 KB', suffix: '100k', bytes: 102_400 }, { label: '1 MB', suffix: '1m', bytes: 1_048_576 }] as const;
const TRANSPORTS = ['plain', 'tls'] as const;
type Transport = (typeof TRANSPORTS)[number];
const CONNECTIONS = 8;
const OBJECTS = 16;
const PORT: Record<Transport, number> = { plain: 7080, tls: 7443 };

interface L7Run {
  system: System;
  transport: Transport;
  size: string;
  bytes: number;
  wrk: Omit<WrkResult, never>;
  gbitPerSecond: number;
}

async function startBackends(ctx: BenchContext, system: System, transport: Transport, certs: CertSet | undefined): Promise<RunningServer[]> {
  const out: RunningServer[] = [];
  try {
    for (const h of ['hostA', 'hostB'] as const) {
      const args = [ctx.cli, 'serve', 'l7', '--on', h, '--port', String(PORT[transport]), '--backends', 'hostA,hostB',
        '--mode', system === 'proxy' ? 'proxy' : 'dsr'];
      if (transport === 'tls' && certs) args.push('--tls-cert', certs.certFile, '--tls-key', certs.keyFile);
      out.push(await startServer({ name: `${system} ${transport} on ${h}`, cmd: process.execPath, args, readyLine: /listening on/, readyTimeoutMs: 30_000 }));
    }
  } catch (err) {
    for (const s of out) await s.stop();
    throw err;
  }
  return out;
}

export async function runL7(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const seconds = ctx.quick ? 3 : 8;
  await ctx.testbed();
  await up({ lb: 'xdp' }); // the VIP needs the balancer (and its redirect table, which the migrations write)
  const systems = ctx.pick(L7_SYSTEMS);
  const runs: L7Run[] = [];
  const certs = await makeCerts({ san: [`IP:${ctx.plan.vip}`] });
  ctx.progress?.plan(systems.length * TRANSPORTS.length * SIZES.length);
  try {
    for (const transport of TRANSPORTS) {
      for (const system of systems) {
        const servers = await startBackends(ctx, system, transport, certs);
        try {
          for (const size of SIZES) {
            ctx.progress?.step(`l7 ${system} ${transport} ${size.label}`);
            const paths = Array.from({ length: OBJECTS }, (_, i) => `/obj/bench${i}-${size.suffix}`);
            const base = `${transport === 'tls' ? 'https' : 'http'}://${ctx.plan.vip}:${PORT[transport]}`;
            ctx.log(`l7: wrk ${CONNECTIONS} connections for ${seconds} s, ${size.label} objects, ${system} (${transport})`);
            const { output: _o, ...w } = await runWrk({ ns: ctx.plan.client.ns, base, paths, connections: CONNECTIONS, seconds, timeoutS: 10 });
            void _o;
            const errs = w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout + w.errors.non2xx;
            if (w.requests === 0) throw new BenchError(`l7: wrk completed no request against ${system} (${transport}, ${size.label})`);
            if (errs > 0) ctx.log(`l7: ${system} ${transport} ${size.label}: ${errs} wrk errors`);
            runs.push({ system, transport, size: size.label, bytes: size.bytes, wrk: w, gbitPerSecond: (w.rps * size.bytes * 8) / 1e9 });
            ctx.progress?.tick();
          }
        } finally {
          for (const s of servers) await s.stop();
        }
      }
    }
  } finally {
    certs.cleanup();
  }
  const get = (s: System, t: Transport, size: string) => runs.find((r) => r.system === s && r.transport === t && r.size === size);
  const measures: Measure[] = [];
  for (const t of TRANSPORTS) {
    for (const size of SIZES) {
      const tag = `${size.label} ${t === 'tls' ? 'TLS' : 'TCP'}`;
      measures.push({ name: `${tag} requests per second`, unit: 'req/s', better: 'higher', values: Object.fromEntries(systems.map((s) => [s, get(s, t, size.label)?.wrk.rps ?? null])) });
      measures.push({ name: `${tag} p99`, unit: 'ms', better: 'lower', values: Object.fromEntries(systems.map((s) => [s, get(s, t, size.label)?.wrk.p99Ms ?? null])) });
    }
  }
  const rows = runs.map((r) => [r.transport, r.size, r.system, fmt(r.wrk.rps, 0), fmt(r.gbitPerSecond, 3), fmt(r.wrk.p50Ms, 2), fmt(r.wrk.p99Ms, 2),
    Object.values(r.wrk.errors).reduce((a, b) => a + b, 0)]);
  const ratios = TRANSPORTS.flatMap((t) => SIZES.map((size) => [t === 'tls' ? 'TLS' : 'TCP', size.label,
    fmtRatio(ratio(get('capybara-dsr', t, size.label)?.wrk.rps, get('proxy', t, size.label)?.wrk.rps))]));
  const summary = [
    '# l7: L7 direct server return (connection migrates to the owner) vs a proxy (front end fetches and relays)',
    '',
    `wrk -t1 -c${CONNECTIONS} -d${seconds}s --latency from netns \`${ctx.plan.client.ns}\` through the VIP ${ctx.plan.vip} (XDP balancer);`,
    `each connection cycles through ${OBJECTS} objects of one size hashed over hostA and hostB, so about every other request`,
    'is for the other host: DSR migrates the connection there (and back), the proxy relays over a pooled second connection.',
    'Prism reports 3.7x (TCP) and 3.4x (TLS) over a proxy on its hardware.',
    '',
    markdownTable(['transport', 'object', 'system', 'req/s', 'Gbit/s (bodies)', 'p50 ms', 'p99 ms', 'errors'], rows),
    '',
    '## DSR / proxy throughput',
    '',
    markdownTable(['transport', 'object', 'capybara-dsr / proxy'], ratios),
  ].join('\n');
  const result = { config: { seconds, connections: CONNECTIONS, objects: OBJECTS, sizes: SIZES, ports: PORT }, runs };
  return { dir: ctx.write('l7', result, summary, { systems: [...systems], measures }), result };
}
