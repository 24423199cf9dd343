// The bulk client, run in the client namespace, over Node `net` (the same client for every server):
//   up    FLOWS connections each write BYTES/FLOWS zero bytes as fast as they are taken, half-close, and
//         wait for the server to close (a discard server closes after reading our FIN, so every byte has
//         reached the server's app by then)
//   down  FLOWS connections each GET /bytes/(BYTES/FLOWS) over HTTP/1.1 and read the body to its end
//
//   node dist/perf/bulk-client.js up|down HOST PORT BYTES [FLOWS]
//
// Prints one JSON line {bytes, ms, flows, connectMs} (ms: first connect started .. last flow done, so the
// rate is the aggregate of all flows). Exits 1 on any error.
import net from 'node:net';

const CHUNK = 256 * 1024;

function fail(msg: string): never {
  process.stderr.write(`bulk-client: ${msg}\n`);
  process.exit(1);
}

function upload(host: string, port: number, total: number): Promise<number> {
  return new Promise((resolve) => {
    const chunk = Buffer.alloc(CHUNK);
    let sent = 0;
    const sock = net.connect({ host, port, allowHalfOpen: true });
    sock.on('error', (err) => fail(err.message));
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
    sock.on('connect', pump);
    sock.on('data', () => {}); // a discard server sends nothing; keep the stream flowing anyway
    sock.on('close', (hadError) => {
      if (hadError || sent < total) fail(`upload flow closed after ${sent} of ${total} bytes`);
      resolve(sent);
    });
  });
}

function download(host: string, port: number, total: number): Promise<number> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    sock.on('error', (err) => fail(err.message));
    let head = Buffer.alloc(0);
    let body = -1; // bytes of body received; -1 while the header is incomplete
    let length = -1;
    sock.on('connect', () => sock.write(`GET /bytes/${total} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
    sock.on('data', (d: Buffer) => {
      if (body < 0) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > 16384) fail('no end of HTTP header');
          return;
        }
        const text = head.subarray(0, end).toString('latin1');
        if (!/^HTTP\/1\.[01] 200/.test(text)) fail(`HTTP status: ${text.split('\r\n')[0]}`);
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(text);
        length = m ? Number(m[1]) : -1;
        body = head.length - end - 4;
        head = Buffer.alloc(0);
      } else {
        body += d.length;
      }
      if (length >= 0 && body >= length) sock.destroy();
    });
    sock.on('close', () => {
      if (body !== total) fail(`download flow got ${body} of ${total} body bytes`);
      resolve(body);
    });
  });
}

async function main(argv: string[]): Promise<void> {
  const [dir, host, portText, bytesText, flowsText = '1'] = argv;
  if ((dir !== 'up' && dir !== 'down') || host === undefined || !/^\d+$/.test(portText ?? '') || !/^\d+$/.test(bytesText ?? '') || !/^\d+$/.test(flowsText)) {
    process.stderr.write('usage: bulk-client.js up|down HOST PORT BYTES [FLOWS]\n');
    process.exit(2);
  }
  const flows = Math.max(1, Number(flowsText));
  const per = Math.floor(Number(bytesText) / flows);
  const t0 = process.hrtime.bigint();
  const done = await Promise.all(Array.from({ length: flows }, () => (dir === 'up' ? upload : download)(host, Number(portText), per)));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(`${JSON.stringify({ bytes: done.reduce((a, b) => a + b, 0), ms, flows })}\n`, () => process.exit(0));
}

void main(process.argv.slice(2));
