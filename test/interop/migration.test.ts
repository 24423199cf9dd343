// Live TCP migration against real kernel clients: `client` talks to the VIP through the XDP balancer;
// echo runs on hostA and hostB (capybara stacks on AF_XDP), and the tests move the server side of the
// connections between them while the client keeps streaming and checks every byte it gets back.
//   1. one echo session moved 1,000 times back and forth; a client-side capture shows no RST
//   2. 200 concurrent connections, migrate all A->B then B->A
//   3. a bulk echo with megabytes in flight moved 20 times
//   5. hostile peers on the migration channel port (garbage, a HELLO under a wrong key, a huge length)
//   4. the target dies right before a migration; the source dies right after one
//   6. the target is killed while the source waits for its answer (after it got the offer)
// Migrations go through the admin socket directly (adminRequest): a `ctl` process per migration would
// make 1,000 of them slow. Timings are printed as diagnostics, never asserted.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { PLAN } from '../../dataplane/testbed.js';
import { ChannelSession } from '../../runtime/migration/session.js';
import { addonSkip, cliAsync, hasCommand, netnsSkip } from '../helpers/env.js';
import {
  clientFlows, flows, HOSTS, migrate, other, ownerOf, percentile, rawPeer, runtimePid, startCapture, startStreamClient, stats,
  useLbTestbed, waitProgress, type Capture, type FlowRow, type Host, type StreamClient,
} from '../helpers/migration.js';
import { startServe, type Running } from '../helpers/testbed.js';
import { delay, waitFor, withTimeout } from '../helpers/wait.js';

const skip = netnsSkip() ?? addonSkip();
const VIP = PLAN.vip;
const PORT = 7;
const CHANNEL_PORT = 7400;

function log(msg: string): void {
  process.stderr.write(`# ${msg}\n`);
}

function summary(xs: number[]): string {
  return `p50 ${percentile(xs, 50).toFixed(0)} p99 ${percentile(xs, 99).toFixed(0)} max ${Math.max(...xs).toFixed(0)}`;
}

describe('live TCP migration through the XDP balancer', { skip: skip ?? false }, () => {
  const servers: Partial<Record<Host, Running>> = {};
  const clients: StreamClient[] = [];
  const captures: Capture[] = [];
  let teardown: (() => Promise<void>) | undefined;

  async function serve(host: Host): Promise<void> {
    servers[host] = await startServe('echo', host, PORT, host);
  }

  /** SIGKILL the runtime itself (serve --on re-executes inside the namespace: the pid is the inner one). */
  async function killRuntime(host: Host): Promise<void> {
    const pid = await runtimePid(host);
    const outer = servers[host]!.child;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => outer.exitCode !== null || outer.signalCode !== null, 10_000, `serve --on ${host} to exit after SIGKILL`);
  }

  async function client(args: string[]): Promise<StreamClient> {
    const c = await startStreamClient(args);
    clients.push(c);
    return c;
  }

  /** The flow of the client's port on host, waiting (bounded) for the host to have it unfrozen. */
  async function flowOn(host: Host, clientPort: number): Promise<FlowRow> {
    let found: FlowRow | undefined;
    await waitFor(async () => {
      found = (await clientFlows(host, PORT)).find((f) => f.remotePort === clientPort && !f.frozen);
      return found !== undefined;
    }, 5000, `flow :${clientPort} on ${host}`);
    return found!;
  }

  /** The source keeps a released flow frozen for a short grace; a migration back must wait for it to go. */
  async function released(host: Host, clientPort: number): Promise<void> {
    await waitFor(async () => !(await clientFlows(host, PORT)).some((f) => f.remotePort === clientPort), 5000, `flow :${clientPort} to leave ${host}`);
  }

  /** Moves the client's flow from `from` to the other host; the timings of the migration. */
  async function moveOnce(from: Host, clientPort: number): Promise<{ blackoutUs: number; totalUs: number }> {
    const to = other(from);
    await released(to, clientPort);
    const f = await flowOn(from, clientPort);
    const r = await migrate(from, f.id);
    assert.equal(r.failed, 0, `migration ${from} -> ${to} failed: ${JSON.stringify(r.errors)}`);
    assert.equal(r.migrated, 1);
    return r.timings[0]!;
  }

  /** Makes sure the client's flow is on host (moving it there when the balancer put it elsewhere). */
  async function placeOn(host: Host, clientPort: number): Promise<void> {
    let o: Awaited<ReturnType<typeof ownerOf>> = null;
    await waitFor(async () => (o = await ownerOf(clientPort, PORT)) !== null, 5000, `an owner for :${clientPort}`);
    if (o!.host !== host) await moveOnce(o!.host, clientPort);
    await flowOn(host, clientPort);
  }

  before(async () => {
    teardown = await useLbTestbed();
    await serve('hostA');
    await serve('hostB');
  });

  after(async () => {
    for (const c of clients) await c.kill();
    for (const cap of captures) {
      await cap.stop();
      cap.cleanup();
    }
    for (const s of Object.values(servers)) await s?.stop();
    await teardown?.();
  });

  it('1. an echo session moved 1,000 times: every message once, in order, no RST', { timeout: 150_000 }, async () => {
    // 4 messages of 64 bytes per ms
    const c = await client(['messages', VIP, String(PORT), '1', '4000']);
    const port = c.localPorts[0]!;
    await waitProgress(c, 200, 5000, 'before migrating');
    let owner = (await ownerOf(port, PORT))?.host;
    assert.ok(owner, 'neither host has the connection');
    const tcpBefore = { hostA: (await stats('hostA')).tcp, hostB: (await stats('hostB')).tcp };
    const capture = hasCommand('tcpdump') ? await startCapture() : undefined;
    if (capture) captures.push(capture);
    const blackouts: number[] = [];
    const totals: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < 1000; i++) {
      const t = await moveOnce(owner, port);
      blackouts.push(t.blackoutUs);
      totals.push(t.totalUs);
      owner = other(owner);
      if (i % 100 === 99) {
        const s = await c.status();
        assert.deepEqual(s.errors, [], `after ${i + 1} migrations`);
        if (i === 299) await capture?.stop(); // a capture of the first 300 is plenty to read back
      }
    }
    const elapsed = Date.now() - t0;
    await waitProgress(c, 400, 5000, 'after 1000 migrations');
    const r = await c.stop();
    log(`1000 migrations in ${elapsed} ms; blackout us ${summary(blackouts)}; total us ${summary(totals)}; client: ${r.received} messages, max gap ${r.maxGapMs} ms`);
    assert.deepEqual(r.errors, []);
    assert.equal(r.received, r.sent);
    assert.equal(r.ok, true);
    assert.ok(r.sent > 1000, `only ${r.sent} messages sent`);
    const tcpAfter = { hostA: (await stats('hostA')).tcp, hostB: (await stats('hostB')).tcp };
    // The engines agree: 1,000 adopted and 1,000 released between them, none taken back (unfrozen).
    const delta = (k: string) => {
      let n = 0;
      for (const h of ['hostA', 'hostB'] as const) n += (tcpAfter[h][k] ?? 0) - (tcpBefore[h][k] ?? 0);
      return n;
    };
    log(`engines: frozen +${delta('frozen')} adopted +${delta('adopted')} released +${delta('released')} unfrozen +${delta('unfrozen')} `
      + `adoptRejects +${delta('adoptRejects')} heldSegments +${delta('heldSegments')} heldDrops +${delta('heldDrops')} rstsSent +${delta('rstsSent')}`);
    assert.equal(delta('adopted'), 1000);
    assert.equal(delta('released'), 1000);
    assert.equal(delta('unfrozen'), 0);
    if (capture) {
      const rsts = await capture.rstsFromVip();
      const fromVip = await capture.read(`src host ${VIP} and src port ${PORT} and dst port ${port}`);
      log(`capture: ${fromVip.length} segments from the VIP, ${rsts.length} RST`);
      assert.ok(fromVip.length > 100, 'the capture holds the echoed stream');
      assert.deepEqual(rsts, []);
    }
  });

  it('2. 200 connections: migrate all A->B, then B->A', { timeout: 60_000 }, async () => {
    const c = await client(['messages', VIP, String(PORT), '200', '20']);
    const ports = new Set(c.localPorts);
    await waitProgress(c, 2000, 10_000, 'before migrating');
    const onA = (await clientFlows('hostA', PORT)).filter((f) => ports.has(f.remotePort));
    const onB = (await clientFlows('hostB', PORT)).filter((f) => ports.has(f.remotePort));
    log(`balancer placed ${onA.length} on hostA, ${onB.length} on hostB`);
    assert.equal(onA.length + onB.length, 200);

    const r1 = await migrate('hostA', 'all');
    assert.equal(r1.failed, 0, JSON.stringify(r1.errors.slice(0, 5)));
    assert.equal(r1.migrated, onA.length);
    await waitFor(async () => (await clientFlows('hostA', PORT)).filter((f) => ports.has(f.remotePort)).length === 0, 5000, 'hostA to release');
    await waitProgress(c, 1000, 10_000, 'after A->B');
    const r2 = await migrate('hostB', 'all');
    assert.equal(r2.failed, 0, JSON.stringify(r2.errors.slice(0, 5)));
    assert.equal(r2.migrated, 200);
    await waitProgress(c, 2000, 10_000, 'after B->A');

    const ctl = await cliAsync(['ctl', '--on', 'hostA', 'flows', '--json'], {}, 20_000);
    assert.equal(ctl.status, 0, ctl.stderr);
    const listed = (JSON.parse(ctl.stdout) as FlowRow[]).filter((f) => ports.has(f.remotePort) && f.localAddress === VIP);
    assert.equal(listed.length, 200);
    for (const f of listed) {
      assert.ok(f.migrations >= 1, `flow :${f.remotePort} migrations ${f.migrations}`);
      assert.equal(f.owner, 'hostA');
    }
    const res = await c.stop();
    const b = [...r1.timings, ...r2.timings].map((t) => t.blackoutUs);
    log(`200 conns: A->B ${r1.migrated}, B->A ${r2.migrated}; blackout us ${summary(b)}; client: ${res.received} messages, max gap ${res.maxGapMs} ms`);
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
    assert.equal(res.ok, true);
  });

  it('3. a bulk echo with megabytes in flight moved 20 times: byte-exact', { timeout: 90_000 }, async () => {
    const c = await client(['bulk', VIP, String(PORT), String(4 * 1024 * 1024)]);
    const port = c.localPorts[0]!;
    await waitProgress(c, 4 * 1024 * 1024, 20_000, 'before migrating');
    let owner = (await ownerOf(port, PORT))!.host;
    const blackouts: number[] = [];
    const sizes: number[] = [];
    // Echoed bytes in the 100 ms before a migration (up to the migrate call) and in the 100 ms after it
    // (from its answer): the issue asks for >= 90 %. Wall clock on shared cores: printed, not asserted.
    const rates: number[] = [];
    const held0 = { hostA: (await stats('hostA')), hostB: (await stats('hostB')) };
    for (let i = 0; i < 20; i++) {
      await waitProgress(c, 512 * 1024, 20_000, `before migration ${i + 1}`);
      const f = await flowOn(owner, port);
      await released(other(owner), port);
      const b0 = (await c.status()).received;
      await delay(100);
      const b1 = (await c.status()).received;
      const r = await migrate(owner, f.id);
      const a0 = (await c.status()).received;
      await delay(100);
      const a1 = (await c.status()).received;
      if (b1 > b0) rates.push((a1 - a0) / (b1 - b0));
      assert.equal(r.failed, 0, `migration ${i + 1}: ${JSON.stringify(r.errors)}`);
      blackouts.push(r.timings[0]!.blackoutUs);
      sizes.push(r.timings[0]!.snapshotBytes);
      owner = other(owner);
    }
    await waitProgress(c, 2 * 1024 * 1024, 20_000, 'after migrating');
    const res = await c.stop();
    const held1 = { hostA: (await stats('hostA')), hostB: (await stats('hostB')) };
    const heldDelta = (k: string, part: 'tcp' | 'dev' = 'tcp') =>
      HOSTS.reduce((n, h) => n + (held1[h][part]?.[k] ?? 0) - (held0[h][part]?.[k] ?? 0), 0);
    log(`bulk engines: heldSegments +${heldDelta('heldSegments')} heldDrops +${heldDelta('heldDrops')} retransmits +${heldDelta('retransmits')} `
      + `rtoTimeouts +${heldDelta('rtoTimeouts')} fastRetransmits +${heldDelta('fastRetransmits')} txDropped +${heldDelta('txDropped', 'dev')} rxDropped +${heldDelta('rxDropped', 'dev')}`);
    const sorted = [...rates].sort((x, y) => x - y);
    log(`bulk: ${(res.received / 1048576).toFixed(1)} MB verified, max in flight ${((res.maxInFlight ?? 0) / 1048576).toFixed(2)} MB; `
      + `snapshot bytes ${summary(sizes)}; blackout us ${summary(blackouts)}; max gap ${res.maxGapMs} ms; `
      + `echoed bytes 100 ms after / 100 ms before a migration: p50 ${percentile(sorted, 50).toFixed(2)}, min ${(sorted[0] ?? 0).toFixed(2)}, `
      + `>= 0.9 in ${rates.filter((x) => x >= 0.9).length}/${rates.length}`);
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
    assert.equal(res.ok, true);
    assert.ok((res.maxInFlight ?? 0) >= 1024 * 1024, 'megabytes were in flight');
  });

  it('5. hostile channel peers are refused; the runtime and its migrated flows carry on', { timeout: 60_000 }, async () => {
    const c = await client(['messages', VIP, String(PORT), '1', '1000']);
    const port = c.localPorts[0]!;
    await waitProgress(c, 100, 5000, 'before');
    // a migrated flow on hostA (the runtime under attack)
    await placeOn('hostB', port);
    await moveOnce('hostB', port);
    assert.ok((await flowOn('hostA', port)).migrations >= 1);
    const pid = await runtimePid('hostA');
    const before = await stats('hostA');

    const hostA = PLAN.hosts.hostA.ip;
    const garbage = Buffer.concat([Buffer.from([40, 0, 0, 0]), Buffer.alloc(40, 0xee)]); // a frame of unknown type
    const text = Buffer.from('GET / HTTP/1.1\r\nHost: capybara\r\n\r\n');  // a "length" of 0x20544547
    // A well-formed HELLO claiming to be hostB, MACed under a key that is not the cluster key.
    const forged = new ChannelSession({ name: 'hostB', role: 'initiator', key: randomBytes(32), keyEpoch: 0 }).start();
    const huge = Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(64)]);
    const cases: [string, string, Uint8Array][] = [
      ['garbage frame', PLAN.client.ns, garbage],
      ['plain text', PLAN.client.ns, text],
      ['HELLO under a wrong key (from hostB kernel address)', PLAN.hosts.hostB.ns, forged],
      ['HELLO under a wrong key', PLAN.client.ns, forged],
      ['huge length prefix', PLAN.client.ns, huge],
    ];
    for (const [what, ns, bytes] of cases) {
      const r = await rawPeer(ns, hostA, CHANNEL_PORT, bytes, 5000);
      log(`hostile ${what}: ${JSON.stringify(r)}`);
      assert.ok(['end', 'reset', 'closed'].includes(r.outcome), `${what}: the connection was not closed (${r.outcome})`);
    }

    // Still the same process, answering, with no migration counted in and the flow still streaming.
    assert.equal(await runtimePid('hostA'), pid);
    const afterStats = await stats('hostA');
    log(`hostA tcp passiveOpens +${afterStats.tcp.passiveOpens! - before.tcp.passiveOpens!}, rstsSent +${afterStats.tcp.rstsSent! - before.tcp.rstsSent!}; migration ${JSON.stringify(afterStats.migration)}`);
    assert.ok(afterStats.tcp.passiveOpens! - before.tcp.passiveOpens! >= cases.length, 'each hostile connection was accepted by the stack');
    assert.equal(afterStats.migration!.in, before.migration!.in);
    assert.equal(afterStats.migration!.rejectedIn, before.migration!.rejectedIn);
    await waitFor(async () => !(await flows('hostA')).some((f) => f.localPort === CHANNEL_PORT && f.state === 'ESTABLISHED' && f.remoteAddress !== PLAN.hosts.hostB.ip),
      5000, 'the hostile connections to leave hostA');
    await waitProgress(c, 500, 5000, 'after the hostile peers');
    // and the real channel still works both ways
    await moveOnce('hostA', port);
    await moveOnce('hostB', port);
    await waitProgress(c, 200, 5000, 'after migrating again');
    const res = await c.stop();
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
  });

  it('4. the target dies before a migration; the source dies after one', { timeout: 90_000 }, async () => {
    const c = await client(['messages', VIP, String(PORT), '1', '1000']);
    const port = c.localPorts[0]!;
    await waitProgress(c, 100, 5000, 'before');
    await placeOn('hostA', port);
    const failedBefore = (await stats('hostA')).migration!.failed;

    // (a) hostB is killed right before hostA tries to move the flow there.
    await killRuntime('hostB');
    const f = await flowOn('hostA', port);
    const ctl = await cliAsync(['ctl', '--on', 'hostA', 'migrate', String(f.id), '--to', 'hostB', '--json'], {}, 30_000);
    log(`migrate to a dead target: exit ${ctl.status}, ${ctl.stdout.trim() || ctl.stderr.trim()}`);
    assert.notEqual(ctl.status, 0, 'the migration to a dead target must fail');
    const still = await flowOn('hostA', port);
    assert.equal(still.id, f.id, 'the source kept the connection');
    assert.equal((await stats('hostA')).migration!.failed, failedBefore + 1);
    await waitProgress(c, 500, 5000, 'after the failed migration');

    // hostB comes back; the first attempts may hit hostA's stale channel, a fresh one must work.
    await serve('hostB');
    let attempts = 0;
    const t0 = Date.now();
    for (;;) {
      attempts++;
      const r = await migrate('hostA', (await flowOn('hostA', port)).id);
      if (r.migrated === 1) break;
      log(`after restarting hostB, attempt ${attempts}: ${JSON.stringify(r.errors)}`);
      if (Date.now() - t0 > 30_000) assert.fail(`no migration to the restarted hostB within 30 s (${attempts} attempts)`);
      await delay(200);
    }
    log(`migrated to the restarted hostB after ${attempts} attempt(s), ${Date.now() - t0} ms`);
    await flowOn('hostB', port);
    await released('hostA', port);
    await waitProgress(c, 500, 5000, 'on the restarted hostB');

    // (b) hostA, the former source, dies: hostB keeps serving the flow.
    await killRuntime('hostA');
    await waitProgress(c, 1000, 10_000, 'after hostA died');
    const res = await c.stop();
    log(`client across both deaths: ${res.received} messages, max gap ${res.maxGapMs} ms`);
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
    // hostA comes back cleanly after a SIGKILL (stale admin socket, XDP program left behind).
    await withTimeout(serve('hostA'), 40_000, 'restarting hostA');
  });

  it('6. the target is killed while the source waits for its answer: the source keeps the connection', { timeout: 90_000 }, async () => {
    // hostB receives offers but never acts on them (CAPYBARA_MIGRATION_FAULTS=dropOffers: a wedged runtime),
    // so the migration is surely under way, the flow frozen at hostA, when hostB is SIGKILLed.
    await servers.hostB?.stop();
    process.env.CAPYBARA_MIGRATION_FAULTS = 'dropOffers';
    try {
      await serve('hostB');
    } finally {
      delete process.env.CAPYBARA_MIGRATION_FAULTS;
    }
    const c = await client(['messages', VIP, String(PORT), '1', '1000']);
    const port = c.localPorts[0]!;
    await waitProgress(c, 100, 5000, 'before');
    await placeOn('hostA', port);
    const failedBefore = (await stats('hostA')).migration!.failed;
    const f = await flowOn('hostA', port);
    const moving = migrate('hostA', f.id, 60_000);
    await waitFor(async () => (await clientFlows('hostA', PORT)).some((x) => x.remotePort === port && x.frozen), 10_000, 'hostA to freeze the flow');
    await killRuntime('hostB');
    const r = await moving;
    log(`target killed mid-migration: ${JSON.stringify(r.errors)}`);
    assert.equal(r.migrated, 0);
    assert.equal(r.failed, 1);
    assert.equal((await stats('hostA')).migration!.failed, failedBefore + 1);
    const still = await flowOn('hostA', port);
    assert.equal(still.id, f.id, 'the source kept the connection');
    await waitProgress(c, 500, 10_000, 'after the target died mid-migration');
    const res = await c.stop();
    log(`client across the target's death: ${res.received} messages, max gap ${res.maxGapMs} ms`);
    assert.deepEqual(res.errors, []);
    assert.equal(res.received, res.sent);
    await withTimeout(serve('hostB'), 40_000, 'restarting hostB');
  });
});
