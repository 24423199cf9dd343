// A small HTTP/1.1 server app over any Duplex (a capybara Connection or a Node net.Socket):
//   GET /bytes/N  -> N pattern bytes (apps/pattern.ts), streamed in chunks with backpressure
//   GET /health   -> 200 "ok"
//   anything else -> 404
// Keep-alive by default (HTTP/1.1), Connection: close honoured, pipelined requests answered in order.
// Requests are parsed by hand so the app needs nothing but a byte stream.
//
// Resumable (apps/resumable.ts): a connection is an explicit state machine rather than an async loop,
// so at any moment between events its whole state is a few numbers (phase, response, body offset) plus
// the bytes it pulled but has not parsed. capture() freezes it (no read, no write after that) and encodes
// that; resume() rebuilds it on another socket, and the byte stream carries on where the source stopped:
// the head is regenerated only if it was not written, the pattern restarts at the written offset.
// Input is pulled with read() only when the parser needs it, so while a response streams the pipelined
// requests behind it stay in the socket (TCP backpressure) instead of in the app's state.
import type { Duplex } from 'node:stream';
import { patternChunk } from './pattern.js';
import { PumpedSession } from './pumped.js';
import {
  AppStateError, MAX_STATE_BYTES, StateReader, StateWriter, offerHooks,
  type MigrationHooks, type ResumableApp,
} from './resumable.js';

export const HTTP_PORT = 80;

export interface HttpAppOptions {
  /** Largest request head accepted (request line + headers); at most 1 MiB. */
  maxHeaderBytes?: number;
  /** Largest N for /bytes/N. */
  maxBytes?: number;
  /** Size of each body chunk written. */
  chunkSize?: number;
  /** Called once per request answered (method, path, status), when its head has been parsed. */
  onRequest?: (method: string, path: string, status: number) => void;
}

interface Request {
  method: string;
  target: string;
  minor: number; // HTTP/1.minor
  headers: Map<string, string>;
}

type Parsed = { kind: 'request'; req: Request; bodyLength: number } | { kind: 'error'; status: number; reason: string };

const STATUS: Record<number, string> = {
  200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 413: 'Content Too Large',
  431: 'Request Header Fields Too Large', 501: 'Not Implemented', 505: 'HTTP Version Not Supported',
};

const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEADER_LIMIT = 1024 * 1024; // keeps the read-ahead (4x) inside MAX_STATE_BYTES
const MAX_TEXT_BODY = 1024; // small text bodies (errors, /health) travel in the state verbatim
interface Conf {
  maxHeaderBytes: number;
  maxBytes: number;
  chunkSize: number;
  readAhead: number; // most bytes pulled into the parser's buffer
  onRequest: HttpAppOptions['onRequest'];
}

function confOf(opts: HttpAppOptions): Conf {
  const maxHeaderBytes = opts.maxHeaderBytes ?? 16 * 1024;
  if (!Number.isInteger(maxHeaderBytes) || maxHeaderBytes < 64 || maxHeaderBytes > MAX_HEADER_LIMIT) {
    throw new RangeError(`maxHeaderBytes must be an integer in 64..${MAX_HEADER_LIMIT}`);
  }
  const chunkSize = opts.chunkSize ?? 64 * 1024;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError('chunkSize must be a positive integer');
  return {
    maxHeaderBytes,
    maxBytes: opts.maxBytes ?? 2 ** 40,
    chunkSize,
    readAhead: maxHeaderBytes * 4,
    onRequest: opts.onRequest,
  };
}

/** The HTTP app with migration hooks: serve new connections, or continue captured ones. */
export function httpResumable(opts: HttpAppOptions = {}): ResumableApp {
  const conf = confOf(opts);
  return {
    onConnection: (sock) => new HttpSession(sock, conf, FRESH).hooks,
    resume: (sock, state) => new HttpSession(sock, conf, decodeHttpState(state)).hooks,
  };
}

/** Per-connection handler (CLI, demo); a capybara Connection gets the hooks so the migrator can use them. */
export function httpApp(opts: HttpAppOptions = {}): (sock: Duplex) => void {
  const app = httpResumable(opts);
  return (sock) => offerHooks(sock, app.onConnection(sock));
}

// ---- request parsing --------------------------------------------------------------------------

function parseHead(head: string): Parsed {
  const lines = head.split('\r\n');
  const m = /^([A-Z]{1,16}) (\S+) HTTP\/(\d)\.(\d)$/.exec(lines[0] ?? '');
  if (!m) return { kind: 'error', status: 400, reason: 'bad request line' };
  if (m[3] !== '1') return { kind: 'error', status: 505, reason: 'only HTTP/1.x' };
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0 || /\s/.test(line.slice(0, colon))) return { kind: 'error', status: 400, reason: 'bad header line' };
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  const req: Request = { method: m[1]!, target: m[2]!, minor: Number(m[4]), headers };
  if (headers.has('transfer-encoding')) return { kind: 'error', status: 501, reason: 'chunked request bodies are not supported' };
  let bodyLength = 0;
  const cl = headers.get('content-length');
  if (cl !== undefined) {
    if (!/^\d{1,15}$/.test(cl)) return { kind: 'error', status: 400, reason: 'bad content-length' };
    bodyLength = Number(cl);
  }
  return { kind: 'request', req, bodyLength };
}

function wantsKeepAlive(req: Request): boolean {
  const tokens = (req.headers.get('connection') ?? '').toLowerCase().split(',').map((t) => t.trim());
  if (tokens.includes('close')) return false;
  if (req.minor === 0) return tokens.includes('keep-alive');
  return true;
}

// ---- responses --------------------------------------------------------------------------------

/** What to send: everything needed to regenerate any suffix of its bytes on another host. */
export interface HttpResponseState {
  status: number;
  minor: number;
  keepAlive: boolean;
  isHead: boolean;
  /** A short text body, or the length of a /bytes pattern body. */
  body: Buffer | number;
}

function bodyLength(r: HttpResponseState): number {
  return typeof r.body === 'number' ? r.body : r.body.length;
}

function headBytes(r: HttpResponseState): Buffer {
  const type = typeof r.body === 'number' ? 'application/octet-stream' : 'text/plain';
  let s = `HTTP/1.1 ${r.status} ${STATUS[r.status] ?? 'Unknown'}\r\nServer: capybara\r\nContent-Type: ${type}\r\nContent-Length: ${bodyLength(r)}\r\n`;
  if (!r.keepAlive) s += 'Connection: close\r\n';
  else if (r.minor === 0) s += 'Connection: keep-alive\r\n';
  return Buffer.from(`${s}\r\n`, 'latin1');
}

function bodySlice(r: HttpResponseState, off: number, len: number): Buffer {
  return typeof r.body === 'number' ? patternChunk(off, len) : r.body.subarray(off, off + len);
}

function textResponse(req: Request, keepAlive: boolean, status: number, text: string): HttpResponseState {
  return { status, minor: req.minor, keepAlive, isHead: req.method === 'HEAD', body: Buffer.from(text) };
}

function errorResponse(status: number): HttpResponseState {
  return { status, minor: 1, keepAlive: false, isHead: false, body: Buffer.from(`${STATUS[status] ?? 'error'}\n`) };
}

function route(req: Request, keepAlive: boolean, conf: Conf): HttpResponseState {
  const path = req.target.split('?')[0]!;
  const isHead = req.method === 'HEAD';
  let r: HttpResponseState;
  if (req.method !== 'GET' && !isHead) r = textResponse(req, keepAlive, 405, 'method not allowed\n');
  else if (path === '/health') r = textResponse(req, keepAlive, 200, 'ok');
  else {
    const m = /^\/bytes\/(\d{1,15})$/.exec(path);
    if (!m) r = textResponse(req, keepAlive, 404, 'not found\n');
    else {
      const n = Number(m[1]);
      if (n > conf.maxBytes) r = textResponse(req, keepAlive, 413, `at most ${conf.maxBytes} bytes\n`);
      else r = { status: 200, minor: req.minor, keepAlive, isHead, body: n };
    }
  }
  conf.onRequest?.(req.method, path, r.status);
  return r;
}

// ---- the connection state machine ------------------------------------------------------------

export enum HttpPhase {
  Head = 0,    // waiting for / parsing the next request head
  Body = 1,    // dropping the request body; the response is decided
  Respond = 2, // writing the response
  Done = 3,    // the app finished with this connection (ended or gave up)
}

/** The whole state of a connection between two events; what capture() encodes. */
export interface HttpState {
  phase: HttpPhase;
  /** The peer's FIN was seen by the app (before capture). */
  peerEof: boolean;
  /** Requests answered so far on this connection (position in the request queue). */
  served: number;
  /** Request body bytes still to drop (Body phase). */
  bodyLeft: number;
  /** The response decided or in progress (Body and Respond phases). */
  response: HttpResponseState | null;
  headWritten: boolean;
  /** Body bytes already handed to the socket (the pattern offset for /bytes). */
  bodyOffset: number;
  /** Bytes pulled from the socket and not consumed by the parser yet (next pipelined requests, partial head). */
  buffered: Buffer;
}

const FRESH: HttpState = {
  phase: HttpPhase.Head, peerEof: false, served: 0, bodyLeft: 0, response: null, headWritten: false, bodyOffset: 0,
  buffered: Buffer.alloc(0),
};

class HttpSession extends PumpedSession<HttpState> {
  readonly hooks: MigrationHooks;
  #conf: Conf;

  constructor(sock: Duplex, conf: Conf, state: HttpState) {
    super(sock, state);
    this.#conf = conf;
    this.hooks = {
      capture: () => {
        this.frozen = true;
        // Nothing is half-written: every write is one synchronous sock.write() and the state already
        // counts it, so the state is exact now even if the socket is in backpressure.
        return Promise.resolve(encodeHttpState(this.s));
      },
      abort: () => {
        if (!this.frozen) return;
        this.frozen = false;
        this.pump();
      },
    };
    this.start();
  }

  protected isDone(): boolean {
    return this.s.phase === HttpPhase.Done;
  }

  protected markDone(): void {
    this.s.phase = HttpPhase.Done;
  }

  protected step(): boolean {
    switch (this.s.phase) {
      case HttpPhase.Head: return this.#stepHead();
      case HttpPhase.Body: return this.#stepBody();
      case HttpPhase.Respond: return this.#stepRespond();
      default: return false;
    }
  }

  #consume(n: number): void {
    this.s.buffered = this.s.buffered.subarray(n);
  }

  #stepHead(): boolean {
    const s = this.s;
    // Tolerate stray CRLFs between pipelined requests (RFC 9112 §2.2).
    let skip = 0;
    while (s.buffered[skip] === 0x0d && s.buffered[skip + 1] === 0x0a) skip += 2;
    if (skip > 0) this.#consume(skip);
    const end = s.buffered.indexOf(CRLFCRLF);
    if (end < 0) {
      if (s.buffered.length > this.#conf.maxHeaderBytes) return this.#startError(431);
      if (this.fill(this.#conf.readAhead)) return true;
      // Clean end between requests; a partial request at EOF is dropped like any server does.
      if (s.peerEof) this.finish(true);
      return false;
    }
    if (end > this.#conf.maxHeaderBytes) return this.#startError(431);
    const text = s.buffered.subarray(0, end).toString('latin1');
    this.#consume(end + 4);
    const parsed = parseHead(text);
    if (parsed.kind === 'error') return this.#startError(parsed.status);
    s.response = route(parsed.req, wantsKeepAlive(parsed.req), this.#conf);
    s.bodyLeft = parsed.bodyLength;
    s.phase = HttpPhase.Body;
    return true;
  }

  #startError(status: number): boolean {
    const s = this.s;
    this.#conf.onRequest?.('-', '-', status);
    s.response = errorResponse(status);
    s.bodyLeft = 0;
    s.phase = HttpPhase.Respond;
    return true;
  }

  /** Request bodies are read and dropped. */
  #stepBody(): boolean {
    const s = this.s;
    if (s.bodyLeft === 0) {
      s.phase = HttpPhase.Respond;
      return true;
    }
    if (s.buffered.length === 0 && !this.fill(this.#conf.readAhead)) {
      if (s.peerEof) {
        this.sock.destroy(); // the request never completed
        s.phase = HttpPhase.Done;
      }
      return false;
    }
    const n = Math.min(s.bodyLeft, s.buffered.length);
    this.#consume(n);
    s.bodyLeft -= n;
    return true;
  }

  #stepRespond(): boolean {
    const s = this.s;
    const r = s.response!;
    const total = r.isHead ? 0 : bodyLength(r);
    if (!s.headWritten) {
      // Head and a small text body go out in one write, as one segment.
      const h = headBytes(r);
      const text = typeof r.body === 'number' ? 0 : total - s.bodyOffset;
      s.headWritten = true;
      s.bodyOffset += text;
      return this.write(text > 0 ? Buffer.concat([h, bodySlice(r, s.bodyOffset - text, text)]) : h);
    }
    if (s.bodyOffset < total) {
      const len = Math.min(this.#conf.chunkSize, total - s.bodyOffset);
      const off = s.bodyOffset;
      s.bodyOffset += len;
      return this.write(bodySlice(r, off, len));
    }
    s.served++;
    s.response = null;
    s.headWritten = false;
    s.bodyOffset = 0;
    if (r.keepAlive) s.phase = HttpPhase.Head;
    else this.finish(true);
    return true;
  }
}

// ---- the state format -------------------------------------------------------------------------
//
// Little-endian, version 1:
//   0  4  magic "CPHT"
//   4  2  version (1)
//   6  1  phase: 0 head, 1 body, 2 respond, 3 done
//   7  1  flags: bit0 peer EOF seen, bit1 response head written, bit2 keep-alive, bit3 HEAD request,
//               bit4 text body (else pattern body); bits 5..7 zero
//   8  8  requests answered so far (the request queue position)
//  16  8  request body bytes still to drop (phase 1 only, else 0)
//  24  2  response status (phases 1, 2: 100..599; else 0)
//  26  1  response HTTP/1.minor (0 or 1)
//  27  1  reserved (0)
//  28  8  response body length (N of /bytes/N, or the text length <= 1024)
//  36  8  body bytes already written (<= body length; 0 unless the head was written; 0 for HEAD)
//  44  T  text body (T = body length when bit4 is set, else 0)
//  ..  4  B = buffered request bytes (<= 4 MiB)
//  ..  B  the bytes pulled from the socket and not yet parsed
// Nothing may follow. Phases 0 and 3 carry no response: status, minor, lengths and bits 1..4 are zero.
// An empty state means a fresh connection (a runtime that migrated it without asking the app).

const HTTP_MAGIC = 'CPHT';
const HTTP_VERSION = 1;
const F_EOF = 1;
const F_HEAD_WRITTEN = 2;
const F_KEEP_ALIVE = 4;
const F_HEAD_REQUEST = 8;
const F_TEXT = 16;
const HTTP_FIXED = 48;

export function encodeHttpState(s: HttpState): Uint8Array {
  const r = s.response;
  const text = r !== null && typeof r.body !== 'number' ? r.body : null;
  let flags = s.peerEof ? F_EOF : 0;
  if (r !== null) {
    if (s.headWritten) flags |= F_HEAD_WRITTEN;
    if (r.keepAlive) flags |= F_KEEP_ALIVE;
    if (r.isHead) flags |= F_HEAD_REQUEST;
    if (text !== null) flags |= F_TEXT;
  }
  const w = new StateWriter(HTTP_FIXED + (text?.length ?? 0) + s.buffered.length);
  w.head(HTTP_MAGIC, HTTP_VERSION).u8(s.phase).u8(flags);
  w.u64(s.served).u64(s.bodyLeft);
  w.u16(r?.status ?? 0).u8(r?.minor ?? 0).u8(0);
  w.u64(r === null ? 0 : bodyLength(r)).u64(r === null ? 0 : s.bodyOffset);
  if (text !== null) w.raw(text);
  w.u32(s.buffered.length).raw(s.buffered);
  return w.done();
}

/** Validates and decodes a captured HTTP state (throws AppStateError, code ERR_APP_STATE). */
export function decodeHttpState(bytes: Uint8Array): HttpState {
  if (bytes instanceof Uint8Array && bytes.length === 0) return { ...FRESH };
  const rd = new StateReader(bytes, 'http');
  rd.head(HTTP_MAGIC, HTTP_VERSION);
  const phase = rd.u8('phase');
  if (phase > HttpPhase.Done) rd.fail(`bad phase ${phase}`);
  const flags = rd.flags(0x1f);
  const served = rd.u64('served');
  const bodyLeft = rd.u64('bodyLeft');
  const status = rd.u16('status');
  const minor = rd.u8('minor');
  if (rd.u8('reserved') !== 0) rd.fail('reserved byte not zero');
  const length = rd.u64('body length');
  const bodyOffset = rd.u64('body offset');
  const hasResponse = phase === HttpPhase.Body || phase === HttpPhase.Respond;
  let response: HttpResponseState | null = null;
  if (hasResponse) {
    if (status < 100 || status > 599) rd.fail(`bad status ${status}`);
    if (minor > 1) rd.fail(`bad HTTP minor version ${minor}`);
    const isHead = (flags & F_HEAD_REQUEST) !== 0;
    const headWritten = (flags & F_HEAD_WRITTEN) !== 0;
    if (bodyOffset > length) rd.fail(`body offset ${bodyOffset} beyond body length ${length}`);
    if (bodyOffset > 0 && (!headWritten || isHead)) rd.fail('body bytes written without a head or for HEAD');
    if (phase === HttpPhase.Body && (headWritten || bodyLeft === 0)) rd.fail('body phase with a written head or nothing to drop');
    let body: Buffer | number = length;
    if ((flags & F_TEXT) !== 0) {
      if (length > MAX_TEXT_BODY) rd.fail(`text body of ${length} bytes`);
      body = rd.raw(length, 'text body');
    }
    response = { status, minor, keepAlive: (flags & F_KEEP_ALIVE) !== 0, isHead, body };
  } else if ((flags & ~F_EOF) !== 0 || status !== 0 || minor !== 0 || length !== 0 || bodyOffset !== 0 || bodyLeft !== 0) {
    rd.fail(`phase ${phase} carries response fields`);
  }
  if (phase === HttpPhase.Respond && bodyLeft !== 0) rd.fail('respond phase with request body left');
  const n = rd.u32('buffered length');
  if (n > MAX_STATE_BYTES) rd.fail(`buffered length ${n} over ${MAX_STATE_BYTES}`);
  const buffered = rd.raw(n, 'buffered bytes');
  rd.end();
  return {
    phase, peerEof: (flags & F_EOF) !== 0, served, bodyLeft, response,
    headWritten: hasResponse && (flags & F_HEAD_WRITTEN) !== 0, bodyOffset, buffered,
  };
}

export { AppStateError };
