// (1) The kernel's curl in `client` fetches from capybara's http app on hostA over AF_XDP.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { patternSha256 } from '../../runtime/apps/pattern.js';
import { curlFetch } from '../../runtime/demo.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('curl') ? undefined : 'curl not installed');

describe('curl against capybara http over xdp', { skip: skip ?? false }, () => {
  let server: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    server = await startServe('http', 'hostA', 80, 'interop-http');
  });
  after(async () => {
    await server?.stop();
    await teardown?.();
  });

  it('GET /health', async () => {
    const r = await curlFetch(['http://10.77.1.10/health'], 20_000);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.statuses, [200]);
    assert.equal(r.bytes, 2);
  });

  it('20 x GET /bytes/10000000 over one keep-alive connection, sha256 intact', async () => {
    const n = 10_000_000;
    const urls = Array.from({ length: 20 }, () => `http://10.77.1.10/bytes/${n}`);
    const r = await curlFetch(urls, 300_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.statuses.length, 20);
    assert.ok(r.statuses.every((s) => s === 200), r.statuses.join(','));
    assert.equal(r.connects, 1, 'all requests on one connection');
    assert.equal(r.bytes, 20 * n);
    assert.equal(r.sha256, patternSha256(n, 20));
  });
});
