// Node's own TLS client (the kernel stack in `client`) against capybara's TLS echo through the VIP while
// the connection, its TLS session included, moves between hostA and hostB: 10,000 echoes of 4..20,003
// bytes with 100+ migrations, every byte checked, one handshake. Then the end: close_notify both ways.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { stopProcess } from '../../dataplane/exec.js';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, hasCommand, HELPERS, netnsSkip } from '../helpers/env.js';
import { migrationLoop, useTlsServer } from '../helpers/tls.js';
import { delay } from '../helpers/wait.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing');
const PORT = 443;
const ECHOES = 10_000;
const MIGRATIONS = 100;

describe('Node tls client across live migrations', { skip: skip ?? false }, () => {
  const fx = useTlsServer('echo', PORT, [], ['hostA', 'hostB']);

  it(`${ECHOES} echoes with ${MIGRATIONS} migrations, every byte verified, one handshake`, async () => {
    const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(HELPERS, 'tls-client.js'), 'echo', PLAN.vip, String(PORT), fx.certs().caFile],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-5000)));
    const events: Record<string, unknown>[] = [];
    createInterface({ input: child.stdout }).on('line', (l) => {
      try {
        events.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not JSON
      }
    });
    const next = async (event: string, ms: number) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const i = events.findIndex((e) => e.event === event || e.event === 'result');
        if (i >= 0) return events.splice(i, 1)[0]!;
        if (Date.now() > deadline) throw new Error(`tls-client: no "${event}" within ${ms} ms; stderr: ${stderr}`);
        await delay(10);
      }
    };
    try {
      const ready = await next('ready', 15_000);
      assert.equal(ready.event, 'ready', JSON.stringify(ready));
      assert.equal(ready.protocol, 'TLSv1.3');
      const loop = migrationLoop(PORT, 55);
      let migrations = 0;
      for (let i = 0; i < 600 && loop.errors.length === 0; i++) {
        await delay(100);
        child.stdin.write('status\n');
        const st = await next('status', 5000);
        assert.equal(st.event, 'status', `client ended early: ${JSON.stringify(st)}`);
        assert.equal(st.error, null);
        if (loop.count() >= MIGRATIONS && (st.echoes as number) >= ECHOES) break;
      }
      migrations = await loop.stop();
      assert.deepEqual(loop.errors, []);
      child.stdin.write('stop\n');
      const res = await next('result', 15_000);
      process.stderr.write(`# ${String(res.echoes)} echoes (${String(res.bytes)} bytes) over ${migrations} migrations, ${String(res.protocol)} ${String(res.cipher)}\n`);
      assert.equal(res.error, null, JSON.stringify(res));
      assert.equal(res.bad, 0, 'every echoed byte matches');
      assert.ok((res.echoes as number) >= ECHOES, `${String(res.echoes)} echoes`);
      assert.ok(migrations >= MIGRATIONS, `${migrations} migrations`);
      assert.equal(res.handshakes, 1, 'one TLS handshake for the whole run');
    } finally {
      await stopProcess(child, 'SIGTERM', 3000);
    }
  });
});
