// capybara ctl: asks a running runtime (capybara serve, the demo) over its admin socket.
import { PLAN, isHostName } from '../../dataplane/testbed.js';
import { adminRequest, adminSocketPath } from '../admin.js';
import { onePositional, str, table, type Command } from '../cli.js';
import { UsageError } from '../errors.js';
import type { EngineStats, FlowInfo } from '../native.js';
import { DEFAULT_NAME } from './serve.js';

function statsText(s: EngineStats): string {
  const rows: (string | number)[][] = [];
  for (const section of ['tcp', 'ip', 'dev', 'arena'] as const) {
    const obj = (s as unknown as Record<string, Record<string, unknown>>)[section] ?? {};
    for (const [k, v] of Object.entries(obj)) rows.push([`${section}.${k}`, String(v)]);
  }
  return table(['counter', 'value'], rows);
}

function flowsText(flows: FlowInfo[]): string {
  if (flows.length === 0) return 'no flows';
  return table(
    ['id', 'state', 'local', 'remote', 'bytesIn', 'bytesOut', 'cwnd', 'srttUs', 'retrans', 'unacked', 'readable'],
    flows.map((f) => [f.id, f.state, `${f.localAddress}:${f.localPort}`, `${f.remoteAddress}:${f.remotePort}`, f.bytesIn, f.bytesOut,
      f.cwnd, f.srttUs, f.retransmits, f.unackedBytes, f.readableBytes]),
  );
}

export const ctlCommand: Command = {
  name: 'ctl',
  summary: "query a running runtime through its admin socket",
  usage: 'capybara ctl [--on hostA | --name NAME] stats|flows [--json]',
  help: `Requests:
  stats   engine counters (tcp, ip, dev, arena)
  flows   every flow with state, addresses, windows, RTT and counters

Options:
  --on HOST     the runtime started with "capybara serve --on HOST"
  --name NAME   the runtime called NAME (socket /run/capybara/NAME.sock; default "${DEFAULT_NAME}")
  --json        print the answer as one JSON document`,
  options: { on: { type: 'string' }, name: { type: 'string' } },
  async run(positionals, values, io) {
    const what = onePositional(positionals, ['stats', 'flows'], 'request');
    const on = str(values, 'on');
    const nameOpt = str(values, 'name');
    if (on !== undefined && nameOpt !== undefined) throw new UsageError('give --on or --name, not both');
    if (on !== undefined && !isHostName(on)) throw new UsageError(`--on must be one of ${Object.keys(PLAN.hosts).join(', ')} (got "${on}")`);
    const name = on ?? nameOpt ?? DEFAULT_NAME;
    const path = adminSocketPath(name);
    const result = await adminRequest({ path }, { cmd: what });
    if (values.json) io.out(JSON.stringify(result));
    else io.out(what === 'stats' ? statsText(result as EngineStats) : flowsText(result as FlowInfo[]));
    return 0;
  },
};
