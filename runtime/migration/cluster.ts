// Joining a runtime to its peers from the command line: the cluster key (a file shared by the runtimes of
// one machine or handed out by the operator), the peer list, and steering through the L4 balancer when one
// is attached. Kept out of migrator.ts, which knows nothing of files, the testbed or the balancer.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, openSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { LoadBalancer } from '../../dataplane/lb.js';
import { adminDir } from '../admin.js';
import { loadBinding } from '../native.js';
import { ConfigError } from '../errors.js';
import type { FlowKey } from './messages.js';
import { claimOutcome, type ClaimResult } from './claim.js';
import type { MigrationPeer, MigratorOptions } from './migrator.js';

export const CLUSTER_KEY_BYTES = 32;

export function defaultKeyPath(): string {
  return join(adminDir(), 'cluster.key');
}

/** Reads the cluster key; with create, makes a random one (mode 0600) when the file does not exist. */
export function loadClusterKey(path = defaultKeyPath(), create = false): Uint8Array {
  try {
    const k = readFileSync(path);
    if (k.length < CLUSTER_KEY_BYTES || k.length > 64) throw new ConfigError(`cluster key ${path} must hold 32..64 bytes (has ${k.length})`);
    return new Uint8Array(k);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`cannot read the cluster key ${path}: ${(err as Error).message}`);
    }
  }
  mkdirSync(dirname(path), { recursive: true });
  const key = randomBytes(CLUSTER_KEY_BYTES);
  try {
    const fd = openSync(path, 'wx', 0o600); // exclusive: two runtimes starting at once agree on one key
    writeSync(fd, key);
    closeSync(fd);
    chmodSync(path, 0o600);
    return new Uint8Array(key);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadClusterKey(path, false);
    throw new ConfigError(`cannot create the cluster key ${path}: ${(err as Error).message}`);
  }
}

/** Parses "hostB=10.77.2.10[:7400],hostC=…". */
export function parsePeers(spec: string): MigrationPeer[] {
  return spec.split(',').filter(Boolean).map((item) => {
    const m = /^([A-Za-z0-9._:@-]{1,64})=(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(item.trim());
    if (!m) throw new ConfigError(`peer "${item}" is not NAME=IPv4[:PORT]`);
    const port = m[3] === undefined ? undefined : Number(m[3]);
    if (port !== undefined && (port < 1 || port > 65535)) throw new ConfigError(`peer "${item}": port out of range`);
    return port === undefined ? { name: m[1]!, address: m[2]! } : { name: m[1]!, address: m[2]!, port };
  });
}

/**
 * Fault injection for failure-handling tests of real runtimes: CAPYBARA_MIGRATION_FAULTS=dropOffers,dropAnswers
 * (MigratorOptions.faults). Unknown names are a ConfigError, so a typo cannot silently test nothing.
 */
export function migrationFaultsFromEnv(spec = process.env.CAPYBARA_MIGRATION_FAULTS): MigratorOptions['faults'] {
  if (!spec) return undefined;
  const faults: NonNullable<MigratorOptions['faults']> = {};
  for (const name of spec.split(',').map((x) => x.trim()).filter(Boolean)) {
    if (name === 'dropOffers' || name === 'dropAnswers') faults[name] = true;
    else throw new ConfigError(`CAPYBARA_MIGRATION_FAULTS: unknown fault "${name}" (dropOffers, dropAnswers)`);
  }
  return faults;
}

/** The balancer side of a migrator: `steer` (MigratorOptions.steer) and `owner` (MigratorOptions.owner). */
export interface BalancerHooks {
  steer: NonNullable<MigratorOptions['steer']>;
  owner: NonNullable<MigratorOptions['owner']>;
  claim?: MigratorOptions['claim'];
  unclaim?: MigratorOptions['unclaim'];
  /** The same table for the engines' migration lane (native flows), when the addon can write it. */
  lane?: NonNullable<MigratorOptions['lane']>;
}

/**
 * Steering through the testbed's XDP balancer when it is attached (backends are named after the hosts,
 * as the runtimes are); undefined when there is none, and a migration then relies on the network
 * delivering the VIP to the new owner by other means. `owner` reads the redirect table back (lbctl: a
 * process, but it is asked only when a migration's answer never came).
 */
export async function balancerSteering(): Promise<BalancerHooks | undefined> {
  let lb: LoadBalancer;
  try {
    lb = await LoadBalancer.open();
  } catch {
    return undefined;
  }
  const owner = async (flow: FlowKey): Promise<string | null> => {
    const e = await lb.lookup({ src: flow.remoteAddress, sport: flow.remotePort, dst: flow.localAddress, dport: flow.localPort });
    return e?.name ?? null;
  };
  // In-process map update (microseconds) when the addon has it; lbctl (a process per call) otherwise.
  const binding = loadBinding();
  const fd = binding.lbOpen ? binding.lbOpen(join(lb.pinDir, 'lb_redirect')) : -1;
  if (fd >= 0 && binding.lbRedirect) {
    const index = new Map(lb.backends().map((b) => [b.name, b.index]));
    const lane = { kind: 'lb' as const, where: join(lb.pinDir, 'lb_redirect'), backends: index };
    const steer = async (flow: FlowKey, peer: string): Promise<void> => {
      const b = index.get(peer);
      if (b === undefined) throw new ConfigError(`the balancer has no backend called ${peer}`);
      const rc = binding.lbRedirect!(fd, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, b);
      if (rc < 0) throw new ConfigError(`redirect table update failed (errno ${-rc})`);
    };
    const claim = binding.lbClaim ? (flow: FlowKey, token: number, runtime: string): ClaimResult => {
      const b = index.get(runtime);
      if (b === undefined) return 'none';
      return claimOutcome(binding.lbClaim!(fd, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, token, b), b);
    } : undefined;
    const unclaim = (flow: FlowKey, token: number): void => {
      binding.lbUnclaim?.(fd, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, token);
    };
    return { steer, owner, lane, claim, unclaim };
  }
  const steer = (flow: FlowKey, peer: string) => lb.redirect({ src: flow.remoteAddress, sport: flow.remotePort, dst: flow.localAddress, dport: flow.localPort }, peer);
  return { steer, owner };
}
