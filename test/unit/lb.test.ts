// The XDP load balancer (native/bpf/lb.bpf.c through dataplane/lb.ts) on real namespaces of its own:
//
//   lbt-client [c0 10.78.0.2] ── [lc 10.78.0.1] lbt-lb [la 10.78.1.1] ── [a0 10.78.1.2] lbt-a  (VIP on lo)
//                                                      [lbb 10.78.2.1] ── [b0 10.78.2.2] lbt-b  (VIP on lo)
//
// The backends are kernel TCP servers on the VIP that greet with their name and answer "NAME:line".
// lbt-lb's kernel routes the VIP to lbt-a, so whatever reaches lbt-b got there by the balancer.
// Needs root; never touches the shared testbed (client, lb, hostA, hostB).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { run, runIn, runOk, spawnIn, stopProcess } from '../../dataplane/exec.js';
import { LbError, LoadBalancer, type Flow } from '../../dataplane/lb.js';
import { MAGLEV_TABLE_SIZE, maglevTable } from '../../dataplane/lb-maglev.js';
import { attachTestbedLb, detachTestbedLb } from '../../dataplane/lb-testbed.js';
import type { TestbedPlan } from '../../dataplane/testbed.js';
import { ROOT, cli, hasCommand, netnsSkip } from '../helpers/env.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

describe('maglev table', () => {
  it('gives every backend its share, give or take one slot', () => {
    for (const names of [['hostA', 'hostB'], ['a', 'b', 'c'], ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6']]) {
      const t = maglevTable(names);
      assert.equal(t.length, MAGLEV_TABLE_SIZE);
      const counts = new Array<number>(names.length).fill(0);
      for (const v of t) counts[v]! += 1;
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `${names.join(',')}: ${counts.join(',')}`);
    }
  });

  it('is deterministic and moves few slots of the others when a backend goes', () => {
    const three = maglevTable(['a', 'b', 'c']);
    assert.deepEqual(maglevTable(['a', 'b', 'c']), three);
    const two = maglevTable(['a', 'c']); // b removed: index 1 is now c
    let kept = 0;
    let total = 0;
    for (let k = 0; k < three.length; k++) {
      if (three[k] === 1) continue; // b's slots have to move
      total++;
      const before = three[k] === 0 ? 'a' : 'c';
      const after = two[k] === 0 ? 'a' : 'c';
      if (before === after) kept++;
    }
    // Maglev does not promise zero disruption, but nearly all of a's and c's slots stay theirs.
    assert.ok(kept / total > 0.99, `kept ${kept}/${total}`);
  });

  it('refuses what it cannot build', () => {
    assert.throws(() => maglevTable([]), RangeError);
    assert.throws(() => maglevTable(['a', 'a']), RangeError);
    assert.throws(() => maglevTable(['a', 'b', 'c'], 2), RangeError);
  });
});

describe('capybara testbed --lb', () => {
  it('accepts routing|xdp with up only', () => {
    const bad = cli(['testbed', 'up', '--lb', 'maglev']);
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /--lb must be routing or xdp/);
    const notUp = cli(['testbed', 'status', '--lb', 'xdp']);
    assert.equal(notUp.status, 2, notUp.stderr);
    assert.match(cli(['testbed', '--help']).stdout, /--lb routing\|xdp/);
  });
});

const VIP = '10.78.9.1';
const PORT = 7000;
const NS = { client: 'lbt-client', lb: 'lbt-lb', a: 'lbt-a', b: 'lbt-b' } as const;
const NAME = `lbt-${process.pid}`;
const LBCTL = join(ROOT, 'build', 'lbctl');
const LBOBJ = join(ROOT, 'build', 'lb.bpf.o');

function lbSkip(): string | undefined {
  const n = netnsSkip();
  if (n) return n;
  if (!existsSync(LBCTL) || !existsSync(LBOBJ)) return 'build/lbctl or build/lb.bpf.o missing (make -C native/bpf)';
  if (!hasCommand('ethtool')) return 'ethtool not installed';
  return undefined;
}

// A kernel server: greets with its name, answers "NAME:line", closes on "bye".
const SERVER = `
const net = require('net');
const [name, host, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  s.on('error', () => {});
  s.write(name + '\\n');
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (l === 'bye') s.end(); else s.write(name + ':' + l + '\\n');
    }
  });
});
srv.listen(Number(port), host, () => console.log('ready'));
setTimeout(() => process.exit(0), 600000);
`;

// The client side, driven over stdin with JSON commands; reports socket events as JSON lines.
const CLIENT = `
const net = require('net');
const socks = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
  const c = JSON.parse(l);
  if (c.op === 'connect') {
    const o = { host: c.host, port: c.port };
    if (c.localPort) { o.localPort = c.localPort; o.localAddress = c.localAddress; }
    const s = net.connect(o);
    socks.set(c.id, s);
    let buf = '';
    s.on('connect', () => out({ id: c.id, ev: 'connected', localPort: s.localPort }));
    s.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\\n')) >= 0) { out({ id: c.id, ev: 'line', text: buf.slice(0, i) }); buf = buf.slice(i + 1); }
    });
    s.on('error', (e) => out({ id: c.id, ev: 'error', code: e.code }));
    s.on('close', () => out({ id: c.id, ev: 'close' }));
  } else if (c.op === 'send') socks.get(c.id).write(c.text + '\\n');
  else if (c.op === 'close') socks.get(c.id).end();
}).on('close', () => process.exit(0));
setTimeout(() => process.exit(0), 600000);
`;

interface ClientEvent {
  id: string;
  ev: 'connected' | 'line' | 'error' | 'close';
  localPort?: number;
  text?: string;
  code?: string;
}

class Client {
  private readonly events: ClientEvent[] = [];
  private readonly waiters = new Set<() => void>();
  constructor(readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      this.events.push(JSON.parse(l) as ClientEvent);
      for (const w of this.waiters) w();
    });
  }
  send(cmd: Record<string, unknown>): void {
    this.proc.stdin!.write(`${JSON.stringify(cmd)}\n`);
  }
  /** The next not yet consumed event of this connection that matches. */
  next(id: string, ev: ClientEvent['ev'] | ClientEvent['ev'][], timeoutMs = 10_000): Promise<ClientEvent> {
    const want = Array.isArray(ev) ? ev : [ev];
    return withTimeout(new Promise<ClientEvent>((resolve) => {
      const check = () => {
        const i = this.events.findIndex((e) => e.id === id && want.includes(e.ev));
        if (i < 0) return;
        const [e] = this.events.splice(i, 1);
        this.waiters.delete(check);
        resolve(e!);
      };
      this.waiters.add(check);
      check();
    }), timeoutMs, `client ${id}: ${want.join('|')}`);
  }
  /** Connects (optionally from a given port) and returns the local port and the greeting. */
  async connect(id: string, localPort?: number): Promise<{ port: number; host: string }> {
    this.send({ op: 'connect', id, host: VIP, port: PORT, ...(localPort ? { localPort, localAddress: '10.78.0.2' } : {}) });
    const c = await this.next(id, ['connected', 'error']);
    assert.equal(c.ev, 'connected', `connect ${id}: ${c.code ?? ''}`);
    const g = await this.next(id, 'line');
    return { port: c.localPort!, host: g.text! };
  }
  async ask(id: string, text: string): Promise<string> {
    this.send({ op: 'send', id, text });
    const e = await this.next(id, ['line', 'error', 'close']);
    assert.equal(e.ev, 'line', `${id}: ${e.ev} ${e.code ?? ''}`);
    return e.text!;
  }
  /** The server closes first (its side keeps TIME_WAIT, so the client port is free again). */
  async bye(id: string): Promise<void> {
    this.send({ op: 'send', id, text: 'bye' });
    await this.next(id, 'close');
  }
}

function flowOf(port: number): Flow {
  return { src: '10.78.0.2', sport: port, dst: VIP, dport: PORT };
}

async function ns(n: string, ...args: string[]): Promise<void> {
  await runOk('ip', ['-n', n, ...args], { timeoutMs: 10_000 });
}

async function sysctl(n: string, ...kv: string[]): Promise<void> {
  await runOk('ip', ['netns', 'exec', n, 'sysctl', '-qw', ...kv], { timeoutMs: 10_000 });
}

async function ethtool(n: string, iface: string, ...features: string[]): Promise<void> {
  await runOk('ip', ['netns', 'exec', n, 'ethtool', '-K', iface, ...features], { timeoutMs: 10_000 });
}

async function deleteNamespaces(): Promise<void> {
  const list = (await run('ip', ['netns', 'list'], { timeoutMs: 5000 })).stdout;
  for (const n of Object.values(NS)) {
    if (!new RegExp(`^${n}( |$)`, 'm').test(list)) continue;
    const pids = (await run('ip', ['netns', 'pids', n], { timeoutMs: 5000 })).stdout.split(/\s+/).map(Number).filter((p) => p > 1 && p !== process.pid);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await run('ip', ['netns', 'del', n], { timeoutMs: 10_000 });
  }
}

/** Balancers pinned by earlier runs of this test that were killed before their after hook. */
async function removeStaleBalancers(): Promise<void> {
  let names: string[] = [];
  try {
    names = readdirSync('/run/capybara/bpf').filter((n) => /^lbt-\d+(-tb)?$/.test(n));
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/^lbt-(\d+)/.exec(n)![1]);
    try {
      process.kill(pid, 0);
      continue; // that run is still going
    } catch {
      // gone: its pins are ours to remove
    }
    await new LoadBalancer({ ns: NS.lb, iface: 'lc', vip: VIP, name: n }).detach().catch(() => {});
  }
}

async function buildTopology(): Promise<void> {
  for (const n of Object.values(NS)) {
    await runOk('ip', ['netns', 'add', n], { timeoutMs: 10_000 });
    await ns(n, 'link', 'set', 'dev', 'lo', 'up');
    await sysctl(n, 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  }
  const pairs: [string, string, string, string, string, string][] = [
    [NS.client, 'c0', '10.78.0.2/24', NS.lb, 'lc', '10.78.0.1/24'],
    [NS.a, 'a0', '10.78.1.2/24', NS.lb, 'la', '10.78.1.1/24'],
    [NS.b, 'b0', '10.78.2.2/24', NS.lb, 'lbb', '10.78.2.1/24'],
  ];
  for (const [n1, i1, a1, n2, i2, a2] of pairs) {
    await runOk('ip', ['link', 'add', 'name', i1, 'netns', n1, 'type', 'veth', 'peer', 'name', i2, 'netns', n2], { timeoutMs: 10_000 });
    for (const [n, i, a] of [[n1, i1, a1], [n2, i2, a2]] as const) {
      await ns(n, 'addr', 'add', a, 'dev', i);
      // Checksums complete in every frame: a frame redirected by XDP loses the "checksum partial" mark.
      await ethtool(n, i, 'tx', 'off', 'tso', 'off', 'gso', 'off');
      await ns(n, 'link', 'set', 'dev', i, 'up');
    }
  }
  await sysctl(NS.lb, 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0');
  await ns(NS.client, 'route', 'add', 'default', 'via', '10.78.0.1');
  // Plain routing sends the VIP to lbt-a: only the balancer can bring a flow to lbt-b.
  await ns(NS.lb, 'route', 'add', `${VIP}/32`, 'via', '10.78.1.2');
  for (const [n, iface, gw] of [[NS.a, 'a0', '10.78.1.1'], [NS.b, 'b0', '10.78.2.1']] as const) {
    await ns(n, 'route', 'add', 'default', 'via', gw);
    await ns(n, 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
    // The VIP is not announced on the link: traffic for it arrives only as the balancer sends it.
    await sysctl(n, 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2');
    // Frames redirected into a veth are delivered only if the peer runs NAPI: GRO on (or an XDP program).
    await ethtool(n, iface, 'gro', 'on');
  }
}

async function macOf(n: string, iface: string): Promise<string> {
  const j = JSON.parse(await runOk('ip', ['-n', n, '-j', 'link', 'show', 'dev', iface])) as { address: string }[];
  return j[0]!.address;
}

async function outRsts(n: string): Promise<number> {
  const snmp = (await runIn(n, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const keys = snmp[0]!.split(/\s+/);
  const vals = snmp[1]!.split(/\s+/);
  return Number(vals[keys.indexOf('OutRsts')]);
}

async function packetsOf(lb: LoadBalancer, name: string): Promise<number> {
  return (await lb.stats()).backends.find((b) => b.name === name)?.packets ?? 0;
}

const skip = lbSkip();

describe('xdp load balancer on lbt-* namespaces', { skip: skip ?? false, timeout: 180_000 }, () => {
  const procs: ChildProcess[] = [];
  let client: Client;
  let lb: LoadBalancer;

  before(async () => {
    await deleteNamespaces(); // leftovers of a run that was killed
    await removeStaleBalancers();
    await buildTopology();
    for (const [n, name] of [[NS.a, 'hostA'], [NS.b, 'hostB']] as const) {
      const p = spawnIn(n, process.execPath, ['-e', SERVER, name, VIP, String(PORT)]);
      procs.push(p);
      await withTimeout(new Promise<void>((resolve, reject) => {
        createInterface({ input: p.stdout! }).once('line', () => resolve());
        p.once('exit', (code) => reject(new Error(`server ${name} exited (${code})`)));
      }), 10_000, `server ${name} ready`);
    }
    const cp = spawnIn(NS.client, process.execPath, ['-e', CLIENT], { stdio: ['pipe', 'pipe', 'pipe'] });
    procs.push(cp);
    client = new Client(cp);
    lb = new LoadBalancer({ ns: NS.lb, iface: 'lc', vip: VIP, name: NAME, idleMs: 60_000 });
  });

  after(async () => {
    await lb?.detach().catch(() => {});
    for (const p of procs) await stopProcess(p, 'SIGKILL', 1000);
    await deleteNamespaces();
  });

  it('attaches natively, learns the backends and refuses a second attach', async () => {
    await lb.attach();
    const link = JSON.parse(await runOk('ip', ['-n', NS.lb, '-j', 'link', 'show', 'dev', 'lc'])) as { xdp?: { mode: number; prog?: { name: string } } }[];
    assert.equal(link[0]?.xdp?.prog?.name, 'cpb_lb');
    assert.equal(link[0]?.xdp?.mode, 1); // XDP_ATTACHED_DRV
    const backends = await lb.setBackends([
      { name: 'hostA', iface: 'la', ip: '10.78.1.2' },            // MAC learnt by ARP
      { name: 'hostB', iface: 'lbb', mac: await macOf(NS.b, 'b0') }, // MAC given
    ]);
    assert.equal(backends[0]!.mac, await macOf(NS.a, 'a0'));
    assert.equal(backends[0]!.lbMac, await macOf(NS.lb, 'la'));
    assert.equal(backends[1]!.lbMac, await macOf(NS.lb, 'lbb'));
    const again = new LoadBalancer({ ns: NS.lb, iface: 'lc', vip: VIP, name: NAME });
    await assert.rejects(again.attach(), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_BUSY');
  });

  it('spreads new flows over both backends by the hash and remembers each', async () => {
    const seen = new Map<string, number>();
    const ports: number[] = [];
    for (let i = 0; i < 16; i++) {
      const { port, host } = await client.connect(`s${i}`);
      seen.set(host, (seen.get(host) ?? 0) + 1);
      ports.push(port);
      const entry = await lb.lookup(flowOf(port));
      assert.equal(entry?.name, host, `flow ${port} answered by ${host}, table says ${entry?.name}`);
      assert.equal(await client.ask(`s${i}`, 'x'), `${host}:x`);
    }
    for (let i = 0; i < 16; i++) await client.bye(`s${i}`);
    assert.deepEqual([...seen.keys()].sort(), ['hostA', 'hostB'], JSON.stringify([...seen]));
    const st = await lb.stats();
    assert.ok(st.new >= 16, `new ${st.new}`);
    for (const b of st.backends) assert.ok(b.packets > 0 && b.bytes > 0, JSON.stringify(b));
    const flows = await lb.flows();
    for (const p of ports) assert.ok(flows.some((f) => f.sport === p && f.dst === VIP && f.dport === PORT), `flow ${p} listed`);
  });

  it('keeps a flow on its backend', async () => {
    const { port, host } = await client.connect('stick');
    const before = await packetsOf(lb, host);
    for (let i = 0; i < 20; i++) assert.equal(await client.ask('stick', `m${i}`), `${host}:m${i}`);
    assert.equal((await lb.lookup(flowOf(port)))?.name, host);
    assert.ok((await packetsOf(lb, host)) - before >= 20, 'each request went through the balancer to the same backend');
    await client.bye('stick');
  });

  it('steers a flow to the other backend after redirect() from the source host', async () => {
    const { port, host } = await client.connect('mig');
    const other = host === 'hostA' ? 'hostB' : 'hostA';
    const otherNs = other === 'hostA' ? NS.a : NS.b;
    const rstsBefore = await outRsts(otherNs);
    const pktsBefore = await packetsOf(lb, other);
    // The runtime that gives the flow away runs inside its host's namespace (under `ip netns exec`).
    const lbUrl = pathToFileURL(join(ROOT, 'dist', 'dataplane', 'lb.js')).href;
    const script = `const { LoadBalancer } = await import(${JSON.stringify(lbUrl)});
      const lb = await LoadBalancer.open({ name: ${JSON.stringify(NAME)} });
      await lb.redirect(${JSON.stringify(flowOf(port))}, ${JSON.stringify(other)});
      console.log((await lb.lookup(${JSON.stringify(flowOf(port))})).name);`;
    const hostNs = host === 'hostA' ? NS.a : NS.b;
    const r = await runIn(hostNs, process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), other);
    // The next packet of the flow lands on the other host, whose kernel has no such socket: RST.
    client.send({ op: 'send', id: 'mig', text: 'after' });
    const e = await client.next('mig', ['line', 'error']);
    assert.equal(e.ev, 'error', `expected a reset, got ${JSON.stringify(e)}`);
    assert.equal(e.code, 'ECONNRESET');
    assert.ok((await outRsts(otherNs)) > rstsBefore, `${other} sent the reset`);
    assert.ok((await packetsOf(lb, other)) > pktsBefore);
    await client.next('mig', 'close');
    // The same 5-tuple again: its SYN follows the redirect table to the other host, which accepts it.
    const again = await client.connect('mig2', port);
    assert.equal(again.port, port);
    assert.equal(again.host, other);
    await client.bye('mig2');
  });

  it('places a flow idle past idleMs by the hash again (in the program itself)', async () => {
    const first = await client.connect('age1');
    await client.bye('age1');
    const other = first.host === 'hostA' ? 'hostB' : 'hostA';
    await lb.redirect(flowOf(first.port), other);
    assert.equal((await lb.lookup(flowOf(first.port)))?.name, other);
    const agedBefore = (await lb.stats()).aged;
    await lb.setIdle(200);
    try {
      await waitFor(async () => ((await lb.lookup(flowOf(first.port)))?.idleMs ?? 0) > 400, 10_000, 'the entry to be idle');
      const again = await client.connect('age2', first.port);
      assert.equal(again.host, first.host, 'an aged entry no longer steers: the hash places the flow');
      assert.equal((await lb.stats()).aged, agedBefore + 1);
      assert.equal((await lb.lookup(flowOf(first.port)))?.name, first.host);
      await client.bye('age2');
    } finally {
      await lb.setIdle(60_000);
    }
  });

  it('expire() and the automatic sweep reclaim idle entries', async () => {
    assert.equal(await lb.expire(600_000), 0);
    const { port } = await client.connect('exp');
    await client.bye('exp');
    await waitFor(async () => ((await lb.lookup(flowOf(port)))?.idleMs ?? 0) > 300, 10_000, 'the entry to be idle');
    const removed = await lb.expire(150);
    assert.ok(removed >= 1, `removed ${removed}`);
    assert.equal(await lb.lookup(flowOf(port)), undefined);
    for (const f of await lb.flows()) assert.ok(f.idleMs <= 150 + 5_000, JSON.stringify(f)); // only recent ones left

    for (const id of ['sw1', 'sw2']) {
      await client.connect(id);
      await client.bye(id);
    }
    assert.ok((await lb.flows()).length >= 2);
    await lb.setIdle(100);
    const sweeper = await LoadBalancer.open({ name: NAME, sweepMs: 50 });
    assert.equal(sweeper.idleMs, 100);
    sweeper.startSweep();
    try {
      await waitFor(async () => (await lb.flows()).length === 0, 10_000, 'the sweep to empty the table');
    } finally {
      sweeper.stopSweep();
      await lb.setIdle(60_000);
    }
    assert.equal(sweeper.lastSweepError, undefined);
  });

  it('types its errors', async () => {
    await assert.rejects(lb.redirect(flowOf(1234), 'hostC'), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_NO_BACKEND');
    await assert.rejects(lb.lookup({ src: 'nope', sport: 1, dst: VIP, dport: PORT }), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_INVALID');
    await assert.rejects(lb.redirect({ ...flowOf(1), sport: 70000 }, 'hostA'), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_INVALID');
    assert.throws(() => new LoadBalancer({ ns: NS.lb, iface: 'lc', vip: '10.78.9' }), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_INVALID');
    await assert.rejects(LoadBalancer.open({ name: 'lbt-none' }), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_NOT_ATTACHED');
  });

  it('detach leaves the lb routing normally', async () => {
    await lb.detach();
    const link = JSON.parse(await runOk('ip', ['-n', NS.lb, '-j', 'link', 'show', 'dev', 'lc'])) as { xdp?: unknown }[];
    assert.equal(link[0]?.xdp, undefined);
    assert.equal(existsSync(lb.pinDir), false);
    await assert.rejects(lb.stats(), (e: LbError) => e.code === 'ERR_CAPYBARA_LB_NOT_ATTACHED');
    await lb.detach(); // idempotent
    // The kernel route sends every flow to lbt-a now.
    for (let i = 0; i < 6; i++) {
      const { host } = await client.connect(`d${i}`);
      assert.equal(host, 'hostA');
      await client.bye(`d${i}`);
    }
  });

  it('attachTestbedLb (testbed up --lb xdp) wires a plan: hosts as backends by their veth MAC', async () => {
    const host = (n: string, iface: string, peer: string, sub: number) => ({
      ns: n, iface, peer, kernelIp: `10.78.${sub}.2`, ip: `10.78.${sub}.10`, prefixLength: 24, gateway: `10.78.${sub}.1`, device: `xdp:${iface}`,
    });
    const plan: TestbedPlan = {
      vip: VIP,
      client: { ns: NS.client, iface: 'c0', peer: 'lc', ip: '10.78.0.2', prefixLength: 24, gateway: '10.78.0.1' },
      lb: { ns: NS.lb, ifaces: { lc: '10.78.0.1/24', la: '10.78.1.1/24', lbb: '10.78.2.1/24' } },
      hosts: { hostA: host(NS.a, 'a0', 'la', 1), hostB: host(NS.b, 'b0', 'lbb', 2) },
      routes: [],
    };
    const name = `${NAME}-tb`;
    await ethtool(NS.b, 'b0', 'gro', 'off'); // attachTestbedLb must turn it on again
    try {
      const backends = await attachTestbedLb(plan, name);
      assert.deepEqual(backends.map((b) => [b.name, b.iface]), [['hostA', 'la'], ['hostB', 'lbb']]);
      assert.equal(backends[0]!.mac, await macOf(NS.a, 'a0'));
      assert.equal(backends[1]!.mac, await macOf(NS.b, 'b0'));
      assert.match((await runIn(NS.b, 'ethtool', ['-k', 'b0'])).stdout, /^generic-receive-offload: on/m);
      const tb = await LoadBalancer.open({ name });
      const prog = (await tb.attached())?.progId;
      await attachTestbedLb(plan, name); // idempotent: same program, backends written again
      assert.equal((await tb.attached())?.progId, prog);
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const { host: h } = await client.connect(`tb${i}`);
        seen.add(h);
        await client.bye(`tb${i}`);
      }
      assert.deepEqual([...seen].sort(), ['hostA', 'hostB']);
    } finally {
      await detachTestbedLb(plan, name);
    }
    const link = JSON.parse(await runOk('ip', ['-n', NS.lb, '-j', 'link', 'show', 'dev', 'lc'])) as { xdp?: unknown }[];
    assert.equal(link[0]?.xdp, undefined);
  });
});
