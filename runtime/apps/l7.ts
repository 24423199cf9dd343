// L7 direct server return (Prism, NSDI'21) on live connection migration: `capybara serve l7` on every
// backend host behind the VIP. The host that owns a connection reads the next HTTP/1.1 request; when the
// object (GET /obj/<name>, apps/l7-objects.ts) belongs to another backend, it does not fetch it: it moves
// the connection there (stack.migrate) with the request bytes it has read and not answered as the app's
// userData, and the owner answers straight to the client through the VIP (the balancer's redirect table
// follows the migration). On keep-alive the next request is routed again from wherever the connection is
// now; pipelined requests are answered in order, because routing happens only between two responses and
// the unanswered requests travel with the connection, in order, in front of anything still in TCP.
//
// `mode: 'proxy'` is the classic alternative for comparison: the host holding the connection fetches the
// object from its owner over a second connection and relays it (apps/l7-proxy.ts).
//
// Like the http app (apps/http.ts) a connection is an explicit state machine, so an outside migration
// (`capybara ctl migrate`) can capture it at any moment: between events its state is the phase, the
// response being written (object name, offset) and the bytes pulled but not parsed. While a proxied
// response is being relayed, capture waits for the relay to end (it cannot move a second connection).
import type { Duplex } from 'node:stream';
import { Catalogue, OBJECT_PREFIX, objectChunk, ownerOf } from './l7-objects.js';
import { PROXIED_HEADER, UpstreamPool } from './l7-proxy.js';
import { PumpedSession } from './pumped.js';
import {
  AppStateError, MAX_STATE_BYTES, StateReader, StateWriter, type MigrationHooks, type ResumableApp,
} from './resumable.js';

export const L7_PORT = 80;
export type L7Mode = 'dsr' | 'proxy';

/** Per-host counters (`capybara ctl stats` shows them under "app"). */
export interface L7Counters {
  /** Requests this host answered itself (any status). */
  requests: number;
  /** Object requests this host answered itself (200). */
  objects: number;
  /** Object body bytes this host wrote to clients itself. */
  servedBytes: number;
  /** Connections this host moved to an object's owner (DSR routing). */
  routeMigrations: number;
  /** Routing migrations that failed (the request was then answered here). */
  routeFailures: number;
  /** Connections that arrived here by migration (routed or moved from outside). */
  migratedIn: number;
  /** Requests relayed from an owner (proxy mode) and their body bytes. */
  proxied: number;
  proxiedBytes: number;
  /** Upstream connections opened (proxy mode). */
  upstreamConnects: number;
  /** Requests that failed here (upstream errors, bad requests are not counted). */
  errors: number;
}

export function newL7Counters(): L7Counters {
  return { requests: 0, objects: 0, servedBytes: 0, routeMigrations: 0, routeFailures: 0, migratedIn: 0, proxied: 0, proxiedBytes: 0, upstreamConnects: 0, errors: 0 };
}

export interface L7Options {
  /** This backend's name (the runtime name peers know it by). */
  self: string;
  /** Every backend's name, this one included: object ownership is hashed over them. */
  backends: readonly string[];
  mode?: L7Mode;
  catalogue?: Catalogue;
  /** Moves sock to peer with the app's state; rejects when it could not (the connection then stays). */
  migrate?: (sock: Duplex, peer: string, userData: Uint8Array) => Promise<unknown>;
  /** Opens a connection to a peer's L7 server (proxy mode). */
  connect?: (peer: string) => Duplex;
  counters?: L7Counters;
  chunkSize?: number;
}

export interface L7App extends ResumableApp {
  readonly counters: L7Counters;
  close(): void;
}

interface Conf {
  self: string;
  backends: readonly string[];
  mode: L7Mode;
  catalogue: Catalogue;
  migrate: L7Options['migrate'];
  pool: UpstreamPool | null;
  counters: L7Counters;
  chunkSize: number;
}

export function l7App(opts: L7Options): L7App {
  const counters = opts.counters ?? newL7Counters();
  const connect = opts.connect;
  const pool = connect ? new UpstreamPool((peer) => {
    counters.upstreamConnects++;
    return connect(peer);
  }) : null;
  const conf: Conf = {
    self: opts.self, backends: [...opts.backends], mode: opts.mode ?? 'dsr', catalogue: opts.catalogue ?? new Catalogue(),
    migrate: opts.migrate, pool, counters, chunkSize: opts.chunkSize ?? 64 * 1024,
  };
  if (!conf.backends.includes(conf.self)) throw new RangeError(`backends (${conf.backends.join(',')}) must include this host (${conf.self})`);
  return {
    counters,
    onConnection: (sock) => new L7Session(sock, conf, { ...FRESH }).hooks,
    resume: (sock, state) => {
      const s = decodeL7State(state);
      counters.migratedIn++;
      return new L7Session(sock, conf, s).hooks;
    },
    close: () => pool?.close(),
  };
}

// ---- requests and responses --------------------------------------------------------------------

const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEAD = 16 * 1024;
const READ_AHEAD = 4 * MAX_HEAD;
const MAX_TEXT = 1024;
const STATUS: Record<number, string> = {
  200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 431: 'Request Header Fields Too Large',
  502: 'Bad Gateway', 505: 'HTTP Version Not Supported',
};

interface Head {
  method: string;
  path: string;
  minor: number;
  keepAlive: boolean;
  proxied: boolean;
}

function parseHead(text: string): Head | number {
  const lines = text.split('\r\n');
  const m = /^([A-Z]{1,16}) (\S+) HTTP\/(\d)\.(\d)$/.exec(lines[0] ?? '');
  if (!m) return 400;
  if (m[3] !== '1') return 505;
  let connection = '';
  let proxied = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return 400;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'connection') connection += `,${value.toLowerCase()}`;
    else if (name === PROXIED_HEADER) proxied = value === '1';
    else if (name === 'transfer-encoding' || (name === 'content-length' && value !== '0')) return 400; // GETs only
  }
  const tokens = connection.split(',').map((t) => t.trim());
  const minor = Number(m[4]);
  const keepAlive = !tokens.includes('close') && (minor === 1 || tokens.includes('keep-alive'));
  return { method: m[1]!, path: m[2]!.split('?')[0]!, minor, keepAlive, proxied };
}

/** What to send: enough to regenerate any suffix of it on another host. */
interface Response {
  status: number;
  minor: number;
  keepAlive: boolean;
  isHead: boolean;
  /** Object body (name, size) or a short text body. */
  name: string | null;
  size: number;
  text: Buffer | null;
}

function headBytes(r: Response, servedBy: string): Buffer {
  const type = r.name !== null ? 'application/octet-stream' : 'text/plain';
  let s = `HTTP/1.1 ${r.status} ${STATUS[r.status] ?? 'Unknown'}\r\nServer: capybara-l7\r\nX-Served-By: ${servedBy}\r\nContent-Type: ${type}\r\nContent-Length: ${r.size}\r\n`;
  if (!r.keepAlive) s += 'Connection: close\r\n';
  else if (r.minor === 0) s += 'Connection: keep-alive\r\n';
  return Buffer.from(`${s}\r\n`, 'latin1');
}

function textResponse(status: number, h: Head | null, text: string): Response {
  const body = Buffer.from(text);
  return {
    status, minor: h?.minor ?? 1, keepAlive: h?.keepAlive ?? false, isHead: h?.method === 'HEAD', name: null, size: body.length, text: body,
  };
}

// ---- the connection state machine --------------------------------------------------------------

export enum L7Phase {
  Head = 0,    // waiting for / parsing the next request
  Respond = 1, // writing a response of this host
  Relay = 2,   // relaying a response from the owner (proxy mode; never captured)
  Done = 3,
}

export interface L7State {
  phase: L7Phase;
  peerEof: boolean;
  /** Requests answered on this connection so far. */
  served: number;
  /** The request at the front of `buffered` was routed here by its owner's hash: answer it here. */
  routed: boolean;
  response: Response | null;
  headWritten: boolean;
  bodyOffset: number;
  /** Bytes pulled from the socket and not parsed yet (the next requests, maybe a partial one). */
  buffered: Buffer;
}

const FRESH: L7State = {
  phase: L7Phase.Head, peerEof: false, served: 0, routed: false, response: null, headWritten: false, bodyOffset: 0, buffered: Buffer.alloc(0),
};

class L7Session extends PumpedSession<L7State> {
  readonly hooks: MigrationHooks;
  #c: Conf;
  // `frozen` (base): captured or routing: no read, no new request
  #routing = false;  // our own migration to an owner is in flight
  #localOnce = false; // routing the front request failed: answer it here
  #captureWaiter: (() => void) | null = null;
  #upstream: { pause(): void; resume(): void } | null = null;

  constructor(sock: Duplex, conf: Conf, state: L7State) {
    super(sock, state);
    this.#c = conf;
    this.hooks = {
      capture: () => {
        // Our own routing migration is under way: a second one of the same connection must not start.
        if (this.#routing) return Promise.reject(new AppStateError('l7: the connection is already moving to its owner'));
        this.frozen = true;
        if (this.s.phase !== L7Phase.Relay) return Promise.resolve(encodeL7State(this.s));
        return new Promise((resolve) => {
          this.#captureWaiter = () => resolve(encodeL7State(this.s));
        });
      },
      abort: () => {
        if (!this.frozen || this.#routing) return; // a failed routing resumes in its own handler
        this.frozen = false;
        this.pump();
      },
    };
    this.start();
  }

  protected isDone(): boolean {
    return this.s.phase === L7Phase.Done;
  }

  protected markDone(): void {
    this.s.phase = L7Phase.Done;
  }

  /** A proxied response is being relayed: the relay drives the socket until it ends. */
  protected override parked(): boolean {
    return this.s.phase === L7Phase.Relay;
  }

  protected override onDrain(): void {
    this.#upstream?.resume();
  }

  protected step(): boolean {
    switch (this.s.phase) {
      case L7Phase.Head: return this.#stepHead();
      case L7Phase.Respond: return this.#stepRespond();
      default: return false;
    }
  }

  #stepHead(): boolean {
    const s = this.s;
    let skip = 0;
    while (s.buffered[skip] === 0x0d && s.buffered[skip + 1] === 0x0a) skip += 2;
    if (skip > 0) s.buffered = s.buffered.subarray(skip);
    const end = s.buffered.indexOf(CRLFCRLF);
    if (end < 0) {
      if (s.buffered.length > MAX_HEAD) return this.#respond(textResponse(431, null, 'request head too large\n'), 0);
      if (this.fill(READ_AHEAD)) return true;
      if (s.peerEof) this.finish(true);
      return false;
    }
    if (end > MAX_HEAD) return this.#respond(textResponse(431, null, 'request head too large\n'), 0);
    const h = parseHead(s.buffered.subarray(0, end).toString('latin1'));
    if (typeof h === 'number') return this.#respond(textResponse(h, null, `${STATUS[h]}\n`), 0);
    const isObject = h.path.startsWith(OBJECT_PREFIX);
    if (isObject && (h.method === 'GET' || h.method === 'HEAD') && !h.proxied && !s.routed && !this.#localOnce) {
      const owner = ownerOf(h.path, this.#c.backends);
      if (owner !== this.#c.self) {
        if (this.#c.mode === 'dsr' && this.#c.migrate) {
          this.#route(owner); // the request stays at the front of `buffered` and travels
          return false;
        }
        if (this.#c.mode === 'proxy' && this.#c.pool && h.method === 'GET') {
          s.buffered = s.buffered.subarray(end + 4);
          this.#relay(owner, h);
          return false;
        }
      }
    }
    const consumed = end + 4;
    s.routed = false;
    this.#localOnce = false;
    if (h.method !== 'GET' && h.method !== 'HEAD') return this.#respond(textResponse(405, { ...h, keepAlive: false }, 'only GET and HEAD\n'), consumed);
    if (h.path === '/health') return this.#respond(textResponse(200, h, 'ok'), consumed);
    if (isObject) {
      const name = h.path.slice(OBJECT_PREFIX.length);
      const size = this.#c.catalogue.size(name);
      if (size !== null) {
        return this.#respond({ status: 200, minor: h.minor, keepAlive: h.keepAlive, isHead: h.method === 'HEAD', name, size, text: null }, consumed);
      }
    }
    return this.#respond(textResponse(404, h, 'not found\n'), consumed);
  }

  #respond(r: Response, consumed: number): boolean {
    const s = this.s;
    s.buffered = s.buffered.subarray(consumed);
    s.response = r;
    s.headWritten = false;
    s.bodyOffset = 0;
    s.phase = L7Phase.Respond;
    this.#c.counters.requests++;
    if (r.name !== null && r.status === 200) this.#c.counters.objects++;
    return true;
  }

  #stepRespond(): boolean {
    const s = this.s;
    const r = s.response!;
    const total = r.isHead ? 0 : r.size;
    if (!s.headWritten) {
      s.headWritten = true;
      const head = headBytes(r, this.#c.self);
      if (r.text !== null && total > 0) {
        s.bodyOffset = total;
        return this.write(Buffer.concat([head, r.text]));
      }
      return this.write(head);
    }
    if (s.bodyOffset < total) {
      const len = Math.min(this.#c.chunkSize, total - s.bodyOffset);
      const off = s.bodyOffset;
      s.bodyOffset += len;
      this.#c.counters.servedBytes += len;
      return this.write(objectChunk(r.name!, off, len));
    }
    this.#endResponse(r.keepAlive);
    return true;
  }

  #endResponse(keepAlive: boolean): void {
    const s = this.s;
    s.served++;
    s.response = null;
    s.headWritten = false;
    s.bodyOffset = 0;
    if (keepAlive) s.phase = L7Phase.Head;
    else this.finish(true);
  }

  /** DSR: hand the connection (and the requests it holds) to the object's owner. */
  #route(owner: string): void {
    this.frozen = true;
    this.#routing = true;
    const userData = encodeL7State({ ...this.s, routed: true });
    this.#c.migrate!(this.sock, owner, userData).then(() => {
      this.#c.counters.routeMigrations++;
      this.s.phase = L7Phase.Done; // the owner has it; this side's stream is closed by the runtime
    }, () => {
      this.#c.counters.routeFailures++;
      this.#routing = false;
      this.frozen = false;
      this.#localOnce = true; // the connection is still here: answer the request here
      if (!this.sock.destroyed) this.pump();
    });
  }

  /** Proxy: fetch from the owner over a pooled connection and relay, with the client's backpressure. */
  #relay(owner: string, h: Head): void {
    const s = this.s;
    s.phase = L7Phase.Relay;
    const cnt = this.#c.counters;
    let headWritten = false;
    const done = (keepAlive: boolean) => {
      this.#upstream = null;
      if (s.phase !== L7Phase.Relay) return;
      s.served++;
      if (keepAlive) s.phase = L7Phase.Head;
      else this.finish(true);
      const w = this.#captureWaiter;
      this.#captureWaiter = null;
      w?.();
      this.pump();
    };
    this.#c.pool!.fetch(owner, h.path, {
      onHead: (status, length) => {
        headWritten = true;
        const r: Response = { status, minor: h.minor, keepAlive: h.keepAlive, isHead: false, name: status === 200 ? '' : null, size: length, text: null };
        this.write(Buffer.from(headBytes(r, owner).toString('latin1').replace('\r\n\r\n', `\r\nVia: ${this.#c.self}\r\n\r\n`), 'latin1'));
      },
      onBody: (chunk) => {
        cnt.proxiedBytes += chunk.length;
        this.write(chunk);
        return !this.waitingDrain;
      },
    }, (flow) => (this.#upstream = flow)).then(() => {
      cnt.proxied++;
      done(h.keepAlive);
    }, () => {
      cnt.errors++;
      if (!headWritten && !this.sock.destroyed) {
        const r = textResponse(502, { ...h, keepAlive: false }, 'owner unreachable\n');
        this.write(Buffer.concat([headBytes(r, this.#c.self), r.text!]));
        done(false);
      } else {
        this.sock.destroy(); // half a response went out: the client must see the connection fail
        done(false);
      }
    });
  }
}

// ---- the state format ----------------------------------------------------------------------------
//
// Little-endian, version 1:
//   0  4  magic "CPL7"          4  2  version (1)
//   6  1  phase: 0 head, 1 respond, 3 done (2, relay, is never captured)
//   7  1  flags: bit0 peer EOF seen, bit1 routed here, bit2 head written, bit3 keep-alive, bit4 HEAD request,
//            bit5 object body (else text); bits 6, 7 zero
//   8  8  requests answered so far
//  16  2  status (respond phase: 100..599, else 0)     18  1  HTTP/1.minor     19  1  reserved (0)
//  20  8  body length      28  8  body bytes written (<= body length)
//  36  2  N = object name length (object body) or text length (<= 1024)
//  38  N  object name or text body
//  ..  4  B = buffered bytes (<= 4 MiB)      ..  B  bytes pulled from the socket and not parsed
// Nothing may follow. An empty state means a fresh connection.

const MAGIC = 'CPL7';
const VERSION = 1;
const F_EOF = 1;
const F_ROUTED = 2;
const F_HEAD_WRITTEN = 4;
const F_KEEP_ALIVE = 8;
const F_HEAD_REQ = 16;
const F_OBJECT = 32;

export function encodeL7State(s: L7State): Uint8Array {
  if (s.phase === L7Phase.Relay) throw new RangeError('a relaying connection cannot be captured');
  const r = s.response;
  const label = r === null ? Buffer.alloc(0) : r.name !== null ? Buffer.from(r.name, 'latin1') : r.text!;
  let flags = (s.peerEof ? F_EOF : 0) | (s.routed ? F_ROUTED : 0);
  if (r !== null) {
    if (s.headWritten) flags |= F_HEAD_WRITTEN;
    if (r.keepAlive) flags |= F_KEEP_ALIVE;
    if (r.isHead) flags |= F_HEAD_REQ;
    if (r.name !== null) flags |= F_OBJECT;
  }
  const w = new StateWriter(38 + label.length + 4 + s.buffered.length);
  w.head(MAGIC, VERSION).u8(s.phase).u8(flags).u64(s.served);
  w.u16(r?.status ?? 0).u8(r?.minor ?? 0).u8(0).u64(r?.size ?? 0).u64(r === null ? 0 : s.bodyOffset);
  w.u16(label.length).raw(label).u32(s.buffered.length).raw(s.buffered);
  return w.done();
}

/** Validates and decodes a captured L7 state (throws AppStateError, code ERR_APP_STATE). */
export function decodeL7State(bytes: Uint8Array): L7State {
  if (bytes instanceof Uint8Array && bytes.length === 0) return { ...FRESH };
  const rd = new StateReader(bytes, 'l7');
  rd.head(MAGIC, VERSION);
  const phase = rd.u8('phase');
  if (phase !== L7Phase.Head && phase !== L7Phase.Respond && phase !== L7Phase.Done) rd.fail(`bad phase ${phase}`);
  const flags = rd.flags(0x3f);
  const served = rd.u64('served');
  const status = rd.u16('status');
  const minor = rd.u8('minor');
  if (rd.u8('reserved') !== 0) rd.fail('reserved byte not zero');
  const size = rd.u64('body length');
  const bodyOffset = rd.u64('body offset');
  const n = rd.u16('label length');
  const label = rd.raw(n, 'label');
  let response: Response | null = null;
  if (phase === L7Phase.Respond) {
    if (status < 100 || status > 599) rd.fail(`bad status ${status}`);
    if (minor > 1) rd.fail(`bad minor version ${minor}`);
    if (bodyOffset > size) rd.fail(`body offset ${bodyOffset} beyond length ${size}`);
    const isObject = (flags & F_OBJECT) !== 0;
    if (isObject && !/^[A-Za-z0-9._-]{0,200}$/.test(label.toString('latin1'))) rd.fail('bad object name');
    if (!isObject && (n > MAX_TEXT || n !== size)) rd.fail('bad text body');
    response = {
      status, minor, keepAlive: (flags & F_KEEP_ALIVE) !== 0, isHead: (flags & F_HEAD_REQ) !== 0,
      name: isObject ? label.toString('latin1') : null, size, text: isObject ? null : label,
    };
  } else if ((flags & ~(F_EOF | F_ROUTED)) !== 0 || status !== 0 || size !== 0 || bodyOffset !== 0 || n !== 0) {
    rd.fail(`phase ${phase} carries response fields`);
  }
  const b = rd.u32('buffered length');
  if (b > MAX_STATE_BYTES) rd.fail(`buffered length ${b} over ${MAX_STATE_BYTES}`);
  const buffered = rd.raw(b, 'buffered bytes');
  rd.end();
  return {
    phase, peerEof: (flags & F_EOF) !== 0, served, routed: (flags & F_ROUTED) !== 0, response,
    headWritten: response !== null && (flags & F_HEAD_WRITTEN) !== 0, bodyOffset, buffered,
  };
}
