// capybara dpdk setup: what a host needs before a `dpdk:` device opens — hugepages (and a hugetlbfs mount)
// for PMDs that want them (net_af_xdp, most PCI NICs), and for bare metal the vfio-pci binding of a NIC
// (shown, done and undone). The work lives in dataplane/dpdk-setup.ts; this file is the command line.
import { bindVfio, dpdkStatus, reserveHugepages, unbindVfio, type DpdkStatus } from '../../dataplane/dpdk-setup.js';
import { intOpt, onePositional, str, table, type Command } from '../cli.js';
import { UsageError } from '../errors.js';

function describe(s: DpdkStatus): string {
  const lines = [
    `DPDK: ${s.dpdk.installed ? `libdpdk ${s.dpdk.version}` : 'not installed (apt-get install libdpdk-dev dpdk)'}; ` +
      `engine ${s.dpdk.engineBuilt ? 'built with dpdk:' : 'built without dpdk: (rebuild after installing libdpdk-dev)'}`,
    `hugepages (${s.hugepages.sizeKb} kB): ${s.hugepages.total} reserved, ${s.hugepages.free} free; hugetlbfs ` +
      (s.hugepages.mounts.length ? `mounted at ${s.hugepages.mounts.join(', ')}` : 'not mounted'),
    `vfio-pci: ${s.vfio.moduleLoaded ? 'loaded' : 'not loaded'}; IOMMU ${s.vfio.iommuGroups ? `on (${s.vfio.iommuGroups} groups)` : 'off'}` +
      (s.vfio.noIommuMode ? ' (unsafe no-IOMMU mode enabled)' : ''),
  ];
  if (s.nics.length) {
    lines.push('', table(['pci', 'driver', 'interface', 'state', 'bound before'],
      s.nics.map((n) => [n.pci, n.driver ?? '-', n.iface ?? '-', n.up ? 'up' : '-', n.originalDriver ?? '-'])));
  } else {
    lines.push('no PCI network devices');
  }
  return lines.join('\n');
}

export const dpdkCommand: Command = {
  name: 'dpdk',
  summary: 'prepare the host for dpdk: devices (hugepages, vfio-pci binding of a NIC)',
  usage: 'capybara dpdk setup [--hugepages N] [--bind PCI | --unbind PCI] [--status] [--json]',
  help: `Actions (several may be given; --status alone only shows):
  --hugepages N   reserve N hugepages of the default size (2 MB) and mount hugetlbfs on /dev/hugepages
                  when nothing is mounted; 0 releases them. net_af_xdp and PCI NICs need them;
                  net_af_packet, net_memif and net_tap run without (EAL then uses --no-huge)
  --bind PCI      bind the NIC at PCI (e.g. 0000:3b:00.0) to vfio-pci so DPDK can drive it; its kernel
                  driver is remembered for --unbind. Refused while its interface is up: the kernel is
                  using it (ip link set dev IFACE down first). Without an IOMMU, vfio's unsafe no-IOMMU
                  mode is enabled (as dpdk-devbind would need too)
  --unbind PCI    give the NIC back to the kernel driver it had before --bind
  --status        show DPDK, hugepages, vfio and the PCI network devices with their drivers

Then open the NIC as dpdk:0000:3b:00.0 (see README "Bare-metal NIC"). Needs root.`,
  options: { hugepages: { type: 'string' }, bind: { type: 'string' }, unbind: { type: 'string' }, status: { type: 'boolean' } },
  async run(positionals, values, io) {
    onePositional(positionals, ['setup'], 'action');
    const pages = intOpt(values, 'hugepages', 0, 1 << 20);
    const bind = str(values, 'bind');
    const unbind = str(values, 'unbind');
    if (bind && unbind) throw new UsageError('give --bind or --unbind, not both');
    const done: string[] = [];
    if (pages !== undefined) done.push(await reserveHugepages(pages));
    if (bind) done.push(await bindVfio(bind));
    if (unbind) done.push(await unbindVfio(unbind));
    const s = await dpdkStatus();
    if (values.json) io.out(JSON.stringify({ ...s, done }));
    else io.out([...done, ...(done.length ? [''] : []), describe(s)].join('\n'));
    return 0;
  },
};
