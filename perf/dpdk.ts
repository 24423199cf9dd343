// dpdk: the DPDK backend against our AF_XDP backend and the kernel, in the same run.
//   rtt   sockperf ping-pong (64 B, p50/p99) from the testbed's client to hostA: capybara on
//         dpdk:net_af_xdp, capybara on xdp:, and sockperf's own server on the kernel's TCP
//   bulk  200 MB uploaded with nc: capybara's discard app (dpdk:net_af_xdp, xdp:) vs `nc -l` on the kernel
//   raw   packets/s of one thread on the raw backend (perf/dpdk_raw.c: the engine's dpdk: ops, no TCP,
//         64-frame bursts of 60 B) vs dpdk-testpmd --forward-mode=txonly on the same vdev, for
//         net_af_packet and net_af_xdp on a veth in a private namespace (testpmd reports its rate per
//         second; the median second is taken). Both are single forwarding threads.
// net_af_xdp needs hugepages: the suite reserves 64 more when fewer are free and gives them back.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { reserveHugepages } from '../dataplane/dpdk-setup.js';
import { run, runIn } from '../dataplane/exec.js';
import { up, type HostName } from '../dataplane/testbed.js';
import type { BackendMap } from '../dataplane/dpdk-testbed.js';
import type { BenchContext } from './context.js';
import { BenchError, startServer, type RunningServer } from './proc.js';
import type { Measure } from './result.js';
import { readFileSync } from 'node:fs';

const SYSTEMS = ['capybara-dpdk', 'capybara-xdp', 'kernel'] as const;
type System = (typeof SYSTEMS)[number];
const HOST_IP = '10.77.1.10';
const KERNEL_IP = '10.77.1.2';
const BULK_BYTES = 200 * 1024 * 1024;
const RAW_NS = 'cpbdpdkperf';

function meminfo(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

function backends(s: System): BackendMap<HostName> {
  return { hostA: s === 'capybara-dpdk' ? 'dpdk-af_xdp' : 'xdp', hostB: 'xdp' };
}

async function serve(ctx: BenchContext, app: string, port: number): Promise<RunningServer> {
  return startServer({ name: app, cmd: process.execPath, args: [ctx.cli, 'serve', app, '--on', 'hostA', '--port', String(port), '--name', `bench-dpdk-${app}`], readyLine: /listening on/, readyTimeoutMs: 30_000 });
}

async function sockperf(ip: string, port: number, seconds: number): Promise<{ p50: number; p99: number }> {
  const r = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', ip, '-p', String(port), '-t', String(seconds), '-m', '64'], { timeoutMs: (seconds + 30) * 1000 });
  const text = (r.stdout + r.stderr).replace(/\x1b\[[0-9;]*m/g, '');
  const pct = (p: string) => Number(new RegExp(`percentile ${p} =\\s+([\\d.]+)`).exec(text)?.[1] ?? NaN);
  if (r.code !== 0 || Number.isNaN(pct('50.000'))) throw new BenchError(`sockperf to ${ip}:${port} failed: ${text.slice(-500)}`);
  return { p50: pct('50.000'), p99: pct('99.000') };
}

/** Seconds nc takes to push `bytes` to ip:port and see the server close; Gbit/s. */
async function upload(ip: string, port: number, bytes: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await runIn('client', 'sh', ['-c', `head -c ${bytes} /dev/zero | nc -N -w 20 ${ip} ${port}`], { timeoutMs: 180_000 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.code !== 0) throw new BenchError(`nc upload to ${ip}:${port} failed: ${r.stderr}`);
  return (bytes * 8) / s / 1e9;
}

async function rttAndBulk(ctx: BenchContext, seconds: number): Promise<Record<System, { p50: number; p99: number; gbps: number }>> {
  const out = {} as Record<System, { p50: number; p99: number; gbps: number }>;
  try {
    for (const s of SYSTEMS) {
      ctx.log(`dpdk: ${s}`);
      if (s === 'kernel') {
        const sp = await startServer({ name: 'sockperf', cmd: 'ip', args: ['netns', 'exec', 'hostA', 'sockperf', 'server', '--tcp', '-i', KERNEL_IP, '-p', '7120'], readyLine: /Warmup|is ready|waiting/i, readyTimeoutMs: 10_000 });
        let lat;
        try { lat = await sockperf(KERNEL_IP, 7120, seconds); } finally { await sp.stop(); }
        const sink = await startServer({ name: 'nc', cmd: 'ip', args: ['netns', 'exec', 'hostA', 'sh', '-c', `nc -l ${KERNEL_IP} 7121 > /dev/null`], readyTimeoutMs: 10_000, probe: async () => (await run('ip', ['netns', 'exec', 'hostA', 'ss', '-ltn', 'sport = :7121'], { timeoutMs: 5000 })).stdout.includes('7121') });
        let gbps;
        try { gbps = await upload(KERNEL_IP, 7121, BULK_BYTES); } finally { await sink.stop(); }
        out[s] = { ...lat, gbps };
        continue;
      }
      await up({ backend: backends(s) });
      const sp = await serve(ctx, 'sockperf', 7122);
      let lat;
      try { lat = await sockperf(HOST_IP, 7122, seconds); } finally { await sp.stop(); }
      const d = await serve(ctx, 'discard', 7123);
      let gbps;
      try { gbps = await upload(HOST_IP, 7123, BULK_BYTES); } finally { await d.stop(); }
      out[s] = { ...lat, gbps };
    }
  } finally {
    await up({ backend: { hostA: 'xdp', hostB: 'xdp' } });
  }
  return out;
}

/** testpmd's per-second Tx-pps lines, median of the seconds after the first. */
async function testpmdTx(vdev: string, huge: boolean, seconds: number): Promise<number> {
  const mem = huge ? ['--in-memory'] : ['--no-huge', '-m', '256', '--no-shconf'];
  const r = await run('ip', ['netns', 'exec', RAW_NS, 'timeout', '-s', 'INT', String(seconds + 2), 'dpdk-testpmd', '-l', '0,1', ...mem, '--no-pci',
    '--file-prefix=cpb-testpmd', '--vdev', vdev, '--', '--forward-mode=txonly', '--txpkts=60', '--burst=64', '--total-num-mbufs=8192', '--stats-period=1'], { timeoutMs: (seconds + 20) * 1000 });
  const pps = [...(r.stdout + r.stderr).matchAll(/Tx-pps:\s+(\d+)/g)].map((m) => Number(m[1])).slice(1).sort((a, b) => a - b);
  if (pps.length === 0) throw new BenchError(`dpdk-testpmd on ${vdev} reported no rate: ${(r.stdout + r.stderr).slice(-600)}`);
  return pps[Math.floor(pps.length / 2)]!;
}

async function rawTx(bin: string, vdev: string, huge: boolean, seconds: number): Promise<number> {
  const r = await run('ip', ['netns', 'exec', RAW_NS, bin, 'tx', String(seconds), vdev], { timeoutMs: (seconds + 30) * 1000, env: { ...process.env, CAPYBARA_DPDK_NO_HUGE: huge ? '0' : '1' } });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return (JSON.parse(line) as { pps: number }).pps;
  } catch {
    throw new BenchError(`dpdk_raw tx on ${vdev} failed (${r.code}): ${r.stderr.slice(-600)}`);
  }
}

async function raw(ctx: BenchContext, seconds: number): Promise<Record<string, { capybara: number; testpmd: number }>> {
  const dir = join(ctx.root, 'build');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'dpdk_raw');
  const cc = await run('sh', ['-c', `cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I${ctx.root}/native $(pkg-config --cflags-only-I libdpdk) `
    + `${ctx.root}/perf/dpdk_raw.c ${ctx.root}/native/dev/dpdk.c -o ${bin} $(pkg-config --libs libdpdk)`], { timeoutMs: 120_000 });
  if (cc.code !== 0) throw new BenchError(`building perf/dpdk_raw.c failed: ${cc.stderr}`);
  await run('ip', ['netns', 'del', RAW_NS], { timeoutMs: 10_000 });
  await run('ip', ['netns', 'add', RAW_NS], { timeoutMs: 10_000 });
  const out: Record<string, { capybara: number; testpmd: number }> = {};
  try {
    await run('ip', ['-n', RAW_NS, 'link', 'add', 'rp0', 'type', 'veth', 'peer', 'name', 'rp1'], { timeoutMs: 10_000 });
    for (const i of ['rp0', 'rp1']) await run('ip', ['-n', RAW_NS, 'link', 'set', i, 'up'], { timeoutMs: 10_000 });
    for (const [pmd, huge] of [['net_af_packet', false], ['net_af_xdp', true]] as const) {
      const vdev = `${pmd}0,iface=rp0`;
      ctx.log(`dpdk: raw tx on ${pmd}`);
      out[pmd] = { capybara: await rawTx(bin, vdev, huge, seconds), testpmd: await testpmdTx(vdev, huge, seconds + 1) };
    }
  } finally {
    await run('ip', ['netns', 'del', RAW_NS], { timeoutMs: 10_000 });
    rmSync('/var/run/dpdk/cpb-testpmd', { recursive: true, force: true }); // testpmd's EAL run dir
  }
  return out;
}

export async function runDpdk(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  await ctx.testbed();
  const seconds = ctx.quick ? 2 : 5;
  let restore: number | undefined;
  if (meminfo('HugePages_Free') < 64) {
    restore = meminfo('HugePages_Total');
    await reserveHugepages(restore + 64);
  }
  let lat: Awaited<ReturnType<typeof rttAndBulk>>;
  let pps: Awaited<ReturnType<typeof raw>>;
  try {
    lat = await rttAndBulk(ctx, seconds);
    pps = await raw(ctx, seconds);
  } finally {
    if (restore !== undefined) await reserveHugepages(restore).catch(() => {});
  }
  const sys = [...SYSTEMS];
  const measures: Measure[] = [
    { name: 'rtt 64 B p50', unit: 'us', better: 'lower', values: Object.fromEntries(sys.map((s) => [s, lat[s].p50])) },
    { name: 'rtt 64 B p99', unit: 'us', better: 'lower', values: Object.fromEntries(sys.map((s) => [s, lat[s].p99])) },
    { name: 'bulk upload', unit: 'Gbit/s', better: 'higher', values: Object.fromEntries(sys.map((s) => [s, lat[s].gbps])) },
  ];
  const rows = sys.map((s) => `| ${s} | ${lat[s].p50.toFixed(1)} | ${lat[s].p99.toFixed(1)} | ${lat[s].gbps.toFixed(2)} |`);
  const rawRows = Object.entries(pps).map(([pmd, v]) => `| ${pmd} | ${(v.capybara / 1e3).toFixed(0)} k | ${(v.testpmd / 1e3).toFixed(0)} k | ${(v.capybara / v.testpmd).toFixed(2)}x |`);
  const summary = [
    '# dpdk backend', '',
    '| system | rtt p50 us | rtt p99 us | bulk Gbit/s |', '|---|---|---|---|', ...rows, '',
    'Raw TX packets/s, one thread, 60 B frames:', '',
    '| PMD | capybara dpdk_raw | dpdk-testpmd txonly | ratio |', '|---|---|---|---|', ...rawRows, '',
  ].join('\n');
  const result = { latency: lat, raw: pps, seconds };
  const dir = ctx.write('dpdk', result, summary, { systems: sys, measures });
  return { dir, result };
}
