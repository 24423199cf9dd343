// The pure parts of the bench harness: the common result shape (measures, ratios, the check that every
// system has a number), --compare, the parsers of sockperf's full log and wrk's report hook, the blackout
// histogram's bins, the progress bar's text, and a real Vega-Lite -> SVG -> PNG rendering.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compareResults, formatChanges, loadResults, type StoredResult } from '../../perf/compare.js';
import { ParseError, parseSockperfFullLog } from '../../perf/format.js';
import { parseWrkReport } from '../../perf/http.js';
import { barSpec, blackoutBins, blackoutSpec, percentileSpec, renderPlot } from '../../perf/plot.js';
import { Progress } from '../../perf/progress.js';
import { missingNumbers, ratioTable, ratiosOf, type SuiteNumbers } from '../../perf/result.js';

const NUMBERS: SuiteNumbers = {
  systems: ['capybara', 'kernel', 'node'],
  measures: [
    { name: 'rtt 64 B p50', unit: 'µs', better: 'lower', values: { capybara: 20, kernel: 40, node: 50 } },
    { name: 'upload 1 flow', unit: 'Gbit/s', better: 'higher', values: { capybara: 3, kernel: 2, node: null } },
  ],
};

describe('result measures', () => {
  it('ratios are capybara / each baseline, null when a side is missing', () => {
    const r = ratiosOf(NUMBERS);
    assert.equal(r['rtt 64 B p50']!['capybara/kernel'], 0.5);
    assert.equal(r['rtt 64 B p50']!['capybara/node'], 0.4);
    assert.equal(r['upload 1 flow']!['capybara/kernel'], 1.5);
    assert.equal(r['upload 1 flow']!['capybara/node'], null);
  });

  it('the table has a column per system and per ratio', () => {
    const t = ratioTable(NUMBERS);
    assert.match(t, /\| measure \| unit \| capybara \| kernel \| node \| capybara \/ kernel \| capybara \/ node \|/);
    assert.match(t, /\| rtt 64 B p50 \| µs \(lower is better\) \| 20 \| 40 \| 50 \| 0\.50x \| 0\.40x \|/);
    assert.match(t, /n\/a/);
  });

  it('a system without any number makes the result unusable', () => {
    assert.deepEqual(missingNumbers(NUMBERS), []);
    const bad: SuiteNumbers = { systems: ['capybara', 'kernel'], measures: [{ name: 'x', unit: 'µs', better: 'lower', values: { capybara: 1, kernel: null } }] };
    assert.deepEqual(missingNumbers(bad), ['system kernel has no number']);
    assert.deepEqual(missingNumbers({ systems: [], measures: [] }), ['no systems', 'no measures']);
  });
});

describe('--compare', () => {
  it('matches suites, measures and systems of an earlier run folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cpb-compare-'));
    try {
      const old: StoredResult = { suite: 'rtt', date: '2026-01-01T00:00:00Z', measures: [{ ...NUMBERS.measures[0]!, values: { capybara: 25, kernel: 40 } }] };
      mkdirSync(join(dir, '2026-01-01-rtt'));
      writeFileSync(join(dir, '2026-01-01-rtt', 'result.json'), JSON.stringify(old));
      writeFileSync(join(dir, 'notes.txt'), 'not a result');
      const loaded = loadResults(dir);
      assert.deepEqual([...loaded.keys()], ['rtt']);
      const changes = compareResults(loaded, [{ suite: 'rtt', measures: NUMBERS.measures }, { suite: 'http', measures: [] }]);
      assert.equal(changes.length, 2);
      const c = changes.find((x) => x.system === 'capybara')!;
      assert.equal(c.old, 25);
      assert.equal(c.now, 20);
      assert.ok(Math.abs(c.change + 0.2) < 1e-9);
      assert.equal(c.better, true);
      assert.equal(changes.find((x) => x.system === 'kernel')!.change, 0);
      const text = formatChanges(changes, dir);
      assert.match(text, /rtt 64 B p50 \| capybara \| 25 → 20 µs \| -20\.0% \| better/);
      assert.match(text, /\| same \|/);
      assert.throws(() => loadResults(join(dir, 'missing')), /not a folder/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tool output parsers', () => {
  it('sockperf --full-log rows', () => {
    const csv = '------\ntest was performed using ...\nsockperf: ---> percentile 50.000 =   17.954\n------\npacket, txTime(sec), rxTime(sec), rtt(usec)\n0, 2.584960788, 2.586255943, 1295.155\n1, 2.586256234, 2.586454901, 198.667\n------------------------------\n';
    assert.deepEqual(parseSockperfFullLog(csv), [1295.155, 198.667]);
    assert.throws(() => parseSockperfFullLog('packet, txTime(sec)\n'), ParseError);
  });

  it("wrk's done() report (captured from wrk 4.1 against a Node http server)", () => {
    const out = 'Running 1s test @ http://127.0.0.1:17080/\n  1 threads and 4 connections\nCPB_WRK 7715 1002942 979805 0 1 0 2 0\nCPB_LAT 41 1\nCPB_LAT 46 1\nCPB_LAT 47 16\n';
    const r = parseWrkReport(out);
    assert.equal(r.requests, 7715);
    assert.equal(r.durationUs, 1002942);
    assert.equal(r.bytes, 979805);
    assert.deepEqual(r.errors, { connect: 0, read: 1, write: 0, status: 2, timeout: 0 });
    assert.deepEqual(r.latency, [[41, 1], [46, 1], [47, 16]]);
    assert.throws(() => parseWrkReport('unable to connect'), ParseError);
  });
});

describe('plots', () => {
  it('blackout bins are log-spaced and count everything once', () => {
    const bins = blackoutBins([0, 50, 100, 150, 3000, 2_000_000]);
    assert.equal(bins.reduce((a, b) => a + b.count, 0), 6);
    assert.equal(bins[0]!.count, 3); // 0, 50, 100: <= 100 µs
    assert.equal(bins[1]!.count, 1); // 150
    assert.equal(bins.find((b) => b.bin === '≤ 5 ms')!.count, 1);
    assert.equal(bins.at(-1)!.count, 1);
    assert.match(bins.at(-1)!.bin, /^> 1000 ms$/);
  });

  it('Vega-Lite specs render to SVG and PNG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cpb-plot-'));
    try {
      const specs = {
        pct: percentileSpec('p', [{ series: 'a', points: [{ percentile: 50, valueUs: 10 }, { percentile: 99, valueUs: 30 }] }]),
        bars: barSpec('b', 'Gbit/s', [{ group: 'upload', system: 'capybara', value: 2 }, { group: 'upload', system: 'kernel', value: 1 }]),
        blackout: blackoutSpec('h', { capybara: [100, 2000], tcp_repair: [200_000] }),
      };
      for (const [name, spec] of Object.entries(specs)) {
        const files = await renderPlot(spec, dir, name);
        const svg = readFileSync(join(dir, files.svg), 'utf8');
        assert.match(svg, /^<svg/);
        assert.match(svg, /<path|<rect/);
        const png = readFileSync(join(dir, files.png));
        assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
        assert.ok(png.length > 1000);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Progress', () => {
  it('counts planned and finished steps; draws nothing when not a terminal', () => {
    let written = '';
    const out = { isTTY: false, columns: 80, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
    const p = new Progress(out);
    p.plan(4);
    p.step('rtt kernel');
    p.tick();
    assert.match(p.render(8), /^\[##------\] 1\/4  rtt kernel  \d+s$/);
    p.log('a line');
    assert.equal(written, 'a line\n');
  });

  it('redraws on a terminal and erases itself before a log line', () => {
    let written = '';
    const out = { isTTY: true, columns: 80, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
    const p = new Progress(out);
    p.plan(2);
    p.step('x');
    p.log('hello');
    assert.match(written, /\r\x1b\[2K\[-+\] 0\/2  x .*\r\x1b\[2Khello\n/s);
  });
});
