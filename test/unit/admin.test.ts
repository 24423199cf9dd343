import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AdminServer, adminRequest, adminSocketPath } from '../../runtime/admin.js';
import { cliAsync } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';

describe('admin endpoint', () => {
  let dir: string;
  let admin: AdminServer;
  let calls = 0;
  const stats = { tcp: { segsIn: 10, segsOut: 12 }, ip: { framesIn: 3 }, dev: { rxFrames: 3 }, arena: { slots: 4, slotsUsed: 1 } };
  const flows = [{ id: 7, state: 'ESTABLISHED', localAddress: '10.0.0.1', localPort: 80, remoteAddress: '10.0.0.2', remotePort: 40000,
    bytesIn: 5, bytesOut: 6, cwnd: 14600, srttUs: 100, retransmits: 0, unackedBytes: 0, readableBytes: 0 }];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'capybara-admin-'));
    admin = await AdminServer.start({
      name: 'unit', dir, handlers: {
        stats: () => { calls++; return stats; },
        flows: async () => flows,
        boom: () => { throw new Error('kaput'); },
      },
    });
  });
  after(async () => {
    await admin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers JSON-lines requests', async () => {
    assert.equal(admin.path, join(dir, 'unit.sock'));
    assert.deepEqual(await adminRequest({ name: 'unit', dir }, { cmd: 'stats' }), stats);
    assert.deepEqual(await adminRequest({ path: admin.path }, { cmd: 'flows' }), flows);
    assert.deepEqual(await adminRequest({ path: admin.path }, { cmd: 'help' }), ['boom', 'flows', 'help', 'stats']);
    assert.equal(calls, 1);
  });

  it('reports unknown commands and handler failures with codes', async () => {
    await assert.rejects(adminRequest({ path: admin.path }, { cmd: 'nope' }), { code: 'ERR_CAPYBARA_ADMIN_UNKNOWN_CMD' });
    await assert.rejects(adminRequest({ path: admin.path }, { cmd: 'boom' }), { code: 'ERR_CAPYBARA_ADMIN_FAILED', message: 'kaput' });
    await assert.rejects(adminRequest({ name: 'absent', dir }, { cmd: 'stats' }), { code: 'ERR_CAPYBARA_NO_RUNTIME' });
  });

  it('refuses a second runtime with the same name', async () => {
    await assert.rejects(AdminServer.start({ name: 'unit', dir, handlers: {} }), { code: 'ERR_CAPYBARA_ADMIN_IN_USE' });
  });

  it('replaces a stale socket left by a killed runtime', async () => {
    const path = adminSocketPath('stale', dir);
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await waitFor(() => existsSync(path), 10_000, 'child to bind');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(existsSync(path), 'SIGKILL leaves the socket file behind');
    const a = await AdminServer.start({ name: 'stale', dir, handlers: { stats: () => 42 } });
    try {
      assert.equal(await adminRequest({ path }, { cmd: 'stats' }), 42);
    } finally {
      await a.close();
    }
    assert.equal(existsSync(path), false, 'close removes the socket');
  });

  it('capybara ctl prints stats and flows from a runtime', async () => {
    const env = { CAPYBARA_RUN_DIR: dir };
    const j = await cliAsync(['ctl', '--name', 'unit', 'stats', '--json'], env);
    assert.equal(j.status, 0, j.stderr);
    assert.deepEqual(JSON.parse(j.stdout), stats);
    const t = await cliAsync(['ctl', '--name', 'unit', 'flows'], env);
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /^id\s+state\s+local\s+remote/m);
    assert.match(t.stdout, /7\s+ESTABLISHED\s+10\.0\.0\.1:80\s+10\.0\.0\.2:40000/);
    const s = await cliAsync(['ctl', '--name', 'unit', 'stats'], env);
    assert.match(s.stdout, /tcp\.segsOut\s+12/);
    const missing = await cliAsync(['ctl', '--name', 'nobody', 'stats'], env);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /no runtime is listening/);
  });
});
