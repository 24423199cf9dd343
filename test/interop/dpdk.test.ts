// The foundation's interop checks with hostA's stack on DPDK instead of our AF_XDP backend: curl keep-alive
// with sha256, a 50 MB echo through nc, sockperf ping-pong — once on net_af_packet, once on net_af_xdp —
// and the failures an operator meets first (no such device, a bad EAL argument, af_xdp without hugepages):
// a clear message, exit status 1, no crash, nothing but JSON on stdout.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runIn } from '../../dataplane/exec.js';
import { hugetlbfsMounts, reserveHugepages } from '../../dataplane/dpdk-setup.js';
import type { HostBackend } from '../../dataplane/dpdk-testbed.js';
import { patternSha256 } from '../../runtime/apps/pattern.js';
import { curlFetch } from '../../runtime/demo.js';
import { cliAsync, hasCommand } from '../helpers/env.js';
import { dpdkSkip, freeHugepages, totalHugepages, useDpdkTestbed } from '../helpers/dpdk.js';
import { startServe } from '../helpers/testbed.js';

const skip = dpdkSkip();
const HOST_IP = '10.77.1.10';
const MB50 = 50 * 1024 * 1024;
const NEED_PAGES = 64;

function suite(backend: HostBackend): void {
  describe(`hostA on ${backend === 'dpdk' ? 'dpdk:net_af_packet' : 'dpdk:net_af_xdp'}`, { skip: skip ?? false }, () => {
    let teardown: (() => Promise<void>) | undefined;
    let restorePages: number | undefined;
    const dir = mkdtempSync(join(tmpdir(), 'cpb-dpdk-'));
    before(async () => {
      if (backend === 'dpdk-af_xdp' && (freeHugepages() < NEED_PAGES || hugetlbfsMounts().length === 0)) {
        // af_xdp's UMEM lives in hugepages: reserve some for this suite (and give them back after).
        restorePages = totalHugepages();
        await reserveHugepages(restorePages + NEED_PAGES);
      }
      teardown = await useDpdkTestbed({ hostA: backend, hostB: 'xdp' });
    });
    after(async () => {
      await teardown?.();
      if (restorePages !== undefined) await reserveHugepages(restorePages).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    });

    it('status names the DPDK device', async () => {
      const s = await cliAsync(['testbed', 'status', '--json']);
      assert.equal(s.status, 0, s.stderr);
      const dev = (JSON.parse(s.stdout) as { hosts: { hostA: { device: string } } }).hosts.hostA.device;
      assert.match(dev, backend === 'dpdk' ? /^dpdk:net_af_packet\d,iface=a0/ : /^dpdk:net_af_xdp\d,iface=a0/);
    });

    it('curl: 5 x GET /bytes/10000000 on one keep-alive connection, sha256 intact', { skip: hasCommand('curl') ? false : 'curl missing' }, async () => {
      const server = await startServe('http', 'hostA', 80, `dpdk-http-${backend}`);
      try {
        assert.match(String(server.info.device), /^dpdk:/);
        const n = 10_000_000;
        const r = await curlFetch(Array.from({ length: 5 }, () => `http://${HOST_IP}/bytes/${n}`), 120_000);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(r.statuses, [200, 200, 200, 200, 200]);
        assert.equal(r.connects, 1, 'all requests on one connection');
        assert.equal(r.bytes, 5 * n);
        assert.equal(r.sha256, patternSha256(n, 5));
        const st = await cliAsync(['ctl', '--name', `dpdk-http-${backend}`, 'stats', '--json']);
        const dev = (JSON.parse(st.stdout) as { dev: Record<string, number> }).dev;
        assert.equal(dev.linkUp, 1, 'link status from rte_eth_link_get');
        assert.ok(dev.portTxPackets! > 0 && dev.portRxPackets! > 0, `port counters from rte_eth_stats: ${st.stdout}`);
      } finally {
        await server.stop();
      }
    });

    it('nc: 50 MB through echo comes back byte-exact', { skip: hasCommand('nc') ? false : 'nc missing' }, async () => {
      const file = join(dir, 'in.bin');
      const data = randomBytes(MB50);
      writeFileSync(file, data);
      const server = await startServe('echo', 'hostA', 7, `dpdk-echo-${backend}`);
      try {
        const r = await runIn('client', 'sh', ['-c', `nc -N -w 20 ${HOST_IP} 7 < ${file} | sha256sum`], { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.split(' ')[0], createHash('sha256').update(data).digest('hex'));
      } finally {
        await server.stop();
      }
    });

    it('sockperf ping-pong reports a latency', { skip: hasCommand('sockperf') ? false : 'sockperf missing' }, async () => {
      const server = await startServe('sockperf', 'hostA', 11111, `dpdk-sockperf-${backend}`);
      try {
        const r = await runIn('client', 'sockperf', ['ping-pong', '--tcp', '-i', HOST_IP, '-p', '11111', '-t', '3', '-m', '64'], { timeoutMs: 30_000 });
        const text = (r.stdout + r.stderr).replace(/\x1b\[[0-9;]*m/g, '');
        assert.equal(r.code, 0, text);
        const m = /Summary: Latency is ([\d.]+) usec/.exec(text);
        assert.ok(m && Number(m[1]) > 0, text);
        process.stderr.write(`# sockperf over ${backend}: ${m[1]} usec\n`);
      } finally {
        await server.stop();
      }
    });
  });
}

suite('dpdk');
suite('dpdk-af_xdp');

describe('dpdk: failures are clear, exit 1, no crash', { skip: skip ?? false }, () => {
  async function serveFails(device: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
    const r = await cliAsync(['serve', 'echo', '--device', device, '--address', '10.99.7.10/24', '--name', 'dpdk-fail', '--json'], env, 60_000);
    assert.equal(r.status, 1, `exit status (signal means a crash): ${r.status} ${r.stderr}`);
    const j = JSON.parse(r.stdout.trim()) as { error: { code: string; message: string } }; // stdout stays JSON
    return j.error.message;
  }

  it('a device that does not exist', async () => {
    const msg = await serveFails('dpdk:net_af_packet0,iface=cpbnosuch0');
    assert.match(msg, /cannot attach "net_af_packet0,iface=cpbnosuch0".*No such device/);
  });

  it('a bad EAL argument', async () => {
    const msg = await serveFails('dpdk:net_af_packet0,iface=lo?eal=--no-such-eal-option');
    assert.match(msg, /EAL initialisation failed.*--no-such-eal-option/);
  });

  it('net_af_xdp without hugepages', async () => {
    const msg = await serveFails('dpdk:net_af_xdp0,iface=lo', { CAPYBARA_DPDK_NO_HUGE: '1' });
    assert.match(msg, /net_af_xdp needs hugepages.*capybara dpdk setup --hugepages/);
  });

  it('a malformed URI option', async () => {
    const msg = await serveFails('dpdk:net_af_packet0,iface=lo?mbufs=lots');
    assert.match(msg, /bad option "mbufs=lots"/);
  });
});
