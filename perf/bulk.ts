// bulk: single-flow throughput between the client namespace and hostA, measured on the client.
//   upload    perf/bulk-client.js sends N bytes and waits for the server's FIN (the server's app has
//             read every byte by then) to: capybara discard (xdp:a0), the same discard app over Node
//             `net`, and `nc -d -l` (C on Linux TCP, writing to /dev/null).
//   download  curl GET /bytes/N from: capybara http, and the same http app over Node `net`.
// One server at a time; each transfer is repeated and the median reported.
import type { BenchContext } from './context.js';
import { CURL_WRITE_OUT, fmt, fmtRatio, gbitPerSec, markdownTable, median, parseCurlWrite, ratio } from './format.js';
import { BenchError, kernelListening, runTool, withServer, type ServerSpec } from './proc.js';

const UP_TARGETS = ['capybara', 'node', 'kernel'] as const;
const DOWN_TARGETS = ['capybara', 'node'] as const;
type UpTarget = (typeof UP_TARGETS)[number];
type DownTarget = (typeof DOWN_TARGETS)[number];

const UP_PORTS: Record<UpTarget, number> = { capybara: 7011, node: 7012, kernel: 7013 };
const DOWN_PORTS: Record<DownTarget, number> = { capybara: 7021, node: 7022 };

interface Transfer {
  direction: 'upload' | 'download';
  target: string;
  run: number;
  bytes: number;
  ms: number;
  gbps: number;
}

/** Lowest rate a transfer may take before it counts as hung: 2 MB/s, and never less than 60 s. */
function transferTimeoutMs(bytes: number): number {
  return Math.max(60_000, (bytes / 2e6) * 1000) + 15_000;
}

function upSpec(ctx: BenchContext, t: UpTarget): ServerSpec {
  const h = ctx.plan.hosts.hostA;
  const port = String(UP_PORTS[t]);
  switch (t) {
    case 'capybara':
      return { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', 'discard', '--on', 'hostA', '--port', port, '--name', 'bench-bulk'], readyLine: /listening on/, readyTimeoutMs: 30_000 };
    case 'node':
      return { name: 'node', cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('kernel-servers'), 'discard', h.kernelIp, port], readyLine: /listening on/ };
    case 'kernel':
      // -d: never read stdin (which would otherwise send our FIN early); one connection, then exit.
      return { name: 'kernel', cmd: 'ip', args: ['netns', 'exec', h.ns, 'nc', '-d', '-n', '-l', h.kernelIp, port], probe: kernelListening(h.ns, UP_PORTS.kernel) };
  }
}

function downSpec(ctx: BenchContext, t: DownTarget): ServerSpec {
  const h = ctx.plan.hosts.hostA;
  const port = String(DOWN_PORTS[t]);
  if (t === 'capybara') {
    return { name: 'capybara', cmd: process.execPath, args: [ctx.cli, 'serve', 'http', '--on', 'hostA', '--port', port, '--name', 'bench-bulk'], readyLine: /listening on/, readyTimeoutMs: 30_000 };
  }
  return { name: 'node', cmd: 'ip', args: ['netns', 'exec', h.ns, process.execPath, ctx.script('kernel-servers'), 'http', h.kernelIp, port], readyLine: /listening on/ };
}

export async function runBulk(ctx: BenchContext): Promise<{ dir: string; result: Record<string, unknown> }> {
  const bytes = (ctx.quick ? 200 : 1000) * 1_000_000;
  const repeats = ctx.quick ? 1 : 3;
  await ctx.testbed();
  const h = ctx.plan.hosts.hostA;
  const client = ctx.plan.client.ns;
  const transfers: Transfer[] = [];
  const commands: Record<string, string> = {};

  for (const t of ctx.pick(UP_TARGETS)) {
    const ip = t === 'capybara' ? h.ip : h.kernelIp;
    for (let i = 0; i < repeats; i++) {
      // nc serves one connection and exits, so every repeat gets a fresh server (the others too, alike).
      await withServer(upSpec(ctx, t), async () => {
        const args = ['netns', 'exec', client, process.execPath, ctx.script('bulk-client'), ip, String(UP_PORTS[t]), String(bytes)];
        commands[`upload-${t}`] = `ip ${args.join(' ')}`;
        ctx.log(`bulk: upload ${bytes / 1e6} MB to ${t} (run ${i + 1}/${repeats})`);
        const r = await runTool(`bulk upload to ${t}`, 'ip', args, transferTimeoutMs(bytes));
        const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { bytes?: number; ms?: number };
        if (typeof j.bytes !== 'number' || typeof j.ms !== 'number' || j.bytes !== bytes) throw new BenchError(`bulk upload to ${t}: bad client report ${r.stdout.trim()}`);
        transfers.push({ direction: 'upload', target: t, run: i + 1, bytes: j.bytes, ms: j.ms, gbps: gbitPerSec(j.bytes, j.ms) });
      });
    }
  }

  for (const t of ctx.pick(DOWN_TARGETS)) {
    const ip = t === 'capybara' ? h.ip : h.kernelIp;
    await withServer(downSpec(ctx, t), async () => {
      for (let i = 0; i < repeats; i++) {
        const url = `http://${ip}:${DOWN_PORTS[t]}/bytes/${bytes}`;
        const args = ['netns', 'exec', client, 'curl', '-sS', '-o', '/dev/null', '--max-time', String(Math.ceil(transferTimeoutMs(bytes) / 1000)), '-w', CURL_WRITE_OUT, url];
        commands[`download-${t}`] = `ip ${args.join(' ')}`;
        ctx.log(`bulk: download ${bytes / 1e6} MB from ${t} (run ${i + 1}/${repeats})`);
        const r = await runTool(`bulk download from ${t}`, 'ip', args, transferTimeoutMs(bytes) + 5000);
        const c = parseCurlWrite(r.stdout);
        if (c.httpCode !== 200 || c.bytes !== bytes) throw new BenchError(`bulk download from ${t}: HTTP ${c.httpCode}, ${c.bytes} of ${bytes} bytes`);
        transfers.push({ direction: 'download', target: t, run: i + 1, bytes: c.bytes, ms: c.seconds * 1000, gbps: gbitPerSec(c.bytes, c.seconds * 1000) });
      }
    });
  }

  const med = (dir: Transfer['direction'], t: string) => median(transfers.filter((x) => x.direction === dir && x.target === t).map((x) => x.gbps));
  const up = Object.fromEntries(UP_TARGETS.map((t) => [t, med('upload', t)])) as Record<UpTarget, number>;
  const down = Object.fromEntries(DOWN_TARGETS.map((t) => [t, med('download', t)])) as Record<DownTarget, number>;
  const ratios = {
    upload: { capybaraVsNode: ratio(up.capybara, up.node), capybaraVsKernel: ratio(up.capybara, up.kernel) },
    download: { capybaraVsNode: ratio(down.capybara, down.node) },
  };
  const all = (dir: Transfer['direction'], t: string) => transfers.filter((x) => x.direction === dir && x.target === t).map((x) => fmt(x.gbps, 2)).join(', ');
  const rows: (string | number)[][] = [
    ['upload', 'capybara discard (xdp)', fmt(up.capybara, 2), all('upload', 'capybara'), ''],
    ['upload', 'node net discard (kernel TCP)', fmt(up.node, 2), all('upload', 'node'), fmtRatio(ratios.upload.capybaraVsNode)],
    ['upload', 'nc -l > /dev/null (kernel TCP)', fmt(up.kernel, 2), all('upload', 'kernel'), fmtRatio(ratios.upload.capybaraVsKernel)],
    ['download', 'capybara http (xdp)', fmt(down.capybara, 2), all('download', 'capybara'), ''],
    ['download', 'node net http (kernel TCP)', fmt(down.node, 2), all('download', 'node'), fmtRatio(ratios.download.capybaraVsNode)],
  ].filter((r) => r[3] !== '');
  const summary = [
    '# bulk: single-flow throughput (Gbit/s, higher is better)',
    '',
    `${bytes / 1e6} MB per transfer, ${repeats} run(s) each, median shown; measured in netns \`${client}\` through the \`lb\` router to hostA.`,
    'Upload: perf/bulk-client.js (Node net) sends zeros and times connect → server close (after the server read everything).',
    'Download: `curl GET /bytes/N` (pattern bytes generated by the same http app on both stacks), curl\'s time_total.',
    'The testbed veths run with checksum/segmentation offloads off (AF_XDP needs whole frames), for every server alike.',
    '',
    markdownTable(['direction', 'server', 'Gbit/s (median)', 'runs', 'capybara / this'], rows),
    '',
    'The last column is capybara\'s rate divided by this row\'s: above 1.00x capybara is faster.',
  ].join('\n');
  const result = { config: { bytes, repeats, upPorts: UP_PORTS, downPorts: DOWN_PORTS, commands }, transfers, medianGbps: { upload: up, download: down }, ratios };
  return { dir: ctx.write('bulk', result, summary), result };
}
