// A slowloris against `capybara serve echo --tls-cert … --tls-handshake-timeout 300` on hostA: the kernel's
// netcat in the `client` namespace connects and sends nothing (or half a ClientHello) and keeps its end
// open; the server must close the connection (nc sees EOF and exits), report the timeout, leave no
// established flow behind, and still complete handshakes with a real TLS client.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { run } from '../../dataplane/exec.js';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { flows } from '../helpers/migration.js';
import { SERVERNAME, useTlsServer } from '../helpers/tls.js';
import { waitFor } from '../helpers/wait.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing') ?? (hasCommand('nc') ? undefined : 'nc missing');
const PORT = 443;
const HOST = PLAN.hosts.hostA.ip;

/** nc in the client namespace: sends `input`, then keeps the connection open (no -N: no FIN) until the server closes it. */
function netcat(input: string): Promise<{ code: number | null; stderr: string }> {
  // Bounded: the server closes after 300 ms; 15 s means it did not (run() kills nc then, code null).
  return run('ip', ['netns', 'exec', PLAN.client.ns, 'nc', HOST, String(PORT)], { input, timeoutMs: 15_000 });
}

describe('TLS handshake timeout against netcat', { skip: skip ?? false }, () => {
  const fx = useTlsServer('echo', PORT, ['--tls-handshake-timeout', '300']);

  const timeouts = () => (fx.server().stderr().match(/TLS handshake timeout/g) ?? []).length;

  for (const [what, input] of [['sends nothing', ''], ['sends half a ClientHello', '\x16\x03\x01\x02\x00\x01']] as const) {
    it(`nc that ${what} is closed by the server`, async () => {
      const before = timeouts();
      const r = await netcat(input);
      assert.equal(r.code, 0, `nc exited on its own when the server closed (${r.stderr})`);
      await waitFor(() => timeouts() > before, 5000, `the server to report the timeout (stderr: ${fx.server().stderr().slice(-500)})`);
      await waitFor(async () => (await flows('hostA')).every((f) => f.localPort !== PORT || f.state !== 'ESTABLISHED'), 10_000,
        'no established flow on the TLS port');
    });
  }

  it('a real TLS client still completes its handshake', async () => {
    const r = await run('ip', ['netns', 'exec', PLAN.client.ns, 'openssl', 's_client', '-connect', `${HOST}:${PORT}`, '-servername', SERVERNAME,
      '-CAfile', fx.certs().caFile, '-verify_return_error', '-brief'], { input: '', timeoutMs: 15_000 });
    assert.match(r.stderr, /CONNECTION ESTABLISHED/, r.stderr);
    assert.match(r.stderr, /Verification: OK/, r.stderr);
  });
});
