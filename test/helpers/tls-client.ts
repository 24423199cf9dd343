// Node's own TLS client for the TLS interop tests, run by the kernel stack in the `client` namespace.
//
//   node tls-client.js echo HOST PORT CA_FILE
//       ping-pong of numbered messages (1..20000 bytes, so some span several records) against an echo
//       server; every byte is checked. Prints {"event":"ready",...}; stdin "status" answers
//       {"event":"status","echoes"}; stdin "stop" ends after the echo in flight with {"event":"result",...}.
//   node tls-client.js bad MODE HOST PORT CA_FILE
//       a TCP relay on 127.0.0.1 in front of HOST:PORT that, once the handshake is done and one echo came
//       back, damages the client's next record: MODE flip (one bit of the ciphertext), version (the
//       record header's version), truncate (half the record, then FIN), handshake (an unprotected
//       handshake message instead). Prints {"event":"result", error, code, upstream: "fin"|"reset"|...}.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import tls from 'node:tls';

const SERVERNAME = 'capybara.test';
const print = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** Message i: a u32 sequence number, then bytes derived from it; its length varies with i. */
function message(i: number): Buffer {
  const len = 4 + ((i * 7919) % 20000);
  const b = Buffer.alloc(len);
  b.writeUInt32LE(i, 0);
  for (let k = 4; k < len; k++) b[k] = (i * 131 + k * 7) & 0xff;
  return b;
}

function echo(host: string, port: number, ca: Buffer): void {
  const sock = tls.connect({ host, port, ca, servername: SERVERNAME });
  let handshakes = 0;
  let echoes = 0;
  let bytes = 0;
  let bad = 0;
  let stopping = false;
  let error: string | null = null;
  let pending: Buffer = Buffer.alloc(0);
  let expect = message(0);
  const result = () => {
    print({ event: 'result', echoes, bytes, bad, error, handshakes, protocol: sock.getProtocol(), cipher: sock.getCipher()?.name ?? null });
    sock.destroy();
    process.exit(0);
  };
  sock.on('secureConnect', () => {
    handshakes++;
    print({ event: 'ready', localPort: sock.localPort, protocol: sock.getProtocol(), cipher: sock.getCipher()?.name ?? null });
    sock.write(expect);
  });
  sock.on('data', (d: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    if (pending.length < expect.length) return;
    if (pending.length > expect.length || !pending.equals(expect)) bad++;
    bytes += expect.length;
    echoes++;
    pending = Buffer.alloc(0);
    if (stopping) return result();
    expect = message(echoes);
    sock.write(expect);
  });
  sock.on('error', (e: Error & { code?: string }) => {
    error = `${e.code ?? ''} ${e.message}`;
    result();
  });
  sock.on('close', () => {
    if (!error) error = 'closed by the server';
    result();
  });
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (l.trim() === 'status') print({ event: 'status', echoes, bytes, bad, error });
    if (l.trim() === 'stop') stopping = true;
  });
}

type Mode = 'flip' | 'version' | 'truncate' | 'handshake';

/** Splits a byte stream into TLS records; damages the first whole record after arm(). */
class RecordRelay {
  armed = false;
  done = false;
  #buf: Buffer = Buffer.alloc(0);
  constructor(readonly mode: Mode, readonly up: net.Socket) {}

  push(d: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
    while (this.#buf.length >= 5) {
      const total = 5 + this.#buf.readUInt16BE(3);
      if (this.#buf.length < total) return;
      const rec = Buffer.from(this.#buf.subarray(0, total));
      this.#buf = this.#buf.subarray(total);
      if (!this.armed || this.done) {
        this.up.write(rec);
        continue;
      }
      this.done = true;
      switch (this.mode) {
        case 'flip':
          rec[rec.length - 20]! ^= 0x04; // inside the ciphertext (before the 16-byte tag)
          this.up.write(rec);
          break;
        case 'version':
          rec.writeUInt16BE(0x0301, 1);
          this.up.write(rec);
          break;
        case 'truncate':
          this.up.end(rec.subarray(0, Math.max(6, rec.length >> 1)));
          return;
        case 'handshake':
          // A ClientHello header in a plaintext handshake record, after the handshake: never valid.
          this.up.write(Buffer.from([22, 3, 3, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]));
          break;
      }
    }
  }
}

async function bad(mode: Mode, host: string, port: number, ca: Buffer): Promise<void> {
  let upstream = 'open';
  let relay: RecordRelay | undefined;
  const server = net.createServer((down) => {
    const up = net.connect(port, host);
    relay = new RecordRelay(mode, up);
    down.on('data', (d: Buffer) => relay!.push(d));
    up.on('data', (d: Buffer) => down.write(d));
    up.on('end', () => {
      if (upstream === 'open') upstream = 'fin';
      down.end();
    });
    up.on('error', (e: Error & { code?: string }) => {
      upstream = e.code === 'ECONNRESET' ? 'reset' : `error ${e.code ?? e.message}`;
      down.destroy();
    });
    down.on('error', () => up.destroy());
    down.on('end', () => up.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as net.AddressInfo;
  const sock = tls.connect({ host: '127.0.0.1', port: addr.port, ca, servername: SERVERNAME });
  let error: string | null = null;
  let code: string | null = null;
  let echoed = '';
  const finished = new Promise<void>((resolve) => {
    sock.on('secureConnect', () => sock.write('hello'));
    sock.on('data', (d: Buffer) => {
      echoed += d.toString();
      if (echoed === 'hello' && relay) {
        relay.armed = true;
        sock.write('world');
      }
    });
    sock.on('error', (e: Error & { code?: string }) => {
      error = e.message;
      code = e.code ?? null;
      resolve();
    });
    sock.on('close', () => resolve());
    setTimeout(resolve, 8000).unref();
  });
  await finished;
  await new Promise((r) => setTimeout(r, 300)); // let the upstream side report FIN or RST
  print({ event: 'result', mode, echoed, error, code, upstream, damaged: relay?.done ?? false });
  sock.destroy();
  server.close();
  process.exit(0);
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'echo') {
  const [host, port, caFile] = rest;
  echo(host!, Number(port), readFileSync(caFile!));
} else if (cmd === 'bad') {
  const [mode, host, port, caFile] = rest;
  void bad(mode as Mode, host!, Number(port), readFileSync(caFile!));
} else {
  process.stderr.write('usage: tls-client.js echo HOST PORT CA | bad MODE HOST PORT CA\n');
  process.exit(2);
}
