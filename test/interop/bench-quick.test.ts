// Smoke test of `capybara bench --quick` on the testbed with a reduced suite set (micro, rtt, cps): the run
// succeeds, writes result.json / summary.md / .hgrm histograms / SVG and PNG plots per suite, its JSON
// is valid, and every suite has numbers for every system it measured. Never asserts on a number's size.
// Then the migration suite for capybara and capybara-tls only: both have numbers and their ratio row.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { missingNumbers, type Measure } from '../../perf/result.js';
import { addonSkip, cliAsync, hasCommand, netnsSkip } from '../helpers/env.js';

const skip = netnsSkip() ?? addonSkip() ?? (hasCommand('sockperf') ? undefined : 'sockperf not installed');
const SUITES = ['micro', 'rtt', 'cps'];

interface Outcome {
  suite: string;
  ok: boolean;
  dir?: string;
  systems?: string[];
  measures?: Measure[];
  error?: string;
}

describe('capybara bench --quick', { skip: skip ?? false }, () => {
  const out = mkdtempSync(join(tmpdir(), 'cpb-bench-quick-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  it('runs micro, rtt and cps, writing numbers for every system', { timeout: 300_000 }, async () => {
    const r = await cliAsync(['bench', ...SUITES, '--quick', '--out', out, '--json'], {}, 280_000);
    assert.equal(r.status, 0, `bench failed:\n${r.stderr.slice(-3000)}`);
    const doc = JSON.parse(r.stdout) as { outcomes: Outcome[] };
    assert.deepEqual(doc.outcomes.map((o) => o.suite), SUITES);
    for (const o of doc.outcomes) {
      assert.equal(o.ok, true, `${o.suite}: ${o.error}`);
      assert.ok(o.dir && existsSync(o.dir), `${o.suite}: folder ${o.dir}`);
      const files = readdirSync(o.dir);
      for (const f of ['result.json', 'summary.md']) assert.ok(files.includes(f), `${o.suite}: ${f} in ${files.join(', ')}`);
      assert.ok(files.some((f) => f.endsWith('.svg')) && files.some((f) => f.endsWith('.png')), `${o.suite}: plots in ${files.join(', ')}`);
      if (o.suite !== 'micro') assert.ok(files.some((f) => f.endsWith('.hgrm')), `${o.suite}: .hgrm in ${files.join(', ')}`);
      const result = JSON.parse(readFileSync(join(o.dir, 'result.json'), 'utf8')) as {
        suite: string; quick: boolean; systems: string[]; measures: Measure[]; versions: Record<string, unknown>; machine: Record<string, unknown>; config: unknown;
      };
      assert.equal(result.suite, o.suite);
      assert.equal(result.quick, true);
      assert.ok(result.config && result.machine && typeof result.versions.node === 'string');
      assert.ok(result.systems.includes('capybara'), `${o.suite}: systems ${result.systems.join(', ')}`);
      if (o.suite !== 'micro') assert.ok(result.systems.length >= 3, `${o.suite}: baselines in ${result.systems.join(', ')}`);
      assert.deepEqual(missingNumbers(result), [], `${o.suite}: every system has numbers`);
      // every system has a number for every measure of these suites
      for (const m of result.measures) for (const s of result.systems) assert.equal(typeof m.values[s], 'number', `${o.suite}: ${m.name} for ${s}`);
      const summary = readFileSync(join(o.dir, 'summary.md'), 'utf8');
      assert.match(summary, /## Headline numbers and ratios/);
      if (o.suite !== 'micro') assert.match(summary, /capybara \/ kernel/);
      const png = readFileSync(join(o.dir, files.find((f) => f.endsWith('.png'))!));
      assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    }
  });

  it('runs migration for capybara and capybara-tls, with the TLS / TCP ratio', { timeout: 240_000 }, async () => {
    const r = await cliAsync(['bench', 'migration', '--quick', '--only', 'capybara,capybara-tls', '--out', out, '--json'], {}, 220_000);
    assert.equal(r.status, 0, `bench failed:\n${r.stderr.slice(-3000)}`);
    const o = (JSON.parse(r.stdout) as { outcomes: Outcome[] }).outcomes[0]!;
    assert.equal(o.ok, true, `migration: ${o.error}`);
    const result = JSON.parse(readFileSync(join(o.dir!, 'result.json'), 'utf8')) as {
      systems: string[]; measures: Measure[]; ratios: Record<string, { blackout: Record<string, number | null> }>;
      runs: { target: string; migrated: number; client: { bad: number; tls?: { handshakes: number } } }[];
    };
    assert.deepEqual(result.systems, ['capybara', 'capybara-tls']);
    for (const m of result.measures) for (const s of result.systems) assert.equal(typeof m.values[s], 'number', `${m.name} for ${s}`);
    assert.equal(typeof result.ratios['capybara-tls/capybara']?.blackout.p50, 'number');
    const tls = result.runs.find((x) => x.target === 'capybara-tls')!;
    assert.ok(tls.migrated > 0);
    assert.equal(tls.client.bad, 0, 'every TLS echo matched');
    assert.equal(tls.client.tls?.handshakes, 1, 'one TLS handshake for the whole migrated stream');
    assert.match(readFileSync(join(o.dir!, 'summary.md'), 'utf8'), /capybara-tls \/ capybara/);
  });
});
