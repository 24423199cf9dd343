/* SYN cookies (native/tcp/syncookie.c). A raw harness plays the peer segment by segment against one
 * instance (what the SYN-ACK carries, what an ACK must echo, forged, stale and option-less cookies), and
 * the link simulator runs a real client instance through a cookie handshake followed by a bulk transfer
 * both ways, so the options the cookie remembered (MSS, window scale, SACK, timestamps) are the ones the
 * connection then lives by. */
#include "linksim.h"
#include "t.h"
#include "tcp/tcp_debug.h"

#define SRV 0x0a000001u
#define CLI 0x0a000002u
#define PORT 80
#define SEC CPB_US_PER_S
#define PERIOD (64ULL * SEC)

/* ---- raw harness: one instance, every emitted segment captured ---- */
struct raw {
  struct cpb_arena arena;
  struct cpb_tcp *t;
  uint8_t frame[1600], last[1600];
  cpb_ip4_t fsrc, fdst;
  size_t last_len;
  int nout;
  cpb_time_t now;
  uint64_t lid;
};

static uint8_t *raw_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  struct raw *r = ctx;
  r->fsrc = src;
  r->fdst = dst;
  *cap = 1480;
  return r->frame;
}
static void raw_commit(void *ctx, size_t len) {
  struct raw *r = ctx;
  if (!len) return;
  tcp_fill_checksum(r->frame, len, r->fsrc, r->fdst);
  memcpy(r->last, r->frame, len);
  r->last_len = len;
  r->nout++;
}

static void raw_open(struct raw *r, uint32_t backlog, bool cookies, bool timestamps) {
  memset(r, 0, sizeof(*r));
  struct cpb_arena_config ac = {.slots = 16, .chunks = 256};
  if (cpb_arena_create(&r->arena, &ac) != 0) abort();
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = SRV;
  c.max_flows = 16;
  c.syncookies_off = !cookies;
  c.timestamps = timestamps;
  for (int k = 0; k < 16; k++) c.iss_secret[k] = (uint8_t)(k * 11 + 5);
  r->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = r, .begin = raw_begin, .commit = raw_commit};
  if (!r->t || tcp_init(r->t, &r->arena, &c, &out) != 0) abort();
  r->now = 1000 * SEC;
  if (tcp_listen(r->t, PORT, backlog, &r->lid) != 0) abort();
}

static void raw_close(struct raw *r) {
  tcp_fini(r->t);
  free(r->t);
  CHECK_EQ(r->arena.hdr->slots_used, 0);
  CHECK_EQ(r->arena.hdr->chunks_used, 0);
  cpb_arena_destroy(&r->arena);
}

static struct tcp_stats raw_stats(struct raw *r) {
  struct tcp_stats s;
  tcp_get_stats(r->t, &s);
  return s;
}

/* Sends a segment from CLI:sport; returns how many segments the instance emitted in answer. */
static int raw_send(struct raw *r, struct tcp_repr *seg, const void *payload, size_t plen) {
  uint8_t buf[1600];
  seg->dport = PORT;
  if (!seg->window) seg->window = 65535;
  int h = tcp_emit_header(seg, buf, sizeof(buf));
  if (h < 0 || (size_t)h + plen > sizeof(buf)) abort();
  if (plen) memcpy(buf + h, payload, plen);
  tcp_fill_checksum(buf, (size_t)h + plen, CLI, SRV);
  int before = r->nout;
  tcp_input(r->t, CLI, SRV, buf, (size_t)h + plen, r->now);
  tcp_poll(r->t, r->now);
  return r->nout - before;
}

static bool raw_last(struct raw *r, struct tcp_repr *out) {
  return r->last_len && tcp_parse(r->last, r->last_len, SRV, CLI, true, out) == 0;
}

static struct tcp_repr syn_seg(uint16_t sport, uint32_t isn, bool ts, bool ws, bool sack) {
  struct tcp_repr s;
  memset(&s, 0, sizeof(s));
  s.sport = sport;
  s.seq = isn;
  s.flags = TCP_SYN;
  s.opts.has_mss = true;
  s.opts.mss = 1400;
  if (ts) {
    s.opts.has_ts = true;
    s.opts.ts_val = 777000;
  }
  if (ws) {
    s.opts.has_wscale = true;
    s.opts.wscale = 9;
  }
  s.opts.sack_permitted = sack;
  return s;
}

/* The ACK a real client sends for a SYN-ACK. */
static struct tcp_repr ack_for(const struct tcp_repr *synack, uint16_t sport, uint32_t isn, bool ts) {
  struct tcp_repr a;
  memset(&a, 0, sizeof(a));
  a.sport = sport;
  a.seq = isn + 1;
  a.ack = synack->seq + 1;
  a.flags = TCP_ACK;
  a.window = 1000;
  if (ts) {
    a.opts.has_ts = true;
    a.opts.ts_val = 777100;
    a.opts.ts_ecr = synack->opts.ts_val;
  }
  return a;
}

/* Fills the SYN queue of a backlog-1 listener with one half-open flow (port 1000). */
static void fill_queue(struct raw *r) {
  struct tcp_repr s = syn_seg(1000, 5, true, true, true);
  CHECK_EQ(raw_send(r, &s, NULL, 0), 1);
  CHECK_EQ(raw_stats(r).flows_current, 1);
}

TEST(cookie_only_when_backlog_full) {
  struct raw r;
  raw_open(&r, 1, true, true);
  fill_queue(&r);
  CHECK_EQ(raw_stats(&r).syncookies_sent, 0); /* the first SYN got a real TCB */
  struct tcp_repr s = syn_seg(2000, 100, true, true, true), sa;
  CHECK_EQ(raw_send(&r, &s, NULL, 0), 1);
  REQUIRE(raw_last(&r, &sa));
  CHECK_EQ(sa.flags, TCP_SYN | TCP_ACK);
  CHECK_EQ(sa.ack, 101);
  CHECK(sa.opts.has_mss && sa.opts.mss == 1460);
  CHECK(sa.opts.has_ts && sa.opts.ts_ecr == 777000);
  CHECK_EQ(sa.opts.ts_val & 0xf, 9); /* the peer's wscale rides in the TSval */
  CHECK(sa.opts.ts_val & 0x10);       /* and SACK-permitted */
  CHECK(sa.opts.has_wscale && sa.opts.wscale == 7 && sa.opts.sack_permitted);
  struct tcp_stats st = raw_stats(&r);
  CHECK_EQ(st.syncookies_sent, 1);
  CHECK_EQ(st.flows_current, 1); /* no state kept for the cookie */
  CHECK_EQ(st.backlog_drops, 0);

  /* The final ACK, carrying data, builds the flow with the remembered options. */
  struct tcp_repr a = ack_for(&sa, 2000, 100, true);
  a.flags |= TCP_PSH;
  r.now += 30 * SEC;
  raw_send(&r, &a, "hello", 5);
  st = raw_stats(&r);
  CHECK_EQ(st.syncookies_ok, 1);
  CHECK_EQ(st.syncookies_failed, 0);
  CHECK_EQ(st.flows_current, 2);
  uint64_t fid;
  REQUIRE(tcp_accept(r.t, r.lid, &fid) == 0);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(r.t, fid, &fi) == 0);
  CHECK_EQ(fi.state, TCP_ESTABLISHED);
  CHECK_EQ(fi.snd_wscale, 9);
  CHECK_EQ(fi.rcv_wscale, 7);
  CHECK(fi.ts_ok);
  CHECK(fi.sack_ok);
  CHECK_EQ(fi.mss, 1300 - 12); /* largest table MSS <= 1400, minus the timestamp option */
  CHECK_EQ(fi.snd_wnd, 1000u << 9);
  char buf[16];
  CHECK_EQ(tcp_recv(r.t, fid, buf, sizeof(buf), r.now), 5);
  CHECK(memcmp(buf, "hello", 5) == 0);
  CHECK_EQ(tcp_send(r.t, fid, "world", 5, r.now), 5);
  tcp_poll(r.t, r.now);
  struct tcp_repr d;
  REQUIRE(raw_last(&r, &d));
  CHECK_EQ(d.seq, sa.seq + 1);
  CHECK_EQ(d.ack, 106);
  CHECK_EQ(d.payload_len, 5);
  tcp_abort(r.t, fid, r.now);
  raw_close(&r);
}

TEST(cookie_without_timestamps_keeps_mss_only) {
  struct raw r;
  raw_open(&r, 1, true, true);
  fill_queue(&r);
  struct tcp_repr s = syn_seg(2001, 7, false, true, true), sa;
  s.opts.mss = 1460;
  CHECK_EQ(raw_send(&r, &s, NULL, 0), 1);
  REQUIRE(raw_last(&r, &sa));
  CHECK(!sa.opts.has_ts && !sa.opts.has_wscale && !sa.opts.sack_permitted);
  struct tcp_repr a = ack_for(&sa, 2001, 7, false);
  raw_send(&r, &a, NULL, 0);
  uint64_t fid;
  REQUIRE(tcp_accept(r.t, r.lid, &fid) == 0);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(r.t, fid, &fi) == 0);
  CHECK_EQ(fi.mss, 1460);
  CHECK(!fi.ts_ok && !fi.sack_ok);
  CHECK_EQ(fi.snd_wscale, 0);
  CHECK_EQ(fi.rcv_wscale, 0);
  tcp_abort(r.t, fid, r.now);
  raw_close(&r);
}

TEST(forged_and_stale_cookie_acks_refused) {
  struct raw r;
  raw_open(&r, 1, true, true);
  /* No cookie sent yet: an ACK to the listener is the ordinary RST case, not a cookie failure. */
  struct tcp_repr a0;
  memset(&a0, 0, sizeof(a0));
  a0.sport = 3000;
  a0.seq = 1;
  a0.ack = 12345;
  a0.flags = TCP_ACK;
  CHECK_EQ(raw_send(&r, &a0, NULL, 0), 1);
  CHECK_EQ(raw_stats(&r).syncookies_failed, 0);
  fill_queue(&r);
  struct tcp_repr s = syn_seg(2002, 1000, true, true, true), sa;
  raw_send(&r, &s, NULL, 0);
  REQUIRE(raw_last(&r, &sa));

  /* Blind guesses (seeded, deterministic): every one is refused with a RST, none makes a flow. */
  uint64_t x = 0x243f6a8885a308d3ULL;
  for (int i = 0; i < 2000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    struct tcp_repr g = ack_for(&sa, (uint16_t)(4000 + i % 50), (uint32_t)x, true);
    g.ack = (uint32_t)(x >> 32);
    CHECK_EQ(raw_send(&r, &g, NULL, 0), 1);
    struct tcp_repr rst;
    REQUIRE(raw_last(&r, &rst));
    CHECK(rst.flags & TCP_RST);
  }
  /* The right cookie from the wrong port, or with the wrong ISN, or echoing a TSval we never sent. */
  struct tcp_repr w = ack_for(&sa, 2003, 1000, true);
  raw_send(&r, &w, NULL, 0);
  w = ack_for(&sa, 2002, 1001, true);
  raw_send(&r, &w, NULL, 0);
  w = ack_for(&sa, 2002, 1000, true);
  w.opts.ts_ecr = sa.opts.ts_val + 100000;
  raw_send(&r, &w, NULL, 0);
  struct tcp_stats st = raw_stats(&r);
  CHECK_EQ(st.syncookies_ok, 0);
  CHECK_EQ(st.syncookies_failed, 2003);
  CHECK_EQ(st.flows_current, 1);

  /* The genuine ACK, too late: the cookie's key has rotated out. */
  w = ack_for(&sa, 2002, 1000, true);
  r.now += 3 * PERIOD + SEC;
  /* (a cookie was sent within the check window only if we send one now: refresh it) */
  struct tcp_repr s2 = syn_seg(2010, 9, true, false, false);
  raw_send(&r, &s2, NULL, 0);
  raw_send(&r, &w, NULL, 0);
  st = raw_stats(&r);
  CHECK_EQ(st.syncookies_ok, 0);
  CHECK_EQ(st.syncookies_failed, 2004);
  raw_close(&r);
}

TEST(cookie_valid_across_one_rotation) {
  struct raw r;
  raw_open(&r, 1, true, true);
  fill_queue(&r);
  struct tcp_repr s = syn_seg(2020, 42, true, true, false), sa;
  raw_send(&r, &s, NULL, 0);
  REQUIRE(raw_last(&r, &sa));
  CHECK(!(sa.opts.ts_val & 0x10)); /* no SACK asked, none remembered */
  r.now += PERIOD + 5 * SEC;       /* the next period: the previous key is still accepted */
  struct tcp_repr a = ack_for(&sa, 2020, 42, true);
  raw_send(&r, &a, NULL, 0);
  CHECK_EQ(raw_stats(&r).syncookies_ok, 1);
  uint64_t fid;
  REQUIRE(tcp_accept(r.t, r.lid, &fid) == 0);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(r.t, fid, &fi) == 0);
  CHECK(!fi.sack_ok);
  CHECK(fi.ts_ok);
  tcp_abort(r.t, fid, r.now);
  raw_close(&r);
}

TEST(cookies_off_or_accept_queue_full_drop) {
  struct raw r;
  raw_open(&r, 1, false, true);
  fill_queue(&r);
  struct tcp_repr s = syn_seg(2030, 1, true, true, true);
  CHECK_EQ(raw_send(&r, &s, NULL, 0), 0);
  struct tcp_stats st = raw_stats(&r);
  CHECK_EQ(st.syncookies_sent, 0);
  CHECK_EQ(st.backlog_drops, 1);
  raw_close(&r);

  /* Accept queue full (the app does not accept): cookies would only queue more, so the SYN is dropped. */
  raw_open(&r, 1, true, true);
  struct tcp_repr s1 = syn_seg(2040, 1, true, true, true), sa;
  raw_send(&r, &s1, NULL, 0);
  REQUIRE(raw_last(&r, &sa));
  struct tcp_repr a = ack_for(&sa, 2040, 1, true);
  raw_send(&r, &a, NULL, 0);
  s = syn_seg(2041, 1, true, true, true);
  CHECK_EQ(raw_send(&r, &s, NULL, 0), 0);
  st = raw_stats(&r);
  CHECK_EQ(st.syncookies_sent, 0);
  CHECK_EQ(st.backlog_drops, 1);
  raw_close(&r);
}

/* ---- a real client through a cookie handshake, then bulk data both ways ---- */
struct bulk {
  uint64_t lid, sfid, cfid;
  bool accepted, connected;
  uint64_t s_sent, s_rcvd, c_sent, c_rcvd;
  bool bad;
};

#define BULK_BYTES (600u * 1024)
static uint8_t pat(uint64_t off) { return (uint8_t)(off * 7 + (off >> 9)); }

static void pump(struct cpb_tcp *t, uint64_t fid, uint64_t *sent, uint64_t *rcvd, bool *bad, cpb_time_t now) {
  uint8_t buf[8192];
  for (;;) {
    long n = tcp_recv(t, fid, buf, sizeof(buf), now);
    if (n <= 0) break;
    for (long i = 0; i < n; i++)
      if (buf[i] != pat(*rcvd + (uint64_t)i)) *bad = true;
    *rcvd += (uint64_t)n;
  }
  while (*sent < BULK_BYTES) {
    size_t n = CPB_MIN(sizeof(buf), (size_t)(BULK_BYTES - *sent));
    for (size_t i = 0; i < n; i++) buf[i] = pat(*sent + i);
    long w = tcp_send(t, fid, buf, n, now);
    if (w <= 0) break;
    *sent += (uint64_t)w;
  }
}

static bool bulk_step(struct ls_net *n, void *ctx) {
  struct bulk *b = ctx;
  struct ls_host *s = &n->h[0], *c = &n->h[1];
  struct tcp_event ev;
  while (tcp_next_event(s->t, &ev)) {
  }
  while (tcp_next_event(c->t, &ev))
    if (ev.type == TCP_EV_CONNECTED) b->connected = true;
  if (!b->accepted && tcp_accept(s->t, b->lid, &b->sfid) == 0) b->accepted = true;
  if (b->accepted) pump(s->t, b->sfid, &b->s_sent, &b->s_rcvd, &b->bad, ls_host_now(s));
  if (b->connected) pump(c->t, b->cfid, &b->c_sent, &b->c_rcvd, &b->bad, ls_host_now(c));
  n->wake_at = n->now + 1000;
  return b->s_rcvd == BULK_BYTES && b->c_rcvd == BULK_BYTES;
}

TEST(cookie_connection_carries_bulk_both_ways) {
  struct ls_net n;
  ls_init(&n, 7, 500 * SEC);
  n.f.delay_us = 2000;
  n.f.loss_pm = 5; /* some loss so SACK recovery runs on the options the cookie remembered */
  struct ls_host *s = ls_add_host(&n, SRV, 0, 2048, NULL, NULL);
  struct ls_host *c = ls_add_host(&n, CLI, 12345, 2048, NULL, NULL);
  struct bulk b = {0};
  REQUIRE(tcp_listen(s->t, PORT, 1, &b.lid) == 0);
  /* a half-open flow from a host that never answers fills the SYN queue */
  struct tcp_repr syn;
  memset(&syn, 0, sizeof(syn));
  syn.sport = 999;
  syn.dport = PORT;
  syn.seq = 1;
  syn.flags = TCP_SYN;
  syn.window = 1000;
  uint8_t buf[64];
  int h = tcp_emit_header(&syn, buf, sizeof(buf));
  tcp_fill_checksum(buf, (size_t)h, 0x0a0000ffu, SRV);
  tcp_input(s->t, 0x0a0000ffu, SRV, buf, (size_t)h, ls_host_now(s));
  REQUIRE(tcp_connect(c->t, SRV, PORT, 0, ls_host_now(c), &b.cfid) == 0);
  bool done = ls_run(&n, bulk_step, &b, n.now + 120 * SEC);
  CHECK(done);
  CHECK(!b.bad);
  struct tcp_stats st;
  tcp_get_stats(s->t, &st);
  CHECK_EQ(st.syncookies_sent, 1);
  CHECK_EQ(st.syncookies_ok, 1);
  struct tcp_flow_info fi;
  REQUIRE(tcp_flow_info(s->t, b.sfid, &fi) == 0);
  CHECK(fi.ts_ok && fi.sack_ok);
  CHECK_EQ(fi.snd_wscale, 7);
  CHECK(fi.retransmits > 0 || st.retransmits > 0);
  tcp_abort(s->t, b.sfid, ls_host_now(s));
  tcp_abort(c->t, b.cfid, ls_host_now(c));
  ls_run(&n, NULL, NULL, n.now + 200 * SEC);
  ls_free(&n);
}
