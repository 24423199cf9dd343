// A responder for sockperf's ping-pong mode, so its client can measure latency against capybara.
// sockperf frames every message with a 14-byte header in network order: u64 sequence, u16 flags
// (1 = from client, 2 = pong requested, 4 = warm-up), u32 total length (header included). The server
// answers a message that asks for a pong with the same bytes and the client bit cleared; a plain echo
// would send the client bit back and sockperf would ignore the reply.
import type { Duplex } from 'node:stream';

export const SOCKPERF_PORT = 11111;
const HEADER = 14;
const MAX_MESSAGE = 65536;
const FLAG_CLIENT = 1;
const FLAG_PONG_REQUEST = 2;

export function sockperfApp(sock: Duplex): void {
  let buf: Buffer = Buffer.alloc(0);
  sock.on('error', () => sock.destroy());
  sock.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    const replies: Buffer[] = [];
    while (buf.length >= HEADER) {
      const len = buf.readUInt32BE(10);
      if (len < HEADER || len > MAX_MESSAGE) {
        sock.destroy();
        return;
      }
      if (buf.length < len) break;
      const flags = buf.readUInt16BE(8);
      if (flags & FLAG_PONG_REQUEST) {
        const msg = Buffer.from(buf.subarray(0, len));
        msg.writeUInt16BE(flags & ~FLAG_CLIENT, 8);
        replies.push(msg);
      }
      buf = buf.subarray(len);
    }
    if (replies.length > 0 && !sock.write(replies.length === 1 ? replies[0]! : Buffer.concat(replies))) {
      sock.pause();
      sock.once('drain', () => sock.resume());
    }
  });
  sock.on('end', () => sock.end());
}
