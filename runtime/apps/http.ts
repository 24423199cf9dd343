// A small HTTP/1.1 server app over any Duplex (a capybara Connection or a Node net.Socket):
//   GET /bytes/N  -> N pattern bytes (apps/pattern.ts), streamed in chunks with backpressure
//   GET /health   -> 200 "ok"
//   anything else -> 404
// Keep-alive by default (HTTP/1.1), Connection: close honoured, pipelined requests answered in order.
// Requests are parsed by hand so the app needs nothing but a byte stream.
import type { Duplex } from 'node:stream';
import { patternFill } from './pattern.js';

export const HTTP_PORT = 80;

export interface HttpAppOptions {
  /** Largest request head accepted (request line + headers). */
  maxHeaderBytes?: number;
  /** Largest N for /bytes/N. */
  maxBytes?: number;
  /** Size of each body chunk written. */
  chunkSize?: number;
  /** Called once per request answered (method, path, status). */
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

export function httpApp(opts: HttpAppOptions = {}): (sock: Duplex) => void {
  const maxHeaderBytes = opts.maxHeaderBytes ?? 16 * 1024;
  const maxBytes = opts.maxBytes ?? 2 ** 40;
  const chunkSize = opts.chunkSize ?? 64 * 1024;
  return (sock) => {
    sock.on('error', () => sock.destroy());
    void serveConnection(sock, { maxHeaderBytes, maxBytes, chunkSize, onRequest: opts.onRequest }).catch(() => sock.destroy());
  };
}

interface Conf {
  maxHeaderBytes: number;
  maxBytes: number;
  chunkSize: number;
  onRequest: HttpAppOptions['onRequest'];
}

/** Reads bytes from the socket on demand; pauses it while enough is buffered (pipelining backpressure). */
class ByteReader {
  #sock: Duplex;
  #buf: Buffer = Buffer.alloc(0);
  #eof = false;
  #closed = false;
  #wake: (() => void) | null = null;
  #limit: number;

  constructor(sock: Duplex, limit: number) {
    this.#sock = sock;
    this.#limit = limit;
    sock.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
      if (this.#buf.length >= this.#limit) sock.pause();
      this.#notify();
    });
    sock.on('end', () => {
      this.#eof = true;
      this.#notify();
    });
    sock.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  get buffered(): Buffer {
    return this.#buf;
  }

  get eof(): boolean {
    return this.#eof || this.#closed;
  }

  consume(n: number): void {
    this.#buf = this.#buf.subarray(n);
    if (this.#buf.length < this.#limit && !this.#eof) this.#sock.resume();
  }

  /** Resolves when more bytes arrived or the stream ended. */
  more(): Promise<void> {
    if (this.eof) return Promise.resolve();
    this.#sock.resume();
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }
}

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

function head(status: number, length: number, keepAlive: boolean, minor: number, type: string): Buffer {
  let s = `HTTP/1.1 ${status} ${STATUS[status] ?? 'Unknown'}\r\nServer: capybara\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n`;
  if (!keepAlive) s += 'Connection: close\r\n';
  else if (minor === 0) s += 'Connection: keep-alive\r\n';
  return Buffer.from(`${s}\r\n`, 'latin1');
}

/** Writes with backpressure; false when the socket went away. */
function write(sock: Duplex, data: Buffer): Promise<boolean> | boolean {
  if (sock.destroyed || sock.writableEnded) return false;
  if (sock.write(data)) return true;
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      sock.off('drain', onDrain);
      sock.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    sock.on('drain', onDrain);
    sock.on('close', onClose);
  });
}

async function serveConnection(sock: Duplex, conf: Conf): Promise<void> {
  const reader = new ByteReader(sock, conf.maxHeaderBytes * 4);
  for (;;) {
    // Find the end of the next request head.
    let end = reader.buffered.indexOf(CRLFCRLF);
    while (end < 0) {
      if (reader.buffered.length > conf.maxHeaderBytes) {
        await respondError(sock, 431, 1, conf);
        return;
      }
      if (reader.eof) {
        // Clean end between requests; a partial request at EOF is dropped like any server does.
        sock.end();
        return;
      }
      await reader.more();
      end = reader.buffered.indexOf(CRLFCRLF);
    }
    if (end > conf.maxHeaderBytes) {
      await respondError(sock, 431, 1, conf);
      return;
    }
    // Tolerate stray CRLFs between pipelined requests (RFC 9112 §2.2).
    let text = reader.buffered.subarray(0, end).toString('latin1');
    reader.consume(end + 4);
    text = text.replace(/^(\r\n)+/, '');
    const parsed = parseHead(text);
    if (parsed.kind === 'error') {
      await respondError(sock, parsed.status, 1, conf);
      return;
    }
    const { req, bodyLength } = parsed;
    // Request bodies are read and dropped.
    let left = bodyLength;
    while (left > 0) {
      if (reader.buffered.length === 0) {
        if (reader.eof) {
          sock.destroy();
          return;
        }
        await reader.more();
        continue;
      }
      const n = Math.min(left, reader.buffered.length);
      reader.consume(n);
      left -= n;
    }
    const keepAlive = wantsKeepAlive(req);
    const ok = await respond(sock, req, keepAlive, conf);
    if (!ok) return;
    if (!keepAlive) {
      sock.end();
      return;
    }
  }
}

async function respondError(sock: Duplex, status: number, minor: number, conf: Conf): Promise<void> {
  const body = Buffer.from(`${STATUS[status] ?? 'error'}\n`);
  conf.onRequest?.('-', '-', status);
  if (await write(sock, Buffer.concat([head(status, body.length, false, minor, 'text/plain'), body]))) sock.end();
}

async function respond(sock: Duplex, req: Request, keepAlive: boolean, conf: Conf): Promise<boolean> {
  const path = req.target.split('?')[0]!;
  const isHead = req.method === 'HEAD';
  const small = async (status: number, text: string): Promise<boolean> => {
    conf.onRequest?.(req.method, path, status);
    const body = Buffer.from(text);
    const h = head(status, body.length, keepAlive, req.minor, 'text/plain');
    return write(sock, isHead ? h : Buffer.concat([h, body]));
  };
  if (req.method !== 'GET' && !isHead) return small(405, 'method not allowed\n');
  if (path === '/health') return small(200, 'ok');
  const m = /^\/bytes\/(\d{1,15})$/.exec(path);
  if (!m) return small(404, 'not found\n');
  const n = Number(m[1]);
  if (n > conf.maxBytes) return small(413, `at most ${conf.maxBytes} bytes\n`);
  conf.onRequest?.(req.method, path, 200);
  if (!(await write(sock, head(200, n, keepAlive, req.minor, 'application/octet-stream')))) return false;
  if (isHead) return true;
  for (let off = 0; off < n; off += conf.chunkSize) {
    const len = Math.min(conf.chunkSize, n - off);
    const chunk = Buffer.allocUnsafe(len);
    patternFill(chunk, off);
    if (!(await write(sock, chunk))) return false;
  }
  return true;
}
