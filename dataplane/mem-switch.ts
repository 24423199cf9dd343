// The in-memory switch (`mem:NAME?ports=N&port=K`, native/dev/mem.c) as the network of an in-process
// cluster: each runtime's Stack takes one port; the switch forwards by learned MACs and, for migrated
// flows, by its steering table, the mem wire's analogue of the XDP balancer's redirect table. `steer` is
// the Migrator's steer hook: it points the client's side of a flow at the port of the runtime that now
// owns it (one table write, under a lock the data path never takes).
import { CapybaraError, errnoName } from '../runtime/errors.js';
import { claimOutcome, type ClaimResult } from '../runtime/migration/claim.js';
import { loadBinding, type Binding } from '../runtime/native.js';

/** The flow as the migrator names it: local = the server side (the VIP), remote = the client. */
export interface SteeredFlow {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

export interface MemSwitchOptions {
  /** Wire name (1..63 characters), unique in the process. */
  name: string;
  /** Number of ports, 3..16 (a 2-port wire is a plain cable and has no steering table). */
  ports: number;
  /** Fault options every port applies to what it sends ("loss=0.01&reorder=0.01&..."); per port in uri(). */
  faults?: string;
  /** Seed of the fault injector (each port adds its number). */
  seed?: number;
}

export class MemSwitchError extends CapybaraError {}

const flowKey = (f: SteeredFlow): string => `${f.remoteAddress}:${f.remotePort}>${f.localAddress}:${f.localPort}`;

export class MemSwitch {
  readonly name: string;
  readonly ports: number;
  readonly #faults: string;
  readonly #seed: number;
  readonly #runtimes = new Map<string, number>();
  readonly #steered = new Map<string, number>(); // what this object wrote to the table (it alone writes it)
  readonly #binding: Binding;

  constructor(opts: MemSwitchOptions, binding: Binding = loadBinding()) {
    if (!/^[A-Za-z0-9._-]{1,63}$/.test(opts.name)) throw new MemSwitchError('ERR_MEM_SWITCH', `switch name "${opts.name}" must be 1..63 of [A-Za-z0-9._-]`);
    if (!Number.isInteger(opts.ports) || opts.ports < 3 || opts.ports > 16) throw new MemSwitchError('ERR_MEM_SWITCH', `a switch has 3..16 ports (got ${opts.ports})`);
    if (!binding.memSteer) throw new MemSwitchError('ERR_MEM_SWITCH', 'this build of the addon has no mem switch steering');
    this.name = opts.name;
    this.ports = opts.ports;
    this.#faults = opts.faults ?? '';
    this.#seed = opts.seed ?? 1;
    this.#binding = binding;
  }

  /** The device URI of port `port` (faults: this port's own, else the switch's). */
  uri(port: number, faults: string = this.#faults): string {
    if (!Number.isInteger(port) || port < 0 || port >= this.ports) throw new MemSwitchError('ERR_MEM_SWITCH', `port ${port} is not in 0..${this.ports - 1}`);
    return `mem:${this.name}?ports=${this.ports}&port=${port}&seed=${this.#seed}${faults ? `&${faults}` : ''}`;
  }

  /** Records which port a runtime (by its migration name) sits on, so steer() can find it. */
  attach(runtime: string, port: number): void {
    this.uri(port);
    this.#runtimes.set(runtime, port);
  }

  portOf(runtime: string): number {
    const p = this.#runtimes.get(runtime);
    if (p === undefined) throw new MemSwitchError('ERR_MEM_SWITCH', `no runtime called ${runtime} is attached to switch ${this.name}`);
    return p;
  }

  /** The Migrator's steer hook: the client's frames of this flow go to `peer`'s port from now on. */
  readonly steer = async (flow: SteeredFlow, peer: string): Promise<void> => {
    this.#write(flow, this.portOf(peer));
  };

  /** The Migrator's owner hook: the runtime the table delivers this flow to, null without an entry. */
  readonly owner = async (flow: SteeredFlow): Promise<string | null> => {
    const port = this.#steered.get(flowKey(flow));
    if (port === undefined) return null;
    for (const [name, p] of this.#runtimes) if (p === port) return name;
    return null;
  };

  /** The Migrator's claim hook (cpb_mem_claim): the first claim of (flow, token) wins. */
  readonly claim = (flow: SteeredFlow, token: number, runtime: string): ClaimResult => {
    const port = this.#runtimes.get(runtime);
    if (port === undefined || !this.#binding.memClaim) return 'none';
    return claimOutcome(this.#binding.memClaim(this.name, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, token, port), port);
  };

  readonly unclaim = (flow: SteeredFlow, token: number): void => {
    this.#binding.memUnclaim?.(this.name, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, token);
  };

  /** The same table for the engines' migration lane (native flows): it writes it from C (cpb_mem_steer). */
  laneSteering(): { kind: 'mem'; where: string; backends: ReadonlyMap<string, number> } {
    return { kind: 'mem', where: this.name, backends: this.#runtimes };
  }

  /** Points a flow at a port before its first packet (e.g. a client choosing the server of a new flow). */
  steerTo(flow: SteeredFlow, port: number): void {
    this.#write(flow, port);
  }

  /** Forgets a flow's entry (the flow ended); returns the entries left. */
  unsteer(flow: SteeredFlow): number {
    return this.#write(flow, -1);
  }

  /** Entries in the steering table (0 once every steered flow was forgotten). */
  entries(): number {
    return this.#write({ localAddress: '0.0.0.0', localPort: 0, remoteAddress: '0.0.0.0', remotePort: 0 }, -1);
  }

  #write(flow: SteeredFlow, port: number): number {
    const rc = this.#binding.memSteer!(this.name, flow.remoteAddress, flow.remotePort, flow.localAddress, flow.localPort, port);
    if (rc < 0) throw new MemSwitchError('ERR_MEM_STEER', `switch ${this.name}: steering ${flow.remoteAddress}:${flow.remotePort} -> ${flow.localAddress}:${flow.localPort} failed (${errnoName(-rc)})`);
    if (port < 0) this.#steered.delete(flowKey(flow));
    else this.#steered.set(flowKey(flow), port);
    return rc;
  }
}
