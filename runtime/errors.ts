// Typed errors with stable `code` strings (undici style). Errors from the engine arrive as negative
// errno numbers; they are turned into SystemError objects whose code is the errno name, as Node's own
// net module does, so callers can switch on `err.code === 'ECONNRESET'` for both.
import { constants as osConstants } from 'node:os';

export class CapybaraError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Invalid options passed to Stack.open, createServer, listen, connect. */
export class ConfigError extends CapybaraError {
  constructor(message: string) {
    super('ERR_CAPYBARA_INVALID_CONFIG', message);
  }
}

/** Wrong command-line arguments: the CLI prints the message and exits with status 2. */
export class UsageError extends CapybaraError {
  constructor(message: string) {
    super('ERR_CAPYBARA_USAGE', message);
  }
}

/** Network namespaces cannot be made here (not root, or no `ip netns`). */
export class NetnsError extends CapybaraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CAPYBARA_NO_NETNS', message, options);
  }
}

/** The native addon is not built or cannot be loaded. */
export class AddonError extends CapybaraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CAPYBARA_NO_ADDON', message, options);
  }
}

/** Operation on a Stack that has been closed. */
export class StackClosedError extends CapybaraError {
  constructor() {
    super('ERR_CAPYBARA_STACK_CLOSED', 'the stack has been closed');
  }
}

/** The admin endpoint of a runtime could not be reached or answered with an error. */
export class AdminError extends CapybaraError {}

/** A command run on behalf of the runtime (ip, ethtool, mount) failed. */
export class CommandError extends CapybaraError {
  readonly command: string;
  readonly stderr: string;
  readonly exitCode: number | null;
  constructor(command: string, exitCode: number | null, stderr: string) {
    const detail = stderr.trim().split('\n').slice(-3).join(' / ');
    super('ERR_CAPYBARA_COMMAND', `${command} failed (exit ${exitCode ?? 'signal'})${detail ? `: ${detail}` : ''}`);
    this.command = command;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

/** An errno-valued failure from the engine (code is the errno name: 'ECONNRESET', 'EPIPE', ...). */
export class SystemError extends CapybaraError {
  readonly errno: number;   // negative, as Node's own system errors are
  readonly syscall: string;
  constructor(errno: number, syscall: string, message?: string) {
    const code = errnoName(errno);
    super(code, message ?? `${syscall} ${code}: ${errnoDescription(code)}`);
    this.errno = -Math.abs(errno);
    this.syscall = syscall;
  }
}

/** The device could not be opened (code ENODEV, EPERM, EINVAL, ... with a sentence saying why). */
export class DeviceError extends SystemError {
  readonly device: string;
  constructor(errno: number, device: string, message: string) {
    super(errno, 'open', message);
    this.device = device;
  }
}

// Names preferred when two share a number (EAGAIN/EWOULDBLOCK, EOPNOTSUPP/ENOTSUP, EDEADLK/EDEADLOCK).
const PREFERRED = ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'];
const NAME_BY_NUMBER = new Map<number, string>();
for (const name of PREFERRED) {
  const n = (osConstants.errno as Record<string, number>)[name];
  if (n !== undefined) NAME_BY_NUMBER.set(n, name);
}
for (const [name, n] of Object.entries(osConstants.errno as Record<string, number>)) {
  if (!NAME_BY_NUMBER.has(n)) NAME_BY_NUMBER.set(n, name);
}

/** Errno number of a name, e.g. errnoNumber('EAGAIN') === 11 on Linux. */
export function errnoNumber(name: string): number {
  const n = (osConstants.errno as Record<string, number>)[name];
  if (n === undefined) throw new RangeError(`unknown errno name ${name}`);
  return n;
}

export const EAGAIN = errnoNumber('EAGAIN');
export const EPIPE = errnoNumber('EPIPE');
export const ENOTCONN = errnoNumber('ENOTCONN');

/** Name of an errno value given as positive or negative number; 'EUNKNOWN_<n>' when not known. */
export function errnoName(errno: number): string {
  return NAME_BY_NUMBER.get(Math.abs(errno)) ?? `EUNKNOWN_${Math.abs(errno)}`;
}

const DESCRIPTIONS: Record<string, string> = {
  EAGAIN: 'resource temporarily unavailable',
  ECONNRESET: 'connection reset by peer',
  ETIMEDOUT: 'connection timed out',
  ECONNREFUSED: 'connection refused',
  EPIPE: 'broken pipe (write after shutdown)',
  ENOTCONN: 'not connected',
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available',
  ENODEV: 'no such device',
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  ENOENT: 'no such flow or file',
  EINVAL: 'invalid argument',
  ENOMEM: 'out of memory',
  ENOBUFS: 'no buffer space available',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNABORTED: 'connection aborted',
  EMFILE: 'too many flows',
  EISCONN: 'already connected',
};

export function errnoDescription(code: string): string {
  return DESCRIPTIONS[code] ?? 'system error';
}

/** Turns a negative errno returned by the engine into a SystemError. */
export function fromErrno(errno: number, syscall: string, message?: string): SystemError {
  return new SystemError(errno, syscall, message);
}

/** Error thrown by the addon (has .code / .message) to a typed error. */
export function fromAddonError(err: unknown, syscall: string): CapybaraError {
  if (err instanceof CapybaraError) return err;
  const e = err as { code?: unknown; message?: unknown; errno?: unknown };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (code && /^E[A-Z0-9]+$/.test(code)) {
    const n = (osConstants.errno as Record<string, number>)[code];
    if (n !== undefined) return new SystemError(n, syscall, `${syscall} ${code}: ${message}`);
  }
  if (typeof e?.errno === 'number' && e.errno !== 0) return new SystemError(e.errno, syscall, `${syscall}: ${message}`);
  return new CapybaraError(code ?? 'ERR_CAPYBARA_NATIVE', `${syscall}: ${message}`, { cause: err });
}

/** Maps an engine open failure to a DeviceError whose message says what to do about it. */
export function deviceOpenError(err: unknown, device: string): CapybaraError {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  const detail = typeof e?.message === 'string' ? e.message : String(err);
  const n = (osConstants.errno as Record<string, number>)[code];
  if (n === undefined) return fromAddonError(err, 'open');
  const iface = device.replace(/^[a-z]+:/, '').replace(/[@?].*$/, '');
  let what: string;
  switch (code) {
    case 'ENODEV':
      what = device.startsWith('xdp:') ? `interface ${iface} missing` : `device ${device} not available`;
      break;
    case 'EPERM':
    case 'EACCES':
      what = device.startsWith('xdp:') ? 'not root for xdp (AF_XDP and XDP programs need CAP_NET_ADMIN/CAP_BPF)' : 'permission denied';
      break;
    case 'EBUSY':
      what = `device ${device} is busy (another program is attached)`;
      break;
    case 'EINVAL':
      what = `invalid device or options for ${device}`;
      break;
    default:
      what = `cannot open ${device}`;
  }
  return new DeviceError(n, device, `${what}: ${detail}`);
}

/**
 * A TLS failure (runtime/tls*.ts). Codes: ERR_TLS_HANDSHAKE (handshake failed: no shared version or
 * cipher, bad message, peer closed), ERR_TLS_CERT (the peer's certificate did not verify),
 * ERR_TLS_ALERT (a bad record or message after the handshake: an alert was sent or received),
 * ERR_TLS_TRUNCATED (TCP ended without close_notify), ERR_TLS_CONTEXT (bad key, certificate or options).
 * The engine already sent the alert when `alertSent`; the connection then closes with a FIN, not a RST.
 */
export class TlsError extends CapybaraError {
  readonly alertSent: boolean;
  constructor(code: 'ERR_TLS_HANDSHAKE' | 'ERR_TLS_CERT' | 'ERR_TLS_ALERT' | 'ERR_TLS_TRUNCATED' | 'ERR_TLS_CONTEXT' | 'ERR_TLS_SNI'
    | 'ERR_TLS_HANDSHAKE_TIMEOUT',
    message: string, options?: { cause?: unknown; alertSent?: boolean }) {
    super(code, message, options);
    this.alertSent = options?.alertSent ?? false;
  }
}
