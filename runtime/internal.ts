// What Server and Connection need from their Stack, kept apart so the three files do not import each
// other in a cycle. Not part of the public API.
import type { EngineInstance } from './native.js';

export interface FlowOwner {
  readonly engine: EngineInstance;
  readonly address: string;
  /** Routes engine events for this flow id to obj until unregisterFlow. */
  registerFlow(id: number, obj: FlowEvents): void;
  unregisterFlow(id: number): void;
  registerListener(id: number, obj: ListenerEvents): void;
  unregisterListener(id: number): void;
  assertOpen(): void;
}

export interface FlowEvents {
  onConnected(): void;
  onReadable(): void;
  onWritable(): void;
  onClosed(err: number): void;
}

export interface ListenerEvents {
  onAcceptable(): void;
}
