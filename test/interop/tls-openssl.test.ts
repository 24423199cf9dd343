// `openssl s_client` (the kernel stack in `client`) against capybara's TLS: every suite the record layer
// carries, on TLS 1.3 and 1.2, verified against a test CA; requests and answers over keep-alive HTTP; the
// server's clean close_notify (s_client's -state shows the alert it read). Then KeyUpdate both ways —
// s_client's k/K commands and the server's own (serve --tls-key-update) — before and after migrations.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PLAN } from '../../dataplane/testbed.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { useLbTestbed } from '../helpers/migration.js';
import type { Running } from '../helpers/testbed.js';
import { SERVERNAME, certsFor, migrateOnce, sClient, startTlsServe, suiteArgs, type CertSet } from '../helpers/tls.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing');
const PORT = 443;
const KEY_UPDATE_BYTES = 1_000_000;
const REQ = `GET /health HTTP/1.1\r\nHost: ${SERVERNAME}\r\n\r\n`;
const LAST = `GET /health HTTP/1.1\r\nHost: ${SERVERNAME}\r\nConnection: close\r\n\r\n`;

describe('openssl s_client against capybara TLS', { skip: skip ?? false }, () => {
  const servers: Running[] = [];
  let rsa: CertSet | undefined;
  let ecdsa: CertSet | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    rsa = await certsFor('rsa');
    ecdsa = await certsFor('ec', rsa); // same CA: either host verifies
    const ku = ['--tls-key-update', String(KEY_UPDATE_BYTES)];
    servers.push(await startTlsServe('http', 'hostA', PORT, rsa, ku));
    servers.push(await startTlsServe('http', 'hostB', PORT, ecdsa, ku));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await teardown?.();
    ecdsa?.cleanup();
    rsa?.cleanup();
  });

  const suites: ['1.2' | '1.3', string, 'hostA' | 'hostB'][] = [
    ['1.3', 'TLS_AES_128_GCM_SHA256', 'hostA'],
    ['1.3', 'TLS_AES_256_GCM_SHA384', 'hostB'],
    ['1.3', 'TLS_CHACHA20_POLY1305_SHA256', 'hostA'],
    ['1.2', 'ECDHE-RSA-AES128-GCM-SHA256', 'hostA'],
    ['1.2', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'hostB'], // the ECDSA certificate
    ['1.2', 'ECDHE-RSA-CHACHA20-POLY1305', 'hostA'],
  ];
  for (const [version, suite, host] of suites) {
    it(`TLS ${version} ${suite}: handshake, request/response, clean close_notify`, async () => {
      const ca = rsa!.caFile;
      const c = sClient(['-connect', `${PLAN.hosts[host].ip}:${PORT}`, '-servername', SERVERNAME, '-CAfile', ca,
        '-verify_return_error', '-state', ...suiteArgs(version, suite)]);
      try {
        await c.waitFor(/Verify return code: 0 \(ok\)/, 15_000);
        assert.match(c.stdout(), new RegExp(`Cipher is ${suite}`));
        assert.match(c.stdout(), new RegExp(`TLSv${version.replace('.', '\\.')}`));
        for (let i = 1; i <= 3; i++) {
          c.write(REQ);
          await c.waitFor(/HTTP\/1\.1 200 OK[^]*?\r\n\r\nok/, 10_000, i);
        }
        c.write(LAST); // the server answers, then ends with close_notify and FIN
        await c.waitFor(/HTTP\/1\.1 200 OK/, 10_000, 4);
        const code = await c.exited(10_000);
        assert.match(c.stderr(), /SSL3 alert read:warning:close notify/, 'the server sent close_notify');
        assert.match(c.stdout(), /closed\n$/, 's_client saw the end of the stream');
        assert.equal(code, 0);
      } finally {
        await c.kill();
      }
    });
  }

  it('TLS 1.3 KeyUpdate (client k/K, server-initiated) before and after migrations through the VIP', async () => {
    const c = sClient(['-connect', `${PLAN.vip}:${PORT}`, '-servername', SERVERNAME, '-CAfile', rsa!.caFile,
      '-verify_return_error', '-tls1_3', '-msg']);
    try {
      await c.waitFor(/Verify return code: 0 \(ok\)/, 15_000);
      let health = 0; // answers to GET /health ("ok")
      let responses = 0; // all answers
      let clientUpdates = 0;
      let requested = 0;
      const ROUNDS = 6;
      for (let round = 0; round < ROUNDS; round++) {
        // k: the client's key changes; K: also asks the server to change its own.
        const cmd = round % 2 === 0 ? 'k' : 'K';
        c.write(`${cmd}\n`);
        clientUpdates++;
        if (cmd === 'K') requested++;
        await c.waitFor(/KEYUPDATE/, 5000, clientUpdates);
        c.write(REQ);
        await c.waitFor(/HTTP\/1\.1 200 OK[^]*?\r\n\r\nok/, 10_000, ++health);
        responses++;
        // 1.2 MB of response: the server sends its own KeyUpdate (asking for ours) on the way.
        const before = c.stdout().length;
        c.write(`GET /bytes/1200000 HTTP/1.1\r\nHost: ${SERVERNAME}\r\n\r\n`);
        await c.waitFor(/HTTP\/1\.1 200 OK/, 15_000, ++responses);
        await c.waitForOutput(before + 1_200_000, 15_000); // the whole body, before the connection moves
        assert.ok(await migrateOnce(PORT), `migration after round ${round + 1}`);
        c.write(REQ); // the target answers with the migrated keys
        await c.waitFor(/HTTP\/1\.1 200 OK[^]*?\r\n\r\nok/, 10_000, ++health);
        responses++;
      }
      // KeyUpdates the server sent: one per K, one per 1.2 MB response (keyUpdateBytes = 1 MB).
      const fromServer = (c.stdout().match(/<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate/g) ?? []).length;
      const fromClient = (c.stdout().match(/>>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate/g) ?? []).length;
      process.stderr.write(`# KeyUpdate: ${fromServer} from the server, ${fromClient} from s_client over ${ROUNDS} migrations\n`);
      assert.ok(fromServer >= requested + ROUNDS, `server KeyUpdates: ${fromServer}`);
      assert.ok(fromClient >= clientUpdates + ROUNDS, `s_client KeyUpdates (k/K and answers to the server's requests): ${fromClient}`);
      c.write(LAST);
      await c.waitFor(/HTTP\/1\.1 200 OK/, 10_000, responses + 1);
      assert.equal(await c.exited(10_000), 0);
    } finally {
      await c.kill();
    }
  });
});
