// The apps `capybara serve` can run. Each takes a Duplex, so they run on capybara Connections and on
// Node net.Sockets alike.
import type { Duplex } from 'node:stream';
import { DISCARD_PORT, discardApp } from './discard.js';
import { ECHO_PORT, echoApp, echoResumable } from './echo.js';
import { HTTP_PORT, httpApp, httpResumable } from './http.js';
import type { ResumableApp } from './resumable.js';
import { SOCKPERF_PORT, sockperfApp } from './sockperf.js';

export { echoApp, echoResumable, ECHO_PORT } from './echo.js';
export { serveResumable, type MigrationHooks, type ResumableApp } from './resumable.js';
export { discardApp, DISCARD_PORT, type DiscardOptions } from './discard.js';
export { httpApp, httpResumable, HTTP_PORT, type HttpAppOptions } from './http.js';
export { sockperfApp, SOCKPERF_PORT } from './sockperf.js';
export * from './pattern.js';

export type AppName = 'echo' | 'discard' | 'http' | 'sockperf';
export interface AppSpec {
  name: AppName;
  defaultPort: number;
  /** Makes the per-connection handler; servers run it with allowHalfOpen so an app can finish answering. */
  handler: () => (sock: Duplex) => void;
  /** Apps whose connections can move with their state (runtime/apps/resumable.ts); the others restart. */
  resumable?: () => ResumableApp;
}

export const APPS: Record<AppName, AppSpec> = {
  echo: { name: 'echo', defaultPort: ECHO_PORT, handler: () => echoApp, resumable: echoResumable },
  discard: { name: 'discard', defaultPort: DISCARD_PORT, handler: () => discardApp() },
  http: { name: 'http', defaultPort: HTTP_PORT, handler: () => httpApp(), resumable: () => httpResumable() },
  sockperf: { name: 'sockperf', defaultPort: SOCKPERF_PORT, handler: () => sockperfApp },
};

export function isAppName(s: string): s is AppName {
  return Object.prototype.hasOwnProperty.call(APPS, s);
}
