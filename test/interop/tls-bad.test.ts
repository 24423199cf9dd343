// Damaged TLS input after the handshake, from a relay in the `client` namespace between Node's TLS client
// and capybara's TLS echo on hostA: the server must answer with the right alert (the client's OpenSSL
// names the alert it received), close with a FIN (not a RST), and keep serving new connections.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { run, stopProcess } from '../../dataplane/exec.js';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, hasCommand, HELPERS, netnsSkip } from '../helpers/env.js';
import { useTlsServer } from '../helpers/tls.js';
import { delay } from '../helpers/wait.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing');
const PORT = 443;
const HOST = PLAN.hosts.hostA.ip;

interface BadResult { mode: string; echoed: string; error: string | null; code: string | null; upstream: string; damaged: boolean }

async function badRun(mode: string, caFile: string): Promise<BadResult> {
  const r = await run('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(HELPERS, 'tls-client.js'), 'bad', mode, HOST, String(PORT), caFile], { timeoutMs: 20_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as BadResult;
  } catch {
    throw new Error(`tls-client bad ${mode}: no result (exit ${r.code}): ${r.stderr}`);
  }
}

/** A short clean echo session with a fresh connection: the server still serves. */
async function cleanEcho(caFile: string): Promise<Record<string, unknown>> {
  const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(HELPERS, 'tls-client.js'), 'echo', HOST, String(PORT), caFile], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      // not JSON
    }
  });
  try {
    for (let i = 0; i < 300 && !lines.some((l) => l.event === 'ready' || l.event === 'result'); i++) await delay(20);
    await delay(200);
    child.stdin.write('stop\n');
    for (let i = 0; i < 300 && !lines.some((l) => l.event === 'result'); i++) await delay(20);
    return lines.find((l) => l.event === 'result') ?? { error: 'no result' };
  } finally {
    await stopProcess(child, 'SIGTERM', 2000);
  }
}

describe('TLS: damaged records after the handshake', { skip: skip ?? false }, () => {
  const fx = useTlsServer('echo', PORT);

  const cases: [string, RegExp | null][] = [
    ['flip', /bad record mac/i],
    ['version', /protocol version/i],
    ['handshake', /unexpected message/i],
    ['truncate', null], // the client cut the stream: nothing to alert about, the server just closes
  ];
  for (const [mode, alert] of cases) {
    it(`${mode}: ${alert ? `alert ${alert.source}` : 'no alert'}, FIN, and the server keeps serving`, async () => {
      const r = await badRun(mode, fx.certs().caFile);
      assert.equal(r.echoed.startsWith('hello'), true, JSON.stringify(r));
      assert.ok(r.damaged, `the relay damaged a record: ${JSON.stringify(r)}`);
      if (alert) assert.match(`${r.error ?? ''} ${r.code ?? ''}`, alert, JSON.stringify(r));
      assert.equal(r.upstream, 'fin', `server closed with FIN, not RST: ${JSON.stringify(r)}`);
      const ok = await cleanEcho(fx.certs().caFile);
      assert.ok((ok.echoes as number) >= 1 && ok.bad === 0 && (ok.error === null), `a new connection is served: ${JSON.stringify(ok)}`);
      assert.equal(fx.server().child.exitCode, null, `server still running; stderr: ${fx.server().stderr().slice(-500)}`);
    });
  }
});
