// A kernel-TCP upload client the migration tests run in the `client` namespace:
//   node upload-client.js upload HOST PORT BYTES RATE_BYTES_PER_S
// sends BYTES random bytes (paced to RATE so the upload lasts long enough for many migrations), half-closes,
// reads the server's answer line and prints one JSON line:
//   {"sent", "sha256" (of what was sent), "answer" (the server's line), "error" (null or the socket error),
//    "ms", "connects": 1}
// Does nothing when imported or run without a mode (the test runner executes every file under dist/test).
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';

const CHUNK = 64 * 1024;

async function upload(host: string, port: number, bytes: number, rate: number): Promise<void> {
  const t0 = Date.now();
  const hash = createHash('sha256');
  let error: string | null = null;
  let answer = '';
  const s = connect({ host, port, allowHalfOpen: true });
  s.on('error', (e: NodeJS.ErrnoException) => {
    error ??= e.code ?? e.message;
  });
  s.on('data', (d: Buffer) => (answer += d.toString('latin1')));
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  }).catch(() => {});
  let sent = 0;
  while (sent < bytes && error === null && !s.destroyed) {
    const chunk = randomBytes(Math.min(CHUNK, bytes - sent));
    hash.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise<void>((resolve) => {
      s.once('drain', resolve);
      s.once('close', resolve);
    });
    const ahead = sent / rate * 1000 - (Date.now() - t0);
    if (ahead > 5) await new Promise((r) => setTimeout(r, ahead));
  }
  s.end();
  await closed;
  process.stdout.write(`${JSON.stringify({ sent, sha256: hash.digest('hex'), answer: answer.trim(), error, ms: Date.now() - t0, connects: 1 })}\n`);
}

const [mode, ...a] = process.argv.slice(2);
if (mode === 'upload') {
  upload(a[0]!, Number(a[1]), Number(a[2]), Number(a[3])).catch((err: Error) => {
    process.stdout.write(`${JSON.stringify({ error: err.message })}\n`);
    process.exitCode = 1;
  });
}
