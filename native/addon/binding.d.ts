// The contract between the N-API addon (native/addon/*.cc) and runtime/. The addon only converts
// arguments and calls the engine; runtime/ validates options and maps errno values to typed errors.
// Flow and listener ids are integers < 2^53 (slot index + generation), safe as JS numbers.

export interface EngineOptions {
  device: string;          // "mem:NAME[?faults]" | "xdp:IFACE[@queue]"
  address: string;         // dotted IPv4 of the stack
  prefixLength: number;    // on-link prefix, e.g. 24
  gateway?: string;        // next hop for off-link destinations
  vip?: string;            // second local address, shared by hosts behind the L4 balancer (steered, not ARPed)
  mac?: string;            // override the device MAC ("02:00:00:00:00:01"); mem: devices need one
  maxFlows: number;
  chunks: number;          // data chunks (2 KiB each) in the shared pool
  rcvbuf: number;
  sndbuf: number;
  mss: number;
  timestamps: boolean;
  sack: boolean;
  cc: 'cubic' | 'newreno';
  timeWaitMs: number;
  delackMs: number;
}

// Event kinds as delivered to the callback (same numbers as enum tcp_event_type in native/tcp/tcp.h).
export const enum EventType { Acceptable = 1, Connected = 2, Readable = 3, Writable = 4, Closed = 5, Adopted = 6,
  LaneOut = 32, LaneIn = 33 } // lane: id = migration id (err 0 or -errno) / id = flow adopted here (native/mig/lane.h)

/** What a migration through the lane came to (native/mig/lane.h struct cpb_lane_outcome). */
export interface LaneOutcome { err: number; answeredUs: number; targetAtUs: number; forwarded: number; snapshotBytes: number }
/** The lane's counters (struct cpb_lane_stats). */
export interface LaneStats {
  offersSent: number; offersResent: number; answersIn: number; adoptedOut: number; rejectedOut: number; gaveBack: number;
  unansweredReleased: number; offersIn: number; adoptedIn: number; rejectedIn: number; repeatedOffers: number; lateOffers: number; staleCopies: number;
  forwardedOut: number; forwardedIn: number; forwardDropped: number; forwardEarly: number; forwardTooBig: number;
  badFrames: number; authFailures: number; replays: number; unknownKeys: number; steerErrors: number; sendFailures: number;
}

export interface FlowInfo {
  id: number; state: string;
  localAddress: string; localPort: number; remoteAddress: string; remotePort: number;
  sndUna: number; sndNxt: number; sndWnd: number; rcvNxt: number; rcvWnd: number;
  sndWscale: number; rcvWscale: number; timestamps: boolean; sack: boolean;
  nodelay: boolean; keepalive: boolean; mss: number; cwnd: number; ssthresh: number;
  srttUs: number; rttvarUs: number; rtoUs: number;
  unackedBytes: number; unsentBytes: number; readableBytes: number;
  bytesIn: number; bytesOut: number; retransmits: number;
  frozen: boolean; heldSegments: number;
}

export interface EngineStats {
  tcp: Record<string, number>;   // fields of struct tcp_stats, camelCase
  ip: Record<string, number>;    // frames in/out, arp, icmp, fragments dropped, bad checksums, ...
  dev: Record<string, number>;   // struct cpb_dev_stats
  arena: { slots: number; slotsUsed: number; chunks: number; chunksUsed: number; slotSize: number; chunkSize: number; bytes: number; hugepages: boolean };
}

export declare class Engine {
  // Starts the engine thread. onEvents receives a flat array [type, id, err, type, id, err, ...]
  // on the JS thread, coalesced. Throws Error with .code ('ENODEV', 'EINVAL', 'EPERM', 'ENOENT', ...) and
  // a sentence in .message when the device cannot be opened.
  constructor(opts: EngineOptions, onEvents: (events: number[]) => void);
  listen(port: number, backlog: number): number;          // listener id, or throws ('EADDRINUSE')
  // A listener served on the engine thread by a native C app (native/apps/): its flows are accepted and
  // answered there and never reach onEvents. Listener id, or throws ('EADDRINUSE', 'EINVAL' unknown app).
  listenNative(port: number, backlog: number, app: 'echo' | 'sockperf'): number;
  setSpinUs(us: number): void;                            // engine busy-poll time after activity (default 50)
  unlisten(listenerId: number): void;
  accept(listenerId: number): number;                     // flow id, or -11 (EAGAIN)
  connect(host: string, port: number, localPort: number): number; // flow id, or throws
  send(flowId: number, data: Uint8Array): number;         // bytes taken (>= 0) or -errno
  recv(flowId: number, max: number): Buffer | number;     // Buffer (length 0 = EOF) or -errno (-11 = EAGAIN)
  shutdown(flowId: number): number;                       // 0 or -errno
  close(flowId: number): number;
  abort(flowId: number): number;
  setOption(flowId: number, opt: 'nodelay' | 'keepalive' | 'keepidle' | 'rtoMinUs', value: number): number;
  flowInfo(flowId: number): FlowInfo | null;
  flows(): FlowInfo[];
  stats(): EngineStats;
  mac(): string;
  // Live migration (native/tcp/tcp.h): all return 0 / a value, or -errno.
  freeze(flowId: number): number;                         // stop sending/acking; input is held
  unfreeze(flowId: number): number;                       // migration failed: carry on here
  release(flowId: number): number;                        // target owns it: forget silently
  snapshot(flowId: number): Buffer | number;              // TCP layer bytes of a frozen flow
  adopt(snapshot: Uint8Array): number;                    // new flow id (an Adopted event follows)
  drainHeld(flowId: number): [string, string, Buffer][] | number; // [src, dst, segment] held while frozen
  inject(src: string, dst: string, segment: Uint8Array): number;  // a forwarded segment, as if received
  wakeTrace?(): [number, number, number, number];         // [engine woke, round with events, notify, JS dispatch] µs
  pollEvents?(): void;                                    // deliver pending events now (not from inside the callback)
  // The migration lane of native flows (native/mig/lane.h; native/addon/lane_wrap.cc); 0 or -errno.
  laneKey?(peer: string, keyId: Uint8Array, txKey: Uint8Array, txIv: Uint8Array, rxKey: Uint8Array, rxIv: Uint8Array, backend: number): number;
  laneDropKey?(peer: string, keyId: Uint8Array): number;
  laneSteer?(kind: 'lb' | 'mem' | 'none', where?: string, self?: number): number;
  // [0 | -errno, waiting for the engine lock, freeze + snapshot + seal, sending] (µs), or -EINVAL for bad arguments
  laneMigrate?(flowId: number, peer: string, migrationId: number, epoch: number, budgetMs: number, record?: Uint8Array): [number, number, number, number] | number;
  /** Whether JS takes migrated connections on port (native/mig/lanejs.h); 0 or -errno. */
  laneListen?(port: number, on: boolean): number;
  /** The oldest JS flow the lane adopted here whose record waits for its connection (each once), or null. */
  laneTake?(): [number, Buffer] | null;
  laneOutcome?(migrationId: number): LaneOutcome | null;
  laneStats?(): LaneStats;
  // TLS (native/tls/session.h; native/addon/tls_wrap.cc): one session per flow, freed by tlsFree and
  // by close/abort/release of the flow. Numbers are 0 / a value or -errno as for TCP.
  tlsCreate(flowId: number, ctx: SecureContext, servername: string | null): number; // 0, or throws (.code, sentence)
  tlsHandshake(flowId: number): number;                   // 0 done, 1 again, 2 wants SNI, -errno (-71 EPROTO: alert sent)
  tlsRecv(flowId: number, max: number): Buffer | number;  // plaintext (length 0: close_notify) or -errno (-104 truncated)
  tlsSend(flowId: number, data: Uint8Array): number;      // plaintext bytes taken or -errno (-11: no room for a record)
  tlsCloseNotify(flowId: number): number;
  tlsKeyUpdate(flowId: number, requestPeer: boolean): number; // TLS 1.3 only (-EPROTONOSUPPORT on 1.2)
  tlsInfo(flowId: number): TlsInfo | null;
  tlsSnapshot(flowId: number): Buffer | number;           // the "CTLS" record (key material: wipe it) or -errno
  tlsAdopt(flowId: number, record: Uint8Array): number;   // 0, or throws (.code, sentence); the caller wipes record
  tlsServername(flowId: number): string | null;           // SNI the client sent
  tlsSetContext(flowId: number, ctx: SecureContext | null): number; // after "wants SNI"
  tlsLastError(flowId: number): string;                   // why the last call failed
  tlsFree(flowId: number): void;                          // wipes the session's keys
  tlsCount(): number;                                     // live sessions (leak checks)
  destroy(): void;                                        // stops the thread, closes the device; idempotent
}

export interface TlsInfo {
  done: boolean; version: number; protocol: string; cipher: string; standardCipher: string;
  alpn: string; servername: string; recordsIn: number; recordsOut: number; keyUpdatesIn: number; keyUpdatesOut: number;
}

export interface SecureContextOptions {
  server: boolean;
  cert?: Uint8Array; key?: Uint8Array; ca?: Uint8Array;  // PEM
  verifyPeer?: boolean;
  alpn?: Uint8Array;                                     // wire format: length-prefixed names
  minVersion?: number; maxVersion?: number;              // 0x0303 / 0x0304, 0: any
  ciphers?: string; ciphersuites?: string;               // OpenSSL syntax: TLS 1.2 list, TLS 1.3 suites
  sniCallback?: boolean;                                 // server: handshakes pause for the SNI callback
}

// An SSL_CTX; throws Error (.code EINVAL / ERR_TLS_NATIVE, a sentence) for a bad key, certificate or option.
export declare class SecureContext {
  constructor(opts: SecureContextOptions);
  free(): void;                                          // sessions made from it keep their own reference
}

// The L4 balancer's redirect table, written in-process (native/dev/lbsteer.c): fd or -errno.
export declare function lbOpen(pinnedMap: string): number;
export declare function lbRedirect(fd: number, src: string, sport: number, dst: string, dport: number, backend: number): number;
export declare function lbClose(fd: number): void;

// The mem: switch's steering table (native/dev/mem.c): entries held afterwards, or -errno; port < 0 removes.
export declare function memSteer(wire: string, src: string, sport: number, dst: string, dport: number, port: number): number;
// Migration claims: [0 (claimed now) | -EEXIST (held by owner) | -errno, owner]; unclaim: 0 | -errno.
export declare function lbClaim(fd: number, src: string, sport: number, dst: string, dport: number, token: number, backend: number): [number, number];
export declare function lbUnclaim(fd: number, src: string, sport: number, dst: string, dport: number, token: number): number;
export declare function memClaim(wire: string, src: string, sport: number, dst: string, dport: number, token: number, port: number): [number, number];
export declare function memUnclaim(wire: string, src: string, sport: number, dst: string, dport: number, token: number): number;
