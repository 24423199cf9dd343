// (4) ICMP echo, RST for a closed port, graceful close in both directions, flow state via ctl.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runIn } from '../../dataplane/exec.js';
import { addonSkip, cliAsync, hasCommand, netnsSkip } from '../helpers/env.js';
import { runTool, startServe, type Running, useTestbed } from '../helpers/testbed.js';
import { waitFor } from '../helpers/wait.js';

const skip = netnsSkip() ?? addonSkip();

describe('basics against capybara on hostA', { skip: skip ?? false }, () => {
  let echo: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    echo = await startServe('echo', 'hostA', 7, 'interop-basics');
  });
  after(async () => {
    await echo?.stop();
    await teardown?.();
  });

  it('answers ping', async () => {
    const p = await runIn('client', 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.77.1.10'], { timeoutMs: 20_000 });
    assert.equal(p.code, 0, p.stdout + p.stderr);
    assert.match(p.stdout, /3 received/);
  });

  // The handshake as Linux sees it, read from a capture on the client's interface with tshark.
  it('negotiates MSS, window scale, SACK and timestamps with Linux (capture)', { skip: hasCommand('tcpdump') && hasCommand('tshark') ? false : 'tcpdump/tshark missing' }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cpb-cap-'));
    const pcap = join(dir, 'syn.pcap');
    const dump = spawn('ip', ['netns', 'exec', 'client', 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', 'cl0', '-U', '-n', '-w', pcap, 'tcp port 7'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 1000)); // tcpdump needs a moment before it captures
      const r = await runTool('client', ['close', '10.77.1.10', '7'], 20_000);
      assert.equal(r.echoed, 'hello');
      await new Promise((r) => setTimeout(r, 300));
      dump.kill('SIGINT');
      await new Promise((r) => dump.once('exit', r));
      const t = await runIn('client', 'tshark', ['-r', pcap, '-T', 'fields', '-E', 'separator=|', '-e', 'ip.src', '-e', 'tcp.flags.syn', '-e', 'tcp.flags.ack',
        '-e', 'tcp.options.mss_val', '-e', 'tcp.options.wscale.shift', '-e', 'tcp.options.sack_perm', '-e', 'tcp.options.timestamp.tsval', '-e', 'tcp.flags.reset'], { timeoutMs: 20_000 });
      assert.equal(t.code, 0, t.stderr);
      const rows = t.stdout.trim().split('\n').map((l) => l.split('|'));
      const synack = rows.find((c) => c[0] === '10.77.1.10' && c[1] === '1' && c[2] === '1');
      assert.ok(synack, `no SYN-ACK from capybara in:\n${t.stdout}`);
      assert.equal(synack[3], '1460', 'MSS');
      assert.equal(synack[4], '7', 'window scale shift');
      assert.ok(synack[5] !== '', 'SACK permitted');
      assert.ok(Number(synack[6]) > 0, 'timestamp value');
      // Linux answered with timestamps on every later segment: the option was accepted on both sides.
      const later = rows.filter((c) => c[0] === '10.77.0.2' && c[1] === '0');
      assert.ok(later.length >= 3, t.stdout);
      for (const c of later) assert.ok(Number(c[6]) > 0, `client segment without TS: ${c.join('|')}`);
      assert.ok(rows.every((c) => c[7] !== '1'), 'no RST in a graceful exchange');
    } finally {
      dump.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a closed port with RST', async () => {
    const r = await runTool('client', ['probe', '10.77.1.10', '8181'], 20_000);
    assert.equal(r.outcome, 'ECONNREFUSED');
    if (hasCommand('nc')) {
      const nc = await runIn('client', 'nc', ['-z', '-v', '-w', '5', '10.77.1.10', '8181'], { timeoutMs: 20_000 });
      assert.notEqual(nc.code, 0);
      assert.match(nc.stderr + nc.stdout, /refused/i);
    }
  });

  it('graceful close: client half-closes, capybara echoes and closes its side', async () => {
    const r = await runTool('client', ['close', '10.77.1.10', '7'], 20_000);
    assert.equal(r.echoed, 'hello');
    assert.equal(r.endSeen, true);
    assert.equal(r.hadError, false);
    assert.equal(r.error, null);
  });

  it('graceful close: capybara closes first (Connection: close) and ends in TIME_WAIT', async () => {
    await echo?.stop();
    echo = undefined;
    const http = await startServe('http', 'hostA', 80, 'interop-basics-http');
    try {
      // nc keeps its side open until the server's FIN (stdin EOF does not half-close without -N), so
      // capybara is deterministically the first to close; curl may hang up first once it has the body.
      const c = await runIn('client', 'nc', ['-w', '10', '10.77.1.10', '80'], {
        input: 'GET /health HTTP/1.1\r\nHost: capybara\r\nConnection: close\r\n\r\n', timeoutMs: 20_000,
      });
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nok$/);
      // The side that closes first keeps the flow in TIME_WAIT; it shows up in ctl flows.
      let states: string[] = [];
      let last = '';
      await waitFor(async () => {
        const f = await cliAsync(['ctl', '--name', 'interop-basics-http', 'flows', '--json']);
        last = `status ${f.status}: ${f.stdout} ${f.stderr}`;
        states = f.status === 0 ? (JSON.parse(f.stdout) as { state: string }[]).map((x) => x.state) : [];
        return states.some((s) => /TIME.?WAIT/i.test(s));
      }, 10_000, 'a TIME_WAIT flow').catch((e: Error) => {
        throw new Error(`${e.message}; last ctl answer: ${last}`);
      });
      assert.ok(states.some((s) => /TIME.?WAIT/i.test(s)), states.join(','));
    } finally {
      await http.stop();
    }
  });
});
