// Native apps (native/apps/): `serve sockperf|echo --native --on hostA` answers on the engine thread.
// sockperf ping-pong from `client` reports a latency; kernel clients (Node net, nc) get 10 MB echoed
// byte-exact; a bad sockperf frame resets only its own connection; the admin socket still answers.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runIn } from '../../dataplane/exec.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { runTool, startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip();
const MB10 = 10 * 1024 * 1024;
const IP = '10.77.1.10';

describe('native apps on the engine thread over xdp', { skip: skip ?? false }, () => {
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
  });
  after(async () => {
    await teardown?.();
  });

  it('sockperf ping-pong against serve sockperf --native reports a latency', { skip: hasCommand('sockperf') ? false : 'sockperf not installed' }, async () => {
    const s: Running = await startServe('sockperf', 'hostA', 11112, 'interop-native-sockperf', 30_000, ['--native']);
    try {
      assert.equal(s.info.native, true);
      const r = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', IP, '-p', '11112', '-t', '3', '-m', '64'], { timeoutMs: 30_000 });
      const outText = (r.stdout + r.stderr).replace(/\x1b\[[0-9;]*m/g, '');
      assert.equal(r.code, 0, outText);
      const m = /Summary: Latency is ([\d.]+) usec/.exec(outText);
      assert.ok(m, outText);
      assert.ok(Number(m[1]) > 0);
      const obs = /Total (\d+) observations/.exec(outText);
      assert.ok(obs && Number(obs[1]) > 0, 'sockperf saw replies');
      // 1 KB messages span several reads on both sides: the responder's framing is per byte stream.
      const big = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', IP, '-p', '11112', '-t', '2', '-m', '1024'], { timeoutMs: 30_000 });
      assert.equal(big.code, 0, big.stdout + big.stderr);
      assert.match((big.stdout + big.stderr).replace(/\x1b\[[0-9;]*m/g, ''), /Summary: Latency is [\d.]+ usec/);
    } finally {
      await s.stop();
    }
  });

  it('a bad sockperf frame resets that connection only', async () => {
    const s = await startServe('sockperf', 'hostA', 11113, 'interop-native-badframe', 30_000, ['--native']);
    try {
      // A 14-byte header claiming a total length of 5: the C responder must reset, like the JS one destroys.
      const script = `
        const net = require('node:net');
        const c = net.connect(11113, '${IP}', () => {
          const b = Buffer.alloc(14); b.writeUInt16BE(3, 8); b.writeUInt32BE(5, 10); c.write(b);
        });
        c.on('error', (e) => { console.log(e.code); process.exit(0); });
        c.on('close', () => { console.log('closed'); process.exit(0); });
        setTimeout(() => { console.log('timeout'); process.exit(1); }, 5000);`;
      const r = await runIn('client', process.execPath, ['-e', script], { timeoutMs: 15_000 });
      assert.equal(r.stdout.trim(), 'ECONNRESET', r.stderr);
      // The server is still there for the next client.
      if (hasCommand('sockperf')) {
        const ok = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', IP, '-p', '11113', '-t', '1', '-m', '64'], { timeoutMs: 30_000 });
        assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      }
    } finally {
      await s.stop();
    }
  });

  it('10 MB to serve echo --native: byte-exact round trip (Node net and nc)', async () => {
    const s = await startServe('echo', 'hostA', 7, 'interop-native-echo', 30_000, ['--native']);
    try {
      const r = await runTool('client', ['send', IP, '7', String(MB10), '--echo'], 120_000);
      assert.equal(r.error, null);
      assert.equal(r.sent, MB10);
      assert.equal(r.received, MB10);
      assert.equal(r.firstMismatch, -1);
      assert.equal(r.ok, true);
      if (hasCommand('nc')) {
        // nc sends 10 MB of random bytes, half-closes (-N) and prints what comes back; the
        // native echo closes after the last byte, so nc exits and both digests must match.
        const sh = `f=/tmp/cpb-native-echo.$$; head -c ${MB10} /dev/urandom > $f && ` +
          `nc -N -w 20 ${IP} 7 < $f | sha256sum && sha256sum < $f; rc=$?; rm -f $f; exit $rc`;
        const nc = await runIn('client', 'sh', ['-c', sh], { timeoutMs: 90_000 });
        assert.equal(nc.code, 0, nc.stderr);
        const sums = nc.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0]);
        assert.equal(sums.length, 2, nc.stdout);
        assert.equal(sums[0], sums[1], 'echoed bytes differ from what was sent');
      }
    } finally {
      await s.stop();
    }
  });
});
