// The netns testbed: a client, a router/load balancer and two hosts joined by veth pairs.
//
//   client [cl0 10.77.0.2] ── [lb-cl 10.77.0.1] lb [lb-a 10.77.1.1] ── [a0 10.77.1.2] hostA  (stack .10)
//                                                  [lb-b 10.77.2.1] ── [b0 10.77.2.2] hostB  (stack .10)
//
// The hosts keep a kernel address (.2) so they stay reachable; the capybara stack takes .10 on the same
// interface through AF_XDP (the XDP program passes everything else to the kernel). Checksum and
// segmentation offloads are off on every veth end: AF_XDP sees raw frames, and a veth left with
// tx-checksumming hands it frames whose TCP checksum is only partial.
import { existsSync, readFileSync } from 'node:fs';
import { NetnsError } from '../runtime/errors.js';
import { run, runOk } from './exec.js';
import { clearBackends, deviceFor, readBackends, writeBackends, type BackendMap } from './dpdk-testbed.js';

export interface HostPlan {
  ns: string;
  iface: string;       // interface inside the host namespace
  peer: string;        // its veth peer in the lb namespace
  kernelIp: string;    // the host kernel's own address on iface
  ip: string;          // the capybara stack's address
  prefixLength: number;
  gateway: string;
  device: string;      // device URI for the stack
}

export interface TestbedPlan {
  vip: string;
  client: { ns: string; iface: string; peer: string; ip: string; prefixLength: number; gateway: string };
  lb: { ns: string; ifaces: Record<string, string> };
  hosts: Record<'hostA' | 'hostB', HostPlan>;
  routes: string[]; // subnets the client reaches via its gateway
}

export type HostName = keyof TestbedPlan['hosts'];

export const PLAN: Readonly<TestbedPlan> = Object.freeze({
  vip: '10.77.9.1',
  client: { ns: 'client', iface: 'cl0', peer: 'lb-cl', ip: '10.77.0.2', prefixLength: 24, gateway: '10.77.0.1' },
  lb: { ns: 'lb', ifaces: { 'lb-cl': '10.77.0.1/24', 'lb-a': '10.77.1.1/24', 'lb-b': '10.77.2.1/24' } },
  hosts: {
    hostA: { ns: 'hostA', iface: 'a0', peer: 'lb-a', kernelIp: '10.77.1.2', ip: '10.77.1.10', prefixLength: 24, gateway: '10.77.1.1', device: 'xdp:a0' },
    hostB: { ns: 'hostB', iface: 'b0', peer: 'lb-b', kernelIp: '10.77.2.2', ip: '10.77.2.10', prefixLength: 24, gateway: '10.77.2.1', device: 'xdp:b0' },
  },
  routes: ['10.77.1.0/24', '10.77.2.0/24'],
});

export const NAMESPACES = [PLAN.client.ns, PLAN.lb.ns, PLAN.hosts.hostA.ns, PLAN.hosts.hostB.ns] as const;

export function isHostName(s: string): s is HostName {
  return Object.prototype.hasOwnProperty.call(PLAN.hosts, s);
}

const HOST_NAMES = Object.keys(PLAN.hosts) as HostName[];

/** The device URI a host's stack uses: xdp:IFACE, or DPDK when `up --backend` chose it (dpdk-testbed.ts). */
export function hostDevice(name: HostName): string {
  const h = PLAN.hosts[name];
  return deviceFor(readBackends(HOST_NAMES)[name], h.iface, HOST_NAMES.indexOf(name));
}

export interface TestbedStatus {
  vip: string;
  client: { ns: string; ip: string; iface: string; gateway: string };
  lb: { ns: string; ips: string[]; balancer?: 'routing' | 'xdp' }; // balancer: see up({ lb })
  hosts: Record<HostName, { ns: string; ip: string; iface: string; device: string; gateway: string; kernelIp: string; address: string }>;
  up: boolean;
  namespaces: Record<string, boolean>;
}

/** Throws NetnsError unless this process can create network namespaces. */
export async function checkNetnsSupport(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new NetnsError('the testbed needs root (network namespaces, veth, XDP): run as root or use --mem');
  }
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 5000 });
  if (r.code !== 0) throw new NetnsError(`ip netns is not available: ${r.stderr.trim() || `exit ${r.code}`}`);
}

export async function listNamespaces(): Promise<Set<string>> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 5000 });
  if (r.code !== 0) return new Set();
  return new Set(r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean));
}

interface IpAddrJson {
  ifname: string;
  operstate?: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function ifaceHas(ns: string, iface: string, cidr: string): Promise<boolean> {
  const r = await run('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', iface], { timeoutMs: 5000 });
  if (r.code !== 0) return false;
  try {
    const j = JSON.parse(r.stdout) as IpAddrJson[];
    const [ip, len] = cidr.split('/');
    return j.some((l) => (l.flags ?? []).includes('UP') && (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip && String(a.prefixlen) === len));
  } catch {
    return false;
  }
}

/** What the testbed is (the plan) and whether it is fully there. */
export async function status(): Promise<TestbedStatus> {
  const present = await listNamespaces();
  const namespaces: Record<string, boolean> = {};
  for (const ns of NAMESPACES) namespaces[ns] = present.has(ns);
  let up = NAMESPACES.every((ns) => present.has(ns));
  if (up) {
    const checks: Promise<boolean>[] = [ifaceHas(PLAN.client.ns, PLAN.client.iface, `${PLAN.client.ip}/${PLAN.client.prefixLength}`)];
    for (const [iface, cidr] of Object.entries(PLAN.lb.ifaces)) checks.push(ifaceHas(PLAN.lb.ns, iface, cidr));
    for (const h of Object.values(PLAN.hosts)) checks.push(ifaceHas(h.ns, h.iface, `${h.kernelIp}/${h.prefixLength}`));
    up = (await Promise.all(checks)).every(Boolean);
  }
  // Cheap and without spawning: the pinned link of `up --lb xdp` (dataplane/lb-testbed.ts).
  const balancer = up && existsSync('/run/capybara/bpf/lb/link') ? 'xdp' : 'routing';
  const hosts = {} as TestbedStatus['hosts'];
  for (const [name, h] of Object.entries(PLAN.hosts) as [HostName, HostPlan][]) {
    hosts[name] = { ns: h.ns, ip: h.ip, iface: h.iface, device: hostDevice(name), gateway: h.gateway, kernelIp: h.kernelIp, address: `${h.ip}/${h.prefixLength}` };
  }
  return {
    vip: PLAN.vip,
    client: { ns: PLAN.client.ns, ip: PLAN.client.ip, iface: PLAN.client.iface, gateway: PLAN.client.gateway },
    lb: { ns: PLAN.lb.ns, ips: Object.values(PLAN.lb.ifaces).map((c) => c.split('/')[0]!), balancer },
    hosts,
    up,
    namespaces,
  };
}

async function ns(nsName: string, ...args: string[]): Promise<void> {
  await runOk('ip', ['-n', nsName, ...args], { timeoutMs: 10000 });
}

async function sysctl(nsName: string, key: string, value: string): Promise<void> {
  await runOk('ip', ['netns', 'exec', nsName, 'sysctl', '-qw', `${key}=${value}`], { timeoutMs: 10000 });
}

async function prepareIface(nsName: string, iface: string, cidr: string): Promise<void> {
  await ns(nsName, 'link', 'set', 'dev', iface, 'mtu', '1500');
  await ns(nsName, 'addr', 'replace', cidr, 'dev', iface);
  // Offloads off: frames must carry complete checksums and be MTU-sized for AF_XDP.
  await runOk('ip', ['netns', 'exec', nsName, 'ethtool', '-K', iface, 'tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'], { timeoutMs: 10000 });
  await ns(nsName, 'link', 'set', 'dev', iface, 'up');
}

async function vethPair(nsA: string, a: string, nsB: string, b: string): Promise<void> {
  await runOk('ip', ['link', 'add', 'name', a, 'netns', nsA, 'type', 'veth', 'peer', 'name', b, 'netns', nsB], { timeoutMs: 10000 });
}

export interface UpOptions {
  /** 'xdp': the XDP load balancer steers the VIP in lb (dataplane/lb-testbed.ts); default plain routing. */
  lb?: 'routing' | 'xdp';
  /** The hosts' device backends (dataplane/dpdk-testbed.ts); omitted: left as they are. */
  backend?: BackendMap<HostName>;
}

/**
 * Builds the testbed. Idempotent: a complete testbed is left as it is; a partial one (a crash half-way,
 * a namespace deleted by hand) is torn down and rebuilt. With { lb: 'xdp' } the load balancer is
 * attached too (or its backends refreshed when it is there already).
 */
export async function up(opts: UpOptions = {}): Promise<TestbedStatus> {
  const s = await upRouting();
  if (opts.backend) {
    const ifaces = Object.fromEntries(HOST_NAMES.map((n) => [n, [PLAN.hosts[n].ns, PLAN.hosts[n].iface]])) as Record<HostName, [string, string]>;
    await writeBackends(opts.backend, ifaces, opts.lb === 'xdp' || s.lb.balancer === 'xdp');
  }
  if (opts.lb !== 'xdp') return opts.backend ? status() : s;
  const { attachTestbedLb } = await import('./lb-testbed.js');
  await attachTestbedLb();
  return status();
}

async function upRouting(): Promise<TestbedStatus> {
  await checkNetnsSupport();
  const before = await status();
  if (before.up) return before;
  if (Object.values(before.namespaces).some(Boolean)) await down();
  try {
    for (const n of NAMESPACES) {
      const r = await run('ip', ['netns', 'add', n], { timeoutMs: 10000 });
      if (r.code !== 0) {
        if (/permission|operation not permitted/i.test(r.stderr)) throw new NetnsError(`ip netns add ${n}: ${r.stderr.trim()}`);
        throw new NetnsError(`cannot create namespace ${n}: ${r.stderr.trim()}`);
      }
      await ns(n, 'link', 'set', 'dev', 'lo', 'up');
      // No IPv6: its router/neighbour solicitations are noise on the wires the stacks watch.
      await sysctl(n, 'net.ipv6.conf.all.disable_ipv6', '1');
      await sysctl(n, 'net.ipv6.conf.default.disable_ipv6', '1');
    }
    const c = PLAN.client;
    const lb = PLAN.lb;
    await vethPair(c.ns, c.iface, lb.ns, c.peer);
    for (const h of Object.values(PLAN.hosts)) await vethPair(h.ns, h.iface, lb.ns, h.peer);

    await prepareIface(c.ns, c.iface, `${c.ip}/${c.prefixLength}`);
    for (const [iface, cidr] of Object.entries(lb.ifaces)) await prepareIface(lb.ns, iface, cidr);
    for (const h of Object.values(PLAN.hosts)) await prepareIface(h.ns, h.iface, `${h.kernelIp}/${h.prefixLength}`);

    await sysctl(lb.ns, 'net.ipv4.ip_forward', '1');
    for (const k of ['all', 'default', ...Object.keys(lb.ifaces)]) await sysctl(lb.ns, `net.ipv4.conf.${k}.rp_filter`, '0');

    await ns(c.ns, 'route', 'replace', 'default', 'via', c.gateway, 'dev', c.iface);
    for (const r of PLAN.routes) await ns(c.ns, 'route', 'replace', r, 'via', c.gateway, 'dev', c.iface);
    for (const h of Object.values(PLAN.hosts)) await ns(h.ns, 'route', 'replace', 'default', 'via', h.gateway, 'dev', h.iface);
  } catch (err) {
    await down().catch(() => {});
    throw err;
  }
  const after = await status();
  if (!after.up) {
    await down().catch(() => {});
    throw new NetnsError('testbed was built but does not check out (see capybara testbed status)');
  }
  return after;
}

async function killNamespacePids(nsName: string): Promise<void> {
  const r = await run('ip', ['netns', 'pids', nsName], { timeoutMs: 5000 });
  if (r.code !== 0) return;
  const pids = r.stdout.split(/\s+/).map(Number).filter((p) => Number.isInteger(p) && p > 1 && p !== process.pid);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline && pids.some(alive)) await new Promise((res) => setTimeout(res, 50));
  for (const p of pids) {
    if (!alive(p)) continue;
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Removes the namespaces (and with them their veths), stopping processes still running inside. */
export async function down(): Promise<TestbedStatus> {
  await checkNetnsSupport();
  if (existsSync('/run/capybara/bpf/lb')) {
    // The load balancer's pins would outlive its namespace: remove them (best effort).
    const { detachTestbedLb } = await import('./lb-testbed.js');
    await detachTestbedLb().catch(() => {});
  }
  // The store namespace (dataplane/store.ts: redis-server for `serve redis`) hangs off lb: it goes too.
  const { stopStore } = await import('./store.js');
  await stopStore().catch(() => {});
  clearBackends();
  const present = await listNamespaces();
  for (const n of NAMESPACES) {
    if (!present.has(n)) continue;
    await killNamespacePids(n);
    await runOk('ip', ['netns', 'del', n], { timeoutMs: 10000 });
  }
  return status();
}

/** Mounts bpffs on /sys/fs/bpf when it is not mounted (libxdp pins its dispatcher there). */
export async function mountBpffs(path = '/sys/fs/bpf'): Promise<boolean> {
  let mounts = '';
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return false;
  }
  if (mounts.split('\n').some((l) => {
    const f = l.split(' ');
    return f[1] === path && f[2] === 'bpf';
  })) return false;
  if (!existsSync(path)) await runOk('mkdir', ['-p', path]);
  await runOk('mount', ['-t', 'bpf', 'bpf', path], { timeoutMs: 10000 });
  return true;
}
