// (3) Mixed backends: hostA's stack on DPDK (net_af_xdp on a0), hostB's on our AF_XDP backend, the client
// behind the XDP balancer. Live connections move between them both ways while the client checks every byte:
// a snapshot taken on one backend is adopted on the other, and the balancer re-steers the flow.
// (net_af_xdp rather than net_af_packet: the balancer's redirected frames reach a veth only through NAPI,
// which the PMD's XDP program provides; af_packet would see them after GRO. See dataplane/dpdk-testbed.ts.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hugetlbfsMounts, reserveHugepages } from '../../dataplane/dpdk-setup.js';
import { PLAN } from '../../dataplane/testbed.js';
import { dpdkSkip, freeHugepages, totalHugepages, useDpdkTestbed } from '../helpers/dpdk.js';
import { clientFlows, migrate, other, ownerOf, startStreamClient, waitProgress, type FlowRow, type Host, type StreamClient } from '../helpers/migration.js';
import { startServe, type Running } from '../helpers/testbed.js';
import { waitFor } from '../helpers/wait.js';

const skip = dpdkSkip();
const VIP = PLAN.vip;
const PORT = 7;
const NEED_PAGES = 64;

describe('migration between a dpdk: host and an xdp: host', { skip: skip ?? false }, () => {
  const servers: Running[] = [];
  const clients: StreamClient[] = [];
  let teardown: (() => Promise<void>) | undefined;
  let restorePages: number | undefined;

  async function flowOn(host: Host, clientPort: number): Promise<FlowRow> {
    let found: FlowRow | undefined;
    await waitFor(async () => {
      found = (await clientFlows(host, PORT)).find((f) => f.remotePort === clientPort && !f.frozen);
      return found !== undefined;
    }, 5000, `flow :${clientPort} on ${host}`);
    return found!;
  }

  async function released(host: Host, clientPort: number): Promise<void> {
    await waitFor(async () => !(await clientFlows(host, PORT)).some((f) => f.remotePort === clientPort), 5000, `flow :${clientPort} to leave ${host}`);
  }

  before(async () => {
    if (freeHugepages() < NEED_PAGES || hugetlbfsMounts().length === 0) {
      restorePages = totalHugepages();
      await reserveHugepages(restorePages + NEED_PAGES);
    }
    teardown = await useDpdkTestbed({ hostA: 'dpdk-af_xdp', hostB: 'xdp' }, 'xdp');
    for (const h of ['hostA', 'hostB'] as const) servers.push(await startServe('echo', h, PORT, h));
    assert.match(String(servers[0]!.info.device), /^dpdk:net_af_xdp/);
    assert.match(String(servers[1]!.info.device), /^xdp:/);
  });

  after(async () => {
    for (const c of clients) await c.kill();
    for (const s of servers) await s.stop();
    await teardown?.();
    if (restorePages !== undefined) await reserveHugepages(restorePages).catch(() => {});
  });

  it('a bulk echo with megabytes in flight moved 10 times across backends: byte-exact', { timeout: 120_000 }, async () => {
    const c = await startStreamClient(['bulk', VIP, String(PORT), String(4 * 1024 * 1024)]);
    clients.push(c);
    const port = c.localPorts[0]!;
    await waitProgress(c, 4 * 1024 * 1024, 20_000, 'before migrating');
    let owner = (await ownerOf(port, PORT))!.host;
    const seen = new Set<Host>([owner]);
    for (let i = 0; i < 10; i++) {
      await waitProgress(c, 512 * 1024, 20_000, `before migration ${i + 1}`);
      const f = await flowOn(owner, port);
      await released(other(owner), port);
      const r = await migrate(owner, f.id);
      assert.equal(r.failed, 0, `migration ${i + 1} ${owner} -> ${other(owner)}: ${JSON.stringify(r.errors)}`);
      owner = other(owner);
      seen.add(owner);
    }
    await waitProgress(c, 2 * 1024 * 1024, 20_000, 'after migrating');
    const res = await c.stop();
    process.stderr.write(`# mixed dpdk/xdp: ${(res.received / 1048576).toFixed(1)} MB verified, max gap ${res.maxGapMs} ms\n`);
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
    assert.equal(res.ok, true);
    assert.deepEqual([...seen].sort(), ['hostA', 'hostB'], 'the flow lived on both backends');
  });

  it('a message stream moved 50 times: every message once, in order', { timeout: 90_000 }, async () => {
    const c = await startStreamClient(['messages', VIP, String(PORT), '1', '1000']);
    clients.push(c);
    const port = c.localPorts[0]!;
    await waitProgress(c, 100, 5000, 'before migrating');
    let owner = (await ownerOf(port, PORT))!.host;
    for (let i = 0; i < 50; i++) {
      await released(other(owner), port);
      const f = await flowOn(owner, port);
      const r = await migrate(owner, f.id);
      assert.equal(r.failed, 0, `migration ${i + 1}: ${JSON.stringify(r.errors)}`);
      owner = other(owner);
    }
    await waitProgress(c, 100, 5000, 'after migrating');
    const res = await c.stop();
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
  });
});
