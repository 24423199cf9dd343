// A 100 MB upload by a kernel TCP client (Node net, in `client`) through the VIP into the digest app on
// hostA/hostB while the server side of the connection moves between them every few tens of milliseconds
// (issue 4, item 1, the upload half). The digest app hashes what it reads and carries its running SHA-256
// in its migration state (runtime/apps/digest.ts); on the client's FIN it answers "<bytes> <sha256>".
// The answer must match what the client sent, the client must see no error, and a client-side capture
// must show no RST from the VIP.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PLAN } from '../../dataplane/testbed.js';
import { DIGEST_PORT } from '../../runtime/apps/digest.js';
import { HELPERS, addonSkip, netnsSkip } from '../helpers/env.js';
import { migrationLoop, percentile, useServes, withCapture } from '../helpers/migration.js';

const skip = netnsSkip() ?? addonSkip();
const PORT = DIGEST_PORT;
const BYTES = 100 * 1024 * 1024;
const RATE = 12 * 1024 * 1024; // bytes/s: the upload lasts ~8 s, room for many migrations

interface UploadResult { sent: number; sha256: string; answer: string; error: string | null; ms: number }

function runUpload(): Promise<UploadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, process.execPath, join(HELPERS, 'upload-client.js'), 'upload', PLAN.vip, String(PORT), String(BYTES), String(RATE)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as UploadResult);
      } catch {
        reject(new Error(`upload client gave no result (exit ${code}): ${err}`));
      }
    });
  });
}

describe('upload across live migrations', { skip: skip ?? false }, () => {
  useServes('digest', PORT);

  it('100 MB with 50+ migrations: the server\'s sha256 matches, no error, no RST', { timeout: 180_000 }, async () => {
    await withCapture(async (cap) => {
      const uploading = runUpload();
      const loop = migrationLoop(PORT);
      const res = await uploading;
      const migrations = await loop.stop();
      const blackouts = loop.blackouts;
      assert.deepEqual(loop.errors, []);
      process.stderr.write(`# ${migrations} migrations during the upload (${res.ms} ms); engine-side blackout p50 ${percentile(blackouts, 50).toFixed(0)} us, p99 ${percentile(blackouts, 99).toFixed(0)} us\n`);
      assert.equal(res.error, null);
      assert.equal(res.sent, BYTES);
      assert.equal(res.answer, `${BYTES} ${res.sha256}`, 'the server hashed exactly what the client sent');
      assert.ok(migrations >= 50, `only ${migrations} migrations happened during the upload`);
      assert.deepEqual(await cap.rstsFromVip(), [], 'no RST from the VIP');
    });
  });
});
