// RFC 5961 blind attacks against a live connection: while the kernel's curl in `client` downloads from
// capybara http on hostA, test/tools/blind (a raw socket in the same namespace, so it can forge the
// client's 4-tuple) sends RSTs and SYNs with sequence numbers inside the window but not at RCV.NXT, and
// data at RCV.NXT with an acknowledgment number the server never sent. Each must get a challenge ACK,
// never reset the connection, and never reach the application: the download completes byte-exact on one
// connection and the http app (which would answer garbage with 400 and close) sees no injected bytes.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../dataplane/exec.js';
import { adminRequest, adminSocketPath } from '../../runtime/admin.js';
import { patternSha256 } from '../../runtime/apps/pattern.js';
import { curlFetch } from '../../runtime/demo.js';
import type { EngineStats } from '../../runtime/native.js';
import { addonSkip, hasCommand, netnsSkip, ROOT } from '../helpers/env.js';
import { startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('curl') ? undefined : 'curl not installed') ?? (hasCommand('make') ? undefined : 'make not installed');
const NAME = 'interop-blind';
const TOOL = join(ROOT, 'test', 'tools', 'bin', 'blind');

async function tcpStats(): Promise<Record<string, number>> {
  const s = (await adminRequest({ path: adminSocketPath(NAME) }, { cmd: 'stats' })) as EngineStats;
  return s.tcp;
}

describe('RFC 5961 blind RST, SYN and data injection against a live download', { skip: skip ?? false }, () => {
  let server: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    const m = await run('make', ['-s', '-C', join(ROOT, 'test', 'tools')], { timeoutMs: 60_000 });
    assert.equal(m.code, 0, m.stderr);
    teardown = await useTestbed();
    server = await startServe('http', 'hostA', 80, NAME);
  });
  after(async () => {
    await server?.stop();
    await teardown?.();
  });

  it('challenge ACKs, no reset, bytes intact', async () => {
    const n = 40_000_000;
    const before = await tcpStats();
    // --limit-rate keeps the connection alive for the whole attack (about 8 s at 5 MB/s).
    const download = curlFetch([`http://10.77.1.10/bytes/${n}`], 120_000, 'client', ['--limit-rate', '5M']);
    const rounds = 1500;
    const attack = await run('ip', ['netns', 'exec', 'client', TOOL, 'cl0', '10.77.1.10', '80', String(rounds), '3000'], { timeoutMs: 30_000 });
    const r = await download;
    const after = await tcpStats();
    assert.equal(attack.code, 0, `${attack.stdout} ${attack.stderr}`);
    const sent = JSON.parse(attack.stdout.trim().split('\n').pop() ?? '{}') as { rst: number; syn: number; data: number; timestamps: boolean };
    assert.equal(sent.rst, rounds);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.statuses, [200]);
    assert.equal(r.connects, 1);
    assert.equal(r.bytes, n);
    assert.equal(r.sha256, patternSha256(n));
    const chal = after.challengeAcks - before.challengeAcks;
    // Every forged segment is answered unless the RFC 5961 §7 limit (1000 per second) holds it back: the
    // attack sends 1500 per second for about 3 s, so about 3000 answers. Tolerance below: a forged segment
    // whose copied TSval the client's next ACK has overtaken is a PAWS drop (an ordinary ACK, not counted).
    const forged = sent.rst + sent.syn + sent.data;
    const limit = 1000 * 5; // seconds the 3 s attack can straddle, with slack for a slow machine
    assert.ok(chal >= Math.min(forged, 2000) && chal <= Math.min(forged, limit), `challenge ACKs ${chal} for ${forged} forged segments`);
    assert.equal(after.rstsReceived - before.rstsReceived, 0, 'no RST was accepted');
    console.log(`blind: forged ${sent.rst} RST + ${sent.syn} SYN + ${sent.data} data (timestamps ${sent.timestamps}); challenge ACKs ${chal}; resets accepted 0; ${n} bytes intact`);
  });
});
