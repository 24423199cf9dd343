// The bulk sender, run in the client namespace: connects, writes BYTES zero bytes as fast as the
// connection takes them, half-closes, and waits for the server to close its side (a discard server
// closes only after reading our FIN, so every byte has been delivered to the server's app by then).
//
//   node dist/perf/bulk-client.js HOST PORT BYTES
//
// Prints one JSON line {bytes, ms, connectMs} (ms: connected .. server closed). Exits 1 on any error.
import net from 'node:net';

const CHUNK = 256 * 1024;

function main(argv: string[]): void {
  const [host, portText, bytesText] = argv;
  if (host === undefined || !portText || !/^\d+$/.test(portText) || !bytesText || !/^\d+$/.test(bytesText)) {
    process.stderr.write('usage: bulk-client.js HOST PORT BYTES\n');
    process.exit(2);
  }
  const total = Number(bytesText);
  const chunk = Buffer.alloc(CHUNK);
  const t0 = process.hrtime.bigint();
  let tConnected = t0;
  let sent = 0;
  const sock = net.connect({ host, port: Number(portText), allowHalfOpen: true });
  sock.on('error', (err) => {
    process.stderr.write(`bulk-client: ${err.message}\n`);
    process.exit(1);
  });
  const pump = () => {
    while (sent < total) {
      const n = Math.min(CHUNK, total - sent);
      sent += n;
      if (!sock.write(n === CHUNK ? chunk : chunk.subarray(0, n))) {
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  };
  sock.on('connect', () => {
    tConnected = process.hrtime.bigint();
    pump();
  });
  sock.on('data', () => {}); // a discard server sends nothing; keep the stream flowing anyway
  sock.on('close', (hadError) => {
    if (hadError || sent < total) process.exit(1);
    const t1 = process.hrtime.bigint();
    process.stdout.write(`${JSON.stringify({ bytes: sent, ms: Number(t1 - tConnected) / 1e6, connectMs: Number(tConnected - t0) / 1e6 })}\n`);
    process.exit(0);
  });
}

main(process.argv.slice(2));
