// The admin endpoint of a runtime: a unix socket /run/capybara/NAME.sock speaking JSON lines.
// Request:  {"cmd":"stats"}            Response: {"ok":true,"result":{...}}
//                                                {"ok":false,"error":{"code":"...","message":"..."}}
// Commands are a table of handlers so later features (peers, migrate) just add entries. The socket is a
// filesystem path, so `capybara ctl` reaches a runtime inside a network namespace from the host.
import { mkdirSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { AdminError, CapybaraError, ConfigError } from './errors.js';
import type { Stack } from './stack.js';

export type AdminRequest = { cmd: string } & Record<string, unknown>;
export type AdminHandler = (req: AdminRequest) => unknown;
export type AdminResponse =
  | { ok: true; result: unknown }
  | { ok: false; error: { code: string; message: string } };

const MAX_LINE = 64 * 1024;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export function adminDir(): string {
  return process.env.CAPYBARA_RUN_DIR || '/run/capybara';
}

export function adminSocketPath(name: string, dir = adminDir()): string {
  if (!NAME.test(name)) throw new ConfigError(`runtime name "${name}" must be 1-64 of [A-Za-z0-9_.-]`);
  return join(dir, `${name}.sock`);
}

/** stats/flows/info (and peers/migrate when the stack migrates) for a Stack. */
export function stackAdminHandlers(stack: Stack, info: Record<string, unknown> = {}): Record<string, AdminHandler> {
  const owner = typeof info.name === 'string' ? info.name : null;
  return {
    stats: () => ({ ...stack.stats(), migration: stack.migrator?.stats ?? null, lane: stack.migrator ? stack.engine.laneStats?.() ?? null : null }),
    flows: () => {
      const conns = new Map(stack.connections().map((c) => [c.id, c]));
      return stack.flows().map((f) => ({ ...f, owner, migrations: conns.get(f.id)?.migrations ?? 0 }));
    },
    info: () => ({ pid: process.pid, device: stack.device, address: stack.address, prefixLength: stack.prefixLength, gateway: stack.gateway ?? null, ...info }),
    peers: () => ({ name: stack.migrator?.name ?? null, port: stack.migrator?.port ?? null, peers: stack.migrator?.peers() ?? [] }),
    migrate: async (req) => {
      const m = stack.migrator;
      if (!m) throw new ConfigError('this runtime was started without peers: it cannot migrate');
      const to = req.to;
      if (typeof to !== 'string' || !m.peers().includes(to)) throw new ConfigError(`--to must name a peer (${m.peers().join(', ') || 'none'})`);
      const appConns = stack.connections().filter((c) => c.localPort !== m.port && c.remotePort !== m.port && !c.destroyed && !c.migrating);
      const which = req.flow === 'all' ? appConns : appConns.filter((c) => c.id === req.flow);
      // Flows with no connection object are served by a native app on the engine thread: they move through
      // the engines' lane (the engine refuses, ENOENT, any that is not native).
      const known = new Set(stack.connections().map((c) => c.id));
      const native = stack.engine.laneMigrate ? stack.flows().filter((f) => !known.has(f.id) && f.localPort !== m.port &&
        f.remotePort !== m.port && f.state === 'ESTABLISHED' && (req.flow === 'all' || f.id === req.flow)) : [];
      if (which.length === 0 && native.length === 0 && req.flow !== 'all') throw new ConfigError(`no open application connection with id ${String(req.flow)}`);
      const results = await Promise.allSettled([...which.map((c) => stack.migrate(c, to)), ...native.map((f) => m.migrateNative(f.id, to))]);
      const timings = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [{ code: (r.reason as CapybaraError).code ?? 'ERR', message: String((r.reason as Error).message) }] : []));
      return { migrated: timings.length, failed: errors.length, timings, errors };
    },
    // The new cluster key arrives base64 over the admin socket (root-only, like the key file it came from).
    'rotate-key': async (req) => {
      const m = stack.migrator;
      if (!m) throw new ConfigError('this runtime was started without peers: it has no cluster key');
      if (typeof req.key !== 'string') throw new ConfigError('rotate-key needs the new key');
      const key = Buffer.from(req.key, 'base64');
      const epoch = req.epoch === undefined ? undefined : Number(req.epoch);
      const graceMs = req.graceMs === undefined ? undefined : Number(req.graceMs);
      try {
        return await m.rotateKey(key, epoch, graceMs);
      } finally {
        key.fill(0);
      }
    },
  };
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(true); // something holds it but does not answer: treat as alive
    }, 1000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

export interface AdminServerOptions {
  name: string;
  dir?: string;
  handlers: Record<string, AdminHandler>;
}

export class AdminServer {
  readonly path: string;
  readonly name: string;
  #server: NetServer;
  #handlers: Record<string, AdminHandler>;
  #sockets = new Set<Socket>();

  private constructor(name: string, path: string, handlers: Record<string, AdminHandler>) {
    this.name = name;
    this.path = path;
    this.#handlers = { ...handlers, help: () => Object.keys(this.#handlers).sort() };
    this.#server = createServer((sock) => this.#serve(sock));
  }

  /** Creates the directory, removes a stale socket left by a dead runtime, and listens. */
  static async start(opts: AdminServerOptions): Promise<AdminServer> {
    const dir = opts.dir ?? adminDir();
    const path = adminSocketPath(opts.name, dir);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    let exists = false;
    try {
      exists = statSync(path).isSocket();
    } catch {
      exists = false;
    }
    if (exists) {
      if (await probe(path)) throw new AdminError('ERR_CAPYBARA_ADMIN_IN_USE', `a runtime named ${opts.name} is already running (${path})`);
      unlinkSync(path);
    }
    const a = new AdminServer(opts.name, path, opts.handlers);
    await new Promise<void>((resolve, reject) => {
      a.#server.once('error', reject);
      a.#server.listen(path, () => {
        a.#server.off('error', reject);
        resolve();
      });
    });
    return a;
  }

  /** Adds or replaces a command. */
  handle(cmd: string, fn: AdminHandler): void {
    this.#handlers[cmd] = fn;
  }

  #serve(sock: Socket): void {
    this.#sockets.add(sock);
    sock.on('close', () => this.#sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setEncoding('utf8');
    let buf = '';
    let chain = Promise.resolve();
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE && buf.indexOf('\n') < 0) {
        sock.end(`${JSON.stringify(errorResponse('ERR_CAPYBARA_ADMIN_BAD_REQUEST', 'request line too long'))}\n`);
        buf = '';
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        // Answers go out in request order even when a handler is async.
        chain = chain.then(async () => {
          const resp = await this.#answer(line);
          if (!sock.destroyed) sock.write(`${JSON.stringify(resp)}\n`);
        });
      }
    });
  }

  async #answer(line: string): Promise<AdminResponse> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      return errorResponse('ERR_CAPYBARA_ADMIN_BAD_REQUEST', 'request is not JSON');
    }
    if (typeof req !== 'object' || req === null || typeof (req as { cmd?: unknown }).cmd !== 'string') {
      return errorResponse('ERR_CAPYBARA_ADMIN_BAD_REQUEST', 'request needs a string "cmd"');
    }
    const r = req as AdminRequest;
    const fn = Object.prototype.hasOwnProperty.call(this.#handlers, r.cmd) ? this.#handlers[r.cmd] : undefined;
    if (!fn) return errorResponse('ERR_CAPYBARA_ADMIN_UNKNOWN_CMD', `unknown command "${r.cmd}" (try "help")`);
    try {
      return { ok: true, result: await fn(r) };
    } catch (err) {
      const code = err instanceof CapybaraError ? err.code : 'ERR_CAPYBARA_ADMIN_FAILED';
      return errorResponse(code, (err as Error)?.message ?? String(err));
    }
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

function errorResponse(code: string, message: string): AdminResponse {
  return { ok: false, error: { code, message } };
}

export interface AdminTarget {
  name?: string;
  path?: string;
  dir?: string;
}

/** Sends one request and returns the result; throws AdminError (with the runtime's code) on failure. */
export function adminRequest(target: AdminTarget, req: AdminRequest, timeoutMs = 5000): Promise<unknown> {
  const path = target.path ?? adminSocketPath(target.name ?? 'default', target.dir ?? adminDir());
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let settled = false;
    const finish = (err: Error | null, value?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new AdminError('ERR_CAPYBARA_ADMIN_TIMEOUT', `no answer from ${path} within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 64 * 1024 * 1024) finish(new AdminError('ERR_CAPYBARA_ADMIN_BAD_RESPONSE', 'response too long'));
        return;
      }
      let resp: AdminResponse;
      try {
        resp = JSON.parse(buf.slice(0, nl)) as AdminResponse;
      } catch {
        finish(new AdminError('ERR_CAPYBARA_ADMIN_BAD_RESPONSE', 'response is not JSON'));
        return;
      }
      if (resp.ok) finish(null, resp.result);
      else finish(new AdminError(resp.error?.code ?? 'ERR_CAPYBARA_ADMIN_FAILED', resp.error?.message ?? 'request failed'));
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const missing = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      finish(new AdminError(missing ? 'ERR_CAPYBARA_NO_RUNTIME' : 'ERR_CAPYBARA_ADMIN', missing ? `no runtime is listening on ${path}` : `${path}: ${err.message}`));
    });
    sock.on('end', () => finish(new AdminError('ERR_CAPYBARA_ADMIN_BAD_RESPONSE', `${path} closed without answering`)));
  });
}
