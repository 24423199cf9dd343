/* Two TCP instances back to back through a simulated link on a virtual clock, with a seeded fault
 * model: loss, duplication, reordering (extra delay), jitter, and byte corruption (which the receiver
 * must catch by checksum). Bulk transfers in both directions are verified byte for byte against a
 * deterministic pattern; the counters must show that the recovery machinery actually ran; at the end
 * every arena slot and chunk must be back. Also unit tests for the chunk queue and the assembler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "t.h"
#include "tcp/assembler.h"
#include "tcp/chunkq.h"
#include "tcp/tcp.h"
#include "tcp/tcb.h"
#include "tcp/tcp_debug.h"
#include "wire/tcp.h"

/* ------------------------------------------------------------------ simulated link */

struct fault {
  unsigned loss_pm, dup_pm, reorder_pm, corrupt_pm; /* per mille */
  cpb_time_t delay_us, jitter_us, reorder_us;
  unsigned queue_limit; /* packets in flight per direction before tail drop (0 = none) */
  unsigned mutate_pm;   /* flip a header/option byte and fix the checksum: valid-looking garbage */
  unsigned txfail_pm;   /* ipout has no frame (begin returns NULL): the segment is lost at the sender */
};

struct pkt {
  cpb_time_t at;
  uint64_t order;
  int to; /* host index */
  cpb_ip4_t src, dst;
  size_t len;
  uint8_t *data;
};

struct net;

struct host {
  struct net *net;
  int idx;
  cpb_ip4_t ip;
  struct cpb_arena arena;
  struct cpb_tcp *t;
  uint8_t frame[1600];
  cpb_ip4_t fsrc, fdst;
  cpb_time_t deadline;
  /* app */
  uint64_t fid, lid;
  bool have_fid, connected, shut, eof, closed, got_closed_ev;
  int32_t closed_err;
  uint64_t total, sent, rcvd;
  uint8_t seed_out, seed_in;
  uint64_t ev_count[6];
  bool slow_reader;
  cpb_time_t next_read;
};

struct net {
  struct fault f;
  uint64_t rng;
  struct pkt *heap;
  size_t n, cap;
  uint64_t order;
  unsigned inflight[2];
  cpb_time_t now;
  struct host h[2];
  uint64_t dropped, duplicated, reordered, corrupted;
  cpb_time_t trace_at;
};

static uint64_t rnd(struct net *n) {
  n->rng ^= n->rng << 13;
  n->rng ^= n->rng >> 7;
  n->rng ^= n->rng << 17;
  return n->rng;
}
static bool chance(struct net *n, unsigned pm) { return pm && rnd(n) % 1000 < pm; }

static bool pkt_before(const struct pkt *a, const struct pkt *b) {
  return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void heap_push(struct net *n, struct pkt p) {
  if (n->n == n->cap) {
    n->cap = n->cap ? n->cap * 2 : 256;
    n->heap = realloc(n->heap, n->cap * sizeof(*n->heap));
  }
  size_t i = n->n++;
  n->heap[i] = p;
  while (i > 0) {
    size_t par = (i - 1) / 2;
    if (!pkt_before(&n->heap[i], &n->heap[par])) break;
    struct pkt tmp = n->heap[i];
    n->heap[i] = n->heap[par];
    n->heap[par] = tmp;
    i = par;
  }
}

static struct pkt heap_pop(struct net *n) {
  struct pkt top = n->heap[0];
  n->heap[0] = n->heap[--n->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n->n && pkt_before(&n->heap[l], &n->heap[m])) m = l;
    if (r < n->n && pkt_before(&n->heap[r], &n->heap[m])) m = r;
    if (m == i) break;
    struct pkt tmp = n->heap[i];
    n->heap[i] = n->heap[m];
    n->heap[m] = tmp;
    i = m;
  }
  return top;
}

static void link_send(struct net *n, int from, const uint8_t *data, size_t len, cpb_ip4_t src, cpb_ip4_t dst) {
  int to = 1 - from;
  if (chance(n, n->f.loss_pm)) {
    n->dropped++;
    return;
  }
  if (n->f.queue_limit && n->inflight[to] >= n->f.queue_limit) {
    n->dropped++;
    return;
  }
  int copies = chance(n, n->f.dup_pm) ? 2 : 1;
  if (copies == 2) n->duplicated++;
  for (int c = 0; c < copies; c++) {
    struct pkt p = {.to = to, .src = src, .dst = dst, .len = len};
    p.at = n->now + n->f.delay_us + (n->f.jitter_us ? rnd(n) % n->f.jitter_us : 0);
    if (chance(n, n->f.reorder_pm)) {
      p.at += n->f.reorder_us;
      n->reordered++;
    }
    p.order = n->order++;
    p.data = malloc(len);
    memcpy(p.data, data, len);
    if (chance(n, n->f.mutate_pm)) {
      size_t span = len < 72 ? len : 72;
      p.data[rnd(n) % span] ^= (uint8_t)(1u << (rnd(n) % 8));
      tcp_fill_checksum(p.data, len, src, dst);
    }
    if (chance(n, n->f.corrupt_pm)) {
      p.data[rnd(n) % len] ^= (uint8_t)(1 + rnd(n) % 255);
      n->corrupted++;
    }
    n->inflight[to]++;
    heap_push(n, p);
  }
}

static uint8_t *h_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  struct host *h = ctx;
  if (chance(h->net, h->net->f.txfail_pm)) return NULL;
  h->fsrc = src;
  h->fdst = dst;
  *cap = 1480;
  return h->frame;
}

static void h_commit(void *ctx, size_t len) {
  struct host *h = ctx;
  if (!len) return;
  tcp_fill_checksum(h->frame, len, h->fsrc, h->fdst);
  link_send(h->net, h->idx, h->frame, len, h->fsrc, h->fdst);
}

static uint8_t patb(uint8_t seed, uint64_t off) { return (uint8_t)((off * 167 + (off >> 11) * 13 + seed) & 0xff); }

/* ------------------------------------------------------------------ pair driver */

struct pair_cfg {
  struct fault f;
  uint64_t bytes_ab, bytes_ba;
  uint64_t seed;
  void (*tweak)(struct tcp_config *c, int host);
  bool slow_reader_b;
  cpb_time_t time_limit;
  cpb_time_t abort_after; /* fuzzing: abort both flows then, and wait for every flow to go */
};

static void host_init(struct net *n, int i, const struct pair_cfg *pc) {
  struct host *h = &n->h[i];
  h->net = n;
  h->idx = i;
  h->ip = 0x0a000001u + (uint32_t)i;
  struct cpb_arena_config ac = {.slots = 16, .chunks = 2048};
  if (cpb_arena_create(&h->arena, &ac) != 0) abort();
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = h->ip;
  c.max_flows = 8;
  c.time_wait_us = 2 * 1000000;
  c.fin_wait2_us = 10 * 1000000;
  for (int k = 0; k < 16; k++) c.iss_secret[k] = (uint8_t)(pc->seed * 31 + (uint64_t)k * 7 + (uint64_t)i);
  if (pc->tweak) pc->tweak(&c, i);
  h->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = h, .begin = h_begin, .commit = h_commit};
  if (tcp_init(h->t, &h->arena, &c, &out) != 0) abort();
  h->deadline = UINT64_MAX;
  h->seed_out = (uint8_t)(i * 77 + 5);
  h->seed_in = (uint8_t)((1 - i) * 77 + 5);
}

static uint8_t iobuf[65536];

static bool host_pump(struct host *h, int *bad) {
  struct tcp_event ev;
  while (tcp_next_event(h->t, &ev)) {
    if (ev.type <= 5) h->ev_count[ev.type]++;
    if (ev.type == TCP_EV_ACCEPTABLE) {
      uint64_t id;
      if (tcp_accept(h->t, h->lid, &id) == 0) {
        h->fid = id;
        h->have_fid = true;
        h->connected = true;
      }
    } else if (ev.type == TCP_EV_CONNECTED) {
      h->connected = true;
    } else if (ev.type == TCP_EV_CLOSED) {
      h->got_closed_ev = true;
      h->closed_err = ev.err;
    }
  }
  if (!h->have_fid || !h->connected || h->closed) return false;
  cpb_time_t now = h->net->now;
  while (h->sent < h->total) {
    size_t want = (size_t)CPB_MIN((uint64_t)sizeof(iobuf), h->total - h->sent);
    for (size_t i = 0; i < want; i++) iobuf[i] = patb(h->seed_out, h->sent + i);
    long r = tcp_send(h->t, h->fid, iobuf, want, now);
    if (r <= 0) break;
    h->sent += (uint64_t)r;
  }
  if (h->sent == h->total && !h->shut) {
    tcp_shutdown(h->t, h->fid, now);
    h->shut = true;
  }
  if (!h->slow_reader || now >= h->next_read) {
    size_t cap = h->slow_reader ? 3000 : sizeof(iobuf);
    for (;;) {
      long r = tcp_recv(h->t, h->fid, iobuf, cap, now);
      if (r > 0) {
        for (long i = 0; i < r; i++)
          if (iobuf[i] != patb(h->seed_in, h->rcvd + (uint64_t)i)) {
            (*bad)++;
            break;
          }
        h->rcvd += (uint64_t)r;
        if (h->slow_reader) break;
        continue;
      }
      if (r == 0) h->eof = true;
      break;
    }
    if (h->slow_reader) h->next_read = now + 1000000;
  }
  if (h->eof && h->shut && !h->closed) {
    tcp_close(h->t, h->fid, now);
    h->closed = true;
  }
  return true;
}

struct pair_result {
  struct tcp_stats st[2];
  int bad;
  bool done;
  uint64_t rcvd[2];
  cpb_time_t finish;
  uint32_t slots_left[2], chunks_left[2];
  uint64_t ev_count[2][6];
  struct net counters;
};

static void run_pair(const struct pair_cfg *pc, struct pair_result *res) {
  struct net *n = calloc(1, sizeof(*n));
  n->f = pc->f;
  n->rng = pc->seed * 0x9e3779b97f4a7c15ULL + 1;
  n->now = 1000000;
  host_init(n, 0, pc);
  host_init(n, 1, pc);
  n->h[0].total = pc->bytes_ab;
  n->h[1].total = pc->bytes_ba;
  n->h[1].slow_reader = pc->slow_reader_b;
  memset(res, 0, sizeof(*res));
  if (tcp_listen(n->h[1].t, 80, 16, &n->h[1].lid) != 0) abort();
  if (tcp_connect(n->h[0].t, n->h[1].ip, 80, 0, n->now, &n->h[0].fid) != 0) abort();
  n->h[0].have_fid = true;
  cpb_time_t limit = n->now + (pc->time_limit ? pc->time_limit : 600ULL * 1000000);
  cpb_time_t abort_at = pc->abort_after ? n->now + pc->abort_after : UINT64_MAX;
  for (uint64_t iter = 0; iter < 50000000; iter++) {
    if (n->now >= abort_at) {
      abort_at = UINT64_MAX;
      for (int i = 0; i < 2; i++) {
        if (n->h[i].have_fid && !n->h[i].closed) tcp_abort(n->h[i].t, n->h[i].fid, n->now);
        n->h[i].closed = true;
      }
    }
    for (int i = 0; i < 2; i++) {
      host_pump(&n->h[i], &res->bad);
      n->h[i].deadline = tcp_poll(n->h[i].t, n->now);
    }
    bool finished = n->h[0].closed && n->h[1].closed && tcp_debug_flows_live(n->h[0].t) == 0 &&
                    tcp_debug_flows_live(n->h[1].t) == 0;
    if (finished) {
      res->done = true;
      break;
    }
    if (getenv("PAIR_TRACE") && n->now >= n->trace_at) {
      n->trace_at = n->now + 1000000;
      for (int i = 0; i < 2; i++) {
        struct tcp_flow_info fi;
        if (n->h[i].have_fid && tcp_flow_info(n->h[i].t, n->h[i].fid, &fi) == 0)
          fprintf(stderr, "t=%.3f h%d %s una=%u nxt=%u wnd=%u rcv_nxt=%u rwnd=%u cwnd=%u ssth=%u rto=%u unacked=%u unsent=%u readable=%u rtx=%llu sent=%llu rcvd=%llu\n",
                  (double)n->now / 1e6, i, tcp_state_name(fi.state), fi.snd_una, fi.snd_nxt, fi.snd_wnd, fi.rcv_nxt,
                  fi.rcv_wnd, fi.cwnd, fi.ssthresh, fi.rto_us, fi.unacked_bytes, fi.unsent_bytes, fi.readable_bytes,
                  (unsigned long long)fi.retransmits, (unsigned long long)n->h[i].sent, (unsigned long long)n->h[i].rcvd);
      }
    }
    cpb_time_t next = CPB_MIN(n->h[0].deadline, n->h[1].deadline);
    if (n->h[1].slow_reader && !n->h[1].closed && n->h[1].next_read > n->now) next = CPB_MIN(next, n->h[1].next_read);
    if (n->n && n->heap[0].at < next) next = n->heap[0].at;
    if (abort_at < next) next = abort_at;
    if (next == UINT64_MAX || next > limit) break;
    if (next > n->now) n->now = next;
    while (n->n && n->heap[0].at <= n->now) {
      struct pkt p = heap_pop(n);
      n->inflight[p.to]--;
      tcp_input(n->h[p.to].t, p.src, p.dst, p.data, p.len, n->now);
      free(p.data);
    }
  }
  res->finish = n->now;
  for (int i = 0; i < 2; i++) {
    struct host *h = &n->h[i];
    tcp_get_stats(h->t, &res->st[i]);
    res->rcvd[i] = h->rcvd;
    memcpy(res->ev_count[i], h->ev_count, sizeof(h->ev_count));
    res->slots_left[i] = h->arena.hdr->slots_used;
    res->chunks_left[i] = h->arena.hdr->chunks_used;
  }
  res->counters = *n;
  while (n->n) free(heap_pop(n).data);
  free(n->heap);
  for (int i = 0; i < 2; i++) {
    tcp_fini(n->h[i].t);
    free(n->h[i].t);
    cpb_arena_destroy(&n->h[i].arena);
  }
  free(n);
}

static void print_res(const char *name, const struct pair_result *r) {
  printf("# %s: done=%d t=%.1fs rcvd=%llu/%llu bad=%d | A: rtx=%llu rto=%llu frx=%llu sackrec=%llu dup=%llu badcs=%llu ooo=%llu zwp=%llu | B: rtx=%llu rto=%llu frx=%llu sackrec=%llu badcs=%llu ooo=%llu zwp=%llu\n",
         name, r->done, (double)(r->finish - 1000000) / 1e6, (unsigned long long)r->rcvd[1],
         (unsigned long long)r->rcvd[0], r->bad, (unsigned long long)r->st[0].retransmits,
         (unsigned long long)r->st[0].rto_timeouts, (unsigned long long)r->st[0].fast_retransmits,
         (unsigned long long)r->st[0].sack_recoveries, (unsigned long long)r->st[0].dup_acks,
         (unsigned long long)r->st[0].bad_checksums, (unsigned long long)r->st[0].ooo_segments,
         (unsigned long long)r->st[0].zero_window_probes, (unsigned long long)r->st[1].retransmits,
         (unsigned long long)r->st[1].rto_timeouts, (unsigned long long)r->st[1].fast_retransmits,
         (unsigned long long)r->st[1].sack_recoveries, (unsigned long long)r->st[1].bad_checksums,
         (unsigned long long)r->st[1].ooo_segments, (unsigned long long)r->st[1].zero_window_probes);
}

static void check_clean(const struct pair_result *r) {
  CHECK(r->done);
  CHECK_EQ(r->bad, 0);
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(r->slots_left[i], 0);
    CHECK_EQ(r->chunks_left[i], 0);
    CHECK_EQ(r->st[i].flows_current, 0);
  }
}

TEST(pair_lossy_20mb_both_ways_sack_cubic) {
  struct pair_cfg pc = {.f = {.loss_pm = 50, .dup_pm = 20, .reorder_pm = 30, .corrupt_pm = 5, .delay_us = 5000,
                              .jitter_us = 500, .reorder_us = 4000},
                        .bytes_ab = 20u << 20, .bytes_ba = 20u << 20, .seed = 1};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("sack+cubic 5% loss", &r);
  check_clean(&r);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
  CHECK_EQ(r.rcvd[0], pc.bytes_ba);
  for (int i = 0; i < 2; i++) {
    CHECK(r.st[i].retransmits > 0);
    CHECK(r.st[i].fast_retransmits > 0);
    CHECK(r.st[i].sack_recoveries > 0);
    CHECK(r.st[i].bad_checksums > 0);
    CHECK(r.st[i].dup_segments > 0);
    CHECK(r.st[i].ooo_segments > 0);
  }
  CHECK(r.ev_count[0][TCP_EV_CONNECTED] == 1);
  CHECK(r.ev_count[1][TCP_EV_ACCEPTABLE] == 1);
  CHECK(r.ev_count[0][TCP_EV_CLOSED] >= 1 || r.ev_count[1][TCP_EV_CLOSED] >= 1);
}

static void tweak_newreno(struct tcp_config *c, int host) {
  (void)host;
  c->sack = false;
  c->cc = TCP_CC_NEWRENO;
}

TEST(pair_lossy_newreno_no_sack) {
  struct pair_cfg pc = {.f = {.loss_pm = 30, .dup_pm = 10, .reorder_pm = 10, .corrupt_pm = 5, .delay_us = 2000,
                              .jitter_us = 200, .reorder_us = 3000},
                        .bytes_ab = 4u << 20, .bytes_ba = 1u << 20, .seed = 2, .tweak = tweak_newreno};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("newreno no-sack 3% loss", &r);
  check_clean(&r);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
  CHECK_EQ(r.rcvd[0], pc.bytes_ba);
  CHECK(r.st[0].fast_retransmits > 0);
  CHECK_EQ(r.st[0].sack_recoveries, 0);
}

static void tweak_plain(struct tcp_config *c, int host) {
  c->timestamps = false;
  c->wscale = 0;
  c->rcvbuf = host == 1 ? 16384 : c->rcvbuf;
}

TEST(pair_no_ts_no_wscale_small_window) {
  struct pair_cfg pc = {.f = {.loss_pm = 20, .txfail_pm = 10, .delay_us = 1000, .jitter_us = 100},
                        .bytes_ab = 2u << 20, .bytes_ba = 100000, .seed = 3, .tweak = tweak_plain};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("no ts, no wscale, 16K window", &r);
  check_clean(&r);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
  CHECK_EQ(r.rcvd[0], pc.bytes_ba);
}

static void tweak_smallbuf(struct tcp_config *c, int host) {
  if (host == 1) {
    c->rcvbuf = 8192;
    c->wscale = 0;
  }
}

TEST(pair_slow_reader_zero_window) {
  struct pair_cfg pc = {.f = {.loss_pm = 20, .delay_us = 1000},
                        .bytes_ab = 40000, .bytes_ba = 1000, .seed = 4, .tweak = tweak_smallbuf,
                        .slow_reader_b = true};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("slow reader", &r);
  check_clean(&r);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
  CHECK(r.st[0].zero_window_probes > 0);
}

TEST(pair_clean_link_fast) {
  struct pair_cfg pc = {.f = {.delay_us = 10000}, .bytes_ab = 8u << 20, .bytes_ba = 8u << 20, .seed = 5};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("clean 10ms", &r);
  check_clean(&r);
  CHECK_EQ(r.st[0].retransmits, 0);
  CHECK_EQ(r.st[1].retransmits, 0);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
}

TEST(pair_tail_drop_queue) {
  struct pair_cfg pc = {.f = {.delay_us = 3000, .queue_limit = 40},
                        .bytes_ab = 8u << 20, .bytes_ba = 0, .seed = 6};
  struct pair_result r;
  run_pair(&pc, &r);
  print_res("tail drop q=40", &r);
  check_clean(&r);
  CHECK_EQ(r.rcvd[1], pc.bytes_ab);
  CHECK(r.st[0].sack_recoveries > 0);
}

/* Valid-checksum garbage: flipped bits in headers and options of real segments, in both directions.
 * Data integrity cannot hold (a flipped payload bit is accepted), so this checks that nothing crashes
 * under the sanitizers and that every flow still terminates and gives its memory back. */
TEST(pair_fuzz_mutated_segments) {
  for (uint64_t seed = 10; seed < 16; seed++) {
    struct pair_cfg pc = {.f = {.mutate_pm = 30, .loss_pm = 10, .dup_pm = 10, .reorder_pm = 20, .delay_us = 2000,
                                .jitter_us = 300, .reorder_us = 3000},
                          .bytes_ab = 1u << 20, .bytes_ba = 1u << 20, .seed = seed,
                          .abort_after = 30ULL * 1000000, .time_limit = 900ULL * 1000000};
    struct pair_result r;
    run_pair(&pc, &r);
    CHECK(r.done);
    for (int i = 0; i < 2; i++) {
      CHECK_EQ(r.slots_left[i], 0);
      CHECK_EQ(r.chunks_left[i], 0);
    }
    if (seed == 10) print_res("fuzz", &r);
  }
}

/* ------------------------------------------------------------------ chunkq / assembler units */

TEST(chunkq_append_peek_consume) {
  struct cpb_arena a;
  struct cpb_arena_config ac = {.slots = 1, .chunks = 8};
  REQUIRE(cpb_arena_create(&a, &ac) == 0);
  struct chunkq q;
  chunkq_init(&q);
  static uint8_t src[20000], dst[20000];
  for (size_t i = 0; i < sizeof(src); i++) src[i] = (uint8_t)(i * 7 + 1);
  CHECK_EQ(chunkq_append(&a, &q, src, 3000, 8), 0);
  CHECK_EQ(q.nchunks, 2);
  CHECK_EQ(chunkq_append(&a, &q, src + 3000, 3000, 8), 0);
  CHECK_EQ(q.len, 6000);
  chunkq_peek(&a, &q, 1000, dst, 4000);
  CHECK(memcmp(dst, src + 1000, 4000) == 0);
  chunkq_consume(&a, &q, 2100); /* frees the first chunk */
  CHECK_EQ(q.nchunks, 2);
  CHECK_EQ(a.hdr->chunks_used, 2);
  chunkq_peek(&a, &q, 0, dst, 3900);
  CHECK(memcmp(dst, src + 2100, 3900) == 0);
  /* budget: at most 3 chunks */
  CHECK_EQ(chunkq_append(&a, &q, src, 3000, 3), -ENOBUFS);
  CHECK_EQ(q.len, 3900);
  CHECK_EQ(a.hdr->chunks_used, 2);
  chunkq_consume(&a, &q, 3900);
  CHECK_EQ(q.len, 0);
  CHECK_EQ(a.hdr->chunks_used, 0);
  CHECK_EQ(q.head, CPB_NO_CHUNK);
  /* pool exhaustion leaves the queue unchanged */
  CHECK_EQ(chunkq_append(&a, &q, src, 8 * 2048, 100), 0);
  struct chunkq q2;
  chunkq_init(&q2);
  CHECK_EQ(chunkq_append(&a, &q2, src, 10, 100), -ENOBUFS);
  CHECK_EQ(q2.nchunks, 0);
  chunkq_clear(&a, &q);
  CHECK_EQ(a.hdr->chunks_used, 0);
  cpb_arena_destroy(&a);
}

TEST(chunkq_out_of_order_writes) {
  struct cpb_arena a;
  struct cpb_arena_config ac = {.slots = 1, .chunks = 16};
  REQUIRE(cpb_arena_create(&a, &ac) == 0);
  struct chunkq q;
  chunkq_init(&q);
  static uint8_t src[12000], dst[12000];
  for (size_t i = 0; i < sizeof(src); i++) src[i] = (uint8_t)(i * 13 + 5);
  /* hole [0, 5000), data at [5000, 9000) */
  CHECK_EQ(chunkq_write(&a, &q, 5000, src + 5000, 4000, 16), 0);
  CHECK_EQ(q.len, 0);
  CHECK_EQ(q.hi, 9000);
  CHECK_EQ(q.nchunks, 5);
  CHECK_EQ(chunkq_append(&a, &q, src, 5000, 16), 0);
  chunkq_extend(&q, 4000);
  CHECK_EQ(q.len, 9000);
  chunkq_peek(&a, &q, 0, dst, 9000);
  CHECK(memcmp(dst, src, 9000) == 0);
  /* garbage beyond len can be truncated away */
  CHECK_EQ(chunkq_write(&a, &q, 11000, src, 500, 16), 0);
  CHECK_EQ(q.nchunks, 6);
  chunkq_truncate(&a, &q, q.len);
  CHECK_EQ(q.hi, 9000);
  CHECK_EQ(q.nchunks, 5);
  CHECK_EQ(a.hdr->chunks_used, 5);
  /* consume everything in odd steps, cursor survives */
  size_t off = 0;
  while (q.len) {
    uint32_t step = CPB_MIN(q.len, 777u);
    chunkq_peek(&a, &q, 0, dst, step);
    CHECK(memcmp(dst, src + off, step) == 0);
    chunkq_consume(&a, &q, step);
    off += step;
  }
  CHECK_EQ(off, 9000);
  CHECK_EQ(a.hdr->chunks_used, 0);
  /* extend never claims bytes that were not written */
  chunkq_extend(&q, 10);
  CHECK_EQ(q.len, 0);
  cpb_arena_destroy(&a);
}

TEST(assembler_merge_and_limits) {
  struct seqranges s;
  seqr_clear(&s);
  uint32_t base = 0xfffffff0u; /* straddle the wrap */
  CHECK(seqr_add(&s, base + 100, base + 200) >= 0);
  CHECK(seqr_add(&s, base + 300, base + 400) >= 0);
  CHECK_EQ(s.n, 2);
  CHECK(seqr_add(&s, base + 200, base + 300) >= 0); /* touching both: one range */
  CHECK_EQ(s.n, 1);
  CHECK_EQ(s.r[0].left, base + 100);
  CHECK_EQ(s.r[0].right, base + 400);
  CHECK(seqr_add(&s, base + 50, base + 60) >= 0);
  CHECK_EQ(s.n, 2);
  CHECK_EQ(s.r[0].left, base + 50);
  CHECK_EQ(seqr_pop_front(&s, base + 10), base + 10); /* nothing contiguous */
  CHECK_EQ(seqr_pop_front(&s, base + 55), base + 60);
  CHECK_EQ(s.n, 1);
  CHECK_EQ(seqr_pop_front(&s, base + 100), base + 400);
  CHECK_EQ(s.n, 0);
  /* capacity */
  for (uint32_t i = 0; i < SEQR_MAX; i++) CHECK(seqr_add(&s, i * 100, i * 100 + 10) >= 0);
  CHECK_EQ(seqr_add(&s, 5000, 5010), -ENOSPC);
  CHECK_EQ(s.n, SEQR_MAX);
  CHECK(seqr_add(&s, 5, 150) >= 0); /* merging still works when full */
  CHECK_EQ(s.n, SEQR_MAX - 1);
  CHECK(seqr_add(&s, 0, 1000) >= 0); /* swallow all */
  CHECK_EQ(s.n, 1);
  CHECK_EQ(seqr_add(&s, 10, 10), -EINVAL);
  /* most recent first */
  seqr_clear(&s);
  seqr_add(&s, 100, 200);
  seqr_add(&s, 300, 400);
  seqr_add(&s, 500, 600);
  seqr_add(&s, 150, 250); /* grows the first: newest */
  struct seqrange out[4];
  int n = seqr_recent(&s, out, 3);
  CHECK_EQ(n, 3);
  CHECK_EQ(out[0].left, 100);
  CHECK_EQ(out[0].right, 250);
  CHECK_EQ(out[1].left, 500);
  CHECK_EQ(out[2].left, 300);
  /* trim and bytes above */
  seqr_trim(&s, 350);
  CHECK_EQ(s.n, 2);
  CHECK_EQ(s.r[0].left, 350);
  uint32_t ranges;
  CHECK_EQ(seqr_bytes_above(&s, 0, &ranges), 150);
  CHECK_EQ(ranges, 2);
  CHECK_EQ(seqr_bytes(&s), 150);
  CHECK(seqr_contains(&s, 399));
  CHECK(!seqr_contains(&s, 400));
}

/* RFC 6528: ISN = M + F(4-tuple, secret), M a 4 us clock. Same tuple: advances with the clock; other
 * tuples and other secrets: unrelated values. SipHash-2-4 against the reference vector. */
TEST(iss_keyed_and_clocked) {
  uint8_t key[16];
  for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
  uint8_t msg[15];
  for (int i = 0; i < 15; i++) msg[i] = (uint8_t)i;
  CHECK(siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL); /* SipHash paper, Appendix A */
  CHECK(siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);

  struct cpb_arena a;
  struct cpb_arena_config ac = {.slots = 4, .chunks = 4};
  REQUIRE(cpb_arena_create(&a, &ac) == 0);
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.max_flows = 4;
  memcpy(c.iss_secret, key, 16);
  struct cpb_ipout out = {.ctx = NULL, .begin = h_begin, .commit = h_commit};
  struct cpb_tcp *t = malloc(tcp_sizeof());
  REQUIRE(tcp_init(t, &a, &c, &out) == 0);
  uint32_t i0 = iss_generate(t, 1, 1000, 2, 80, 4000000);
  CHECK_EQ((uint32_t)(iss_generate(t, 1, 1000, 2, 80, 4000400) - i0), 100);
  uint32_t other = iss_generate(t, 1, 1001, 2, 80, 4000000);
  CHECK(other != i0 && other != i0 + 1);
  CHECK(ts_offset_generate(t, 1, 1000, 2, 80) != ts_offset_generate(t, 1, 1001, 2, 80));
  tcp_fini(t);
  c.iss_secret[0] ^= 1;
  REQUIRE(tcp_init(t, &a, &c, &out) == 0);
  CHECK(iss_generate(t, 1, 1000, 2, 80, 4000000) != i0);
  tcp_fini(t);
  free(t);
  cpb_arena_destroy(&a);
}
