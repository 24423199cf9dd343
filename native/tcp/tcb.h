/* The transmission control block and the module's private state. A TCB is plain data: no pointers,
 * only indices (chunk chains, other slots), so it can live in a shared-memory arena slot and be copied
 * out whole as a snapshot. Everything that is per-module (tables, lists, counters) lives in cpb_tcp. */
#ifndef CPB_TCP_TCB_H
#define CPB_TCP_TCB_H
#include "../wire/tcp.h"
#include "assembler.h"
#include "chunkq.h"
#include "tcp.h"

#define TCP_NONE UINT32_MAX
#define TCP_ID_SLOT_BITS 20
#define TCP_ID_SLOT_MASK ((1u << TCP_ID_SLOT_BITS) - 1)
#define TCP_ID_LISTENER (1ULL << 51)
#define TCP_GEN_MASK 0x7fffffffu
#define TCP_EV_LISTENER_BIT 0x80000000u

#define TCP_DEFAULT_MSS 536u /* RFC 9293 §3.7.1: assumed when the peer sends no MSS option */
#define TCP_MAX_WSCALE 14
#define TCP_TS_LEN 12        /* NOP NOP + 10-byte timestamp option, as every data segment carries it */
#define TCP_PAWS_24DAYS_US (24ULL * 24 * 3600 * CPB_US_PER_S)

enum tcp_timer { TT_RTO, TT_DELACK, TT_PERSIST, TT_KEEPALIVE, TT_LINGER, TT_COUNT };

/* Flag bits in tcb.flags. */
enum {
  TF_APP = 1u << 0,          /* the application holds a handle */
  TF_ACK_NOW = 1u << 1,      /* an ACK must go out at the next output */
  TF_FIN_QUEUED = 1u << 2,   /* app shut down writing: FIN follows the queued data */
  TF_FIN_RCVD = 1u << 3,     /* peer's FIN processed (rcv_nxt covers it) */
  TF_OOO_FIN = 1u << 4,      /* a FIN beyond a hole is remembered at ooo_fin_seq */
  TF_TS_OK = 1u << 5,
  TF_SACK_OK = 1u << 6,
  TF_WS_OK = 1u << 7,
  TF_NODELAY = 1u << 8,
  TF_KEEPALIVE = 1u << 9,
  TF_IN_RECOVERY = 1u << 10,
  TF_RTT_TIMING = 1u << 11,  /* rtt_seq/rtt_time time a segment (Karn: cleared on retransmission) */
  TF_WANT_WRITABLE = 1u << 12,
  TF_OUT_PENDING = 1u << 13, /* on the module's output list */
  TF_EV_QUEUED = 1u << 14,   /* on the module's event FIFO */
  TF_PASSIVE = 1u << 15,     /* created by a listener */
  TF_ACCEPT_Q = 1u << 16,    /* established, waiting in the listener's accept queue */
  TF_HASHED = 1u << 17,      /* in the flow table */
  TF_SACK_RECOVERY = 1u << 18,
  TF_EOF_SEEN = 1u << 19,    /* READABLE for EOF already raised */
  TF_CLOSED_EV = 1u << 20,   /* CLOSED already raised */
  TF_DISCARD = 1u << 21,     /* orphaned: incoming data is not wanted */
  TF_FIRST_PARTIAL = 1u << 22,
  TF_FROZEN = 1u << 23,      /* tcp_freeze: no output, timers out of the heap, input held (freeze.c) */
};

struct tcb {
  uint32_t gen;      /* copy of the slot generation (ids carry it) */
  uint32_t self;     /* own slot index */
  uint32_t flags;
  uint8_t state;     /* enum tcp_state */
  uint8_t snd_wscale, rcv_wscale;
  uint8_t backoff;   /* RTO exponent */
  uint8_t dupacks;
  uint8_t retries;   /* consecutive timeouts of the same data (or SYN) */
  uint8_t probes;    /* keepalive probes unanswered / persist backoff */
  uint8_t limited_tx;
  int32_t err;       /* why the flow died (-ECONNRESET ...), for recv/send and the CLOSED event */

  cpb_ip4_t lip, rip;
  uint16_t lport, rport;
  uint16_t peer_mss;  /* from the SYN (or 536) */
  uint16_t smss;      /* payload bytes per full segment we send */
  uint16_t rcv_mss;   /* largest payload seen: "full segment" for delayed ACK */
  uint16_t pad0;
  uint32_t listener;  /* listener index + 1, 0 when none */
  uint32_t acc_next, acc_prev; /* links in the listener's half-open or ready list */

  /* module lists (indices of slots) */
  uint32_t ev_next, out_next;
  uint8_t ev_mask;
  uint8_t pad1[3];
  uint32_t heap_pos;  /* 1-based position in the timer heap, 0 when absent */
  cpb_time_t deadline; /* earliest armed timer */
  cpb_time_t timer[TT_COUNT];

  /* send sequence space (RFC 9293 §3.3.1) */
  uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd;
  uint32_t snd_sml;   /* end of the last small segment sent (Minshall's Nagle) */
  uint32_t sndq_seq;  /* sequence number of sndq byte 0 (iss+1 until data is acknowledged) */
  struct chunkq sndq; /* unacknowledged and unsent bytes; the FIN, if queued, follows them */

  /* receive sequence space */
  uint32_t irs, rcv_nxt, rcv_adv; /* rcv_adv: right edge we advertised, never moves left */
  uint32_t last_ack_sent;
  uint32_t ooo_fin_seq;
  struct chunkq rcvq; /* unread in-order bytes, then out-of-order bytes at their window offsets */
  struct seqranges ooo;

  /* timestamps (RFC 7323) */
  uint32_t ts_offset, ts_recent;
  cpb_time_t ts_recent_age;

  /* RTT / RTO (RFC 6298) in microseconds */
  uint32_t srtt, rttvar, rto;
  uint32_t rtt_seq;
  cpb_time_t rtt_time;

  /* congestion control */
  uint32_t cwnd, ssthresh, recover, bytes_acked;
  uint32_t high_rxt, rescue_rxt;
  struct seqranges sacked; /* the sender's SACK scoreboard */
  struct {
    double w_max, w_last_max, k, w_est; /* segments, seconds */
    double acc;                         /* growth below one byte, carried over */
    cpb_time_t epoch;                   /* 0: no epoch */
  } cubic;

  /* keepalive / idle */
  cpb_time_t last_rcv;
  uint32_t keepidle_us;
  uint32_t rto_min_us; /* TCP_OPT_RTO_MIN_US; 0: cfg.rto_min_us (host-local, not in snapshots) */

  uint64_t bytes_in, bytes_out, retransmits;

  /* live migration (freeze.c): host-local, never part of a snapshot */
  cpb_time_t frozen_at;
  uint32_t hold_head, hold_tail; /* held segments, indices into cpb_tcp.hold (TCP_NONE: none) */
  uint32_t hold_n, hold_bytes;
};

_Static_assert(sizeof(struct tcb) <= CPB_SLOT_SIZE, "a TCB must fit one arena slot");

struct tcp_listener {
  uint32_t gen;
  bool used;
  uint16_t port;
  uint32_t backlog;
  uint32_t nhalf, nqueued;
  uint32_t half_head;            /* SYN_RECEIVED children */
  uint32_t ready_head, ready_tail; /* established children waiting for tcp_accept, oldest first */
  uint32_t ev_next;
  uint8_t ev_mask;
  bool ev_queued;
  cpb_time_t cookie_at; /* last SYN cookie sent (0: never): only then are ACKs checked as cookies */
};

struct cpb_tcp {
  struct tcp_config cfg;
  struct cpb_arena *arena;
  struct cpb_ipout out;
  struct tcp_stats stats;
  cpb_time_t now; /* latest time seen, for calls without `now` */

  uint32_t nslots;  /* arena slots (bounded by 2^20) */
  uint32_t *gen;    /* generation per slot */
  uint8_t *live;    /* 1 when the slot holds one of our TCBs */

  uint32_t *ftab;   /* open addressing, slot indices, TCP_NONE empty */
  uint32_t ftab_mask;

  struct tcp_listener *lis;

  uint32_t *heap;   /* slot indices ordered by tcb.deadline */
  uint32_t heap_n;

  uint32_t ev_head, ev_tail;
  uint32_t out_head, out_tail;

  cpb_time_t chack_epoch;
  uint32_t chack_count;
  uint32_t next_ephemeral;

  struct tcp_held *hold; /* cfg.hold_segs buffers for segments of frozen flows */
  uint32_t hold_free;    /* free list through tcp_held.next */

  bool fixed_iss;
  uint32_t fixed_iss_val, fixed_tsoff;
  uint64_t hkey[2]; /* flow-table hash key, derived from iss_secret */
};

/* A segment kept for a frozen flow, as it arrived. */
struct tcp_held {
  uint32_t next;
  uint32_t len;
  cpb_ip4_t src, dst;
  uint8_t data[TCP_HOLD_SEG_MAX];
};

/* ---- slots and ids (flow.c) ---- */
static inline struct tcb *tcb_at(const struct cpb_tcp *t, uint32_t idx) {
  return (struct tcb *)cpb_arena_slot(t->arena, idx);
}
static inline uint64_t tcb_id(const struct tcb *b) { return (uint64_t)b->self | ((uint64_t)b->gen << TCP_ID_SLOT_BITS); }
struct tcb *flow_alloc(struct cpb_tcp *t);
/* Looks an app id up; NULL when stale/unknown or no longer held by the app. */
struct tcb *flow_by_id(struct cpb_tcp *t, uint64_t id);
/* Protocol side is done: unhash, stop timers, drop the send queue (and the receive queue if reset). */
void flow_set_closed(struct cpb_tcp *t, struct tcb *b, int err);
/* Frees the slot when nobody needs it any more; returns true when freed. */
bool flow_maybe_free(struct cpb_tcp *t, struct tcb *b);
void flow_fill_info(const struct cpb_tcp *t, const struct tcb *b, struct tcp_flow_info *fi);
void tcb_set_state(struct cpb_tcp *t, struct tcb *b, enum tcp_state s);

/* ---- flow table (flowtab.c) ---- */
int flowtab_init(struct cpb_tcp *t, uint32_t max_flows);
struct tcb *flowtab_lookup(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport);
void flowtab_insert(struct cpb_tcp *t, struct tcb *b);
void flowtab_remove(struct cpb_tcp *t, struct tcb *b);

/* ---- ISS and timestamp offsets (iss.c) ---- */
uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);
uint32_t iss_generate(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport, cpb_time_t now);
uint32_t ts_offset_generate(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport);

/* ---- timers (timers.c) ---- */
void timer_set(struct cpb_tcp *t, struct tcb *b, enum tcp_timer k, cpb_time_t at);
void timer_clear(struct cpb_tcp *t, struct tcb *b, enum tcp_timer k);
void timer_clear_all(struct cpb_tcp *t, struct tcb *b);
static inline bool timer_armed(const struct tcb *b, enum tcp_timer k) { return b->timer[k] != 0; }
void timers_run(struct cpb_tcp *t, cpb_time_t now);
/* Freeze support: take the flow out of the heap keeping its deadlines / put it back. */
void timer_suspend(struct cpb_tcp *t, struct tcb *b);
void timer_resume(struct cpb_tcp *t, struct tcb *b);
cpb_time_t timers_next(const struct cpb_tcp *t);
void rto_arm(struct cpb_tcp *t, struct tcb *b, cpb_time_t now); /* (re)start with the backed-off RTO */
uint32_t rto_current(const struct cpb_tcp *t, const struct tcb *b);
/* The flow's RTO floor: its own (TCP_OPT_RTO_MIN_US) or the engine's. */
static inline uint32_t rto_floor(const struct cpb_tcp *t, const struct tcb *b) {
  return b->rto_min_us ? b->rto_min_us : t->cfg.rto_min_us;
}
/* RTO from the current estimate (RFC 6298 2.3), clamped to the flow's floor and the engine's ceiling. */
void rto_update(struct cpb_tcp *t, struct tcb *b);
/* Handlers for the timers in `due` (bit per enum tcp_timer) (timeouts.c). May free b. */
void timeout_fire(struct cpb_tcp *t, struct tcb *b, unsigned due, cpb_time_t now);

/* ---- RTT (rtt.c) ---- */
void rtt_init(struct cpb_tcp *t, struct tcb *b);
void rtt_sample(struct cpb_tcp *t, struct tcb *b, uint32_t rtt_us);

/* ---- congestion control (cc.c, cc_newreno.c, cc_cubic.c) ---- */
void cc_init(struct cpb_tcp *t, struct tcb *b);
void cc_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, cpb_time_t now); /* outside recovery */
void cc_on_loss(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);  /* sets ssthresh (and cwnd) */
void cc_on_rto(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
uint32_t cc_flight(const struct tcb *b);
void newreno_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked);
uint32_t newreno_ssthresh(const struct tcb *b);
void cubic_reset(struct tcb *b);
void cubic_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, cpb_time_t now);
uint32_t cubic_on_loss(struct tcb *b); /* returns ssthresh */

/* ---- SACK scoreboard (sack.c) ---- */
void sack_update(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r);
bool sack_is_lost(const struct tcb *b, uint32_t seq);
uint32_t sack_pipe(const struct tcb *b);
/* RFC 6675 NextSeg: returns true and the range to (re)send; *is_new says it is new data. */
bool sack_next_seg(struct cpb_tcp *t, struct tcb *b, uint32_t *seq, uint32_t *len, bool *is_new);

/* ---- loss recovery (recovery.c) ---- */
/* Called for every acceptable ACK: acked = sequence space newly acknowledged, data_acked = bytes of it
 * that were data, is_dup = a duplicate ACK by RFC 5681/6675. */
void recovery_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, uint32_t data_acked, bool is_dup,
                     cpb_time_t now);
void recovery_on_rto(struct cpb_tcp *t, struct tcb *b);

/* ---- output (output.c) ---- */
static inline uint32_t snd_data_end(const struct tcb *b) { return b->sndq_seq + b->sndq.len; }
static inline bool fin_sent(const struct tcb *b) {
  return (b->flags & TF_FIN_QUEUED) && seq_gt(b->snd_max, snd_data_end(b));
}
static inline bool fin_acked(const struct tcb *b) {
  return (b->flags & TF_FIN_QUEUED) && seq_gt(b->snd_una, snd_data_end(b));
}
void tcp_output(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
/* Sends [seq, seq+len) from the queue (adding FIN if it reaches it); len may be 0 for a bare FIN. */
int output_segment(struct cpb_tcp *t, struct tcb *b, uint32_t seq, uint32_t len, cpb_time_t now);
int output_ack(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
int output_syn(struct cpb_tcp *t, struct tcb *b, cpb_time_t now); /* SYN or SYN-ACK by state */
void output_first_syn(struct cpb_tcp *t, struct tcb *b, cpb_time_t now); /* first SYN/SYN-ACK: timed, RTO armed */
int output_rst_for(struct cpb_tcp *t, struct tcb *b, cpb_time_t now); /* RST from a live TCB */
int output_keepalive(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
int output_probe(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
/* RST in reply to a segment that has no connection (RFC 9293 §3.10.7.1). */
void output_rst_reply(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r);
/* Sends one header-only segment that belongs to no TCB (RST replies, SYN-cookie SYN-ACKs); false when
 * the device had no room. */
bool output_bare(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r);
void output_schedule(struct cpb_tcp *t, struct tcb *b); /* flush at the next tcp_poll */
void output_unschedule(struct cpb_tcp *t, struct tcb *b);
void output_flush(struct cpb_tcp *t, cpb_time_t now);
uint32_t rcv_window_avail(const struct cpb_tcp *t, const struct tcb *b);
bool challenge_ack(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
static inline uint32_t ts_now(const struct tcb *b, cpb_time_t now) { return (uint32_t)(now / CPB_US_PER_MS) + b->ts_offset; }

/* ---- events (events.c) ---- */
void ev_raise(struct cpb_tcp *t, struct tcb *b, enum tcp_event_type ev);
void ev_raise_listener(struct cpb_tcp *t, uint32_t lidx);
void ev_cancel(struct cpb_tcp *t, struct tcb *b);
void ev_cancel_listener(struct cpb_tcp *t, uint32_t lidx);
void ev_check_writable(struct cpb_tcp *t, struct tcb *b);

/* ---- listeners and passive open (listen.c) ---- */
struct tcp_listener *listener_find(struct cpb_tcp *t, uint16_t port);
void listen_input(struct cpb_tcp *t, struct tcp_listener *l, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r,
                  cpb_time_t now);
void listen_established(struct cpb_tcp *t, struct tcb *b); /* SYN_RECEIVED -> accept queue */
void listen_detach(struct cpb_tcp *t, struct tcb *b);      /* remove a child from its listener */

/* ---- SYN cookies (syncookie.c) ---- */
/* Answers a SYN with a stateless SYN-ACK whose ISS (and TSval) encode the handshake. */
void syncookie_send(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *syn, cpb_time_t now);
/* Validates a listener-bound ACK as the answer to a cookie; on success *syn is the SYN it stood for
 * (peer ISN, MSS, and with timestamps the window scale, SACK-permitted and the peer's TSval). */
bool syncookie_check(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *ack, cpb_time_t now,
                     struct tcp_repr *syn);
#define SYNCOOKIE_CHECK_US (3ULL * 64 * CPB_US_PER_S) /* ACKs are checked this long after the last cookie */

/* ---- active open (connect.c) ---- */
void syn_sent_input(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now);
void tcb_apply_syn_options(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now);
void tcb_init_common(struct cpb_tcp *t, struct tcb *b, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip,
                     uint16_t rport, cpb_time_t now);

/* ---- input (input.c, ack.c, data.c) ---- */
void ack_process(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now);
void data_process(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now);
void enter_time_wait(struct cpb_tcp *t, struct tcb *b, cpb_time_t now);
void tcb_input(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now);
/* Receive-side reaction after the app drained data: window update if it opened enough. */
void rcv_after_read(struct cpb_tcp *t, struct tcb *b);
uint32_t rcv_max_chunks(const struct cpb_tcp *t, const struct tcb *b);
uint32_t snd_max_chunks(const struct cpb_tcp *t);

/* ---- live migration (freeze.c) ---- */
int hold_init(struct cpb_tcp *t);
void hold_fini(struct cpb_tcp *t);
/* Keeps a segment that arrived for a frozen flow (or drops and counts it). */
void hold_segment(struct cpb_tcp *t, struct tcb *b, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len);
void hold_drop_all(struct cpb_tcp *t, struct tcb *b);
static inline bool tcb_frozen(const struct tcb *b) { return (b->flags & TF_FROZEN) != 0; }
#endif
