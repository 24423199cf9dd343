// Real network namespaces: needs root. Leaves nothing behind (after() removes the testbed).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { run, runIn } from '../../dataplane/exec.js';
import { NAMESPACES, PLAN, down, listNamespaces, status, up } from '../../dataplane/testbed.js';
import { cli, netnsSkip } from '../helpers/env.js';

// A testbed that is already up belongs to someone (a developer, a running demo): leave it alone.
const skip = netnsSkip() ?? ((await status()).up ? 'the testbed is up already (in use): not tearing it down' : undefined);

describe('netns testbed', { skip: skip ?? false }, () => {
  after(async () => {
    await down().catch(() => {});
  });

  it('comes up with the documented address plan', async () => {
    const s = await up();
    assert.equal(s.up, true);
    const present = await listNamespaces();
    for (const ns of NAMESPACES) assert.ok(present.has(ns), ns);
    const addr = async (ns: string, dev: string) => JSON.parse((await runIn(ns, 'ip', ['-j', '-4', 'addr', 'show', 'dev', dev])).stdout)[0];
    const cl = await addr('client', 'cl0');
    assert.equal(cl.addr_info[0].local, '10.77.0.2');
    assert.equal(cl.mtu, 1500);
    assert.equal((await addr('hostA', 'a0')).addr_info[0].local, '10.77.1.2');
    assert.equal((await addr('hostB', 'b0')).addr_info[0].local, '10.77.2.2');
    for (const [dev, ip] of [['lb-cl', '10.77.0.1'], ['lb-a', '10.77.1.1'], ['lb-b', '10.77.2.1']]) {
      assert.equal((await addr('lb', dev!)).addr_info[0].local, ip);
    }
    const lo = JSON.parse((await runIn('hostA', 'ip', ['-j', 'link', 'show', 'dev', 'lo'])).stdout)[0];
    assert.ok(lo.flags.includes('UP'));
  });

  it('routes, forwarding and offloads are set', async () => {
    assert.equal((await runIn('lb', 'sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1');
    assert.equal((await runIn('lb', 'sysctl', ['-n', 'net.ipv4.conf.lb-a.rp_filter'])).stdout.trim(), '0');
    const routes = (await runIn('client', 'ip', ['-4', 'route'])).stdout;
    assert.match(routes, /default via 10\.77\.0\.1/);
    assert.match(routes, /10\.77\.1\.0\/24 via 10\.77\.0\.1/);
    assert.match(routes, /10\.77\.2\.0\/24 via 10\.77\.0\.1/);
    assert.match((await runIn('hostB', 'ip', ['-4', 'route'])).stdout, /default via 10\.77\.2\.1/);
    for (const [ns, dev] of [['client', 'cl0'], ['lb', 'lb-a'], ['hostA', 'a0'], ['hostB', 'b0']]) {
      const k = (await runIn(ns!, 'ethtool', ['-k', dev!])).stdout;
      for (const f of ['tx-checksumming', 'tcp-segmentation-offload', 'generic-segmentation-offload', 'generic-receive-offload']) {
        assert.match(k, new RegExp(`^${f}: off`, 'm'), `${ns}/${dev} ${f}`);
      }
    }
    // The kernel path works end to end: client -> lb -> hostA/hostB kernel addresses.
    for (const h of Object.values(PLAN.hosts)) {
      const p = await runIn('client', 'ping', ['-c', '1', '-W', '2', h.kernelIp], { timeoutMs: 10_000 });
      assert.equal(p.code, 0, `ping ${h.kernelIp}: ${p.stdout}${p.stderr}`);
    }
  });

  it('up is idempotent and repairs a half-made testbed', async () => {
    assert.equal((await up()).up, true);
    await run('ip', ['netns', 'del', 'hostB']);
    assert.equal((await status()).up, false);
    const s = await up();
    assert.equal(s.up, true);
    const p = await runIn('client', 'ping', ['-c', '1', '-W', '2', '10.77.2.2'], { timeoutMs: 10_000 });
    assert.equal(p.code, 0);
  });

  it('status --json and down through the CLI', () => {
    const st = cli(['testbed', 'status', '--json']);
    assert.equal(st.status, 0, st.stderr);
    const j = JSON.parse(st.stdout);
    assert.equal(j.up, true);
    assert.deepEqual(j.hosts.hostA, { ns: 'hostA', ip: '10.77.1.10', iface: 'a0', device: 'xdp:a0', gateway: '10.77.1.1', kernelIp: '10.77.1.2', address: '10.77.1.10/24' });
    const d = cli(['testbed', 'down', '--json']);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(JSON.parse(d.stdout).up, false);
  });

  it('down removes every namespace', async () => {
    await down();
    const present = await listNamespaces();
    for (const ns of NAMESPACES) assert.equal(present.has(ns), false, ns);
    assert.equal((await status()).up, false);
  });
});
