// SYN flood: `hping3 --flood -S` from `client` at capybara http on hostA for a bounded time, while curl
// keeps fetching /bytes/100000 one connection after another. The listener's SYN queue overflows, SYN
// cookies (RFC 4987) answer from then on, and legitimate clients still connect: every fetch during the
// flood must succeed. Memory must stay bounded: slots in use never above max flows, chunks below the
// pool, and the runtime's RSS within a fixed margin of where it started. Figures are printed for the
// closing note. The flood comes from the client's own address (what hping3 does by default), so the
// client kernel answers our SYN-ACKs with RSTs; a second round spoofs random sources (--rand-source),
// whose SYN-ACKs go nowhere, the classic flood that keeps half-open connections around.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { stopProcess } from '../../dataplane/exec.js';
import { adminRequest, adminSocketPath } from '../../runtime/admin.js';
import { patternSha256 } from '../../runtime/apps/pattern.js';
import { curlFetch } from '../../runtime/demo.js';
import type { EngineStats } from '../../runtime/native.js';
import { addonSkip, hasCommand, netnsSkip } from '../helpers/env.js';
import { startServe, type Running, useTestbed } from '../helpers/testbed.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('curl') ? undefined : 'curl not installed') ?? (hasCommand('hping3') ? undefined : 'hping3 not installed');
const NAME = 'interop-synflood';
const FLOOD_MS = 10_000;
const BODY = 100_000;

function stats(): Promise<EngineStats> {
  return adminRequest({ path: adminSocketPath(NAME) }, { cmd: 'stats' }) as Promise<EngineStats>;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

interface FloodResult {
  fetches: number;
  ok: number;
  failures: string[];
  synsPerSec: number;
  cookiesSent: number;
  cookiesOk: number;
  peakSlots: number;
  peakChunks: number;
  slots: number;
  chunks: number;
  rssStartKiB: number;
  rssPeakKiB: number;
  backlogDrops: number;
}

async function flood(server: Running, extra: string[]): Promise<FloodResult> {
  const pid = server.child.pid!;
  const s0 = await stats();
  const rssStart = rssKiB(pid);
  const hping = spawn('ip', ['netns', 'exec', 'client', 'hping3', '--flood', '-S', '-p', '80', ...extra, '10.77.1.10'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let done = false;
  const timer = setTimeout(() => { done = true; }, FLOOD_MS);
  const res: FloodResult = { fetches: 0, ok: 0, failures: [], synsPerSec: 0, cookiesSent: 0, cookiesOk: 0, peakSlots: 0, peakChunks: 0, slots: s0.arena.slots, chunks: s0.arena.chunks, rssStartKiB: rssStart, rssPeakKiB: rssStart, backlogDrops: 0 };
  const sampler = (async () => {
    while (!done) {
      const s = await stats();
      res.peakSlots = Math.max(res.peakSlots, s.arena.slotsUsed);
      res.peakChunks = Math.max(res.peakChunks, s.arena.chunksUsed);
      res.rssPeakKiB = Math.max(res.rssPeakKiB, rssKiB(pid));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, 500)); // the flood is on before the first fetch
  while (!done) {
    // One fresh connection per fetch: every fetch needs a handshake through the flooded listener.
    const r = await curlFetch([`http://10.77.1.10/bytes/${BODY}`], 20_000);
    res.fetches++;
    if (r.code === 0 && r.statuses[0] === 200 && r.sha256 === patternSha256(BODY)) res.ok++;
    else res.failures.push(`code ${r.code} status ${r.statuses.join(',')} ${r.stderr.slice(0, 200)}`);
  }
  clearTimeout(timer);
  await sampler;
  const s1 = await stats();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await stopProcess(hping, 'SIGINT', 3000);
  res.synsPerSec = Math.round((s1.tcp.segsIn - s0.tcp.segsIn) / secs);
  res.cookiesSent = s1.tcp.syncookiesSent - s0.tcp.syncookiesSent;
  res.cookiesOk = s1.tcp.syncookiesOk - s0.tcp.syncookiesOk;
  res.backlogDrops = s1.tcp.backlogDrops - s0.tcp.backlogDrops;
  return res;
}

function report(what: string, r: FloodResult): void {
  console.log(`synflood (${what}): legit fetches ${r.ok}/${r.fetches} ok; segments in ${r.synsPerSec}/s; SYN cookies sent ${r.cookiesSent}, ` +
    `completed ${r.cookiesOk}; backlog drops ${r.backlogDrops}; peak slots ${r.peakSlots}/${r.slots}, peak chunks ${r.peakChunks}/${r.chunks}; ` +
    `RSS ${r.rssStartKiB} -> peak ${r.rssPeakKiB} KiB`);
}

function check(r: FloodResult): void {
  assert.ok(r.fetches >= 3, `only ${r.fetches} fetches in ${FLOOD_MS} ms`);
  assert.deepEqual(r.failures, [], 'every legitimate fetch during the flood succeeds');
  assert.ok(r.peakSlots <= r.slots, 'slots bounded by the arena');
  assert.ok(r.peakChunks < r.chunks, 'chunk pool never exhausted');
  // The arena is mapped up front; a flood must not grow the process beyond a fixed margin.
  assert.ok(r.rssPeakKiB - r.rssStartKiB < 64 * 1024, `RSS grew ${r.rssPeakKiB - r.rssStartKiB} KiB`);
}

describe('SYN flood with SYN cookies', { skip: skip ?? false }, () => {
  let server: Running | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useTestbed();
    server = await startServe('http', 'hostA', 80, NAME);
  });
  after(async () => {
    await server?.stop();
    await teardown?.();
  });

  it('hping3 --flood -S from the client address: legitimate fetches all succeed, memory bounded', { timeout: 60_000 }, async () => {
    const r = await flood(server!, []);
    report('client address', r);
    check(r);
  });

  it('hping3 --flood -S --rand-source: cookies answer once the SYN queue is full, fetches succeed', { timeout: 60_000 }, async () => {
    const r = await flood(server!, ['--rand-source']);
    report('random sources', r);
    check(r);
    assert.ok(r.cookiesSent > 0, 'the SYN queue overflowed and cookies were sent');
  });
});
