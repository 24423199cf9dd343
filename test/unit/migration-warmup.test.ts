// The JIT warm-up of the migration path (runtime/migration/warmup.ts) drives real channel sessions and
// snapshot layers through offer/adopted/forward round trips: every round must complete, in slices
// across event-loop turns, and stop() must end it early.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { warmUpMigrationPath } from '../../runtime/migration/warmup.js';

describe('migration warm-up', () => {
  it('completes every round trip, all at once or one slice per turn', async () => {
    assert.equal(await warmUpMigrationPath(12, 0).done, 12);
    let turns = 0;
    const tick = setInterval(() => turns++, 0);
    const n = await warmUpMigrationPath(30, 5).done;
    clearInterval(tick);
    assert.equal(n, 30);
    assert.ok(turns >= 1, 'the slices yield to the event loop');
  });

  it('stops early when asked', async () => {
    const w = warmUpMigrationPath(1000, 10);
    w.stop();
    const n = await w.done;
    assert.ok(n < 1000, `stopped after ${n} rounds`);
  });
});
