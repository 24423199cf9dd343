// The connection-rate client, run in the client namespace over Node `net` (the same for every server):
// CONCURRENCY loops, each opening a connection, closing it at once (end) and waiting for the server's
// close before opening the next, for SECONDS. Prints one JSON line {connections, errors, seconds,
// connectUs: [...], lifetimeUs: [...]}: every connection's SYN-to-established time and its whole life
// (connect to both sides closed). Exits 1 when nothing connected.
//
//   node dist/perf/cps-client.js HOST PORT SECONDS CONCURRENCY
import net from 'node:net';

const MAX_SAMPLES = 2_000_000;

async function main(argv: string[]): Promise<void> {
  const [host, portText, secondsText, concText] = argv;
  if (host === undefined || !/^\d+$/.test(portText ?? '') || !/^[0-9.]+$/.test(secondsText ?? '') || !/^\d+$/.test(concText ?? '')) {
    process.stderr.write('usage: cps-client.js HOST PORT SECONDS CONCURRENCY\n');
    process.exit(2);
  }
  const port = Number(portText);
  const until = process.hrtime.bigint() + BigInt(Math.round(Number(secondsText) * 1e9));
  const connectUs: number[] = [];
  const lifetimeUs: number[] = [];
  let errors = 0;
  let lastError = '';
  const one = () => new Promise<void>((resolve) => {
    const t0 = process.hrtime.bigint();
    const sock = net.connect({ host, port });
    let ok = false;
    sock.on('connect', () => {
      ok = true;
      if (connectUs.length < MAX_SAMPLES) connectUs.push(Number(process.hrtime.bigint() - t0) / 1000);
      sock.end();
    });
    sock.on('data', () => {});
    sock.on('error', (e) => {
      errors++;
      lastError = e.message;
    });
    sock.on('close', () => {
      if (ok && lifetimeUs.length < MAX_SAMPLES) lifetimeUs.push(Number(process.hrtime.bigint() - t0) / 1000);
      resolve();
    });
  });
  const t0 = process.hrtime.bigint();
  const loop = async () => {
    // bounded: stops at the deadline, or after a run of failures (the server is gone)
    while (process.hrtime.bigint() < until && errors < 1000) await one();
  };
  await Promise.all(Array.from({ length: Math.max(1, Number(concText)) }, loop));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  // exit only once the (large) line is flushed: a pipe's write is asynchronous, exit() would cut it
  process.stdout.write(`${JSON.stringify({ connections: connectUs.length, errors, lastError, seconds, connectUs, lifetimeUs })}\n`, () => process.exit(connectUs.length > 0 ? 0 : 1));
}

void main(process.argv.slice(2));
