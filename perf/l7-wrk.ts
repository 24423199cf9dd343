// wrk against the L7 app, shared by the l7 benchmark (perf/l7.ts) and its interop test: a Lua script that
// cycles every connection through a list of object paths (so ownership, and with DSR the connection's
// host, changes from one request to the next), and a parser for wrk's report with --latency.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../dataplane/exec.js';

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  /** Transfer/sec as wrk reports it, in bytes. */
  bytesPerSec: number;
  p50Ms: number | null;
  p99Ms: number | null;
  errors: { connect: number; read: number; write: number; timeout: number; non2xx: number };
}

export class WrkError extends Error {
  readonly code = 'ERR_L7_WRK';
}

/** A wrk Lua script: request k of a connection asks for paths[k mod n]. */
export function wrkScript(paths: readonly string[]): string {
  for (const p of paths) if (!/^\/[A-Za-z0-9._/-]+$/.test(p)) throw new WrkError(`path "${p}" is not safe to put in a script`);
  return [
    `local paths = { ${paths.map((p) => `"${p}"`).join(', ')} }`,
    'local i = 0',
    'request = function()',
    '  i = i + 1',
    '  return wrk.format("GET", paths[(i % #paths) + 1])',
    'end',
    '',
  ].join('\n');
}

function unit(v: number, u: string, table: Record<string, number>): number {
  const f = table[u.toLowerCase()];
  if (f === undefined) throw new WrkError(`unknown unit "${u}"`);
  return v * f;
}

const TIME: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };
const SIZE: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** Parses `wrk --latency` output. */
export function parseWrk(out: string): WrkResult {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const tr = /Transfer\/sec:\s+([\d.]+)([KMG]?B)/.exec(out);
  if (!req || !rps) throw new WrkError(`wrk printed no summary:\n${out.trim().slice(0, 2000)}`);
  const pct = (p: string): number | null => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? unit(Number(m[1]), m[2]!, TIME) : null;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(req[1]),
    seconds: unit(Number(req[2]), req[3]!, TIME) / 1000,
    rps: Number(rps[1]),
    bytesPerSec: tr ? unit(Number(tr[1]), tr[2]!, SIZE) : 0,
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    errors: {
      connect: Number(sock?.[1] ?? 0), read: Number(sock?.[2] ?? 0), write: Number(sock?.[3] ?? 0), timeout: Number(sock?.[4] ?? 0),
      non2xx: Number(non2xx?.[1] ?? 0),
    },
  };
}

export interface WrkRun {
  ns: string;
  /** http://HOST[:PORT] */
  base: string;
  paths: readonly string[];
  connections: number;
  threads?: number;
  seconds: number;
  /** Per-request timeout (wrk --timeout), seconds. */
  timeoutS?: number;
}

/** Runs wrk in namespace ns; throws WrkError when it fails or prints no summary. */
export async function runWrk(o: WrkRun): Promise<WrkResult & { output: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'capy-wrk-'));
  const script = join(dir, 'paths.lua');
  try {
    writeFileSync(script, wrkScript(o.paths));
    const args = ['netns', 'exec', o.ns, 'wrk', '-t', String(o.threads ?? 1), '-c', String(o.connections), '-d', `${o.seconds}s`,
      '--timeout', `${o.timeoutS ?? 5}s`, '--latency', '-s', script, `${o.base}${o.paths[0]}`];
    const r = await run('ip', args, { timeoutMs: (o.seconds + 20) * 1000 });
    if (r.code !== 0) throw new WrkError(`wrk failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    return { ...parseWrk(r.stdout), output: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
