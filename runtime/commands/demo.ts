// capybara demo: see runtime/demo.ts.
import { runDemo, type DemoSummary } from '../demo.js';
import { intOpt, type Command } from '../cli.js';
import { UsageError } from '../errors.js';

function us(v: number | null): string {
  return v === null ? '-' : `${Math.round(v)} us`;
}

function text(s: DemoSummary): string {
  const lines = [
    `mode:           ${s.mode === 'xdp' ? 'xdp (netns testbed: kernel client -> XDP balancer VIP -> capybara on hostA/hostB)' : 'mem (two stacks on an in-memory wire, no migration)'}`,
  ];
  if (s.mode === 'mem') lines.push(`fetches:        ${s.fetches} over ${s.connections} connection(s)`);
  lines.push(
    `bytes verified: ${s.bytesVerified}`,
    `migrations:     ${s.migrations}`,
    `blackout:       p50 ${us(s.blackoutUs.p50)}, p99 ${us(s.blackoutUs.p99)}, max ${us(s.blackoutUs.max)} (longest pause the client saw around each migration)`,
    `errors:         ${s.errors}`,
    `time:           ${s.seconds.toFixed(2)} s`,
    s.errors === 0 ? 'OK' : 'FAILED',
  );
  return lines.join('\n');
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'live migration: a client stream through the VIP while its connection moves between hosts',
  usage: 'capybara demo [--app echo|l7|redis] [--mem] [--tls] [--native] [--migrations N] [--json]',
  help: `With root and network namespaces: brings the testbed up with the XDP load balancer, runs
"capybara serve echo" on hostA and hostB (VIP 10.77.9.1), and starts a kernel client in the client
namespace that streams numbered messages through the VIP and checks every echoed byte. While it
streams, the connection is migrated back and forth between the hosts (ctl migrate); the summary gives
the bytes verified, the migrations and the blackout the client saw. The testbed is removed again when
the demo made it. Without namespaces, or with --mem: two stacks in this process on the in-memory wire
mem:demo, the client stack fetching from the http app (the in-memory wire has two ends, so no migration).

Options:
  --mem            use the in-memory wire even when the testbed could be made
  --migrations N   how many migrations (default 20)
  --tls            the same over TLS: the servers terminate TLS (a throwaway CA and certificate made with
                   the openssl CLI), the client verifies them, and the TLS session migrates with the
                   connection (one handshake for the whole stream)
  --native         the echo runs in C on the engine thread (serve --native) and its connection migrates
                   engine to engine through the migration lane, with no JavaScript on the way
  --app APP        echo (default, the story above); l7: L7 direct server return, curl fetches objects
                   spread over both hosts on one keep-alive connection that migrates to each object's
                   owner; redis: redis-benchmark through the Redis front end (redis-server in a store
                   namespace) while every connection migrates every ~10 ms, INCRs counted exactly once
  --json           print {"migrations","bytesVerified","blackoutUs":{"p50","p99","max"},"errors","mode",...}

Exit status 1 when any byte did not check out or a migration failed.`,
  options: { mem: { type: 'boolean' }, migrations: { type: 'string' }, tls: { type: 'boolean' }, native: { type: 'boolean' }, app: { type: 'string' } },
  async run(positionals, values, io) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const json = values.json === true;
    const migrations = intOpt(values, 'migrations', 1, 100_000);
    const app = values.app ?? 'echo';
    if (app !== 'echo' && app !== 'l7' && app !== 'redis') throw new UsageError(`--app must be echo, l7 or redis (got "${String(app)}")`);
    if (app !== 'echo' && values.mem === true) throw new UsageError(`--app ${app} needs the netns testbed (no --mem)`);
    if (values.native === true && (app !== 'echo' || values.tls === true || values.mem === true)) {
      throw new UsageError('--native runs the echo story on the testbed, without --tls (native apps do not speak TLS) or --mem');
    }
    const s = await runDemo({ mem: values.mem === true, tls: values.tls === true, native: values.native === true, migrations, app, log: json ? undefined : (l) => io.out(l) });
    if (json) {
      const { detail: _detail, ...doc } = s;
      io.out(JSON.stringify(doc));
    } else {
      io.out(text(s));
    }
    return s.errors === 0 ? 0 : 1;
  },
};
