// tls.handshakeTimeout (as Node's tls.createServer has it) on two stacks over the mem: wire: a client that
// connects and says nothing, or sends half a ClientHello, is cut off by the server with
// ERR_TLS_HANDSHAKE_TIMEOUT as 'tlsClientError', leaving no flow and no TLS session behind; a handshake
// that completes clears the timer; an async SNICallback that answers too late changes nothing; the client
// side's own handshakeTimeout; bad values are ConfigErrors.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Connection } from '../../runtime/connection.js';
import { ConfigError } from '../../runtime/errors.js';
import type { Server } from '../../runtime/server.js';
import { Stack } from '../../runtime/stack.js';
import { makeCerts, type CertSet } from '../../runtime/tls-cert.js';
import type { TlsServerOptions } from '../../runtime/tls.js';
import { addonSkip, hasCommand } from '../helpers/env.js';
import { delay, onceEvent, waitFor, withTimeout } from '../helpers/wait.js';

const skip = addonSkip() ?? (hasCommand('openssl') ? undefined : 'openssl missing');
const SERVER_IP = '10.96.0.1';
const TIMEOUT_MS = 300;

type CodedError = Error & { code?: string };

/** How the client's connection ended: the error it got, if any, once it closed. */
function ending(c: Connection): Promise<{ error: CodedError | null; ended: boolean }> {
  let error: CodedError | null = null;
  let ended = false;
  c.on('error', (e: CodedError) => (error = e));
  c.on('end', () => (ended = true));
  c.resume(); // read, so that the peer's FIN is seen ('end'), and our side closes too
  return withTimeout(new Promise((resolve) => c.once('close', () => resolve({ error, ended }))), 10_000, 'the client connection to close');
}

describe('TLS handshake timeout on mem:', { skip: skip ?? false }, () => {
  let a: Stack; // the TLS server's stack
  let b: Stack; // the clients'
  let certs: CertSet;
  let port = 4430;

  before(async () => {
    certs = await makeCerts({ san: [`IP:${SERVER_IP}`, 'DNS:capybara.test'] });
    const wire = `mem:hstimeout-${process.pid}`;
    // A short TIME_WAIT so that "no flow left" is reached quickly after the server's FIN.
    a = await Stack.open({ device: wire, address: `${SERVER_IP}/24`, mac: '02:00:00:96:00:01', timeWaitMs: 50 });
    b = await Stack.open({ device: wire, address: '10.96.0.2/24', mac: '02:00:00:96:00:02', timeWaitMs: 50 });
  });
  after(async () => {
    await b?.close({ timeoutMs: 1000 });
    await a?.close({ timeoutMs: 1000 });
    certs?.cleanup();
  });

  /** A TLS echo server with the given extra options; its tlsClientErrors are collected. */
  async function tlsEcho(extra: Partial<TlsServerOptions>): Promise<{ srv: Server; port: number; errors: CodedError[] }> {
    const p = port++;
    const srv = a.createServer({ tls: { key: certs.key, cert: certs.cert, ...extra } }, (s) => s.pipe(s));
    const errors: CodedError[] = [];
    srv.on('tlsClientError', (e: CodedError) => errors.push(e));
    await onceEvent(srv.listen(p), 'listening', 5000);
    return { srv, port: p, errors };
  }

  async function closeServer(srv: Server): Promise<void> {
    srv.closeAllConnections();
    await withTimeout(new Promise<void>((r) => srv.close(() => r())), 10_000, 'server close');
  }

  /** Nothing of the cut-off connection stays on the server: no flow (TIME_WAIT is 50 ms), no TLS session. */
  async function serverIsClean(): Promise<void> {
    await waitFor(() => a.flows().length === 0, 10_000, `no flow on the server (${JSON.stringify(a.flows().map((f) => f.state))})`);
    assert.equal(a.engine.tlsCount(), 0, 'no TLS session left on the server');
  }

  async function cutOff(send: Buffer | null): Promise<void> {
    const { srv, port: p, errors } = await tlsEcho({ handshakeTimeout: TIMEOUT_MS });
    try {
      const c = b.connect(p, SERVER_IP); // plain TCP: no TLS on the client
      const done = ending(c);
      await onceEvent(c, 'connect', 5000);
      if (send) c.write(send);
      const r = await done;
      assert.ok(r.ended || r.error, 'the client saw the connection end');
      await waitFor(() => errors.length > 0, 5000, 'tlsClientError');
      assert.equal(errors.length, 1);
      assert.equal(errors[0]!.code, 'ERR_TLS_HANDSHAKE_TIMEOUT');
      assert.equal(srv.connections, 0);
      await serverIsClean();
    } finally {
      await closeServer(srv);
    }
  }

  it('a client that connects and sends nothing is cut off: tlsClientError ERR_TLS_HANDSHAKE_TIMEOUT, no flow left', async () => {
    await cutOff(null);
  });

  it('half a ClientHello (a record header and one byte) is cut off the same way', async () => {
    // handshake record, TLS 1.0 record version, 512 bytes announced; then the ClientHello type only.
    await cutOff(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  });

  it('a handshake that completes clears the timer: data still flows after the timeout has passed', async () => {
    const { srv, port: p, errors } = await tlsEcho({ handshakeTimeout: TIMEOUT_MS });
    try {
      const c = b.connect({ port: p, host: SERVER_IP, tls: { ca: certs.ca, servername: 'capybara.test' } });
      await onceEvent(c, 'secureConnect', 10_000);
      await delay(TIMEOUT_MS * 2); // well past the deadline the handshake had
      c.write('still here');
      const [d] = await onceEvent<[Buffer]>(c, 'data', 5000);
      assert.equal(d.toString(), 'still here');
      assert.equal(errors.length, 0, 'no tlsClientError');
      assert.equal(srv.connections, 1);
      c.end();
      await onceEvent(c, 'close', 10_000);
    } finally {
      await closeServer(srv);
    }
  });

  it('the timer runs while an async SNICallback waits; its late answer touches nothing', async () => {
    let late: (() => void) | undefined;
    const { srv, port: p, errors } = await tlsEcho({
      handshakeTimeout: TIMEOUT_MS,
      SNICallback: (_name, cb) => (late = () => cb(null, null)), // answers only when the test says so
    });
    try {
      const c = b.connect({ port: p, host: SERVER_IP, tls: { ca: certs.ca, servername: 'capybara.test' } });
      const r = await ending(c);
      assert.equal(r.error?.code, 'ERR_TLS_HANDSHAKE', 'the client saw the server close during the handshake');
      await waitFor(() => errors.length > 0, 5000, 'tlsClientError');
      assert.equal(errors[0]!.code, 'ERR_TLS_HANDSHAKE_TIMEOUT');
      assert.ok(late, 'the SNICallback was asked');
      late!(); // too late: the flow is gone (its id may be reused), nothing must happen
      await serverIsClean();
    } finally {
      await closeServer(srv);
    }
  });

  it("the client's handshakeTimeout: a server that never answers the ClientHello is 'error' ERR_TLS_HANDSHAKE_TIMEOUT", async () => {
    const p = port++;
    const mute = a.createServer({}, () => {}); // plain TCP that reads nothing and says nothing
    await onceEvent(mute.listen(p), 'listening', 5000);
    try {
      const c = b.connect({ port: p, host: SERVER_IP, tls: { ca: certs.ca, servername: 'capybara.test', handshakeTimeout: TIMEOUT_MS } });
      const r = await ending(c);
      assert.equal(r.error?.code, 'ERR_TLS_HANDSHAKE_TIMEOUT');
      assert.equal(b.engine.tlsCount(), 0, 'no TLS session left on the client');
    } finally {
      await closeServer(mute);
    }
  });

  it('bad handshakeTimeout values are ConfigErrors, on the server and on the client', async () => {
    // The earlier tests' flows close on the engine thread a moment later: start from none.
    await waitFor(() => b.flows().length === 0, 10_000, "the earlier tests' flows to go");
    for (const v of [-1, 1.5, '300', Number.NaN, 2 ** 31]) {
      assert.throws(() => a.createServer({ tls: { key: certs.key, cert: certs.cert, handshakeTimeout: v as number } }), ConfigError, String(v));
      assert.throws(() => b.connect({ port: 1, host: SERVER_IP, tls: { handshakeTimeout: v as number } }), ConfigError, String(v));
    }
    assert.equal(b.flows().length, 0, 'a refused connect leaves no flow');
  });
});
