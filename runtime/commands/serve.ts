// capybara serve <echo|discard|http>: one Stack, one server running an app, an admin socket; runs until
// SIGINT/SIGTERM and then shuts down cleanly (the engine's destroy detaches XDP). With --on HOST it
// re-executes itself inside that testbed namespace with the host's device and addresses.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PLAN, hostDevice, isHostName, mountBpffs, status as testbedStatus } from '../../dataplane/testbed.js';
import { AdminServer, stackAdminHandlers } from '../admin.js';
import { APPS, isAppName, serveResumable, type AppContext, type AppInstance } from '../apps/index.js';
import { resolve as resolvePath } from 'node:path';
import { intOpt, onePositional, str, type Command, type Io } from '../cli.js';
import { CapybaraError, UsageError, fromAddonError } from '../errors.js';
import { packageRoot } from '../native.js';
import { Stack } from '../stack.js';
import { DEFAULT_BACKLOG } from '../server.js';
import type { Connection } from '../connection.js';
import { balancerSteering, defaultKeyPath, loadClusterKey, migrationFaultsFromEnv, parsePeers } from '../migration/cluster.js';
import type { MigrationPeer } from '../migration/migrator.js';
import { readTlsFiles } from '../tls.js';

export const DEFAULT_NAME = 'default';
/** Apps that also exist in C (native/apps/) and can run on the engine thread with --native. */
export const NATIVE_APPS = ['echo', 'sockperf'] as const;
type NativeApp = (typeof NATIVE_APPS)[number];
const isNativeApp = (a: string): a is NativeApp => (NATIVE_APPS as readonly string[]).includes(a);

/** Resolves on the first SIGINT or SIGTERM. */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

function binPath(): string {
  return join(packageRoot(), 'bin', 'capybara.js');
}

async function reexecInHost(host: string, args: string[]): Promise<number> {
  const s = await testbedStatus();
  if (!s.up) throw new CapybaraError('ERR_CAPYBARA_NO_TESTBED', 'the testbed is not up: run capybara testbed up');
  const ns = PLAN.hosts[host as keyof typeof PLAN.hosts].ns;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, binPath(), ...args], {
    stdio: 'inherit',
    env: { ...process.env, CAPYBARA_NETNS: host },
  });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve) => {
      child.on('error', () => resolve(1));
      child.on('exit', (code, sig) => resolve(code ?? (sig ? 1 : 0)));
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'run an app (echo, discard, http, sockperf, l7, redis) on a capybara stack until SIGINT/SIGTERM',
  usage: 'capybara serve <echo|discard|http|sockperf|l7|redis> [--on hostA] [--device URI --address CIDR --gateway IP] [--vip IP] [--peers NAME=IP,...] [--cluster-key FILE] [--port N] [--tls-cert F --tls-key F] [--name NAME] [--native] [--js-lane] [--spin-us N] [--json]',
  help: `Apps:
  echo      every byte comes back (default port 7)
  discard   bytes are dropped (default port 9)
  http      HTTP/1.1 keep-alive: GET /bytes/N (N deterministic bytes), GET /health (default port 80)
  sockperf  answers sockperf ping-pong clients (default port 11111)
  l7        GET /obj/<name> with L7 direct server return: the connection migrates to the object's owner
            among --backends, which answers through the VIP (default port 80); --mode proxy relays instead
  redis     RESP front end forwarding to --store HOST:PORT; connections migrate with their state (port 6379)
  digest    an upload sink: on the peer's FIN answers "<bytes> <sha256>\n"; the running hash migrates (port 7900)

Options:
  --on HOST        run inside testbed host HOST (hostA, hostB) with its device and addresses
  --device URI     xdp:IFACE[@queue] | dpdk:DEVARGS (see README "Bare-metal NIC") | mem:NAME[?faults]
  --address CIDR   the stack's address, e.g. 10.77.1.10/24
  --gateway IP     next hop for off-link peers
  --mac MAC        override the device's MAC address
  --vip IP         a second address shared with the peers behind the L4 balancer
  --peers LIST     runtimes this one migrates connections to/from: NAME=IP[:PORT],... (channel port 7400)
  --cluster-key F  file with the shared cluster key (32..64 bytes; default /run/capybara/cluster.key,
                   created when missing)
  --port N         port to listen on
  --tls-cert F     serve over TLS 1.2/1.3 with this PEM certificate (chain) and --tls-key F's key; the
                   TLS sessions migrate with their connections (not with --native)
  --tls-key F      PEM private key for --tls-cert
  --tls-key-update N  TLS 1.3: the server sends a KeyUpdate (asking the client for one too) after every
                   N bytes it sent on a connection
  --tls-handshake-timeout MS  close a connection whose TLS handshake is not done within MS ms
                   (default 120000, as Node's tls.createServer; 0: no limit)
  --name NAME      runtime name: admin socket /run/capybara/NAME.sock (default: the host with --on,
                   else "${DEFAULT_NAME}")
  --native         run the app in C on the engine thread (echo, sockperf): no JavaScript per request
  --js-lane        with --peers: connections of the JS apps migrate through the engines' migration lane,
                   like --native ones (IPv4 protocol 253 between the runtimes, sealed with keys from the
                   channel; the target's engine adopts and answers, its JS takes the connection after);
                   without it they take the migration channel (DESIGN's protocol). Experimental: see README
  --spin-us N      how long the engine busy-polls after activity before sleeping (default 50)
  --json           print the listening line as JSON
  --backends LIST  l7: the backends objects are hashed over, this host included (default: this host and
                   its peers; with --on every testbed host)
  --mode M         l7: dsr (migrate to the owner, default) or proxy (fetch from the owner and relay)
  --manifest F     l7: JSON {"name": bytes} of the objects (default: sizes from the names, see README)
  --store H:P      redis: the redis-server commands are forwarded to (default 127.0.0.1:6379)

With --on, the VIP and the other testbed hosts as peers are set too, so "capybara ctl --on hostA migrate
all --to hostB" moves connections. Prints "listening on ADDRESS:PORT (device URI)" once ready.`,
  options: {
    on: { type: 'string' },
    device: { type: 'string' },
    address: { type: 'string' },
    gateway: { type: 'string' },
    mac: { type: 'string' },
    vip: { type: 'string' },
    peers: { type: 'string' },
    'cluster-key': { type: 'string' },
    port: { type: 'string' },
    name: { type: 'string' },
    native: { type: 'boolean' },
    'js-lane': { type: 'boolean' },
    'spin-us': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-key-update': { type: 'string' },
    'tls-handshake-timeout': { type: 'string' },
    backends: { type: 'string' },
    mode: { type: 'string' },
    manifest: { type: 'string' },
    store: { type: 'string' },
  },
  async run(positionals, values, io) {
    const app = onePositional(positionals, Object.keys(APPS), 'app');
    if (!isAppName(app)) throw new UsageError(`unknown app "${app}"`);
    const port = intOpt(values, 'port', 1, 65535) ?? APPS[app].defaultPort;
    const native = values.native === true;
    if (native && !isNativeApp(app)) throw new UsageError(`--native runs ${NATIVE_APPS.join(', ')} (got "${app}")`);
    const spinUs = intOpt(values, 'spin-us', 0, 1_000_000);
    const tlsCert = str(values, 'tls-cert');
    const tlsKey = str(values, 'tls-key');
    if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    if (tlsCert !== undefined && native) throw new UsageError('--native apps do not speak TLS');
    const keyUpdate = intOpt(values, 'tls-key-update', 1, Number.MAX_SAFE_INTEGER);
    if (keyUpdate !== undefined && tlsCert === undefined) throw new UsageError('--tls-key-update needs --tls-cert and --tls-key');
    const hsTimeout = intOpt(values, 'tls-handshake-timeout', 0, 2 ** 31 - 1);
    if (hsTimeout !== undefined && tlsCert === undefined) throw new UsageError('--tls-handshake-timeout needs --tls-cert and --tls-key');
    const appArgs = appOptions(app, values);
    const on = str(values, 'on');
    let device = str(values, 'device');
    let address = str(values, 'address');
    let gateway = str(values, 'gateway');
    let name = str(values, 'name');
    if (on !== undefined) {
      if (!isHostName(on)) throw new UsageError(`--on must be one of ${Object.keys(PLAN.hosts).join(', ')} (got "${on}")`);
      if (device || address || gateway) throw new UsageError('--on sets --device, --address and --gateway itself; give one or the other');
      const h = PLAN.hosts[on];
      const peers = str(values, 'peers') ?? Object.entries(PLAN.hosts).filter(([n]) => n !== on).map(([n, p]) => `${n}=${p.ip}`).join(',');
      const args = ['serve', app, '--device', hostDevice(on), '--address', `${h.ip}/${h.prefixLength}`, '--gateway', h.gateway,
        '--vip', str(values, 'vip') ?? PLAN.vip, '--peers', peers, '--port', String(port), '--name', name ?? on];
      const mac = str(values, 'mac');
      if (mac) args.push('--mac', mac);
      const key = str(values, 'cluster-key');
      if (key) args.push('--cluster-key', key);
      if (native) args.push('--native');
      if (values['js-lane'] === true) args.push('--js-lane');
      if (spinUs !== undefined) args.push('--spin-us', String(spinUs));
      if (tlsCert !== undefined && tlsKey !== undefined) args.push('--tls-cert', resolvePath(tlsCert), '--tls-key', resolvePath(tlsKey));
      if (keyUpdate !== undefined) args.push('--tls-key-update', String(keyUpdate));
      if (hsTimeout !== undefined) args.push('--tls-handshake-timeout', String(hsTimeout));
      if (values.json) args.push('--json');
      for (const [k, v] of Object.entries(appArgs)) if (v !== undefined) args.push(`--${k}`, Array.isArray(v) ? v.join(',') : v);
      if (app === 'l7' && appArgs.backends === undefined) args.push('--backends', Object.keys(PLAN.hosts).join(','));
      return reexecInHost(on, args);
    }
    if (!device) throw new UsageError('--device is required (or --on HOST)');
    if (!address) throw new UsageError('--address is required (or --on HOST)');
    name ??= DEFAULT_NAME;
    const peersOpt = str(values, 'peers');
    return serve({
      app, port, device, address, gateway, mac: str(values, 'mac'), vip: str(values, 'vip'), name, json: values.json === true,
      peers: peersOpt === undefined ? undefined : parsePeers(peersOpt), clusterKey: str(values, 'cluster-key'),
      native, spinUs, appArgs, jsLane: values['js-lane'] === true, tls: tlsCert !== undefined && tlsKey !== undefined ? { ...readTlsFiles(tlsCert, tlsKey), keyUpdateBytes: keyUpdate, handshakeTimeout: hsTimeout } : undefined,
    }, io);
  },
};

export interface ServeParams {
  app: keyof typeof APPS;
  port: number;
  device: string;
  address: string;
  gateway: string | undefined;
  mac: string | undefined;
  vip?: string | undefined;
  peers?: MigrationPeer[] | undefined;
  clusterKey?: string | undefined;
  name: string;
  json: boolean;
  /** Serve with the C app on the engine thread (echo, sockperf). */
  native?: boolean;
  spinUs?: number | undefined;
  /** Connections of JS apps move through the engines' lane, not the channel (MigratorOptions.jsLane). */
  jsLane?: boolean;
  /** Options of the l7 and redis apps. */
  appArgs?: AppArgs;
  /** PEM certificate and key: the app is served over TLS. */
  tls?: { cert: Buffer; key: Buffer; keyUpdateBytes?: number | undefined; handshakeTimeout?: number | undefined } | undefined;
}

interface AppArgs {
  backends?: string[] | undefined;
  mode?: 'dsr' | 'proxy' | undefined;
  manifest?: string | undefined;
  store?: string | undefined;
}

/** --backends/--mode/--manifest (l7) and --store (redis), checked; an error for another app's options. */
function appOptions(app: string, values: Record<string, string | boolean | undefined>): AppArgs {
  const backends = str(values, 'backends');
  const mode = str(values, 'mode');
  const manifest = str(values, 'manifest');
  const store = str(values, 'store');
  if (app !== 'l7' && (backends || mode || manifest)) throw new UsageError('--backends, --mode and --manifest are options of the l7 app');
  if (app !== 'redis' && store) throw new UsageError('--store is an option of the redis app');
  if (mode !== undefined && mode !== 'dsr' && mode !== 'proxy') throw new UsageError(`--mode must be dsr or proxy (got "${mode}")`);
  const list = backends?.split(',').map((b) => b.trim()).filter(Boolean);
  if (list && list.length === 0) throw new UsageError('--backends needs at least one name');
  return { backends: list, mode, manifest: manifest === undefined ? undefined : resolvePath(manifest), store };
}

/** Binds the port to the engine's own copy of the app: its flows never reach JS. */
function listenNative(stack: Stack, p: ServeParams): void {
  if (!isNativeApp(p.app)) throw new UsageError(`--native runs ${NATIVE_APPS.join(', ')} (got "${p.app}")`);
  try {
    stack.engine.listenNative(p.port, DEFAULT_BACKLOG, p.app);
  } catch (err) {
    throw fromAddonError(err, 'listen');
  }
}

async function serve(p: ServeParams, io: Io): Promise<number> {
  if (p.device.startsWith('xdp:')) await mountBpffs().catch(() => false);
  const stopped = waitForSignal();
  const stack = await Stack.open({ device: p.device, address: p.address, gateway: p.gateway, mac: p.mac, vip: p.vip });
  stack.on('error', (err: Error) => io.err(`capybara serve: ${err.message}`));
  if (p.spinUs !== undefined) stack.engine.setSpinUs(p.spinUs);
  let admin: AdminServer | undefined;
  let instance: AppInstance | undefined;
  try {
    if (p.native) {
      listenNative(stack, p);
      // Native flows migrate engine to engine through the lane; the channel (for keys and pings) is the same.
      if (p.peers) await enableMigration(stack, p);
    } else {
      instance = await listenJs(stack, p, io);
    }
    const handlers = stackAdminHandlers(stack, { app: p.app, port: p.port, name: p.name });
    if (instance) {
      const stats = handlers.stats!;
      const inst = instance;
      handlers.stats = (req) => ({ ...(stats(req) as Record<string, unknown>), app: inst.stats() });
    }
    admin = await AdminServer.start({ name: p.name, handlers });
    if (p.json) {
      io.out(JSON.stringify({ event: 'listening', app: p.app, address: stack.address, port: p.port, device: stack.device, name: p.name, admin: admin.path, pid: process.pid, native: p.native === true, tls: p.tls !== undefined }));
    } else {
      io.out(`listening on ${stack.address}:${p.port} (device ${stack.device}${p.tls ? ', TLS' : ''})`);
    }
    await stopped;
    return 0;
  } finally {
    await admin?.close().catch(() => {});
    instance?.close();
    await stack.close({ timeoutMs: 1000 });
  }
}

/** The runtime side an app instance (l7, redis) uses: names, migration to peers, connections to peers. */
function appContext(stack: Stack, p: ServeParams): AppContext {
  const peers = p.peers ?? [];
  const ctx: AppContext = {
    name: p.name, port: p.port, backends: p.appArgs?.backends ?? [p.name, ...peers.map((x) => x.name)],
    mode: p.appArgs?.mode, manifest: p.appArgs?.manifest, store: p.appArgs?.store,
    connect: (peer) => {
      const to = peers.find((x) => x.name === peer);
      if (!to) throw new UsageError(`no peer called "${peer}"`);
      // Over TLS the owner's port speaks TLS too. The hop stays inside the cluster and the backends share
      // one certificate, which need not name their own addresses: it is not verified here.
      return stack.connect({ port: p.port, host: to.address, noDelay: true, tls: p.tls ? { rejectUnauthorized: false } : undefined });
    },
  };
  if (p.peers) ctx.migrate = (sock, peer, userData) => stack.migrate(sock as Connection, peer, { userData });
  return ctx;
}

async function enableMigration(stack: Stack, p: ServeParams): Promise<void> {
  const balancer = await balancerSteering();
  stack.enableMigration({
    name: p.name, clusterKey: loadClusterKey(p.clusterKey ?? defaultKeyPath(), p.clusterKey === undefined),
    peers: p.peers ?? [], steer: balancer?.steer, owner: balancer?.owner, claim: balancer?.claim, unclaim: balancer?.unclaim,
    lane: balancer?.lane, faults: migrationFaultsFromEnv(), jsLane: p.jsLane === true,
  });
}

async function listenJs(stack: Stack, p: ServeParams, io: Io): Promise<AppInstance | undefined> {
  const spec = APPS[p.app];
  const instance = spec.instance?.(appContext(stack, p));
  const resumable = instance ? serveResumable(instance) : spec.resumable ? serveResumable(spec.resumable()) : undefined;
  const handler = resumable ? resumable.onConnection : spec.handler();
  const server = stack.createServer({ allowHalfOpen: true, noDelay: true, tls: p.tls }, handler);
  p.tls?.key.fill(0); // the key lives in the engine's TLS context now
  server.on('tlsClientError', (err: Error) => io.err(`capybara serve: TLS handshake: ${err.message}`));
  if (p.peers) {
    await enableMigration(stack, p);
    // accept_migrated: the app continues the moved connection from the state its source captured
    // (stateless apps simply start on it; bytes the source app had not read come first either way).
    server.on('migrated', (conn: Connection, userData: Uint8Array) => {
      if (resumable) resumable.onMigrated(conn, userData);
      else handler(conn);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(p.port, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err: Error) => io.err(`capybara serve: ${err.message}`));
  return instance;
}
