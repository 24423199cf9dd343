// `capybara serve redis --store HOST:PORT`: a Redis front end whose client connections migrate live between
// hosts. It speaks RESP to clients and forwards every command, verbatim and in order, to one real
// redis-server (the store) over a kernel TCP connection of its own (the "store link", one per client
// connection); replies come back in the same order and go to the client as whole replies.
//
// What migrates, and how a command runs exactly once:
//  - the app state that travels (userData) is the client bytes pulled and not yet forwarded (a partially
//    received command: RESP framing is stateless over these bytes, apps/resp.ts, so they are the parser's
//    position), the selected database, and whether the client's FIN was seen;
//  - capture() stops forwarding, then waits until every forwarded command's reply has come back from the
//    store and been written to the client (and no MULTI is open): a command is then either executed and
//    answered on the source, or not yet forwarded and travels as bytes. Nothing is in between, so nothing
//    is executed twice or lost. The wait is bounded (CAPTURE_WAIT_MS): a store that does not answer fails
//    the migration instead, and the connection carries on here;
//  - the store link is the app's, not the connection's: on the target the app opens its own (and selects
//    the database again); the source's link is dropped with a RST, so thousands of migrations leave no
//    TIME_WAIT behind.
// Not supported (answered with an error): SUBSCRIBE and friends, MONITOR (their replies are not one per
// command). HELLO 3 works but is not re-sent on a new link.
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { RespError, encodeCommand, scanCommand, scanReply } from './resp.js';
import { MAX_STATE_BYTES, StateReader, StateWriter, type MigrationHooks, type ResumableApp } from './resumable.js';
import { CapybaraError } from '../errors.js';

export const REDIS_PORT = 6379;
// Above the largest command (DEFAULT_RESP_LIMITS.maxCommand, 512 KiB), so any legal command can complete in the
// buffer; and low enough that the state (this plus one read) stays under the migrator's 1 MiB for app data.
const READ_AHEAD = 640 * 1024;
const MAX_IN_FLIGHT = 4096;
const CAPTURE_WAIT_MS = 1000;
const UNSUPPORTED = new Set(['SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE', 'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE', 'MONITOR', 'SYNC', 'PSYNC']);

export interface StoreAddress {
  host: string;
  port: number;
}

/** Parses HOST:PORT (IPv4 or a name). */
export function parseStore(s: string): StoreAddress {
  const m = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw new CapybaraError('ERR_CAPYBARA_INVALID_CONFIG', `--store must be HOST:PORT (got "${s}")`);
  return { host: m[1]!, port };
}

/** Per-host counters (`capybara ctl stats` shows them under "app"). */
export interface RedisCounters {
  connections: number;
  /** Commands forwarded to the store from this host, and replies written back. */
  commands: number;
  replies: number;
  /** Store links opened (one per connection here, including migrated ones). */
  storeLinks: number;
  /** Connections that arrived by migration. */
  migratedIn: number;
  /** Captures that had to wait for in-flight replies first, and captures refused (store too slow). */
  captureWaits: number;
  captureRefused: number;
  /** Connections closed because of a protocol error or a lost store link. */
  errors: number;
}

export function newRedisCounters(): RedisCounters {
  return { connections: 0, commands: 0, replies: 0, storeLinks: 0, migratedIn: 0, captureWaits: 0, captureRefused: 0, errors: 0 };
}

export interface RedisOptions {
  store: StoreAddress;
  counters?: RedisCounters;
  /** Opens a store link (default: a kernel TCP connection). */
  connectStore?: (store: StoreAddress) => Socket;
}

export interface RedisApp extends ResumableApp {
  readonly counters: RedisCounters;
}

export function redisApp(opts: RedisOptions): RedisApp {
  const counters = opts.counters ?? newRedisCounters();
  const open = opts.connectStore ?? ((s: StoreAddress) => netConnect({ host: s.host, port: s.port, noDelay: true }));
  return {
    counters,
    onConnection: (sock) => {
      counters.connections++;
      return new RedisSession(sock, { ...FRESH }, counters, () => open(opts.store)).hooks;
    },
    resume: (sock, state) => {
      const s = decodeRedisState(state);
      counters.migratedIn++;
      return new RedisSession(sock, s, counters, () => open(opts.store)).hooks;
    },
  };
}

export interface RedisState {
  /** The client's FIN was seen. */
  peerEof: boolean;
  /** Database of the store link (SELECT). */
  db: number;
  /** Client bytes pulled and not forwarded yet: a partial command, or complete ones behind it. */
  buffered: Buffer;
}

const FRESH: RedisState = { peerEof: false, db: 0, buffered: Buffer.alloc(0) };

class RedisSession {
  readonly hooks: MigrationHooks;
  #sock: Duplex;
  #s: RedisState;
  #cnt: RedisCounters;
  #openLink: () => Socket;
  #link: Socket | null = null;
  #replies: Buffer = Buffer.alloc(0);
  #inFlight = 0;       // commands forwarded whose replies have not come back
  #swallow = 0;        // replies to requests of our own (SELECT on a new link), not the client's
  #inMulti = false;
  #frozen = false;
  #linkBlocked = false;
  #closing = false;     // QUIT, EOF or an error: end once the in-flight replies are out
  #pumping = false;
  #idleWaiters: (() => void)[] = [];

  constructor(sock: Duplex, state: RedisState, cnt: RedisCounters, openLink: () => Socket) {
    this.#sock = sock;
    this.#s = { ...state };
    this.#cnt = cnt;
    this.#openLink = openLink;
    this.hooks = {
      capture: () => this.#capture(),
      abort: () => {
        if (!this.#frozen) return;
        this.#frozen = false;
        this.#pump();
      },
    };
    sock.on('readable', () => this.#pump());
    sock.on('end', () => this.#pump());
    sock.on('drain', () => this.#link?.resume());
    sock.on('error', () => sock.destroy());
    // Moved away: the link is idle (capture waited for it) and belongs to this host: drop it without TIME_WAIT.
    sock.on('migrate', () => this.#dropLink(true));
    sock.on('close', () => this.#dropLink(false));
    this.#pump();
  }

  #capture(): Promise<Uint8Array> {
    this.#frozen = true;
    if (this.#idle()) return Promise.resolve(encodeRedisState(this.#s));
    this.#cnt.captureWaits++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#idleWaiters = this.#idleWaiters.filter((w) => w !== done);
        this.#cnt.captureRefused++;
        reject(new CapybaraError('ERR_APP_BUSY', `redis: ${this.#inFlight} replies still outstanding after ${CAPTURE_WAIT_MS} ms`));
      }, CAPTURE_WAIT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve(encodeRedisState(this.#s));
      };
      this.#idleWaiters.push(done);
    });
  }

  #idle(): boolean {
    return this.#inFlight === 0 && this.#swallow === 0 && !this.#inMulti;
  }

  #checkIdle(): void {
    if (!this.#idle() || this.#idleWaiters.length === 0) return;
    const ws = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of ws) w();
  }

  #link_(): Socket {
    if (this.#link) return this.#link;
    this.#cnt.storeLinks++;
    const link = this.#openLink();
    this.#link = link;
    link.on('data', (d: Buffer) => this.#onReplies(d));
    link.on('error', () => this.#linkLost(link));
    link.on('close', () => this.#linkLost(link));
    link.on('drain', () => {
      this.#linkBlocked = false;
      this.#pump();
    });
    if (this.#s.db !== 0) {
      this.#swallow++;
      link.write(encodeCommand(['SELECT', String(this.#s.db)]));
    }
    return link;
  }

  #dropLink(reset: boolean): void {
    const link = this.#link;
    this.#link = null;
    if (!link || link.destroyed) return;
    link.removeAllListeners('close');
    link.on('error', () => {});
    if (reset) link.resetAndDestroy();
    else link.end();
  }

  #linkLost(link: Socket): void {
    if (link !== this.#link) return;
    this.#link = null;
    if (this.#inFlight > 0 || this.#swallow > 0) {
      // Forwarded commands whose outcome is unknown: the client must not take silence for an answer.
      this.#cnt.errors++;
      this.#sock.destroy(new CapybaraError('ERR_REDIS_STORE_LOST', 'the store link closed with replies outstanding'));
    }
  }

  #onReplies(d: Buffer): void {
    this.#replies = this.#replies.length === 0 ? d : Buffer.concat([this.#replies, d]);
    let at = 0;
    const out: Buffer[] = [];
    try {
      for (;;) {
        const end = scanReply(this.#replies, at);
        if (end < 0) break;
        if (this.#swallow > 0) this.#swallow--;
        else {
          out.push(this.#replies.subarray(at, end));
          this.#inFlight--;
          this.#cnt.replies++;
        }
        at = end;
      }
    } catch {
      this.#cnt.errors++;
      this.#sock.destroy(new CapybaraError('ERR_REDIS_STORE_PROTOCOL', 'the store sent something that is not RESP'));
      return;
    }
    this.#replies = at === this.#replies.length ? Buffer.alloc(0) : this.#replies.subarray(at);
    if (out.length > 0 && !this.#sock.destroyed && !this.#sock.writableEnded) {
      // A client that does not read stops the link being read: the store's replies wait in TCP.
      if (!this.#sock.write(out.length === 1 ? out[0]! : Buffer.concat(out))) this.#link?.pause();
    }
    this.#checkIdle();
    this.#pump();
  }

  #fill(): boolean {
    const s = this.#s;
    let got = false;
    while (s.buffered.length < READ_AHEAD) {
      const d = this.#sock.read() as Buffer | string | null;
      if (d === null) break;
      const b = typeof d === 'string' ? Buffer.from(d, 'latin1') : d;
      s.buffered = s.buffered.length === 0 ? b : Buffer.concat([s.buffered, b]);
      got = true;
    }
    if (this.#sock.readableEnded) s.peerEof = true;
    return got;
  }

  /** Writes a reply of the front end itself; only when nothing forwarded is still unanswered (order). */
  #local(reply: string): void {
    if (!this.#sock.destroyed && !this.#sock.writableEnded) this.#sock.write(reply);
  }

  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      this.#dispatch();
    } finally {
      this.#pumping = false;
    }
  }

  #dispatch(): void {
    const s = this.#s;
    while (!this.#frozen && !this.#sock.destroyed) {
      if (this.#closing) {
        if (this.#inFlight === 0 && this.#swallow === 0 && !this.#sock.writableEnded) this.#sock.end();
        return;
      }
      if (this.#inFlight >= MAX_IN_FLIGHT || this.#linkBlocked) return;
      let cmd;
      try {
        cmd = scanCommand(s.buffered);
      } catch (err) {
        if (this.#inFlight > 0) return; // answer in order: the error goes after the outstanding replies
        this.#cnt.errors++;
        this.#local(`-ERR Protocol error: ${err instanceof RespError ? err.message : 'bad input'}\r\n`);
        s.buffered = Buffer.alloc(0);
        this.#closing = true;
        continue;
      }
      if (cmd === null) {
        if (this.#fill()) continue;
        if (s.peerEof) this.#closing = true;
        if (this.#closing) continue;
        return;
      }
      if (cmd.args.length === 0) { // an empty inline line
        s.buffered = s.buffered.subarray(cmd.length);
        continue;
      }
      const name = cmd.args[0]!.toString('latin1').toUpperCase();
      if (name === 'QUIT' || UNSUPPORTED.has(name)) {
        if (this.#inFlight > 0) return; // after the replies before it
        s.buffered = s.buffered.subarray(cmd.length);
        if (name === 'QUIT') {
          this.#local('+OK\r\n');
          this.#closing = true;
        } else {
          this.#local(`-ERR capybara redis front end: ${name} is not supported\r\n`);
        }
        continue;
      }
      if (name === 'MULTI') this.#inMulti = true;
      else if (name === 'EXEC' || name === 'DISCARD') this.#inMulti = false;
      else if (name === 'SELECT' && cmd.args.length === 2 && /^\d{1,5}$/.test(cmd.args[1]!.toString('latin1'))) {
        s.db = Number(cmd.args[1]!.toString('latin1'));
      }
      const raw = s.buffered.subarray(0, cmd.length);
      s.buffered = s.buffered.subarray(cmd.length);
      this.#inFlight++;
      this.#cnt.commands++;
      if (!this.#link_().write(raw)) this.#linkBlocked = true;
    }
  }
}

// ---- the state format ----------------------------------------------------------------------------
//
// Little-endian, version 1:
//   0 4 magic "CPRD" | 4 2 version (1) | 6 1 flags: bit0 peer EOF seen, others zero | 7 1 reserved (0)
//   8 4 selected database (0..65535) | 12 4 B = buffered length (<= 4 MiB) | 16 B buffered client bytes
// Nothing may follow. An empty state means a fresh connection.

const MAGIC = 'CPRD';
const VERSION = 1;

export function encodeRedisState(s: RedisState): Uint8Array {
  return new StateWriter(16 + s.buffered.length)
    .head(MAGIC, VERSION).u8(s.peerEof ? 1 : 0).u8(0)
    .u32(s.db).u32(s.buffered.length).raw(s.buffered)
    .done();
}

/** Validates and decodes a captured Redis state (throws AppStateError, code ERR_APP_STATE). */
export function decodeRedisState(bytes: Uint8Array): RedisState {
  if (bytes instanceof Uint8Array && bytes.length === 0) return { ...FRESH };
  const rd = new StateReader(bytes, 'redis');
  rd.head(MAGIC, VERSION);
  const flags = rd.flags(1);
  rd.reserved();
  const db = rd.u32('db');
  if (db > 65535) rd.fail(`database ${db} out of range`);
  const n = rd.u32('buffered length');
  if (n > MAX_STATE_BYTES) rd.fail(`buffered length ${n} over ${MAX_STATE_BYTES}`);
  const buffered = rd.raw(n, 'buffered bytes');
  rd.end();
  return { peerEof: (flags & 1) !== 0, db, buffered };
}
