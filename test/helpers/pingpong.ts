// A ping-pong client for migration tests: numbered 64-byte messages, one at a time, every echo checked
// against what was sent (a byte lost, duplicated or reordered by a migration shows up in `bad`).
import type { Connection } from '../../runtime/connection.js';

const MSG = 64;

/** A client that sends numbered 64-byte messages one at a time and checks every echo. */
export function pingPong(conn: Connection) {
  let sent = 0;
  let echoed = 0;
  let bad = 0;
  let pending: Buffer = Buffer.alloc(0);
  const msg = (i: number) => Buffer.alloc(MSG, i & 0xff).fill(String(i % 10), 0, 8);
  conn.on('data', (d: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    while (pending.length >= MSG) {
      if (!pending.subarray(0, MSG).equals(msg(echoed))) bad++;
      pending = pending.subarray(MSG);
      echoed++;
    }
    if (echoed === sent) conn.write(msg(sent++));
  });
  conn.write(msg(sent++));
  return { get sent() { return sent; }, get echoed() { return echoed; }, get bad() { return bad; } };
}

export async function progress(p: { echoed: number }, more: number, ms = 10_000): Promise<void> {
  const want = p.echoed + more;
  const until = Date.now() + ms;
  while (p.echoed < want) {
    if (Date.now() > until) throw new Error(`stream stalled at ${p.echoed} echoes (wanted ${want})`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
