// JIT warm-up of the migration hot path. A runtime migrates a connection now and then, not thousands of
// times a second, so without this the code that seals, opens, encodes and decodes an offer would run in
// V8's interpreter every time, inside the client's blackout: measured on the testbed VM, the first ~40
// seal+open pairs of an offer cost 100-400 µs each against ~30 µs once optimised, and the first ~100
// snapshot container encode+decode pairs 100-300 µs against ~8 µs. So when migration is enabled, the
// same functions run a few hundred times on throwaway data (a session pair under a random key that
// nothing else knows, and layers over a fake TCP record); nothing here touches the engine or a peer.
// 200 rounds take ~90 ms of CPU on that VM, run in slices of `slice` rounds (5: ~2 ms), one slice per
// event-loop turn, so the runtime (and others sharing its thread, as on the mem cluster) stays responsive; afterwards a whole offer/adopted exchange costs ~70 µs of
// JS instead of 300-2000 µs for the first ones.
import { randomBytes } from 'node:crypto';
import { AppLayer, PluggedLayer } from '../../stack/layer.js';
import type { FlowKey, MigrationMessage } from './messages.js';
import { ChannelSession, type SessionOutput } from './session.js';

const FLOW: FlowKey = { localAddress: '10.0.0.1', localPort: 7, remoteAddress: '10.0.0.2', remotePort: 40000 };

function deliver(to: ChannelSession, frames: readonly Uint8Array[], into: SessionOutput[]): void {
  for (const f of frames) into.push(to.receive(f));
}

/**
 * Runs the offer/adopted/forward messages and the snapshot container through `rounds` round trips, `slice`
 * per event-loop turn (0: all at once). `stop()` ends it early; `done` resolves with the rounds that ran.
 */
export function warmUpMigrationPath(rounds = 200, slice = 25): { stop(): void; done: Promise<number> } {
  let finished!: (n: number) => void;
  const result = new Promise<number>((resolve) => (finished = resolve));
  let i = 0;
  const key = randomBytes(32);
  const a = new ChannelSession({ name: 'warmup-i', role: 'initiator', key, keyEpoch: 0 });
  const b = new ChannelSession({ name: 'warmup-r', role: 'responder', key, keyEpoch: 0 });
  key.fill(0);
  let stopped = false;
  let closed = false;
  const done = (): void => {
    if (closed) return;
    closed = true;
    a.close();
    b.close();
    finished(i);
  };
  try {
    const ha = a.start();
    const hb = b.start();
    const toA: SessionOutput[] = [];
    const toB: SessionOutput[] = [];
    deliver(a, [hb], toB);
    deliver(b, [ha], toA);
    for (const o of toB.splice(0)) deliver(b, o.frames, toA);
    for (const o of toA.splice(0)) deliver(a, o.frames, toB);
    if (a.state !== 'ready' || b.state !== 'ready') throw new Error('warm-up handshake failed');

    const tcpRecord = new Uint8Array(560);
    const tcp = new PluggedLayer<{ userData: Uint8Array }, number>({
      kind: 'tcp', version: 1, maxBytes: 4096,
      serialize: () => tcpRecord.slice(),
      deserialize: () => 0,
    });
    const layers = new AppLayer<{ userData: Uint8Array }, void, number>({ lower: tcp, maxUserData: 4096 });
    const userData = new Uint8Array(48);
    const segment = new Uint8Array(96);
    const send = (from: ChannelSession, to: ChannelSession, m: MigrationMessage): void => {
      const out = to.receive(from.seal(m));
      if (out.error) throw out.error;
    };
    const step = (): void => {
      try {
        for (const end = slice > 0 ? Math.min(rounds, i + slice) : rounds; i < end && !stopped; i++) {
          const snapshot = layers.serialize({ userData }, undefined);
          send(a, b, { type: 'offer', migrationId: i + 1, epoch: 1, flow: FLOW, snapshot });
          layers.deserialize(snapshot, undefined);
          send(b, a, { type: 'adopted', migrationId: i + 1, epoch: 1 });
          send(a, b, { type: 'forward', migrationId: i + 1, epoch: 1, segments: [{ src: FLOW.remoteAddress, dst: FLOW.localAddress, bytes: segment }] });
        }
      } catch {
        stopped = true; // a warm-up that fails only means the first migrations run slower
      }
      if (closed) return;
      if (i < rounds && !stopped) setImmediate(step).unref();
      else done();
    };
    step();
  } catch {
    done();
  }
  return { stop: () => { stopped = true; done(); }, done: result };
}
