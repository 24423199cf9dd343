// What a result was measured on: recorded in every result.json so numbers from different machines are
// never compared by accident.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, release, totalmem } from 'node:os';

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  kernel: string;
  node: string;
  memoryBytes: number;
  hostname: string;
}

export function machineInfo(): MachineInfo {
  const c = cpus();
  let hostname = '';
  try {
    hostname = readFileSync('/proc/sys/kernel/hostname', 'utf8').trim();
  } catch {
    // not Linux; leave it empty
  }
  return {
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    kernel: release(),
    node: process.version,
    memoryBytes: totalmem(),
    hostname,
  };
}

export interface Versions {
  node: string;
  capybara: string;
  /** git commit of the checkout, when it is one (read only). */
  commit: string | null;
  kernel: string;
  sockperf: string | null;
  wrk: string | null;
  iperf3: string | null;
}

function firstLine(cmd: string, args: string[], re: RegExp): string | null {
  try {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
    const m = re.exec(`${r.stdout ?? ''}\n${r.stderr ?? ''}`);
    return m ? m[1]!.trim() : null;
  } catch {
    return null;
  }
}

/** Versions of everything a result depends on (tools that are missing are null). */
export function versions(root: string): Versions {
  let capybara = 'unknown';
  try {
    capybara = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    // leave unknown
  }
  return {
    node: process.version,
    capybara,
    commit: firstLine('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], /^([0-9a-f]{6,40})/m),
    kernel: release(),
    sockperf: firstLine('sockperf', ['--version'], /version\s+(\S+)/),
    wrk: firstLine('wrk', ['-v'], /^wrk\s+(\S+)/m),
    iperf3: firstLine('iperf3', ['--version'], /^iperf\s+(\S+)/m),
  };
}
