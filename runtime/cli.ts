// The `capybara` command line: parsing, help and exit codes. Each command lives in runtime/commands/.
// Exit status: 0 ok, 1 runtime failure, 2 wrong arguments (message on stderr).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CapybaraError, UsageError } from './errors.js';

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const stdio: Io = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | undefined>;

export interface Command {
  name: string;
  summary: string;
  usage: string;
  help: string;
  options: Options;
  run(positionals: string[], values: Values, io: Io): Promise<number>;
}

const COMMON: Options = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
};

/** Parses argv for one command; unknown options and bad values become UsageError. */
export function parseCommand(cmd: Command, argv: string[]): { positionals: string[]; values: Values } {
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, ...cmd.options }, allowPositionals: true, strict: true });
    return { positionals: r.positionals, values: r.values as Values };
  } catch (err) {
    const msg = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UsageError(msg);
  }
}

let registry: Command[] | null = null;

async function commands(): Promise<Command[]> {
  if (registry) return registry;
  const [{ testbedCommand }, { serveCommand }, { ctlCommand }, { demoCommand }, { benchCommand }, { soakCommand }] = await Promise.all([
    import('./commands/testbed.js'),
    import('./commands/serve.js'),
    import('./commands/ctl.js'),
    import('./commands/demo.js'),
    import('./commands/bench.js'),
    import('./commands/soak.js'),
  ]);
  registry = [demoCommand, testbedCommand, serveCommand, ctlCommand, benchCommand, soakCommand];
  registry.push((await import('./commands/dpdk.js')).dpdkCommand);
  return registry;
}

export async function topHelp(): Promise<string> {
  const cmds = await commands();
  const width = Math.max(...cmds.map((c) => c.name.length));
  return [
    'capybara — kernel-bypass TCP/IP stack for Node.js',
    '',
    'Usage: capybara <command> [options]',
    '',
    'Commands:',
    ...cmds.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --help; --json prints one JSON document.',
    'Exit status: 0 ok, 1 failure, 2 wrong arguments.',
    '',
  ].join('\n');
}

export function commandHelp(cmd: Command): string {
  return `Usage: ${cmd.usage}\n\n${cmd.summary}\n\n${cmd.help.trimEnd()}\n`;
}

/** Runs the CLI; returns the exit status (bin/capybara.js passes it to process.exit). */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const target = name === 'help' ? rest[0] : undefined;
    if (target) return main([target, '--help'], io);
    if (name === undefined) {
      io.err(await topHelp());
      return 2;
    }
    io.out(await topHelp());
    return 0;
  }
  const cmd = (await commands()).find((c) => c.name === name);
  if (!cmd) {
    io.err(`capybara: unknown command "${name}"\nRun "capybara --help" for the list of commands.`);
    return 2;
  }
  try {
    const { positionals, values } = parseCommand(cmd, rest);
    if (values.help) {
      io.out(commandHelp(cmd));
      return 0;
    }
    return await cmd.run(positionals, values, io);
  } catch (err) {
    return reportError(err, cmd, io, rest.includes('--json'));
  }
}

function reportError(err: unknown, cmd: Command, io: Io, json: boolean): number {
  if (err instanceof UsageError) {
    io.err(`capybara ${cmd.name}: ${err.message}\nUsage: ${cmd.usage}\nRun "capybara ${cmd.name} --help" for details.`);
    return 2;
  }
  const code = err instanceof CapybaraError ? err.code : ((err as { code?: unknown })?.code as string | undefined) ?? 'ERR_CAPYBARA';
  const message = (err as Error)?.message ?? String(err);
  if (json) io.out(JSON.stringify({ error: { code, message } }));
  io.err(`capybara ${cmd.name}: ${message}${code ? ` (${code})` : ''}`);
  return 1;
}

// ---- small helpers shared by the commands ------------------------------------------------------

export function str(values: Values, key: string): string | undefined {
  const v = values[key];
  return typeof v === 'string' ? v : undefined;
}

export function intOpt(values: Values, key: string, min: number, max: number): number | undefined {
  const v = str(values, key);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${key} must be an integer in ${min}..${max} (got "${v}")`);
  return Number(v);
}

export function onePositional(positionals: string[], allowed: readonly string[], what: string): string {
  if (positionals.length === 0) throw new UsageError(`missing ${what} (one of: ${allowed.join(', ')})`);
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  const p = positionals[0]!;
  if (!allowed.includes(p)) throw new UsageError(`unknown ${what} "${p}" (one of: ${allowed.join(', ')})`);
  return p;
}

/** Formats rows as an aligned text table. */
export function table(header: string[], rows: (string | number)[][]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
