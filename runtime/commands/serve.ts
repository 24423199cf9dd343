// capybara serve <echo|discard|http>: one Stack, one server running an app, an admin socket; runs until
// SIGINT/SIGTERM and then shuts down cleanly (the engine's destroy detaches XDP). With --on HOST it
// re-executes itself inside that testbed namespace with the host's device and addresses.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PLAN, isHostName, mountBpffs, status as testbedStatus } from '../../dataplane/testbed.js';
import { AdminServer, stackAdminHandlers } from '../admin.js';
import { APPS, isAppName, serveResumable } from '../apps/index.js';
import { intOpt, onePositional, str, type Command, type Io } from '../cli.js';
import { CapybaraError, UsageError, fromAddonError } from '../errors.js';
import { packageRoot } from '../native.js';
import { Stack } from '../stack.js';
import { DEFAULT_BACKLOG } from '../server.js';
import type { Connection } from '../connection.js';
import { balancerSteering, defaultKeyPath, loadClusterKey, parsePeers } from '../migration/cluster.js';
import type { MigrationPeer } from '../migration/migrator.js';

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
  summary: 'run an app (echo, discard, http, sockperf) on a capybara stack until SIGINT/SIGTERM',
  usage: 'capybara serve <echo|discard|http|sockperf> [--on hostA] [--device URI --address CIDR --gateway IP] [--vip IP] [--peers NAME=IP,...] [--cluster-key FILE] [--port N] [--name NAME] [--native] [--spin-us N] [--json]',
  help: `Apps:
  echo      every byte comes back (default port 7)
  discard   bytes are dropped (default port 9)
  http      HTTP/1.1 keep-alive: GET /bytes/N (N deterministic bytes), GET /health (default port 80)
  sockperf  answers sockperf ping-pong clients (default port 11111)

Options:
  --on HOST        run inside testbed host HOST (hostA, hostB) with its device and addresses
  --device URI     xdp:IFACE[@queue] | mem:NAME[?faults] (dpdk: is not in this build yet)
  --address CIDR   the stack's address, e.g. 10.77.1.10/24
  --gateway IP     next hop for off-link peers
  --mac MAC        override the device's MAC address
  --vip IP         a second address shared with the peers behind the L4 balancer
  --peers LIST     runtimes this one migrates connections to/from: NAME=IP[:PORT],... (channel port 7400)
  --cluster-key F  file with the shared cluster key (32..64 bytes; default /run/capybara/cluster.key,
                   created when missing)
  --port N         port to listen on
  --name NAME      runtime name: admin socket /run/capybara/NAME.sock (default: the host with --on,
                   else "${DEFAULT_NAME}")
  --native         run the app in C on the engine thread (echo, sockperf): no JavaScript per request;
                   its connections are not JS Connections, so they do not migrate
  --spin-us N      how long the engine busy-polls after activity before sleeping (default 50)
  --json           print the listening line as JSON

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
    'spin-us': { type: 'string' },
  },
  async run(positionals, values, io) {
    const app = onePositional(positionals, Object.keys(APPS), 'app');
    if (!isAppName(app)) throw new UsageError(`unknown app "${app}"`);
    const port = intOpt(values, 'port', 1, 65535) ?? APPS[app].defaultPort;
    const native = values.native === true;
    if (native && !isNativeApp(app)) throw new UsageError(`--native runs ${NATIVE_APPS.join(', ')} (got "${app}")`);
    const spinUs = intOpt(values, 'spin-us', 0, 1_000_000);
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
      const args = ['serve', app, '--device', h.device, '--address', `${h.ip}/${h.prefixLength}`, '--gateway', h.gateway,
        '--vip', str(values, 'vip') ?? PLAN.vip, '--peers', peers, '--port', String(port), '--name', name ?? on];
      const mac = str(values, 'mac');
      if (mac) args.push('--mac', mac);
      const key = str(values, 'cluster-key');
      if (key) args.push('--cluster-key', key);
      if (native) args.push('--native');
      if (spinUs !== undefined) args.push('--spin-us', String(spinUs));
      if (values.json) args.push('--json');
      return reexecInHost(on, args);
    }
    if (!device) throw new UsageError('--device is required (or --on HOST)');
    if (!address) throw new UsageError('--address is required (or --on HOST)');
    name ??= DEFAULT_NAME;
    const peersOpt = str(values, 'peers');
    return serve({
      app, port, device, address, gateway, mac: str(values, 'mac'), vip: str(values, 'vip'), name, json: values.json === true,
      peers: peersOpt === undefined ? undefined : parsePeers(peersOpt), clusterKey: str(values, 'cluster-key'),
      native, spinUs,
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
  try {
    if (p.native) {
      listenNative(stack, p);
    } else {
      await listenJs(stack, p, io);
    }
    admin = await AdminServer.start({ name: p.name, handlers: stackAdminHandlers(stack, { app: p.app, port: p.port, name: p.name }) });
    if (p.json) {
      io.out(JSON.stringify({ event: 'listening', app: p.app, address: stack.address, port: p.port, device: stack.device, name: p.name, admin: admin.path, pid: process.pid, native: p.native === true }));
    } else {
      io.out(`listening on ${stack.address}:${p.port} (device ${stack.device})`);
    }
    await stopped;
    return 0;
  } finally {
    await admin?.close().catch(() => {});
    await stack.close({ timeoutMs: 1000 });
  }
}

async function listenJs(stack: Stack, p: ServeParams, io: Io): Promise<void> {
  const spec = APPS[p.app];
  const resumable = spec.resumable ? serveResumable(spec.resumable()) : undefined;
  const handler = resumable ? resumable.onConnection : spec.handler();
  const server = stack.createServer({ allowHalfOpen: true }, handler);
  if (p.peers) {
    stack.enableMigration({
      name: p.name, clusterKey: loadClusterKey(p.clusterKey ?? defaultKeyPath(), p.clusterKey === undefined),
      peers: p.peers, steer: await balancerSteering(),
    });
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
}
