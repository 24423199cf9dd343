// The migration channel: ChannelSession (session.ts) on top of any Duplex: a net.Socket today, a
// connection of capybara's own stack later. It writes our HELLO at once, queues messages sent before
// the handshake finished, pauses the transport while the peer is ahead by a key epoch, and turns every
// failure into one ChannelError.
//
// Events: 'ready' (peer name), 'message' (MigrationMessage), 'rejected' (ChannelError: one frame dropped,
// the channel goes on), 'keyNeeded' (key epoch: the peer rotated; call rotateKey), 'rekeyed' (key epoch),
// 'drain', 'error' (ChannelError, fatal; emitted only when someone listens, since `ready` and 'close'
// carry it too), 'close' (ChannelError | null).
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ChannelError } from './errors.js';
import type { MigrationMessage } from './messages.js';
import { ChannelSession, type SessionOptions, type SessionOutput } from './session.js';

export interface ChannelOptions extends SessionOptions {
  /** Fail with ERR_CHANNEL_TIMEOUT when the handshake takes longer (default 10 s; 0 disables). */
  handshakeTimeoutMs?: number;
}

export interface MigrationChannelEvents {
  ready: [peer: string];
  message: [message: MigrationMessage];
  rejected: [error: ChannelError];
  keyNeeded: [keyEpoch: number];
  rekeyed: [keyEpoch: number];
  drain: [];
  error: [error: ChannelError];
  close: [error: ChannelError | null];
}

interface Waiter { epoch: number; resolve: () => void; reject: (err: ChannelError) => void }

export class MigrationChannel extends EventEmitter<MigrationChannelEvents> {
  readonly #transport: Duplex;
  readonly #session: ChannelSession;
  readonly ready: Promise<string>;
  #resolveReady!: (peer: string) => void;
  #rejectReady!: (err: ChannelError) => void;
  #queue: MigrationMessage[] = [];
  #closed = false;
  #paused = false;
  #timer: NodeJS.Timeout | null = null;
  #waiters: Waiter[] = [];
  #error: ChannelError | null = null;

  constructor(transport: Duplex, options: ChannelOptions) {
    super();
    this.#session = new ChannelSession(options);
    this.#transport = transport;
    this.ready = new Promise<string>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed through 'close'/'error' when nobody awaits it

    const ms = options.handshakeTimeoutMs ?? 10_000;
    if (ms > 0) {
      this.#timer = setTimeout(() => this.#fail(new ChannelError('ERR_CHANNEL_TIMEOUT', `handshake not finished after ${ms} ms`)), ms);
      this.#timer.unref();
    }
    transport.on('data', (chunk: Buffer) => this.#apply(this.#session.receive(chunk)));
    transport.on('end', () => this.#onEnd());
    transport.on('error', (err: Error) =>
      this.#fail(new ChannelError('ERR_CHANNEL_TRANSPORT', `transport failed: ${err.message}`, { cause: err })));
    transport.on('close', () => {
      if (!this.#closed) this.#fail(new ChannelError('ERR_CHANNEL_CLOSED', 'transport closed'));
    });
    transport.on('drain', () => this.emit('drain'));
    this.#transport.write(this.#session.start());
  }

  get peer(): string | null { return this.#session.peer; }
  get closed(): boolean { return this.#closed; }
  /** The error that closed the channel, if one did. */
  get error(): ChannelError | null { return this.#error; }
  get keyEpoch(): number { return this.#session.keyEpoch; }
  /** The engines' lane keys of this session (see ChannelSession.laneKeys). */
  get laneKeys(): ChannelSession['laneKeys'] { return this.#session.laneKeys; }

  /**
   * Sends a message (queued until the handshake finished). Returns false when the transport wants the
   * caller to wait for 'drain'. Throws ERR_CHANNEL_CLOSED, ERR_CHANNEL_MESSAGE or ERR_CHANNEL_FRAME_TOO_LARGE;
   * none of them closes the channel.
   */
  send(message: MigrationMessage): boolean {
    if (this.#closed) throw new ChannelError('ERR_CHANNEL_CLOSED', 'channel is closed', { fatal: false });
    if (this.#session.state !== 'ready') {
      this.#queue.push(message);
      return true;
    }
    return this.#transport.write(this.#session.seal(message));
  }

  /**
   * Sends messages in one transport write, so they travel together and the peer reads them in one go (a
   * migration's offer and the segments its flow held meanwhile: one wake-up, one turn at the target).
   * Same errors as send(); if one message is invalid, those before it are still sent.
   */
  sendAll(messages: readonly MigrationMessage[]): boolean {
    if (this.#closed) throw new ChannelError('ERR_CHANNEL_CLOSED', 'channel is closed', { fatal: false });
    if (this.#session.state !== 'ready') {
      this.#queue.push(...messages);
      return true;
    }
    const frames: Buffer[] = [];
    try {
      for (const m of messages) frames.push(this.#session.seal(m));
    } finally {
      if (frames.length > 0) this.#transport.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
    }
    return !this.#transport.writableNeedDrain;
  }

  /**
   * Rotates to a new cluster key. Resolves once the peer was heard under the new epoch (it rotated too),
   * rejects if the channel closes first.
   */
  rotateKey(key: Uint8Array, keyEpoch: number): Promise<void> {
    if (this.#closed) return Promise.reject(new ChannelError('ERR_CHANNEL_CLOSED', 'channel is closed', { fatal: false }));
    let out: SessionOutput;
    try {
      out = this.#session.rotateKey(key, keyEpoch);
    } catch (err) {
      return Promise.reject(err);
    }
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ epoch: keyEpoch, resolve, reject }));
    done.catch(() => {});
    this.#apply(out);
    return done;
  }

  /** Ends the channel cleanly (the peer sees the end of the stream between frames). */
  close(): void {
    if (this.#closed) return;
    this.#finish(null);
    this.#transport.end();
  }

  /** Closes at once, with err when given. */
  destroy(err?: ChannelError): void {
    if (this.#closed) return;
    if (err) this.#fail(err);
    else {
      this.#finish(null);
      this.#transport.destroy();
    }
  }

  #apply(out: SessionOutput): void {
    for (const f of out.frames) this.#transport.write(f);
    for (const ev of out.events) {
      if (this.#closed) return;
      switch (ev.type) {
        case 'ready':
          if (this.#timer) clearTimeout(this.#timer);
          this.#timer = null;
          this.#resolveReady(ev.peer);
          this.emit('ready', ev.peer);
          this.#flushQueue();
          break;
        case 'message':
          this.emit('message', ev.message);
          break;
        case 'rejected':
          this.emit('rejected', ev.error);
          break;
        case 'rekeyed':
          this.#waiters = this.#waiters.filter((w) => {
            if (w.epoch > ev.keyEpoch) return true;
            w.resolve();
            return false;
          });
          this.emit('rekeyed', ev.keyEpoch);
          break;
        case 'keyNeeded':
          this.emit('keyNeeded', ev.keyEpoch);
          break;
      }
    }
    if (out.error) {
      this.#fail(out.error);
      return;
    }
    const blocked = this.#session.blockedOn !== null;
    if (blocked && !this.#paused) {
      this.#transport.pause();
      this.#paused = true;
    } else if (!blocked && this.#paused) {
      this.#paused = false;
      this.#transport.resume();
    }
  }

  #flushQueue(): void {
    const queued = this.#queue;
    this.#queue = [];
    for (const m of queued) {
      if (this.#closed) return;
      try {
        this.#transport.write(this.#session.seal(m));
      } catch (err) {
        // an invalid queued message cannot be thrown back to its sender any more: report it
        if (err instanceof ChannelError) this.emit('rejected', err);
        else throw err;
      }
    }
  }

  #onEnd(): void {
    if (this.#closed) return;
    const err = this.#session.end();
    if (err) this.#fail(err);
    else {
      this.#finish(null);
      this.#transport.end();
    }
  }

  #fail(err: ChannelError): void {
    if (this.#closed) return;
    this.#error = err;
    this.#finish(err);
    this.#transport.destroy();
  }

  #finish(err: ChannelError | null): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#session.close();
    const reason = err ?? new ChannelError('ERR_CHANNEL_CLOSED', 'channel closed');
    this.#rejectReady(reason);
    for (const w of this.#waiters) w.reject(reason);
    this.#waiters = [];
    this.#queue = [];
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('close', err);
  }
}
