// TLS options as Node's `tls` module takes them, validated and turned into native secure contexts
// (native/addon/tls_wrap.cc). The handshake runs in OpenSSL inside the engine; the records are the
// engine's own (native/tls), which is what lets a TLS connection migrate. Per-connection driving is in
// tls-flow.ts; this file knows only options and contexts.
import { readFileSync } from 'node:fs';
import { ConfigError, TlsError } from './errors.js';
import { loadBinding, type NativeSecureContext, type SecureContextOptions } from './native.js';

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';
type Pem = string | Buffer | (string | Buffer)[];

/** The options of `stack.createServer({ tls })`, as tls.createServer takes them. */
export interface TlsServerOptions {
  key: Pem;
  cert: Pem;
  /** Trust anchors (only used to complete the chain here: client certificates are not requested). */
  ca?: Pem;
  ALPNProtocols?: string[] | Uint8Array;
  /** Asked for each handshake with the client's SNI; answers with a context (or options) or null for the default. */
  SNICallback?: (servername: string, cb: (err: Error | null, ctx?: SecureContext | TlsServerOptions | null) => void) => void;
  minVersion?: TlsVersion;
  maxVersion?: TlsVersion;
  /** OpenSSL cipher string; names starting with TLS_ are TLS 1.3 suites, as in Node. */
  ciphers?: string;
  /**
   * Not in Node: after this many plaintext bytes sent on a TLS 1.3 connection the server sends a
   * KeyUpdate (asking the client to update too), so long-lived connections rotate their keys.
   */
  keyUpdateBytes?: number;
  /**
   * Milliseconds from accept until the handshake must be done (an SNICallback's wait included), else the
   * connection is destroyed and 'tlsClientError' gets ERR_TLS_HANDSHAKE_TIMEOUT, as in Node. Default
   * 120000 (Node's); 0 = no limit. Bounds what a client that never finishes its ClientHello can hold.
   */
  handshakeTimeout?: number;
}

/** The options of `stack.connect({ tls })`, as tls.connect takes them. */
export interface TlsConnectOptions {
  /** SNI and the name the certificate must match (default: the host unless it is an IP address). */
  servername?: string;
  ca?: Pem;
  /** Refuse a server whose certificate does not verify (default true, as in Node). */
  rejectUnauthorized?: boolean;
  ALPNProtocols?: string[] | Uint8Array;
  minVersion?: TlsVersion;
  maxVersion?: TlsVersion;
  ciphers?: string;
  /** A context made once with createSecureContext(..., 'client'), shared by many connections. */
  secureContext?: SecureContext;
  /**
   * Not in Node's tls.connect: milliseconds from TCP established until the handshake must be done, else
   * 'error' with ERR_TLS_HANDSHAKE_TIMEOUT and the connection is destroyed. Default 0 = no limit.
   */
  handshakeTimeout?: number;
}

const VERSIONS: Record<TlsVersion, number> = { 'TLSv1.2': 0x0303, 'TLSv1.3': 0x0304 };

/** A server's handshakeTimeout when none is given: Node's tls.createServer default. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 120_000;
/** setTimeout's limit: a longer delay would fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** tls.handshakeTimeout checked: an integer number of ms, 0 for none; `dflt` when not given. */
export function handshakeTimeoutMs(v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_TIMER_MS) {
    throw new ConfigError(`tls.handshakeTimeout must be an integer number of ms in 0..${MAX_TIMER_MS} (got ${String(v)})`);
  }
  return v;
}

/** A native SSL_CTX with the options it was made from (the runtime asks it for the SNI flag). */
export class SecureContext {
  readonly native: NativeSecureContext;
  readonly server: boolean;
  readonly sni: boolean;
  /** @internal Use createSecureContext. */
  constructor(native: NativeSecureContext, server: boolean, sni: boolean) {
    this.native = native;
    this.server = server;
    this.sni = sni;
  }
}

function pem(v: Pem | undefined, field: string): Buffer | undefined {
  if (v === undefined) return undefined;
  const parts = Array.isArray(v) ? v : [v];
  const bufs: Buffer[] = [];
  for (const p of parts) {
    if (typeof p === 'string') bufs.push(Buffer.from(p.endsWith('\n') ? p : `${p}\n`, 'utf8'));
    else if (Buffer.isBuffer(p) || (p as unknown) instanceof Uint8Array) bufs.push(Buffer.from(p));
    else throw new ConfigError(`tls.${field} must be a PEM string or Buffer (or an array of them)`);
  }
  if (bufs.length === 0) throw new ConfigError(`tls.${field} is empty`);
  return Buffer.concat(bufs);
}

function version(v: unknown, field: string): number {
  if (v === undefined) return 0;
  if (typeof v !== 'string' || !(v in VERSIONS)) throw new ConfigError(`tls.${field} must be "TLSv1.2" or "TLSv1.3" (got ${String(v)})`);
  return VERSIONS[v as TlsVersion];
}

/** ALPN names to the wire format (each prefixed by its length). */
export function alpnWire(v: string[] | Uint8Array | undefined): Buffer | undefined {
  if (v === undefined) return undefined;
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (!Array.isArray(v)) throw new ConfigError('tls.ALPNProtocols must be an array of strings');
  const parts: Buffer[] = [];
  for (const name of v) {
    const b = Buffer.from(String(name), 'latin1');
    if (b.length < 1 || b.length > 255) throw new ConfigError(`tls.ALPNProtocols: "${String(name)}" is not 1..255 bytes`);
    parts.push(Buffer.from([b.length]), b);
  }
  return parts.length ? Buffer.concat(parts) : undefined;
}

/** Node's single cipher string split into OpenSSL's TLS 1.2 list and TLS 1.3 suites. */
export function splitCiphers(ciphers: string | undefined): { ciphers?: string; ciphersuites?: string } {
  if (ciphers === undefined) return {};
  if (typeof ciphers !== 'string' || ciphers.trim() === '') throw new ConfigError('tls.ciphers must be a non-empty string');
  const names = ciphers.split(':').map((s) => s.trim()).filter((s) => s !== '');
  const v13 = names.filter((n) => n.startsWith('TLS_'));
  const v12 = names.filter((n) => !n.startsWith('TLS_'));
  // A part that is not named keeps the engine's defaults (OpenSSL refuses an empty list).
  return { ciphers: v12.length ? v12.join(':') : undefined, ciphersuites: v13.length ? v13.join(':') : undefined };
}

function nativeContext(opts: SecureContextOptions): NativeSecureContext {
  const b = loadBinding();
  if (!b.SecureContext) throw new ConfigError('this build of the addon has no TLS (SecureContext missing)');
  try {
    return new b.SecureContext(opts);
  } catch (err) {
    const e = err as { message?: unknown };
    throw new TlsError('ERR_TLS_CONTEXT', `cannot make a TLS context: ${typeof e?.message === 'string' ? e.message : String(err)}`, { cause: err });
  }
}

/** Like tls.createSecureContext: a context to share between connections or hand back from SNICallback. */
export function createSecureContext(opts: TlsServerOptions | TlsConnectOptions, role: 'server' | 'client' = 'server'): SecureContext {
  if (typeof opts !== 'object' || opts === null) throw new ConfigError('tls options must be an object');
  const o = opts as Partial<TlsServerOptions> & Partial<TlsConnectOptions>;
  const server = role === 'server';
  const minVersion = version(o.minVersion, 'minVersion');
  const maxVersion = version(o.maxVersion, 'maxVersion');
  if (minVersion && maxVersion && minVersion > maxVersion) throw new ConfigError('tls.minVersion is above tls.maxVersion');
  if (server && (o.key === undefined || o.cert === undefined)) throw new ConfigError('a TLS server needs tls.key and tls.cert');
  if (o.SNICallback !== undefined && typeof o.SNICallback !== 'function') throw new ConfigError('tls.SNICallback must be a function');
  if (o.keyUpdateBytes !== undefined && (!Number.isInteger(o.keyUpdateBytes) || o.keyUpdateBytes < 1)) {
    throw new ConfigError(`tls.keyUpdateBytes must be a positive integer (got ${String(o.keyUpdateBytes)})`);
  }
  handshakeTimeoutMs(o.handshakeTimeout, 0);
  const key = pem(o.key, 'key');
  const native = nativeContext({
    server,
    cert: pem(o.cert, 'cert'),
    key,
    ca: pem(o.ca, 'ca'),
    verifyPeer: !server && o.rejectUnauthorized !== false,
    alpn: alpnWire(o.ALPNProtocols),
    minVersion,
    maxVersion,
    ...splitCiphers(o.ciphers),
    sniCallback: server && typeof o.SNICallback === 'function',
  });
  key?.fill(0);
  return new SecureContext(native, server, server && typeof o.SNICallback === 'function');
}

/** Reads the PEM files of `capybara serve --tls-cert F --tls-key F`. */
export function readTlsFiles(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const read = (f: string, what: string) => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new ConfigError(`cannot read the TLS ${what} ${f}: ${(err as Error).message}`);
    }
  };
  return { cert: read(certFile, 'certificate'), key: read(keyFile, 'key') };
}

/** The SNI a client sends: the servername option, else the host unless it is an IP address (as Node). */
export function defaultServername(host: string, servername: string | undefined): string | null {
  if (servername !== undefined) return servername === '' ? null : servername;
  return /^[0-9.]+$/.test(host) || host.includes(':') ? null : host;
}
