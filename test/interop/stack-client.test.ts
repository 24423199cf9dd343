// (3) capybara as the client: a Stack in hostA (xdp:a0) fetches 10 MB from a kernel HTTP server in `client`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, netnsSkip } from '../helpers/env.js';
import { runTool, startTool, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip();

describe('capybara client against a kernel server', { skip: skip ?? false }, () => {
  let server: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    server = await startTool('client', ['http-server', '8080']);
  });
  after(async () => {
    await server?.stop();
    await teardown?.();
  });

  it('fetches /bytes/10000000 (twice, keep-alive) intact through the gateway', async () => {
    const h = PLAN.hosts.hostA;
    const r = await runTool(h.ns, ['stack-fetch', h.device, `${h.ip}/${h.prefixLength}`, h.gateway, PLAN.client.ip, '8080', '10000000', '2'], 120_000);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.bytes, 20_000_000);
    assert.deepEqual(r.statuses, [200, 200]);
  });
});
