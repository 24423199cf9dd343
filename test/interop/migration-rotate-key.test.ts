// Cluster key rotation (`capybara ctl rotate-key`, Migrator.rotateKey) on the in-memory switch: three
// runtimes share a key and have open channels; hostA and hostB rotate through their admin handlers
// (the path the CLI takes). Their channel switches in-band and keeps carrying migrations. hostC, which
// has not rotated, is cut off after the grace period and cannot open a new channel with the old key
// (refused, counted), and a migration it tries fails safe: the connection stays and keeps working on
// hostC. Once hostC rotates too, it migrates again. An echo session checks every byte throughout.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { stackAdminHandlers } from '../../runtime/admin.js';
import { echoResumable } from '../../runtime/apps/echo.js';
import type { Connection } from '../../runtime/connection.js';
import { MemCluster, type MemServer } from '../../runtime/mem-cluster.js';
import { addonSkip } from '../helpers/env.js';
import { delay, waitFor, withTimeout } from '../helpers/wait.js';

const skip = addonSkip();

async function echoCheck(c: Connection, n = 20_000): Promise<void> {
  const data = randomBytes(n);
  const got: Buffer[] = [];
  let len = 0;
  const done = new Promise<void>((resolve) => {
    const on = (d: Buffer) => {
      got.push(d);
      len += d.length;
      if (len >= n) {
        c.off('data', on);
        resolve();
      }
    };
    c.on('data', on);
  });
  c.write(data);
  await withTimeout(done, 10_000, 'echo');
  assert.ok(Buffer.concat(got).equals(data), 'echoed bytes intact');
}

async function rotate(srv: MemServer, key: Buffer, graceMs: number, epoch?: number): Promise<{ keyEpoch: number; channels: number }> {
  const h = stackAdminHandlers(srv.stack, { name: srv.name })['rotate-key']!;
  return (await h({ cmd: 'rotate-key', key: key.toString('base64'), graceMs, epoch })) as { keyEpoch: number; channels: number };
}

describe('cluster key rotation', { skip: skip ?? false }, () => {
  let cluster: MemCluster;
  before(async () => {
    cluster = await MemCluster.open({ name: `rotate-${process.pid}`, servers: ['hostA', 'hostB', 'hostC'], app: echoResumable(), port: 7, net: 96 });
  });
  after(async () => {
    await cluster?.close();
  });

  it('rotated runtimes keep migrating; an unrotated one is refused, fails safe, and rejoins after rotating', { timeout: 60_000 }, async () => {
    const client = cluster.client.connect(7, cluster.vip);
    await new Promise<void>((resolve, reject) => { client.once('connect', resolve); client.once('error', reject); });
    const port = client.localPort!;
    await echoCheck(client);
    const move = async (to: string) => {
      const own = await cluster.waitOwner(port);
      assert.ok(own, 'someone owns the connection');
      return own.srv.migrator.migrate(own.conn, to);
    };
    // Channels under the first key: A-B and A-C (and the flow ends up on A).
    await move('hostB');
    await echoCheck(client);
    await move('hostA');
    await move('hostC');
    await move('hostA');
    await echoCheck(client);

    const key2 = randomBytes(32);
    const a = await rotate(cluster.server('hostA'), key2, 1500);
    assert.equal(a.keyEpoch, 1);
    assert.equal(a.channels, 2, 'A switches its channels to B and C in-band');
    const b = await rotate(cluster.server('hostB'), key2, 1500);
    assert.equal(b.keyEpoch, 1);
    await move('hostB'); // over the rotated A-B channel
    await echoCheck(client);
    await move('hostA');
    await echoCheck(client);

    // hostC did not rotate: after the grace period A drops its channel to C, and a new one is refused:
    // A's HELLO proves the new key, C knows the old one. The migration fails before anything is frozen.
    await delay(2500);
    const c = cluster.server('hostC');
    const refused0 = c.migrator.stats.channelsRefused;
    await assert.rejects(move('hostC'));
    assert.equal((await cluster.waitOwner(port))?.srv.name, 'hostA', 'the flow stayed on hostA');
    // A can give up first (it fails to open C's answer to its HELLO, or its own wait ends under load) while
    // C's refusal is still on its way: C counts it when it gets there.
    await waitFor(() => c.migrator.stats.channelsRefused > refused0, 10_000, 'C counted the refused channel');
    await echoCheck(client);
    // A peer holding a wrong key (same epoch) is refused the same way.
    await c.migrator.rotateKey(randomBytes(32), 1);
    const refused1 = c.migrator.stats.channelsRefused;
    await assert.rejects(move('hostC'));
    await waitFor(() => c.migrator.stats.channelsRefused > refused1, 10_000, 'wrong key refused and counted');
    assert.equal((await cluster.waitOwner(port))?.srv.name, 'hostA');
    await echoCheck(client);

    // The operator rotates every runtime to a new key (a later epoch everywhere); C rejoins.
    const key3 = randomBytes(32);
    for (const s of ['hostA', 'hostB', 'hostC']) assert.equal((await rotate(cluster.server(s), key3, 1500, 2)).keyEpoch, 2);
    await move('hostC');
    await echoCheck(client);
    await move('hostA');
    await echoCheck(client);
    client.destroy();
  });
});
