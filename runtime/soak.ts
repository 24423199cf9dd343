// The soak (issue 8): a bounded run on the in-memory switch with seeded random faults, many echo flows
// whose client writes random amounts in random pieces and reads with random pauses, and random live
// migrations of their server side between three runtimes. Every byte that comes back is checked against
// what was sent; at the end nothing may be left behind: no application flow in any engine, no
// Connection object, no steering entry, and the arena's TCB slots and data chunks back where they were.
// `capybara soak` and test/interop/soak.test.ts run it.
import { echoResumable } from './apps/echo.js';
import { PatternVerifier, patternChunk } from './apps/pattern.js';
import type { Connection } from './connection.js';
import { MemCluster, type MemServer } from './mem-cluster.js';
import type { FlowInfo } from './native.js';
import { prng } from './prng.js';
import type { Stack } from './stack.js';

export interface SoakOptions {
  /** How long new flows are started (the run then lets them finish). */
  seconds: number;
  seed?: number;
  /** Flows open at once (default 16). */
  flows?: number;
  /** Largest upload of one flow in bytes (default 1 MiB). */
  maxFlowBytes?: number;
  /** Migrations in flight at once (default 2; they may pick the same connection). */
  migrators?: number;
  /** Move connections through the engines' lane (MigratorOptions.jsLane) rather than the channel. */
  jsLane?: boolean;
  log?: (line: string) => void;
}

export interface SoakLeaks {
  appFlows: number;      // flows on the app port still in some engine
  connections: number;   // Connection objects still open on the app port
  steering: number;      // entries left in the switch's steering table
  slots: number;         // arena TCB slots not returned (over the flows that remain: channels, listeners)
  chunks: number;        // arena data chunks not returned
  held: number;          // segments still held for frozen flows
}

export interface SoakResult {
  seed: number;
  seconds: number;
  faults: string;
  flows: number;
  bytes: number;               // bytes sent and echoed back intact
  migrations: number;          // completed
  migrationsRefused: number;   // failed cleanly (the source kept the flow)
  migrationsSkipped: number;   // the flow was not in a movable state (closing, already moving)
  injected: { loss: number; dup: number; reorder: number; corrupt: number; delay: number };
  leaks: SoakLeaks;
  errors: string[];
}

const APP_PORT = 7;
const FIRST_PORT = 20000;
const LAST_PORT = 60000;
const FLOW_TIMEOUT_MS = 120_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function faultsFor(r: () => number): string {
  const rate = (max: number) => (max / 10 + r() * max * 0.9).toFixed(5); // every kind of fault, up to max
  return `loss=${rate(0.02)}&dup=${rate(0.01)}&reorder=${rate(0.02)}&corrupt=${rate(0.002)}&delay_us=${Math.floor(r() * 40)}&jitter_us=${Math.floor(r() * 20)}`;
}

function appFlowsOf(stack: Stack): number {
  return stack.flows().filter((f) => f.localPort === APP_PORT || f.remotePort === APP_PORT).length;
}

interface Baseline {
  slots: number;
  chunks: number;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const seed = opts.seed ?? 1;
  const r = prng(seed);
  const faults = faultsFor(r);
  const log = opts.log ?? (() => {});
  const errors: string[] = [];
  const fail = (msg: string) => {
    if (errors.length < 50) errors.push(msg);
  };
  // Flows steered to a server. Once both sides closed the flow drains: its steering entry stays until no
  // engine holds it any more (a server in LAST_ACK still needs the client's last ACK, or its RST), as a
  // balancer's entry outlives the connection until it ages out.
  const open = new Map<number, { clientClosed: boolean; serverClosed: boolean }>();
  const draining = new Set<number>();
  const finishSide = (port: number, side: 'clientClosed' | 'serverClosed') => {
    const f = open.get(port);
    if (!f) return;
    f[side] = true;
    if (f.clientClosed && f.serverClosed) {
      open.delete(port);
      draining.add(port);
    }
  };
  const cluster = await MemCluster.open({
    name: `soak-${process.pid}-${seed}`, servers: ['rtA', 'rtB', 'rtC'], faults, seed, net: 95,
    app: echoResumable(), port: APP_PORT, jsLane: opts.jsLane ?? false, tuning: { timeWaitMs: 200 }, migrationTimeoutMs: 10_000,
    onServerClose: (_srv, conn) => finishSide(conn.remotePort ?? 0, 'serverClosed'),
  });
  const c = cluster;
  const servers = [...c.servers.values()];
  const stacks = [c.client, ...servers.map((s) => s.stack)];
  const unsteer = (port: number) => c.switch.unsteer({ localAddress: c.vip, localPort: APP_PORT, remoteAddress: c.clientAddress, remotePort: port });
  const sweep = () => {
    if (draining.size === 0) return;
    const held = new Set<number>();
    for (const s of stacks) for (const f of s.flows()) if (f.localPort === APP_PORT) held.add(f.remotePort);
    else if (f.remotePort === APP_PORT) held.add(f.localPort);
    for (const p of draining) {
      if (held.has(p)) continue;
      draining.delete(p);
      unsteer(p);
    }
  };
  const sweeper = setInterval(sweep, 100);
  const baseline = new Map<Stack, Baseline>(stacks.map((s) => [s, { slots: s.stats().arena.slotsUsed, chunks: s.stats().arena.chunksUsed }]));
  const result: SoakResult = {
    seed, seconds: 0, faults, flows: 0, bytes: 0, migrations: 0, migrationsRefused: 0, migrationsSkipped: 0,
    injected: { loss: 0, dup: 0, reorder: 0, corrupt: 0, delay: 0 },
    leaks: { appFlows: 0, connections: 0, steering: 0, slots: 0, chunks: 0, held: 0 }, errors,
  };
  const t0 = Date.now();
  const deadline = t0 + opts.seconds * 1000;
  let nextPort = FIRST_PORT;
  const takePort = (): number => {
    for (let i = 0; i < LAST_PORT - FIRST_PORT; i++) {
      const p = nextPort;
      nextPort = nextPort >= LAST_PORT ? FIRST_PORT : nextPort + 1;
      if (!open.has(p) && !draining.has(p)) return p;
    }
    throw new Error('no free client port');
  };

  // What happened to each flow's server side, for the error message of a flow that fails (last few only).
  const history = new Map<number, string[]>();
  const note = (port: number, what: string) => {
    const h = history.get(port) ?? [];
    h.push(`${Date.now() - t0}ms ${what}`);
    if (h.length > 6) h.shift();
    history.set(port, h);
  };

  // Where a stalled flow stands on both sides, for its error message: the streams and the engines' TCBs.
  const stuckReport = (port: number, client: Connection): string => {
    const tcb = (f: FlowInfo | null | undefined) => f ? `${f.state} una ${f.sndUna} nxt ${f.sndNxt} wnd ${f.sndWnd} rcv ${f.rcvNxt}/${f.rcvWnd} ` +
      `unacked ${f.unackedBytes} unsent ${f.unsentBytes} readable ${f.readableBytes} rto ${f.rtoUs} rtx ${f.retransmits} frozen ${f.frozen} held ${f.heldSegments}` : 'no flow';
    const stream = (x: Connection) => `${x.destroyed ? 'destroyed ' : ''}${x.migrating ? 'migrating ' : ''}flowing ${x.readableFlowing} ` +
      `rbuf ${x.readableLength} wbuf ${x.writableLength}${x.writableNeedDrain ? ' needDrain' : ''}${x.readableEnded ? ' readEnded' : ''}${x.writableEnded ? ' writeEnded' : ''}`;
    const parts = [`client [${stream(client)}; ${tcb(client.info())}]`];
    for (const s of servers) {
      const f = s.stack.flows().find((x) => x.localPort === APP_PORT && x.remotePort === port);
      const sc = [...s.conns].find((x) => x.remotePort === port);
      if (f || sc) parts.push(`${s.name} [${sc ? stream(sc) : 'no connection'}; ${tcb(f)}]`);
    }
    // Where segments of frozen flows can go missing: dropped by a full hold, or a forward nobody took.
    parts.push(`dropped: ${servers.map((s) => {
      const lane = s.stack.engine.laneStats?.();
      return `${s.name} held ${s.stack.stats().tcp.heldDrops ?? 0} fwd ${lane?.forwardDropped ?? 0} (early ${lane?.forwardEarly ?? 0})`;
    }).join(', ')}`);
    return parts.join(' ');
  };

  // ---- one flow: random writes, reads with random pauses, everything echoed back and checked ----
  const runFlow = async (): Promise<void> => {
    const port = takePort();
    const srv = servers[Math.floor(r() * servers.length)]!;
    const total = 1 + Math.floor(r() * (opts.maxFlowBytes ?? 1024 * 1024));
    const base = Math.floor(r() * 1e9); // where in the pattern this flow's bytes start
    const maxPiece = 1 + Math.floor(r() * 64 * 1024);
    const pauseOdds = r() * 0.05;
    open.set(port, { clientClosed: false, serverClosed: false });
    c.switch.steerTo({ localAddress: c.vip, localPort: APP_PORT, remoteAddress: c.clientAddress, remotePort: port }, srv.port);
    result.flows++;
    let conn: Connection;
    try {
      conn = c.client.connect({ port: APP_PORT, host: c.vip, localPort: port, allowHalfOpen: true });
    } catch (err) {
      open.delete(port);
      unsteer(port);
      fail(`connect :${port}: ${(err as Error).message}`);
      return;
    }
    let written = 0;
    const v = new PatternVerifier();
    v.offset = base;
    let paused = false;
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`flow :${port} did not finish in ${FLOW_TIMEOUT_MS} ms (${v.offset - base} of ${total} back, ${written} written); ${stuckReport(port, conn)}`)), FLOW_TIMEOUT_MS);
      conn.on('data', (d: Buffer) => {
        v.update(d);
        if (!paused && r() < pauseOdds) {
          paused = true;
          conn.pause();
          setTimeout(() => {
            paused = false;
            conn.resume();
          }, Math.floor(r() * 20));
        }
      });
      conn.on('error', (err: Error) => {
        clearTimeout(timer);
        reject(err);
      });
      conn.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
      conn.on('end', () => conn.end());
    });
    done.catch(() => {});
    const write = async (): Promise<void> => {
      await new Promise<void>((resolve, reject) => {
        conn.once('connect', () => resolve());
        conn.once('error', reject);
      });
      for (let off = 0; off < total;) {
        const n = Math.min(total - off, 1 + Math.floor(r() * maxPiece));
        const room = conn.write(patternChunk(base + off, n));
        off += n;
        written = off;
        if (!room) await new Promise<void>((res) => conn.once('drain', () => res()));
        if (r() < 0.05) await sleep(Math.floor(r() * 5));
      }
      conn.end();
    };
    try {
      await Promise.all([write(), done]);
      if (v.offset - base !== total) fail(`flow :${port}: ${v.offset - base} of ${total} bytes came back`);
      else if (!v.ok) fail(`flow :${port}: byte ${v.firstMismatch - base} differs`);
      else result.bytes += total;
    } catch (err) {
      fail(`flow :${port}: ${(err as Error).message} (${v.offset - base} of ${total} back; ${(history.get(port) ?? []).join('; ') || 'never migrated'})`);
      conn.destroy();
    } finally {
      finishSide(port, 'clientClosed');
      history.delete(port);
    }
  };

  // ---- migrations: a random server-side connection to a random other runtime ----
  let migrating = true;
  const migrateLoop = async (): Promise<void> => {
    while (migrating) {
      const from = servers[Math.floor(r() * servers.length)]!;
      const conns = [...from.conns].filter((x) => !x.destroyed && !x.migrating);
      if (conns.length === 0) {
        await sleep(2);
        continue;
      }
      const conn = conns[Math.floor(r() * conns.length)]!;
      const others = servers.filter((s) => s !== from);
      const to: MemServer = others[Math.floor(r() * others.length)]!;
      const port = conn.remotePort ?? 0;
      try {
        const t = await from.stack.migrate(conn, to.name);
        result.migrations++;
        note(port, `${from.name}->${to.name} ok ${Math.round(t.totalUs)}us`);
      } catch (err) {
        const code = (err as { code?: string }).code;
        note(port, `${from.name}->${to.name} ${code ?? 'failed'}`);
        if (code === 'ERR_MIGRATION_STATE') result.migrationsSkipped++;
        else {
          result.migrationsRefused++;
          if (result.migrationsRefused <= 5) log(`migration ${from.name} -> ${to.name} refused: ${code} ${(err as Error).message}`);
        }
      }
      await sleep(Math.floor(r() * 10));
    }
  };

  try {
    const migrators = Array.from({ length: opts.migrators ?? 2 }, () => migrateLoop());
    const lanes = Array.from({ length: opts.flows ?? 16 }, async () => {
      while (Date.now() < deadline) await runFlow();
    });
    let lastReport = Date.now();
    const reporter = setInterval(() => {
      if (Date.now() - lastReport < 10_000) return;
      lastReport = Date.now();
      log(`${Math.round((Date.now() - t0) / 1000)} s: ${result.flows} flows, ${(result.bytes / 1e6).toFixed(1)} MB checked, ${result.migrations} migrations, ${errors.length} errors`);
    }, 1000);
    await Promise.all(lanes);
    migrating = false;
    await Promise.all(migrators);
    clearInterval(reporter);
    result.seconds = (Date.now() - t0) / 1000;

    // ---- quiescence, then what was left behind ----
    const settle = Date.now() + 15_000;
    // The migration channels stay open: wait until what they last sent was acknowledged too, so any chunk
    // still in use at the end is one that leaked.
    const busy = (s: Stack) => s.flows().some((f) => f.unackedBytes > 0 || f.unsentBytes > 0 || f.readableBytes > 0);
    while (Date.now() < settle && (stacks.some((s) => appFlowsOf(s) > 0 || busy(s)) || open.size > 0 || draining.size > 0)) {
      await sleep(50);
      sweep();
    }
    for (const s of stacks) {
      const d = s.stats().dev;
      result.injected.loss += d.injectedLoss ?? 0;
      result.injected.dup += d.injectedDup ?? 0;
      result.injected.reorder += d.injectedReorder ?? 0;
      result.injected.corrupt += d.injectedCorrupt ?? 0;
      result.injected.delay += d.injectedDelay ?? 0;
    }
    const leaks = result.leaks;
    for (const s of stacks) {
      leaks.appFlows += appFlowsOf(s);
      leaks.held += s.flows().reduce((a, f) => a + f.heldSegments, 0);
      const b = baseline.get(s)!;
      const a = s.stats().arena;
      // The migration channels opened during the run hold a slot each: count what is over them.
      const channels = s.flows().filter((f) => !(f.localPort === APP_PORT || f.remotePort === APP_PORT)).length;
      leaks.slots += Math.max(0, a.slotsUsed - b.slots - channels);
      leaks.chunks += Math.max(0, a.chunksUsed - b.chunks);
    }
    leaks.connections = c.client.connections().filter((x) => x.remotePort === APP_PORT).length + servers.reduce((a, s) => a + s.conns.size, 0);
    leaks.steering = c.switch.entries();
    for (const s of stacks) for (const f of s.flows()) if (f.localPort === APP_PORT || f.remotePort === APP_PORT) log(`left on ${s.address}: ${JSON.stringify({ id: f.id, state: f.state, l: f.localPort, r: f.remotePort, frozen: f.frozen, held: f.heldSegments, unacked: f.unackedBytes, unsent: f.unsentBytes, readable: f.readableBytes })}`);
    if (open.size + draining.size > 0) log(`not finished: open ${[...open.keys()].join(' ')}; draining ${[...draining].join(' ')}`);
    log(`resets sent: ${stacks.map((s) => `${s.address} ${s.stats().tcp.rstsSent ?? 0}`).join(', ')}; no-listener resets ${stacks.map((s) => s.stats().tcp.noListenerRsts ?? 0).join('/')}`);
    log(`arena: ${stacks.map((s) => `${s.stats().arena.slotsUsed} slots/${s.stats().arena.chunksUsed} chunks (${s.flows().length} flows)`).join(', ')}`);
  } finally {
    clearInterval(sweeper);
    await c.close();
  }
  return result;
}

/** True when the run checked every byte and left nothing behind. */
export function soakOk(r: SoakResult): boolean {
  return r.errors.length === 0 && Object.values(r.leaks).every((n) => n === 0);
}
