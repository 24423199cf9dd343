// The classic alternative to L7 DSR (`capybara serve l7 --mode proxy`): the front end that parsed a request
// fetches the object from its owner over a second connection and relays the bytes, so every byte of the
// response crosses the front end twice. Upstream connections are kept alive and pooled per owner.
//
// An upstream request carries `X-Capybara-Proxied: 1`, so the owner serves it itself (never relays again).
import type { Duplex } from 'node:stream';
import { CapybaraError } from '../errors.js';

export const PROXIED_HEADER = 'x-capybara-proxied';

/** The upstream answered something this relay cannot pass on, or went away mid-response. */
export class UpstreamError extends CapybaraError {
  constructor(message: string) {
    super('ERR_L7_UPSTREAM', message);
  }
}

export interface RelayHandlers {
  /** The owner's status and body length; called once, before any body byte. */
  onHead(status: number, length: number): void;
  /** Body bytes in order; return false to pause the upstream until resume(). */
  onBody(chunk: Buffer): boolean;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEAD = 16 * 1024;
const MAX_IDLE_PER_PEER = 64;

interface Fetch {
  h: RelayHandlers;
  headDone: boolean;
  left: number;
  resolve(): void;
  reject(err: Error): void;
}

/** One keep-alive connection to an owner; one request at a time. */
class Upstream {
  readonly sock: Duplex;
  dead = false;
  #buf: Buffer = Buffer.alloc(0);
  #cur: Fetch | null = null;

  constructor(sock: Duplex) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => this.#onData(d));
    sock.on('error', (e: Error) => this.#fail(new UpstreamError(`upstream: ${e.message}`)));
    sock.on('end', () => this.#fail(new UpstreamError('upstream closed the connection')));
    sock.on('close', () => this.#fail(new UpstreamError('upstream closed the connection')));
  }

  request(path: string, h: RelayHandlers): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#cur = { h, headDone: false, left: 0, resolve, reject };
      this.sock.write(`GET ${path} HTTP/1.1\r\nHost: capybara\r\nX-Capybara-Proxied: 1\r\n\r\n`);
    });
  }

  pause(): void {
    this.sock.pause();
  }

  resume(): void {
    this.sock.resume();
  }

  #fail(err: Error): void {
    this.dead = true;
    const c = this.#cur;
    this.#cur = null;
    c?.reject(err);
    if (!this.sock.destroyed) this.sock.destroy();
  }

  #onData(d: Buffer): void {
    const c = this.#cur;
    if (!c) {
      this.#fail(new UpstreamError('upstream sent bytes nobody asked for'));
      return;
    }
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    if (!c.headDone) {
      const end = this.#buf.indexOf(CRLFCRLF);
      if (end < 0) {
        if (this.#buf.length > MAX_HEAD) this.#fail(new UpstreamError('upstream response head too large'));
        return;
      }
      const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
      this.#buf = this.#buf.subarray(end + 4);
      const m = /^HTTP\/1\.[01] (\d{3}) /.exec(`${lines[0] ?? ''} `);
      const cl = lines.find((l) => /^content-length:/i.test(l))?.split(':')[1]?.trim();
      if (!m || cl === undefined || !/^\d{1,15}$/.test(cl)) {
        this.#fail(new UpstreamError(`upstream answered "${lines[0]}" without a usable Content-Length`));
        return;
      }
      if (lines.some((l) => /^connection:\s*close/i.test(l))) this.dead = true; // not reusable afterwards
      c.headDone = true;
      c.left = Number(cl);
      c.h.onHead(Number(m[1]), c.left);
    }
    while (c.left > 0 && this.#buf.length > 0 && this.#cur === c) {
      const n = Math.min(c.left, this.#buf.length);
      const chunk = this.#buf.subarray(0, n);
      this.#buf = this.#buf.subarray(n);
      c.left -= n;
      if (!c.h.onBody(chunk)) this.pause();
    }
    if (c.left === 0 && this.#cur === c) {
      this.#cur = null;
      if (this.#buf.length > 0) this.dead = true;
      c.resolve();
    }
  }
}

/** Pooled keep-alive connections to the owners. */
export class UpstreamPool {
  readonly #connect: (peer: string) => Duplex;
  readonly #idle = new Map<string, Upstream[]>();
  /** Connections opened so far (a measure of how well keep-alive works). */
  opened = 0;

  constructor(connect: (peer: string) => Duplex) {
    this.#connect = connect;
  }

  /**
   * GET path from peer; the handlers see the head and the body. `bind` receives the upstream's pause/resume
   * so the caller can apply its client's backpressure. A pooled connection that turns out dead before
   * answering is replaced once.
   */
  async fetch(peer: string, path: string, h: RelayHandlers, bind: (flow: { pause(): void; resume(): void }) => void): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const pooled = this.#take(peer);
      const up = pooled ?? this.#open(peer);
      bind(up);
      let started = false;
      try {
        await up.request(path, {
          onHead: (s, l) => {
            started = true;
            h.onHead(s, l);
          },
          onBody: (c) => h.onBody(c),
        });
      } catch (err) {
        if (pooled && !started && attempt === 0) continue;
        throw err;
      }
      up.resume();
      this.#give(peer, up);
      return;
    }
  }

  #open(peer: string): Upstream {
    this.opened++;
    return new Upstream(this.#connect(peer));
  }

  #take(peer: string): Upstream | undefined {
    const list = this.#idle.get(peer);
    while (list && list.length > 0) {
      const u = list.pop()!;
      if (!u.dead && !u.sock.destroyed) return u;
    }
    return undefined;
  }

  #give(peer: string, up: Upstream): void {
    if (up.dead || up.sock.destroyed) return;
    let list = this.#idle.get(peer);
    if (!list) this.#idle.set(peer, (list = []));
    if (list.length >= MAX_IDLE_PER_PEER) {
      up.sock.end();
      return;
    }
    list.push(up);
  }

  close(): void {
    for (const list of this.#idle.values()) for (const u of list) u.sock.destroy();
    this.#idle.clear();
  }
}
