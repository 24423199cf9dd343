// The L4 load balancer in XDP (native/bpf/lb.bpf.c) from TypeScript: attach it to the client-facing
// interface of a namespace, give it backends, steer single flows when a runtime migrates them.
//
// Node cannot enter another network namespace, and the program's maps must outlive this process, so
// everything goes through build/lbctl (native/bpf/lbctl.c): it enters the namespace to attach, pins a
// bpf_link and the maps in bpffs, and reads or writes pinned maps by path. The pins are the state: any
// process (the CLI that set the balancer up, a runtime in hostA that migrates a flow) opens the same
// balancer by name. They live in a bpffs on /run/capybara/bpf rather than /sys/fs/bpf because
// `ip netns exec` hides the latter from the processes it starts.
//
// Ageing: the program itself treats a flow idle longer than idleMs as new (so ageing is exact however
// rarely anyone sweeps); expire() and the automatic sweep only reclaim the entries, and the LRU map
// evicts the oldest when full.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIPv4 } from 'node:net';
import { CapybaraError, errnoName } from '../runtime/errors.js';
import { packageRoot } from '../runtime/native.js';
import { run, runOk } from './exec.js';
import { MAGLEV_TABLE_SIZE, maglevTable } from './lb-maglev.js';

/** Must match LB_MAX_BACKENDS in native/bpf/lb.bpf.c. */
export const LB_MAX_BACKENDS = 64;

/**
 * Errors of the load balancer. code is one of:
 *   ERR_CAPYBARA_LB_NOT_BUILT     build/lb.bpf.o or build/lbctl missing (make -C native/bpf)
 *   ERR_CAPYBARA_LB_NOT_ATTACHED  no balancer pinned under that name (or its interface is gone)
 *   ERR_CAPYBARA_LB_BUSY          a balancer (or another XDP program) is attached already
 *   ERR_CAPYBARA_LB_NO_BACKEND    a backend name or index that is not configured
 *   ERR_CAPYBARA_LB_INVALID       bad arguments (addresses, ports, options)
 *   ERR_CAPYBARA_LB               anything else; errno (a name such as 'EPERM') says what the kernel said
 */
export class LbError extends CapybaraError {
  readonly errno: string | undefined;
  constructor(code: string, message: string, errno?: string) {
    super(code, message);
    this.errno = errno;
  }
}

/** A TCP flow as the balancer sees it: client -> VIP. */
export interface Flow {
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

export interface BackendSpec {
  name: string;      // stable identity: the Maglev permutation derives from it
  iface: string;     // the lb's interface towards the backend (in the lb namespace)
  mac?: string;      // the backend's MAC on that link; else learnt from the lb's neighbour table
  ip?: string;       // an address of the backend on that link, to learn its MAC by ARP
}

export interface Backend {
  index: number;
  name: string;
  iface: string;
  ifindex: number;
  mac: string;
  lbMac: string;
}

export interface FlowEntry extends Flow {
  backend: number;
  name: string | undefined;
  idleMs: number;
}

export interface LbStats {
  backends: { index: number; name: string | undefined; packets: number; bytes: number }[];
  hit: number;         // packets of known flows
  new: number;         // flows placed by the hash
  aged: number;        // flows idle past idleMs, placed again by the hash
  pass: number;        // frames not for the balancer (other destinations, non-TCP)
  noBackend: number;   // VIP frames passed because their backend slot is empty
}

export interface LoadBalancerOptions {
  ns: string;            // namespace of the balancer
  iface: string;         // the interface clients' packets arrive on
  vip: string;
  name?: string;         // pins under <runDir>/bpf/<name> (default 'lb')
  runDir?: string;       // default /run/capybara
  idleMs?: number;       // a flow idle this long is placed anew (default 300 s)
  sweepMs?: number;      // reclaim idle entries this often while attached by this process (0 = never)
  mode?: 'native' | 'skb';
  bpfDir?: string;       // where lb.bpf.o and lbctl are: $CAPYBARA_BPF_DIR, else build/ of the package
  timeoutMs?: number;    // per lbctl call (default 20 s)
}

interface SavedState {
  ns: string;
  iface: string;
  vip: string;
  idleMs: number;
  backends: Backend[];
}

const DEFAULT_IDLE_MS = 300_000;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function invalid(message: string): LbError {
  return new LbError('ERR_CAPYBARA_LB_INVALID', message);
}

function checkFlow(f: Flow): void {
  if (!f || !isIPv4(f.src) || !isIPv4(f.dst)) throw invalid(`flow addresses must be IPv4 (got ${f?.src} -> ${f?.dst})`);
  for (const p of [f.sport, f.dport]) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw invalid(`bad port ${p}`);
  }
}

function flowArgs(f: Flow): string[] {
  checkFlow(f);
  return [f.src, String(f.sport), f.dst, String(f.dport)];
}

function num(s: string | undefined): number {
  const n = Number(s);
  if (!Number.isFinite(n)) throw new LbError('ERR_CAPYBARA_LB', `lbctl printed something unexpected: ${s}`);
  return n;
}

/** Where lb.bpf.o and lbctl live. */
export function bpfDir(): string {
  return process.env.CAPYBARA_BPF_DIR ?? join(packageRoot(), 'build');
}

interface IpLinkJson {
  ifindex: number;
  ifname: string;
  address?: string;
  xdp?: unknown;
}

async function linkInfo(ns: string, iface: string): Promise<IpLinkJson> {
  const r = await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', iface], { timeoutMs: 5000 });
  if (r.code !== 0) throw new LbError('ERR_CAPYBARA_LB_INVALID', `no interface ${iface} in namespace ${ns}: ${r.stderr.trim()}`, 'ENODEV');
  const j = JSON.parse(r.stdout) as IpLinkJson[];
  if (!j[0]) throw new LbError('ERR_CAPYBARA_LB_INVALID', `no interface ${iface} in namespace ${ns}`, 'ENODEV');
  return j[0];
}

interface NeighJson {
  dst: string;
  lladdr?: string;
  state?: string[];
}

async function neighbourMac(ns: string, iface: string, ip: string): Promise<string | undefined> {
  const r = await run('ip', ['-n', ns, '-j', '-4', 'neigh', 'show', 'to', ip, 'dev', iface], { timeoutMs: 5000 });
  if (r.code !== 0) return undefined;
  const entries = JSON.parse(r.stdout || '[]') as NeighJson[];
  const e = entries.find((n) => n.dst === ip && n.lladdr && !(n.state ?? []).some((s) => s === 'FAILED' || s === 'INCOMPLETE'));
  return e?.lladdr?.toLowerCase();
}

/** The backend's MAC from the lb's neighbour table, asking by ARP (a ping) when it is not there yet. */
async function learnMac(ns: string, iface: string, ip: string): Promise<string> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const mac = await neighbourMac(ns, iface, ip);
    if (mac) return mac;
    await run('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', '-I', iface, ip], { timeoutMs: 5000 });
  }
  throw new LbError('ERR_CAPYBARA_LB_NO_BACKEND', `no ARP answer from ${ip} on ${iface} in ${ns}: give the backend's mac`, 'EHOSTUNREACH');
}

/** Mounts a bpffs on dir unless one is there (the pins must survive this process and be seen by all). */
async function ensureBpffs(dir: string): Promise<void> {
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  if (mounts.split('\n').some((l) => {
    const f = l.split(' ');
    return f[1] === dir && f[2] === 'bpf';
  })) return;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  await runOk('mount', ['-t', 'bpf', 'bpf', dir], { timeoutMs: 10000 });
}

export class LoadBalancer {
  readonly ns: string;
  readonly iface: string;
  readonly vip: string;
  readonly name: string;
  readonly pinDir: string;
  private idle: number;
  private readonly runDir: string;
  private readonly stateFile: string;
  private readonly sweepMs: number;
  private readonly mode: 'native' | 'skb';
  private readonly dir: string;
  private readonly timeoutMs: number;
  private table: Backend[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping = false;
  /** The last error of the automatic sweep, if its last run failed. */
  lastSweepError: Error | undefined;

  constructor(opts: LoadBalancerOptions) {
    if (!opts || typeof opts.ns !== 'string' || !opts.ns || typeof opts.iface !== 'string' || !opts.iface) throw invalid('ns and iface are required');
    if (!isIPv4(opts.vip)) throw invalid(`vip must be an IPv4 address (got ${opts.vip})`);
    this.name = opts.name ?? 'lb';
    if (!NAME_RE.test(this.name)) throw invalid(`bad balancer name "${this.name}"`);
    this.idle = opts.idleMs ?? DEFAULT_IDLE_MS;
    if (!Number.isFinite(this.idle) || this.idle <= 0) throw invalid(`idleMs must be > 0 (got ${opts.idleMs})`);
    this.sweepMs = opts.sweepMs ?? Math.min(this.idle, 30_000);
    if (!Number.isFinite(this.sweepMs) || this.sweepMs < 0) throw invalid(`sweepMs must be >= 0 (got ${opts.sweepMs})`);
    this.mode = opts.mode ?? 'native';
    if (this.mode !== 'native' && this.mode !== 'skb') throw invalid(`mode must be native or skb (got ${String(opts.mode)})`);
    this.ns = opts.ns;
    this.iface = opts.iface;
    this.vip = opts.vip;
    this.runDir = opts.runDir ?? '/run/capybara';
    this.pinDir = join(this.runDir, 'bpf', this.name);
    this.stateFile = join(this.runDir, `lb-${this.name}.json`);
    this.dir = opts.bpfDir ?? bpfDir();
    this.timeoutMs = opts.timeoutMs ?? 20_000;
  }

  /**
   * A balancer that another process attached (a runtime steering a flow it migrates): reads what that
   * process configured. Throws ERR_CAPYBARA_LB_NOT_ATTACHED when there is none.
   */
  static async open(opts: { name?: string; runDir?: string; bpfDir?: string; timeoutMs?: number; sweepMs?: number } = {}): Promise<LoadBalancer> {
    const name = opts.name ?? 'lb';
    const runDir = opts.runDir ?? '/run/capybara';
    let saved: SavedState;
    try {
      saved = JSON.parse(readFileSync(join(runDir, `lb-${name}.json`), 'utf8')) as SavedState;
    } catch {
      throw new LbError('ERR_CAPYBARA_LB_NOT_ATTACHED', `no load balancer "${name}" is set up (no ${join(runDir, `lb-${name}.json`)})`, 'ENOENT');
    }
    const lb = new LoadBalancer({ ...opts, name, runDir, ns: saved.ns, iface: saved.iface, vip: saved.vip, idleMs: saved.idleMs, sweepMs: opts.sweepMs ?? 0 });
    lb.table = saved.backends ?? [];
    const st = await lb.attached();
    if (!st) throw new LbError('ERR_CAPYBARA_LB_NOT_ATTACHED', `load balancer "${name}" is not attached (its interface is gone)`, 'ENOENT');
    return lb;
  }

  /** A flow idle this long is placed anew by the hash (and its entry may be reclaimed). */
  get idleMs(): number {
    return this.idle;
  }

  /** The backends as last set (by this process or, after open(), by the one that attached). */
  backends(): Backend[] {
    return this.table.map((b) => ({ ...b }));
  }

  private async ctl(args: string[], input?: string): Promise<string> {
    const bin = join(this.dir, 'lbctl');
    if (!existsSync(bin)) throw new LbError('ERR_CAPYBARA_LB_NOT_BUILT', `${bin} is missing: run make -C native/bpf`);
    const r = await run(bin, [args[0]!, this.pinDir, ...args.slice(1)], { timeoutMs: this.timeoutMs, ...(input !== undefined ? { input } : {}) });
    if (r.code === 0) return r.stdout;
    const errno = r.code === null ? 'ETIMEDOUT' : errnoName(r.code);
    const detail = r.stderr.trim().split('\n').slice(-2).join(' / ') || `lbctl ${args[0]} failed (${errno})`;
    const code = errno === 'EBUSY' || errno === 'EEXIST' ? 'ERR_CAPYBARA_LB_BUSY'
      : errno === 'ENOENT' && args[0] !== 'attach' ? 'ERR_CAPYBARA_LB_NOT_ATTACHED'
      : errno === 'ENXIO' ? 'ERR_CAPYBARA_LB_NO_BACKEND'
      : errno === 'EINVAL' ? 'ERR_CAPYBARA_LB_INVALID'
      : 'ERR_CAPYBARA_LB';
    throw new LbError(code, detail, errno);
  }

  /** Whether a balancer is attached under this name: its interface index and program id. */
  async attached(): Promise<{ ifindex: number; progId: number } | undefined> {
    const bin = join(this.dir, 'lbctl');
    if (!existsSync(bin)) throw new LbError('ERR_CAPYBARA_LB_NOT_BUILT', `${bin} is missing: run make -C native/bpf`);
    const r = await run(bin, ['status', this.pinDir], { timeoutMs: this.timeoutMs });
    const m = /^attached (\d+) (\d+)/.exec(r.stdout);
    return r.code === 0 && m ? { ifindex: Number(m[1]), progId: Number(m[2]) } : undefined;
  }

  /**
   * Loads the program, attaches it to iface in ns and pins it; balances nothing until setBackends().
   * Starts the automatic sweep (sweepMs) in this process.
   */
  async attach(): Promise<void> {
    const obj = join(this.dir, 'lb.bpf.o');
    if (!existsSync(obj)) throw new LbError('ERR_CAPYBARA_LB_NOT_BUILT', `${obj} is missing: run make -C native/bpf`);
    await ensureBpffs(join(this.runDir, 'bpf'));
    await this.ctl(['attach', this.ns, this.iface, obj, this.mode]);
    try {
      await this.ctl(['config', this.vip, String(Math.round(this.idle * 1e6))]);
      this.table = [];
      this.save();
    } catch (err) {
      await this.ctl(['detach']).catch(() => {});
      throw err;
    }
    this.startSweep();
  }

  private save(): void {
    const state: SavedState = { ns: this.ns, iface: this.iface, vip: this.vip, idleMs: this.idle, backends: this.table };
    mkdirSync(this.runDir, { recursive: true });
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, this.stateFile);
  }

  /**
   * Configures the backends and fills the Maglev table over them. Flows already placed keep their
   * backend (the redirect table is left alone); new flows spread by the hash. Returns the backends with
   * their indices, interface indices and MAC addresses as written.
   */
  async setBackends(specs: readonly BackendSpec[]): Promise<Backend[]> {
    if (!Array.isArray(specs) || specs.length === 0) throw invalid('setBackends needs at least one backend');
    if (specs.length > LB_MAX_BACKENDS) throw invalid(`at most ${LB_MAX_BACKENDS} backends`);
    const names = specs.map((s) => s.name);
    if (names.some((n) => typeof n !== 'string' || !n) || new Set(names).size !== names.length) throw invalid('backend names must be non-empty and unique');
    const out: Backend[] = [];
    for (const [index, s] of specs.entries()) {
      const link = await linkInfo(this.ns, s.iface);
      let mac = s.mac?.toLowerCase();
      if (mac === undefined) {
        if (!s.ip || !isIPv4(s.ip)) throw invalid(`backend ${s.name}: give mac, or ip to learn it by ARP`);
        mac = await learnMac(this.ns, s.iface, s.ip);
      }
      if (!MAC_RE.test(mac)) throw invalid(`backend ${s.name}: bad MAC ${mac}`);
      const lbMac = (link.address ?? '').toLowerCase();
      if (!MAC_RE.test(lbMac)) throw invalid(`interface ${s.iface} in ${this.ns} has no Ethernet address`);
      out.push({ index, name: s.name, iface: s.iface, ifindex: link.ifindex, mac, lbMac });
    }
    const table = maglevTable(names, MAGLEV_TABLE_SIZE);
    const lines = out.map((b) => `backend ${b.index} ${b.ifindex} ${b.mac} ${b.lbMac}`);
    lines.push('table');
    const parts: string[] = [];
    for (let i = 0; i < table.length; i += 4096) parts.push(Array.from(table.subarray(i, i + 4096)).join(' '));
    await this.ctl(['set', this.ns], `${lines.join('\n')}\n${parts.join('\n')}\n`);
    this.table = out;
    this.save();
    return out.map((b) => ({ ...b }));
  }

  private backendIndex(backend: string | number): number {
    const b = typeof backend === 'number' ? this.table.find((x) => x.index === backend) : this.table.find((x) => x.name === backend);
    if (!b) throw new LbError('ERR_CAPYBARA_LB_NO_BACKEND', `no backend ${JSON.stringify(backend)} (have ${this.table.map((x) => x.name).join(', ') || 'none'})`);
    return b.index;
  }

  /**
   * Steers one flow to a backend (what a runtime does when it migrates the connection). When the
   * promise resolves, every packet of the flow that reaches the balancer from then on goes there;
   * packets already past it are the old host's to forward.
   */
  async redirect(flow: Flow, backend: string | number): Promise<void> {
    const idx = this.backendIndex(backend);
    await this.ctl(['redirect', ...flowArgs(flow), String(idx)]);
  }

  /** The flow's entry in the redirect table, or undefined when it has none (idle or never seen). */
  async lookup(flow: Flow): Promise<FlowEntry | undefined> {
    const args = flowArgs(flow);
    try {
      const out = await this.ctl(['lookup', ...args]);
      const [b, idle] = out.trim().split(/\s+/);
      const backend = num(b);
      return { ...flow, backend, name: this.table.find((x) => x.index === backend)?.name, idleMs: num(idle) / 1e6 };
    } catch (err) {
      if (err instanceof LbError && err.errno === 'ENOENT' && (await this.attached())) return undefined;
      throw err;
    }
  }

  /** Removes a flow's entry: its next packet is placed by the hash again. Returns whether it existed. */
  async forget(flow: Flow): Promise<boolean> {
    const args = flowArgs(flow);
    try {
      await this.ctl(['forget', ...args]);
      return true;
    } catch (err) {
      if (err instanceof LbError && err.errno === 'ENOENT' && (await this.attached())) return false;
      throw err;
    }
  }

  /** Every entry of the redirect table. */
  async flows(): Promise<FlowEntry[]> {
    const out = await this.ctl(['flows']);
    const res: FlowEntry[] = [];
    for (const line of out.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length !== 6) continue;
      const backend = num(f[4]);
      res.push({ src: f[0]!, sport: num(f[1]), dst: f[2]!, dport: num(f[3]), backend, name: this.table.find((x) => x.index === backend)?.name, idleMs: num(f[5]) / 1e6 });
    }
    return res;
  }

  /** Deletes entries idle longer than idleMs (default: the balancer's); returns how many went. */
  async expire(idleMs = this.idle): Promise<number> {
    if (!Number.isFinite(idleMs) || idleMs <= 0) throw invalid(`idleMs must be > 0 (got ${idleMs})`);
    const out = await this.ctl(['expire', String(Math.max(1, Math.round(idleMs * 1e6)))]);
    return num(out.trim());
  }

  async stats(): Promise<LbStats> {
    const out = await this.ctl(['stats']);
    const s: LbStats = { backends: [], hit: 0, new: 0, aged: 0, pass: 0, noBackend: 0 };
    for (const line of out.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[0] === 'backend' && f.length === 4) {
        const index = num(f[1]);
        s.backends.push({ index, name: this.table.find((x) => x.index === index)?.name, packets: num(f[2]), bytes: num(f[3]) });
      } else if (f.length === 2) {
        const v = num(f[1]);
        if (f[0] === 'hit') s.hit = v;
        else if (f[0] === 'new') s.new = v;
        else if (f[0] === 'aged') s.aged = v;
        else if (f[0] === 'pass') s.pass = v;
        else if (f[0] === 'no_backend') s.noBackend = v;
      }
    }
    return s;
  }

  /** Changes the idle time of an attached balancer: the program applies it from its next packet on. */
  async setIdle(idleMs: number): Promise<void> {
    if (!Number.isFinite(idleMs) || idleMs <= 0) throw invalid(`idleMs must be > 0 (got ${idleMs})`);
    await this.ctl(['config', this.vip, String(Math.max(1, Math.round(idleMs * 1e6)))]);
    this.idle = idleMs;
    this.save();
  }

  /** Reclaims idle entries every sweepMs in this process (attach() starts it); the timer is unref'd. */
  startSweep(): void {
    if (this.sweeper || this.sweepMs === 0) return;
    this.sweeper = setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = true;
      this.expire()
        .then(() => (this.lastSweepError = undefined))
        .catch((err: Error) => (this.lastSweepError = err))
        .finally(() => (this.sweeping = false));
    }, this.sweepMs);
    this.sweeper.unref();
  }

  stopSweep(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Detaches the program and removes its pins: the namespace routes as it did before. Idempotent. */
  async detach(): Promise<void> {
    this.stopSweep();
    if (existsSync(this.pinDir)) await this.ctl(['detach']);
    rmSync(this.stateFile, { force: true });
    this.table = [];
  }
}
