// Throwaway certificates for `capybara demo --tls` and the TLS tests, made with the `openssl` CLI (Node
// cannot issue X.509 certificates itself). A small CA signs a leaf for the testbed's addresses, so real
// clients (curl, openssl s_client, Node) verify the server with --cacert / ca and no -k.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../dataplane/exec.js';
import { CapybaraError } from './errors.js';

export type KeyType = 'rsa' | 'ec';

export interface CertSet {
  dir: string;
  caFile: string;
  caKeyFile: string;
  certFile: string;
  keyFile: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** Removes the directory (the key with it; an issuer's CA stays with the issuer). */
  cleanup(): void;
}

export interface CertOptions {
  /** Key type of the leaf (the CA is always EC P-256). */
  type?: KeyType;
  /** Subject alternative names of the leaf, e.g. ["IP:10.77.9.1", "DNS:capybara.test"]. */
  san?: string[];
  cn?: string;
  /** Sign the leaf with this set's CA instead of making a new one (one CA for several leaves). */
  issuer?: CertSet;
}

async function openssl(args: string[]): Promise<void> {
  let r;
  try {
    r = await run('openssl', args, { timeoutMs: 30_000 });
  } catch (err) {
    throw new CapybaraError('ERR_CAPYBARA_OPENSSL', `openssl ${args[0]} could not run: ${(err as Error).message}`, { cause: err });
  }
  if (r.code !== 0) throw new CapybaraError('ERR_CAPYBARA_OPENSSL', `openssl ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
}

/** A CA and a leaf signed by it, in a fresh temporary directory. */
export async function makeCerts(opts: CertOptions = {}): Promise<CertSet> {
  const dir = mkdtempSync(join(tmpdir(), 'capy-tls-'));
  const san = opts.san ?? ['DNS:capybara.test', 'IP:10.77.9.1', 'IP:10.77.1.10', 'IP:10.77.2.10'];
  const leafKey = opts.type === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', 'rsa:2048'];
  const f = (name: string) => join(dir, name);
  const caFile = opts.issuer?.caFile ?? f('ca.pem');
  const caKeyFile = opts.issuer?.caKeyFile ?? f('ca.key');
  try {
    if (!opts.issuer) {
      await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKeyFile, '-out', caFile,
        '-days', '2', '-subj', '/CN=capybara test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    }
    await openssl(['req', '-new', ...leafKey, '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${opts.cn ?? 'capybara.test'}`]);
    writeFileSync(f('ext.cnf'), `subjectAltName=${san.join(',')}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    await openssl(['x509', '-req', '-in', f('server.csr'), '-CA', caFile, '-CAkey', caKeyFile, '-set_serial', String(Date.now()), '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf')]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const certFile = f('server.pem');
  const keyFile = f('server.key');
  return {
    dir, caFile, caKeyFile, certFile, keyFile,
    ca: readFileSync(caFile), cert: readFileSync(certFile), key: readFileSync(keyFile),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
