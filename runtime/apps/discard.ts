// Discard (RFC 863): read and drop everything; close our side when the peer closes its side.
import type { Duplex } from 'node:stream';

export const DISCARD_PORT = 9;

export interface DiscardOptions {
  /** Called with the byte count of each chunk dropped (tests and stats). */
  onBytes?: (n: number) => void;
}

export function discardApp(opts: DiscardOptions = {}): (sock: Duplex) => void {
  return (sock) => {
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => opts.onBytes?.(d.length));
    sock.on('end', () => sock.end());
  };
}
