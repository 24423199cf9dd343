// (5) sockperf ping-pong from `client` against capybara (sockperf responder app) reports a latency.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runIn } from '../../dataplane/exec.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('sockperf') ? undefined : 'sockperf not installed');

describe('sockperf ping-pong over xdp', { skip: skip ?? false }, () => {
  let server: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    server = await startServe('sockperf', 'hostA', 11111, 'interop-sockperf');
  });
  after(async () => {
    await server?.stop();
    await teardown?.();
  });

  it('reports a latency', async () => {
    const r = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', '10.77.1.10', '-p', '11111', '-t', '3', '-m', '64'], { timeoutMs: 30_000 });
    const outText = r.stdout + r.stderr;
    assert.equal(r.code, 0, outText);
    const m = /Summary: Latency is ([\d.]+) usec/.exec(outText);
    assert.ok(m, outText);
    assert.ok(Number(m[1]) > 0);
    const obs = /Total (\d+) observations/.exec(outText.replace(/\x1b\[[0-9;]*m/g, ''));
    assert.ok(obs && Number(obs[1]) > 0, 'sockperf saw replies');
  });
});
