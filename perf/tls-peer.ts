// The TLS benchmark's processes, run inside testbed namespaces (perf/tls.ts):
//   node tls-peer.js server HOST PORT CERT KEY        Node `tls` echo server on the kernel stack (the baseline)
//   node tls-peer.js hs HOST PORT CA SECONDS CONC     new TLS connections for SECONDS, CONC at a time: handshake
//                                                     times (TCP connect to secureConnect) and the rate
//   node tls-peer.js rr HOST PORT CA COUNT SIZE       one connection, COUNT request/response round trips of SIZE bytes
//   node tls-peer.js bulk HOST PORT CA BYTES          one connection, BYTES sent and echoed back: MB/s
// Clients print one JSON line; times are microseconds.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

const SERVERNAME = 'capybara.test';
const now = () => Number(process.hrtime.bigint()) / 1000;
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

function server(host: string, port: number, cert: Buffer, key: Buffer): void {
  const s = tls.createServer({ cert, key }, (sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => sock.destroy());
    sock.pipe(sock);
  });
  s.listen(port, host, () => process.stdout.write(`listening on ${host}:${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

async function handshakes(host: string, port: number, ca: Buffer, seconds: number, conc: number): Promise<void> {
  const times: number[] = [];
  let errors = 0;
  let lastError = '';
  const t0 = now();
  const end = t0 + seconds * 1e6;
  const loop = async () => {
    while (now() < end) {
      const start = now();
      await new Promise<void>((resolve) => {
        const sock = tls.connect({ host, port, ca, servername: SERVERNAME, session: undefined });
        sock.once('secureConnect', () => {
          times.push(now() - start);
          sock.end();
        });
        sock.once('error', (e) => {
          errors++;
          lastError = e.message;
          resolve();
        });
        sock.once('close', () => resolve());
      });
    }
  };
  await Promise.all(Array.from({ length: conc }, loop));
  out({ handshakes: times.length, seconds: (now() - t0) / 1e6, errors, lastError, handshakeUs: times });
}

function connect(host: string, port: number, ca: Buffer): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, ca, servername: SERVERNAME });
    sock.setNoDelay(true);
    sock.once('secureConnect', () => resolve(sock));
    sock.once('error', reject);
  });
}

async function roundTrips(host: string, port: number, ca: Buffer, count: number, size: number): Promise<void> {
  const sock = await connect(host, port, ca);
  const msg = Buffer.alloc(size, 0x61);
  const rtt: number[] = [];
  let got = 0;
  let start = 0;
  await new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got < size) return;
      got -= size;
      rtt.push(now() - start);
      if (rtt.length >= count) return resolve();
      start = now();
      sock.write(msg);
    });
    sock.on('error', reject);
    start = now();
    sock.write(msg);
  });
  out({ count: rtt.length, size, protocol: sock.getProtocol(), cipher: sock.getCipher().name, rttUs: rtt });
  sock.destroy();
}

async function bulk(host: string, port: number, ca: Buffer, bytes: number): Promise<void> {
  const sock = await connect(host, port, ca);
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  let sent = 0;
  let got = 0;
  const t0 = now();
  await new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= bytes) resolve();
    });
    sock.on('error', reject);
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void sock.once('drain', pump);
      }
    };
    pump();
  });
  const secs = (now() - t0) / 1e6;
  out({ bytes, seconds: secs, mbPerSecond: bytes / secs / 1e6, protocol: sock.getProtocol(), cipher: sock.getCipher().name });
  sock.destroy();
}

const [mode, host, portArg, a, b, c] = process.argv.slice(2);
const port = Number(portArg);
if (mode === 'server') server(host!, port, readFileSync(a!), readFileSync(b!));
else if (mode === 'hs') void handshakes(host!, port, readFileSync(a!), Number(b), Number(c));
else if (mode === 'rr') void roundTrips(host!, port, readFileSync(a!), Number(b), Number(c));
else if (mode === 'bulk') void bulk(host!, port, readFileSync(a!), Number(b));
else {
  process.stderr.write('usage: tls-peer.js server|hs|rr|bulk ...\n');
  process.exit(2);
}
