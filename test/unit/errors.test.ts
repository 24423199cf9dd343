import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CapybaraError, ConfigError, DeviceError, SystemError, deviceOpenError, errnoName, fromAddonError, fromErrno,
} from '../../runtime/errors.js';
import { engineOptions, parseCidr, parseDevice } from '../../runtime/options.js';
import { Stack } from '../../runtime/stack.js';

describe('errno mapping', () => {
  it('names the errno values the engine returns', () => {
    const cases: [number, string][] = [[-11, 'EAGAIN'], [-104, 'ECONNRESET'], [-110, 'ETIMEDOUT'], [-111, 'ECONNREFUSED'],
      [-32, 'EPIPE'], [-107, 'ENOTCONN'], [-98, 'EADDRINUSE'], [-19, 'ENODEV'], [-1, 'EPERM'], [-2, 'ENOENT']];
    for (const [n, name] of cases) {
      assert.equal(errnoName(n), name);
      assert.equal(errnoName(-n), name);
      const e = fromErrno(n, 'read');
      assert.ok(e instanceof SystemError && e instanceof CapybaraError && e instanceof Error);
      assert.equal(e.code, name);
      assert.equal(e.errno, n);
      assert.equal(e.syscall, 'read');
      assert.match(e.message, new RegExp(`^read ${name}`));
    }
    assert.equal(errnoName(-99999), 'EUNKNOWN_99999');
  });

  it('turns addon exceptions into typed errors', () => {
    const e = fromAddonError(Object.assign(new Error('port 80 taken'), { code: 'EADDRINUSE' }), 'listen');
    assert.ok(e instanceof SystemError);
    assert.equal(e.code, 'EADDRINUSE');
    assert.match(e.message, /port 80 taken/);
    const other = fromAddonError(new Error('odd'), 'listen');
    assert.equal(other.code, 'ERR_CAPYBARA_NATIVE');
  });

  it('explains device open failures', () => {
    const nodev = deviceOpenError(Object.assign(new Error('if_nametoindex failed'), { code: 'ENODEV' }), 'xdp:nope0');
    assert.ok(nodev instanceof DeviceError);
    assert.equal(nodev.code, 'ENODEV');
    assert.match(nodev.message, /interface nope0 missing/);
    const perm = deviceOpenError(Object.assign(new Error('bpf'), { code: 'EPERM' }), 'xdp:a0@1');
    assert.equal(perm.code, 'EPERM');
    assert.match(perm.message, /not root for xdp/);
  });
});

describe('option validation', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ address: '10.0.0.1/24' }, /device is required/],
    [{ device: 'eth0', address: '10.0.0.1/24' }, /no scheme/],
    [{ device: 'tap:x', address: '10.0.0.1/24' }, /unknown scheme "tap"/],
    [{ device: 'xdp:', address: '10.0.0.1/24' }, /bad interface name/],
    [{ device: 'xdp:eth0@x', address: '10.0.0.1/24' }, /bad queue/],
    [{ device: 'mem:a', address: '10.0.0.1' }, /not an IPv4 CIDR/],
    [{ device: 'mem:a', address: '10.0.0.300/24' }, /not an IPv4 CIDR/],
    [{ device: 'mem:a', address: '10.0.0.1/33' }, /prefix length/],
    [{ device: 'mem:a', address: '10.0.0.1/24', gateway: '10.0.1.1' }, /not on-link/],
    [{ device: 'mem:a', address: '10.0.0.1/24', mac: '01:00:00:00:00:01' }, /multicast/],
    [{ device: 'mem:a', address: '10.0.0.1/24', mac: 'zz' }, /not a MAC/],
    [{ device: 'mem:a', address: '10.0.0.1/24', mss: 10 }, /mss must be/],
    [{ device: 'mem:a', address: '10.0.0.1/24', cc: 'bbr' }, /cc must be/],
  ];
  for (const [opts, re] of bad) {
    it(`rejects ${JSON.stringify(opts)}`, () => {
      assert.throws(() => engineOptions(opts), (e: unknown) => e instanceof ConfigError && e.code === 'ERR_CAPYBARA_INVALID_CONFIG' && re.test(e.message));
    });
  }

  it('Stack.open rejects bad options before touching the addon', async () => {
    await assert.rejects(Stack.open({ device: 'bogus:x', address: '10.0.0.1/24' }), { code: 'ERR_CAPYBARA_INVALID_CONFIG' });
    await assert.rejects(Stack.open({ device: 'mem:x', address: 'nope' }), { code: 'ERR_CAPYBARA_INVALID_CONFIG' });
  });

  it('fills defaults and derives a MAC for mem: wires', () => {
    const o = engineOptions({ device: 'mem:w?loss=0.05&seed=7', address: '10.99.0.2/24', gateway: '10.99.0.1' });
    assert.equal(o.address, '10.99.0.2');
    assert.equal(o.prefixLength, 24);
    assert.equal(o.gateway, '10.99.0.1');
    assert.equal(o.mac, '02:00:0a:63:00:02');
    assert.equal(o.mss, 1460);
    assert.equal(o.cc, 'cubic');
    assert.equal(o.timestamps, true);
    assert.equal(engineOptions({ device: 'xdp:a0', address: '10.0.0.1/24' }).mac, undefined);
  });

  it('parses device URIs and CIDRs', () => {
    assert.deepEqual(parseDevice('xdp:a0@3'), { scheme: 'xdp', uri: 'xdp:a0@3', name: 'a0', queue: 3 });
    assert.deepEqual(parseDevice('mem:demo?loss=0.05&dup=0.02').params, { loss: '0.05', dup: '0.02' });
    assert.deepEqual(parseCidr('10.77.1.10/24'), { address: '10.77.1.10', prefixLength: 24 });
  });
});
