// Which device backend each testbed host's stack uses: `xdp` (AF_XDP through our steering program, the
// default), `dpdk` (DPDK's net_af_packet PMD on the host's veth) or `dpdk-af_xdp` (DPDK's net_af_xdp PMD;
// needs hugepages). The choice is a property of how stacks attach, not of the namespaces, so it lives in a
// small file beside the admin sockets and `testbed up --backend` only rewrites it; `down` removes it.
//
// af_packet taps frames after GRO, so a host on `dpdk` gets GRO turned off on its veth (the kernel would
// otherwise hand it coalesced 64 KB frames). The XDP balancer needs NAPI on the host's veth, which GRO or an
// XDP program provides: a `dpdk` host is reached on its own address, but for the VIP through `--lb xdp`
// use `dpdk-af_xdp` (its PMD attaches an XDP program) or `xdp`.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../runtime/errors.js';
import { runOk } from './exec.js';

export const HOST_BACKENDS = ['xdp', 'dpdk', 'dpdk-af_xdp'] as const;
export type HostBackend = (typeof HOST_BACKENDS)[number];
export type BackendMap<H extends string> = Record<H, HostBackend>;

export const BACKEND_FILE = '/run/capybara/testbed-backend.json';

export function isHostBackend(s: string): s is HostBackend {
  return (HOST_BACKENDS as readonly string[]).includes(s);
}

/**
 * The device URI for a host: `xdp:IFACE`, or a DPDK vdev on the same interface. `index` keeps vdev names
 * apart (they must be unique within a process). af_packet gets a deeper ring than its default 512 frames,
 * so a burst of full-size segments is not dropped while the engine naps.
 */
export function deviceFor(backend: HostBackend, iface: string, index: number): string {
  switch (backend) {
    case 'xdp': return `xdp:${iface}`;
    case 'dpdk': return `dpdk:net_af_packet${index},iface=${iface},framecnt=4096`;
    case 'dpdk-af_xdp': return `dpdk:net_af_xdp${index},iface=${iface}`;
  }
}

/** "dpdk" (every host), or per host "hostA=dpdk,hostB=xdp" (hosts not named keep xdp). */
export function parseBackendSpec<H extends string>(spec: string, hosts: readonly H[]): BackendMap<H> {
  const out = Object.fromEntries(hosts.map((h) => [h, 'xdp'])) as BackendMap<H>;
  if (isHostBackend(spec)) {
    for (const h of hosts) out[h] = spec;
    return out;
  }
  for (const item of spec.split(',')) {
    const [h, b] = item.split('=');
    if (!h || !b || !(hosts as readonly string[]).includes(h) || !isHostBackend(b)) {
      throw new ConfigError(`--backend must be ${HOST_BACKENDS.join('|')} or HOST=BACKEND,... with hosts ${hosts.join(', ')} (got "${spec}")`);
    }
    out[h as H] = b;
  }
  return out;
}

/** The backends in force (xdp for every host when nothing was chosen). */
export function readBackends<H extends string>(hosts: readonly H[]): BackendMap<H> {
  const out = Object.fromEntries(hosts.map((h) => [h, 'xdp'])) as BackendMap<H>;
  try {
    const j = JSON.parse(readFileSync(BACKEND_FILE, 'utf8')) as Record<string, unknown>;
    for (const h of hosts) if (typeof j[h] === 'string' && isHostBackend(j[h] as string)) out[h] = j[h] as HostBackend;
  } catch {
    // no file (or a broken one): the default
  }
  return out;
}

/**
 * Records the choice and prepares each host's interface for it (GRO off for af_packet, back on for the
 * others when the balancer needs it). `ifaces` maps host -> [netns, iface].
 */
export async function writeBackends<H extends string>(b: BackendMap<H>, ifaces: Record<H, [string, string]>, balancer: boolean): Promise<void> {
  for (const h of Object.keys(b) as H[]) {
    const [ns, iface] = ifaces[h];
    const gro = b[h] === 'dpdk' ? 'off' : balancer ? 'on' : undefined;
    if (gro) await runOk('ip', ['netns', 'exec', ns, 'ethtool', '-K', iface, 'gro', gro], { timeoutMs: 10_000 });
  }
  const allXdp = Object.values(b).every((x) => x === 'xdp');
  if (allXdp) {
    rmSync(BACKEND_FILE, { force: true });
    return;
  }
  mkdirSync(dirname(BACKEND_FILE), { recursive: true });
  writeFileSync(BACKEND_FILE, `${JSON.stringify(b)}\n`);
}

export function clearBackends(): void {
  if (existsSync(BACKEND_FILE)) rmSync(BACKEND_FILE, { force: true });
}
