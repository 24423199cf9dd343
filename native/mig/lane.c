/* The migration lane (see lane.h): keys and sealing, the source's migrations in progress, the target's
 * memory of offers, and the messages between them; messages beyond one datagram go in parts (lanefrag.c). */
#include "lane.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "../tcp/snapshot.h"
#include "lanefrag.h"
#include "lanekey.h"
#include "lanesteer.h"

#define HDR_LEN LANE_HDR_LEN
#define TAG_LEN LANE_TAG_LEN
#define BODY_HEAD 12 /* migration id + epoch */
#define MAX_PLAIN LANE_MAX_PLAIN
#define FWD_MAX (BODY_HEAD + 10 + TCP_HOLD_SEG_MAX)
#define RTO_MAX_US 64000
#define RETRY_US 50 /* the device had no room for a part: try again this soon */
#define EVENTS 64

enum { T_OFFER = 1, T_ADOPTED = 2, T_REJECTED = 3, T_FORWARD = 4, T_PART = 5 };
_Static_assert(FWD_MAX <= LANE_SMALL_MAX, "a forwarded segment fits a small slot");

struct peer {
  cpb_ip4_t ip; /* 0 = free */
  int32_t backend;
  struct lane_key keys[CPB_LANE_KEYS];
};

struct kept_seg {
  cpb_ip4_t src, dst;
  uint16_t len;
  uint8_t bytes[TCP_HOLD_SEG_MAX];
};

static void kept_set(struct kept_seg *k, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  k->src = src, k->dst = dst, k->len = (uint16_t)len;
  memcpy(k->bytes, seg, len);
}

enum out_state { OUT_FREE = 0, OUT_ASKING, OUT_OWNED };

struct out {
  enum out_state state;
  uint64_t flow_id, migration_id, key_id;
  uint32_t epoch;
  uint64_t token; /* its claim at the balancer (fixed at the start: the key may go) */
  cpb_ip4_t peer;
  cpb_ip4_t lip, rip;
  uint16_t lport, rport;
  cpb_time_t started, next_send, deadline, grace_end;
  uint32_t rto, rto_max;
  struct cpb_lane_outcome res;
  uint8_t *offer; /* inline_offer, or a pool buffer (pool >= 0) */
  uint32_t offer_len;
  int pool;
  uint32_t msg;                /* its message number when it goes in parts */
  uint16_t nparts, next_part;  /* next_part < nparts: this copy is still leaving (its re-send timer waits) */
  uint8_t nkept;
  struct kept_seg kept[CPB_LANE_KEEP];
  uint8_t inline_offer[MAX_PLAIN];
};

/* A forward of a migration not heard of yet (its offer still incomplete here), waiting for the offer. */
struct early_seg {
  cpb_ip4_t peer; /* 0 = free */
  uint32_t epoch;
  uint64_t migration_id;
  cpb_time_t at;
  uint32_t order; /* arrival order, to inject in it */
  struct kept_seg seg;
};

enum seen_state { SEEN_ADOPTED = 1, SEEN_REJECTED };

struct seen {
  cpb_ip4_t peer; /* 0 = free */
  uint32_t epoch;
  uint64_t migration_id;
  enum seen_state state;
  int32_t err;
  uint64_t flow_id;
  cpb_time_t at; /* when the offer came (its round's clock), told to the source in the answer */
};

struct cpb_lane {
  _Atomic uint32_t asking; /* migrations from here waiting for their answer (read by the engine without the lock) */
  struct cpb_tcp *tcp;
  struct cpb_lane_ipout ipout;
  struct cpb_lane_apps apps;
  struct cpb_lane_steering steer;
  struct lane_steer_ctx steer_ctx;
  uint64_t installs;
  struct peer peers[CPB_LANE_PEERS];
  struct out outs[CPB_LANE_OUT];
  struct cpb_lane_outcome done[CPB_LANE_DONE]; /* ring of the last outcomes */
  uint32_t done_next;
  struct seen seen[CPB_LANE_SEEN];
  uint32_t seen_next;
  struct tcp_event ev[EVENTS];
  uint32_t ev_head, ev_len;
  struct cpb_lane_stats stats;
  struct lane_reasm reasm;
  uint8_t *pool[CPB_LANE_POOL]; /* big offers kept for re-sends, CPB_LANE_MSG_MAX each */
  bool pool_used[CPB_LANE_POOL];
  uint8_t plain[MAX_PLAIN + 64]; /* what a datagram opened to */
  uint8_t part[MAX_PLAIN];       /* a part being sealed */
  uint8_t fwd[FWD_MAX];          /* a forward being built (input may be under way in plain) */
  uint8_t nstale;                /* segments an older copy of an offered flow held (retire_stale_copies) */
  struct kept_seg stale[CPB_LANE_KEEP];
  struct early_seg early[CPB_LANE_KEEP];
  uint32_t early_order;
};

/* ---- little-endian fields ---- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* ---- setup ---- */

struct cpb_lane *cpb_lane_new(struct cpb_tcp *t, const struct cpb_lane_ipout *out, const struct cpb_lane_apps *apps) {
  struct cpb_lane *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->tcp = t;
  l->ipout = *out;
  if (apps) l->apps = *apps;
  l->steer_ctx.fd = -1;
  l->steer.self = -1;
  bool ok = lane_reasm_init(&l->reasm) == 0;
  for (int i = 0; i < CPB_LANE_POOL; i++) ok = ok && (l->pool[i] = malloc(CPB_LANE_MSG_MAX)) != NULL; /* untouched until used */
  if (!ok) {
    cpb_lane_free(l);
    return NULL;
  }
  return l;
}

static void offer_drop(struct cpb_lane *l, struct out *o);

void cpb_lane_free(struct cpb_lane *l) {
  if (!l) return;
  for (int i = 0; i < CPB_LANE_OUT; i++) offer_drop(l, &l->outs[i]);
  for (int i = 0; i < CPB_LANE_POOL; i++) free(l->pool[i]);
  lane_reasm_free(&l->reasm);
  for (int p = 0; p < CPB_LANE_PEERS; p++)
    for (int k = 0; k < CPB_LANE_KEYS; k++) lane_key_clear(&l->peers[p].keys[k]);
  lane_steer_ctx_clear(&l->steer_ctx);
  memset(l, 0, sizeof(*l)); /* snapshots and kept segments may hold payload */
  free(l);
}

static struct peer *peer_find(struct cpb_lane *l, cpb_ip4_t ip) {
  for (int i = 0; i < CPB_LANE_PEERS; i++)
    if (l->peers[i].ip == ip) return &l->peers[i];
  return NULL;
}

int cpb_lane_set_key(struct cpb_lane *l, cpb_ip4_t peer, uint64_t key_id, const struct cpb_lane_dir *tx,
                     const struct cpb_lane_dir *rx, int32_t backend) {
  if (peer == 0 || key_id == 0) return -EINVAL;
  struct peer *p = peer_find(l, peer);
  if (!p && !(p = peer_find(l, 0))) return -ENOSPC;
  p->ip = peer;
  p->backend = backend;
  struct lane_key *k = NULL, *oldest = &p->keys[0];
  /* Installed already: keep its counters (starting them again would reuse nonces and reopen the window). */
  for (int i = 0; i < CPB_LANE_KEYS; i++)
    if (p->keys[i].used && p->keys[i].id == key_id) return -EEXIST;
  for (int i = 0; i < CPB_LANE_KEYS && !k; i++)
    if (!p->keys[i].used) k = &p->keys[i];
  if (!k) {
    for (int i = 1; i < CPB_LANE_KEYS; i++)
      if (p->keys[i].installed < oldest->installed) oldest = &p->keys[i];
    k = oldest;
  }
  int rc = lane_key_init(k, key_id, tx, rx);
  if (rc) return rc;
  k->installed = ++l->installs;
  return 0;
}

int cpb_lane_drop_key(struct cpb_lane *l, cpb_ip4_t peer, uint64_t key_id) {
  struct peer *p = peer_find(l, peer);
  if (!p || peer == 0) return -ENOENT;
  for (int i = 0; i < CPB_LANE_KEYS; i++)
    if (p->keys[i].used && p->keys[i].id == key_id) {
      lane_key_clear(&p->keys[i]);
      return 0;
    }
  return -ENOENT;
}

static struct lane_key *key_find(struct peer *p, uint64_t id) {
  for (int i = 0; p && i < CPB_LANE_KEYS; i++)
    if (p->keys[i].used && p->keys[i].id == id) return &p->keys[i];
  return NULL;
}

static struct lane_key *key_newest(struct peer *p) {
  struct lane_key *best = NULL;
  for (int i = 0; p && i < CPB_LANE_KEYS; i++)
    if (p->keys[i].used && (!best || p->keys[i].installed > best->installed)) best = &p->keys[i];
  return best;
}

/* ---- steering (lanesteer.c) ---- */

void cpb_lane_set_steering(struct cpb_lane *l, const struct cpb_lane_steering *st) {
  lane_steer_ctx_clear(&l->steer_ctx);
  if (st) l->steer = *st;
  else memset(&l->steer, 0, sizeof(l->steer)), l->steer.self = -1;
}

int cpb_lane_steer_lb(struct cpb_lane *l, int fd, int32_t self) {
  if (fd < 0 || self < 0) return -EINVAL;
  cpb_lane_set_steering(l, NULL);
  return lane_steering_lb(&l->steer, &l->steer_ctx, fd, self);
}

int cpb_lane_steer_mem(struct cpb_lane *l, const char *wire, int32_t self) {
  cpb_lane_set_steering(l, NULL);
  return lane_steering_mem(&l->steer, &l->steer_ctx, wire, self);
}

/* ---- events and outcomes ---- */

static void lane_raise(struct cpb_lane *l, int type, uint64_t id, int32_t err) {
  if (l->ev_len == EVENTS) { /* the application is far behind: the oldest is the least useful */
    l->ev_head = (l->ev_head + 1) % EVENTS;
    l->ev_len--;
  }
  l->ev[(l->ev_head + l->ev_len) % EVENTS] = (struct tcp_event){.type = (enum tcp_event_type)type, .id = id, .err = err};
  l->ev_len++;
}

bool cpb_lane_waiting(const struct cpb_lane *l) { return l && atomic_load_explicit(&l->asking, memory_order_relaxed) > 0; }

bool cpb_lane_has_events(const struct cpb_lane *l) { return l && l->ev_len > 0; }

bool cpb_lane_next_event(struct cpb_lane *l, struct tcp_event *ev) {
  if (!l || l->ev_len == 0) return false;
  *ev = l->ev[l->ev_head];
  l->ev_head = (l->ev_head + 1) % EVENTS;
  l->ev_len--;
  return true;
}

bool cpb_lane_outcome(const struct cpb_lane *l, uint64_t migration_id, struct cpb_lane_outcome *out) {
  for (int i = 0; i < CPB_LANE_DONE; i++)
    if (l->done[i].migration_id == migration_id && migration_id != 0) {
      *out = l->done[i];
      return true;
    }
  return false;
}

void cpb_lane_get_stats(const struct cpb_lane *l, struct cpb_lane_stats *out) {
  *out = l->stats;
  out->reasm_evicted = l->reasm.evicted;
  out->reasm_busy = l->reasm.busy;
}

static uint32_t since(cpb_time_t now, cpb_time_t t0) { return now > t0 ? (uint32_t)CPB_MIN(now - t0, UINT32_MAX) : 0; }

/* ---- sealing (lanekey.c) ---- */

/* Seals plaintext (len bytes) as one datagram of type to peer under key k. 0 or -errno. */
static int send_sealed(struct cpb_lane *l, cpb_ip4_t peer, struct lane_key *k, uint8_t type, const uint8_t *pt,
                       size_t len) {
  size_t cap;
  if (!k || !k->tx) return -ENOKEY;
  uint8_t *p = l->ipout.begin(l->ipout.ctx, peer, &cap);
  if (!p) {
    l->stats.send_failures++;
    return -EAGAIN;
  }
  long n = lane_key_seal(k, type, pt, len, p, cap);
  if (n < 0) {
    l->ipout.abort(l->ipout.ctx);
    l->stats.send_failures++;
    return (int)n;
  }
  l->ipout.commit(l->ipout.ctx, CPB_LANE_PROTO, (size_t)n);
  return 0;
}

/* Opens a datagram into l->plain; the plaintext length, or -errno (counted). */
static long open_sealed(struct cpb_lane *l, struct lane_key *k, const uint8_t *p, size_t len) {
  long n = lane_key_open(k, p, len, l->plain);
  if (n == -EALREADY) l->stats.replays++;
  else if (n == -EBADMSG) l->stats.auth_failures++;
  return n;
}

static uint32_t next_msg(struct lane_key *k) {
  if (++k->tx_msg == 0) ++k->tx_msg; /* 0 is never a message number */
  return k->tx_msg;
}

/* Sends message m (len bytes, type) to peer under k: whole when it fits one datagram, else its parts
 * from *next on, at most max of them per call. Returns 0 (all sealed), -EAGAIN (the device has no room
 * now: *next is where to go on), -EINPROGRESS (max reached), or another -errno when some part could not
 * be sealed (lost: a re-send brings it). */
static int send_parts(struct cpb_lane *l, cpb_ip4_t peer, struct lane_key *k, uint8_t type, const uint8_t *m, size_t len,
                      uint32_t msg, uint16_t *next, int max) {
  if (len <= MAX_PLAIN) {
    *next = 1;
    return send_sealed(l, peer, k, type, m, len);
  }
  uint16_t count = lane_part_count(len);
  int err = 0;
  for (int sent = 0; *next < count; sent++) {
    if (sent == max) return -EINPROGRESS;
    size_t n = lane_part_emit(msg, type, m, len, *next, l->part);
    int rc = send_sealed(l, peer, k, T_PART, l->part, n);
    memset(l->part, 0, n);
    if (rc == -EAGAIN) return rc;
    if (rc) err = rc;
    else l->stats.parts_out++;
    ++*next;
  }
  return err;
}

static void head(uint8_t *b, uint64_t migration_id, uint32_t epoch) {
  put64(b, migration_id);
  put32(b + 8, epoch);
}

/* ---- the balancer's arbitration (lane.h: Ownership) ---- */

/* The IV tells the migrations of the two runtimes apart even when their ids and epochs coincide. */
uint64_t cpb_lane_claim_token(uint64_t migration_id, uint32_t epoch, const uint8_t dir_iv[12]) {
  uint64_t x = migration_id ^ ((uint64_t)epoch << 32) ^ get64(dir_iv);
  x *= 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return x ? x : 1; /* never 0 */
}

enum claim_result {
  CLAIM_NEW,    /* claimed just now */
  CLAIM_OURS,   /* claimed by us before (a repeat of an offer we adopted, no longer remembered) */
  CLAIM_THEIRS, /* the other side holds it */
  CLAIM_NONE,   /* no arbiter (none configured, or it failed) */
};

static enum claim_result claim(struct cpb_lane *l, cpb_ip4_t rip, uint16_t rport, cpb_ip4_t lip, uint16_t lport,
                               uint64_t token, int32_t *winner) {
  if (!l->steer.claim || l->steer.self < 0) return CLAIM_NONE;
  int32_t who = -1;
  int rc = l->steer.claim(l->steer.ctx, rip, rport, lip, lport, token, l->steer.self, &who);
  if (rc == 0) return CLAIM_NEW;
  if (rc == -EEXIST) {
    *winner = who;
    return who == l->steer.self ? CLAIM_OURS : CLAIM_THEIRS;
  }
  l->stats.steer_errors++;
  return CLAIM_NONE;
}

/* ---- source ---- */

static struct out *out_find_flow(struct cpb_lane *l, uint64_t flow_id) {
  for (int i = 0; i < CPB_LANE_OUT; i++)
    if (l->outs[i].state != OUT_FREE && l->outs[i].flow_id == flow_id) return &l->outs[i];
  return NULL;
}

static struct out *out_find_id(struct cpb_lane *l, cpb_ip4_t peer, uint64_t migration_id, uint32_t epoch) {
  for (int i = 0; i < CPB_LANE_OUT; i++) {
    struct out *o = &l->outs[i];
    if (o->state != OUT_FREE && o->peer == peer && o->migration_id == migration_id && o->epoch == epoch) return o;
  }
  return NULL;
}

/* Sends the current copy of the offer on from where it stopped; once its last part has left, the re-send
 * timer starts (a timer started with the first part would fire while a big offer is still leaving). */
static void send_offer(struct cpb_lane *l, struct out *o, cpb_time_t now) {
  struct lane_key *k = key_find(peer_find(l, o->peer), o->key_id);
  int rc = send_parts(l, o->peer, k, T_OFFER, o->offer, o->offer_len, o->msg, &o->next_part, CPB_LANE_BURST);
  if (o->next_part < o->nparts) { /* the rest in the next round (the device's ring drains meanwhile) */
    o->next_send = rc == -EAGAIN ? now + RETRY_US : now;
    return;
  }
  if (rc == 0) l->stats.offers_sent++;
  o->next_send = now + o->rto;
}

/* Where the offer is built: inline when it fits one datagram, else a pool buffer. 0, -EMSGSIZE, -EBUSY. */
static int offer_buffer(struct cpb_lane *l, struct out *o, size_t total) {
  o->pool = -1;
  if (total <= MAX_PLAIN) {
    o->offer = o->inline_offer;
    return 0;
  }
  if (total > CPB_LANE_MSG_MAX) return -EMSGSIZE;
  for (int i = 0; i < CPB_LANE_POOL; i++)
    if (!l->pool_used[i]) {
      l->pool_used[i] = true;
      o->pool = i;
      o->offer = l->pool[i];
      return 0;
    }
  return -EBUSY;
}

/* The offer is decided (or never was): wipe it (it holds the flow's bytes) and give its buffer back. */
static void offer_drop(struct cpb_lane *l, struct out *o) {
  if (o->offer) memset(o->offer, 0, o->offer_len);
  if (o->pool >= 0 && o->pool < CPB_LANE_POOL) l->pool_used[o->pool] = false;
  o->offer = NULL;
  o->offer_len = 0;
  o->pool = -1;
  o->nparts = o->next_part = 0;
}

struct fwd_ctx {
  struct cpb_lane *l;
  struct out *o;
  bool keep; /* before the answer: keep a copy for giving the flow back */
};

static void forward_one(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct fwd_ctx *f = ctx;
  struct cpb_lane *l = f->l;
  struct out *o = f->o;
  if (f->keep) {
    kept_set(&o->kept[o->nkept++], src, dst, seg, len);
  }
  if (BODY_HEAD + 10 + len > FWD_MAX) { /* not from TCP's hold (TCP_HOLD_SEG_MAX) */
    l->stats.forward_too_big++;
    return;
  }
  uint8_t *b = l->fwd;
  size_t n = BODY_HEAD + 10 + len;
  head(b, o->migration_id, o->epoch);
  put32(b + BODY_HEAD, src);
  put32(b + BODY_HEAD + 4, dst);
  put16(b + BODY_HEAD + 8, (uint16_t)len);
  memcpy(b + BODY_HEAD + 10, seg, len);
  struct lane_key *k = key_find(peer_find(l, o->peer), o->key_id);
  uint16_t next = 0;
  /* A full-sized segment goes in two parts; one lost is sent again by the client's TCP. */
  if (send_parts(l, o->peer, k, T_FORWARD, b, n, n > MAX_PLAIN && k ? next_msg(k) : 0, &next, INT32_MAX) == 0) {
    l->stats.forwarded_out++;
    o->res.forwarded++;
  }
  memset(b, 0, n);
}

/* Sends what the frozen flow held since the last time. Before the answer only as many as can be kept. */
static void forward_held(struct cpb_lane *l, struct out *o) {
  struct tcp_flow_info fi;
  if (tcp_flow_info(l->tcp, o->flow_id, &fi) != 0 || fi.held_segs == 0) return;
  bool keep = o->state == OUT_ASKING;
  if (keep && o->next_part < o->nparts) return; /* they follow the offer, never overtake it */
  if (keep && o->nkept + fi.held_segs > CPB_LANE_KEEP) return; /* they wait for the answer, held */
  struct fwd_ctx f = {.l = l, .o = o, .keep = keep};
  tcp_held_drain(l->tcp, o->flow_id, forward_one, &f);
}

static void out_record(struct cpb_lane *l, struct out *o, int32_t err) {
  o->res.err = err;
  l->done[l->done_next] = o->res;
  l->done_next = (l->done_next + 1) % CPB_LANE_DONE;
  lane_raise(l, CPB_LANE_EV_OUT, o->migration_id, err);
}

static void out_free(struct cpb_lane *l, struct out *o) {
  offer_drop(l, o);
  for (int i = 0; i < o->nkept; i++) memset(o->kept[i].bytes, 0, o->kept[i].len);
  o->state = OUT_FREE;
  o->nkept = 0;
}

/* The target owns the flow: from now on what arrives here is passed on until the grace ends. */
static void out_owned(struct cpb_lane *l, struct out *o, cpb_time_t now) {
  atomic_fetch_sub_explicit(&l->asking, 1, memory_order_relaxed);
  o->state = OUT_OWNED;
  o->res.answered_us = since(now, o->started);
  o->grace_end = now + CPB_LANE_GRACE_US;
  offer_drop(l, o);
  for (int i = 0; i < o->nkept; i++) memset(o->kept[i].bytes, 0, o->kept[i].len);
  o->nkept = 0;
  forward_held(l, o);
  out_record(l, o, 0);
}

static void out_finish(struct cpb_lane *l, struct out *o, cpb_time_t now) {
  forward_held(l, o);
  if (l->apps.forget) l->apps.forget(l->apps.ctx, o->flow_id);
  tcp_release(l->tcp, o->flow_id, now);
  out_free(l, o);
}

/* Before the source takes a flow back: does the target own it? With an arbiter, the source's own claim
 * decides (losing it means the target claimed, i.e. adopted); without one, the balancer's entry naming the
 * target is the sign (it steers right after adopting). */
static bool target_owns(struct cpb_lane *l, struct out *o) {
  int32_t winner = -1;
  enum claim_result cr = claim(l, o->rip, o->rport, o->lip, o->lport, o->token, &winner);
  if (cr != CLAIM_NONE) return cr == CLAIM_THEIRS;
  int owner = l->steer.owner ? l->steer.owner(l->steer.ctx, o->rip, o->rport, o->lip, o->lport) : -ENOENT;
  struct peer *p = peer_find(l, o->peer);
  return owner >= 0 && p && p->backend >= 0 && owner == p->backend;
}

/* No adoption: the flow carries on here, with what was sent ahead injected again behind what is held. */
static void out_give_back(struct cpb_lane *l, struct out *o, int32_t err, cpb_time_t now) {
  atomic_fetch_sub_explicit(&l->asking, 1, memory_order_relaxed);
  l->stats.gave_back++;
  tcp_unfreeze(l->tcp, o->flow_id, now);
  for (int i = 0; i < o->nkept; i++) tcp_input(l->tcp, o->kept[i].src, o->kept[i].dst, o->kept[i].bytes, o->kept[i].len, now);
  out_record(l, o, err);
  out_free(l, o);
}

/* Writes the offer into o's buffer: head, app, snapshot, record. The snapshot's length, or -errno (then
 * the buffer is given back). */
static long offer_build(struct cpb_lane *l, struct out *o, uint64_t flow_id, const char *name, const uint8_t *state,
                        const uint8_t *record, size_t record_len, cpb_time_t now) {
  size_t nlen = strnlen(name, CPB_LANE_APP_NAME);
  long need = tcp_snapshot_size(l->tcp, flow_id);
  if (need < 0) return need;
  size_t total = BODY_HEAD + 1 + nlen + CPB_LANE_APP_STATE + 4 + (size_t)need + 4 + record_len;
  int rc = offer_buffer(l, o, total);
  if (rc) return rc;
  uint8_t *b = o->offer;
  size_t off = BODY_HEAD;
  head(b, o->migration_id, o->epoch);
  b[off++] = (uint8_t)nlen;
  memcpy(b + off, name, nlen);
  off += nlen;
  memcpy(b + off, state, CPB_LANE_APP_STATE);
  off += CPB_LANE_APP_STATE;
  long sn = tcp_snapshot(l->tcp, flow_id, b + off + 4, total - off - 8 - record_len, now);
  if (sn < 0) {
    o->offer_len = (uint32_t)total;
    offer_drop(l, o);
    return sn == -ENOSPC ? -EMSGSIZE : sn;
  }
  put32(b + off, (uint32_t)sn);
  off += 4 + (size_t)sn;
  put32(b + off, (uint32_t)record_len);
  if (record_len) memcpy(b + off + 4, record, record_len);
  o->offer_len = (uint32_t)(off + 4 + record_len);
  return sn;
}

int cpb_lane_migrate(struct cpb_lane *l, uint64_t flow_id, cpb_ip4_t peer, uint64_t migration_id, uint32_t epoch,
                     uint32_t budget_ms, const uint8_t *record, size_t record_len, cpb_time_t now) {
  if (migration_id == 0 || budget_ms == 0 || (record_len && !record)) return -EINVAL;
  if (record_len > CPB_LANE_MSG_MAX) return -EMSGSIZE;
  struct peer *p = peer_find(l, peer);
  struct lane_key *k = peer ? key_newest(p) : NULL;
  if (!k) return -ENOKEY;
  if (out_find_flow(l, flow_id)) return -EBUSY;
  /* An id the target may remember: it would answer this flow's offer as that one's (no adoption). */
  if (out_find_id(l, peer, migration_id, epoch)) return -EEXIST;
  struct out *o = NULL;
  for (int i = 0; i < CPB_LANE_OUT && !o; i++)
    if (l->outs[i].state == OUT_FREE) o = &l->outs[i];
  if (!o) return -ENOSPC;
  if (!l->apps.export_flow) return -ENOENT;
  char name[CPB_LANE_APP_NAME + 1] = "";
  uint8_t state[CPB_LANE_APP_STATE];
  int rc = l->apps.export_flow(l->apps.ctx, flow_id, name, state);
  if (rc) return rc;
  memset(o, 0, offsetof(struct out, kept));
  o->pool = -1;
  rc = tcp_freeze(l->tcp, flow_id, now);
  if (rc) return rc == -EALREADY ? -EBUSY : rc;
  o->migration_id = migration_id;
  o->epoch = epoch;
  long sn = offer_build(l, o, flow_id, name, state, record, record_len, now);
  if (sn < 0) {
    tcp_unfreeze(l->tcp, flow_id, now);
    return (int)sn;
  }
  struct tcp_flow_info fi;
  tcp_flow_info(l->tcp, flow_id, &fi);
  o->lip = fi.local_ip, o->rip = fi.remote_ip, o->lport = fi.local_port, o->rport = fi.remote_port;
  o->state = OUT_ASKING;
  atomic_fetch_add_explicit(&l->asking, 1, memory_order_relaxed);
  o->flow_id = flow_id;
  o->migration_id = migration_id;
  o->epoch = epoch;
  o->peer = peer;
  o->key_id = k->id;
  o->token = cpb_lane_claim_token(migration_id, epoch, k->tx_iv);
  o->nparts = o->offer_len <= MAX_PLAIN ? 1 : lane_part_count(o->offer_len);
  o->msg = o->nparts > 1 ? next_msg(k) : 0;
  /* A big offer takes a while to arrive and to open: a re-send before that only adds load. */
  o->rto = CPB_LANE_RTO_US + (uint32_t)((uint64_t)o->offer_len * CPB_LANE_RTO_NS_PER_BYTE / 1000);
  o->rto_max = CPB_MAX(RTO_MAX_US, 4 * o->rto);
  o->deadline = now + (cpb_time_t)budget_ms * CPB_US_PER_MS;
  o->started = now;
  o->res.migration_id = migration_id;
  o->res.snapshot_bytes = (uint32_t)sn;
  send_offer(l, o, now);
  forward_held(l, o); /* what arrived since the freeze: none yet, unless the caller held the lock long */
  return 0;
}

/* ---- target ---- */

static struct seen *seen_find(struct cpb_lane *l, cpb_ip4_t peer, uint64_t migration_id, uint32_t epoch) {
  for (int i = 0; i < CPB_LANE_SEEN; i++) {
    struct seen *s = &l->seen[i];
    if (s->peer == peer && s->migration_id == migration_id && s->epoch == epoch) return s;
  }
  return NULL;
}

static struct seen *seen_add(struct cpb_lane *l, cpb_ip4_t peer, uint64_t migration_id, uint32_t epoch,
                             enum seen_state st, int32_t err, uint64_t flow_id, cpb_time_t at) {
  struct seen *s = &l->seen[l->seen_next];
  l->seen_next = (l->seen_next + 1) % CPB_LANE_SEEN;
  *s = (struct seen){.peer = peer, .migration_id = migration_id, .epoch = epoch, .state = st, .err = err, .flow_id = flow_id, .at = at};
  return s;
}

static void answer(struct cpb_lane *l, cpb_ip4_t peer, struct lane_key *k, const struct seen *s) {
  uint8_t b[BODY_HEAD + 8];
  head(b, s->migration_id, s->epoch);
  if (s->state == SEEN_ADOPTED) {
    put64(b + BODY_HEAD, s->at);
    send_sealed(l, peer, k, T_ADOPTED, b, BODY_HEAD + 8);
  } else {
    put32(b + BODY_HEAD, (uint32_t)s->err);
    send_sealed(l, peer, k, T_REJECTED, b, BODY_HEAD + 4);
  }
}

static void keep_stale(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct cpb_lane *l = ctx;
  if (l->nstale == CPB_LANE_KEEP || len > TCP_HOLD_SEG_MAX) return; /* the client sends it again */
  kept_set(&l->stale[l->nstale++], src, dst, seg, len);
}

/* An older copy of an offered flow here holds its 4-tuple. The peer offering the flow owns it (it adopted it
 * from us), so that copy is stale whatever stage our side of its migration is at: the lane's grace, a lane
 * migration whose answer is still on the way (decided now: the target owns it), or a copy given away over
 * the channel that JS keeps frozen for its grace (JS's later release finds no flow, as after any release).
 * Only migrations freeze flows. What the copy held is the client's: it goes into the adopted flow. */
static void release_stale(struct cpb_lane *l, uint64_t flow_id, cpb_time_t now) {
  tcp_held_drain(l->tcp, flow_id, keep_stale, l);
  if (l->apps.forget) l->apps.forget(l->apps.ctx, flow_id);
  tcp_release(l->tcp, flow_id, now);
}

static void retire_stale_copies(struct cpb_lane *l, const struct tcp_snap *ts, cpb_time_t now) {
  l->nstale = 0;
  for (int i = 0; i < CPB_LANE_OUT; i++) {
    struct out *o = &l->outs[i];
    if (o->state == OUT_FREE || o->lip != ts->lip || o->rip != ts->rip || o->lport != ts->lport || o->rport != ts->rport)
      continue;
    if (o->state == OUT_ASKING) {
      atomic_fetch_sub_explicit(&l->asking, 1, memory_order_relaxed);
      l->stats.adopted_out++;
      o->res.answered_us = since(now, o->started);
      out_record(l, o, 0);
    }
    release_stale(l, o->flow_id, now);
    out_free(l, o);
  }
  uint64_t old = 0;
  struct tcp_flow_info fi;
  if (tcp_find_flow(l->tcp, ts->lip, ts->lport, ts->rip, ts->rport, &old) == 0 && tcp_flow_info(l->tcp, old, &fi) == 0 &&
      fi.frozen) {
    release_stale(l, old, now);
    l->stats.stale_copies++;
  }
}

/* After the adoption (fid, or 0 when it failed): the stale copy's segments go into the new flow, or nowhere. */
void cpb_lane_after_adopt(struct cpb_lane *l, uint64_t fid, cpb_time_t now) {
  for (int i = 0; i < l->nstale; i++) {
    struct kept_seg *k = &l->stale[i];
    if (fid) tcp_input(l->tcp, k->src, k->dst, k->bytes, k->len, now);
    memset(k->bytes, 0, k->len);
  }
  l->nstale = 0;
}

void cpb_lane_retire_stale(struct cpb_lane *l, const uint8_t *snap, size_t len, cpb_time_t now) {
  struct tcp_snap ts;
  l->nstale = 0;
  if (tcp_snap_parse(snap, len, &ts) == 0) retire_stale_copies(l, &ts, now);
}

static int32_t adopt_offer(struct cpb_lane *l, const uint8_t *b, size_t len, uint64_t token, cpb_time_t now, uint64_t *flow_id) {
  size_t off = BODY_HEAD;
  if (len < off + 1) return -EBADMSG;
  size_t nlen = b[off++];
  if (nlen == 0 || nlen > CPB_LANE_APP_NAME || len < off + nlen + CPB_LANE_APP_STATE + 4) return -EBADMSG;
  char name[CPB_LANE_APP_NAME + 1];
  memcpy(name, b + off, nlen);
  name[nlen] = 0;
  off += nlen;
  const uint8_t *state = b + off;
  off += CPB_LANE_APP_STATE;
  size_t sn = get32(b + off);
  off += 4;
  if (sn > len - off || len - off - sn < 4) return -EBADMSG;
  const uint8_t *snap = b + off;
  off += sn;
  size_t rn = get32(b + off);
  off += 4;
  if (rn != len - off) return -EBADMSG;
  const uint8_t *rec = rn ? b + off : NULL;
  struct tcp_snap ts;
  int rc = tcp_snap_parse(snap, sn, &ts);
  if (rc) return rc;
  if (!l->apps.accepts || !l->apps.accepts(l->apps.ctx, ts.lport, name)) return -EPROTONOSUPPORT;
  /* The claim decides: if the source claimed first it has given up on us and serves the flow again. */
  int32_t winner = -1;
  enum claim_result cr = claim(l, ts.rip, ts.rport, ts.lip, ts.lport, token, &winner);
  if (cr == CLAIM_THEIRS) {
    l->stats.late_offers++;
    return -ESTALE;
  }
  if (cr == CLAIM_OURS) return 1; /* adopted before: answer so again, adopt nothing twice */
  retire_stale_copies(l, &ts, now);
  uint64_t fid = 0;
  rc = tcp_adopt(l->tcp, snap, sn, now, &fid);
  cpb_lane_after_adopt(l, rc == 0 ? fid : 0, now);
  if (rc == 0 && (rc = l->apps.adopt(l->apps.ctx, fid, ts.lport, name, state, rec, rn, now)) != 0) {
    tcp_freeze(l->tcp, fid, now); /* drop the copy silently: the source keeps the flow */
    tcp_release(l->tcp, fid, now);
  }
  if (rc) {
    /* Not ours after all: the source must be able to claim the flow back. */
    if (cr == CLAIM_NEW && l->steer.unclaim) l->steer.unclaim(l->steer.ctx, ts.rip, ts.rport, ts.lip, ts.lport, token);
    return rc;
  }
  *flow_id = fid;
  return 0;
}

/* ---- forwards that came before their offer ---- */

/* a arrived before b (arrival numbers wrap). */
static bool early_older(const struct early_seg *a, const struct early_seg *b) { return a->order - b->order > UINT32_MAX / 2; }

static void early_free(struct early_seg *e) {
  memset(e->seg.bytes, 0, e->seg.len);
  memset(e, 0, offsetof(struct early_seg, seg));
  e->seg.len = 0;
}

/* Keeps a forward of a migration not heard of; when all places are taken, the oldest gives way. */
static void early_keep(struct cpb_lane *l, cpb_ip4_t peer, uint64_t mid, uint32_t epoch, cpb_ip4_t src, cpb_ip4_t dst,
                       const uint8_t *seg, size_t len, cpb_time_t now) {
  struct early_seg *e = NULL;
  for (int i = 0; i < CPB_LANE_KEEP && !e; i++)
    if (!l->early[i].peer) e = &l->early[i];
  if (!e) {
    e = &l->early[0];
    for (int i = 1; i < CPB_LANE_KEEP; i++)
      if (early_older(&l->early[i], e)) e = &l->early[i];
    l->stats.forward_dropped++;
    early_free(e);
  }
  e->peer = peer, e->epoch = epoch, e->migration_id = mid, e->at = now, e->order = ++l->early_order;
  kept_set(&e->seg, src, dst, seg, len);
  l->stats.forward_early++;
}

/* The offer of (peer, mid, epoch) is decided: its early forwards go into the adopted flow in arrival order
 * (inject), or nowhere. */
static void early_settle(struct cpb_lane *l, cpb_ip4_t peer, uint64_t mid, uint32_t epoch, bool inject, cpb_time_t now) {
  for (;;) {
    struct early_seg *e = NULL;
    for (int i = 0; i < CPB_LANE_KEEP; i++) {
      struct early_seg *x = &l->early[i];
      if (x->peer == peer && x->migration_id == mid && x->epoch == epoch && (!e || early_older(x, e)))
        e = x;
    }
    if (!e) return;
    if (inject) {
      l->stats.forwarded_in++;
      tcp_input(l->tcp, e->seg.src, e->seg.dst, e->seg.bytes, e->seg.len, now);
    } else {
      l->stats.forward_dropped++;
    }
    early_free(e);
  }
}

/* Early forwards whose offer never came; the next time one would go (UINT64_MAX: none). */
static cpb_time_t early_expire(struct cpb_lane *l, cpb_time_t now) {
  cpb_time_t next = UINT64_MAX;
  for (int i = 0; i < CPB_LANE_KEEP; i++) {
    struct early_seg *e = &l->early[i];
    if (!e->peer) continue;
    if (now >= e->at + CPB_LANE_EARLY_US) {
      l->stats.forward_dropped++;
      early_free(e);
    } else {
      next = CPB_MIN(next, e->at + CPB_LANE_EARLY_US);
    }
  }
  return next;
}

/* A copy of an offer decided here (its answer was lost or is late) is answered as before; false when it is new. */
static bool answer_repeat(struct cpb_lane *l, cpb_ip4_t src, struct lane_key *k, uint64_t mid, uint32_t epoch) {
  struct seen *s = seen_find(l, src, mid, epoch);
  if (!s) return false;
  l->stats.repeated_offers++;
  answer(l, src, k, s);
  return true;
}

static void on_offer(struct cpb_lane *l, cpb_ip4_t src, struct lane_key *k, const uint8_t *b, size_t len, cpb_time_t now) {
  uint64_t mid = get64(b);
  uint32_t epoch = get32(b + 8);
  l->stats.offers_in++;
  if (answer_repeat(l, src, k, mid, epoch)) return;
  uint64_t fid = 0;
  int32_t err = adopt_offer(l, b, len, cpb_lane_claim_token(mid, epoch, k->rx_iv), now, &fid);
  if (err == 1) {
    l->stats.repeated_offers++;
    early_settle(l, src, mid, epoch, false, now);
    answer(l, src, k, seen_add(l, src, mid, epoch, SEEN_ADOPTED, 0, 0, now));
    return;
  }
  if (err) {
    l->stats.rejected_in++;
    early_settle(l, src, mid, epoch, false, now); /* the source kept its copies: it gives them back there */
    answer(l, src, k, seen_add(l, src, mid, epoch, SEEN_REJECTED, err, 0, now));
    return;
  }
  l->stats.adopted_in++;
  /* The balancer follows before the answer leaves: from here the client's segments come to us. */
  if (l->steer.steer && l->steer.self >= 0) {
    struct tcp_flow_info fi;
    tcp_flow_info(l->tcp, fid, &fi);
    if (l->steer.steer(l->steer.ctx, fi.remote_ip, fi.remote_port, fi.local_ip, fi.local_port, l->steer.self) != 0)
      l->stats.steer_errors++;
  }
  answer(l, src, k, seen_add(l, src, mid, epoch, SEEN_ADOPTED, 0, fid, now));
  early_settle(l, src, mid, epoch, true, now);
  lane_raise(l, CPB_LANE_EV_IN, fid, 0);
}

static void on_forward(struct cpb_lane *l, cpb_ip4_t src, const uint8_t *b, size_t len, cpb_time_t now) {
  struct seen *s = seen_find(l, src, get64(b), get32(b + 8));
  if (len < BODY_HEAD + 10 || BODY_HEAD + 10 + (size_t)get16(b + BODY_HEAD + 8) != len) {
    l->stats.bad_frames++;
    return;
  }
  cpb_ip4_t seg_src = get32(b + BODY_HEAD), seg_dst = get32(b + BODY_HEAD + 4);
  const uint8_t *seg = b + BODY_HEAD + 10;
  size_t seg_len = len - BODY_HEAD - 10;
  if (!s) { /* ahead of its offer, which is still incomplete here (lane.h) */
    if (seg_len <= TCP_HOLD_SEG_MAX) early_keep(l, src, get64(b), get32(b + 8), seg_src, seg_dst, seg, seg_len, now);
    else l->stats.forward_dropped++;
    return;
  }
  struct tcp_flow_info fi;
  /* Only into a flow adopted here that is still here: anything else would make TCP answer with RST. A flow
   * already moving on from here (frozen) holds the segment and passes it on with the rest of what it holds:
   * dropped, it would cost the client an RTO, and a flow moved again and again before each RTO (whose
   * backoff doubles) could wait minutes for its next byte. */
  if (s->state != SEEN_ADOPTED || tcp_flow_info(l->tcp, s->flow_id, &fi) != 0) {
    l->stats.forward_dropped++;
    return;
  }
  l->stats.forwarded_in++;
  tcp_input(l->tcp, seg_src, seg_dst, seg, seg_len, now);
}

static void on_answer(struct cpb_lane *l, cpb_ip4_t src, uint8_t type, const uint8_t *b, size_t len, cpb_time_t now) {
  struct out *o = out_find_id(l, src, get64(b), get32(b + 8));
  if (type == T_REJECTED && len != BODY_HEAD + 4) return (void)l->stats.bad_frames++;
  if (type == T_ADOPTED && len != BODY_HEAD + 8) return (void)l->stats.bad_frames++;
  l->stats.answers_in++;
  if (!o || o->state != OUT_ASKING) return; /* a repeat, or too late: decided already */
  if (type == T_ADOPTED) {
    l->stats.adopted_out++;
    o->res.target_at_us = since(get64(b + BODY_HEAD), o->started);
    out_owned(l, o, now);
  } else {
    l->stats.rejected_out++;
    int32_t err = (int32_t)get32(b + BODY_HEAD);
    /* A refusal settles it unless the arbiter says otherwise (an earlier copy of the offer was adopted
     * and this answer is to a later copy the target no longer remembered). */
    if (target_owns(l, o)) out_owned(l, o, now);
    else out_give_back(l, o, err < 0 ? err : -ECONNREFUSED, now);
  }
}

/* A message (whole, or assembled from parts) of type to its handler. */
static void dispatch(struct cpb_lane *l, cpb_ip4_t src, struct lane_key *k, uint8_t type, const uint8_t *b, size_t n,
                     cpb_time_t now) {
  switch (type) {
  case T_OFFER: on_offer(l, src, k, b, n, now); break;
  case T_FORWARD: on_forward(l, src, b, n, now); break;
  default: on_answer(l, src, type, b, n, now); break;
  }
}

static void on_part(struct cpb_lane *l, cpb_ip4_t src, struct lane_key *k, const uint8_t *b, size_t n, cpb_time_t now) {
  struct lane_part p;
  /* Only offers and forwards are ever long; a forward longer than a held segment would take a big slot. */
  if (lane_part_parse(b, n, &p) != 0 || (p.type != T_OFFER && p.type != T_FORWARD) ||
      (p.type == T_FORWARD && p.total > FWD_MAX)) {
    l->stats.bad_frames++;
    return;
  }
  l->stats.parts_in++;
  struct lane_slot *s = NULL;
  int rc = lane_reasm_add(&l->reasm, src, k->id, &p, now, &s);
  if (rc < 0 && rc != -EBUSY) l->stats.bad_frames++;
  else if (rc == LANE_PART_DUP || rc == LANE_PART_DONE_BEFORE) l->stats.parts_dup++;
  if (rc == LANE_PART_DONE_BEFORE && p.type == T_OFFER && p.index == 0 && p.len >= BODY_HEAD) {
    /* Another copy of an offer decided here (its answer was lost, or is still on its way): answered again from
     * its first part, which names the migration, as a whole copy would be (on_offer). */
    l->stats.offers_in++;
    answer_repeat(l, src, k, get64(p.data), get32(p.data + 8));
    return;
  }
  if (rc != LANE_PART_DONE) return;
  l->stats.reassembled++;
  dispatch(l, src, k, s->type, s->buf, s->total, now);
  lane_reasm_release(s);
}

void cpb_lane_input(struct cpb_lane *l, cpb_ip4_t src, const uint8_t *p, size_t len, cpb_time_t now) {
  if (len < HDR_LEN + TAG_LEN + BODY_HEAD || len > HDR_LEN + MAX_PLAIN + TAG_LEN || p[0] != CPB_LANE_VERSION ||
      get16(p + 2) != 0) {
    l->stats.bad_frames++;
    return;
  }
  uint8_t type = p[1];
  if (type < T_OFFER || type > T_PART) {
    l->stats.bad_frames++;
    return;
  }
  struct peer *peer = peer_find(l, src);
  struct lane_key *k = src ? key_find(peer, get64(p + 4)) : NULL;
  if (!k) {
    l->stats.unknown_keys++;
    return;
  }
  long n = open_sealed(l, k, p, len);
  if (n < BODY_HEAD) {
    if (n >= 0) l->stats.bad_frames++;
    return;
  }
  if (type == T_PART) on_part(l, src, k, l->plain, (size_t)n, now);
  else dispatch(l, src, k, type, l->plain, (size_t)n, now);
  memset(l->plain, 0, (size_t)n);
}

cpb_time_t cpb_lane_poll(struct cpb_lane *l, cpb_time_t now) {
  cpb_time_t next = CPB_MIN(lane_reasm_expire(&l->reasm, now), early_expire(l, now));
  for (int i = 0; i < CPB_LANE_OUT; i++) {
    struct out *o = &l->outs[i];
    if (o->state == OUT_ASKING) {
      if (now >= o->deadline) {
        /* No answer: the balancer decides whether the target adopted (lane.h: Ownership). */
        if (target_owns(l, o)) {
          l->stats.unanswered_released++;
          out_owned(l, o, now);
        } else {
          out_give_back(l, o, -ETIMEDOUT, now);
          continue;
        }
      } else {
        if (now >= o->next_send && o->next_part < o->nparts) {
          send_offer(l, o, now); /* the parts that did not fit earlier */
        } else if (now >= o->next_send) {
          l->stats.offers_resent++;
          o->rto = CPB_MIN(o->rto * 2, o->rto_max);
          o->next_part = 0; /* every part again: the target keeps what it has, the copy fills its holes */
          send_offer(l, o, now);
        }
        forward_held(l, o); /* after the offer's last part */
        next = CPB_MIN(next, CPB_MIN(o->next_send, o->deadline));
        continue;
      }
    }
    if (o->state == OUT_OWNED) {
      if (now >= o->grace_end) {
        out_finish(l, o, now);
        continue;
      }
      forward_held(l, o);
      next = CPB_MIN(next, o->grace_end);
    }
  }
  return next;
}
