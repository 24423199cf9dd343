// Public entry point of the capybara runtime.
export { Stack, type StackOptions, type ConnectOptions, type CloseOptions } from './stack.js';
export { Server, type ServerOptions, type ListenOptions } from './server.js';
export { Connection, type ConnectionOptions, type AddressInfo } from './connection.js';
export * from './errors.js';
export { setBinding, loadBinding, addonAvailable, addonPath, type Binding, type EngineOptions, type EngineStats, type FlowInfo } from './native.js';
export { parseDevice, parseCidr, DEFAULT_TUNING, type Tuning, type DeviceUri } from './options.js';
export { AdminServer, adminRequest, adminSocketPath, stackAdminHandlers } from './admin.js';
export * as apps from './apps/index.js';
export { Migrator, MigrationError, type MigratorOptions, type MigrationPeer, type MigrateOptions, type MigrationTimings } from './migration/migrator.js';
export type { MigrationHooks, ResumableApp } from './apps/resumable.js';
export { createSecureContext, SecureContext, type TlsServerOptions, type TlsConnectOptions, type TlsVersion } from './tls.js';
export type { CipherInfo } from './tls-flow.js';
