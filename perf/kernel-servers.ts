// The Node baselines: the same apps capybara serves (runtime/apps), run over Node's `net` on the kernel's
// TCP. The benchmarks start this inside a testbed host so the only difference from `capybara serve` is
// the stack underneath.
//
//   node dist/perf/kernel-servers.js <sockperf|echo|discard|http|node-http> HOST PORT
//
// node-http is not one of those apps: it is Node's own `http` module serving the same GET /bytes/N
// (pattern bytes) and /health, the server a Node user would otherwise write.
// Prints "listening on HOST:PORT (node net)" when ready; stops on SIGTERM/SIGINT.
import http from 'node:http';
import net from 'node:net';
import { APPS, isAppName } from '../runtime/apps/index.js';
import { patternChunk } from '../runtime/apps/pattern.js';

const MAX_BYTES = 16 * 1024 * 1024 * 1024;

function nodeHttp(host: string, port: number): void {
  const server = http.createServer((req, res) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 }).end('ok\n');
      return;
    }
    const n = m ? Number(m[1]) : NaN;
    if (!(n >= 0 && n <= MAX_BYTES)) {
      res.writeHead(404, { 'content-length': 0 }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
    let off = 0;
    const pump = () => {
      while (off < n) {
        const len = Math.min(256 * 1024, n - off);
        const ok = res.write(patternChunk(off, len));
        off += len;
        if (!ok) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  server.keepAliveTimeout = 60_000;
  server.on('error', (err) => {
    process.stderr.write(`kernel-servers: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({ host, port, backlog: 1024 }, () => process.stdout.write(`listening on ${host}:${port} (node http)\n`));
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function main(argv: string[]): void {
  const [app, host, portText] = argv;
  if (app === 'node-http' && host !== undefined && portText !== undefined && /^\d+$/.test(portText)) return nodeHttp(host, Number(portText));
  if (app === undefined || !isAppName(app) || host === undefined || portText === undefined || !/^\d+$/.test(portText)) {
    process.stderr.write('usage: kernel-servers.js <sockperf|echo|discard|http|node-http> HOST PORT\n');
    process.exit(2);
  }
  const handler = APPS[app].handler();
  // allowHalfOpen as capybara serve does, so apps finish answering after the peer's FIN.
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => handler(sock));
  server.on('error', (err) => {
    process.stderr.write(`kernel-servers: ${err.message}\n`);
    process.exit(1);
  });
  server.listen({ host, port: Number(portText), backlog: 1024 }, () => {
    process.stdout.write(`listening on ${host}:${portText} (node net)\n`);
  });
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main(process.argv.slice(2));
