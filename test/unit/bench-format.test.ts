// Pure helpers of perf/format.ts against real tool output captured on this machine (sockperf 3.7,
// curl, /proc/slabinfo): the numbers the benchmarks report come from these parsers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CURL_WRITE_OUT, ParseError, dateStamp, fmt, fmtRatio, gbitPerSec, markdownTable, median, parseCurlWrite, parseSlabinfo,
  parseSockperf, ratio, slabDelta,
} from '../../perf/format.js';

// Captured on this machine: sockperf 3.7 client against `sockperf server --tcp` on 127.0.0.1 (64 B, --full-rtt).
const PP64_FULL_RTT =
  "sockperf: \u001b[2;35m== version #3.7-no.git == \u001b[0m\nsockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)\n\n[ 0] IP = 127.0.0.1       PORT = 17777 # TCP\nsockperf: Warmup stage (sending a few dummy messages)...\nsockperf: Starting test...\nsockperf: Test end (interrupted by timer)\nsockperf: Test ended\nsockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=95572; ReceivedMessages=95571\nsockperf: ========= Printing statistics for Server No: 0\nsockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=71900; ReceivedMessages=71900\nsockperf: \u001b[2;35m====> avg-rtt=21.536 (std-dev=23.533)\u001b[0m\nsockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\nsockperf: Summary: Round trip is 21.536 usec\nsockperf: \u001b[2;35mTotal 71900 observations\u001b[0m; each percentile contains 719.00 observations\nsockperf: ---> <MAX> observation = 3316.844\nsockperf: ---> percentile 99.999 = 2504.918\nsockperf: ---> percentile 99.990 =  707.970\nsockperf: ---> percentile 99.900 =  118.142\nsockperf: ---> percentile 99.000 =   70.252\nsockperf: ---> percentile 90.000 =   24.806\nsockperf: ---> percentile 75.000 =   22.923\nsockperf: ---> percentile 50.000 =   17.332\nsockperf: ---> percentile 25.000 =   16.881\nsockperf: ---> <MIN> observation =   16.080\n";

// Same, 1024 B without --full-rtt (sockperf then reports half the round trip as latency).
const PP1K_LATENCY =
  "sockperf: \u001b[2;35m== version #3.7-no.git == \u001b[0m\nsockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)\n\n[ 0] IP = 127.0.0.1       PORT = 17777 # TCP\nsockperf: Warmup stage (sending a few dummy messages)...\nsockperf: Starting test...\nsockperf: Test end (interrupted by timer)\nsockperf: Test ended\nsockperf: [Total Run] RunTime=1.001 sec; Warm up time=400 msec; SentMessages=48413; ReceivedMessages=48412\nsockperf: ========= Printing statistics for Server No: 0\nsockperf: [Valid Duration] RunTime=0.549 sec; SentMessages=26033; ReceivedMessages=26033\nsockperf: \u001b[2;35m====> avg-latency=10.539 (std-dev=5.361)\u001b[0m\nsockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\nsockperf: Summary: Latency is 10.539 usec\nsockperf: \u001b[2;35mTotal 26033 observations\u001b[0m; each percentile contains 260.33 observations\nsockperf: ---> <MAX> observation =  184.551\nsockperf: ---> percentile 99.999 =  184.551\nsockperf: ---> percentile 99.990 =  137.328\nsockperf: ---> percentile 99.900 =   57.693\nsockperf: ---> percentile 99.000 =   34.274\nsockperf: ---> percentile 90.000 =   12.327\nsockperf: ---> percentile 75.000 =   11.235\nsockperf: ---> percentile 50.000 =    8.756\nsockperf: ---> percentile 25.000 =    8.681\nsockperf: ---> <MIN> observation =    8.230\n";
const NO_REPLY =
  "sockperf: \u001b[2;35m== version #3.7-no.git == \u001b[0m\nsockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)\n\n[ 0] IP = 127.0.0.1       PORT = 17778 # TCP\nsockperf: Warmup stage (sending a few dummy messages)...\nsockperf: Starting test...\nsockperf: Test end (interrupted by timer)\nsockperf: Test ended\nsockperf: No messages were received from the server. Is the server down?\n";

const SLABINFO_BEFORE = `slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
btrfs_delayed_node      0      0    312   13    1 : tunables    0    0    0 : slabdata      0      0      0
TCP                   39     39   2368   13    8 : tunables    0    0    0 : slabdata      3      3      0
filp                 703    714    192   21    1 : tunables    0    0    0 : slabdata     34     34      0
`;
const SLABINFO_AFTER = SLABINFO_BEFORE.replace('TCP                   39     39', 'TCP                   59     65').replace('filp                 703', 'filp                 723');

describe('parseSockperf', () => {
  it('reads the percentiles of a --full-rtt run', () => {
    const r = parseSockperf(PP64_FULL_RTT);
    assert.equal(r.kind, 'rtt');
    assert.equal(r.observations, 71900);
    assert.equal(r.avgUs, 21.536);
    assert.equal(r.stdDevUs, 23.533);
    assert.equal(r.minUs, 16.08);
    assert.equal(r.p25Us, 16.881);
    assert.equal(r.p50Us, 17.332);
    assert.equal(r.p75Us, 22.923);
    assert.equal(r.p90Us, 24.806);
    assert.equal(r.p99Us, 70.252);
    assert.equal(r.p999Us, 118.142);
    assert.equal(r.p9999Us, 707.97);
    assert.equal(r.maxUs, 3316.844);
    assert.equal(r.validSeconds, 1.55);
    assert.equal(r.sent, 71900);
    assert.equal(r.received, 71900);
    assert.equal(r.dropped, 0);
    assert.equal(r.duplicated, 0);
    assert.equal(r.outOfOrder, 0);
  });

  it('tells a one-way latency run from a round-trip run', () => {
    const r = parseSockperf(PP1K_LATENCY);
    assert.equal(r.kind, 'latency');
    assert.equal(r.observations, 26033);
    assert.equal(r.p50Us, 8.756);
    assert.equal(r.p999Us, 57.693);
    assert.equal(r.maxUs, 184.551);
  });

  it('percentiles come out ordered', () => {
    for (const text of [PP64_FULL_RTT, PP1K_LATENCY]) {
      const r = parseSockperf(text);
      const seq = [r.minUs, r.p25Us, r.p50Us, r.p75Us, r.p90Us, r.p99Us, r.p999Us, r.p9999Us, r.maxUs];
      for (let i = 1; i < seq.length; i++) assert.ok(seq[i]! >= seq[i - 1]!, `percentile ${i}`);
    }
  });

  it('refuses a run that got no replies (a plain echo server answers with the client bit set)', () => {
    assert.throws(() => parseSockperf(NO_REPLY), (e: unknown) => e instanceof ParseError && /no messages/.test(e.message));
  });

  it('refuses truncated output instead of inventing numbers', () => {
    const cut = PP64_FULL_RTT.slice(0, PP64_FULL_RTT.indexOf('percentile 99.000'));
    assert.throws(() => parseSockperf(cut), ParseError);
    assert.throws(() => parseSockperf(''), ParseError);
  });
});

describe('parseCurlWrite', () => {
  it('reads what curl -w CURL_WRITE_OUT printed', () => {
    assert.match(CURL_WRITE_OUT, /%\{size_download\}/);
    const c = parseCurlWrite('CPB 200 100000 0.007626 0.007387\n');
    assert.deepEqual(c, { httpCode: 200, bytes: 100000, seconds: 0.007626, startTransferSeconds: 0.007387 });
  });

  it('reads a failed connection as code 000 and throws on foreign output', () => {
    assert.equal(parseCurlWrite('CPB 000 0 0.000292 0.000000\n').httpCode, 0);
    assert.throws(() => parseCurlWrite('curl: (7) Failed to connect'), ParseError);
  });
});

describe('numbers', () => {
  it('gbitPerSec', () => {
    assert.equal(gbitPerSec(1_000_000_000, 8000), 1);
    assert.equal(gbitPerSec(125_000_000, 100), 10);
    assert.ok(Number.isNaN(gbitPerSec(1, 0)));
  });

  it('ratio is null, never Infinity or NaN, when a side is missing', () => {
    assert.equal(ratio(10, 4), 2.5);
    assert.equal(ratio(10, 0), null);
    assert.equal(ratio(undefined, 3), null);
    assert.equal(ratio(3, null), null);
    assert.equal(ratio(NaN, 3), null);
  });

  it('median of odd and even counts, unsorted input left alone', () => {
    const v = [3, 1, 2];
    assert.equal(median(v), 2);
    assert.deepEqual(v, [3, 1, 2]);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });

  it('formatting', () => {
    assert.equal(fmt(1.23456, 2), '1.23');
    assert.equal(fmt(null), 'n/a');
    assert.equal(fmt(Infinity), 'n/a');
    assert.equal(fmtRatio(0.5), '0.50x');
    assert.equal(fmtRatio(null), 'n/a');
    assert.equal(dateStamp(new Date(2025, 0, 5, 23, 59)), '2025-01-05');
  });

  it('markdownTable escapes pipes and pads short rows', () => {
    const t = markdownTable(['a', 'b'], [['x|y', 1], ['z']]);
    assert.equal(t, '| a | b |\n|---|---|\n| x\\|y | 1 |\n| z |  |');
  });
});

describe('slabinfo', () => {
  it('parses caches and skips headers', () => {
    const m = parseSlabinfo(SLABINFO_BEFORE);
    assert.equal(m.size, 3);
    assert.deepEqual(m.get('TCP'), { name: 'TCP', activeObjs: 39, numObjs: 39, objSize: 2368 });
    assert.equal(m.has('slabinfo'), false);
  });

  it('slabDelta sums active-object growth times object size over the named caches', () => {
    const d = slabDelta(parseSlabinfo(SLABINFO_BEFORE), parseSlabinfo(SLABINFO_AFTER), ['TCP', 'filp', 'absent']);
    assert.deepEqual(d.byCache, { TCP: { objects: 20, bytes: 20 * 2368 }, filp: { objects: 20, bytes: 20 * 192 } });
    assert.equal(d.bytes, 20 * 2368 + 20 * 192);
  });
});
