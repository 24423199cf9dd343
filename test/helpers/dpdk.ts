// Fixtures for the DPDK interop tests: skip reasons, hugepage counts, and the testbed with chosen host
// backends whose teardown puts every host back on xdp: (other test files expect it) or removes the testbed.
import { readFileSync } from 'node:fs';
import { dpdkEngineBuilt } from '../../dataplane/dpdk-setup.js';
import type { BackendMap } from '../../dataplane/dpdk-testbed.js';
import { down, status, up, type HostName } from '../../dataplane/testbed.js';
import { addonSkip, netnsSkip } from './env.js';

/** undefined when DPDK tests can run here, else why not. */
export function dpdkSkip(): string | undefined {
  return netnsSkip() ?? addonSkip() ?? (dpdkEngineBuilt() ? undefined : 'engine built without DPDK (install libdpdk-dev, rebuild)');
}

function meminfo(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

export const freeHugepages = (): number => meminfo('HugePages_Free');
export const totalHugepages = (): number => meminfo('HugePages_Total');

/** The testbed with these host backends (and the XDP balancer with lb: 'xdp'). */
export async function useDpdkTestbed(backend: BackendMap<HostName>, lb?: 'xdp'): Promise<() => Promise<void>> {
  const wasUp = (await status()).up;
  await up({ backend, ...(lb ? { lb } : {}) });
  return async () => {
    if (!wasUp) await down();
    else await up({ backend: { hostA: 'xdp', hostB: 'xdp' } });
  };
}
