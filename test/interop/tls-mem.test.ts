// TLS connections migrating on the in-memory switch, in one process (runtime/mem-cluster.ts): capybara's
// own TLS client (a second engine, its own record layer) against TLS echo servers on hostA and hostB that
// move the connection back and forth (over the channel and through the engines' lane, alternately); every
// byte comes back, KeyUpdates in both directions between migrations, one handshake, no TLS session left
// behind on any engine. Also: the snapshot carries a
// `tls` record between `tcp` and `app`, SNI answered asynchronously, and typed handshake errors.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { echoResumable } from '../../runtime/apps/echo.js';
import { createSecureContext } from '../../runtime/tls.js';
import { MemCluster } from '../../runtime/mem-cluster.js';
import { addonSkip, hasCommand } from '../helpers/env.js';
import { makeCerts, type CertSet } from '../helpers/tls.js';
import { delay, onceEvent } from '../helpers/wait.js';

const skip = addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing');
const MIGRATIONS = 40;

describe('TLS migration on the mem switch', { skip: skip ?? false }, () => {
  let cluster: MemCluster;
  let certs: CertSet;
  let other: CertSet;
  before(async () => {
    certs = await makeCerts({ san: ['IP:10.95.9.1', 'DNS:capybara.test'] });
    other = await makeCerts({ san: ['DNS:other.test'], type: 'ec', issuer: certs });
    const otherCtx = createSecureContext({ key: other.key, cert: other.cert });
    cluster = await MemCluster.open({
      name: `tlsmem-${process.pid}`, servers: ['hostA', 'hostB'], seed: 3, net: 95, app: echoResumable(), port: 443,
      tls: {
        key: certs.key, cert: certs.cert, ALPNProtocols: ['echo/1'], keyUpdateBytes: 16_000,
        SNICallback: (name, cb) => setTimeout(() => cb(null, name === 'other.test' ? otherCtx : null), 2),
      },
    });
  });
  after(async () => {
    await cluster?.close();
    other?.cleanup();
    certs?.cleanup();
  });

  const sessions = () => [cluster.client, ...[...cluster.servers.values()].map((s) => s.stack)].reduce((n, s) => n + s.engine.tlsCount(), 0);

  it(`an echo over TLS 1.3 moved ${MIGRATIONS} times with KeyUpdates between: every byte once, in order`, async () => {
    const conn = cluster.client.connect({ port: 443, host: cluster.vip, tls: { ca: certs.ca, servername: 'capybara.test', ALPNProtocols: ['echo/1'] } });
    let handshakes = 0;
    conn.on('secureConnect', () => handshakes++);
    await onceEvent(conn, 'secureConnect', 30_000);
    assert.equal(conn.getProtocol(), 'TLSv1.3');
    assert.equal(conn.alpnProtocol, 'echo/1');
    const clientPort = conn.localPort!;
    // TLS 1.3: the client is done one flight before the server, which then announces the connection.
    for (let i = 0; i < 300 && !cluster.ownerOf(clientPort); i++) await delay(10);
    let expected = Buffer.alloc(0);
    const chunks: Buffer[] = [];
    let got = 0;
    conn.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
    });
    const send = (i: number) => {
      const b = Buffer.alloc(1 + ((i * 2741) % 40_000), i & 0xff); // up to 40 KB: several records
      expected = Buffer.concat([expected, b]);
      conn.write(b);
    };
    let snapshotBytes = 0;
    let asked = 0; // KeyUpdates the server sent because we or the app asked (not keyUpdateBytes)
    for (let i = 0; i < MIGRATIONS; i++) {
      send(i);
      if (i % 3 === 0) conn.keyUpdate(i % 2 === 0); // the client's key; every other time the server's too
      if (i % 6 === 0) asked++;
      const own = cluster.ownerOf(clientPort);
      assert.ok(own, 'some runtime owns the connection');
      if (i % 5 === 0) {
        own.conn.keyUpdate(false); // the server's own KeyUpdate, before it moves
        asked++;
      }
      const t = await own.srv.stack.migrate(own.conn, own.srv.name === 'hostA' ? 'hostB' : 'hostA', { via: i % 2 === 1 ? 'lane' : 'channel' });
      snapshotBytes = t.snapshotBytes;
      // Every other move through the engines' lane (the record carries the TLS session), the rest over the channel.
      assert.equal(t.path, i % 2 === 1 ? 'lane' : 'channel');
      // The target's engine owned the flow when migrate() resolved; its JS builds the connection right after.
      const moved = await cluster.waitOwner(clientPort, own.srv.name);
      assert.ok(moved && moved.srv.name !== own.srv.name, 'the other runtime owns it now');
      assert.equal(moved.conn.getProtocol(), 'TLSv1.3', 'the adopted connection is TLS');
      assert.equal(moved.conn.getCipher()?.name, conn.getCipher()?.name);
    }
    for (let i = 0; i < 200 && got < expected.length; i++) await delay(10);
    assert.equal(got, expected.length, 'every byte came back');
    assert.ok(Buffer.concat(chunks).equals(expected), 'byte for byte');
    assert.equal(handshakes, 1);
    const info = cluster.client.engine.tlsInfo(conn.id)!;
    process.stderr.write(`# client: ${info.keyUpdatesIn} KeyUpdates in (${asked} asked for), ${info.keyUpdatesOut} out, ${info.recordsIn} records in\n`);
    assert.ok(info.keyUpdatesIn > asked, 'keyUpdateBytes made the server rotate its key on its own too');
    assert.ok(snapshotBytes > 1024, `the snapshot carries the TLS record (${snapshotBytes} bytes)`);
    conn.end();
    await onceEvent(conn, 'close', 10_000);
    await delay(100);
    assert.equal(sessions(), 0, 'no TLS session left on any engine');
  });

  it('SNI answered asynchronously with another certificate; a wrong CA is ERR_TLS_CERT on both sides', async () => {
    const a = cluster.client.connect({ port: 443, host: cluster.vip, tls: { ca: certs.ca, servername: 'other.test', maxVersion: 'TLSv1.2' } });
    await onceEvent(a, 'secureConnect', 30_000);
    assert.equal(a.getProtocol(), 'TLSv1.2');
    assert.equal(a.getCipher()?.name, 'ECDHE-ECDSA-AES256-GCM-SHA384', 'the SNI context has the ECDSA key');
    a.write('ping');
    const [d] = await onceEvent<[Buffer]>(a, 'data', 10_000);
    assert.equal(d.toString(), 'ping');
    assert.throws(() => a.keyUpdate(), { code: 'EPROTONOSUPPORT' }, 'no KeyUpdate in TLS 1.2');
    a.end();
    await onceEvent(a, 'close', 10_000);

    const srv = cluster.server('hostA').server;
    const clientErrors: Error[] = [];
    const onTlsErr = (e: Error) => clientErrors.push(e);
    srv.on('tlsClientError', onTlsErr);
    try {
      const wrong = await makeCerts({ san: ['DNS:x'] });
      const b = cluster.client.connect({ port: 443, host: cluster.vip, tls: { ca: wrong.ca, servername: 'capybara.test' } });
      wrong.cleanup();
      const [err] = await onceEvent<[Error & { code: string }]>(b, 'error', 30_000);
      assert.equal(err.code, 'ERR_TLS_CERT');
      for (let i = 0; i < 100 && clientErrors.length === 0; i++) await delay(10);
      assert.equal(clientErrors.length, 1, 'the server reports the failed handshake as tlsClientError');
      assert.match((clientErrors[0] as Error & { code: string }).code, /^ERR_TLS_(CERT|HANDSHAKE)$/);
    } finally {
      srv.off('tlsClientError', onTlsErr);
    }
    await delay(100);
    assert.equal(sessions(), 0, 'no TLS session left on any engine');
  });
});
