// The `store` namespace of the testbed: one real redis-server that the Redis front ends on hostA and hostB
// (`capybara serve redis --store 10.77.3.2:6379`) reach over the kernel network, through the lb router:
//
//   lb [lb-st 10.77.3.1] ── [st0 10.77.3.2] store   (redis-server on 10.77.3.2:6379)
//
// It is added to a testbed that is up (the hosts' default route already goes through lb) and removed by
// stopStore() or `capybara testbed down`. redis-server runs daemonized inside the namespace, without
// persistence, so it outlives the process that started it until the store is stopped.
import { existsSync } from 'node:fs';
import { NetnsError } from '../runtime/errors.js';
import { run, runOk } from './exec.js';
import { PLAN, listNamespaces, status } from './testbed.js';

export const STORE = Object.freeze({
  ns: 'store', iface: 'st0', peer: 'lb-st', ip: '10.77.3.2', gateway: '10.77.3.1', prefixLength: 24, port: 6379,
});

export interface StoreInfo {
  ns: string;
  host: string;
  port: number;
  /** HOST:PORT, as `serve redis --store` takes it. */
  address: string;
}

const INFO: StoreInfo = { ns: STORE.ns, host: STORE.ip, port: STORE.port, address: `${STORE.ip}:${STORE.port}` };

async function ipIn(ns: string, ...args: string[]): Promise<void> {
  await runOk('ip', ['-n', ns, ...args], { timeoutMs: 10_000 });
}

/** PONG from the store, asked from inside hostA (so the path the front ends use works). */
export async function storeReady(): Promise<boolean> {
  const r = await run('ip', ['netns', 'exec', PLAN.hosts.hostA.ns, 'redis-cli', '-h', STORE.ip, '-p', String(STORE.port), 'ping'], { timeoutMs: 3000 });
  return r.code === 0 && r.stdout.trim() === 'PONG';
}

/**
 * Makes the store namespace and starts redis-server in it (idempotent: a running store is left as it
 * is). The testbed must be up.
 */
export async function startStore(): Promise<StoreInfo> {
  if (!(await status()).up) throw new NetnsError('the testbed is not up: run capybara testbed up first');
  if (!existsSync('/usr/bin/redis-server') && (await run('sh', ['-c', 'command -v redis-server'])).code !== 0) {
    throw new NetnsError('redis-server is not installed (apt-get install redis-server)');
  }
  if ((await listNamespaces()).has(STORE.ns) && (await storeReady())) return INFO;
  await stopStore();
  try {
    await runOk('ip', ['netns', 'add', STORE.ns], { timeoutMs: 10_000 });
    await ipIn(STORE.ns, 'link', 'set', 'dev', 'lo', 'up');
    await runOk('ip', ['link', 'add', 'name', STORE.iface, 'netns', STORE.ns, 'type', 'veth', 'peer', 'name', STORE.peer, 'netns', PLAN.lb.ns], { timeoutMs: 10_000 });
    await ipIn(STORE.ns, 'addr', 'add', `${STORE.ip}/${STORE.prefixLength}`, 'dev', STORE.iface);
    await ipIn(PLAN.lb.ns, 'addr', 'add', `${STORE.gateway}/${STORE.prefixLength}`, 'dev', STORE.peer);
    await ipIn(STORE.ns, 'link', 'set', 'dev', STORE.iface, 'up');
    await ipIn(PLAN.lb.ns, 'link', 'set', 'dev', STORE.peer, 'up');
    await ipIn(STORE.ns, 'route', 'replace', 'default', 'via', STORE.gateway, 'dev', STORE.iface);
    await runOk('ip', ['netns', 'exec', STORE.ns, 'redis-server', '--bind', STORE.ip, '--port', String(STORE.port),
      '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--daemonize', 'yes', '--logfile', '', '--maxclients', '10000'], { timeoutMs: 10_000 });
    const deadline = Date.now() + 10_000;
    while (!(await storeReady())) {
      if (Date.now() > deadline) throw new NetnsError(`redis-server in ${STORE.ns} did not answer PING from ${PLAN.hosts.hostA.ns}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stopStore().catch(() => {});
    throw err;
  }
  return INFO;
}

/** Stops redis-server and removes the namespace (and its veth); nothing happens when there is none. */
export async function stopStore(): Promise<void> {
  if (!(await listNamespaces()).has(STORE.ns)) return;
  const r = await run('ip', ['netns', 'pids', STORE.ns], { timeoutMs: 5000 });
  const pids = r.stdout.split(/\s+/).map(Number).filter((p) => Number.isInteger(p) && p > 1 && p !== process.pid);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL'); // no persistence: nothing to save
    } catch {
      // gone already
    }
  }
  // The lb end first: deleting it takes the pair down now, not when the namespace is finally freed.
  await run('ip', ['-n', PLAN.lb.ns, 'link', 'del', STORE.peer], { timeoutMs: 5000 });
  await runOk('ip', ['netns', 'del', STORE.ns], { timeoutMs: 10_000 });
}
