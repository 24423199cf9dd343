// A minimal HTTP/1.1 keep-alive client over any Duplex, for the demo and tests: sends GETs one after
// another on one connection and streams each body to a callback (nothing is held in memory).
import type { Duplex } from 'node:stream';

export interface HttpResponse {
  status: number;
  headers: Map<string, string>;
  bodyLength: number;
  keepAlive: boolean;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

export class HttpClient {
  #sock: Duplex;
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  constructor(sock: Duplex) {
    this.#sock = sock;
    sock.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
      this.#notify();
    });
    sock.on('end', () => {
      this.#ended = true;
      this.#notify();
    });
    sock.on('error', (err: Error) => {
      this.#error = err;
      this.#notify();
    });
    sock.on('close', () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #more(): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.reject(new Error('connection closed before the response was complete'));
    return new Promise((resolve, reject) => {
      this.#wake = () => (this.#error ? reject(this.#error) : resolve());
    });
  }

  /** GET path; body bytes go to onBody in order. Resolves when the whole body has arrived. */
  async get(path: string, onBody: (chunk: Buffer) => void = () => {}, host = 'capybara'): Promise<HttpResponse> {
    this.#sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: capybara-demo\r\n\r\n`);
    let end: number;
    while ((end = this.#buf.indexOf(CRLFCRLF)) < 0) {
      if (this.#buf.length > 64 * 1024) throw new Error('response head too large');
      await this.#more();
    }
    const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
    this.#buf = this.#buf.subarray(end + 4);
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) throw new Error(`bad status line "${lines[0]}"`);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c > 0) headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
    }
    const cl = headers.get('content-length');
    if (cl === undefined || !/^\d+$/.test(cl)) throw new Error('response without Content-Length');
    const total = Number(cl);
    let left = total;
    while (left > 0) {
      if (this.#buf.length === 0) await this.#more();
      const n = Math.min(left, this.#buf.length);
      if (n === 0) continue;
      onBody(this.#buf.subarray(0, n));
      this.#buf = this.#buf.subarray(n);
      left -= n;
    }
    const keepAlive = (headers.get('connection') ?? '').toLowerCase() !== 'close';
    return { status: Number(m[1]), headers, bodyLength: total, keepAlive };
  }
}
