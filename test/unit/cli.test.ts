import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandHelp, main, parseCommand, type Command, type Io } from '../../runtime/cli.js';
import { UsageError } from '../../runtime/errors.js';
import { cli } from '../helpers/env.js';

function capture(): Io & { stdout: string; stderr: string } {
  const io = { stdout: '', stderr: '', out(t: string) { io.stdout += `${t}\n`; }, err(t: string) { io.stderr += `${t}\n`; } };
  return io;
}

describe('capybara CLI', () => {
  it('bench names its suites and refuses unknown ones with exit 2', () => {
    const h = cli(['bench', '--help']);
    assert.equal(h.status, 0);
    for (const s of ['micro', 'rtt', 'throughput', 'cps', 'http', 'migration']) assert.match(h.stdout, new RegExp(`^  ${s}\\s`, 'm'));
    const bad = cli(['bench', 'warp-speed']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown suite "warp-speed"/);
  });

  it('top-level help lists the commands', () => {
    const r = cli(['--help']);
    assert.equal(r.status, 0);
    for (const c of ['demo', 'testbed', 'serve', 'ctl', 'bench']) assert.match(r.stdout, new RegExp(`^  ${c}\\s`, 'm'));
    const none = cli([]);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /Usage: capybara <command>/);
  });

  for (const cmd of ['demo', 'testbed', 'serve', 'ctl']) {
    it(`${cmd} --help`, async () => {
      const io = capture();
      assert.equal(await main([cmd, '--help'], io), 0);
      assert.match(io.stdout, new RegExp(`^Usage: capybara ${cmd}`));
      assert.match(io.stdout, /--json/);
      assert.equal(io.stderr, '');
    });
  }

  it('wrong arguments exit 2 with a message on stderr', async () => {
    const cases: [string[], RegExp][] = [
      [['frobnicate'], /unknown command "frobnicate"/],
      [['serve'], /missing app/],
      [['serve', 'gopher'], /unknown app "gopher"/],
      [['serve', 'http', '--port', '70000', '--device', 'mem:x', '--address', '10.0.0.1/24'], /--port must be an integer/],
      [['serve', 'http', '--on', 'hostZ'], /--on must be one of hostA, hostB/],
      [['serve', 'http', '--on', 'hostA', '--device', 'xdp:a0'], /give one or the other/],
      [['serve', 'http', '--address', '10.0.0.1/24'], /--device is required/],
      [['serve', 'http', '--wat'], /Unknown option '--wat'/],
      [['testbed'], /missing action/],
      [['testbed', 'sideways'], /unknown action "sideways"/],
      [['testbed', 'status', '--backend', 'vpp'], /--backend must be xdp or dpdk/],
      [['ctl', 'stats', '--on', 'hostA', '--name', 'x'], /--on or --name, not both/],
      [['ctl', 'dance'], /unknown request "dance"/],
      [['demo', 'extra'], /unexpected argument "extra"/],
    ];
    for (const [argv, re] of cases) {
      const io = capture();
      assert.equal(await main(argv, io), 2, argv.join(' '));
      assert.match(io.stderr, re, argv.join(' '));
      assert.equal(io.stdout, '');
    }
    const r = cli(['serve', 'gopher']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /Usage: capybara serve/);
  });

  it('runtime failures exit 1 (and --json still prints one JSON document)', async () => {
    const io = capture();
    const code = await main(['serve', 'http', '--device', 'bogus:x', '--address', '10.0.0.1/24', '--json'], io);
    assert.equal(code, 1);
    assert.equal(JSON.parse(io.stdout).error.code, 'ERR_CAPYBARA_INVALID_CONFIG');
    assert.match(io.stderr, /unknown scheme "bogus"/);
  });

  it('parses options strictly', () => {
    const cmd: Command = { name: 't', summary: 's', usage: 'capybara t', help: 'h', options: { port: { type: 'string' } }, run: async () => 0 };
    const p = parseCommand(cmd, ['x', '--port', '8', '--json']);
    assert.deepEqual(p.positionals, ['x']);
    assert.deepEqual({ ...p.values }, { port: '8', json: true });
    assert.throws(() => parseCommand(cmd, ['--nope']), UsageError);
    assert.throws(() => parseCommand(cmd, ['--port']), UsageError);
    assert.match(commandHelp(cmd), /^Usage: capybara t\n/);
  });

  it('testbed status --json has the documented keys', () => {
    const r = cli(['testbed', 'status', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.vip, '10.77.9.1');
    assert.deepEqual(s.client, { ns: 'client', ip: '10.77.0.2', iface: 'cl0', gateway: '10.77.0.1' });
    assert.deepEqual(Object.keys(s.hosts), ['hostA', 'hostB']);
    assert.equal(s.hosts.hostA.device, 'xdp:a0');
    assert.equal(s.hosts.hostB.ip, '10.77.2.10');
    assert.equal(s.hosts.hostB.kernelIp, '10.77.2.2');
    assert.equal(typeof s.up, 'boolean');
  });
});
