// A kernel TCP client the migration tests run inside the `client` namespace
// (ip netns exec client node stream-client.js MODE ...). It keeps streaming to an echo server while the
// test migrates the server side, and verifies every byte that comes back. Does nothing when imported
// or run without a mode, because the test runner executes every file under dist/test.
//
//   messages HOST PORT CONNS RATE   CONNS sockets, each sending 64-byte numbered messages at RATE per
//                                   second: [u32 conn][u32 seq][56 pattern bytes of (conn, seq)]; every
//                                   echoed message must be the next one in order, exactly once
//   bulk HOST PORT WINDOW           one socket writing the pattern stream as fast as it may while at
//                                   most WINDOW bytes are unanswered; the echo must be the same stream
//   raw HOST PORT HEX WAIT_MS       connects, writes the bytes HEX, and reports how the server reacted
//                                   within WAIT_MS: {"event":"result","outcome":"end"|"reset"|"open",...}
//
// Talks JSON lines: prints {"event":"ready","localPorts":[...]} once every socket is connected; reads
// commands on stdin: "status" -> {"event":"status",...}; "stop" -> stops sending, waits (bounded) for
// every echo, half-closes, waits for the server's FIN and prints {"event":"result",...}, then exits.
// A socket error, an unexpected end, a wrong byte or a missing message is reported, never thrown.
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { PatternVerifier, patternFill } from '../../runtime/apps/pattern.js';

const MSG = 64;
const TICK_MS = 2;
const DRAIN_LIMIT_MS = 15_000;

function out(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function connectTo(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, allowHalfOpen: true, noDelay: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Message `seq` of connection `conn`; the payload depends on both, so a crossed stream is caught. */
function message(conn: number, seq: number): Buffer {
  const b = Buffer.allocUnsafe(MSG);
  b.writeUInt32LE(conn, 0);
  b.writeUInt32LE(seq, 4);
  patternFill(b.subarray(8), (conn * 2 ** 24 + seq) * MSG);
  return b;
}

interface Stream {
  sock: Socket;
  localPort: number;
  sent: number;        // messages (messages mode) or bytes (bulk mode) written
  received: number;    // messages or bytes verified
  error: string | null; // first problem seen on this socket
  ended: boolean;      // the server's FIN arrived
  closed: boolean;
  lastRx: number;      // ms timestamp of the last verified arrival
  maxGapMs: number;    // largest gap between arrivals while something was outstanding
  blocked: boolean;    // write() said wait for 'drain'
}

abstract class Client {
  readonly streams: Stream[] = [];
  stopping = false;
  readonly started = Date.now();

  async open(host: string, port: number, n: number): Promise<void> {
    // Connect in small batches: a SYN burst of hundreds is a test of the balancer, not of migration.
    for (let i = 0; i < n; i += 16) {
      const batch = await Promise.all(Array.from({ length: Math.min(16, n - i) }, () => connectTo(host, port)));
      for (const sock of batch) this.#adopt(sock);
    }
  }

  #adopt(sock: Socket): void {
    const st: Stream = {
      sock, localPort: sock.localPort ?? 0, sent: 0, received: 0, error: null, ended: false, closed: false,
      lastRx: Date.now(), maxGapMs: 0, blocked: false,
    };
    const idx = this.streams.length;
    this.streams.push(st);
    sock.on('data', (d: Buffer) => {
      const now = Date.now();
      if (this.outstanding(st) > 0 || !this.stopping) st.maxGapMs = Math.max(st.maxGapMs, now - st.lastRx);
      st.lastRx = now;
      this.onData(idx, st, d);
    });
    sock.on('drain', () => (st.blocked = false));
    sock.on('error', (e: NodeJS.ErrnoException) => this.fail(st, `socket error ${e.code ?? e.message}`));
    sock.on('end', () => {
      st.ended = true;
      if (!this.stopping) this.fail(st, 'server closed the stream (FIN) while the client was still sending');
    });
    sock.on('close', () => {
      st.closed = true;
      if (!this.stopping && !st.error) this.fail(st, 'socket closed unexpectedly');
    });
  }

  fail(st: Stream, why: string): void {
    if (!st.error) st.error = `${why} (sent ${st.sent}, received ${st.received})`;
  }

  abstract outstanding(st: Stream): number;
  abstract onData(idx: number, st: Stream, d: Buffer): void;
  abstract tick(): void;

  status(): Record<string, unknown> {
    let sent = 0;
    let received = 0;
    let maxGapMs = 0;
    const errors: string[] = [];
    for (const st of this.streams) {
      sent += st.sent;
      received += st.received;
      maxGapMs = Math.max(maxGapMs, st.maxGapMs);
      if (st.error) errors.push(`:${st.localPort} ${st.error}`);
    }
    return { conns: this.streams.length, sent, received, maxGapMs, errors, elapsedMs: Date.now() - this.started };
  }

  async stop(): Promise<Record<string, unknown>> {
    this.stopping = true;
    const deadline = Date.now() + DRAIN_LIMIT_MS;
    while (Date.now() < deadline && this.streams.some((st) => !st.error && this.outstanding(st) > 0)) await sleep(5);
    for (const st of this.streams) {
      if (!st.error && this.outstanding(st) > 0) this.fail(st, `${this.outstanding(st)} still unanswered after ${DRAIN_LIMIT_MS} ms`);
      if (!st.closed) st.sock.end();
    }
    while (Date.now() < deadline && this.streams.some((st) => !st.ended && !st.closed)) await sleep(5);
    for (const st of this.streams) {
      if (!st.ended && !st.error) this.fail(st, 'no FIN from the server after the client half-closed');
      st.sock.destroy();
    }
    return { ...this.status(), ok: this.streams.every((st) => !st.error && st.sent === st.received) };
  }
}

class MessageClient extends Client {
  readonly #rate: number;
  readonly #buf: (Buffer | undefined)[] = [];

  constructor(rate: number) {
    super();
    this.#rate = rate;
  }

  outstanding(st: Stream): number {
    return st.sent - st.received;
  }

  onData(idx: number, st: Stream, d: Buffer): void {
    const held = this.#buf[idx];
    const pending = held ? Buffer.concat([held, d]) : d;
    let at = 0;
    for (; at + MSG <= pending.length; at += MSG) {
      if (st.error) return;
      const conn = pending.readUInt32LE(at);
      const seq = pending.readUInt32LE(at + 4);
      if (conn !== idx || seq !== st.received) {
        this.fail(st, `got message ${conn}/${seq}, expected ${idx}/${st.received}`);
        return;
      }
      if (seq >= st.sent) {
        this.fail(st, `message ${seq} answered before it was sent`);
        return;
      }
      if (!message(idx, seq).equals(pending.subarray(at, at + MSG))) {
        this.fail(st, `message ${seq} came back with different bytes`);
        return;
      }
      st.received++;
    }
    this.#buf[idx] = at < pending.length ? Buffer.from(pending.subarray(at)) : undefined;
  }

  tick(): void {
    if (this.stopping) return;
    const due = Math.floor(((Date.now() - this.started) * this.#rate) / 1000);
    this.streams.forEach((st, idx) => {
      if (st.error || st.blocked || st.closed) return;
      const n = Math.min(due - st.sent, 512);
      if (n <= 0) return;
      const parts: Buffer[] = [];
      for (let k = 0; k < n; k++) parts.push(message(idx, st.sent + k));
      st.sent += n;
      if (!st.sock.write(Buffer.concat(parts))) st.blocked = true;
    });
  }
}

class BulkClient extends Client {
  readonly #window: number;
  readonly #verifier = new PatternVerifier();
  maxInFlight = 0;

  constructor(window: number) {
    super();
    this.#window = window;
  }

  outstanding(st: Stream): number {
    return st.sent - st.received;
  }

  onData(_idx: number, st: Stream, d: Buffer): void {
    this.#verifier.update(d);
    st.received += d.length;
    if (!this.#verifier.ok) this.fail(st, `echo differs from the stream at byte ${this.#verifier.firstMismatch}`);
    else if (st.received > st.sent) this.fail(st, 'more bytes came back than were sent');
    this.tick();
  }

  tick(): void {
    if (this.stopping) return;
    const st = this.streams[0];
    if (!st || st.error || st.closed) return;
    const chunk = 64 * 1024;
    while (!st.blocked && st.sent - st.received + chunk <= this.#window) {
      const b = Buffer.allocUnsafe(chunk);
      patternFill(b, st.sent);
      st.sent += chunk;
      if (!st.sock.write(b)) st.blocked = true;
    }
    this.maxInFlight = Math.max(this.maxInFlight, st.sent - st.received);
  }

  override status(): Record<string, unknown> {
    return { ...super.status(), maxInFlight: this.maxInFlight };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function main(argv: string[]): Promise<void> {
  const [mode, host, portArg, a, b] = argv;
  let client: Client;
  let conns = 1;
  if (mode === 'messages') {
    conns = Number(a);
    client = new MessageClient(Number(b));
  } else if (mode === 'bulk') {
    client = new BulkClient(Number(a));
  } else {
    return;
  }
  await client.open(host!, Number(portArg), conns);
  const timer = setInterval(() => client.tick(), TICK_MS);
  // bulk: 'drain' must restart writing at once, not at the next tick
  for (const st of client.streams) st.sock.on('drain', () => client.tick());
  out({ event: 'ready', localPorts: client.streams.map((st) => st.localPort) });
  const rl = createInterface({ input: process.stdin });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    out({ event: 'result', ...(await client.stop()) });
    rl.close();
    process.exit(0);
  };
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'status') out({ event: 'status', ...client.status() });
    else if (cmd === 'stop') void stop();
  });
  rl.on('close', () => void stop()); // the test went away: finish up rather than linger
  process.on('SIGTERM', () => void stop());
}

/** A hostile or malformed peer: what did the server do with our bytes? */
async function raw(host: string, port: number, hex: string, waitMs: number): Promise<void> {
  const t0 = Date.now();
  let s: Socket;
  try {
    s = await connectTo(host, port);
  } catch (e) {
    out({ event: 'result', outcome: 'connect-error', error: (e as NodeJS.ErrnoException).code ?? String(e) });
    return;
  }
  let received = 0;
  const outcome = await new Promise<string>((resolve) => {
    const t = setTimeout(() => resolve('open'), waitMs);
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(e.code === 'ECONNRESET' ? 'reset' : `error ${e.code ?? e.message}`);
    });
    s.on('end', () => {
      clearTimeout(t);
      resolve('end');
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve('closed');
    });
    s.write(Buffer.from(hex, 'hex'));
  });
  s.destroy();
  out({ event: 'result', outcome, received, ms: Date.now() - t0 });
}

const mode = process.argv[2];
if (mode === 'raw') {
  const [, host, port, hex, waitMs] = process.argv.slice(2);
  raw(host!, Number(port), hex!, Number(waitMs)).catch((e: Error) => out({ event: 'error', error: e.message }));
} else if (mode === 'messages' || mode === 'bulk') {
  main(process.argv.slice(2)).catch((e: NodeJS.ErrnoException) => {
    out({ event: 'error', error: e.code ?? e.message });
    process.exit(1);
  });
}
