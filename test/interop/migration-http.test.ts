// A 100 MB HTTP download by the kernel's curl through the VIP while the server side of the connection
// moves between hostA and hostB every few tens of milliseconds: the http app captures where it is in the
// response (runtime/apps/http.ts, resumable) and the target continues the body from that offset. curl must
// see one connection, one 200, the right sha256 and no RST.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PLAN } from '../../dataplane/testbed.js';
import { patternSha256 } from '../../runtime/apps/pattern.js';
import { curlFetch } from '../../runtime/demo.js';
import { addonSkip, netnsSkip } from '../helpers/env.js';
import { migrationLoop, percentile, useServes, withCapture } from '../helpers/migration.js';

const skip = netnsSkip() ?? addonSkip();
const PORT = 80;
const BYTES = 100 * 1024 * 1024;

describe('HTTP download across live migrations', { skip: skip ?? false }, () => {
  useServes('http', PORT);

  it('100 MB with 50+ migrations: sha256 intact, one connection, no RST', async () => {
    await withCapture(async (cap) => {
      // --limit-rate spreads the body over ~6 s so that many migrations land inside it.
      const fetching = curlFetch([`http://${PLAN.vip}/bytes/${BYTES}`], 60_000, PLAN.client.ns, ['--limit-rate', '16M']);
      const loop = migrationLoop(PORT);
      const res = await fetching;
      const migrations = await loop.stop();
      const blackouts = loop.blackouts;
      assert.deepEqual(loop.errors, []);
      process.stderr.write(`# ${migrations} migrations during the download; engine-side blackout p50 ${percentile(blackouts, 50).toFixed(0)} us, p99 ${percentile(blackouts, 99).toFixed(0)} us\n`);
      assert.equal(res.code, 0, res.stderr);
      assert.deepEqual(res.statuses, [200]);
      assert.equal(res.connects, 1, 'curl opened one connection (no new handshake)');
      assert.equal(res.bytes, BYTES);
      assert.equal(res.sha256, patternSha256(BYTES, 1));
      assert.ok(migrations >= 50, `only ${migrations} migrations happened during the download`);
      assert.deepEqual(await cap.rstsFromVip(), [], 'no RST from the VIP');
    });
  });
});
