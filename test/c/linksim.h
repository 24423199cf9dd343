/* A header-only network simulator for TCP tests with more than two instances: a virtual clock, a packet
 * heap ordered by delivery time, a seeded fault model (loss, duplication, reordering, jitter), and
 * delivery by destination address to whichever instance currently answers for it (`up`), so several
 * instances can share one address the way a migrated connection's old and new hosts do. Every host
 * has its own clock offset from the network's, like machines whose monotonic clocks disagree. A tap
 * sees every segment as it is emitted; a filter may drop chosen segments. (test_tcp_pair.c keeps its
 * own two-host copy of the same ideas.) Everything is static: include it from one test file. */
#ifndef CPB_TEST_LINKSIM_H
#define CPB_TEST_LINKSIM_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "tcp/tcp.h"
#include "wire/tcp.h"

#define LS_MAX_HOSTS 4

struct ls_fault {
  unsigned loss_pm, dup_pm, reorder_pm; /* per mille */
  cpb_time_t delay_us, jitter_us, reorder_us;
  uint64_t ns_per_byte; /* serialization per destination address (0: infinite bandwidth) */
};

struct ls_pkt {
  cpb_time_t at;
  uint64_t order;
  cpb_ip4_t src, dst;
  size_t len;
  uint8_t *data;
};

struct ls_net;

struct ls_host {
  struct ls_net *net;
  int idx;
  cpb_ip4_t ip;
  bool up;          /* receives packets addressed to ip */
  int64_t clock_off; /* host clock = network clock + clock_off */
  struct cpb_arena arena;
  struct cpb_tcp *t;
  uint8_t frame[1600];
  cpb_ip4_t fsrc, fdst;
  cpb_time_t deadline; /* network time */
};

struct ls_net {
  struct ls_fault f;
  uint64_t rng;
  struct ls_pkt *heap;
  size_t n, cap;
  uint64_t order;
  cpb_time_t now;
  cpb_time_t wake_at; /* the step function's own next deadline (network time) */
  bool mute;          /* drop everything sent (benchmarks, fuzzing a single instance) */
  struct ls_host h[LS_MAX_HOSTS];
  int nh;
  uint64_t sent, dropped, undeliverable;
  struct {
    cpb_ip4_t dst;
    uint64_t busy_ns; /* the lane toward dst is busy until then */
  } lane[LS_MAX_HOSTS];
  void *cb_ctx;
  /* every emitted segment (before faults) */
  void (*tap)(void *ctx, int from, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len);
  /* true drops the segment (deterministic losses) */
  bool (*filter)(void *ctx, int from, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len);
};

static inline cpb_time_t ls_host_now(const struct ls_host *h) {
  return (cpb_time_t)((int64_t)h->net->now + h->clock_off);
}

static uint64_t ls_rnd(struct ls_net *n) {
  n->rng ^= n->rng << 13;
  n->rng ^= n->rng >> 7;
  n->rng ^= n->rng << 17;
  return n->rng;
}
static bool ls_chance(struct ls_net *n, unsigned pm) { return pm && ls_rnd(n) % 1000 < pm; }

static bool ls_before(const struct ls_pkt *a, const struct ls_pkt *b) {
  return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void ls_push(struct ls_net *n, struct ls_pkt p) {
  if (n->n == n->cap) {
    n->cap = n->cap ? n->cap * 2 : 256;
    n->heap = realloc(n->heap, n->cap * sizeof(*n->heap));
    if (!n->heap) abort();
  }
  size_t i = n->n++;
  n->heap[i] = p;
  while (i > 0) {
    size_t par = (i - 1) / 2;
    if (!ls_before(&n->heap[i], &n->heap[par])) break;
    struct ls_pkt tmp = n->heap[i];
    n->heap[i] = n->heap[par];
    n->heap[par] = tmp;
    i = par;
  }
}

static struct ls_pkt ls_pop(struct ls_net *n) {
  struct ls_pkt top = n->heap[0];
  n->heap[0] = n->heap[--n->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n->n && ls_before(&n->heap[l], &n->heap[m])) m = l;
    if (r < n->n && ls_before(&n->heap[r], &n->heap[m])) m = r;
    if (m == i) break;
    struct ls_pkt tmp = n->heap[i];
    n->heap[i] = n->heap[m];
    n->heap[m] = tmp;
    i = m;
  }
  return top;
}

static void ls_send(struct ls_net *n, int from, const uint8_t *data, size_t len, cpb_ip4_t src, cpb_ip4_t dst) {
  n->sent++;
  if (n->tap) n->tap(n->cb_ctx, from, src, dst, data, len);
  if (n->mute || (n->filter && n->filter(n->cb_ctx, from, src, dst, data, len)) || ls_chance(n, n->f.loss_pm)) {
    n->dropped++;
    return;
  }
  cpb_time_t depart = n->now;
  if (n->f.ns_per_byte) {
    int l = 0;
    while (l < LS_MAX_HOSTS - 1 && n->lane[l].dst && n->lane[l].dst != dst) l++;
    n->lane[l].dst = dst;
    uint64_t start = CPB_MAX(n->lane[l].busy_ns, (uint64_t)n->now * 1000);
    n->lane[l].busy_ns = start + (uint64_t)len * n->f.ns_per_byte;
    depart = n->lane[l].busy_ns / 1000;
  }
  int copies = ls_chance(n, n->f.dup_pm) ? 2 : 1;
  for (int c = 0; c < copies; c++) {
    struct ls_pkt p = {.src = src, .dst = dst, .len = len};
    p.at = depart + n->f.delay_us + (n->f.jitter_us ? ls_rnd(n) % n->f.jitter_us : 0);
    if (ls_chance(n, n->f.reorder_pm)) p.at += n->f.reorder_us;
    p.order = n->order++;
    p.data = malloc(len);
    if (!p.data) abort();
    memcpy(p.data, data, len);
    ls_push(n, p);
  }
}

static uint8_t *ls_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  struct ls_host *h = ctx;
  h->fsrc = src;
  h->fdst = dst;
  *cap = 1480;
  return h->frame;
}

static void ls_commit(void *ctx, size_t len) {
  struct ls_host *h = ctx;
  if (!len) return;
  tcp_fill_checksum(h->frame, len, h->fsrc, h->fdst);
  ls_send(h->net, h->idx, h->frame, len, h->fsrc, h->fdst);
}

/* Adds a host; tweak (may be NULL) adjusts its configuration. */
static struct ls_host *ls_add_host(struct ls_net *n, cpb_ip4_t ip, int64_t clock_off, uint32_t chunks,
                                   void (*tweak)(struct tcp_config *c, void *ctx), void *tctx) {
  if (n->nh >= LS_MAX_HOSTS) abort();
  struct ls_host *h = &n->h[n->nh];
  memset(h, 0, sizeof(*h));
  h->net = n;
  h->idx = n->nh++;
  h->ip = ip;
  h->up = true;
  h->clock_off = clock_off;
  struct cpb_arena_config ac = {.slots = 16, .chunks = chunks};
  if (cpb_arena_create(&h->arena, &ac) != 0) abort();
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = ip;
  c.max_flows = 8;
  c.time_wait_us = 2 * 1000000;
  c.fin_wait2_us = 10 * 1000000;
  for (int k = 0; k < 16; k++) c.iss_secret[k] = (uint8_t)(k * 7 + h->idx * 13 + 1);
  if (tweak) tweak(&c, tctx);
  h->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = h, .begin = ls_begin, .commit = ls_commit};
  if (!h->t || tcp_init(h->t, &h->arena, &c, &out) != 0) abort();
  h->deadline = UINT64_MAX;
  return h;
}

static void ls_init(struct ls_net *n, uint64_t seed, cpb_time_t start) {
  memset(n, 0, sizeof(*n));
  n->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
  n->now = start;
}

static void ls_free(struct ls_net *n) {
  while (n->n) free(ls_pop(n).data);
  free(n->heap);
  n->heap = NULL;
  for (int i = 0; i < n->nh; i++) {
    tcp_fini(n->h[i].t);
    free(n->h[i].t);
    cpb_arena_destroy(&n->h[i].arena);
  }
  n->nh = 0;
}

static struct ls_host *ls_route(struct ls_net *n, cpb_ip4_t dst) {
  for (int i = 0; i < n->nh; i++)
    if (n->h[i].up && n->h[i].ip == dst) return &n->h[i];
  return NULL;
}

/* Polls every host and returns the network time of the next thing to happen. */
static cpb_time_t ls_poll_all(struct ls_net *n) {
  cpb_time_t next = n->wake_at;
  for (int i = 0; i < n->nh; i++) {
    struct ls_host *h = &n->h[i];
    cpb_time_t d = tcp_poll(h->t, ls_host_now(h));
    h->deadline = d == UINT64_MAX ? UINT64_MAX : (cpb_time_t)((int64_t)d - h->clock_off);
    if (h->deadline < next) next = h->deadline;
  }
  if (n->n && n->heap[0].at < next) next = n->heap[0].at;
  return next;
}

/* Runs until step returns true (then true) or nothing is left to happen before limit (false). step runs
 * first in every iteration (the applications), then every host is polled, then time moves to the next
 * event and due packets are delivered. step may set n->wake_at to be called again at a given time. */
static bool ls_run(struct ls_net *n, bool (*step)(struct ls_net *n, void *ctx), void *ctx, cpb_time_t limit) {
  for (uint64_t iter = 0; iter < 100000000ULL; iter++) {
    n->wake_at = UINT64_MAX;
    if (step && step(n, ctx)) return true;
    cpb_time_t next = ls_poll_all(n);
    if (next == UINT64_MAX || next > limit) return step ? step(n, ctx) : false; /* quiet: one last look */
    if (next > n->now) n->now = next;
    while (n->n && n->heap[0].at <= n->now) {
      struct ls_pkt p = ls_pop(n);
      struct ls_host *h = ls_route(n, p.dst);
      if (h) tcp_input(h->t, p.src, p.dst, p.data, p.len, ls_host_now(h));
      else n->undeliverable++;
      free(p.data);
    }
  }
  return false;
}
#endif
