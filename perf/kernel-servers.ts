// The Node baselines: the same apps capybara serves (runtime/apps), run over Node's `net` on the kernel's
// TCP. The benchmarks start this inside a testbed host so the only difference from `capybara serve` is
// the stack underneath.
//
//   node dist/perf/kernel-servers.js <sockperf|echo|discard|http> HOST PORT
//
// Prints "listening on HOST:PORT (node net)" when ready; stops on SIGTERM/SIGINT.
import net from 'node:net';
import { APPS, isAppName } from '../runtime/apps/index.js';

function main(argv: string[]): void {
  const [app, host, portText] = argv;
  if (app === undefined || !isAppName(app) || host === undefined || portText === undefined || !/^\d+$/.test(portText)) {
    process.stderr.write('usage: kernel-servers.js <sockperf|echo|discard|http> HOST PORT\n');
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
