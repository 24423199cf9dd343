// The soak (issue 8), bounded for CI: `capybara soak` for a minute (CAPYBARA_SOAK_SECONDS, CAPYBARA_SOAK_SEED
// to change) on the mem switch: seeded random faults, random flows with random reads and writes, random
// migrations between three runtimes. Every byte echoed back must check out and nothing may leak. A shorter
// run moves the connections through the engines' lane instead (--js-lane) with eight migrators at once,
// which once met an older migration's claim at the balancer (test/c/test_claims.c).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SoakResult } from '../../runtime/soak.js';
import { addonSkip, cliAsync } from '../helpers/env.js';

const skip = addonSkip();
const SECONDS = Number(process.env.CAPYBARA_SOAK_SECONDS ?? 60);
const SEED = Number(process.env.CAPYBARA_SOAK_SEED ?? 1);
const LANE_SECONDS = Math.max(5, Math.round(SECONDS / 3));

async function soak(seconds: number, extra: string[]): Promise<void> {
  const r = await cliAsync(['soak', '--seconds', String(seconds), '--seed', String(SEED), '--json', ...extra], {}, (seconds + 200) * 1000);
  let res: SoakResult;
  try {
    res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as SoakResult;
  } catch {
    assert.fail(`soak printed no result (exit ${r.status}): ${r.stderr}`);
  }
  const inj = res.injected;
  process.stderr.write(`# soak seed ${res.seed}${extra.length ? ` (${extra.join(' ')})` : ''}: ${res.flows} flows, ${res.bytes} bytes checked, ${res.migrations} migrations ` +
    `(${res.migrationsRefused} refused, ${res.migrationsSkipped} not movable), faults loss ${inj.loss} dup ${inj.dup} reorder ${inj.reorder} ` +
    `corrupt ${inj.corrupt} delayed ${inj.delay}; leaks ${JSON.stringify(res.leaks)}\n`);
  assert.deepEqual(res.errors, []);
  assert.deepEqual(res.leaks, { appFlows: 0, connections: 0, steering: 0, slots: 0, chunks: 0, held: 0 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(res.bytes > 0 && res.flows > 0);
  assert.ok(res.migrations > 0, 'flows were migrated');
  assert.ok(inj.loss + inj.reorder + inj.corrupt > 0, 'the wire injected faults');
}

describe('soak on the mem switch', { skip: skip ?? false }, () => {
  it(`${SECONDS} s of faults, flows and migrations: every byte intact, nothing leaks`, { timeout: (SECONDS + 240) * 1000 }, async () => {
    await soak(SECONDS, []);
  });

  it(`${LANE_SECONDS} s through the lane (--js-lane, 8 migrators at once): every byte intact, nothing leaks`, { timeout: (LANE_SECONDS + 240) * 1000 }, async () => {
    await soak(LANE_SECONDS, ['--js-lane', '--migrators', '8']);
  });
});
