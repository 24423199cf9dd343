/* Resource limits: every bound has a configuration, a counter and a clean refusal, and memory never grows
 * past it. A raw peer drives one instance segment by segment:
 *   max flows / arena slots   a SYN beyond them gets a RST (flow_limit_drops), connect -ENOBUFS, adopt -ENOSPC
 *   receive buffer            data beyond rcvbuf is not queued nor acknowledged; the window closes
 *   send buffer               tcp_send takes up to sndbuf, then -EAGAIN
 *   chunk pool                a flow that meets an empty pool drops (chunk_exhausted) and recovers when
 *                             chunks come back (adopt's -ENOSPC for a full pool: test_tcp_migrate.c)
 *   hold queue (frozen flow)  per flow TCP_HOLD_FLOW_SEGS and the shared pool cfg.hold_segs; the rest is
 *                             dropped and counted (held_drops), and what was held is processed on unfreeze
 * After every test all slots and chunks are back in the arena. */
#include "t.h"
#include "tcp/tcp.h"
#include "tcp/tcp_debug.h"
#include "wire/tcp.h"
#include "arena.h"

#define SRV 0x0a000001u
#define CLI 0x0a000002u
#define PORT 80
#define SEC CPB_US_PER_S
#define ISS 1000000u
#define PISN 5000000u

struct lim {
  struct cpb_arena arena;
  struct cpb_tcp *t;
  uint8_t frame[1600], last[1600];
  cpb_ip4_t fsrc, fdst;
  size_t last_len;
  int nout;
  cpb_time_t now;
  uint64_t lid;
};

static uint8_t *l_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  struct lim *l = ctx;
  l->fsrc = src;
  l->fdst = dst;
  *cap = 1480;
  return l->frame;
}
static void l_commit(void *ctx, size_t len) {
  struct lim *l = ctx;
  if (!len) return;
  tcp_fill_checksum(l->frame, len, l->fsrc, l->fdst);
  memcpy(l->last, l->frame, len);
  l->last_len = len;
  l->nout++;
}

static void l_open(struct lim *l, uint32_t slots, uint32_t chunks, void (*tweak)(struct tcp_config *)) {
  memset(l, 0, sizeof(*l));
  struct cpb_arena_config ac = {.slots = slots, .chunks = chunks};
  if (cpb_arena_create(&l->arena, &ac) != 0) abort();
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = SRV;
  c.max_flows = slots;
  c.timestamps = false; /* plain segments: the limits, not the options, are under test */
  c.sack = false;
  c.delack_us = 1;
  if (tweak) tweak(&c);
  l->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = l, .begin = l_begin, .commit = l_commit};
  if (!l->t || tcp_init(l->t, &l->arena, &c, &out) != 0) abort();
  tcp_debug_fix_iss(l->t, ISS, 0);
  l->now = 10 * SEC;
  if (tcp_listen(l->t, PORT, 64, &l->lid) != 0) abort();
}

static void l_close(struct lim *l) {
  tcp_fini(l->t);
  free(l->t);
  CHECK_EQ(l->arena.hdr->slots_used, 0);
  CHECK_EQ(l->arena.hdr->chunks_used, 0);
  cpb_arena_destroy(&l->arena);
}

static struct tcp_stats l_stats(struct lim *l) {
  struct tcp_stats s;
  tcp_get_stats(l->t, &s);
  return s;
}

static void l_seg(struct lim *l, uint16_t sport, uint8_t flags, uint32_t seq, uint32_t ack, size_t plen) {
  struct tcp_repr r;
  memset(&r, 0, sizeof(r));
  r.sport = sport;
  r.dport = PORT;
  r.seq = seq;
  r.ack = ack;
  r.flags = flags;
  r.window = 65535;
  if (flags & TCP_SYN) {
    r.opts.has_mss = true;
    r.opts.mss = 1460;
  }
  uint8_t buf[1600];
  int h = tcp_emit_header(&r, buf, sizeof(buf));
  if (h < 0 || (size_t)h + plen > sizeof(buf)) abort();
  for (size_t i = 0; i < plen; i++) buf[h + i] = (uint8_t)(seq + i);
  tcp_fill_checksum(buf, (size_t)h + plen, CLI, SRV);
  tcp_input(l->t, CLI, SRV, buf, (size_t)h + plen, l->now);
  tcp_poll(l->t, l->now);
}

static bool l_last(struct lim *l, struct tcp_repr *r) {
  return l->last_len && tcp_parse(l->last, l->last_len, SRV, CLI, true, r) == 0;
}

/* A passive open from sport, accepted; returns the flow id. */
static uint64_t l_establish(struct lim *l, uint16_t sport) {
  l_seg(l, sport, TCP_SYN, PISN, 0, 0);
  l_seg(l, sport, TCP_ACK, PISN + 1, ISS + 1, 0);
  uint64_t fid = 0;
  CHECK_EQ(tcp_accept(l->t, l->lid, &fid), 0);
  return fid;
}

static void small_bufs(struct tcp_config *c) {
  c->rcvbuf = 4096;
  c->sndbuf = 8192;
}

TEST(max_flows_refused_with_rst_enobufs_enospc) {
  struct lim l, src;
  l_open(&l, 2, 64, NULL);
  uint64_t a = l_establish(&l, 1001);
  (void)l_establish(&l, 1002);
  CHECK_EQ(l_stats(&l).flows_current, 2);
  int before = l.nout;
  l_seg(&l, 1003, TCP_SYN, PISN, 0, 0);
  struct tcp_repr r;
  REQUIRE(l.nout == before + 1 && l_last(&l, &r));
  CHECK_EQ(r.flags, TCP_RST | TCP_ACK); /* the client gets ECONNREFUSED, not a retry loop */
  CHECK_EQ(r.ack, PISN + 1);
  CHECK_EQ(l_stats(&l).flow_limit_drops, 1);
  uint64_t id;
  CHECK_EQ(tcp_connect(l.t, CLI, 9, 0, l.now, &id), -ENOBUFS);
  CHECK_EQ(l_stats(&l).flow_limit_drops, 2);

  /* A migrated flow offered to a full host is refused whole, nothing allocated. */
  l_open(&src, 4, 64, NULL);
  uint64_t m = l_establish(&src, 2001);
  REQUIRE(tcp_freeze(src.t, m, src.now) == 0);
  static uint8_t snap[65536];
  long n = tcp_snapshot(src.t, m, snap, sizeof(snap), src.now);
  REQUIRE(n > 0);
  uint32_t chunks = l.arena.hdr->chunks_used;
  CHECK_EQ(tcp_adopt(l.t, snap, (size_t)n, l.now, &id), -ENOSPC);
  CHECK_EQ(l_stats(&l).adopt_rejects, 1);
  CHECK_EQ(l.arena.hdr->slots_used, 2);
  CHECK_EQ(l.arena.hdr->chunks_used, chunks);
  /* Room again after a flow ends: the same snapshot is adopted. */
  REQUIRE(tcp_abort(l.t, a, l.now) == 0);
  CHECK_EQ(tcp_adopt(l.t, snap, (size_t)n, l.now, &id), 0);
  CHECK_EQ(l_stats(&l).flows_current, 2);
  l_close(&src);
  l_close(&l);
}

TEST(receive_buffer_caps_queue_and_window) {
  struct lim l;
  l_open(&l, 4, 64, small_bufs);
  uint64_t f = l_establish(&l, 1001);
  uint32_t seq = PISN + 1;
  for (int i = 0; i < 10; i++) l_seg(&l, 1001, TCP_ACK | TCP_PSH, seq + (uint32_t)i * 1000, ISS + 1, 1000);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(l.t, f, &fi) == 0);
  CHECK(fi.readable_bytes <= 4096);
  CHECK_EQ(fi.rcv_nxt - seq, fi.readable_bytes); /* nothing acknowledged beyond what is queued */
  CHECK_EQ(fi.rcv_wnd, 4096 - fi.readable_bytes);
  struct tcp_repr r;
  REQUIRE(l_last(&l, &r));
  CHECK_EQ(r.ack, fi.rcv_nxt);
  uint8_t buf[8192];
  CHECK_EQ(tcp_recv(l.t, f, buf, sizeof(buf), l.now), (long)fi.readable_bytes);
  l_close(&l);
}

TEST(send_buffer_caps_tcp_send) {
  struct lim l;
  l_open(&l, 4, 64, small_bufs);
  uint64_t f = l_establish(&l, 1001);
  static uint8_t data[20000];
  CHECK_EQ(tcp_send(l.t, f, data, sizeof(data), l.now), 8192);
  CHECK_EQ(tcp_send(l.t, f, data, 10, l.now), -EAGAIN);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(l.t, f, &fi) == 0);
  CHECK_EQ(fi.unacked_bytes + fi.unsent_bytes, 8192);
  l_close(&l);
}

static void big_rcv(struct tcp_config *c) {
  c->rcvbuf = 64 * 1024;
  c->sndbuf = 64 * 1024;
}

TEST(chunk_pool_exhaustion_drops_counts_and_recovers) {
  struct lim l;
  l_open(&l, 4, 6, big_rcv); /* 12 KiB of data chunks shared by every flow */
  uint64_t a = l_establish(&l, 1001), b = l_establish(&l, 1002);
  uint32_t seq = PISN + 1;
  for (int i = 0; i < 20; i++) l_seg(&l, 1001, TCP_ACK, seq + (uint32_t)i * 1000, ISS + 1, 1000);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(l.t, a, &fi) == 0);
  CHECK(fi.readable_bytes <= 6 * 2048);
  CHECK(fi.readable_bytes >= 10000);
  struct tcp_stats st = l_stats(&l);
  CHECK(st.chunk_exhausted > 0);
  CHECK_EQ(l.arena.hdr->chunks_used, 6);
  /* The other flow finds the pool empty: its send is refused, not queued. */
  static uint8_t data[4096];
  CHECK_EQ(tcp_send(l.t, b, data, sizeof(data), l.now), -EAGAIN);
  CHECK(l_stats(&l).chunk_exhausted > st.chunk_exhausted);
  REQUIRE(tcp_flow_info(l.t, a, &fi) == 0);
  uint32_t acked = fi.rcv_nxt;
  /* Reading gives the chunks back; both flows carry on. */
  static uint8_t buf[65536];
  long got = tcp_recv(l.t, a, buf, sizeof(buf), l.now);
  CHECK(got > 0);
  for (long i = 0; i < got; i++)
    if (buf[i] != (uint8_t)(seq + (uint32_t)i)) {
      CHECK(!"received bytes intact");
      break;
    }
  CHECK(l.arena.hdr->chunks_used < 6);
  CHECK(tcp_send(l.t, b, data, sizeof(data), l.now) > 0);
  l_seg(&l, 1001, TCP_ACK, acked, ISS + 1, 1000); /* the dropped data, retransmitted, is taken now */
  REQUIRE(tcp_flow_info(l.t, a, &fi) == 0);
  CHECK_EQ(fi.rcv_nxt, acked + 1000);
  l_close(&l);
}

/* A pool a little larger than one flow's bound: the first flow meets its own bound, the second the pool's. */
#define HOLD_POOL (TCP_HOLD_FLOW_SEGS + 36)
static void hold_pool(struct tcp_config *c) { c->hold_segs = HOLD_POOL; }

TEST(hold_queue_bounded_per_flow_and_pool) {
  struct lim l;
  l_open(&l, 4, 64, hold_pool);
  uint64_t a = l_establish(&l, 1001), b = l_establish(&l, 1002);
  REQUIRE(tcp_freeze(l.t, a, l.now) == 0);
  REQUIRE(tcp_freeze(l.t, b, l.now) == 0);
  uint32_t seq = PISN + 1;
  for (int i = 0; i < TCP_HOLD_FLOW_SEGS + 16; i++) l_seg(&l, 1001, TCP_ACK, seq + (uint32_t)i * 100, ISS + 1, 100);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(l.t, a, &fi) == 0);
  CHECK_EQ(fi.held_segs, TCP_HOLD_FLOW_SEGS); /* one flow cannot take the whole pool */
  CHECK_EQ(l_stats(&l).held_drops, 16);
  for (int i = 0; i < 60; i++) l_seg(&l, 1002, TCP_ACK, seq + (uint32_t)i * 100, ISS + 1, 100);
  REQUIRE(tcp_flow_info(l.t, b, &fi) == 0);
  CHECK_EQ(fi.held_segs, HOLD_POOL - TCP_HOLD_FLOW_SEGS); /* the pool is the second bound */
  struct tcp_stats st = l_stats(&l);
  CHECK_EQ(st.held_segments, HOLD_POOL);
  CHECK_EQ(st.held_drops, 16 + (60 - (HOLD_POOL - TCP_HOLD_FLOW_SEGS)));
  /* Unfreeze processes what was held, in order: the first TCP_HOLD_FLOW_SEGS segments' bytes are there. */
  REQUIRE(tcp_unfreeze(l.t, a, l.now) == 0);
  tcp_poll(l.t, l.now);
  REQUIRE(tcp_flow_info(l.t, a, &fi) == 0);
  CHECK_EQ(fi.readable_bytes, TCP_HOLD_FLOW_SEGS * 100);
  CHECK_EQ(fi.held_segs, 0);
  /* The pool slots came back: the other flow can hold again. */
  REQUIRE(tcp_flow_info(l.t, b, &fi) == 0);
  uint32_t held = fi.held_segs;
  l_seg(&l, 1002, TCP_ACK, seq + 6000, ISS + 1, 100);
  REQUIRE(tcp_flow_info(l.t, b, &fi) == 0);
  CHECK_EQ(fi.held_segs, held + 1);
  l_close(&l);
}
