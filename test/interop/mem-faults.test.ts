// (6) Two Stacks on a lossy, duplicating, reordering, corrupting mem: wire move 50 MB each way intact.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PatternVerifier, patternChunk } from '../../runtime/apps/pattern.js';
import type { Connection } from '../../runtime/connection.js';
import { Stack } from '../../runtime/stack.js';
import { addonSkip, scaled } from '../helpers/env.js';
import { onceEvent, withTimeout } from '../helpers/wait.js';

const skip = addonSkip();
const N = scaled(50, 4) * 1024 * 1024; // 50 MB each way; less under CAPYBARA_TEST_SCALE (the sanitizer run)

async function pump(c: Connection, n: number): Promise<void> {
  const chunk = 64 * 1024;
  for (let off = 0; off < n; off += chunk) {
    if (!c.write(patternChunk(off, Math.min(chunk, n - off)))) await onceEvent(c, 'drain', 60_000);
  }
  c.end();
}

describe('faulty mem: wire', { skip: skip ?? false }, () => {
  let a: Stack;
  let b: Stack;
  before(async () => {
    const wire = `mem:faults-${process.pid}?loss=0.05&dup=0.02&reorder=0.02&corrupt=0.01&seed=7`;
    a = await Stack.open({ device: wire, address: '10.96.0.1/24', mac: '02:00:00:96:00:01' });
    b = await Stack.open({ device: wire, address: '10.96.0.2/24', mac: '02:00:00:96:00:02' });
  });
  after(async () => {
    await b?.close({ graceful: false });
    await a?.close({ graceful: false });
  });

  it(`${N / (1024 * 1024)} MB both ways arrive intact and the stats show retransmissions`, async () => {
    const serverDone = new Promise<PatternVerifier>((resolve, reject) => {
      const server = a.createServer({ allowHalfOpen: true }, (s) => {
        const v = new PatternVerifier();
        s.on('data', (d: Buffer) => v.update(d));
        s.on('error', reject);
        s.on('end', () => resolve(v));
        pump(s, N).catch(reject);
      });
      server.listen(5001);
    });
    const c = b.connect({ port: 5001, host: '10.96.0.1', allowHalfOpen: true });
    await onceEvent(c, 'connect', 30_000);
    const v = new PatternVerifier();
    c.on('data', (d: Buffer) => v.update(d));
    const clientEnd = onceEvent(c, 'end', 600_000);
    await withTimeout(pump(c, N), 600_000, 'client send');
    await clientEnd;
    const sv = await withTimeout(serverDone, 600_000, 'server receive');
    assert.equal(v.offset, N);
    assert.ok(v.ok, `client side mismatch at ${v.firstMismatch}`);
    assert.equal(sv.offset, N);
    assert.ok(sv.ok, `server side mismatch at ${sv.firstMismatch}`);
    const sa = a.stats();
    const sb = b.stats();
    assert.ok((sa.tcp.retransmits ?? 0) + (sb.tcp.retransmits ?? 0) > 0, 'retransmits counted');
    assert.ok((sa.dev.injectedLoss ?? 0) + (sb.dev.injectedLoss ?? 0) > 0, 'the wire dropped frames');
  });
});
