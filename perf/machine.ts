// What a result was measured on: recorded in every result.json so numbers from different machines are
// never compared by accident.
import { readFileSync } from 'node:fs';
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
