/* The migration lane: engine-to-engine datagrams that move a flow served on the engine thread (a native
 * app) from one runtime to another with no JavaScript on the way. The migration channel (a TCP connection
 * of the stack, driven by JS) costs four thread hand-offs per migration — source JS, target engine, target
 * JS, source engine — which on a small machine are milliseconds; the lane runs the same protocol
 * (DESIGN.md "Migration protocol") inside the two engines: the source's engine freezes, snapshots, seals
 * and sends the offer in the call that asks for the migration; the target's engine opens it, adopts the
 * flow, binds it to its native app, steers the balancer and answers in the round that received it; held
 * segments follow the offer at once and are injected on arrival.
 *
 * Wire: IPv4 protocol 253 (RFC 3692, experimentation) between the runtimes' own addresses.
 *   header (AAD)  u8 version 2 | u8 type | u16 0 | u64 key id | u64 seq          (20 bytes, little-endian)
 *   body          AES-256-GCM(plaintext) | 16-byte tag, nonce = iv XOR (0^4 | seq big-endian) as keys.ts
 *   plaintext     u64 migration id | u32 source epoch | per type:
 *     1 OFFER     u8 n | n app name | 32 app state | u32 n | n bytes TCP snapshot (CTCP)
 *                 | u32 n | n bytes record (opaque: the layers above TCP of a flow served in JS; 0 for a
 *                 native app), handed to apps.adopt
 *     2 ADOPTED   u64 when the offer reached the target (its clock: comparable on one machine only)
 *     3 REJECTED  i32 -errno
 *     4 FORWARD   u32 src | u32 dst | u16 n | n bytes TCP segment as it reached the source
 *     5 PART      a piece of an OFFER or FORWARD whose plaintext exceeds one datagram (1400 bytes):
 *                 u32 message number | u8 inner type | u8 0 | u16 index | u16 count | u32 total | bytes
 *                 (lanefrag.h). A message that fits one datagram travels whole, as types 1..4.
 * Limits: a message is at most CPB_LANE_MSG_MAX bytes of plaintext, so an offer's snapshot and record
 * together a little less: a flow with full default buffers (256 KiB each way, tcp/api.c) and room to
 * spare. Forwarded segments go up to TCP_HOLD_SEG_MAX (two parts). The target assembles in a few
 * preallocated slots (lanefrag.h); the source keeps a big offer for re-sends in one of CPB_LANE_POOL
 * buffers and sends its parts in bursts of CPB_LANE_BURST, going on from cpb_lane_poll when the device
 * has no room (the first re-send waits for the last part, and longer for a longer offer).
 * Keys come from the migration channel's handshake (runtime/migration/keys.ts laneKeys): one key id per
 * channel session, so each side may hold a few (a channel each way, one being replaced). Sequence
 * numbers count per key and direction from 1; a 64-entry window refuses replays.
 *
 * Datagrams get lost: every message is idempotent (DESIGN: id + epoch), the source re-sends the offer on
 * a doubling timer until the budget is spent, the target answers a repeated offer as it did the first
 * time. Ownership: the balancer arbitrates. Before it adopts, the target claims the migration there (an
 * atomic insert of (flow, token) naming it); a source that gets no answer within its budget, or a refusal,
 * claims it too before taking the flow back. Exactly one claim succeeds: a target whose claim loses (the
 * offer came late, after the source gave up) refuses; a source whose claim loses releases its frozen copy
 * (the target owns the flow, its answer was lost). Without a balancer there is no claim and a silent
 * target is taken not to have adopted. Forwarded segments are not re-sent: one lost is retransmitted by the
 * client's TCP. They wait (held by TCP) until the offer's last part has left; they can still come before the
 * offer is whole (a part of that copy was lost, and a later copy fills the hole), so the target keeps up to
 * CPB_LANE_KEEP forwards of migrations it has not heard of for CPB_LANE_EARLY_US and injects them once it
 * adopts. Dropping them would be systematic, not chance: a big offer (a full window buffered) needs several
 * copies on a lossy path, and the client's retransmission, always caught by the freeze, would be lost each
 * time while its RTO doubles.
 *
 * Single-threaded like TCP: every call runs under the engine lock. Allocates only in cpb_lane_new. */
#ifndef CPB_LANE_H
#define CPB_LANE_H
#include "../common.h"
#include "../tcp/tcp.h"

#define CPB_LANE_PROTO 253
#define CPB_LANE_VERSION 2 /* 2: offers carry u32 lengths and a record, messages may come in parts */
#define CPB_LANE_PEERS 16
#define CPB_LANE_KEYS 4          /* key ids per peer */
#define CPB_LANE_OUT 16          /* migrations from here in progress (incl. their straggler grace) */
#define CPB_LANE_DONE 256        /* outcomes remembered: more than the events a burst can push out of the ring */
#define CPB_LANE_SEEN 256        /* offers remembered for answering repeats */
#define CPB_LANE_KEEP 8          /* segments sent ahead of the answer, kept for giving the flow back */
#define CPB_LANE_APP_NAME 15
#define CPB_LANE_APP_STATE 32
#define CPB_LANE_GRACE_US 50000  /* the source forwards stragglers this long after the answer */
#define CPB_LANE_EARLY_US 2000000 /* a forward that came before its offer waits this long for it */
#define CPB_LANE_RTO_US 1000     /* first re-send of an unanswered offer; doubles up to 64 ms */
#define CPB_LANE_RTO_NS_PER_BYTE 16 /* ... plus this per byte of the offer (~500 Mbit/s: veth with crypto) */
#define CPB_LANE_MSG_MAX (640u * 1024) /* plaintext of one message: 2 x 256 KiB buffers + 128 KiB */
#define CPB_LANE_POOL 2          /* offers larger than one datagram under way at once (else -EBUSY) */
#define CPB_LANE_BURST 128       /* parts sent per call before the rest waits for the next poll */

/* Events for the application (struct tcp_event.type; tcp.h lists them with TCP's own). */
#define CPB_LANE_EV_OUT TCP_EV_LANE_OUT
#define CPB_LANE_EV_IN TCP_EV_LANE_IN

struct cpb_lane_dir {
  uint8_t key[32];
  uint8_t iv[12];
};

/* Where the balancer sends a flow: backends are small integers (lb backend index, mem switch port). */
struct cpb_lane_steering {
  int (*steer)(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int32_t backend);
  /* The backend the balancer names for the flow, -ENOENT when it names none, other -errno on failure. */
  int (*owner)(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport);
  /* The balancer's arbiter of a migration: the first claim of (flow, token) wins (0), a later one gets
   * -EEXIST and the winner in *owner (cpb_lb_claim, cpb_mem_claim). NULL: no fencing. The token is 64 bits
   * and the arbiter tells every one of them apart: a flow moved thousands of times leaves as many claims
   * behind, and one that matched an older migration's would decide the new one wrongly. */
  int (*claim)(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
               int32_t *owner);
  int (*unclaim)(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token);
  void *ctx;
  int32_t self; /* this runtime's backend */
};

/* The engine's native apps, as the lane needs them (apps/native.c implements them). */
struct cpb_lane_apps {
  /* The app serving flow_id (name, state); -ENOENT when it is not a native flow, -EBUSY while replies
   * wait in its output area or its peer has closed. */
  int (*export_flow)(void *ctx, uint64_t flow_id, char name[CPB_LANE_APP_NAME + 1], uint8_t state[CPB_LANE_APP_STATE]);
  /* Whether a native listener on port runs app name and has room for one more flow. */
  bool (*accepts)(void *ctx, uint16_t port, const char *name);
  /* Serves an adopted flow with app name from state on; 0 or -errno (then nothing changed). */
  int (*adopt)(void *ctx, uint64_t flow_id, uint16_t port, const char *name, const uint8_t state[CPB_LANE_APP_STATE],
               const uint8_t *record, size_t record_len, cpb_time_t now);
  /* The flow left (released here): forget it without a TCP call. */
  void (*forget)(void *ctx, uint64_t flow_id);
  void *ctx;
};

/* How the stack sends an IPv4 datagram: begin returns where the payload goes (NULL: cannot now). */
struct cpb_lane_ipout {
  uint8_t *(*begin)(void *ctx, cpb_ip4_t dst, size_t *cap);
  void (*commit)(void *ctx, uint8_t proto, size_t len);
  void (*abort)(void *ctx); /* after begin: send nothing */
  void *ctx;
};

struct cpb_lane_stats {
  uint64_t offers_sent, offers_resent, answers_in, adopted_out, rejected_out, gave_back, unanswered_released;
  uint64_t offers_in, adopted_in, rejected_in, repeated_offers;
  uint64_t late_offers; /* refused: the source had claimed the flow back (it gave up waiting) */
  uint64_t stale_copies; /* frozen copies released because their flow came back offered (given away over the channel) */
  uint64_t forwarded_out, forwarded_in, forward_dropped;
  uint64_t forward_early; /* came before their offer: kept, then injected (forwarded_in) or dropped */
  uint64_t forward_too_big; /* 0: forwards up to TCP_HOLD_SEG_MAX go in parts (kept for the stats' shape) */
  uint64_t parts_out, parts_in, parts_dup, reassembled, reasm_evicted;
  uint64_t reasm_busy; /* parts of a new big message refused while both big slots were still arriving */
  uint64_t bad_frames, auth_failures, replays, unknown_keys, steer_errors, send_failures;
};

/* What one migration from here cost, in µs from the call; kept for the last CPB_LANE_DONE migrations. */
struct cpb_lane_outcome {
  uint64_t migration_id;
  int32_t err; /* 0 (target owns the flow), or -errno the target refused with, or -ETIMEDOUT (given back) */
  uint32_t answered_us;    /* from the offer to the answer (or to the balancer's word, unanswered) */
  uint32_t target_at_us;   /* from the offer to its arrival at the target, when both share a clock (one machine) */
  uint32_t forwarded;      /* segments passed on until the outcome */
  uint32_t snapshot_bytes;
};

struct cpb_lane;

struct cpb_lane *cpb_lane_new(struct cpb_tcp *t, const struct cpb_lane_ipout *out, const struct cpb_lane_apps *apps);
void cpb_lane_free(struct cpb_lane *l);

/* Installs key id for peer: tx seals what we send, rx opens what the peer sends. The newest key of a peer
 * is the one offers go out under. backend: the peer's balancer backend, -1 when unknown. Returns 0,
 * -EEXIST (that id is installed: its sequence numbers and window go on), -ENOSPC (peer table full). The
 * oldest key of a peer makes room for a fifth. */
int cpb_lane_set_key(struct cpb_lane *l, cpb_ip4_t peer, uint64_t key_id, const struct cpb_lane_dir *tx,
                     const struct cpb_lane_dir *rx, int32_t backend);
/* Forgets key id of peer (its channel closed); 0 or -ENOENT. Migrations under way keep their key. */
int cpb_lane_drop_key(struct cpb_lane *l, cpb_ip4_t peer, uint64_t key_id);
void cpb_lane_set_steering(struct cpb_lane *l, const struct cpb_lane_steering *st);

/* Starts moving native flow flow_id to peer: freeze, snapshot, seal, send (the frames leave with the
 * caller's next flush; a big offer's remaining parts from cpb_lane_poll). record (record_len bytes, may be
 * NULL when 0) rides in the offer to the target's apps.adopt. The outcome comes as CPB_LANE_EV_OUT.
 * Returns 0, -EINVAL, -ENOENT (no such flow, or not a native one), -EBUSY (replies pending, already
 * moving, or every buffer for big offers in use), -ENOTCONN (not in a state that moves), -ENOKEY (no key
 * for peer), -EMSGSIZE (snapshot and record beyond CPB_LANE_MSG_MAX: use the channel), -ENOSPC (too many
 * migrations under way), -EEXIST (that id and epoch are under way to peer: ids must be unique). On
 * failure the flow runs on untouched. */
int cpb_lane_migrate(struct cpb_lane *l, uint64_t flow_id, cpb_ip4_t peer, uint64_t migration_id, uint32_t epoch,
                     uint32_t budget_ms, const uint8_t *record, size_t record_len, cpb_time_t now);
/* Around an adoption that did not come through the lane (the channel's, engine_wrap.cc Adopt): before it,
 * older frozen copies of the snapshot's flow here are retired (their flow is offered back, so the peer owns
 * it: a copy in the lane's grace, one whose lane answer is still on the way, one JS keeps for the channel's
 * grace); after it (fid, or 0 when it failed) what those copies held goes into the new flow. */
void cpb_lane_retire_stale(struct cpb_lane *l, const uint8_t *snap, size_t len, cpb_time_t now);
void cpb_lane_after_adopt(struct cpb_lane *l, uint64_t fid, cpb_time_t now);
/* A migration's claim token at the balancer (never 0): both sides compute it from the offer's id and epoch
 * and the IV of the direction it travelled (the source's tx, the target's rx of one key). */
uint64_t cpb_lane_claim_token(uint64_t migration_id, uint32_t epoch, const uint8_t dir_iv[12]);
/* A datagram of protocol CPB_LANE_PROTO from src (IPv4 payload). */
void cpb_lane_input(struct cpb_lane *l, cpb_ip4_t src, const uint8_t *p, size_t len, cpb_time_t now);
/* Timers: re-sends, budgets, forwarding of stragglers, ends of graces. Returns the next deadline. */
cpb_time_t cpb_lane_poll(struct cpb_lane *l, cpb_time_t now);
bool cpb_lane_has_events(const struct cpb_lane *l);
/* A migration from here waits for its answer (or is still sending its offer's parts). Any thread, no lock.
 * The engine does not busy-poll for it: on a small machine that takes the CPU the target needs. */
bool cpb_lane_waiting(const struct cpb_lane *l);
bool cpb_lane_next_event(struct cpb_lane *l, struct tcp_event *ev);
/* The outcome of a migration that ended; false when unknown (still under way, or too old). */
bool cpb_lane_outcome(const struct cpb_lane *l, uint64_t migration_id, struct cpb_lane_outcome *out);
void cpb_lane_get_stats(const struct cpb_lane *l, struct cpb_lane_stats *out);

/* Steering through the XDP balancer's pinned redirect map (fd, which the lane then owns and closes) or
 * the mem: switch called wire; self is this runtime's backend there. 0 or -EINVAL. */
int cpb_lane_steer_lb(struct cpb_lane *l, int fd, int32_t self);
int cpb_lane_steer_mem(struct cpb_lane *l, const char *wire, int32_t self);
#endif
