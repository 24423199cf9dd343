// The testbed's per-host backend choice: parsing --backend and the device URIs it gives each host.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deviceFor, parseBackendSpec } from '../../dataplane/dpdk-testbed.js';
import { normalizePci } from '../../dataplane/dpdk-setup.js';

const HOSTS = ['hostA', 'hostB'] as const;

describe('testbed backends', () => {
  it('one backend for every host, or per host (unnamed hosts stay on xdp)', () => {
    assert.deepEqual(parseBackendSpec('dpdk', HOSTS), { hostA: 'dpdk', hostB: 'dpdk' });
    assert.deepEqual(parseBackendSpec('xdp', HOSTS), { hostA: 'xdp', hostB: 'xdp' });
    assert.deepEqual(parseBackendSpec('hostA=dpdk-af_xdp', HOSTS), { hostA: 'dpdk-af_xdp', hostB: 'xdp' });
    assert.deepEqual(parseBackendSpec('hostA=xdp,hostB=dpdk', HOSTS), { hostA: 'xdp', hostB: 'dpdk' });
  });

  it('rejects unknown backends and hosts', () => {
    for (const bad of ['vpp', 'hostC=dpdk', 'hostA=vpp', 'hostA', '=dpdk', '']) {
      assert.throws(() => parseBackendSpec(bad, HOSTS), { code: 'ERR_CAPYBARA_INVALID_CONFIG' }, bad);
    }
  });

  it('device URIs name the host interface, with vdev names kept apart', () => {
    assert.equal(deviceFor('xdp', 'a0', 0), 'xdp:a0');
    assert.match(deviceFor('dpdk', 'a0', 0), /^dpdk:net_af_packet0,iface=a0(,|$)/);
    assert.equal(deviceFor('dpdk-af_xdp', 'b0', 1), 'dpdk:net_af_xdp1,iface=b0');
  });

  it('PCI addresses for vfio binding are checked and normalised', () => {
    assert.equal(normalizePci('3b:00.0'), '0000:3b:00.0');
    assert.equal(normalizePci('0000:3B:00.1'), '0000:3b:00.1');
    for (const bad of ['3b:00', 'eth0', '0000:3b:00.9', '../../x']) assert.throws(() => normalizePci(bad), { code: 'ERR_CAPYBARA_INVALID_CONFIG' }, bad);
  });
});
