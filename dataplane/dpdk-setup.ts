// Host preparation for DPDK: hugepages and their hugetlbfs mount, and moving a PCI NIC between its kernel
// driver and vfio-pci (what dpdk-devbind does, through the same sysfs files: driver/unbind,
// driver_override, drivers_probe). The original driver of a bound NIC is remembered under /run/capybara so
// --unbind can give it back. Also: whether this engine was built with the dpdk: backend.
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigError } from '../runtime/errors.js';
import { loadBinding } from '../runtime/native.js';
import { engineOptions } from '../runtime/options.js';
import { run, runOk } from './exec.js';

const PCI_DEVICES = '/sys/bus/pci/devices';
const BIND_STATE = '/run/capybara/dpdk-bind';
const HUGE_MOUNT = '/dev/hugepages';

export interface NicInfo {
  pci: string;
  driver: string | null;
  iface: string | null;
  up: boolean;
  originalDriver: string | null;
}

export interface DpdkStatus {
  dpdk: { installed: boolean; version: string | null; engineBuilt: boolean };
  hugepages: { sizeKb: number; total: number; free: number; mounts: string[] };
  vfio: { moduleLoaded: boolean; iommuGroups: number; noIommuMode: boolean };
  nics: NicInfo[];
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function meminfo(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(read('/proc/meminfo') ?? '');
  return m ? Number(m[1]) : 0;
}

export function hugetlbfsMounts(): string[] {
  return (read('/proc/mounts') ?? '').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'hugetlbfs').map((f) => f[1]!);
}

/**
 * Whether the addon has the dpdk: backend. Asks the engine to open a device whose options are invalid:
 * a DPDK build rejects the option (before EAL starts: nothing is initialised), a build without DPDK says
 * it has no such backend.
 */
export function dpdkEngineBuilt(): boolean {
  let Engine;
  try {
    Engine = loadBinding().Engine;
  } catch {
    return false;
  }
  try {
    const e = new Engine(engineOptions({ device: 'dpdk:capybara-probe?mbufs=1', address: '10.0.0.1/24' }), () => {});
    e.destroy();
    return true;
  } catch (err) {
    return !/unavailable because DPDK/.test((err as Error).message);
  }
}

const PCI_RE = /^(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

export function normalizePci(pci: string): string {
  if (!PCI_RE.test(pci)) throw new ConfigError(`"${pci}" is not a PCI address like 0000:3b:00.0`);
  const full = pci.length === 7 ? `0000:${pci}` : pci;
  return full.toLowerCase();
}

function driverOf(pci: string): string | null {
  try {
    return basename(readlinkSync(join(PCI_DEVICES, pci, 'driver')));
  } catch {
    return null;
  }
}

function ifaceOf(pci: string): string | null {
  try {
    return readdirSync(join(PCI_DEVICES, pci, 'net'))[0] ?? null;
  } catch {
    return null;
  }
}

function nicInfo(pci: string): NicInfo {
  const iface = ifaceOf(pci);
  const flags = iface ? Number.parseInt(read(`/sys/class/net/${iface}/flags`) ?? '0', 16) : 0;
  return { pci, driver: driverOf(pci), iface, up: (flags & 1) === 1, originalDriver: read(join(BIND_STATE, pci)) };
}

export async function dpdkStatus(): Promise<DpdkStatus> {
  const ver = await run('pkg-config', ['--modversion', 'libdpdk'], { timeoutMs: 5000 });
  let nics: NicInfo[] = [];
  try {
    nics = readdirSync(PCI_DEVICES).filter((d) => (read(join(PCI_DEVICES, d, 'class')) ?? '').startsWith('0x02')).map(nicInfo);
  } catch {
    // no PCI bus (containers)
  }
  let groups = 0;
  try {
    groups = readdirSync('/sys/kernel/iommu_groups').length;
  } catch {
    // none
  }
  return {
    dpdk: { installed: ver.code === 0, version: ver.code === 0 ? ver.stdout.trim() : null, engineBuilt: dpdkEngineBuilt() },
    hugepages: { sizeKb: meminfo('Hugepagesize'), total: meminfo('HugePages_Total'), free: meminfo('HugePages_Free'), mounts: hugetlbfsMounts() },
    vfio: {
      moduleLoaded: existsSync('/sys/bus/pci/drivers/vfio-pci'),
      iommuGroups: groups,
      noIommuMode: read('/sys/module/vfio/parameters/enable_unsafe_noiommu_mode') === 'Y',
    },
    nics,
  };
}

/** Reserves `pages` default-size hugepages and mounts hugetlbfs when none is mounted; says what it got. */
export async function reserveHugepages(pages: number): Promise<string> {
  try {
    writeFileSync('/proc/sys/vm/nr_hugepages', String(pages));
  } catch (err) {
    throw new ConfigError(`cannot reserve hugepages (/proc/sys/vm/nr_hugepages): ${(err as Error).message}; run as root`);
  }
  const got = meminfo('HugePages_Total');
  let mounted = '';
  if (pages > 0 && hugetlbfsMounts().length === 0) {
    mkdirSync(HUGE_MOUNT, { recursive: true });
    await runOk('mount', ['-t', 'hugetlbfs', 'nodev', HUGE_MOUNT], { timeoutMs: 10_000 });
    mounted = `; mounted hugetlbfs on ${HUGE_MOUNT}`;
  }
  const short = got < pages ? ` (asked for ${pages}: memory is fragmented; try again or reboot with hugepages=${pages})` : '';
  return `hugepages: ${got} reserved${short}${mounted}`;
}

function writeSys(path: string, value: string, what: string): void {
  try {
    writeFileSync(path, value);
  } catch (err) {
    throw new ConfigError(`${what}: writing ${path} failed: ${(err as Error).message}`);
  }
}

/** Moves the NIC to vfio-pci (refused while its interface is up); remembers the kernel driver. */
export async function bindVfio(pciArg: string): Promise<string> {
  const pci = normalizePci(pciArg);
  if (!existsSync(join(PCI_DEVICES, pci))) throw new ConfigError(`no PCI device ${pci}`);
  const nic = nicInfo(pci);
  if (nic.driver === 'vfio-pci') return `${pci}: already bound to vfio-pci`;
  if (nic.up) throw new ConfigError(`${pci} is ${nic.iface}, which is up: the kernel is using it (ip link set dev ${nic.iface} down first)`);
  await run('modprobe', ['vfio-pci'], { timeoutMs: 20_000 });
  if (!existsSync('/sys/bus/pci/drivers/vfio-pci')) throw new ConfigError('the vfio-pci module is not available (modprobe vfio-pci failed)');
  if (!existsSync('/sys/kernel/iommu_groups') || readdirSync('/sys/kernel/iommu_groups').length === 0) {
    // No IOMMU (VMs without vIOMMU): vfio works only in its unsafe mode, as with dpdk-devbind.
    writeSys('/sys/module/vfio/parameters/enable_unsafe_noiommu_mode', '1', 'no IOMMU: enabling vfio no-IOMMU mode');
  }
  mkdirSync(BIND_STATE, { recursive: true });
  if (nic.driver) {
    writeFileSync(join(BIND_STATE, pci), nic.driver);
    writeSys(join(PCI_DEVICES, pci, 'driver', 'unbind'), pci, `unbinding ${pci} from ${nic.driver}`);
  }
  writeSys(join(PCI_DEVICES, pci, 'driver_override'), 'vfio-pci', `binding ${pci}`);
  writeSys('/sys/bus/pci/drivers_probe', pci, `binding ${pci}`);
  const now = driverOf(pci);
  if (now !== 'vfio-pci') throw new ConfigError(`${pci} did not bind to vfio-pci (driver now: ${now ?? 'none'}); see dmesg`);
  return `${pci}: ${nic.driver ?? 'no driver'} -> vfio-pci (open it as dpdk:${pci})`;
}

/** Gives the NIC back to the driver it had before bindVfio (or lets the kernel pick one). */
export async function unbindVfio(pciArg: string): Promise<string> {
  const pci = normalizePci(pciArg);
  if (!existsSync(join(PCI_DEVICES, pci))) throw new ConfigError(`no PCI device ${pci}`);
  const before = driverOf(pci);
  const original = read(join(BIND_STATE, pci));
  if (before) writeSys(join(PCI_DEVICES, pci, 'driver', 'unbind'), pci, `unbinding ${pci} from ${before}`);
  writeSys(join(PCI_DEVICES, pci, 'driver_override'), original ?? '\n', `restoring ${pci}`);
  writeSys('/sys/bus/pci/drivers_probe', pci, `restoring ${pci}`);
  writeSys(join(PCI_DEVICES, pci, 'driver_override'), '\n', `restoring ${pci}`);
  rmSync(join(BIND_STATE, pci), { force: true });
  return `${pci}: ${before ?? 'no driver'} -> ${driverOf(pci) ?? 'no driver'}`;
}
