// (2) A kernel TCP client (Node net, and nc) in `client` streams 50 MB to capybara discard and echo on hostA.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runIn } from '../../dataplane/exec.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { runTool, startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip();
const MB50 = 50 * 1024 * 1024;

describe('bulk streams from a kernel client over xdp', { skip: skip ?? false }, () => {
  const servers: Running[] = [];
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    // One runtime, two servers would need a second app per process; run discard and echo one at a
    // time on the same device instead (only one AF_XDP socket per queue).
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await teardown?.();
  });

  it('50 MB to discard: all accepted, nothing comes back', async () => {
    const s = await startServe('discard', 'hostA', 9, 'interop-discard');
    servers.push(s);
    try {
      const r = await runTool('client', ['send', '10.77.1.10', '9', String(MB50)], 180_000);
      assert.equal(r.error, null);
      assert.equal(r.sent, MB50);
      assert.equal(r.received, 0);
      assert.equal(r.ok, true);
      if (hasCommand('nc')) {
        // nc sends 8 MB of zeros then half-closes (-N); discard answers FIN with FIN so nc exits 0.
        const nc = await runIn('client', 'sh', ['-c', 'head -c 8388608 /dev/zero | nc -N -w 20 10.77.1.10 9'], { timeoutMs: 60_000 });
        assert.equal(nc.code, 0, nc.stderr);
      }
    } finally {
      await s.stop();
    }
  });

  it('50 MB to echo: byte-exact round trip', async () => {
    const s = await startServe('echo', 'hostA', 7, 'interop-echo');
    servers.push(s);
    try {
      const r = await runTool('client', ['send', '10.77.1.10', '7', String(MB50), '--echo'], 240_000);
      assert.equal(r.error, null);
      assert.equal(r.sent, MB50);
      assert.equal(r.received, MB50);
      assert.equal(r.firstMismatch, -1);
      assert.equal(r.ok, true);
    } finally {
      await s.stop();
    }
  });
});
