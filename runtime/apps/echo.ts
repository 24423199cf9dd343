// Echo (RFC 862): every byte comes back; the peer's FIN is answered with ours after the last byte.
// pipe() carries backpressure both ways: a client that stops reading stops us reading from it.
import type { Duplex } from 'node:stream';

export const ECHO_PORT = 7;

export function echoApp(sock: Duplex): void {
  sock.on('error', () => sock.destroy());
  sock.pipe(sock);
}
