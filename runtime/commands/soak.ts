// capybara soak: see runtime/soak.ts.
import { intOpt, type Command } from '../cli.js';
import { UsageError } from '../errors.js';
import { runSoak, soakOk, type SoakResult } from '../soak.js';

function text(r: SoakResult): string {
  const l = r.leaks;
  return [
    `seed:        ${r.seed} (faults ${r.faults})`,
    `time:        ${r.seconds.toFixed(1)} s`,
    `flows:       ${r.flows}`,
    `bytes:       ${r.bytes} echoed back and checked`,
    `migrations:  ${r.migrations} (refused cleanly ${r.migrationsRefused}, not movable at the time ${r.migrationsSkipped})`,
    `faults:      loss ${r.injected.loss}, dup ${r.injected.dup}, reorder ${r.injected.reorder}, corrupt ${r.injected.corrupt}, delayed ${r.injected.delay}`,
    `leaks:       flows ${l.appFlows}, connections ${l.connections}, steering ${l.steering}, slots ${l.slots}, chunks ${l.chunks}, held ${l.held}`,
    `errors:      ${r.errors.length}${r.errors.length ? `\n  ${r.errors.join('\n  ')}` : ''}`,
    soakOk(r) ? 'OK' : 'FAILED',
  ].join('\n');
}

export const soakCommand: Command = {
  name: 'soak',
  summary: 'random faults, flows and migrations between three runtimes on the mem switch; every byte checked',
  usage: 'capybara soak [--minutes N | --seconds N] [--seed N] [--flows N] [--migrators N] [--js-lane] [--json]',
  help: `Runs in this process, no root needed: one client runtime and three server runtimes (echo) on an
in-memory switch (mem:NAME?ports=4) with seeded random loss, duplication, reordering, corruption and
delay. Many flows write random amounts in random pieces and read with random pauses; their server side is
migrated at random between the three runtimes. Every byte echoed back is checked. At the end nothing may be
left: no flow in any engine, no open connection, no steering entry, arena slots and chunks back.

Options:
  --minutes N      how long new flows are started (default: 1 minute)
  --seconds N      the same in seconds
  --seed N         seed of every random choice and of the fault injector (default 1)
  --flows N        flows open at once (default 16)
  --migrators N    migrations in flight at once (default 2)
  --js-lane        move the connections through the engines' lane with a record of their layers above
                   TCP (experimental, as serve --js-lane) instead of over the migration channel
  --json           print the result as one JSON document

Exit status 1 when a byte did not check out, a flow failed, or something leaked.`,
  options: {
    minutes: { type: 'string' }, seconds: { type: 'string' }, seed: { type: 'string' },
    flows: { type: 'string' }, migrators: { type: 'string' }, 'js-lane': { type: 'boolean' },
  },
  async run(positionals, values, io) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const minutes = intOpt(values, 'minutes', 1, 24 * 60);
    const secs = intOpt(values, 'seconds', 1, 24 * 3600);
    if (minutes !== undefined && secs !== undefined) throw new UsageError('give --minutes or --seconds, not both');
    const json = values.json === true;
    const r = await runSoak({
      seconds: secs ?? (minutes ?? 1) * 60,
      seed: intOpt(values, 'seed', 0, 2 ** 32 - 1) ?? 1,
      flows: intOpt(values, 'flows', 1, 256),
      migrators: intOpt(values, 'migrators', 0, 8),
      jsLane: values['js-lane'] === true,
      log: json ? undefined : (l) => io.err(`soak: ${l}`),
    });
    io.out(json ? JSON.stringify(r) : text(r));
    return soakOk(r) ? 0 : 1;
  },
};
