// capybara ctl: asks a running runtime (capybara serve, the demo) over its admin socket.
import { PLAN, isHostName } from '../../dataplane/testbed.js';
import { adminRequest, adminSocketPath } from '../admin.js';
import { loadClusterKey } from '../migration/cluster.js';
import { onePositional, str, table, type Command, type Io, type Values } from '../cli.js';
import { UsageError } from '../errors.js';
import type { EngineStats, FlowInfo } from '../native.js';
import { DEFAULT_NAME } from './serve.js';

function statsText(s: EngineStats): string {
  const rows: (string | number)[][] = [];
  for (const section of ['tcp', 'ip', 'dev', 'arena', 'migration', 'lane'] as const) {
    const obj = (s as unknown as Record<string, Record<string, unknown>>)[section] ?? {};
    for (const [k, v] of Object.entries(obj)) rows.push([`${section}.${k}`, String(v)]);
  }
  return table(['counter', 'value'], rows);
}

type FlowRow = FlowInfo & { owner?: string | null; migrations?: number };

function flowsText(flows: FlowRow[]): string {
  if (flows.length === 0) return 'no flows';
  return table(
    ['id', 'state', 'local', 'remote', 'owner', 'migrations', 'bytesIn', 'bytesOut', 'cwnd', 'srttUs', 'retrans', 'unacked', 'readable'],
    flows.map((f) => [f.id, f.state, `${f.localAddress}:${f.localPort}`, `${f.remoteAddress}:${f.remotePort}`, f.owner ?? '-', f.migrations ?? 0,
      f.bytesIn, f.bytesOut, f.cwnd, f.srttUs, f.retransmits, f.unackedBytes, f.readableBytes]),
  );
}

export const ctlCommand: Command = {
  name: 'ctl',
  summary: "query a running runtime through its admin socket",
  usage: 'capybara ctl [--on hostA | --name NAME] stats|flows|peers|migrate <flowId|all> --to PEER|rotate-key --key-file F [--epoch N] [--json]',
  help: `Requests:
  stats                       engine counters (tcp, ip, dev, arena, migration, lane)
  flows                       every flow with state, addresses, windows, RTT, owner and migration count
  peers                       the runtimes this one migrates to and from
  migrate <flowId|all> --to P move one connection (or every application connection) to peer P;
                              prints per-phase timings in microseconds
  rotate-key --key-file F     switch to a new cluster key (32..64 bytes in F; run it on every runtime):
                              new channels use it, open ones switch in-band and accept the old key from
                              peers that have not rotated yet for --grace-ms (default 300000)

Options:
  --on HOST     the runtime started with "capybara serve --on HOST"
  --name NAME   the runtime called NAME (socket /run/capybara/NAME.sock; default "${DEFAULT_NAME}")
  --to PEER     with migrate: the target runtime
  --key-file F  with rotate-key: the new key; --epoch N: its epoch (default: the current one + 1)
  --json        print the answer as one JSON document`,
  options: { on: { type: 'string' }, name: { type: 'string' }, to: { type: 'string' }, 'key-file': { type: 'string' }, epoch: { type: 'string' }, 'grace-ms': { type: 'string' } },
  async run(positionals, values, io) {
    const what = positionals[0];
    if (what === 'migrate') return migrate(positionals.slice(1), values, io);
    if (what === 'rotate-key') return rotateKey(positionals.slice(1), values, io);
    onePositional(positionals, ['stats', 'flows', 'peers', 'migrate', 'rotate-key'], 'request');
    const on = str(values, 'on');
    const nameOpt = str(values, 'name');
    if (on !== undefined && nameOpt !== undefined) throw new UsageError('give --on or --name, not both');
    if (on !== undefined && !isHostName(on)) throw new UsageError(`--on must be one of ${Object.keys(PLAN.hosts).join(', ')} (got "${on}")`);
    const result = await adminRequest({ path: runtimePath(values) }, { cmd: what! });
    if (values.json) io.out(JSON.stringify(result));
    else if (what === 'peers') io.out(JSON.stringify(result, null, 2));
    else io.out(what === 'stats' ? statsText(result as EngineStats) : flowsText(result as FlowRow[]));
    return 0;
  },
};

function runtimePath(values: Values): string {
  const on = str(values, 'on');
  const nameOpt = str(values, 'name');
  if (on !== undefined && nameOpt !== undefined) throw new UsageError('give --on or --name, not both');
  if (on !== undefined && !isHostName(on)) throw new UsageError(`--on must be one of ${Object.keys(PLAN.hosts).join(', ')} (got "${on}")`);
  return adminSocketPath(on ?? nameOpt ?? DEFAULT_NAME);
}

interface MigrateResult {
  migrated: number;
  failed: number;
  timings: { migrationId: number; blackoutUs: number; freezeUs: number; snapshotUs: number; shipUs: number; steerUs: number; releaseUs: number; totalUs: number }[];
  errors: { code: string; message: string }[];
}

async function migrate(args: string[], values: Values, io: Io): Promise<number> {
  if (args.length !== 1) throw new UsageError('migrate takes one flow id or "all"');
  const flow = args[0] === 'all' ? 'all' : Number(args[0]);
  if (flow !== 'all' && (!Number.isInteger(flow) || flow < 0)) throw new UsageError(`"${args[0]}" is not a flow id or "all"`);
  const to = str(values, 'to');
  if (!to) throw new UsageError('migrate needs --to PEER');
  const r = await adminRequest({ path: runtimePath(values) }, { cmd: 'migrate', flow, to }) as MigrateResult;
  if (values.json) io.out(JSON.stringify(r));
  else {
    io.out(`migrated ${r.migrated}, failed ${r.failed}`);
    if (r.timings.length) {
      io.out(table(['id', 'blackoutUs', 'freezeUs', 'snapshotUs', 'shipUs', 'steerUs', 'releaseUs', 'totalUs'],
        r.timings.map((t) => [t.migrationId, ...[t.blackoutUs, t.freezeUs, t.snapshotUs, t.shipUs, t.steerUs, t.releaseUs, t.totalUs].map((x) => x.toFixed(0))])));
    }
    for (const e of r.errors) io.err(`${e.code}: ${e.message}`);
  }
  return r.failed > 0 ? 1 : 0;
}

async function rotateKey(args: string[], values: Values, io: Io): Promise<number> {
  if (args.length !== 0) throw new UsageError('rotate-key takes no positional argument (give --key-file)');
  const file = str(values, 'key-file');
  if (!file) throw new UsageError('rotate-key needs --key-file FILE (32..64 bytes)');
  const key = loadClusterKey(file, false);
  const num = (name: string): number | undefined => {
    const v = str(values, name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number`);
    return Number(v);
  };
  const req = { cmd: 'rotate-key', key: Buffer.from(key).toString('base64'), epoch: num('epoch'), graceMs: num('grace-ms') };
  key.fill(0);
  const r = await adminRequest({ path: runtimePath(values) }, req) as { keyEpoch: number; channels: number };
  if (values.json) io.out(JSON.stringify(r));
  else io.out(`key epoch ${r.keyEpoch}; ${r.channels} open channel(s) switching`);
  return 0;
}
