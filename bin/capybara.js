#!/usr/bin/env node
// The capybara command. The implementation is compiled TypeScript in dist/ (runtime/cli.ts).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'runtime', 'cli.js');
if (!existsSync(cli)) {
  process.stderr.write(`capybara: ${cli} is missing: run npm run build (or npm run build:ts)\n`);
  process.exit(1);
}
const { main } = await import(pathToFileURL(cli).href);
const code = await main(process.argv.slice(2));
process.exitCode = code;
// Exit now: handles left by a failed command (sockets, timers) must not keep the process alive.
// serve only returns after its clean shutdown, so nothing is cut short here.
process.exit(code);
