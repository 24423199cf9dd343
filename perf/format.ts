// Pure helpers of the benchmarks: parsing what the measuring tools print (sockperf, curl), turning
// numbers into ratios and summary tables. Nothing here runs a process or reads a clock, so every
// function is tested against real captured output (test/unit/bench-format.test.ts).

/** Latency percentiles of one sockperf ping-pong run, in microseconds. */
export interface SockperfLatency {
  /** "rtt" with --full-rtt, else "latency" (sockperf's one-way estimate: half the round trip). */
  kind: 'rtt' | 'latency';
  observations: number;
  avgUs: number;
  stdDevUs: number;
  minUs: number;
  p25Us: number;
  p50Us: number;
  p75Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  p9999Us: number;
  maxUs: number;
  /** From the "[Valid Duration]" line: the part after warm-up the percentiles cover. */
  validSeconds: number;
  sent: number;
  received: number;
  dropped: number;
  duplicated: number;
  outOfOrder: number;
}

export class ParseError extends Error {
  readonly code = 'ERR_CAPYBARA_BENCH_PARSE';
  constructor(message: string) {
    super(message);
    this.name = 'ParseError';
  }
}

// sockperf colours some lines with ANSI escapes ("\x1b[2;35m"); strip them before matching.
const ANSI = /\x1b\[[0-9;]*m/g;

function num(text: string, re: RegExp, what: string): number {
  const m = re.exec(text);
  if (!m || m[1] === undefined) throw new ParseError(`sockperf output has no ${what}`);
  const v = Number(m[1]);
  if (!Number.isFinite(v)) throw new ParseError(`sockperf output: ${what} "${m[1]}" is not a number`);
  return v;
}

/**
 * Parses the statistics sockperf ping-pong prints for server 0. Throws ParseError when the run produced
 * no statistics (server unreachable, no replies), so a broken run can never pass as a number.
 */
export function parseSockperf(output: string): SockperfLatency {
  const text = output.replace(ANSI, '');
  if (/No messages were received/i.test(text)) throw new ParseError('sockperf: no messages were received from the server');
  const pct = (p: string): number => num(text, new RegExp(`percentile\\s+${p.replace('.', '\\.')}\\s*=\\s*([0-9.]+)`), `percentile ${p}`);
  const avg = /====>\s*avg-(rtt|latency)=([0-9.]+)\s*\(std-dev=([0-9.]+)\)/.exec(text);
  if (!avg) throw new ParseError('sockperf output has no avg-rtt/avg-latency line');
  const valid = /\[Valid Duration\]\s*RunTime=([0-9.]+)\s*sec;\s*SentMessages=(\d+);\s*ReceivedMessages=(\d+)/.exec(text);
  if (!valid) throw new ParseError('sockperf output has no [Valid Duration] line');
  const res: SockperfLatency = {
    kind: avg[1] === 'rtt' ? 'rtt' : 'latency',
    observations: num(text, /Total\s+(\d+)\s+observations/, 'observation count'),
    avgUs: Number(avg[2]),
    stdDevUs: Number(avg[3]),
    minUs: num(text, /<MIN>\s*observation\s*=\s*([0-9.]+)/, 'MIN observation'),
    p25Us: pct('25.000'),
    p50Us: pct('50.000'),
    p75Us: pct('75.000'),
    p90Us: pct('90.000'),
    p99Us: pct('99.000'),
    p999Us: pct('99.900'),
    p9999Us: pct('99.990'),
    maxUs: num(text, /<MAX>\s*observation\s*=\s*([0-9.]+)/, 'MAX observation'),
    validSeconds: Number(valid[1]),
    sent: Number(valid[2]),
    received: Number(valid[3]),
    dropped: num(text, /#\s*dropped messages\s*=\s*(\d+)/, 'dropped count'),
    duplicated: num(text, /#\s*duplicated messages\s*=\s*(\d+)/, 'duplicated count'),
    outOfOrder: num(text, /#\s*out-of-order messages\s*=\s*(\d+)/, 'out-of-order count'),
  };
  if (res.observations <= 0) throw new ParseError('sockperf: zero observations');
  return res;
}

/** What curl -w CURL_WRITE_OUT prints, parsed. */
export interface CurlTransfer {
  httpCode: number;
  bytes: number;
  seconds: number;
  startTransferSeconds: number;
}

/** The -w format parseCurlWrite understands (one line, space separated). */
export const CURL_WRITE_OUT = 'CPB %{http_code} %{size_download} %{time_total} %{time_starttransfer}\\n';

export function parseCurlWrite(output: string): CurlTransfer {
  const m = /CPB (\d{3}) (\d+) ([0-9.]+) ([0-9.]+)/.exec(output);
  if (!m) throw new ParseError(`curl output has no transfer line: ${JSON.stringify(output.slice(0, 200))}`);
  return { httpCode: Number(m[1]), bytes: Number(m[2]), seconds: Number(m[3]), startTransferSeconds: Number(m[4]) };
}

/** Gigabits per second for bytes moved in ms milliseconds. */
export function gbitPerSec(bytes: number, ms: number): number {
  if (!(ms > 0)) return NaN;
  return (bytes * 8) / (ms / 1000) / 1e9;
}

/** a / b, or null when either is missing or b is zero (so a table shows "n/a", never Infinity). */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined) return null;
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Fixed decimals with "n/a" for null/NaN. */
export function fmt(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  return v.toFixed(digits);
}

/** "1.23x" or "n/a". */
export function fmtRatio(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(2)}x`;
}

/** A GitHub-flavoured markdown table; cells are escaped so a "|" cannot break the layout. */
export function markdownTable(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cell = (c: string | number): string => String(c).replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = [`| ${header.map(cell).join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${header.map((_, i) => cell(r[i] ?? '')).join(' | ')} |`);
  return lines.join('\n');
}

/** YYYY-MM-DD of a date in local time (the results folder name). */
export function dateStamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** One slab cache line of /proc/slabinfo: name, active objects, object size in bytes. */
export interface SlabCache {
  name: string;
  activeObjs: number;
  numObjs: number;
  objSize: number;
}

/** Parses /proc/slabinfo (version 2.x); lines that do not look like a cache are skipped. */
export function parseSlabinfo(text: string): Map<string, SlabCache> {
  const out = new Map<string, SlabCache>();
  for (const line of text.split('\n')) {
    if (line.startsWith('slabinfo') || line.startsWith('#')) continue;
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [name, active, total, size] = f as [string, string, string, string];
    if (!/^\d+$/.test(active) || !/^\d+$/.test(total) || !/^\d+$/.test(size)) continue;
    out.set(name, { name, activeObjs: Number(active), numObjs: Number(total), objSize: Number(size) });
  }
  return out;
}

/** Bytes held by the named caches in `after` beyond `before` (active objects x object size). */
export function slabDelta(before: Map<string, SlabCache>, after: Map<string, SlabCache>, names: readonly string[]): { bytes: number; byCache: Record<string, { objects: number; bytes: number }> } {
  let bytes = 0;
  const byCache: Record<string, { objects: number; bytes: number }> = {};
  for (const n of names) {
    const a = after.get(n);
    if (!a) continue;
    const objects = a.activeObjs - (before.get(n)?.activeObjs ?? 0);
    byCache[n] = { objects, bytes: objects * a.objSize };
    bytes += objects * a.objSize;
  }
  return { bytes, byCache };
}

/**
 * The per-message round trips (µs) of a sockperf --full-log CSV ("packet, txTime(sec), rxTime(sec),
 * rtt(usec)" rows). Throws ParseError when there are none.
 */
export function parseSockperfFullLog(csv: string): number[] {
  const out: number[] = [];
  for (const line of csv.split('\n')) {
    const m = /^\s*\d+,\s*[0-9.]+,\s*[0-9.]+,\s*([0-9.]+)\s*$/.exec(line);
    if (m) out.push(Number(m[1]));
  }
  if (out.length === 0) throw new ParseError('sockperf full log has no samples');
  return out;
}
