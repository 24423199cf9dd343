// Fixtures for the TLS interop tests: certificates made with the openssl CLI, TLS servers on both
// testbed hosts, a single migration of the client's flow, and
// `openssl s_client` in the client namespace driven line by line. Every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before } from 'node:test';
import { stopProcess } from '../../dataplane/exec.js';
import { PLAN } from '../../dataplane/testbed.js';
import { makeCerts, type CertSet, type KeyType } from '../../runtime/tls-cert.js';
import { clientFlows, migrate, migrationLoop, useLbTestbed, type Host } from './migration.js';
import { startServe, type Running } from './testbed.js';
import { delay } from './wait.js';

export { makeCerts, migrationLoop, type CertSet };

/** The name the test certificates carry besides the testbed's addresses. */
export const SERVERNAME = 'capybara.test';

/** `capybara serve APP --on HOST` over TLS with the given certificate. */
export function startTlsServe(app: string, host: Host, port: number, certs: CertSet, extra: string[] = []): Promise<Running> {
  return startServe(app, host, port, host, 30_000, ['--tls-cert', certs.certFile, '--tls-key', certs.keyFile, ...extra]);
}

/**
 * For a describe block: the testbed with the balancer, an RSA leaf, and `serve APP --on H` over TLS on `port`
 * for each of `hosts` (hostA alone by default), all torn down after the block. The accessors are valid
 * inside its tests; server() is the first host's.
 */
export function useTlsServer(app: string, port: number, extra: string[] = [], hosts: readonly Host[] = ['hostA']): { server: () => Running; certs: () => CertSet } {
  const servers: Running[] = [];
  let certs: CertSet | undefined;
  let teardown: (() => Promise<void>) | undefined;
  before(async () => {
    teardown = await useLbTestbed();
    certs = await certsFor('rsa');
    for (const h of hosts) servers.push(await startTlsServe(app, h, port, certs, extra));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await teardown?.();
    certs?.cleanup();
  });
  return { server: () => servers[0]!, certs: () => certs! };
}

/** A leaf for the testbed's names; with issuer, signed by that set's CA (so one CAfile verifies both). */
export async function certsFor(type: KeyType = 'rsa', issuer?: CertSet): Promise<CertSet> {
  return makeCerts({ type, issuer, san: [`DNS:${SERVERNAME}`, `IP:${PLAN.vip}`, `IP:${PLAN.hosts.hostA.ip}`, `IP:${PLAN.hosts.hostB.ip}`] });
}

/** Migrates the client's flow on `port` once (from whichever host owns it); true when it moved. */
export async function migrateOnce(port: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    for (const h of ['hostA', 'hostB'] as const) {
      if ((await clientFlows(h, port)).some((f) => f.state === 'ESTABLISHED' && !f.frozen)) {
        const r = await migrate(h, 'all');
        if (r.failed > 0) throw new Error(`migration from ${h} failed: ${JSON.stringify(r.errors)}`);
        if (r.migrated >= 1) {
          await delay(60); // the source's grace for stragglers
          return true;
        }
      }
    }
    await delay(10);
  }
  return false;
}

// ---- openssl s_client -------------------------------------------------------------------------

export interface SClient {
  child: ChildProcess;
  /** Everything s_client printed on stdout (peer data, -msg traces) and stderr (-state, errors). */
  stdout(): string;
  stderr(): string;
  /** Waits until s_client has printed at least n characters on stdout in total. */
  waitForOutput(n: number, timeoutMs: number): Promise<void>;
  write(s: string): void;
  /** Waits until stdout+stderr match re `count` times in total. */
  waitFor(re: RegExp, timeoutMs: number, count?: number): Promise<void>;
  /** Waits for the process to exit; its code. */
  exited(timeoutMs: number): Promise<number | null>;
  kill(): Promise<void>;
}

/** `openssl s_client ARGS` in the client namespace with a pipe on stdin (commands k/K/Q enabled). */
export function sClient(args: string[]): SClient {
  const child = spawn('ip', ['netns', 'exec', PLAN.client.ns, 'openssl', 's_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('latin1').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('latin1').on('data', (d: string) => (err += d));
  child.stdin!.on('error', () => {});
  let code: number | null | undefined;
  const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve((code = c))));
  const matches = (re: RegExp) => (out + err).match(new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`))?.length ?? 0;
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    write: (s) => child.stdin!.write(s),
    async waitForOutput(n, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (out.length < n) {
        if (code !== undefined || Date.now() > deadline) throw new Error(`s_client: ${out.length} of ${n} characters of output (exit ${String(code)})`);
        await delay(10);
      }
    },
    async waitFor(re, timeoutMs, count = 1) {
      const deadline = Date.now() + timeoutMs;
      while (matches(re) < count) {
        if (code !== undefined) throw new Error(`s_client exited (${code}) before ${re} x${count}:\n${out.slice(-3000)}\n${err.slice(-3000)}`);
        if (Date.now() > deadline) throw new Error(`s_client: no ${re} x${count} within ${timeoutMs} ms (${matches(re)} seen):\n${out.slice(-3000)}\n${err.slice(-3000)}`);
        await delay(10);
      }
    },
    async exited(timeoutMs) {
      const t = delay(timeoutMs).then(() => 'timeout' as const);
      const r = await Promise.race([exit, t]);
      if (r === 'timeout') throw new Error(`s_client still running after ${timeoutMs} ms:\n${out.slice(-2000)}\n${err.slice(-2000)}`);
      return r;
    },
    kill: () => stopProcess(child, 'SIGKILL', 1000),
  };
}

/** s_client arguments for one protocol version and suite (TLS 1.3 suites or a TLS 1.2 cipher). */
export function suiteArgs(version: '1.2' | '1.3', suite: string): string[] {
  return version === '1.3' ? ['-tls1_3', '-ciphersuites', suite] : ['-tls1_2', '-cipher', suite];
}
