// Validation and defaulting of Stack options. The addon trusts what it gets, so everything a user can
// type is checked here and turned into a ConfigError naming the bad field.
import type { EngineOptions } from './native.js';
import { ConfigError } from './errors.js';

export interface Tuning {
  maxFlows?: number;
  chunks?: number;
  rcvbuf?: number;
  sndbuf?: number;
  mss?: number;
  timestamps?: boolean;
  sack?: boolean;
  cc?: 'cubic' | 'newreno';
  timeWaitMs?: number;
  delackMs?: number;
}

export const DEFAULT_TUNING: Required<Tuning> = {
  maxFlows: 1024,
  chunks: 16384, // 2 KiB each: 32 MiB shared by all flows of the stack
  rcvbuf: 256 * 1024,
  sndbuf: 256 * 1024,
  mss: 1460,
  timestamps: true,
  sack: true,
  cc: 'cubic',
  timeWaitMs: 60_000,
  delackMs: 40,
};

export type DeviceScheme = 'mem' | 'xdp' | 'dpdk';
export interface DeviceUri {
  scheme: DeviceScheme;
  uri: string;
  name: string;                    // mem wire name, interface, or dpdk args
  queue?: number;                  // xdp queue
  params?: Record<string, string>; // mem fault options
}

const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;
const MEMNAME = /^[A-Za-z0-9_.-]{1,64}$/;

export function parseDevice(uri: unknown): DeviceUri {
  if (typeof uri !== 'string' || uri.length === 0) throw new ConfigError('device is required (mem:NAME, xdp:IFACE[@queue] or dpdk:ARGS)');
  const colon = uri.indexOf(':');
  if (colon <= 0) throw new ConfigError(`device "${uri}" has no scheme (expected mem:, xdp: or dpdk:)`);
  const scheme = uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
  switch (scheme) {
    case 'mem': {
      const q = rest.indexOf('?');
      const name = q < 0 ? rest : rest.slice(0, q);
      if (!MEMNAME.test(name)) throw new ConfigError(`device "${uri}": bad mem wire name "${name}"`);
      const params: Record<string, string> = {};
      if (q >= 0 && q < rest.length - 1) {
        for (const pair of rest.slice(q + 1).split('&')) {
          const eq = pair.indexOf('=');
          const k = eq < 0 ? pair : pair.slice(0, eq);
          const v = eq < 0 ? '' : pair.slice(eq + 1);
          if (!/^[a-z_]+$/.test(k) || !/^[0-9.a-z_]*$/i.test(v)) throw new ConfigError(`device "${uri}": bad option "${pair}"`);
          params[k] = v;
        }
      }
      return { scheme, uri, name, params };
    }
    case 'xdp': {
      const at = rest.indexOf('@');
      const name = at < 0 ? rest : rest.slice(0, at);
      if (!IFNAME.test(name)) throw new ConfigError(`device "${uri}": bad interface name "${name}"`);
      if (at < 0) return { scheme, uri, name };
      const qs = rest.slice(at + 1);
      if (!/^\d{1,4}$/.test(qs)) throw new ConfigError(`device "${uri}": bad queue "${qs}"`);
      return { scheme, uri, name, queue: Number(qs) };
    }
    case 'dpdk':
      if (rest.length === 0) throw new ConfigError(`device "${uri}": dpdk needs device arguments`);
      return { scheme, uri, name: rest };
    default:
      throw new ConfigError(`device "${uri}": unknown scheme "${scheme}" (expected mem, xdp or dpdk)`);
  }
}

export function isIPv4(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const parts = s.split('.');
  if (parts.length !== 4) return false;
  return parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, p) => ((acc << 8) | Number(p)) >>> 0, 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join('.');
}

export interface Cidr {
  address: string;
  prefixLength: number;
}

export function parseCidr(s: unknown, field = 'address'): Cidr {
  if (typeof s !== 'string') throw new ConfigError(`${field} is required (CIDR such as 10.77.1.10/24)`);
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(s);
  if (!m || !isIPv4(m[1])) throw new ConfigError(`${field} "${s}" is not an IPv4 CIDR such as 10.77.1.10/24`);
  const prefixLength = Number(m[2]);
  if (prefixLength < 1 || prefixLength > 32) throw new ConfigError(`${field} "${s}": prefix length must be 1..32`);
  return { address: m[1]!, prefixLength };
}

export function sameSubnet(a: string, b: string, prefixLength: number): boolean {
  const mask = prefixLength === 0 ? 0 : (~0 << (32 - prefixLength)) >>> 0;
  return ((ipToInt(a) & mask) >>> 0) === ((ipToInt(b) & mask) >>> 0);
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function isMac(s: unknown): s is string {
  return typeof s === 'string' && MAC.test(s);
}

function intIn(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`${field} must be an integer in ${min}..${max} (got ${String(v)})`);
  }
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(`${field} must be a boolean (got ${String(v)})`);
  return v;
}

export interface StackOptionsInput extends Tuning {
  device?: unknown;
  address?: unknown;
  gateway?: unknown;
  vip?: unknown;
  mac?: unknown;
}

/** Validates user options and fills defaults; the result is what the addon's Engine gets. */
export function engineOptions(opts: StackOptionsInput): EngineOptions {
  if (typeof opts !== 'object' || opts === null) throw new ConfigError('options object is required');
  const dev = parseDevice(opts.device);
  const cidr = parseCidr(opts.address);
  const t = { ...DEFAULT_TUNING };
  for (const [k, v] of Object.entries(opts)) if (v !== undefined && k in t) (t as Record<string, unknown>)[k] = v;
  const out: EngineOptions = {
    device: dev.uri,
    address: cidr.address,
    prefixLength: cidr.prefixLength,
    maxFlows: intIn(t.maxFlows, 'maxFlows', 1, 1 << 20),
    chunks: intIn(t.chunks, 'chunks', 64, 1 << 24),
    rcvbuf: intIn(t.rcvbuf, 'rcvbuf', 4096, 1 << 30),
    sndbuf: intIn(t.sndbuf, 'sndbuf', 4096, 1 << 30),
    mss: intIn(t.mss, 'mss', 88, 9000),
    timestamps: bool(t.timestamps, 'timestamps'),
    sack: bool(t.sack, 'sack'),
    cc: t.cc,
    timeWaitMs: intIn(t.timeWaitMs, 'timeWaitMs', 0, 600_000),
    delackMs: intIn(t.delackMs, 'delackMs', 0, 500),
  };
  if (t.cc !== 'cubic' && t.cc !== 'newreno') throw new ConfigError(`cc must be "cubic" or "newreno" (got ${String(t.cc)})`);
  if (opts.gateway !== undefined) {
    if (!isIPv4(opts.gateway)) throw new ConfigError(`gateway "${String(opts.gateway)}" is not an IPv4 address`);
    if (!sameSubnet(opts.gateway, cidr.address, cidr.prefixLength)) {
      throw new ConfigError(`gateway ${opts.gateway} is not on-link for ${cidr.address}/${cidr.prefixLength}`);
    }
    out.gateway = opts.gateway;
  }
  if (opts.vip !== undefined) {
    if (!isIPv4(opts.vip)) throw new ConfigError(`vip "${String(opts.vip)}" is not an IPv4 address`);
    if (opts.vip === cidr.address) throw new ConfigError(`vip ${opts.vip} is the stack's own address`);
    out.vip = opts.vip;
  }
  if (opts.mac !== undefined) {
    if (!isMac(opts.mac)) throw new ConfigError(`mac "${String(opts.mac)}" is not a MAC address like 02:00:00:00:00:01`);
    if ((parseInt(opts.mac.slice(0, 2), 16) & 1) === 1) throw new ConfigError(`mac ${opts.mac} is a multicast address`);
    out.mac = opts.mac.toLowerCase();
  } else if (dev.scheme === 'mem') {
    // mem: wires have no hardware address; derive a locally administered one from the IP.
    out.mac = ['02', '00', ...cidr.address.split('.').map((p) => Number(p).toString(16).padStart(2, '0'))].join(':');
  }
  return out;
}
