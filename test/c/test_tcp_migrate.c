/* Live migration of TCP flows: freeze, snapshot, adopt, release, unfreeze. A client instance A talks to
 * a server role that two instances B and C share (same address); migrating the server's flow moves it
 * between B and C while the link steers the address to the new owner, exactly as the runtime will do
 * between hosts. Bulk transfers in both directions are verified byte for byte across dozens of moves,
 * on a clean and on a lossy, reordering link, with the target's clock an hour ahead or behind; what
 * the client sees from the server role (ACK number, window right edge, TS.Val) must never go backwards;
 * the adopted flow must carry the same congestion, RTT and window state. Corrupt, truncated and forged
 * snapshots must be refused without leaving anything behind. Every run ends with every slot and chunk
 * of every instance back. */
#include <time.h>

#include "linksim.h"
#include "t.h"
#include "tcp/snapshot.h"
#include "tcp/tcp_debug.h"

#define IP_A 0x0a000001u
#define IP_S 0x0a000002u
#define SEC CPB_US_PER_S
#define MS CPB_US_PER_MS
#define T_START (3ULL * 3600 * SEC) /* a host may run an hour behind the network clock */

static uint8_t pat(uint8_t seed, uint64_t off) { return (uint8_t)((off * 167 + (off >> 11) * 13 + seed) & 0xff); }
static uint8_t iobuf[65536];

/* ------------------------------------------------------------------ applications and the world */

struct app {
  int host; /* instance holding the flow: the app state moves with it */
  uint64_t fid;
  bool have, shut, eof, closed, frozen;
  bool no_shutdown;
  uint64_t total, sent, rcvd, expect;
  uint8_t seed_out, seed_in;
  int bad;
  cpb_time_t done_at; /* network time when `expect` bytes had arrived */
};

struct plan {
  struct ls_fault f;
  uint64_t a2b, b2a;
  int migrations;
  cpb_time_t ship_us; /* freeze -> adopt (or -> unfreeze) */
  bool unfreeze;      /* every migration fails: the source carries on */
  int64_t c_off;      /* C's clock against the network's (B's is the network's) */
  uint64_t seed;
  cpb_time_t delay_after; /* one-way delay once the last migration is done (0: unchanged) */
  bool no_shutdown;
  uint32_t a_rcvbuf; /* client receive buffer (0: default 256 KiB) */
};

struct world {
  struct ls_net net;
  struct app cli, srv;
  const struct plan *p;
  int migrations, skipped;
  uint64_t step_bytes, next_at;
  bool in_flight;
  cpb_time_t finish_at;
  uint8_t *snap;
  size_t snap_cap;
  long snap_len;
  struct tcp_flow_info before;
  int info_bad, api_bad, adopted_bad;
  uint64_t rto_at_freeze, held_fwd, held_seen, adopted_ev;
  /* what the client sees from the server role, checked as it is emitted */
  uint8_t wshift;
  bool seen;
  uint32_t last_ts, last_edge, last_ack;
  uint16_t last_win;
  uint64_t srv_segs;
  int ts_regress, ts_jump, edge_regress, ack_regress;
  uint32_t srtt_max, srtt_last, srtt_at_last_mig;
  uint8_t cap_seg[1600]; /* the client's last data segment, when capture is on */
  size_t cap_len;
};

static void tap(void *ctx, int from, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  (void)from;
  struct world *w = ctx;
  if (src != IP_S) return;
  struct tcp_repr r;
  if (tcp_parse(seg, len, src, dst, false, &r) != 0 || (r.flags & (TCP_SYN | TCP_RST))) return;
  uint32_t edge = r.ack + ((uint32_t)r.window << w->wshift);
  if (w->seen) {
    if (r.opts.has_ts && seq_lt(r.opts.ts_val, w->last_ts)) w->ts_regress++;
    if (r.opts.has_ts && r.opts.ts_val - w->last_ts > 1000) w->ts_jump++; /* > 1 s: not a clock */
    if (seq_lt(edge, w->last_edge)) w->edge_regress++;
    if (seq_lt(r.ack, w->last_ack)) w->ack_regress++;
  }
  w->seen = true;
  w->last_ts = r.opts.ts_val;
  w->last_edge = edge;
  w->last_ack = r.ack;
  w->last_win = r.window;
  w->srv_segs++;
}

static void app_pump(struct world *w, struct app *a) {
  if (!a->have || a->closed) return;
  struct ls_host *h = &w->net.h[a->host];
  cpb_time_t now = ls_host_now(h);
  if (a->frozen) { /* the flow is in transit: the app is told to wait */
    if (tcp_send(h->t, a->fid, "x", 1, now) != -EAGAIN) w->api_bad++;
    if (tcp_recv(h->t, a->fid, iobuf, 1, now) != -EAGAIN) w->api_bad++;
    return;
  }
  while (a->sent < a->total) {
    size_t want = (size_t)CPB_MIN((uint64_t)sizeof(iobuf), a->total - a->sent);
    for (size_t i = 0; i < want; i++) iobuf[i] = pat(a->seed_out, a->sent + i);
    long r = tcp_send(h->t, a->fid, iobuf, want, now);
    if (r <= 0) break;
    a->sent += (uint64_t)r;
  }
  if (a->sent == a->total && !a->shut && !a->no_shutdown) {
    tcp_shutdown(h->t, a->fid, now);
    a->shut = true;
  }
  for (;;) {
    long r = tcp_recv(h->t, a->fid, iobuf, sizeof(iobuf), now);
    if (r > 0) {
      for (long i = 0; i < r; i++)
        if (iobuf[i] != pat(a->seed_in, a->rcvd + (uint64_t)i)) {
          a->bad++;
          break;
        }
      a->rcvd += (uint64_t)r;
      continue;
    }
    if (r == 0) a->eof = true;
    break;
  }
  if (a->rcvd >= a->expect && !a->done_at) a->done_at = w->net.now;
  if (a->eof && a->shut && !a->closed) {
    tcp_close(h->t, a->fid, now);
    a->closed = true;
  }
}

static void drain_events(struct world *w) {
  for (int i = 0; i < w->net.nh; i++) {
    struct ls_host *h = &w->net.h[i];
    struct tcp_event ev;
    while (tcp_next_event(h->t, &ev)) {
      if (i == 0) continue;
      if (ev.type == TCP_EV_ACCEPTABLE) {
        uint64_t id;
        if (tcp_accept(h->t, ev.id, &id) == 0) {
          w->srv.fid = id;
          w->srv.host = i;
          w->srv.have = true;
        }
      } else if (ev.type == TCP_EV_ADOPTED) {
        w->adopted_ev++;
        if (ev.id != w->srv.fid || i != w->srv.host) w->adopted_bad++;
      }
    }
  }
}

static int info_diff(const struct tcp_flow_info *a, const struct tcp_flow_info *b) {
  int d = 0;
#define SAME(f)                                                                                            \
  if (a->f != b->f) {                                                                                      \
    fprintf(stderr, "  adopted flow differs in %s: %llu -> %llu\n", #f, (unsigned long long)a->f,          \
            (unsigned long long)b->f);                                                                     \
    d++;                                                                                                   \
  }
  SAME(state) SAME(local_ip) SAME(remote_ip) SAME(local_port) SAME(remote_port) SAME(snd_una) SAME(snd_wnd)
  SAME(rcv_nxt) SAME(snd_wscale) SAME(rcv_wscale) SAME(ts_ok) SAME(sack_ok) SAME(nodelay) SAME(keepalive)
  SAME(mss) SAME(cwnd) SAME(ssthresh) SAME(srtt_us) SAME(rttvar_us) SAME(rto_us) SAME(readable_bytes)
  SAME(bytes_in)
#undef SAME
  if (a->unacked_bytes + a->unsent_bytes != b->unacked_bytes + b->unsent_bytes) d++;
  if (b->rcv_wnd < a->rcv_wnd || b->frozen || b->retransmits < a->retransmits) d++;
  return d;
}

static void mig_begin(struct world *w) {
  struct ls_host *src = &w->net.h[w->srv.host];
  cpb_time_t now = ls_host_now(src);
  int rc = tcp_freeze(src->t, w->srv.fid, now);
  if (rc == -ENOTCONN) { /* e.g. TIME_WAIT at the very end: nothing to move */
    w->skipped++;
    return;
  }
  CHECK_EQ(rc, 0);
  if (rc) return;
  CHECK_EQ(tcp_freeze(src->t, w->srv.fid, now), -EALREADY);
  tcp_flow_info(src->t, w->srv.fid, &w->before);
  CHECK(w->before.frozen);
  struct tcp_stats st;
  tcp_get_stats(src->t, &st);
  w->rto_at_freeze = st.rto_timeouts;
  long need = tcp_snapshot_size(src->t, w->srv.fid);
  REQUIRE(need >= TCP_SNAP_FIXED_LEN);
  if ((size_t)need > w->snap_cap) {
    w->snap_cap = (size_t)need * 2;
    w->snap = realloc(w->snap, w->snap_cap);
  }
  CHECK_EQ(tcp_snapshot(src->t, w->srv.fid, w->snap, (size_t)need - 1, now), -ENOSPC);
  w->snap_len = tcp_snapshot(src->t, w->srv.fid, w->snap, w->snap_cap, now);
  CHECK_EQ(w->snap_len, need);
  w->srv.frozen = true;
  w->in_flight = true;
  w->finish_at = w->net.now + w->p->ship_us;
}

static void forward(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct ls_host *h = ctx;
  tcp_input(h->t, src, dst, seg, len, ls_host_now(h));
}

static void mig_finish(struct world *w) {
  w->in_flight = false;
  int from = w->srv.host, to = from == 1 ? 2 : 1;
  struct ls_host *src = &w->net.h[from], *dst = &w->net.h[to];
  struct tcp_stats st;
  tcp_get_stats(src->t, &st);
  CHECK_EQ(st.rto_timeouts, w->rto_at_freeze); /* the clock stood still for the frozen flow */
  struct tcp_flow_info fi;
  tcp_flow_info(src->t, w->srv.fid, &fi);
  w->held_seen += fi.held_segs;
  if (w->p->unfreeze) {
    CHECK_EQ(tcp_unfreeze(src->t, w->srv.fid, ls_host_now(src)), 0);
    tcp_flow_info(src->t, w->srv.fid, &fi);
    CHECK(!fi.frozen);
    CHECK_EQ(fi.held_segs, 0);
  } else {
    uint64_t nid = 0;
    int rc = tcp_adopt(dst->t, w->snap, (size_t)w->snap_len, ls_host_now(dst), &nid);
    CHECK_EQ(rc, 0);
    if (rc != 0) {
      CHECK_EQ(tcp_unfreeze(src->t, w->srv.fid, ls_host_now(src)), 0);
      w->srv.frozen = false;
      return;
    }
    struct tcp_flow_info after;
    CHECK_EQ(tcp_flow_info(dst->t, nid, &after), 0);
    w->info_bad += info_diff(&w->before, &after);
    dst->up = true; /* steer the address to the new owner ... */
    src->up = false;
    int n = tcp_held_drain(src->t, w->srv.fid, forward, dst); /* ... and forward what the old one kept */
    CHECK(n >= 0);
    w->held_fwd += (uint64_t)(n > 0 ? n : 0);
    CHECK_EQ(tcp_release(src->t, w->srv.fid, ls_host_now(src)), 0);
    CHECK_EQ(tcp_flow_info(src->t, w->srv.fid, &fi), -ENOENT);
    w->srv.host = to;
    w->srv.fid = nid;
  }
  w->srv.frozen = false;
  w->migrations++;
  w->srtt_at_last_mig = w->srtt_last;
  if (w->migrations == w->p->migrations && w->p->delay_after) w->net.f.delay_us = w->p->delay_after;
}

static bool all_flows_gone(struct world *w) {
  for (int i = 0; i < w->net.nh; i++)
    if (tcp_debug_flows_live(w->net.h[i].t)) return false;
  return true;
}

static bool world_step(struct ls_net *n, void *ctx) {
  struct world *w = ctx;
  drain_events(w);
  if (w->in_flight && n->now >= w->finish_at) mig_finish(w);
  app_pump(w, &w->cli);
  app_pump(w, &w->srv);
  uint64_t progress = w->cli.rcvd + w->srv.rcvd;
  if (!w->in_flight && w->srv.have && !w->srv.closed && w->migrations + w->skipped < w->p->migrations &&
      progress >= w->next_at) {
    mig_begin(w);
    w->next_at = progress + w->step_bytes;
  }
  if (w->in_flight) n->wake_at = w->finish_at;
  struct tcp_flow_info fi;
  if (w->srv.have && !w->srv.closed && tcp_flow_info(n->h[w->srv.host].t, w->srv.fid, &fi) == 0 && fi.srtt_us) {
    w->srtt_last = fi.srtt_us;
    if (fi.srtt_us > w->srtt_max) w->srtt_max = fi.srtt_us;
  }
  return w->cli.closed && w->srv.closed && all_flows_gone(w);
}

static void tweak_client(struct tcp_config *c, void *ctx) {
  const struct plan *p = ctx;
  if (p->a_rcvbuf) c->rcvbuf = p->a_rcvbuf;
}

static void world_setup(struct world *w, const struct plan *p) {
  memset(w, 0, sizeof(*w));
  w->p = p;
  ls_init(&w->net, p->seed, T_START);
  w->net.f = p->f;
  w->net.cb_ctx = w;
  w->net.tap = tap;
  ls_add_host(&w->net, IP_A, 0, 4096, tweak_client, (void *)p);
  ls_add_host(&w->net, IP_S, 0, 4096, NULL, NULL);
  struct ls_host *c = ls_add_host(&w->net, IP_S, p->c_off, 4096, NULL, NULL);
  c->up = false;
  w->wshift = 7;
  uint64_t lid;
  if (tcp_listen(w->net.h[1].t, 80, 4, &lid) != 0) abort();
  if (tcp_connect(w->net.h[0].t, IP_S, 80, 0, ls_host_now(&w->net.h[0]), &w->cli.fid) != 0) abort();
  w->cli.have = true;
  w->cli.total = w->srv.expect = p->a2b;
  w->srv.total = w->cli.expect = p->b2a;
  w->cli.seed_out = w->srv.seed_in = 11;
  w->srv.seed_out = w->cli.seed_in = 99;
  w->cli.no_shutdown = w->srv.no_shutdown = p->no_shutdown;
  w->step_bytes = p->migrations ? (p->a2b + p->b2a) / (2u * (uint64_t)p->migrations + 2) : UINT64_MAX;
  w->next_at = w->step_bytes;
}

static void world_free(struct world *w) {
  ls_free(&w->net);
  free(w->snap);
  w->snap = NULL;
}

static void check_world(struct world *w, bool done) {
  CHECK(done);
  if (!done) {
    fprintf(stderr,
            "  not done at %.3fs: cli sent=%llu rcvd=%llu shut=%d eof=%d closed=%d | srv host=%d sent=%llu "
            "rcvd=%llu shut=%d eof=%d closed=%d frozen=%d\n",
            (double)(w->net.now - T_START) / 1e6, (unsigned long long)w->cli.sent, (unsigned long long)w->cli.rcvd,
            w->cli.shut, w->cli.eof, w->cli.closed, w->srv.host, (unsigned long long)w->srv.sent,
            (unsigned long long)w->srv.rcvd, w->srv.shut, w->srv.eof, w->srv.closed, w->srv.frozen);
    for (int i = 0; i < w->net.nh; i++) {
      fprintf(stderr, "  host %d: flows=%u up=%d\n", i, tcp_debug_flows_live(w->net.h[i].t), w->net.h[i].up);
    }
  }
  CHECK_EQ(w->cli.bad, 0);
  CHECK_EQ(w->srv.bad, 0);
  CHECK_EQ(w->srv.rcvd, w->p->a2b);
  CHECK_EQ(w->cli.rcvd, w->p->b2a);
  CHECK_EQ(w->migrations, w->p->migrations);
  CHECK_EQ(w->info_bad, 0);
  CHECK_EQ(w->api_bad, 0);
  CHECK_EQ(w->adopted_bad, 0);
  CHECK_EQ(w->adopted_ev, w->p->unfreeze ? 0 : (uint64_t)w->p->migrations);
  CHECK_EQ(w->ts_regress, 0);
  CHECK_EQ(w->ts_jump, 0);
  CHECK_EQ(w->edge_regress, 0);
  CHECK_EQ(w->ack_regress, 0);
  struct tcp_stats sa;
  tcp_get_stats(w->net.h[0].t, &sa);
  /* On a reordering link a late original behind its retransmission is a legitimate PAWS drop. */
  if (!w->p->f.reorder_pm) CHECK_EQ(sa.paws_drops, 0);
  CHECK_EQ(sa.rsts_received, 0);
  for (int i = 0; i < w->net.nh; i++) {
    CHECK_EQ(w->net.h[i].arena.hdr->slots_used, 0);
    CHECK_EQ(w->net.h[i].arena.hdr->chunks_used, 0);
    CHECK_EQ(tcp_debug_flows_live(w->net.h[i].t), 0);
  }
}

static void print_world(const char *name, struct world *w) {
  struct tcp_stats s[3];
  for (int i = 0; i < 3; i++) tcp_get_stats(w->net.h[i].t, &s[i]);
  printf("# %s: t=%.3fs migrations=%d skipped=%d held=%llu+%llu fwd=%llu heldseen=%llu drops=%llu+%llu | A rtx=%llu "
         "frx=%llu rto=%llu | B/C rtx=%llu/%llu adopted=%llu/%llu released=%llu/%llu srtt last=%uus max=%uus\n",
         name, (double)(w->net.now - T_START) / 1e6, w->migrations, w->skipped,
         (unsigned long long)s[1].held_segments, (unsigned long long)s[2].held_segments,
         (unsigned long long)w->held_fwd, (unsigned long long)w->held_seen, (unsigned long long)s[1].held_drops,
         (unsigned long long)s[2].held_drops, (unsigned long long)s[0].retransmits,
         (unsigned long long)s[0].fast_retransmits, (unsigned long long)s[0].rto_timeouts,
         (unsigned long long)s[1].retransmits, (unsigned long long)s[2].retransmits,
         (unsigned long long)s[1].adopted, (unsigned long long)s[2].adopted, (unsigned long long)s[1].released,
         (unsigned long long)s[2].released, w->srtt_last, w->srtt_max);
}

static bool world_run(struct world *w) { return ls_run(&w->net, world_step, w, T_START + 900 * SEC); }

/* ------------------------------------------------------------------ 1. bulk transfer across 50 moves */

TEST(migrate_50_times_clean_link) {
  struct plan p = {.f = {.delay_us = 1000, .ns_per_byte = 80}, .a2b = 6u << 20, .b2a = 3u << 20,
                   .migrations = 50, .ship_us = 300, .seed = 1};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  bool done = world_run(w);
  print_world("clean 100Mbit 2ms rtt, 50 moves", w);
  check_world(w, done);
  struct tcp_stats sa;
  tcp_get_stats(w->net.h[0].t, &sa);
  CHECK_EQ(sa.rto_timeouts, 0);
  CHECK(w->held_seen > 0); /* segments did arrive during freezes and were carried over */
  world_free(w);
  free(w);
}

TEST(migrate_50_times_lossy_reordering_link) {
  struct plan p = {.f = {.loss_pm = 20, .reorder_pm = 20, .reorder_us = 1500, .delay_us = 1000, .jitter_us = 200,
                         .ns_per_byte = 80},
                   .a2b = 6u << 20, .b2a = 3u << 20, .migrations = 50, .ship_us = 400, .seed = 2};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  bool done = world_run(w);
  print_world("2% loss + reordering, 50 moves", w);
  check_world(w, done);
  struct tcp_stats sa;
  tcp_get_stats(w->net.h[0].t, &sa);
  CHECK(sa.retransmits > 0); /* the loss model did bite */
  world_free(w);
  free(w);
}

/* ------------------------------------------------------------------ 2. no slow-start restart */

TEST(migrate_keeps_throughput) {
  cpb_time_t took[2];
  for (int run = 0; run < 2; run++) {
    /* the client's window is about one BDP: no standing queue hides a stall of the sender */
    struct plan p = {.f = {.delay_us = 5000, .ns_per_byte = 80}, .a2b = 100000, .b2a = 6u << 20,
                     .migrations = run ? 10 : 0, .ship_us = 200, .seed = 3, .a_rcvbuf = 160000};
    struct world *w = calloc(1, sizeof(*w));
    world_setup(w, &p);
    bool done = world_run(w);
    check_world(w, done);
    took[run] = w->cli.done_at - T_START;
    if (run) print_world("throughput, 10 moves", w);
    world_free(w);
    free(w);
  }
  printf("# 6 MiB at 100 Mbit/s, 10 ms RTT: %.1f ms without moves, %.1f ms with 10 moves (ratio %.3f)\n",
         (double)took[0] / 1e3, (double)took[1] / 1e3, (double)took[1] / (double)took[0]);
  /* Restarting from the initial window (cwnd, RTT estimate reset) measures +5.6% here; the ten 200 us
   * freezes themselves cost nothing visible. */
  CHECK(took[1] * 100 <= took[0] * 102);
}

/* ------------------------------------------------------------------ 3. window scale and right edge */

static bool until_quiet(struct ls_net *n, void *ctx) {
  struct world *w = ctx;
  drain_events(w);
  app_pump(w, &w->cli);
  app_pump(w, &w->srv);
  struct tcp_flow_info fi;
  return w->srv.rcvd == w->p->a2b && tcp_flow_info(n->h[0].t, w->cli.fid, &fi) == 0 && fi.unacked_bytes == 0;
}

TEST(migrate_preserves_scaled_window_edge) {
  struct plan p = {.f = {.delay_us = 2000, .ns_per_byte = 8}, .a2b = 1u << 20, .b2a = 0, .migrations = 1,
                   .ship_us = 100, .seed = 4, .no_shutdown = true};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  w->step_bytes = w->next_at = UINT64_MAX; /* moves by hand below */
  REQUIRE(ls_run(&w->net, until_quiet, w, T_START + 60 * SEC));
  ls_run(&w->net, NULL, NULL, w->net.now + 500 * MS); /* delayed ACKs out, nothing in flight */
  REQUIRE(w->net.n == 0);
  struct tcp_flow_info fb, fa, fc;
  REQUIRE(tcp_flow_info(w->net.h[1].t, w->srv.fid, &fb) == 0);
  CHECK_EQ(fb.rcv_wscale, 7);
  CHECK(fb.rcv_wnd > 65535u); /* only a scaled window can say this */
  REQUIRE(tcp_flow_info(w->net.h[0].t, w->cli.fid, &fa) == 0);
  CHECK_EQ(fa.snd_wscale, 7);
  uint32_t edge = w->last_edge, win = w->last_win;
  uint64_t segs = w->srv_segs;
  CHECK_EQ(edge, fb.rcv_nxt + fb.rcv_wnd);
  mig_begin(w);
  mig_finish(w);
  CHECK_EQ(w->srv_segs, segs + 1); /* the adopted flow spoke at once: one ACK ... */
  CHECK_EQ(w->last_edge, edge);    /* ... with the very same right edge */
  CHECK_EQ(w->last_win, win);
  REQUIRE(tcp_flow_info(w->net.h[2].t, w->srv.fid, &fc) == 0);
  CHECK_EQ(fc.rcv_wscale, 7);
  CHECK_EQ(fc.snd_wscale, 7);
  CHECK_EQ(fc.rcv_wnd, fb.rcv_wnd);
  ls_run(&w->net, NULL, NULL, w->net.now + 50 * MS);
  struct tcp_flow_info fa2;
  REQUIRE(tcp_flow_info(w->net.h[0].t, w->cli.fid, &fa2) == 0);
  CHECK_EQ(fa2.snd_wnd, fa.snd_wnd); /* the client's view of the window did not move */
  CHECK_EQ(w->edge_regress, 0);
  world_free(w);
  free(w);
}

/* ------------------------------------------------------------------ 4. timestamps across clocks */

static void ts_across_clocks(int64_t off) {
  struct plan p = {.f = {.delay_us = 1000, .ns_per_byte = 8}, .a2b = 3u << 20, .b2a = 12u << 20, .migrations = 9,
                   .ship_us = 300, .c_off = off, .seed = 5, .delay_after = 10000};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  bool done = world_run(w);
  print_world(off > 0 ? "target clock +1h" : "target clock -1h", w);
  check_world(w, done); /* includes: TS.Val never went back, no PAWS drop at the client */
  /* RTT samples stayed sane across the clock change, and kept coming on the new host: after the path
   * delay went from 1 to 10 ms one way, the estimate followed. */
  CHECK(w->srtt_at_last_mig < 8000);
  CHECK(w->srtt_last >= 18000 && w->srtt_last <= 40000);
  CHECK(w->srtt_max <= 60000);
  world_free(w);
  free(w);
}

TEST(migrate_timestamps_clock_ahead) { ts_across_clocks((int64_t)3600 * SEC); }
TEST(migrate_timestamps_clock_behind) { ts_across_clocks(-(int64_t)3600 * SEC); }

/* ------------------------------------------------------------------ 5. unfreeze after a failed move */

TEST(migrate_unfreeze_resumes) {
  struct plan p = {.f = {.delay_us = 1000, .ns_per_byte = 80}, .a2b = 2u << 20, .b2a = 1u << 20, .migrations = 4,
                   .ship_us = 1500 * MS, .unfreeze = true, .seed = 6};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  bool done = world_run(w);
  print_world("4 failed moves of 1.5 s, unfreeze", w);
  check_world(w, done);
  CHECK(w->held_seen > 0);
  struct tcp_stats sb;
  tcp_get_stats(w->net.h[1].t, &sb);
  CHECK_EQ(sb.unfrozen, 4);
  CHECK_EQ(sb.adopted + sb.released, 0);
  world_free(w);
  free(w);
}

TEST(migrate_lossy_unfreeze) {
  struct plan p = {.f = {.loss_pm = 20, .reorder_pm = 20, .reorder_us = 1500, .delay_us = 1000, .ns_per_byte = 80},
                   .a2b = 2u << 20, .b2a = 2u << 20, .migrations = 10, .ship_us = 50 * MS, .unfreeze = true,
                   .seed = 7};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  bool done = world_run(w);
  print_world("lossy, 10 failed moves of 50 ms", w);
  check_world(w, done);
  world_free(w);
  free(w);
}

static bool capture_client_data(void *ctx, int from, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct world *w = ctx;
  struct tcp_repr r;
  if (from == 0 && tcp_parse(seg, len, src, dst, false, &r) == 0 && r.payload_len && len <= sizeof(w->cap_seg)) {
    memcpy(w->cap_seg, seg, len);
    w->cap_len = len;
  }
  return false;
}

/* The API of a frozen flow, and of one that is not. */
TEST(migrate_frozen_api) {
  struct plan p = {.f = {.delay_us = 1000}, .a2b = 10000, .b2a = 10000, .seed = 8, .no_shutdown = true};
  struct world *w = calloc(1, sizeof(*w));
  world_setup(w, &p);
  w->step_bytes = w->next_at = UINT64_MAX;
  REQUIRE(ls_run(&w->net, until_quiet, w, T_START + 10 * SEC));
  struct cpb_tcp *b = w->net.h[1].t;
  cpb_time_t now = ls_host_now(&w->net.h[1]);
  uint64_t id = w->srv.fid;
  uint8_t buf[TCP_SNAP_FIXED_LEN + 64];
  CHECK_EQ(tcp_snapshot(b, id, buf, sizeof(buf), now), -EINVAL);
  CHECK_EQ(tcp_snapshot_size(b, id), -EINVAL);
  CHECK_EQ(tcp_release(b, id, now), -EINVAL);
  CHECK_EQ(tcp_unfreeze(b, id, now), -EINVAL);
  CHECK_EQ(tcp_held_drain(b, id, NULL, NULL), -EINVAL);
  CHECK_EQ(tcp_freeze(b, id + (1u << 20), now), -ENOENT); /* stale generation */
  CHECK_EQ(tcp_freeze(b, id, now), 0);
  CHECK_EQ(tcp_send(b, id, "x", 1, now), -EAGAIN);
  CHECK_EQ(tcp_recv(b, id, buf, 1, now), -EAGAIN);
  CHECK_EQ(tcp_shutdown(b, id, now), -EBUSY);
  CHECK_EQ(tcp_close(b, id, now), -EBUSY);
  CHECK_EQ(tcp_setopt(b, id, TCP_OPT_NODELAY, 1), -EBUSY);
  CHECK_EQ(tcp_freeze(b, id, now), -EALREADY);
  /* the client keeps talking: B holds, up to its limit, and sends nothing */
  uint64_t segs = w->srv_segs;
  struct ls_host *ha = &w->net.h[0];
  static uint8_t big[200000];
  w->net.filter = capture_client_data;
  CHECK(tcp_send(ha->t, w->cli.fid, big, sizeof(big), ls_host_now(ha)) > 0);
  ls_run(&w->net, NULL, NULL, w->net.now + 100 * MS);
  CHECK_EQ(w->srv_segs, segs);
  REQUIRE(w->cap_len > 0);
  for (int i = 0; i < TCP_HOLD_FLOW_SEGS + 16; i++) tcp_input(b, IP_A, IP_S, w->cap_seg, w->cap_len, ls_host_now(&w->net.h[1]));
  struct tcp_flow_info fi;
  CHECK_EQ(tcp_flow_info(b, id, &fi), 0);
  CHECK(fi.frozen);
  CHECK_EQ(fi.held_segs, TCP_HOLD_FLOW_SEGS);
  struct tcp_stats st;
  tcp_get_stats(b, &st);
  CHECK(st.held_drops > 0);
  uint32_t chunks = w->net.h[1].arena.hdr->chunks_used;
  /* abandoning the move: abort resets the peer and frees everything */
  CHECK_EQ(tcp_abort(b, id, now), 0);
  CHECK_EQ(tcp_debug_flows_live(b), 0);
  CHECK(w->net.h[1].arena.hdr->chunks_used < chunks);
  CHECK_EQ(w->net.h[1].arena.hdr->chunks_used, 0);
  ls_run(&w->net, NULL, NULL, w->net.now + 10 * MS);
  struct tcp_stats sa;
  tcp_get_stats(ha->t, &sa);
  CHECK_EQ(sa.rsts_received, 1);
  world_free(w);
  free(w);
}

/* ------------------------------------------------------------------ 6. corrupt and forged snapshots */

/* A standalone instance (not on the network): what it sends is discarded. */
struct solo {
  struct cpb_arena arena;
  struct cpb_tcp *t;
  uint8_t frame[1600];
  uint64_t segs;
};

static uint8_t *solo_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  (void)src;
  (void)dst;
  struct solo *s = ctx;
  *cap = 1480;
  return s->frame;
}
static void solo_commit(void *ctx, size_t len) {
  struct solo *s = ctx;
  if (len) s->segs++;
}

static void solo_init(struct solo *s, uint32_t chunks, uint32_t max_flows, uint16_t mss) {
  memset(s, 0, sizeof(*s));
  struct cpb_arena_config ac = {.slots = 16, .chunks = chunks};
  if (cpb_arena_create(&s->arena, &ac) != 0) abort();
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = IP_S;
  c.max_flows = max_flows;
  c.hold_segs = 8;
  if (mss) c.mss = mss;
  s->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = s, .begin = solo_begin, .commit = solo_commit};
  if (!s->t || tcp_init(s->t, &s->arena, &c, &out) != 0) abort();
}

static void solo_free(struct solo *s) {
  tcp_fini(s->t);
  free(s->t);
  cpb_arena_destroy(&s->arena);
}

struct fixture {
  struct ls_net net;
  int seen, drop[2]; /* client data segments of flow 0 seen, and which of them the link loses */
  uint64_t cfid[2], sfid[2];
  int accepted;
  uint8_t *snap[2];
  long len[2];
};

/* Drops chosen first transmissions of the client's data so the server holds out-of-order ranges. */
static bool drop_filter(void *ctx, int from, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct fixture *f = ctx;
  struct tcp_repr r;
  if (from != 0 || tcp_parse(seg, len, src, dst, false, &r) != 0 || r.payload_len == 0 || r.sport != 5001) return false;
  f->seen++;
  return f->seen == f->drop[0] || f->seen == f->drop[1];
}

static bool fixture_accept(struct ls_net *n, void *ctx) {
  struct fixture *f = ctx;
  struct tcp_event ev;
  while (tcp_next_event(n->h[1].t, &ev))
    if (ev.type == TCP_EV_ACCEPTABLE)
      while (f->accepted < 2 && tcp_accept(n->h[1].t, ev.id, &f->sfid[f->accepted]) == 0) f->accepted++;
  while (tcp_next_event(n->h[0].t, &ev)) {
  }
  return f->accepted == 2;
}

/* Server-side flows on B, frozen: flow 0 holds unacknowledged send data, unread data and two
 * out-of-order ranges; flow 1 a little of everything in order. Their snapshots are in f->snap. */
static void fixture_build(struct fixture *f, uint32_t a2b) {
  memset(f, 0, sizeof(*f));
  f->drop[0] = 2;
  f->drop[1] = 5;
  ls_init(&f->net, 9, T_START);
  f->net.f.delay_us = 1000;
  f->net.cb_ctx = f;
  f->net.filter = drop_filter;
  ls_add_host(&f->net, IP_A, 0, 1024, NULL, NULL);
  ls_add_host(&f->net, IP_S, 0, 1024, NULL, NULL);
  uint64_t lid;
  struct ls_host *a = &f->net.h[0], *b = &f->net.h[1];
  if (tcp_listen(b->t, 80, 4, &lid) != 0) abort();
  if (tcp_connect(a->t, IP_S, 80, 5001, ls_host_now(a), &f->cfid[0]) != 0) abort();
  if (tcp_connect(a->t, IP_S, 80, 5002, ls_host_now(a), &f->cfid[1]) != 0) abort();
  if (!ls_run(&f->net, fixture_accept, f, T_START + 5 * SEC)) abort();
  ls_run(&f->net, NULL, NULL, f->net.now + 100 * MS);
  static uint8_t data[1 << 20];
  for (size_t i = 0; i < sizeof(data); i++) data[i] = pat(3, i);
  if (tcp_send(a->t, f->cfid[0], data, a2b, ls_host_now(a)) != (long)a2b) abort();
  if (tcp_send(a->t, f->cfid[1], data, 3000, ls_host_now(a)) != 3000) abort();
  if (tcp_send(b->t, f->sfid[0], data, 2000, ls_host_now(b)) != 2000) abort();
  if (tcp_send(b->t, f->sfid[1], data, 1000, ls_host_now(b)) != 1000) abort();
  ls_run(&f->net, NULL, NULL, f->net.now + 1500); /* data arrived, the server's is still in flight */
  for (int i = 0; i < 2; i++) {
    if (tcp_freeze(b->t, f->sfid[i], ls_host_now(b)) != 0) abort();
    long n = tcp_snapshot_size(b->t, f->sfid[i]);
    f->snap[i] = malloc((size_t)n);
    f->len[i] = tcp_snapshot(b->t, f->sfid[i], f->snap[i], (size_t)n, ls_host_now(b));
    if (f->len[i] != n) abort();
  }
}

static void fixture_free(struct fixture *f) {
  ls_free(&f->net);
  free(f->snap[0]);
  free(f->snap[1]);
}

/* Optional: CPB_TCP_CORPUS=dir writes the valid snapshots there (the libFuzzer seed corpus). */
static void corpus_write(const char *name, const uint8_t *p, long n) {
  const char *dir = getenv("CPB_TCP_CORPUS");
  if (!dir) return;
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  if (!fp) return;
  fwrite(p, 1, (size_t)n, fp);
  fclose(fp);
}

TEST(snapshot_fixture_shape_and_roundtrip) {
  struct fixture f;
  fixture_build(&f, 8000);
  struct tcp_snap s;
  REQUIRE(tcp_snap_parse(f.snap[0], (size_t)f.len[0], &s) == 0);
  CHECK_EQ(s.state, TCP_ESTABLISHED);
  CHECK_EQ(s.snd_len, 2000);
  CHECK(s.snd_max != s.snd_una); /* sent, not yet acknowledged */
  CHECK_EQ(s.rcv_len, 1448);
  CHECK_EQ(s.ooo.n, 2);
  CHECK(s.ooo_len > 0);
  CHECK(s.flags & TCP_SNAP_F_TS);
  CHECK(s.flags & TCP_SNAP_F_SACK);
  CHECK_EQ(s.rcv_wscale, 7);
  /* the data parts are the bytes the client sent, at their stream offsets */
  for (uint32_t i = 0; i < s.rcv_len; i++)
    if (s.rcv_data[i] != pat(3, i)) {
      CHECK(false);
      break;
    }
  const uint8_t *o = s.ooo_data;
  for (int k = 0; k < s.ooo.n; k++) {
    uint32_t off = s.rcv_len + (s.ooo.r[k].left - s.rcv_nxt);
    for (uint32_t i = 0; i < s.ooo.r[k].right - s.ooo.r[k].left; i++)
      if (o[i] != pat(3, off + i)) {
        CHECK(false);
        break;
      }
    o += s.ooo.r[k].right - s.ooo.r[k].left;
  }
  /* encode(parse(x)) == x */
  uint8_t *again = malloc((size_t)f.len[0]);
  CHECK_EQ(tcp_snap_encode(&s, again, (size_t)f.len[0]), f.len[0]);
  CHECK(memcmp(again, f.snap[0], (size_t)f.len[0]) == 0);
  CHECK_EQ(tcp_snap_encode(&s, again, (size_t)f.len[0] - 1), -ENOSPC);
  /* adopt, freeze at once on the same clock, snapshot again: the same state comes out */
  struct solo c;
  solo_init(&c, 256, 8, 0);
  uint64_t id;
  cpb_time_t now = 5 * SEC;
  REQUIRE(tcp_adopt(c.t, f.snap[0], (size_t)f.len[0], now, &id) == 0);
  CHECK(c.segs >= 1); /* spoke at once */
  struct tcp_event ev;
  REQUIRE(tcp_next_event(c.t, &ev));
  CHECK_EQ(ev.type, TCP_EV_ADOPTED);
  CHECK_EQ(ev.id, id);
  REQUIRE(tcp_next_event(c.t, &ev));
  CHECK_EQ(ev.type, TCP_EV_READABLE);
  REQUIRE(tcp_freeze(c.t, id, now) == 0);
  long n2 = tcp_snapshot_size(c.t, id);
  REQUIRE(n2 == f.len[0]);
  REQUIRE(tcp_snapshot(c.t, id, again, (size_t)n2, now) == n2);
  struct tcp_snap s2;
  REQUIRE(tcp_snap_parse(again, (size_t)n2, &s2) == 0);
  /* sending the ACK is the only thing adopting changed */
  CHECK_EQ(s2.snd_una, s.snd_una);
  CHECK_EQ(s2.snd_max, s.snd_max);
  CHECK_EQ(s2.rcv_nxt, s.rcv_nxt);
  CHECK_EQ(s2.rcv_adv, s.rcv_adv);
  CHECK_EQ(s2.ts_val, s.ts_val);
  CHECK_EQ(s2.ts_recent, s.ts_recent);
  CHECK_EQ(s2.ts_recent_age, s.ts_recent_age);
  CHECK_EQ(s2.cwnd, s.cwnd);
  CHECK_EQ(s2.srtt, s.srtt);
  CHECK_EQ(s2.timer_left[TCP_SNAP_T_RTO], s.timer_left[TCP_SNAP_T_RTO]);
  CHECK_EQ(s2.timer_mask & ~(1u << TCP_SNAP_T_DELACK), s.timer_mask & ~(1u << TCP_SNAP_T_DELACK));
  CHECK_EQ(s2.ooo.n, s.ooo.n);
  CHECK(memcmp(again + TCP_SNAP_FIXED_LEN, f.snap[0] + TCP_SNAP_FIXED_LEN, (size_t)n2 - TCP_SNAP_FIXED_LEN) == 0);
  CHECK_EQ(tcp_release(c.t, id, now), 0);
  CHECK_EQ(c.arena.hdr->slots_used, 0);
  CHECK_EQ(c.arena.hdr->chunks_used, 0);
  corpus_write("with_ooo", f.snap[0], f.len[0]);
  corpus_write("small", f.snap[1], f.len[1]);
  free(again);
  solo_free(&c);
  fixture_free(&f);
}

static int adopt_expect(struct solo *c, const uint8_t *p, size_t n, int want, const char *what) {
  uint32_t slots = c->arena.hdr->slots_used, chunks = c->arena.hdr->chunks_used;
  struct tcp_stats st;
  tcp_get_stats(c->t, &st);
  uint64_t id = 0;
  int rc = tcp_adopt(c->t, p, n, 5 * SEC, &id);
  if (rc != want) fprintf(stderr, "  %s: adopt returned %d, expected %d\n", what, rc, want);
  if (rc == 0) return rc;
  struct tcp_stats st2;
  tcp_get_stats(c->t, &st2);
  if (c->arena.hdr->slots_used != slots || c->arena.hdr->chunks_used != chunks ||
      st2.flows_current != st.flows_current || st2.adopt_rejects != st.adopt_rejects + 1) {
    fprintf(stderr, "  %s: a rejected adopt left something behind\n", what);
    return 1000;
  }
  return rc;
}

typedef void (*forge_fn)(struct tcp_snap *s);
#define FORGE(name, body) \
  static void name(struct tcp_snap *s) { body; }
FORGE(f_state_closed, s->state = TCP_CLOSED)
FORGE(f_state_listen, s->state = TCP_LISTEN)
FORGE(f_state_synrcvd, s->state = TCP_SYN_RECEIVED)
FORGE(f_state_tw, s->state = TCP_TIME_WAIT)
FORGE(f_state_big, s->state = 200)
FORGE(f_fin_queued_in_est, s->flags |= TCP_SNAP_F_FIN_QUEUED)
FORGE(f_fin_rcvd_in_est, s->flags |= TCP_SNAP_F_FIN_RCVD)
FORGE(f_unknown_flag, s->flags |= 1u << 20)
FORGE(f_sack_rec_no_rec, s->flags |= TCP_SNAP_F_SACK_RECOVERY)
FORGE(f_wscale_15, s->rcv_wscale = 15)
FORGE(f_snd_wscale_15, s->snd_wscale = 15)
FORGE(f_wscale_without_ws, { s->flags &= ~(uint32_t)TCP_SNAP_F_WSCALE; })
FORGE(f_mss_zero, s->smss = 0)
FORGE(f_mss_above_peer, s->smss = (uint16_t)(s->peer_mss + 1))
FORGE(f_peer_mss_small, s->peer_mss = 10)
FORGE(f_rcv_mss_zero, s->rcv_mss = 0)
FORGE(f_backoff, s->backoff = 31)
FORGE(f_snd_nxt_below_una, s->snd_nxt = s->snd_una - 1)
FORGE(f_snd_max_beyond_data, s->snd_max = s->sndq_seq + s->snd_len + 1)
FORGE(f_sndq_seq_off, s->sndq_seq += 1)
FORGE(f_snd_len_short, { s->snd_len -= 100; })
FORGE(f_wnd_over_max, s->snd_wnd = s->max_snd_wnd + 1)
FORGE(f_max_wnd_huge, { s->max_snd_wnd = TCP_SNAP_MAX_WND + 1; s->snd_wnd = 1; })
FORGE(f_rcv_adv_behind, s->rcv_adv = s->rcv_nxt - 1)
FORGE(f_rcv_wnd_too_big, s->rcv_adv = s->rcv_nxt + (65535u << s->rcv_wscale) + 1)
FORGE(f_ooo_beyond_window, { s->ooo.r[s->ooo.n - 1].right = s->rcv_adv + 1; })
FORGE(f_ooo_at_rcv_nxt, { s->ooo.r[0].left = s->rcv_nxt; })
FORGE(f_ooo_overlap, { s->ooo.r[1].left = s->ooo.r[0].right; })
FORGE(f_ooo_unsorted, { struct seqrange t = s->ooo.r[0]; s->ooo.r[0] = s->ooo.r[1]; s->ooo.r[1] = t; })
FORGE(f_ooo_empty_range, { s->ooo.r[0].right = s->ooo.r[0].left; })
FORGE(f_ooo_n_9, s->ooo.n = 9)
FORGE(f_ooo_len_mismatch, { s->ooo.r[0].right -= 1; })
FORGE(f_ooo_fin_outside, { s->flags |= TCP_SNAP_F_OOO_FIN; s->ooo_fin_seq = s->rcv_adv + 5; })
FORGE(f_sack_outside, { s->sacked.n = 1; s->sacked.r[0].left = s->snd_max; s->sacked.r[0].right = s->snd_max + 10; })
FORGE(f_sack_without_sack, {
  s->flags &= ~(uint32_t)(TCP_SNAP_F_SACK);
  s->sacked.n = 1;
  s->sacked.r[0].left = s->snd_una;
  s->sacked.r[0].right = s->snd_una + 1;
})
FORGE(f_ts_fields_without_ts, s->flags &= ~(uint32_t)TCP_SNAP_F_TS)
FORGE(f_ts_age_huge, s->ts_recent_age = TCP_SNAP_MAX_AGE + 1)
FORGE(f_rto_zero, s->rto = 0)
FORGE(f_rtt_age_not_timing, { s->flags &= ~(uint32_t)TCP_SNAP_F_RTT_TIMING; s->rtt_age = 5; })
FORGE(f_cwnd_zero, s->cwnd = 0)
FORGE(f_cwnd_huge, s->cwnd = TCP_SNAP_MAX_CWND + 1)
FORGE(f_ssthresh_zero, s->ssthresh = 0)
FORGE(f_cubic_nan, s->w_max = 0.0 / 0.0)
FORGE(f_cubic_inf, s->k = 1.0 / 0.0)
FORGE(f_cubic_negative, s->w_est = -1.0)
FORGE(f_cubic_age_no_epoch, { s->flags &= ~(uint32_t)TCP_SNAP_F_CUBIC_EPOCH; s->cubic_age = 7; })
FORGE(f_keepidle_zero, s->keepidle_us = 0)
FORGE(f_timer_mask_bit5, s->timer_mask |= 1u << 5)
FORGE(f_timer_left_unarmed, {
  s->timer_mask &= (uint8_t)~(1u << TCP_SNAP_T_LINGER);
  s->timer_left[TCP_SNAP_T_LINGER] = 1;
})
FORGE(f_timer_huge, { s->timer_mask |= 1u; s->timer_left[0] = TCP_SNAP_MAX_AGE + 1; })
FORGE(f_limited_tx, s->limited_tx = 3)
FORGE(f_zero_port, s->rport = 0)
FORGE(f_zero_ip, s->lip = 0)
FORGE(f_fw2_fin_unacked, { s->state = TCP_FIN_WAIT_2; s->flags |= TCP_SNAP_F_FIN_QUEUED; })

static const struct {
  const char *name;
  forge_fn fn;
} forgeries[] = {
#define F(x) {#x, x}
    F(f_state_closed), F(f_state_listen), F(f_state_synrcvd), F(f_state_tw), F(f_state_big),
    F(f_fin_queued_in_est), F(f_fin_rcvd_in_est), F(f_unknown_flag), F(f_sack_rec_no_rec), F(f_wscale_15),
    F(f_snd_wscale_15), F(f_wscale_without_ws), F(f_mss_zero), F(f_mss_above_peer), F(f_peer_mss_small),
    F(f_rcv_mss_zero), F(f_backoff), F(f_snd_nxt_below_una), F(f_snd_max_beyond_data), F(f_sndq_seq_off),
    F(f_snd_len_short), F(f_wnd_over_max), F(f_max_wnd_huge), F(f_rcv_adv_behind), F(f_rcv_wnd_too_big),
    F(f_ooo_beyond_window), F(f_ooo_at_rcv_nxt), F(f_ooo_overlap), F(f_ooo_unsorted), F(f_ooo_empty_range),
    F(f_ooo_n_9), F(f_ooo_len_mismatch), F(f_ooo_fin_outside), F(f_sack_outside), F(f_sack_without_sack),
    F(f_ts_fields_without_ts), F(f_ts_age_huge), F(f_rto_zero), F(f_rtt_age_not_timing), F(f_cwnd_zero),
    F(f_cwnd_huge), F(f_ssthresh_zero), F(f_cubic_nan), F(f_cubic_inf), F(f_cubic_negative),
    F(f_cubic_age_no_epoch), F(f_keepidle_zero), F(f_timer_mask_bit5), F(f_timer_left_unarmed),
    F(f_timer_huge), F(f_limited_tx), F(f_zero_port), F(f_zero_ip), F(f_fw2_fin_unacked),
#undef F
};

/* Header-level damage is framing (-EBADMSG); the rest must be caught field by field (-EINVAL). */
TEST(snapshot_rejects_forgeries) {
  struct fixture f;
  fixture_build(&f, 8000);
  struct solo c;
  solo_init(&c, 512, 8, 0);
  size_t n = (size_t)f.len[0];
  uint8_t *buf = malloc(n + 64);
  struct tcp_snap s;
  REQUIRE(tcp_snap_parse(f.snap[0], n, &s) == 0);
  REQUIRE(s.timer_mask & (1u << TCP_SNAP_T_RTO));
  int bad = 0;
  for (size_t i = 0; i < CPB_ARRAY_LEN(forgeries); i++) {
    struct tcp_snap m = s;
    forgeries[i].fn(&m);
    long len = tcp_snap_encode(&m, buf, n + 64);
    if (len < 0) { /* a length forged larger than the data: the encoder cannot even write it */
      bad += len != -ENOSPC;
      continue;
    }
    if (adopt_expect(&c, buf, (size_t)len, -EINVAL, forgeries[i].name) != -EINVAL) bad++;
  }
  CHECK_EQ(bad, 0);
  /* framing */
  struct {
    const char *name;
    size_t off;
    uint8_t val;
  } hdr[] = {{"magic", 0, 'X'}, {"version", 4, 2}, {"hdr flags", 6, 1}, {"total", 8, 0}, {"state len", 12, 0},
             {"reserved after mss", 16 + 30, 1}};
  for (size_t i = 0; i < CPB_ARRAY_LEN(hdr); i++) {
    memcpy(buf, f.snap[0], n);
    buf[hdr[i].off] ^= hdr[i].val ? hdr[i].val : 0x10;
    int want = hdr[i].off >= TCP_SNAP_HDR_LEN ? -EINVAL : -EBADMSG;
    CHECK_EQ(adopt_expect(&c, buf, n, want, hdr[i].name), want);
  }
  memcpy(buf, f.snap[0], n);
  buf[n] = 0;
  CHECK_EQ(adopt_expect(&c, buf, n + 1, -EBADMSG, "trailing byte"), -EBADMSG);
  CHECK_EQ(adopt_expect(&c, NULL, 0, -EBADMSG, "null"), -EBADMSG);
  /* host limits */
  struct solo tiny, full, small_mss;
  solo_init(&tiny, 3, 8, 0);
  CHECK_EQ(adopt_expect(&tiny, f.snap[0], n, -ENOSPC, "chunk pool"), -ENOSPC);
  solo_init(&full, 64, 1, 0);
  uint64_t id;
  REQUIRE(tcp_adopt(full.t, f.snap[1], (size_t)f.len[1], 5 * SEC, &id) == 0);
  CHECK_EQ(adopt_expect(&full, f.snap[0], n, -ENOSPC, "flow limit"), -ENOSPC);
  solo_init(&small_mss, 64, 8, 536);
  CHECK_EQ(adopt_expect(&small_mss, f.snap[0], n, -EINVAL, "mss above ours"), -EINVAL);
  /* duplicate 4-tuple: on the target twice, and back on the source where it is still frozen */
  CHECK_EQ(tcp_adopt(c.t, f.snap[0], n, 5 * SEC, &id), 0);
  CHECK_EQ(adopt_expect(&c, f.snap[0], n, -EEXIST, "duplicate"), -EEXIST);
  struct ls_host *b = &f.net.h[1];
  uint32_t bslots = b->arena.hdr->slots_used, bchunks = b->arena.hdr->chunks_used;
  CHECK_EQ(tcp_adopt(b->t, f.snap[0], n, ls_host_now(b), &id), -EEXIST);
  CHECK_EQ(b->arena.hdr->slots_used, bslots);
  CHECK_EQ(b->arena.hdr->chunks_used, bchunks);
  free(buf);
  solo_free(&c);
  solo_free(&tiny);
  solo_free(&full);
  solo_free(&small_mss);
  fixture_free(&f);
}

/* Every truncation, then seeded random bit flips. A flip in payload bytes or in a counter still makes
 * a valid snapshot (the container's CRC and the channel's AEAD are what catch those): such a flow must
 * then be a working flow, which we snapshot and parse again before releasing it. Throughout, an
 * unrelated flow adopted earlier must not change by a single byte and nothing may leak. */
TEST(snapshot_truncations_and_bitflips) {
  struct fixture f;
  fixture_build(&f, 8000);
  struct solo c;
  solo_init(&c, 512, 8, 0);
  cpb_time_t now = 5 * SEC;
  uint64_t other;
  REQUIRE(tcp_adopt(c.t, f.snap[1], (size_t)f.len[1], now, &other) == 0);
  REQUIRE(tcp_freeze(c.t, other, now) == 0);
  long on = tcp_snapshot_size(c.t, other);
  uint8_t *o1 = malloc((size_t)on), *o2 = malloc((size_t)on);
  REQUIRE(tcp_snapshot(c.t, other, o1, (size_t)on, now) == on);
  struct tcp_flow_info oi1, oi2;
  tcp_flow_info(c.t, other, &oi1);

  size_t n = (size_t)f.len[0];
  uint8_t *buf = malloc(n);
  int trunc_bad = 0;
  for (size_t len = 0; len < n; len++) {
    memcpy(buf, f.snap[0], len);
    if (adopt_expect(&c, buf, len, -EBADMSG, "truncated") != -EBADMSG) trunc_bad++;
  }
  CHECK_EQ(trunc_bad, 0);

  uint64_t rng = 0x5eed;
  int rejected = 0, accepted = 0, leaks = 0, resnap_bad = 0;
  uint8_t *again = malloc(n + 4096);
  uint32_t slots = c.arena.hdr->slots_used, chunks = c.arena.hdr->chunks_used;
  for (int it = 0; it < 20000; it++) {
    memcpy(buf, f.snap[0], n);
    int flips = 1 + (int)(rng % 3);
    for (int k = 0; k < flips; k++) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      /* three in four flips land in the header and state, where the checks live */
      size_t span = (rng >> 40) % 4 ? TCP_SNAP_FIXED_LEN : n;
      size_t bit = (size_t)(rng % (span * 8));
      buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    uint64_t id;
    cpb_time_t ti = now + (cpb_time_t)it * SEC;
    int rc = tcp_adopt(c.t, buf, n, ti, &id);
    if (rc != 0) {
      rejected++;
    } else {
      accepted++;
      tcp_poll(c.t, ti + 300 * MS); /* let its timers run on whatever it holds */
      if (tcp_freeze(c.t, id, ti + 300 * MS) == 0) {
        long m = tcp_snapshot(c.t, id, again, n + 4096, ti + 300 * MS);
        struct tcp_snap s2;
        if (m < 0 || tcp_snap_parse(again, (size_t)m, &s2) != 0) resnap_bad++;
        CHECK_EQ(tcp_release(c.t, id, ti + 300 * MS), 0);
      } else {
        CHECK_EQ(tcp_abort(c.t, id, ti + 300 * MS), 0); /* it closed meanwhile (e.g. retries ran out) */
      }
    }
    tcp_poll(c.t, ti + 400 * MS);
    struct tcp_event ev;
    while (tcp_next_event(c.t, &ev)) {
    }
    if (c.arena.hdr->slots_used != slots || c.arena.hdr->chunks_used != chunks) {
      leaks++;
      slots = c.arena.hdr->slots_used;
      chunks = c.arena.hdr->chunks_used;
    }
  }
  printf("# 20000 bit-flipped snapshots: %d rejected, %d accepted (flips in data or free-valued fields)\n",
         rejected, accepted);
  CHECK_EQ(leaks, 0);
  CHECK_EQ(resnap_bad, 0);
  CHECK(rejected > 10000);
  tcp_flow_info(c.t, other, &oi2);
  CHECK(memcmp(&oi1, &oi2, sizeof(oi1)) == 0);
  REQUIRE(tcp_snapshot(c.t, other, o2, (size_t)on, now + 30000 * SEC) == on); /* frozen: time stood still */
  CHECK(memcmp(o1, o2, (size_t)on) == 0);
  CHECK_EQ(tcp_release(c.t, other, now), 0);
  CHECK_EQ(c.arena.hdr->slots_used, 0);
  CHECK_EQ(c.arena.hdr->chunks_used, 0);
  free(buf);
  free(again);
  free(o1);
  free(o2);
  solo_free(&c);
  fixture_free(&f);
}

/* ------------------------------------------------------------------ 7. cost (printed, not asserted) */

static double ns_since(const struct timespec *a) {
  struct timespec b;
  clock_gettime(CLOCK_MONOTONIC, &b);
  return (double)(b.tv_sec - a->tv_sec) * 1e9 + (double)(b.tv_nsec - a->tv_nsec);
}

static void bench(const char *name, long len, struct ls_host *src, uint64_t sid, int iters) {
  struct solo c;
  solo_init(&c, 256, 8, 0);
  uint8_t *buf = malloc((size_t)len);
  double t_snap = 0, t_adopt = 0;
  cpb_time_t now = 5 * SEC;
  for (int i = 0; i < iters; i++) {
    struct timespec a;
    clock_gettime(CLOCK_MONOTONIC, &a);
    long n = tcp_snapshot(src->t, sid, buf, (size_t)len, ls_host_now(src));
    t_snap += ns_since(&a);
    uint64_t id;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = tcp_adopt(c.t, buf, (size_t)n, now, &id);
    t_adopt += ns_since(&a);
    if (rc != 0 || tcp_freeze(c.t, id, now) != 0 || tcp_release(c.t, id, now) != 0) {
      CHECK(false);
      break;
    }
    struct tcp_event ev;
    while (tcp_next_event(c.t, &ev)) {
    }
  }
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
  const char *build = "ASan+UBSan build";
#else
  const char *build = "optimized build";
#endif
#else
  const char *build = "build";
#endif
  printf("# cost %s (%ld bytes): snapshot %.0f ns + adopt %.0f ns = %.0f ns per move (%d iterations, %s)\n", name,
         len, t_snap / iters, t_adopt / iters, (t_snap + t_adopt) / iters, iters, build);
  free(buf);
  solo_free(&c);
}

static bool until_rcvd(struct ls_net *n, void *ctx) {
  (void)n;
  struct fixture *f = ctx;
  struct tcp_flow_info fi;
  return tcp_flow_info(f->net.h[1].t, f->sfid[0], &fi) == 0 && fi.readable_bytes >= 8000 + 65536;
}

TEST(migrate_cost) {
  int iters = getenv("CPB_BENCH_ITERS") ? atoi(getenv("CPB_BENCH_ITERS")) : 2000;
  if (iters <= 0) iters = 1;
  struct fixture f;
  fixture_build(&f, 8000);
  struct ls_host *b = &f.net.h[1];
  /* flow 1 read out and idle: an empty-buffer TCB */
  REQUIRE(tcp_unfreeze(b->t, f.sfid[1], ls_host_now(b)) == 0);
  tcp_recv(b->t, f.sfid[1], iobuf, sizeof(iobuf), ls_host_now(b));
  ls_run(&f.net, NULL, NULL, f.net.now + 1 * SEC);
  tcp_recv(b->t, f.sfid[1], iobuf, sizeof(iobuf), ls_host_now(b));
  REQUIRE(tcp_freeze(b->t, f.sfid[1], ls_host_now(b)) == 0);
  long n = tcp_snapshot_size(b->t, f.sfid[1]);
  CHECK_EQ(n, TCP_SNAP_FIXED_LEN);
  uint8_t *snap = malloc((size_t)n);
  REQUIRE(tcp_snapshot(b->t, f.sfid[1], snap, (size_t)n, ls_host_now(b)) == n);
  corpus_write("idle", snap, n);
  bench("empty buffers", n, b, f.sfid[1], iters);
  free(snap);
  /* flow 0: 64 KiB unread in order */
  f.net.filter = NULL;
  REQUIRE(tcp_unfreeze(b->t, f.sfid[0], ls_host_now(b)) == 0);
  static uint8_t more[65536];
  tcp_send(f.net.h[0].t, f.cfid[0], more, sizeof(more), ls_host_now(&f.net.h[0]));
  REQUIRE(ls_run(&f.net, until_rcvd, &f, f.net.now + 10 * SEC));
  CHECK_EQ(tcp_recv(b->t, f.sfid[0], iobuf, 8000, ls_host_now(b)), 8000); /* what the fixture sent */
  ls_run(&f.net, NULL, NULL, f.net.now + 1 * SEC);
  REQUIRE(tcp_freeze(b->t, f.sfid[0], ls_host_now(b)) == 0);
  n = tcp_snapshot_size(b->t, f.sfid[0]);
  CHECK_EQ(n, 65536 + TCP_SNAP_FIXED_LEN);
  bench("64 KiB buffered", n, b, f.sfid[0], iters);
  fixture_free(&f);
}
