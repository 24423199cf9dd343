// capybara testbed up|down|status: the four network namespaces of dataplane/testbed.ts.
import { PLAN, down, status, up, type HostName, type TestbedStatus } from '../../dataplane/testbed.js';
import { parseBackendSpec, type BackendMap } from '../../dataplane/dpdk-testbed.js';
import { onePositional, str, table, type Command } from '../cli.js';
import { UsageError } from '../errors.js';

function describe(s: TestbedStatus): string {
  const rows: (string | number)[][] = [[s.client.ns, s.client.iface, s.client.ip, '-', s.client.gateway]];
  for (const h of Object.values(s.hosts)) rows.push([h.ns, h.iface, h.kernelIp, `${h.address} (${h.device})`, h.gateway]);
  return [
    `testbed: ${s.up ? 'up' : 'down'}   vip ${s.vip}`,
    '',
    table(['namespace', 'iface', 'kernel ip', 'capybara stack', 'gateway'], rows),
    `lb (${s.lb.ns}): ${s.lb.ips.join(', ')}, ${s.lb.balancer === 'xdp' ? `xdp load balancer for ${s.vip} (backends ${Object.keys(s.hosts).join(', ')})` : 'forwarding'}`,
  ].join('\n');
}

export const testbedCommand: Command = {
  name: 'testbed',
  summary: 'create, remove or show the netns testbed (client, lb, hostA, hostB)',
  usage: 'capybara testbed up|down|status [--json] [--backend xdp|dpdk|dpdk-af_xdp|HOST=B,...] [--lb routing|xdp]',
  help: `Actions:
  up       create namespaces client, lb, hostA, hostB joined by veth pairs (idempotent;
           a half-made testbed is removed and rebuilt)
  down     remove them (processes still running inside are stopped)
  status   show the address plan and whether the testbed is up

Options:
  --json               print one JSON document:
                       {"vip","client":{"ns","ip"},"hosts":{"hostA":{"ns","ip","iface","device",
                       "gateway","kernelIp"},...},"up"}
  --backend B          with up: the device backend of the hosts' stacks: xdp (default, AF_XDP),
                       dpdk (DPDK net_af_packet on the host's veth), dpdk-af_xdp (DPDK net_af_xdp;
                       needs hugepages: capybara dpdk setup), or per host: hostA=dpdk,hostB=xdp.
                       status shows it as each host's "device"; down resets it to xdp
  --lb routing|xdp     with up: how lb steers the VIP. routing (default): plain kernel routing.
                       xdp: an XDP L4 load balancer on lb-cl sends new flows to hostA/hostB by
                       consistent hash and follows migrations through its redirect table
                       (dataplane/lb.ts; the runtimes open it with LoadBalancer.open())

Needs root; without network namespaces the command fails with ERR_CAPYBARA_NO_NETNS.`,
  options: { backend: { type: 'string' }, lb: { type: 'string' } },
  async run(positionals, values, io) {
    const action = onePositional(positionals, ['up', 'down', 'status'], 'action');
    const backendSpec = str(values, 'backend');
    let backend: BackendMap<HostName> | undefined;
    try {
      backend = backendSpec === undefined ? undefined : parseBackendSpec(backendSpec, Object.keys(PLAN.hosts) as HostName[]);
    } catch {
      throw new UsageError(`--backend must be xdp or dpdk, dpdk-af_xdp, or HOST=BACKEND,... (got "${backendSpec}")`);
    }
    if (backend !== undefined && action !== 'up') throw new UsageError('--backend applies to testbed up');
    const lb = str(values, 'lb');
    if (lb !== undefined && lb !== 'routing' && lb !== 'xdp') throw new UsageError(`--lb must be routing or xdp (got "${lb}")`);
    if (lb !== undefined && action !== 'up') throw new UsageError('--lb applies to testbed up');
    const s = action === 'up' ? await up({ ...(lb ? { lb } : {}), ...(backend ? { backend } : {}) }) : action === 'down' ? await down() : await status();
    io.out(values.json ? JSON.stringify(s) : describe(s));
    return 0;
  },
};
