/* The TCP module's public face: configuration, the socket-like API the engine calls on behalf of
 * applications, segment input, timers, events and statistics.
 *
 * Everything is single-threaded (the engine thread, or a test) and driven by explicit `now`. TCBs live
 * in arena slots; flows and listeners are named by 64-bit ids (slot index + generation) so a stale id
 * from JS can never reach a reused slot. Nothing here allocates after tcp_init. */
#ifndef CPB_TCP_H
#define CPB_TCP_H
#include "../arena.h"
#include "../common.h"
#include "../ipout.h"

enum tcp_cc_algo { TCP_CC_CUBIC = 0, TCP_CC_NEWRENO = 1 };

struct tcp_config {
  cpb_ip4_t local_ip;        /* source address for active opens */
  uint32_t max_flows;        /* <= arena slots */
  uint32_t max_listeners;
  uint32_t default_backlog;
  uint32_t rcvbuf;           /* bytes of receive buffer per flow: bounds the advertised window */
  uint32_t sndbuf;           /* bytes of send buffer per flow: tcp_send returns -EAGAIN beyond it */
  uint16_t mss;              /* our MSS to advertise (MTU - 40) */
  uint8_t wscale;            /* our window scale shift (0..14) */
  bool timestamps;           /* offer RFC 7323 timestamps */
  bool sack;                 /* offer SACK-permitted */
  enum tcp_cc_algo cc;
  uint32_t rto_initial_us;   /* RFC 6298: 1 s */
  uint32_t rto_min_us;       /* Linux uses 200 ms */
  uint32_t rto_max_us;       /* 60..120 s */
  uint32_t delack_us;        /* delayed-ACK timeout */
  uint32_t time_wait_us;     /* 2*MSL */
  uint32_t fin_wait2_us;     /* orphaned FIN_WAIT_2 timeout */
  uint32_t keepalive_idle_us;
  uint32_t keepalive_intvl_us;
  uint32_t keepalive_probes;
  uint32_t syn_retries;      /* active open attempts before ETIMEDOUT */
  uint32_t max_retries;      /* data retransmissions before ETIMEDOUT */
  uint16_t ephemeral_lo, ephemeral_hi;
  uint8_t iss_secret[16];    /* RFC 6528 keyed ISS; tests pass a fixed value */
  uint32_t challenge_ack_limit; /* RFC 5961 §7 per second */
  uint32_t hold_segs;        /* segments held for frozen flows, all flows together (0: none held) */
  bool syncookies_off;       /* true: a SYN beyond the backlog is dropped; false (default): SYN cookies */
};

/* Fills defaults (Linux-like timers, CUBIC, timestamps + SACK on, 256 KiB buffers, MSS 1460, wscale 7,
 * 256 held segments for frozen flows). */
void tcp_config_defaults(struct tcp_config *cfg);

enum tcp_state {
  TCP_CLOSED = 0, TCP_LISTEN, TCP_SYN_SENT, TCP_SYN_RECEIVED, TCP_ESTABLISHED, TCP_FIN_WAIT_1,
  TCP_FIN_WAIT_2, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_LAST_ACK, TCP_TIME_WAIT,
};
const char *tcp_state_name(enum tcp_state s);

/* Events are edge notifications, coalesced per flow: after one, call recv/send/accept until -EAGAIN. */
enum tcp_event_type {
  TCP_EV_ACCEPTABLE = 1, /* id = listener: tcp_accept will return a flow */
  TCP_EV_CONNECTED,      /* active open completed */
  TCP_EV_READABLE,       /* data (or EOF) can be read */
  TCP_EV_WRITABLE,       /* send buffer has room again after -EAGAIN */
  TCP_EV_CLOSED,         /* the flow is gone for the app: err = 0 (orderly), -ECONNRESET, -ETIMEDOUT,
                            -ECONNREFUSED; the app must still call tcp_close to free its handle */
  TCP_EV_ADOPTED,        /* tcp_adopt restored this flow (delivered before any other event of the flow) */
  /* Raised beside TCP by the engine's migration lane (native/mig/lane.h), in the same event stream: */
  TCP_EV_LANE_OUT = 32,  /* id = migration id: decided, err = 0 (the target owns the flow) or -errno */
  TCP_EV_LANE_IN = 33,   /* id = a flow the lane adopted here */
};
struct tcp_event {
  enum tcp_event_type type;
  uint64_t id;
  int32_t err;
};

/* TCP_OPT_RTO_MIN_US: this flow's floor for the retransmission timeout instead of cfg.rto_min_us (0: back to
 * the engine's), like Linux's per-route rto_min. For connections whose peer is known to answer quickly (the
 * migration channel between runtimes). Host-local: not part of a snapshot. */
enum tcp_sockopt { TCP_OPT_NODELAY = 1, TCP_OPT_KEEPALIVE, TCP_OPT_KEEPIDLE_MS, TCP_OPT_RTO_MIN_US };

struct tcp_flow_info {
  uint64_t id;
  enum tcp_state state;
  cpb_ip4_t local_ip, remote_ip;
  uint16_t local_port, remote_port;
  uint32_t snd_una, snd_nxt, snd_wnd, rcv_nxt, rcv_wnd;
  uint8_t snd_wscale, rcv_wscale;
  bool ts_ok, sack_ok, nodelay, keepalive;
  uint16_t mss;
  uint32_t cwnd, ssthresh;
  uint32_t srtt_us, rttvar_us, rto_us;
  uint32_t unacked_bytes, unsent_bytes, readable_bytes;
  uint64_t bytes_in, bytes_out, retransmits;
  bool frozen;          /* tcp_freeze'd: not sending, not acking, input held */
  uint32_t held_segs;   /* segments held while frozen */
};

struct tcp_stats {
  uint64_t segs_in, segs_out, bytes_in, bytes_out;
  uint64_t bad_segments, bad_checksums, no_listener_rsts, rsts_sent, rsts_received;
  uint64_t active_opens, passive_opens, established, backlog_drops, flow_limit_drops;
  uint64_t retransmits, rto_timeouts, fast_retransmits, sack_recoveries, dup_acks;
  uint64_t ooo_segments, dup_segments, out_of_window, paws_drops, challenge_acks;
  uint64_t zero_window_probes, keepalive_probes, delayed_acks, timeouts;
  uint64_t chunk_exhausted;
  uint64_t frozen, unfrozen, released, adopted, adopt_rejects; /* live migration */
  uint64_t held_segments, held_drops; /* segments for frozen flows kept / dropped (pool or flow limit) */
  uint64_t syncookies_sent, syncookies_ok, syncookies_failed; /* RFC 4987, when a SYN queue is full */
  uint32_t flows_current, listeners_current;
};

struct cpb_tcp; /* opaque; size from tcp_sizeof() so the engine can embed it */
size_t tcp_sizeof(void);

/* Returns 0, -EINVAL (bad config), -ENOMEM (tables). Allocation happens here and never again. */
int tcp_init(struct cpb_tcp *t, struct cpb_arena *arena, const struct tcp_config *cfg, const struct cpb_ipout *out);
void tcp_fini(struct cpb_tcp *t);

/* A segment addressed to us (IP layer checked the address; checksum not yet verified). */
void tcp_input(struct cpb_tcp *t, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len, cpb_time_t now);
/* Runs due timers and pending output; returns the next deadline (UINT64_MAX when none). */
cpb_time_t tcp_poll(struct cpb_tcp *t, cpb_time_t now);
/* True when tcp_next_event has something: lets the engine wake the app thread only when needed. */
bool tcp_has_events(const struct cpb_tcp *t);
/* Pops one pending event; false when none. */
bool tcp_next_event(struct cpb_tcp *t, struct tcp_event *ev);

int tcp_listen(struct cpb_tcp *t, uint16_t port, uint32_t backlog, uint64_t *listener_id); /* -EADDRINUSE */
int tcp_unlisten(struct cpb_tcp *t, uint64_t listener_id, cpb_time_t now); /* unaccepted flows are reset */
int tcp_accept(struct cpb_tcp *t, uint64_t listener_id, uint64_t *flow_id);   /* -EAGAIN */
int tcp_connect(struct cpb_tcp *t, cpb_ip4_t dst, uint16_t dport, uint16_t sport, cpb_time_t now, uint64_t *flow_id);
/* Returns bytes taken (may be fewer than len), -EAGAIN when the send buffer is full, -EPIPE after
 * shutdown, -ENOTCONN before the handshake, -ECONNRESET/-ETIMEDOUT after failure, -ENOENT bad id. */
long tcp_send(struct cpb_tcp *t, uint64_t flow_id, const void *data, size_t len, cpb_time_t now);
/* Returns bytes read, 0 at end of stream, -EAGAIN when nothing is buffered, or an error as above. */
long tcp_recv(struct cpb_tcp *t, uint64_t flow_id, void *buf, size_t len, cpb_time_t now);
/* Copies up to len unread bytes from offset off without consuming them: bytes copied, -EAGAIN when
 * none are there yet, 0 at end of stream when nothing is left, or an error as tcp_recv. */
long tcp_peek(struct cpb_tcp *t, uint64_t flow_id, size_t off, void *buf, size_t len);
/* Bytes tcp_send would take now (0 while frozen), or an error as tcp_send. When little room is left
 * (under a quarter of sndbuf) TCP_EV_WRITABLE is armed, as after a short tcp_send. */
long tcp_send_space(struct cpb_tcp *t, uint64_t flow_id);
int tcp_shutdown(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now); /* send FIN after queued data */
int tcp_close(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now);    /* release handle; graceful */
int tcp_abort(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now);    /* RST, release handle */
int tcp_setopt(struct cpb_tcp *t, uint64_t flow_id, enum tcp_sockopt opt, uint32_t val);
int tcp_flow_info(struct cpb_tcp *t, uint64_t flow_id, struct tcp_flow_info *out);
/* The flow with this 4-tuple (local first), also in TIME_WAIT or frozen; 0 or -ENOENT. */
int tcp_find_flow(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport, uint64_t *flow_id);
/* Calls fn for every live flow (including orphans in TIME_WAIT etc.). */
void tcp_foreach_flow(struct cpb_tcp *t, void (*fn)(void *ctx, const struct tcp_flow_info *fi), void *ctx);
void tcp_get_stats(const struct cpb_tcp *t, struct tcp_stats *out);

/* ---- live migration (freeze.c, migrate.c; the snapshot format is in snapshot.h) ----
 * Source: tcp_freeze -> tcp_snapshot -> (ship; target adopts; steer) -> tcp_held_drain forwards what
 * arrived meanwhile -> tcp_release. If the target fails: tcp_unfreeze and the flow carries on here.
 * A frozen flow sends nothing (no data, no ACK), its timers stand still and the clock stops for it: on
 * unfreeze or adopt every deadline, age and the timestamp clock continue from the instant of the freeze,
 * so the flow never sees the time it spent frozen or in transit. Segments that arrive for it are held
 * (at most TCP_HOLD_FLOW_SEGS / TCP_HOLD_FLOW_BYTES per flow, from the pool of cfg.hold_segs); the rest
 * are dropped and counted, and the peer's retransmission recovers them. While frozen, tcp_send and
 * tcp_recv return -EAGAIN, tcp_shutdown/tcp_close/tcp_setopt -EBUSY; tcp_abort unfreezes (dropping what
 * was held) and resets. */
/* Held segments are forwarded as they arrive, so a flow's queue only spans the time between two drains by
 * the runtime (about a millisecond, more on a loaded machine): at a gigabit that is hundreds of segments. With
 * 64 / 128 KiB a bulk flow lost ~40 % of what arrived during its migrations and the client had to retransmit
 * it (sometimes only after a timeout). */
#define TCP_HOLD_FLOW_SEGS 512
#define TCP_HOLD_FLOW_BYTES (1024u * 1024)
#define TCP_HOLD_SEG_MAX 2032 /* a larger segment for a frozen flow is dropped */

/* Only synchronized states can move: ESTABLISHED, FIN_WAIT_1/2, CLOSE_WAIT, CLOSING, LAST_ACK.
 * Returns 0, -ENOENT, -EALREADY (already frozen), -ENOTCONN (handshake, TIME_WAIT or closed). */
int tcp_freeze(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now);
/* The migration failed: timers resume (rebased for the pause), held segments are processed in order,
 * output resumes. Returns 0, -ENOENT, -EINVAL (not frozen). */
int tcp_unfreeze(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now);
/* The target owns the flow now: drop it here silently (no RST, no FIN), with what was held. The id is
 * dead afterwards. Returns 0, -ENOENT, -EINVAL (not frozen). */
int tcp_release(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now);
/* Hands every held segment (the TCP segment as it arrived: src, dst and bytes) to fn, oldest first,
 * and forgets it; segments arriving later are held again. Returns the count, -ENOENT, -EINVAL. */
typedef void (*tcp_held_fn)(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len);
int tcp_held_drain(struct cpb_tcp *t, uint64_t flow_id, tcp_held_fn fn, void *ctx);
/* Bytes tcp_snapshot needs for this frozen flow; -ENOENT, -EINVAL (not frozen). */
long tcp_snapshot_size(struct cpb_tcp *t, uint64_t flow_id);
/* Serializes a frozen flow (protocol state, unacknowledged and unsent send data, unread and
 * out-of-order receive data). Returns bytes written, -ENOSPC when cap is too small, -ENOENT, -EINVAL. */
long tcp_snapshot(struct cpb_tcp *t, uint64_t flow_id, uint8_t *buf, size_t cap, cpb_time_t now);
/* Validates a snapshot completely, then restores it into a new flow held by the caller: timers and
 * timestamps rebased to this host's clock, 4-tuple registered, TCP_EV_ADOPTED raised, and an ACK with
 * the current window sent right away (data too, when the windows allow). Returns 0 and *flow_id, or
 * -EBADMSG (framing: magic, version, lengths), -EINVAL (a field out of range or inconsistent, or not
 * usable on this host, e.g. an MSS above ours), -ENOSPC (no slot, chunk pool or budget), -EEXIST (the
 * 4-tuple is in use here). On failure nothing is allocated and no flow is touched. */
int tcp_adopt(struct cpb_tcp *t, const uint8_t *buf, size_t len, cpb_time_t now, uint64_t *flow_id);
#endif
