// Connections served in JavaScript on the engines' migration lane (native/mig/lanejs.h,
// runtime/migration/lane-record.ts), on the in-memory switch: the source's engine freezes, snapshots and
// sends the offer with the record of the layers above TCP; the target's engine adopts, steers and answers,
// and its JS builds the connection afterwards. Checked: a JS echo moved many times (every message once, in
// order, every move through the lane); a connection with hundreds of KB in flight both ways (an offer of
// many datagrams) moves byte-exact; a target whose server takes no migrated connections is refused by its
// engine and the connection carries on at the source; without jsLane they take the channel.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { echoResumable } from '../../runtime/apps/echo.js';
import type { Connection } from '../../runtime/connection.js';
import { MemCluster } from '../../runtime/mem-cluster.js';
import type { MigrationTimings } from '../../runtime/migration/migrator.js';
import { addonSkip, scaled } from '../helpers/env.js';
import { percentile } from '../helpers/migration.js';
import { pingPong, progress } from '../helpers/pingpong.js';
import { onceEvent, withTimeout } from '../helpers/wait.js';

const skip = addonSkip();
const PORT = 7;

async function connect(cluster: MemCluster): Promise<Connection> {
  const conn = cluster.client.connect(PORT, cluster.vip);
  await onceEvent(conn, 'connect', 10_000);
  return conn;
}

describe('connections served in JS on the migration lane (mem switch)', { skip: skip ?? false }, () => {
  let cluster: MemCluster;
  before(async () => {
    cluster = await MemCluster.open({ name: `lanejs-${process.pid}`, servers: ['hostA', 'hostB'], app: echoResumable(), port: PORT, net: 93, jsLane: true });
  });
  after(async () => {
    await cluster?.close();
  });

  it(`a JS echo moves A<->B ${scaled(200, 40)} times through the lane: every message once, in order`, { timeout: 120_000 }, async () => {
    const conn = await connect(cluster);
    const p = pingPong(conn);
    await progress(p, 50);
    const clientPort = conn.localPort!;
    const timings: MigrationTimings[] = [];
    for (let i = 0; i < scaled(200, 40); i++) {
      const own = await cluster.waitOwner(clientPort);
      assert.ok(own, `migration ${i}: some runtime serves the connection`);
      timings.push(await own.srv.migrator.migrate(own.conn, own.srv.name === 'hostA' ? 'hostB' : 'hostA'));
      await progress(p, 5);
    }
    assert.equal(p.bad, 0, 'every echo byte-exact and in order');
    assert.ok(timings.every((t) => t.path === 'lane'), 'every move went through the lane');
    const a = cluster.server('hostA');
    const b = cluster.server('hostB');
    assert.equal(a.migrator.stats.in + b.migrator.stats.in, timings.length, 'each adopted once, and taken by JS');
    assert.equal(a.migrator.stats.laneLost + b.migrator.stats.laneLost, 0);
    const ls = [a, b].map((s) => s.stack.engine.laneStats!());
    assert.equal(ls.reduce((n, s) => n + s.authFailures + s.badFrames + s.rejectedIn, 0), 0);
    const ship = timings.map((t) => t.shipUs);
    const bl = timings.map((t) => t.blackoutUs);
    process.stderr.write(`# JS flows on the lane: ${timings.length} moves; offer->answer p50 ${percentile(ship, 50).toFixed(0)} us, ` +
      `capture->answer p50 ${percentile(bl, 50).toFixed(0)} us p99 ${percentile(bl, 99).toFixed(0)} us (capture p50 ${percentile(timings.map((t) => t.captureUs), 50).toFixed(0)} us, ` +
      `engine call p50 ${percentile(timings.map((t) => t.freezeUs + (t.sendUs ?? 0)), 50).toFixed(0)} us); record+snapshot p50 ${percentile(timings.map((t) => t.snapshotBytes), 50)} B\n`);
    conn.destroy();
  });

  it('hundreds of KB in flight both ways: the offer spans many datagrams, the bytes arrive exactly once', { timeout: 60_000 }, async () => {
    const conn = await connect(cluster);
    const clientPort = conn.localPort!;
    // The client writes without reading: the echo's replies fill its send buffer and our receive window,
    // our writes fill its receive buffer. Then the connection moves, then the client reads everything.
    conn.pause();
    const data = randomBytes(700 * 1024);
    conn.write(data);
    const own = await cluster.waitOwner(clientPort);
    assert.ok(own);
    let fi = own.conn.info();
    for (let i = 0; i < 500 && (fi?.unackedBytes ?? 0) + (fi?.unsentBytes ?? 0) < 100 * 1024; i++) {
      await new Promise((r) => setTimeout(r, 5));
      fi = own.conn.info();
    }
    const buffered = (fi?.unackedBytes ?? 0) + (fi?.unsentBytes ?? 0);
    assert.ok(buffered >= 100 * 1024, `the server holds a lot unsent/unacknowledged (${buffered} B)`);
    const t = await own.srv.migrator.migrate(own.conn, own.srv.name === 'hostA' ? 'hostB' : 'hostA');
    assert.equal(t.path, 'lane');
    assert.ok(t.snapshotBytes > 64 * 1024, `a big offer (${t.snapshotBytes} B)`);
    const got: Buffer[] = [];
    let n = 0;
    const all = new Promise<void>((resolve) => {
      conn.on('data', (d: Buffer) => {
        got.push(d);
        n += d.length;
        if (n >= data.length) resolve();
      });
    });
    conn.resume();
    await withTimeout(all, 30_000, `the echo of ${data.length} B (got ${n})`);
    assert.ok(Buffer.concat(got).equals(data), 'byte for byte');
    process.stderr.write(`# big offer: ${t.snapshotBytes} B (snapshot + record), ${buffered} B buffered at the source, offer->answer ${t.shipUs.toFixed(0)} us\n`);
    conn.destroy();
  });

  it('moved over the channel, then straight back through the lane while the old copy waits out its grace', { timeout: 60_000 }, async () => {
    const conn = await connect(cluster);
    const p = pingPong(conn);
    await progress(p, 20);
    const outcomes: string[] = [];
    for (let i = 0; i < scaled(30, 10); i++) {
      const own = await cluster.waitOwner(conn.localPort!);
      assert.ok(own, `round ${i}: some runtime serves the connection`);
      const to = own.srv.name === 'hostA' ? 'hostB' : 'hostA';
      await own.srv.migrator.migrate(own.conn, to, { via: 'channel' });
      const back = await cluster.waitOwner(conn.localPort!, own.srv.name);
      assert.ok(back, `round ${i}: the target serves it`);
      try {
        const t = await back.srv.migrator.migrate(back.conn, own.srv.name); // within the source's 50 ms grace
        outcomes.push(t.path ?? 'channel');
      } catch (err) {
        outcomes.push((err as { code?: string }).code ?? 'error');
      }
      await progress(p, 10);
    }
    assert.equal(p.bad, 0, 'every echo byte-exact and in order');
    process.stderr.write(`# channel then lane back at once: ${outcomes.join(' ')}\n`);
    conn.destroy();
  });

  it('a target whose server takes no migrated connections refuses in its engine; the connection stays', { timeout: 60_000 }, async () => {
    const conn = await connect(cluster);
    const p = pingPong(conn);
    await progress(p, 20);
    const own = await cluster.waitOwner(conn.localPort!);
    assert.ok(own);
    const target = cluster.server(own.srv.name === 'hostA' ? 'hostB' : 'hostA');
    const handlers = target.server.rawListeners('migrated') as ((...a: unknown[]) => void)[];
    target.server.removeAllListeners('migrated');
    await new Promise((r) => setImmediate(r));
    try {
      await assert.rejects(own.srv.migrator.migrate(own.conn, target.name), (e: Error & { code?: string }) => e.code === 'ERR_MIGRATION_REJECTED');
      await progress(p, 30);
      assert.equal(cluster.ownerOf(conn.localPort!)?.srv.name, own.srv.name, 'still served by the source');
    } finally {
      for (const h of handlers) target.server.on('migrated', h);
    }
    await new Promise((r) => setImmediate(r));
    const t = await own.srv.migrator.migrate(own.conn, target.name); // with its handler back, it takes it
    assert.equal(t.path, 'lane');
    await progress(p, 30);
    assert.equal(p.bad, 0);
    conn.destroy();
  });
});

describe('without jsLane', { skip: skip ?? false }, () => {
  let cluster: MemCluster;
  before(async () => {
    cluster = await MemCluster.open({ name: `lanejs0-${process.pid}`, servers: ['hostA', 'hostB'], app: echoResumable(), port: PORT, net: 92 });
  });
  after(async () => {
    await cluster?.close();
  });

  it('connections served in JS take the channel, or the lane when asked (via)', { timeout: 60_000 }, async () => {
    const conn = await connect(cluster);
    const p = pingPong(conn);
    await progress(p, 20);
    const own = cluster.ownerOf(conn.localPort!);
    assert.ok(own);
    const t = await own.srv.migrator.migrate(own.conn, 'hostB');
    assert.equal(t.path, 'channel');
    await progress(p, 20);
    const back = await cluster.waitOwner(conn.localPort!);
    assert.ok(back);
    const t2 = await back.srv.migrator.migrate(back.conn, 'hostA', { via: 'lane' });
    assert.equal(t2.path, 'lane');
    await progress(p, 20);
    assert.equal(p.bad, 0);
    conn.destroy();
  });
});
