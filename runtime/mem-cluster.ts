// A cluster of runtimes in one process on the in-memory switch: one client Stack and N server Stacks,
// each on its own switch port, the servers sharing a VIP and migrating connections among themselves
// over their sealed channels, the switch's steering table re-pointed by the migrator's steer hook.
// The client reaches the VIP through the first server as its gateway (the switch's default path, like
// the balancer's hash for new flows); a migrated flow then follows the steering table. Used by the
// migration tests on the mem wire and by the soak (runtime/soak.ts).
import { randomBytes } from 'node:crypto';
import { MemSwitch } from '../dataplane/mem-switch.js';
import type { Connection } from './connection.js';
import type { Migrator, MigratorOptions } from './migration/migrator.js';
import { serveResumable, type ResumableApp } from './apps/resumable.js';
import type { Server } from './server.js';
import type { Tuning } from './options.js';
import { Stack } from './stack.js';
import type { TlsServerOptions } from './tls.js';

export interface MemClusterOptions {
  /** Switch name, unique in the process. */
  name: string;
  /** Server runtime names (2..15); each gets a port after the client's. */
  servers: string[];
  /** Fault options every port applies to what it sends (see native/dev/dev.h). */
  faults?: string;
  seed?: number;
  /** Third octet-free /24 base, e.g. 97 gives 10.97.0.0/24 (VIP 10.97.9.1). */
  net?: number;
  /** The app the servers run; its connections move with their state. */
  app: ResumableApp;
  port: number;
  /** How long a migration may wait for the target's answer (Migrator timeoutMs). */
  migrationTimeoutMs?: number;
  /** Migrator fault injection per server name (MigratorOptions.faults), for failure-handling tests. */
  migrationFaults?: Record<string, MigratorOptions['faults']>;
  /** Leave out the switch's migration claims (a test showing what happens without the arbiter). */
  noClaims?: boolean;
  /** Move connections served in JS through the engines' lane (MigratorOptions.jsLane; default: the channel). */
  jsLane?: boolean;
  /** Engine tuning for every stack (e.g. a short timeWaitMs so closed flows go quickly). */
  tuning?: Tuning;
  /** Serve over TLS (runtime/tls.ts): the TLS sessions migrate with their connections. */
  tls?: TlsServerOptions;
  /** Called when a server-side connection closed for good on a runtime (not when it moved away). */
  onServerClose?: (srv: MemServer, conn: Connection) => void;
}

export interface MemServer {
  name: string;
  port: number; // switch port
  address: string;
  stack: Stack;
  server: Server;
  migrator: Migrator;
  /** Open application connections on this runtime. */
  conns: Set<Connection>;
}

export class MemCluster {
  readonly switch: MemSwitch;
  readonly vip: string;
  readonly port: number;
  readonly clientAddress: string;
  readonly client: Stack;
  readonly servers: Map<string, MemServer>;

  private constructor(sw: MemSwitch, vip: string, port: number, client: Stack, servers: Map<string, MemServer>) {
    this.switch = sw;
    this.vip = vip;
    this.port = port;
    this.client = client;
    this.clientAddress = client.address;
    this.servers = servers;
  }

  static async open(opts: MemClusterOptions): Promise<MemCluster> {
    const net = opts.net ?? 97;
    const sw = new MemSwitch({ name: opts.name, ports: opts.servers.length + 1, faults: opts.faults, seed: opts.seed });
    const vip = `10.${net}.9.1`;
    const key = randomBytes(32);
    const addr = (i: number) => `10.${net}.0.${i + 1}`;
    const stacks: Stack[] = [];
    try {
      const servers = new Map<string, MemServer>();
      for (const [i, name] of opts.servers.entries()) {
        const port = i + 1;
        const stack = await Stack.open({ ...opts.tuning, device: sw.uri(port), address: `${addr(i)}/24`, vip });
        stacks.push(stack);
        sw.attach(name, port);
        const conns = new Set<Connection>();
        let self: MemServer | undefined;
        const track = (c: Connection) => {
          conns.add(c);
          let moved = false;
          c.once('migrate', () => (moved = true));
          c.once('close', () => {
            conns.delete(c);
            if (!moved && self) opts.onServerClose?.(self, c);
          });
        };
        const app = serveResumable(opts.app);
        const server = stack.createServer({ allowHalfOpen: true, tls: opts.tls }, (c) => {
          track(c);
          app.onConnection(c);
        });
        server.on('migrated', (c: Connection, userData: Uint8Array) => {
          track(c);
          app.onMigrated(c, userData);
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(opts.port, () => resolve());
        });
        const peers = opts.servers.map((n, j) => ({ name: n, address: addr(j) })).filter((p) => p.name !== name);
        const migrator = stack.enableMigration({
          name, clusterKey: key, peers, steer: sw.steer, owner: sw.owner, claim: opts.noClaims ? undefined : sw.claim, unclaim: sw.unclaim,
          lane: sw.laneSteering(), timeoutMs: opts.migrationTimeoutMs, faults: opts.migrationFaults?.[name],
          jsLane: opts.jsLane ?? false,
        });
        self = { name, port, address: addr(i), stack, server, migrator, conns };
        servers.set(name, self);
      }
      const client = await Stack.open({ ...opts.tuning, device: sw.uri(0), address: `10.${net}.0.100/24`, gateway: addr(0) });
      stacks.push(client);
      return new MemCluster(sw, vip, opts.port, client, servers);
    } catch (err) {
      for (const s of stacks.reverse()) await s.close({ graceful: false });
      throw err;
    }
  }

  server(name: string): MemServer {
    const s = this.servers.get(name);
    if (!s) throw new Error(`no server ${name} in the cluster`);
    return s;
  }

  /** The server runtime holding the (unfrozen, not migrating) server side of the client's local port. */
  /**
   * The runtime serving the connection from clientPort. Null while it moves: a connection that went through
   * the engines' lane is the target's when migrate() resolves, and its JS builds it a moment later
   * (waitOwner waits for that).
   */
  ownerOf(clientPort: number): { srv: MemServer; conn: Connection } | null {
    for (const srv of this.servers.values()) {
      for (const c of srv.conns) if (c.remotePort === clientPort && !c.destroyed && !c.migrating) return { srv, conn: c };
    }
    return null;
  }

  /** ownerOf once some runtime serves the connection (other than `not`, when given); null after timeoutMs. */
  async waitOwner(clientPort: number, not?: string, timeoutMs = 2000): Promise<{ srv: MemServer; conn: Connection } | null> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const own = this.ownerOf(clientPort);
      if ((own && own.srv.name !== not) || Date.now() > until) return own && own.srv.name !== not ? own : null;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  async close(): Promise<void> {
    await this.client.close({ graceful: false });
    for (const s of this.servers.values()) await s.stack.close({ graceful: false });
  }
}
