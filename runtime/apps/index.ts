// The apps `capybara serve` can run. Each takes a Duplex, so they run on capybara Connections and on
// Node net.Sockets alike.
import type { Duplex } from 'node:stream';
import { DISCARD_PORT, discardApp } from './discard.js';
import { DIGEST_PORT, digestApp, digestResumable } from './digest.js';
import { ECHO_PORT, echoApp, echoResumable } from './echo.js';
import { HTTP_PORT, httpApp, httpResumable } from './http.js';
import { offerHooks, type ResumableApp } from './resumable.js';
import { SOCKPERF_PORT, sockperfApp } from './sockperf.js';
import { L7_PORT, l7App, type L7Mode } from './l7.js';
import { Catalogue } from './l7-objects.js';
import { REDIS_PORT, parseStore, redisApp } from './redis.js';

export { echoApp, echoResumable, ECHO_PORT } from './echo.js';
export { serveResumable, type MigrationHooks, type ResumableApp } from './resumable.js';
export { discardApp, DISCARD_PORT, type DiscardOptions } from './discard.js';
export { digestApp, digestResumable, digestLine, DIGEST_PORT } from './digest.js';
export { httpApp, httpResumable, HTTP_PORT, type HttpAppOptions } from './http.js';
export { sockperfApp, SOCKPERF_PORT } from './sockperf.js';
export * from './pattern.js';
export { l7App, L7_PORT, type L7Mode, type L7Counters, type L7Options } from './l7.js';
export { Catalogue, objectChunk, objectSha256, ownerOf, ruleSize } from './l7-objects.js';
export { redisApp, REDIS_PORT, parseStore, type RedisCounters, type RedisOptions } from './redis.js';

export type AppName = 'echo' | 'discard' | 'http' | 'sockperf' | 'l7' | 'redis' | 'digest';

/** What an app that works with its runtime (l7, redis) gets from `capybara serve`. */
export interface AppContext {
  /** This runtime's name (its peers know it by it). */
  name: string;
  port: number;
  /** l7: every backend's name, this one included. */
  backends?: string[];
  mode?: L7Mode;
  /** l7: a JSON manifest {"name": bytes} (default: sizes from the names, apps/l7-objects.ts). */
  manifest?: string;
  /** redis: HOST:PORT of the redis-server. */
  store?: string;
  /** Moves a connection to a peer runtime with the app's state (when migration is enabled). */
  migrate?: (sock: Duplex, peer: string, userData: Uint8Array) => Promise<unknown>;
  /** Opens a connection to the same app on a peer runtime. */
  connect?: (peer: string) => Duplex;
}

/** A resumable app made for one runtime, with counters for `capybara ctl stats`. */
export interface AppInstance extends ResumableApp {
  stats(): Record<string, number>;
  close(): void;
}
export interface AppSpec {
  name: AppName;
  defaultPort: number;
  /** Makes the per-connection handler; servers run it with allowHalfOpen so an app can finish answering. */
  handler: () => (sock: Duplex) => void;
  /** Apps whose connections can move with their state (runtime/apps/resumable.ts); the others restart. */
  resumable?: () => ResumableApp;
  /** Apps that need their runtime (peers, options); `capybara serve` uses this instead of the above. */
  instance?: (ctx: AppContext) => AppInstance;
}

function l7Instance(ctx: AppContext): AppInstance {
  const app = l7App({
    self: ctx.name, backends: ctx.backends ?? [ctx.name], mode: ctx.mode ?? 'dsr',
    catalogue: ctx.manifest ? Catalogue.fromFile(ctx.manifest) : new Catalogue(), migrate: ctx.migrate, connect: ctx.connect,
  });
  return { ...app, stats: () => ({ ...app.counters }), close: () => app.close() };
}

function redisInstance(ctx: AppContext): AppInstance {
  const app = redisApp({ store: parseStore(ctx.store ?? `127.0.0.1:${REDIS_PORT}`) });
  return { ...app, stats: () => ({ ...app.counters }), close: () => {} };
}

/** A plain per-connection handler for an instance app (no runtime: one backend, no peers). */
function standalone(make: (ctx: AppContext) => AppInstance, port: number): () => (sock: Duplex) => void {
  return () => {
    const app = make({ name: 'local', port });
    return (sock) => offerHooks(sock, app.onConnection(sock));
  };
}

export const APPS: Record<AppName, AppSpec> = {
  echo: { name: 'echo', defaultPort: ECHO_PORT, handler: () => echoApp, resumable: echoResumable },
  discard: { name: 'discard', defaultPort: DISCARD_PORT, handler: () => discardApp() },
  http: { name: 'http', defaultPort: HTTP_PORT, handler: () => httpApp(), resumable: () => httpResumable() },
  sockperf: { name: 'sockperf', defaultPort: SOCKPERF_PORT, handler: () => sockperfApp },
  l7: { name: 'l7', defaultPort: L7_PORT, handler: standalone(l7Instance, L7_PORT), instance: l7Instance },
  redis: { name: 'redis', defaultPort: REDIS_PORT, handler: standalone(redisInstance, REDIS_PORT), instance: redisInstance },
  digest: { name: 'digest', defaultPort: DIGEST_PORT, handler: () => digestApp, resumable: digestResumable },
};

export function isAppName(s: string): s is AppName {
  return Object.prototype.hasOwnProperty.call(APPS, s);
}
