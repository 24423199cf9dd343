// capybara testbed up|down|status: the four network namespaces of dataplane/testbed.ts.
import { down, status, up, type TestbedStatus } from '../../dataplane/testbed.js';
import { CapybaraError } from '../errors.js';
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
  usage: 'capybara testbed up|down|status [--json] [--backend xdp|dpdk] [--lb routing|xdp]',
  help: `Actions:
  up       create namespaces client, lb, hostA, hostB joined by veth pairs (idempotent;
           a half-made testbed is removed and rebuilt)
  down     remove them (processes still running inside are stopped)
  status   show the address plan and whether the testbed is up

Options:
  --json               print one JSON document:
                       {"vip","client":{"ns","ip"},"hosts":{"hostA":{"ns","ip","iface","device",
                       "gateway","kernelIp"},...},"up"}
  --backend xdp|dpdk   the device backend the hosts' stacks use (default xdp; dpdk is not in this build yet)
  --lb routing|xdp     with up: how lb steers the VIP. routing (default): plain kernel routing.
                       xdp: an XDP L4 load balancer on lb-cl sends new flows to hostA/hostB by
                       consistent hash and follows migrations through its redirect table
                       (dataplane/lb.ts; the runtimes open it with LoadBalancer.open())

Needs root; without network namespaces the command fails with ERR_CAPYBARA_NO_NETNS.`,
  options: { backend: { type: 'string' }, lb: { type: 'string' } },
  async run(positionals, values, io) {
    const action = onePositional(positionals, ['up', 'down', 'status'], 'action');
    const backend = str(values, 'backend') ?? 'xdp';
    if (backend !== 'xdp' && backend !== 'dpdk') throw new UsageError(`--backend must be xdp or dpdk (got "${backend}")`);
    if (backend === 'dpdk') throw new CapybaraError('ERR_CAPYBARA_UNSUPPORTED', 'the dpdk backend is not available in this build; use --backend xdp');
    const lb = str(values, 'lb');
    if (lb !== undefined && lb !== 'routing' && lb !== 'xdp') throw new UsageError(`--lb must be routing or xdp (got "${lb}")`);
    if (lb !== undefined && action !== 'up') throw new UsageError('--lb applies to testbed up');
    const s = action === 'up' ? await up(lb ? { lb } : {}) : action === 'down' ? await down() : await status();
    io.out(values.json ? JSON.stringify(s) : describe(s));
    return 0;
  },
};
