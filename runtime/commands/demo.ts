// capybara demo: see runtime/demo.ts.
import { runDemo, type DemoSummary } from '../demo.js';
import type { Command } from '../cli.js';
import { UsageError } from '../errors.js';

function text(s: DemoSummary): string {
  return [
    `mode:           ${s.mode === 'xdp' ? 'xdp (netns testbed, kernel curl -> capybara on hostA)' : 'mem (two stacks on an in-memory wire)'}`,
    `fetches:        ${s.fetches} over ${s.connections} connection(s)`,
    `bytes verified: ${s.bytesVerified}`,
    `migrations:     ${s.migrations}`,
    `errors:         ${s.errors}`,
    `time:           ${s.seconds.toFixed(2)} s`,
    s.errors === 0 ? 'OK' : 'FAILED',
  ].join('\n');
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'serve HTTP on capybara and fetch from it with a verifying client; print a summary',
  usage: 'capybara demo [--mem] [--json]',
  help: `With root and network namespaces: brings the testbed up, runs "capybara serve http --on hostA",
fetches GET /bytes/10000000 three times with curl in the client namespace over one keep-alive
connection, checks the sha256 of what arrived against the pattern, stops the server and removes
the testbed again (when the demo made it). Otherwise, or with --mem: two stacks in this process on
the in-memory wire mem:demo, the client stack fetching from the http app.

Options:
  --mem    use the in-memory wire even when the testbed could be made
  --json   print {"migrations","bytesVerified","blackoutUs":{"p50","p99","max"},"errors","mode",...}

Exit status 1 when any byte did not check out.`,
  options: { mem: { type: 'boolean' } },
  async run(positionals, values, io) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const json = values.json === true;
    const s = await runDemo({ mem: values.mem === true, log: json ? undefined : (l) => io.out(l) });
    if (json) {
      const { detail: _detail, ...doc } = s;
      io.out(JSON.stringify(doc));
    } else {
      io.out(text(s));
    }
    return s.errors === 0 ? 0 : 1;
  },
};
