// Loads the N-API addon (build/Release/capybara.node). Like better-sqlite3, callers may inject their
// own binding (Stack.open({ binding })) so the runtime can be exercised against another build; the
// contract is native/addon/binding.d.ts.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  Engine, EngineOptions, EngineStats, EventType, FlowInfo, LaneOutcome, LaneStats, SecureContext, SecureContextOptions, TlsInfo,
} from '../native/addon/binding.js';
import { AddonError } from './errors.js';

export type { EngineOptions, EngineStats, FlowInfo, LaneOutcome, LaneStats, SecureContextOptions, TlsInfo };
export type NativeSecureContext = SecureContext;
export type EngineInstance = Engine;
export type EngineConstructor = new (opts: EngineOptions, onEvents: (events: number[]) => void) => Engine;
export interface Binding {
  Engine: EngineConstructor;
  /** The balancer's redirect table, written in-process (absent in test bindings). */
  lbOpen?(pinnedMap: string): number;
  lbRedirect?(fd: number, src: string, sport: number, dst: string, dport: number, backend: number): number;
  lbClose?(fd: number): void;
  /** The mem: switch's steering table (native/dev/dev.h cpb_mem_steer): entries held, or -errno. */
  memSteer?(wire: string, src: string, sport: number, dst: string, dport: number, port: number): number;
  /** Migration claims (cpb_lb_claim / cpb_mem_claim): [0 claimed now | -EEXIST held by owner | -errno, owner]. */
  lbClaim?(fd: number, src: string, sport: number, dst: string, dport: number, token: number, backend: number): [number, number];
  lbUnclaim?(fd: number, src: string, sport: number, dst: string, dport: number, token: number): number;
  memClaim?(wire: string, src: string, sport: number, dst: string, dport: number, token: number, port: number): [number, number];
  memUnclaim?(wire: string, src: string, sport: number, dst: string, dport: number, token: number): number;
  /** TLS contexts (native/addon/tls_wrap.cc; absent in test bindings and builds without TLS). */
  SecureContext?: new (opts: SecureContextOptions) => SecureContext;
}

// Event numbers, checked against the contract's const enum at compile time.
export const EV_ACCEPTABLE: EventType.Acceptable = 1;
export const EV_CONNECTED: EventType.Connected = 2;
export const EV_READABLE: EventType.Readable = 3;
export const EV_WRITABLE: EventType.Writable = 4;
export const EV_CLOSED: EventType.Closed = 5;
export const EV_LANE_OUT: EventType.LaneOut = 32;
export const EV_LANE_IN: EventType.LaneIn = 33;

let injected: Binding | undefined;
let loaded: Binding | undefined;

/** The package root (where package.json named "capybara" lives), found from this file's location. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'capybara') return dir;
      } catch {
        // keep walking up
      }
    }
    dir = dirname(dir);
  }
  throw new AddonError('cannot find the capybara package root');
}

/** Path the addon is loaded from: $CAPYBARA_ADDON, else build/Release/capybara.node in the package. */
export function addonPath(): string {
  const env = process.env.CAPYBARA_ADDON;
  if (env) return resolve(env);
  return join(packageRoot(), 'build', 'Release', 'capybara.node');
}

/** Replaces the binding used by Stack.open when no binding option is given (undefined restores). */
export function setBinding(binding: Binding | undefined): void {
  injected = binding;
}

function isBinding(x: unknown): x is Binding {
  return typeof x === 'object' && x !== null && typeof (x as { Engine?: unknown }).Engine === 'function';
}

/** Returns the injected binding or loads the real addon (once). Throws AddonError when not built. */
export function loadBinding(): Binding {
  if (injected) return injected;
  if (loaded) return loaded;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new AddonError(`native addon not built (${path} missing): run npm run build`);
  }
  const require = createRequire(import.meta.url);
  let mod: unknown;
  try {
    mod = require(path);
  } catch (err) {
    throw new AddonError(`cannot load native addon ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!isBinding(mod)) throw new AddonError(`native addon ${path} does not export Engine`);
  loaded = mod;
  return loaded;
}

/** True when the real addon can be loaded (tests use this to skip with a reason). */
export function addonAvailable(): boolean {
  try {
    loadBinding();
    return true;
  } catch {
    return false;
  }
}
