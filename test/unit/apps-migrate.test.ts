// Migrating the apps' connections without capybara: real loopback TCP, and a relay in the middle playing
// the engine. The client talks to the relay; the relay forwards to the app's socket S1. To "move" the
// connection the test does what the runtime does: capture the app, let S1's written bytes drain (they are
// forwarded to the client), then open a second server-side socket S2, call resume(S2, state), and hand S2
// the client bytes the app had not read yet (those would have travelled inside the engine). The client
// sees one TCP connection throughout; its byte stream must equal an unmigrated run's exactly.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { echoResumable, decodeEchoState, encodeEchoState } from '../../runtime/apps/echo.js';
import { HttpPhase, decodeHttpState, encodeHttpState, httpApp, httpResumable } from '../../runtime/apps/http.js';
import { PatternVerifier, patternChunk, patternSha256 } from '../../runtime/apps/pattern.js';
import { AppStateError, type MigrationHooks, type ResumableApp } from '../../runtime/apps/resumable.js';
import { delay, onceEvent, waitFor, withTimeout } from '../helpers/wait.js';

const HOST = '127.0.0.1';
const servers: Server[] = [];

after(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
});

async function listen(onConn: (s: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, onConn);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, HOST, r));
  return (server.address() as AddressInfo).port;
}

async function dial(port: number): Promise<Socket> {
  const s = connect({ port, host: HOST, allowHalfOpen: true });
  await onceEvent(s, 'connect', 5000);
  return s;
}

/** Accepted server-side sockets, handed out in order. */
class Acceptor {
  port = 0;
  #ready: Socket[] = [];
  #waiting: ((s: Socket) => void)[] = [];

  static async start(): Promise<Acceptor> {
    const a = new Acceptor();
    a.port = await listen((s) => {
      const w = a.#waiting.shift();
      if (w) w(s);
      else a.#ready.push(s);
    });
    return a;
  }

  next(): Promise<Socket> {
    const s = this.#ready.shift();
    if (s) return Promise.resolve(s);
    return withTimeout(new Promise((r) => this.#waiting.push(r)), 5000, 'server-side socket');
  }
}

/**
 * client <-> [relay: cs ... up] <-> S (the app's socket). migrate() moves the app from S to a fresh S'.
 * The relay logs every client byte; the app's reads on S are counted through the 'data' events its own
 * read() calls emit, so the bytes it never took out of S are known exactly and replayed into S'.
 */
class Relay {
  readonly client: Socket;
  readonly states: Uint8Array[] = [];
  /** Every byte the app wrote, over all its sockets (the response stream position). */
  appWritten = 0;
  /** Writes the app made on a socket after capture() was called on it (must stay 0). */
  writesWhileFrozen = 0;
  onAppWrite: ((total: number) => void) | null = null;
  readonly migrations: Promise<unknown>[] = [];

  #app: ResumableApp;
  #acceptor: Acceptor;
  #cs: Socket;
  #up!: Socket;
  #S!: Socket;
  #hooks!: MigrationHooks;
  #log: Buffer[] = [];
  #logStart = 0; // stream offset of #log[0]
  #received = 0; // client bytes so far
  #base = 0; // stream offset of the first client byte the current S got
  #readByApp = 0; // bytes the app read from the current S
  #migrating = true; // client bytes are only logged, not forwarded
  #clientEnded = false;
  #frozen: Socket | null = null;
  #busy = true; // attaching or migrating: write triggers wait until the app runs on its new socket

  private constructor(app: ResumableApp, acceptor: Acceptor, client: Socket, cs: Socket) {
    this.#app = app;
    this.#acceptor = acceptor;
    this.client = client;
    this.#cs = cs;
    cs.on('data', (d: Buffer) => {
      this.#log.push(d);
      this.#received += d.length;
      if (!this.#migrating) this.#up.write(d);
    });
    cs.on('end', () => {
      this.#clientEnded = true;
      if (!this.#migrating) this.#up.end();
    });
    cs.on('error', () => {});
    cs.on('drain', () => this.#up?.resume());
  }

  static async open(app: ResumableApp): Promise<Relay> {
    const acceptor = await Acceptor.start();
    let onCs!: (s: Socket) => void;
    const csP = new Promise<Socket>((r) => (onCs = r));
    const port = await listen((s) => onCs(s));
    const client = await dial(port);
    const relay = new Relay(app, acceptor, client, await withTimeout(csP, 5000, 'relay accept'));
    await relay.#attach(null);
    return relay;
  }

  /** Client bytes the app consumed so far, over all its sockets. */
  get consumed(): number {
    return this.#base + this.#readByApp;
  }

  #slice(from: number): Buffer {
    const all = Buffer.concat(this.#log);
    const out = all.subarray(from - this.#logStart);
    this.#log = [Buffer.from(out)];
    this.#logStart = from;
    return out;
  }

  async #attach(state: Uint8Array | null): Promise<void> {
    const upP = dial(this.#acceptor.port);
    const S = await this.#acceptor.next();
    const up = await upP;
    // Watch the app's writes before it can make any (resume may write at once).
    const write = S.write;
    S.write = ((chunk: Buffer | string, ...rest: unknown[]) => {
      if (this.#frozen === S) this.writesWhileFrozen++;
      const ok = (write as (...a: unknown[]) => boolean).call(S, chunk, ...rest);
      this.appWritten += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      if (!this.#busy) this.onAppWrite?.(this.appWritten);
      return ok;
    }) as typeof S.write;
    this.#S = S;
    this.#up = up;
    this.#readByApp = 0;
    this.#hooks = state === null ? this.#app.onConnection(S) : this.#app.resume(S, state);
    S.on('data', (d: Buffer) => (this.#readByApp += d.length)); // emitted by the app's read() calls
    up.on('data', (d: Buffer) => {
      if (!this.#cs.write(d) && !this.#migrating) up.pause();
    });
    up.on('end', () => {
      if (up === this.#up && !this.#migrating) this.#cs.end();
    });
    up.on('error', () => {});
    // What the client sent that the app never read is still "in the engine": it moves with the flow.
    up.write(this.#slice(this.#base));
    this.#migrating = false;
    this.#busy = false;
    if (this.#clientEnded) up.end();
  }

  /** The runtime's first step: stop reading, capture the app (synchronously, wherever it is). */
  #capture(): Promise<Uint8Array> {
    this.#S.pause();
    this.#frozen = this.#S;
    return this.#hooks.capture();
  }

  /** Moves the app to a new socket; capture happens synchronously inside this call. */
  migrate(): Promise<Uint8Array> {
    assert.equal(this.#busy, false, 'one migration at a time');
    this.#busy = true;
    const S = this.#S;
    const up = this.#up;
    const captured = this.#capture();
    const p = (async () => {
      const state = await captured;
      this.#migrating = true;
      up.resume(); // drain S completely, even if the client is slow: the relay buffers it
      await waitFor(() => S.writableLength === 0, 10_000, 'source writes to reach the kernel');
      const upEnded = onceEvent(up, 'end', 10_000);
      S.end();
      await upEnded; // everything the source wrote has been forwarded to the client
      this.#base += this.#readByApp;
      S.destroy();
      up.destroy();
      this.states.push(state);
      await this.#attach(state);
      return state;
    })();
    this.migrations.push(p);
    return p;
  }

  /** Capture without moving: the caller aborts later. */
  captureOnly(): Promise<Uint8Array> {
    this.#busy = true;
    return this.#capture();
  }

  abort(): void {
    this.#frozen = null;
    this.#busy = false;
    this.#hooks.abort();
  }

  get source(): Socket {
    return this.#S;
  }

  destroy(): void {
    this.client.destroy();
    this.#cs.destroy();
    this.#up.destroy();
    this.#S.destroy();
  }
}

/** Parses the response stream the client gets; hashes the whole stream and each body. */
class Sink {
  length = 0;
  bodyBytes = 0;
  readonly responses: { status: number; headers: Map<string, string>; length: number; sha: string; pattern: boolean }[] = [];
  readonly closed: Promise<unknown>;
  onBody: ((bodyBytes: number) => void) | null = null;
  #hash = createHash('sha256');
  #buf: Buffer = Buffer.alloc(0);
  #methods: string[];
  #cur: { status: number; headers: Map<string, string>; left: number; length: number; hash: ReturnType<typeof createHash>; v: PatternVerifier } | null = null;

  /** methods: the request methods in order (HEAD answers carry no body). */
  constructor(sock: Socket, methods: string[]) {
    this.#methods = [...methods];
    this.closed = onceEvent(sock, 'close', 30_000);
    sock.on('data', (d: Buffer) => this.#feed(d));
    sock.on('end', () => sock.end());
  }

  get sha(): string {
    return this.#hash.copy().digest('hex');
  }

  #feed(d: Buffer): void {
    this.#hash.update(d);
    this.length += d.length;
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    for (;;) {
      if (this.#cur === null) {
        const end = this.#buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
        this.#buf = this.#buf.subarray(end + 4);
        const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0] ?? '')?.[1] ?? 0);
        const headers = new Map<string, string>();
        for (const l of lines.slice(1)) headers.set(l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim());
        const n = Number(headers.get('content-length'));
        const left = this.#methods.shift() === 'HEAD' ? 0 : n;
        this.#cur = { status, headers, left, length: left, hash: createHash('sha256'), v: new PatternVerifier() };
      }
      const c = this.#cur;
      const n = Math.min(c.left, this.#buf.length);
      if (n > 0) {
        const b = this.#buf.subarray(0, n);
        c.hash.update(b);
        c.v.update(b);
        this.#buf = this.#buf.subarray(n);
        c.left -= n;
        this.bodyBytes += n;
        this.onBody?.(this.bodyBytes);
      }
      if (c.left > 0) return;
      this.responses.push({ status: c.status, headers: c.headers, length: c.length, sha: c.hash.digest('hex'), pattern: c.v.ok });
      this.#cur = null;
    }
  }
}

/** The response stream of an unmigrated connection given the same request bytes (must end with a close). */
async function expected(requests: string): Promise<{ length: number; sha: string }> {
  const port = await listen(httpApp());
  const s = await dial(port);
  const h = createHash('sha256');
  let length = 0;
  s.on('data', (d: Buffer) => {
    h.update(d);
    length += d.length;
  });
  s.on('end', () => s.end());
  const closed = onceEvent(s, 'close', 60_000);
  s.write(requests);
  await closed;
  return { length, sha: h.digest('hex') };
}

function methodsOf(requests: string): string[] {
  return [...requests.matchAll(/(GET|HEAD|POST) \//g)].map((m) => m[1]!);
}

/** A Duplex whose input the test pushes and whose output it collects (a PassThrough would loop back). */
function fakeSocket(): { sock: Duplex; out: Buffer[] } {
  const out: Buffer[] = [];
  const sock = new Duplex({
    read() {},
    write(c: Buffer, _e, cb) {
      out.push(c);
      cb();
    },
  });
  return { sock, out };
}

async function assertSameAsUnmigrated(sink: Sink, requests: string): Promise<void> {
  const want = await expected(requests);
  assert.equal(sink.length, want.length, 'response stream length');
  assert.equal(sink.sha, want.sha, 'response stream sha256');
}

const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: capybara\r\n${extra}\r\n`;
const CLOSE = 'Connection: close\r\n';
const MB20 = 20_000_000;

describe('http app migrates mid-stream (relay over loopback)', () => {
  it('one capture in the middle of a 20 MB body, the rest served by the new socket', async () => {
    const relay = await Relay.open(httpResumable());
    const reqs = GET(`/bytes/${MB20}`, CLOSE);
    const sink = new Sink(relay.client, methodsOf(reqs));
    relay.onAppWrite = (total) => {
      if (total >= 5_000_000 && relay.states.length === 0 && relay.migrations.length === 0) void relay.migrate();
    };
    relay.client.write(reqs);
    await sink.closed;
    await Promise.all(relay.migrations);
    assert.equal(relay.states.length, 1);
    const st = decodeHttpState(relay.states[0]!);
    assert.equal(st.phase, HttpPhase.Respond);
    assert.equal(st.headWritten, true);
    assert.ok(st.bodyOffset > 4_000_000 && st.bodyOffset < MB20, `body offset ${st.bodyOffset}`);
    assert.equal(st.response?.body, MB20);
    assert.equal(st.response?.keepAlive, false);
    assert.equal(sink.responses.length, 1);
    assert.equal(sink.responses[0]!.sha, patternSha256(MB20));
    assert.equal(relay.writesWhileFrozen, 0);
    await assertSameAsUnmigrated(sink, reqs);
  });

  it('50 migrations during one 20 MB download, then the connection keeps serving', async () => {
    const relay = await Relay.open(httpResumable());
    const reqs = GET(`/bytes/${MB20}`) + GET('/health', CLOSE);
    const sink = new Sink(relay.client, methodsOf(reqs));
    const step = 350_000; // the 50th capture at 17.5 MB: all of them inside the body
    relay.onAppWrite = (total) => {
      if (relay.migrations.length < 50 && total >= step * (relay.migrations.length + 1)) void relay.migrate();
    };
    relay.client.write(reqs);
    await sink.closed;
    await Promise.all(relay.migrations);
    assert.equal(relay.states.length, 50);
    let last = 0;
    for (const raw of relay.states) {
      const st = decodeHttpState(raw);
      assert.equal(st.phase, HttpPhase.Respond);
      assert.ok(st.bodyOffset > last, 'each capture later in the body than the one before');
      last = st.bodyOffset;
      // The pipelined /health request was pulled with the first head and travels in every state.
      assert.equal(st.buffered.toString('latin1'), GET('/health', CLOSE));
      assert.equal(st.served, 0);
    }
    assert.equal(sink.responses.length, 2);
    assert.equal(sink.responses[0]!.length, MB20);
    assert.equal(sink.responses[0]!.sha, patternSha256(MB20));
    assert.equal(sink.responses[1]!.status, 200);
    assert.equal(relay.writesWhileFrozen, 0);
    await assertSameAsUnmigrated(sink, reqs);
  });

  it('pipelined requests, half a request head on the wire, captures in several responses', async () => {
    const relay = await Relay.open(httpResumable({ chunkSize: 50_000 }));
    const first = GET(`/bytes/${MB20}`) + GET('/health') + `HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n\r\n`;
    const d = GET('/bytes/3000000');
    const rest = GET('/nope') + 'POST /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello' + 'GET /bytes/1000000 HTTP/1.0\r\n\r\n';
    const reqs = first + d + rest;
    const sink = new Sink(relay.client, methodsOf(reqs));
    // App-side offsets: three inside the 20 MB body, then inside /bytes/3000000 and /bytes/1000000.
    const at = [1_000_000, 7_000_000, 15_000_000, 21_000_000, 23_500_000];
    relay.onAppWrite = (total) => {
      if (relay.migrations.length < at.length && total >= at[relay.migrations.length]!) void relay.migrate();
    };
    let sentRest = false;
    sink.onBody = (n) => {
      if (n >= 10_000_000 && !sentRest) {
        sentRest = true;
        relay.client.write(d.slice(20) + rest); // completes the half head sent with the first batch
      }
    };
    relay.client.write(first + d.slice(0, 20));
    await sink.closed;
    await Promise.all(relay.migrations);
    assert.equal(relay.states.length, at.length);
    const states = relay.states.map((s) => decodeHttpState(s));
    assert.ok(states.every((s) => s.phase === HttpPhase.Respond));
    // The first capture: inside the first body, the next requests (and half of one) in the parser's buffer.
    assert.equal(states[0]!.served, 0);
    assert.equal(states[0]!.buffered.toString('latin1'), GET('/health') + `HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n\r\n` + d.slice(0, 20));
    assert.equal(states[3]!.served, 3);
    assert.equal(states[3]!.response?.body, 3_000_000);
    assert.equal(states[4]!.response?.minor, 0);
    assert.equal(states[4]!.response?.keepAlive, false);
    assert.deepEqual(sink.responses.map((r) => r.status), [200, 200, 200, 200, 404, 405, 200]);
    assert.deepEqual(sink.responses.map((r) => r.length).filter((_, i) => i !== 1 && i < 4), [MB20, 0, 3_000_000]);
    assert.ok(sink.responses.every((r) => r.status !== 200 || r.length === 2 || r.pattern));
    assert.equal(relay.writesWhileFrozen, 0);
    await assertSameAsUnmigrated(sink, reqs);
  });

  it('capture between two requests, with half a head received, and inside a request body', async () => {
    const relay = await Relay.open(httpResumable());
    const sink = new Sink(relay.client, ['GET', 'POST', 'GET', 'GET']);
    const r1 = GET('/bytes/1000000');
    relay.client.write(r1);
    await waitFor(() => sink.responses.length === 1, 20_000, 'first response');
    let st = decodeHttpState(await relay.migrate());
    assert.equal(st.phase, HttpPhase.Head);
    assert.equal(st.served, 1);
    assert.equal(st.buffered.length, 0);

    // A POST whose body is half received: the app is dropping the body when captured.
    const r2 = 'POST /bytes/5 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabcd';
    relay.client.write(r2);
    await waitFor(() => relay.consumed === r1.length + r2.length, 10_000, 'app to read the partial body');
    st = decodeHttpState(await relay.migrate());
    assert.equal(st.phase, HttpPhase.Body);
    assert.equal(st.bodyLeft, 6);
    assert.equal(st.response?.status, 405);

    // Half a request head: it is in the app's buffer when captured.
    const r3 = 'efghij' + GET('/bytes/2000000').slice(0, 17);
    relay.client.write(r3);
    await waitFor(() => sink.responses.length === 2 && relay.consumed === r1.length + r2.length + r3.length, 10_000, 'app to read half a head');
    st = decodeHttpState(await relay.migrate());
    assert.equal(st.phase, HttpPhase.Head);
    assert.equal(st.served, 2);
    assert.equal(st.buffered.toString('latin1'), GET('/bytes/2000000').slice(0, 17));
    // Captured twice in a row with nothing in between: the state does not change.
    const again = await relay.migrate();
    assert.deepEqual(decodeHttpState(again).buffered, st.buffered);

    const r4 = GET('/bytes/2000000').slice(17) + GET('/health', CLOSE);
    relay.client.write(r4);
    await sink.closed;
    assert.deepEqual(sink.responses.map((r) => r.status), [200, 405, 200, 200]);
    assert.equal(sink.responses[2]!.sha, patternSha256(2_000_000));
    await assertSameAsUnmigrated(sink, r1 + r2 + r3 + r4);
  });

  it('abort() after capture: the source carries on exactly where it stopped', async () => {
    const relay = await Relay.open(httpResumable());
    const reqs = GET(`/bytes/${MB20}`) + GET('/bytes/1000') + GET('/health', CLOSE);
    const sink = new Sink(relay.client, methodsOf(reqs));
    const at = [2_000_000, 6_000_000, 10_000_000, 14_000_000];
    const captures: Promise<void>[] = [];
    relay.onAppWrite = (total) => {
      if (captures.length < at.length && total >= at[captures.length]!) {
        const source = relay.source;
        captures.push((async () => {
          const st = decodeHttpState(await relay.captureOnly());
          assert.equal(st.phase, HttpPhase.Respond);
          const written = source.bytesWritten;
          await delay(30); // a frozen app makes no progress however long the runtime takes
          assert.equal(source.bytesWritten, written);
          relay.abort();
        })());
      }
    };
    relay.client.write(reqs);
    await sink.closed;
    await Promise.all(captures);
    assert.equal(captures.length, at.length);
    assert.equal(relay.writesWhileFrozen, 0);
    assert.equal(sink.responses[0]!.sha, patternSha256(MB20));
    await assertSameAsUnmigrated(sink, reqs);
  });

  it('capture, abort, then migrate the same connection', async () => {
    const relay = await Relay.open(httpResumable());
    const reqs = GET('/bytes/8000000', CLOSE);
    const sink = new Sink(relay.client, methodsOf(reqs));
    let phase = 0;
    relay.onAppWrite = (total) => {
      if (phase === 0 && total >= 1_000_000) {
        phase = 1;
        void relay.captureOnly().then(() => setImmediate(() => relay.abort()));
      } else if (phase === 1 && total >= 3_000_000) {
        phase = 2;
        void relay.migrate();
      }
    };
    relay.client.write(reqs);
    await sink.closed;
    await Promise.all(relay.migrations);
    assert.equal(phase, 2);
    assert.equal(relay.states.length, 1);
    await assertSameAsUnmigrated(sink, reqs);
  });
});

describe('echo app migrates mid-stream', () => {
  it('5 MB echoed byte-exact across 20 migrations, FIN answered after the last byte', async () => {
    const relay = await Relay.open(echoResumable());
    const n = 5_000_000;
    const v = new PatternVerifier();
    relay.client.on('data', (d: Buffer) => v.update(d));
    relay.client.on('end', () => relay.client.end());
    const closed = onceEvent(relay.client, 'close', 60_000);
    relay.onAppWrite = (total) => {
      if (relay.migrations.length < 20 && total >= 200_000 * (relay.migrations.length + 1)) void relay.migrate();
    };
    for (let off = 0; off < n; off += 100_000) {
      if (!relay.client.write(patternChunk(off, 100_000))) await onceEvent(relay.client, 'drain', 20_000);
    }
    relay.client.end();
    await closed;
    await Promise.all(relay.migrations);
    assert.equal(relay.states.length, 20);
    for (const s of relay.states) assert.deepEqual(decodeEchoState(s), { ended: false, pending: Buffer.alloc(0) });
    assert.equal(v.offset, n);
    assert.ok(v.ok, `mismatch at ${v.firstMismatch}`);
    assert.equal(relay.writesWhileFrozen, 0);
  });

  it('resumes pending bytes first and honours an ended state', async () => {
    const pending = Buffer.from('abc');
    const state = encodeEchoState({ ended: false, pending });
    const { sock, out } = fakeSocket();
    const finished = onceEvent(sock, 'finish', 5000);
    echoResumable().resume(sock, state);
    sock.push('def');
    sock.push(null);
    await finished;
    assert.equal(Buffer.concat(out).toString(), 'abcdef');
    assert.throws(() => decodeEchoState(encodeEchoState({ ended: true, pending })), { code: 'ERR_APP_STATE' });
  });
});

describe('app states are validated; wiring', () => {
  function assertRefused(app: ResumableApp, bytes: Uint8Array, why: string): void {
    const sock = new PassThrough();
    assert.throws(() => app.resume(sock, bytes), (err: unknown) => {
      assert.ok(err instanceof AppStateError, `${why}: ${String(err)}`);
      assert.equal(err.code, 'ERR_APP_STATE');
      return true;
    }, why);
    assert.equal(sock.listenerCount('readable'), 0, `${why}: the socket was left alone`);
  }

  /** A real captured state: mid-body, text pending requests in the buffer. */
  function sample(): Uint8Array {
    return encodeHttpState({
      phase: HttpPhase.Respond, peerEof: false, served: 7, bodyLeft: 0,
      response: { status: 200, minor: 1, keepAlive: true, isHead: false, body: 1000 },
      headWritten: true, bodyOffset: 300, buffered: Buffer.from(GET('/health')),
    });
  }

  it('round-trips and resumes a hand-made state on a plain Duplex', async () => {
    const s = sample();
    assert.deepEqual(encodeHttpState(decodeHttpState(s)), s);
    const { sock, out: chunks } = fakeSocket();
    httpResumable().resume(sock, s);
    await waitFor(() => Buffer.concat(chunks).includes('\r\n\r\nok'), 5000, 'rest of the body, then the buffered request');
    const out = Buffer.concat(chunks);
    assert.ok(out.subarray(0, 700).equals(patternChunk(300, 700)), 'body continues at offset 300');
    assert.match(out.subarray(700).toString('latin1'), /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 2\r\n\r\nok$/);
    // The empty state is a fresh connection (a runtime that did not ask the app).
    assert.equal(decodeHttpState(new Uint8Array(0)).phase, HttpPhase.Head);
  });

  it('refuses malformed HTTP states with ERR_APP_STATE', () => {
    const app = httpResumable();
    const s = sample();
    const mutate = (f: (b: Buffer) => void): Uint8Array => {
      const b = Buffer.from(s);
      f(b);
      return b;
    };
    for (let len = 1; len < s.length; len++) assertRefused(app, s.subarray(0, len), `truncated to ${len}`);
    assertRefused(app, Buffer.concat([s, Buffer.from([0])]), 'trailing byte');
    assertRefused(app, Buffer.from('garbage garbage garbage garbage garbage garbage garbage'), 'garbage');
    assertRefused(app, mutate((b) => b.write('CPEC', 0, 'latin1')), 'echo magic');
    assertRefused(app, mutate((b) => b.writeUInt16LE(2, 4)), 'version 2');
    assertRefused(app, mutate((b) => (b[6] = 4)), 'phase 4');
    assertRefused(app, mutate((b) => (b[7] |= 0x80)), 'unknown flag');
    assertRefused(app, mutate((b) => (b[7] &= ~2)), 'body written without a head');
    assertRefused(app, mutate((b) => b.writeUInt16LE(42, 24)), 'status 42');
    assertRefused(app, mutate((b) => (b[26] = 2)), 'HTTP/1.2');
    assertRefused(app, mutate((b) => (b[27] = 1)), 'reserved byte');
    assertRefused(app, mutate((b) => b.writeBigUInt64LE(1001n, 36)), 'offset beyond the body');
    assertRefused(app, mutate((b) => b.writeBigUInt64LE(2n ** 60n, 28)), 'body length beyond 2^53');
    assertRefused(app, mutate((b) => b.writeBigUInt64LE(5n, 16)), 'body left while responding');
    assertRefused(app, mutate((b) => (b[6] = 0)), 'head phase with a response');
    assertRefused(app, mutate((b) => b.writeUInt32LE(0xffffffff, 44)), 'buffered length beyond the cap');
    assertRefused(app, mutate((b) => b.writeUInt32LE(b.readUInt32LE(44) + 1, 44)), 'buffered length beyond the state');
    assertRefused(app, mutate((b) => (b[7] |= 16)), 'text body of 1000 bytes announced, none present');
  });

  it('refuses malformed echo states with ERR_APP_STATE', () => {
    const app = echoResumable();
    const s = encodeEchoState({ ended: false, pending: Buffer.from('xyz') });
    for (let len = 1; len < s.length; len++) assertRefused(app, s.subarray(0, len), `truncated to ${len}`);
    assertRefused(app, Buffer.concat([s, Buffer.from([1])]), 'trailing byte');
    assertRefused(app, Buffer.from(s).fill(0x41, 0, 4), 'magic');
    assertRefused(app, (() => { const b = Buffer.from(s); b.writeUInt32LE(5_000_000, 8); return b; })(), 'pending over the cap');
    assertRefused(app, (() => { const b = Buffer.from(s); b[6] = 2; return b; })(), 'unknown flag');
  });

  it('a finished connection still reads to the end, so the server socket closes', async () => {
    let serverSide: Socket | undefined;
    const handler = httpApp();
    const port = await listen((s) => {
      serverSide = s;
      handler(s);
    });
    const c = await dial(port);
    c.on('data', () => {});
    c.on('end', () => c.end('GET /late HTTP/1.1\r\n\r\n')); // bytes after the close are dropped
    c.write(GET('/health', CLOSE));
    await onceEvent(c, 'close', 10_000);
    await waitFor(() => serverSide?.destroyed === true, 10_000, 'server-side socket to close');
  });

  it('httpApp hands its hooks to a Duplex that has a migrationHooks slot', async () => {
    const sock = Object.assign(new Duplex({ read() {}, write(_c, _e, cb) { cb(); } }), { migrationHooks: undefined as MigrationHooks | undefined });
    httpApp()(sock);
    assert.equal(typeof sock.migrationHooks?.capture, 'function');
    const st = decodeHttpState(await sock.migrationHooks!.capture());
    assert.equal(st.phase, HttpPhase.Head);
    sock.destroy();
  });
});
