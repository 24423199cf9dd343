// The demo's client, run by the kernel stack in the testbed's `client` namespace:
//   node stream-client.js HOST PORT SECONDS [CA_FILE]
// With CA_FILE the stream runs over TLS (Node's own tls, verifying the server against that CA); the
// report then names the protocol and cipher and counts handshakes (one: migrations are invisible).
// A ping-pong stream of 64-byte numbered messages (one in flight): every echo is checked byte by byte, and
// every pause between two echoes longer than GAP_US is reported with its start time on the monotonic clock,
// which the demo (another process on the same machine) shares, so it can match pauses to migrations.
// Prints one JSON line at the end.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

/** The JSON line this script prints (gaps: [start us on the monotonic clock, length us]). */
export interface StreamReport {
  sent: number;
  echoed: number;
  bytes: number;
  bad: number;
  gaps: [number, number][];
  /** Per window "W T0 T1" written on stdin: the longest interval between two echoes overlapping it (µs). */
  windows?: number[];
  /** Where in each window that longest interval began, µs from the window's start (the C client says). */
  windowsAt?: number[];
  error: string | null;
  /** TLS runs only: negotiated protocol and cipher, and how many handshakes the client made. */
  tls?: { protocol: string | null; cipher: string | null; handshakes: number };
}

const MSG = 64;
/** Pauses shorter than this are not reported (CAPYBARA_STREAM_GAP_US lowers it to see sub-ms blackouts). */
const GAP_US = Number(process.env.CAPYBARA_STREAM_GAP_US ?? 500);

function message(i: number): Buffer {
  const b = Buffer.alloc(MSG);
  b.writeUInt32LE(i, 0);
  for (let k = 4; k < MSG; k++) b[k] = (i * 31 + k) & 0xff;
  return b;
}

const [host, portArg, secondsArg, caFile] = process.argv.slice(2);
const port = Number(portArg);
const seconds = Number(secondsArg ?? 10);
const now = () => Number(process.hrtime.bigint() / 1000n);

let handshakes = 0;
const sock: net.Socket = caFile
  ? tls.connect({ host: host!, port, ca: readFileSync(caFile) })
  : net.connect(port, host!);
sock.setNoDelay(true);
let sent = 0;
let echoed = 0;
let bad = 0;
let pending: Buffer = Buffer.alloc(0);
let last = 0;
let error: string | null = null;
const gaps: [number, number][] = [];
let stopAt = 0;
// Every echo's arrival, for the windows (perf/stream_client.c does the same in C).
let echoTimes = new Float64Array(1 << 16);
const windowLines: [number, number][] = [];
let stdinBuf = '';
// Windows mode (CAPYBARA_STREAM_WINDOWS=1, the benchmark): window lines on stdin, and its end stops the run.
if (process.env.CAPYBARA_STREAM_WINDOWS === '1') {
  process.stdin.setEncoding('utf8').on('data', (d: string) => {
    stdinBuf += d;
    let nl: number;
    while ((nl = stdinBuf.indexOf('\n')) >= 0) {
      const m = /^W (\d+) (\d+)$/.exec(stdinBuf.slice(0, nl));
      if (m) windowLines.push([Number(m[1]), Number(m[2])]);
      stdinBuf = stdinBuf.slice(nl + 1);
    }
  });
  process.stdin.on('end', () => finish());
}

function windowMax(t0: number, t1: number): number {
  let lo = 0;
  let hi = echoed;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (echoTimes[mid]! < t0) lo = mid + 1;
    else hi = mid;
  }
  let worst = 0;
  for (let i = lo > 0 ? lo - 1 : 0; i + 1 < echoed && echoTimes[i]! <= t1; i++) worst = Math.max(worst, echoTimes[i + 1]! - echoTimes[i]!);
  return worst;
}

let finished = false;
function finish(): void {
  if (finished) return;
  finished = true;
  const report: StreamReport = { sent, echoed, bytes: echoed * MSG, bad, gaps, error };
  if (windowLines.length > 0) report.windows = windowLines.map(([a, b]) => windowMax(a, b));
  if (sock instanceof tls.TLSSocket) report.tls = { protocol: sock.getProtocol(), cipher: sock.getCipher()?.name ?? null, handshakes };
  sock.destroy();
  // A long run's report is megabytes: exit only once the pipe took all of it.
  process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(0));
}
// The runner may end the stream early (SIGTERM): report what was seen so far.
process.on('SIGTERM', finish);

sock.on(caFile ? 'secureConnect' : 'connect', () => {
  handshakes++;
  stopAt = now() + seconds * 1e6;
  last = now();
  sock.write(message(sent++));
});
sock.on('data', (d: Buffer) => {
  pending = pending.length ? Buffer.concat([pending, d]) : d;
  while (pending.length >= MSG) {
    const m = pending.subarray(0, MSG);
    pending = pending.subarray(MSG);
    if (!m.equals(message(echoed))) bad++;
    const t = now();
    if (echoed === echoTimes.length) {
      const grown = new Float64Array(echoTimes.length * 2);
      grown.set(echoTimes);
      echoTimes = grown;
    }
    echoTimes[echoed] = t;
    echoed++;
    if (t - last > GAP_US) gaps.push([last, t - last]);
    last = t;
  }
  if (echoed === sent) {
    if (now() >= stopAt) finish();
    else sock.write(message(sent++));
  }
});
sock.on('error', (e) => {
  error = e.message;
  finish();
});
sock.on('close', () => {
  if (!error) error = 'connection closed by the server';
  finish();
});
setTimeout(() => {
  error = 'stream stalled';
  finish();
}, (seconds + 20) * 1000).unref();
