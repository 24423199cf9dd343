// `capybara testbed up --lb xdp`: the XDP load balancer in the lb namespace instead of plain routing
// for the VIP. The backends are the hosts' capybara stacks; their MAC is the MAC of the host's veth
// (AF_XDP shares the interface's address), so the balancer sends frames for the VIP straight to it.
//
// Besides attaching, the hosts are made ready to receive what the balancer sends:
//  - the VIP on each host (on lo, not announced by ARP: arp_ignore/arp_announce), as in any direct
//    server return setup: the VIP is reached only through the balancer;
//  - GRO on the host end of each veth: a frame XDP_REDIRECTed into a veth is delivered only when the
//    peer end runs NAPI, which it does with GRO on or an XDP program attached, and the stack's program
//    comes and goes with the stack.
import { run, runOk } from './exec.js';
import { LoadBalancer, type Backend } from './lb.js';
import { PLAN, type TestbedPlan } from './testbed.js';

/** The balancer's name: pins in /run/capybara/bpf/lb, what LoadBalancer.open() finds by default. */
export const TESTBED_LB = 'lb';

async function ipIn(ns: string, ...args: string[]): Promise<void> {
  await runOk('ip', ['-n', ns, ...args], { timeoutMs: 10_000 });
}

async function macOf(ns: string, iface: string): Promise<string> {
  const j = JSON.parse(await runOk('ip', ['-n', ns, '-j', 'link', 'show', 'dev', iface], { timeoutMs: 5000 })) as { address?: string }[];
  const mac = j[0]?.address;
  if (!mac) throw new Error(`no MAC address on ${iface} in ${ns}`);
  return mac;
}

function balancer(plan: Readonly<TestbedPlan>, name: string): LoadBalancer {
  return new LoadBalancer({ ns: plan.lb.ns, iface: plan.client.peer, vip: plan.vip, name, sweepMs: 0 });
}

/**
 * Attaches the balancer on the lb's client-facing interface with every host as a backend (by host
 * name). Idempotent: an attached balancer only gets its backends written again.
 */
export async function attachTestbedLb(plan: Readonly<TestbedPlan> = PLAN, name = TESTBED_LB): Promise<Backend[]> {
  for (const h of Object.values(plan.hosts)) {
    await ipIn(h.ns, 'addr', 'replace', `${plan.vip}/32`, 'dev', 'lo');
    await runOk('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2'], { timeoutMs: 10_000 });
    await runOk('ip', ['netns', 'exec', h.ns, 'ethtool', '-K', h.iface, 'gro', 'on'], { timeoutMs: 10_000 });
  }
  await ipIn(plan.client.ns, 'route', 'replace', `${plan.vip}/32`, 'via', plan.client.gateway, 'dev', plan.client.iface);
  const lb = balancer(plan, name);
  if (!(await lb.attached())) await lb.attach();
  const specs = [];
  for (const [hostName, h] of Object.entries(plan.hosts)) specs.push({ name: hostName, iface: h.peer, mac: await macOf(h.ns, h.iface) });
  return lb.setBackends(specs);
}

/** Detaches it (nothing happens when none is attached); the lb routes as before. */
export async function detachTestbedLb(plan: Readonly<TestbedPlan> = PLAN, name = TESTBED_LB): Promise<void> {
  await balancer(plan, name).detach();
  await run('ip', ['-n', plan.client.ns, 'route', 'del', `${plan.vip}/32`], { timeoutMs: 5000 });
}

/** Whether a balancer is attached under that name. */
export async function testbedLbAttached(name = TESTBED_LB): Promise<boolean> {
  try {
    return (await balancer(PLAN, name).attached()) !== undefined;
  } catch {
    return false;
  }
}
