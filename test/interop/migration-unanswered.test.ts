// Exactly one owner when a migration's answer never comes: the target adopts and steers but every
// 'adopted' it sends is dropped (MigratorOptions.faults.dropAnswers). The source must not take its
// frozen copy back once the switch's steering table shows the target owning the flow; it releases the
// flow and the connection carries on at the target, byte-exact. Three runtimes on the mem switch, in
// process (no namespaces needed).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { echoResumable } from '../../runtime/apps/echo.js';
import type { Connection } from '../../runtime/connection.js';
import { MemCluster } from '../../runtime/mem-cluster.js';
import { addonSkip } from '../helpers/env.js';
import { onceEvent, waitFor } from '../helpers/wait.js';

const skip = addonSkip();
const MSG = 64;

/** A client that sends numbered 64-byte messages on demand and counts in-order echoes. */
function echoCounter(conn: Connection) {
  let sent = 0;
  let received = 0;
  let bad = 0;
  let buf = Buffer.alloc(0);
  conn.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= MSG) {
      if (buf.readUInt32LE(0) !== received) bad++;
      received++;
      buf = buf.subarray(MSG);
    }
  });
  return {
    send(n: number) {
      for (let i = 0; i < n; i++) {
        const m = Buffer.alloc(MSG, sent & 0xff);
        m.writeUInt32LE(sent++, 0);
        conn.write(m);
      }
    },
    get sent() { return sent; },
    get received() { return received; },
    get bad() { return bad; },
  };
}

describe('a migration whose answers are all lost', { skip: skip ?? false }, () => {
  let cluster: MemCluster;
  before(async () => {
    cluster = await MemCluster.open({
      name: `unanswered-${process.pid}`, servers: ['hostA', 'hostB', 'hostC', 'hostD', 'hostE'], seed: 3, net: 93, app: echoResumable(), port: 7,
      migrationTimeoutMs: 100, migrationFaults: { hostB: { dropAnswers: true }, hostD: { dropOffers: true }, hostE: { delayOffersMs: 1500 } },
    });
  });
  after(async () => {
    await cluster?.close();
  });

  /** A client connection to the VIP with `n` messages echoed already. */
  async function openEcho(n: number) {
    const conn = cluster.client.connect(7, cluster.vip);
    await onceEvent(conn, 'connect', 30_000);
    conn.setNoDelay(true);
    const c = echoCounter(conn);
    c.send(n);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes before migrating');
    return { conn, port: conn.localPort!, c };
  }

  it('the balancer shows the target owns the flow: the source releases it, one owner, no byte lost', { timeout: 60_000 }, async () => {
    const { conn, port, c } = await openEcho(50);

    // Start from a runtime that answers: hostB is the one whose answers are lost.
    let own = cluster.ownerOf(port);
    assert.ok(own);
    if (own.srv.name === 'hostB') {
      await own.srv.stack.migrate(own.conn, 'hostA');
      await waitFor(() => cluster.ownerOf(port)?.srv.name === 'hostA', 5000, 'the flow on hostA');
      own = cluster.ownerOf(port)!;
    }
    const source = own.srv;
    const before = { ...source.migrator.stats };
    c.send(20); // some in flight while it moves
    const t = await source.stack.migrate(own.conn, 'hostB');
    assert.equal(t.peer, 'hostB');
    assert.equal(source.migrator.stats.unanswered, before.unanswered + 1, 'counted as a migration whose answer never came');
    assert.equal(source.migrator.stats.failed, before.failed, 'not a failure: the target owns the flow');
    assert.equal(await cluster.switch.owner({ localAddress: cluster.vip, localPort: 7, remoteAddress: cluster.clientAddress, remotePort: port }), 'hostB');

    await waitFor(() => cluster.ownerOf(port)?.srv.name === 'hostB', 5000, 'the flow owned by hostB');
    // The source forgot it (after its grace): one owner.
    await waitFor(() => ![...source.conns].some((x) => x.remotePort === port && !x.destroyed), 5000, `${source.name} to let the flow go`);
    assert.equal(source.stack.flows().filter((f) => f.remotePort === port).length, 0, `${source.name} keeps no engine flow`);

    c.send(100);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes after the unanswered migration');
    assert.equal(c.bad, 0, 'every echo in order');

    // And it can move on from hostB to a runtime that answers.
    const b = cluster.ownerOf(port)!;
    await b.srv.stack.migrate(b.conn, 'hostC');
    c.send(30);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes on hostC');
    assert.equal(c.bad, 0);
    conn.end();
    await onceEvent(conn, 'close', 10_000).catch(() => conn.destroy());
  });

  it('a silent target that never adopted (the balancer does not point at it): the source takes the flow back', { timeout: 60_000 }, async () => {
    const { conn, port, c } = await openEcho(10);
    let own = cluster.ownerOf(port)!;
    if (own.srv.name === 'hostD') {
      await own.srv.stack.migrate(own.conn, 'hostA');
      await waitFor(() => cluster.ownerOf(port)?.srv.name === 'hostA', 5000, 'the flow on hostA');
      own = cluster.ownerOf(port)!;
    }
    const source = own.srv;
    const failed = source.migrator.stats.failed;
    c.send(10); // held while frozen, given back with the flow
    await assert.rejects(source.stack.migrate(own.conn, 'hostD'), (err: Error & { code?: string }) => err.code === 'ERR_MIGRATION_TIMEOUT');
    assert.equal(source.migrator.stats.failed, failed + 1);
    c.send(10);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes after the failed migration');
    assert.equal(c.bad, 0);
    assert.equal(cluster.ownerOf(port)?.srv.name, source.name, 'the source kept the flow');
    conn.end();
    await onceEvent(conn, 'close', 10_000).catch(() => conn.destroy());
  });

  it('a wedged target that gets to the offer after the source gave up: it refuses (the source claimed the flow back), one owner', { timeout: 60_000 }, async () => {
    const { conn, port, c } = await openEcho(10);
    let own = cluster.ownerOf(port)!;
    if (own.srv.name === 'hostE') {
      await own.srv.stack.migrate(own.conn, 'hostA');
      await waitFor(() => cluster.ownerOf(port)?.srv.name === 'hostA', 5000, 'the flow on hostA');
      own = cluster.ownerOf(port)!;
    }
    const source = own.srv;
    const e = cluster.server('hostE');
    await assert.rejects(source.stack.migrate(own.conn, 'hostE'), (err: Error & { code?: string }) => err.code === 'ERR_MIGRATION_TIMEOUT');
    c.send(10);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes after the failed migration');
    // hostE wakes up and handles every copy of the offer: its claim loses to the source's.
    await waitFor(() => e.migrator.stats.lateOffers >= 1, 10_000, 'hostE to get to the offer');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(e.stack.flows().filter((f) => f.remotePort === port).length, 0, 'hostE adopted nothing');
    assert.equal(e.migrator.stats.in, 0);
    c.send(10);
    await waitFor(() => c.received === c.sent, 10_000, 'echoes at the source');
    assert.equal(c.bad, 0);
    assert.equal(cluster.ownerOf(port)?.srv.name, source.name, 'one owner: the source');
    conn.end();
    await onceEvent(conn, 'close', 10_000).catch(() => conn.destroy());
  });
});
