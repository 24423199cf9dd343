/* The migration lane's messages beyond one datagram (native/mig/lanefrag.h), on a virtual clock: a client
 * C and two servers A and B that share the server address (linksim.h: whichever is up gets the client's
 * segments, and the lane's steering flips that), with lanes between A and B over a simulated datagram
 * link of their own: a device ring that fills (begin returns NULL), serialization, and seeded loss,
 * duplication and reordering. Covers a flow with ~300 KiB unsent/unacknowledged send data and ~100 KiB
 * unread receive data moving A -> B -> A byte-exact on a clean and on a lossy link, a full-MSS client
 * segment caught by the freeze reaching the target through the lane, the opaque record reaching
 * apps.adopt byte-exact, the pool of big-offer buffers, and hostile parts fed to a lane directly. */
#include <stdio.h>
#include <stdlib.h>

#include "linksim.h"
#include "mig/lane.h"
#include "mig/lanefrag.h"
#include "mig/lanekey.h"
#include "t.h"

#define IP_C 0x0a000001u
#define IP_S 0x0a000002u  /* the server address A and B share */
#define LIP_A 0x0a000101u /* the lanes' own addresses */
#define LIP_B 0x0a000102u
#define LIP_X 0x0a000150u /* hostile peers (keys only) */
#define LIP_Y 0x0a000151u
#define PORT 80
#define KEY_AB 5
#define RING 64        /* frames the lane's device ring holds */
#define SER_US 12      /* one 1.4 KB frame at ~1 Gbit/s */
#define LANE_DELAY_US 40
#define SEC CPB_US_PER_S

/* ---- the world ---- */

struct dgram {
  cpb_time_t at;
  uint64_t order;
  cpb_ip4_t src, dst;
  size_t len;
  uint8_t *data;
};

struct lhost {
  struct ls_host *h; /* NULL: a lane without TCP host (hostile test) */
  struct cpb_lane *lane;
  cpb_ip4_t lip;
  int32_t backend;
  cpb_time_t busy; /* the device ring drains until then */
  uint8_t frame[1600];
  cpb_ip4_t dst;
  uint64_t flows[4];
  int adopted;
  uint8_t rec[8192];
  size_t rec_len;
  uint8_t state[CPB_LANE_APP_STATE];
  uint64_t in_id; /* the last adopted-in flow */
};

struct claim {
  uint16_t sport;
  uint64_t token;
  int32_t owner;
};

static struct {
  struct ls_net net;
  struct ls_host *c;
  struct lhost L[2];
  struct dgram *q;
  size_t nq, capq;
  uint64_t order, rng;
  unsigned loss_pm, dup_pm, reorder_pm;
  uint64_t lane_dropped, lane_sent;
  struct claim claims[16];
  int nclaims;
  int32_t steered; /* -1: none */
  /* outcomes */
  uint64_t out_id[4];
  int32_t out_err[4];
  int nout;
  /* the streams */
  uint64_t cfid, sfid;
  struct lhost *owner;
  bool reading;
  uint64_t c2s_sent, c2s_target, c2s_got, s2c_sent, s2c_target, s2c_got;
  int bad;
} W;

static uint8_t pat(uint64_t i, int dir) { return (uint8_t)(i * 131 + (i >> 9) * 7 + (uint64_t)dir * 61 + 3); }

static bool chance(unsigned pm) {
  W.rng ^= W.rng << 13, W.rng ^= W.rng >> 7, W.rng ^= W.rng << 17;
  return pm && W.rng % 1000 < pm;
}

/* ---- the lanes' device ---- */

static uint8_t *lane_begin(void *ctx, cpb_ip4_t dst, size_t *cap) {
  struct lhost *lh = ctx;
  cpb_time_t now = W.net.now;
  if (lh->busy > now + (cpb_time_t)RING * SER_US) return NULL; /* the ring is full */
  lh->dst = dst;
  *cap = 1480;
  return lh->frame;
}

static void q_push(cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *p, size_t len, cpb_time_t at) {
  if (W.nq == W.capq) {
    W.capq = W.capq ? W.capq * 2 : 1024;
    W.q = realloc(W.q, W.capq * sizeof(*W.q));
    if (!W.q) abort();
  }
  struct dgram *d = &W.q[W.nq++];
  *d = (struct dgram){.at = at, .order = W.order++, .src = src, .dst = dst, .len = len, .data = malloc(len)};
  if (!d->data) abort();
  memcpy(d->data, p, len);
}

static void lane_commit(void *ctx, uint8_t proto, size_t len) {
  struct lhost *lh = ctx;
  CHECK_EQ(proto, CPB_LANE_PROTO);
  cpb_time_t now = W.net.now;
  lh->busy = CPB_MAX(lh->busy, now) + SER_US;
  W.lane_sent++;
  if (chance(W.loss_pm)) {
    W.lane_dropped++;
    return;
  }
  int copies = chance(W.dup_pm) ? 2 : 1;
  for (int i = 0; i < copies; i++)
    q_push(lh->lip, lh->dst, lh->frame, len, lh->busy + LANE_DELAY_US + (chance(W.reorder_pm) ? 300 : 0));
}

static void lane_abort(void *ctx) { (void)ctx; }

/* ---- stand-in apps: flows are "sink" on port 80; the test reads and writes them itself ---- */

static int app_export(void *ctx, uint64_t id, char name[CPB_LANE_APP_NAME + 1], uint8_t state[CPB_LANE_APP_STATE]) {
  struct lhost *lh = ctx;
  for (int i = 0; i < 4; i++)
    if (lh->flows[i] == id) {
      snprintf(name, CPB_LANE_APP_NAME + 1, "sink");
      for (int k = 0; k < CPB_LANE_APP_STATE; k++) state[k] = (uint8_t)(id + (uint64_t)k);
      return 0;
    }
  return -ENOENT;
}

static bool app_accepts(void *ctx, uint16_t port, const char *name) {
  (void)ctx;
  return port == PORT && strcmp(name, "sink") == 0;
}

static int app_adopt(void *ctx, uint64_t id, uint16_t port, const char *name, const uint8_t state[CPB_LANE_APP_STATE],
                     const uint8_t *record, size_t record_len, cpb_time_t now) {
  struct lhost *lh = ctx;
  (void)now;
  CHECK_EQ(port, PORT);
  CHECK(strcmp(name, "sink") == 0);
  CHECK(record_len <= sizeof(lh->rec));
  if (record_len > sizeof(lh->rec)) return -ENOSPC;
  CHECK(record_len == 0 || record != NULL);
  if (record_len) memcpy(lh->rec, record, record_len);
  lh->rec_len = record_len;
  memcpy(lh->state, state, CPB_LANE_APP_STATE);
  for (int i = 0; i < 4; i++)
    if (!lh->flows[i]) {
      lh->flows[i] = id;
      lh->adopted++;
      return 0;
    }
  return -ENOSPC;
}

static void app_forget(void *ctx, uint64_t id) {
  struct lhost *lh = ctx;
  for (int i = 0; i < 4; i++)
    if (lh->flows[i] == id) lh->flows[i] = 0;
}

/* ---- the balancer: steering flips which server is up; claims are first come, first served ---- */

static int st_steer(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int32_t backend) {
  (void)ctx, (void)src, (void)sport, (void)dst, (void)dport;
  W.steered = backend;
  W.L[0].h->up = backend == 0;
  W.L[1].h->up = backend == 1;
  return 0;
}

static int st_owner(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  (void)ctx, (void)src, (void)sport, (void)dst, (void)dport;
  return W.steered >= 0 ? W.steered : -ENOENT;
}

static int st_claim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
                    int32_t *owner) {
  (void)ctx, (void)src, (void)dst, (void)dport;
  for (int i = 0; i < W.nclaims; i++)
    if (W.claims[i].sport == sport && W.claims[i].token == token) {
      *owner = W.claims[i].owner;
      return -EEXIST;
    }
  if (W.nclaims == 16) return -ENOSPC;
  W.claims[W.nclaims++] = (struct claim){.sport = sport, .token = token, .owner = backend};
  return 0;
}

static int st_unclaim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  (void)ctx, (void)src, (void)dst, (void)dport;
  for (int i = 0; i < W.nclaims; i++)
    if (W.claims[i].sport == sport && W.claims[i].token == token) {
      W.claims[i] = W.claims[--W.nclaims];
      return 0;
    }
  return -ENOENT;
}

static void dir_fill(struct cpb_lane_dir *d, uint8_t seed) {
  for (int i = 0; i < 32; i++) d->key[i] = (uint8_t)(seed + 17 * i);
  for (int i = 0; i < 12; i++) d->iv[i] = (uint8_t)(seed * 3 + 5 * i);
}

static void lane_open(struct lhost *lh, struct ls_host *h, cpb_ip4_t lip, int32_t backend) {
  lh->h = h;
  lh->lip = lip;
  lh->backend = backend;
  struct cpb_lane_ipout out = {.begin = lane_begin, .commit = lane_commit, .abort = lane_abort, .ctx = lh};
  struct cpb_lane_apps apps = {.export_flow = app_export, .accepts = app_accepts, .adopt = app_adopt, .forget = app_forget, .ctx = lh};
  lh->lane = cpb_lane_new(h ? h->t : NULL, &out, &apps);
  if (!lh->lane) abort();
  struct cpb_lane_steering st = {.steer = st_steer, .owner = st_owner, .claim = st_claim, .unclaim = st_unclaim, .self = backend};
  cpb_lane_set_steering(lh->lane, &st);
}

static void big_buffers(struct tcp_config *c, void *ctx) {
  (void)ctx;
  c->sndbuf = 512 * 1024; /* room for 300 KiB unacknowledged */
  c->rcvbuf = 256 * 1024;
}

static void world_open(uint64_t seed, unsigned loss, unsigned dup, unsigned reorder) {
  memset(&W, 0, sizeof(W));
  W.rng = seed * 0x9e3779b97f4a7c15ull + 1;
  W.loss_pm = loss, W.dup_pm = dup, W.reorder_pm = reorder;
  W.steered = -1;
  ls_init(&W.net, seed, 10 * SEC);
  W.net.f.delay_us = 100;
  W.c = ls_add_host(&W.net, IP_C, 0, 2048, NULL, NULL);
  struct ls_host *a = ls_add_host(&W.net, IP_S, 0, 2048, big_buffers, NULL);
  struct ls_host *b = ls_add_host(&W.net, IP_S, 0, 2048, big_buffers, NULL);
  b->up = false;
  lane_open(&W.L[0], a, LIP_A, 0);
  lane_open(&W.L[1], b, LIP_B, 1);
  struct cpb_lane_dir ab, ba;
  dir_fill(&ab, 0x21);
  dir_fill(&ba, 0x64);
  CHECK_EQ(cpb_lane_set_key(W.L[0].lane, LIP_B, KEY_AB, &ab, &ba, 1), 0);
  CHECK_EQ(cpb_lane_set_key(W.L[1].lane, LIP_A, KEY_AB, &ba, &ab, 0), 0);
}

static void world_close(void) {
  for (int i = 0; i < 2; i++) {
    if (!W.L[i].lane) continue;
    CHECK(!cpb_lane_waiting(W.L[i].lane));
    cpb_lane_free(W.L[i].lane);
  }
  for (size_t i = 0; i < W.nq; i++) free(W.q[i].data);
  free(W.q);
  ls_free(&W.net);
}

static struct lhost *lhost_of(cpb_ip4_t lip) {
  for (int i = 0; i < 2; i++)
    if (W.L[i].lane && W.L[i].lip == lip) return &W.L[i];
  return NULL;
}

/* Delivers the lane datagrams that are due, oldest first. */
static void lane_deliver(cpb_time_t now) {
  for (;;) {
    size_t best = W.nq;
    for (size_t i = 0; i < W.nq; i++)
      if (W.q[i].at <= now && (best == W.nq || W.q[i].at < W.q[best].at ||
                               (W.q[i].at == W.q[best].at && W.q[i].order < W.q[best].order)))
        best = i;
    if (best == W.nq) return;
    struct dgram d = W.q[best];
    W.q[best] = W.q[--W.nq];
    struct lhost *lh = lhost_of(d.dst);
    if (lh) cpb_lane_input(lh->lane, d.src, d.data, d.len, now);
    free(d.data);
  }
}

/* The application side: pumps both streams, reads and checks them, drains events. */
static void apps_turn(cpb_time_t now) {
  struct tcp_event ev;
  for (int i = 0; i < W.net.nh; i++)
    while (tcp_next_event(W.net.h[i].t, &ev)) {}
  for (int i = 0; i < 2; i++) {
    struct lhost *lh = &W.L[i];
    while (cpb_lane_next_event(lh->lane, &ev)) {
      if ((int)ev.type == CPB_LANE_EV_IN) {
        lh->in_id = ev.id;
        W.owner = lh, W.sfid = ev.id;
      } else if ((int)ev.type == CPB_LANE_EV_OUT && W.nout < 4) {
        W.out_id[W.nout] = ev.id, W.out_err[W.nout++] = ev.err;
      }
    }
  }
  static uint8_t buf[65536];
  struct cpb_tcp *ct = W.c->t, *st = W.owner ? W.owner->h->t : NULL;
  while (W.c2s_sent < W.c2s_target) {
    size_t n = (size_t)CPB_MIN(W.c2s_target - W.c2s_sent, sizeof(buf));
    for (size_t k = 0; k < n; k++) buf[k] = pat(W.c2s_sent + k, 0);
    long r = tcp_send(ct, W.cfid, buf, n, now);
    if (r <= 0) break;
    W.c2s_sent += (uint64_t)r;
  }
  while (st && W.s2c_sent < W.s2c_target) {
    size_t n = (size_t)CPB_MIN(W.s2c_target - W.s2c_sent, sizeof(buf));
    for (size_t k = 0; k < n; k++) buf[k] = pat(W.s2c_sent + k, 1);
    long r = tcp_send(st, W.sfid, buf, n, now);
    if (r <= 0) break;
    W.s2c_sent += (uint64_t)r;
  }
  long r;
  while ((r = tcp_recv(ct, W.cfid, buf, sizeof(buf), now)) > 0)
    for (long k = 0; k < r; k++, W.s2c_got++) W.bad += buf[k] != pat(W.s2c_got, 1);
  while (W.reading && st && (r = tcp_recv(st, W.sfid, buf, sizeof(buf), now)) > 0)
    for (long k = 0; k < r; k++, W.c2s_got++) W.bad += buf[k] != pat(W.c2s_got, 0);
}

struct goal {
  bool (*done)(void);
};

static bool step(struct ls_net *n, void *ctx) {
  struct goal *g = ctx;
  cpb_time_t now = n->now;
  lane_deliver(now);
  cpb_time_t wake = UINT64_MAX;
  for (int i = 0; i < 2; i++)
    if (W.L[i].lane) wake = CPB_MIN(wake, cpb_lane_poll(W.L[i].lane, now));
  apps_turn(now);
  for (size_t i = 0; i < W.nq; i++) wake = CPB_MIN(wake, W.q[i].at);
  n->wake_at = wake < now ? now : wake;
  return g->done();
}

static bool run_until(bool (*done)(void), cpb_time_t for_us) {
  struct goal g = {done};
  return ls_run(&W.net, step, &g, W.net.now + for_us);
}

static bool g_connected(void) {
  struct tcp_flow_info fi;
  return W.sfid && tcp_flow_info(W.c->t, W.cfid, &fi) == 0 && fi.state == TCP_ESTABLISHED;
}
static bool g_delivered_in(void) { /* the client's bytes are all at the server, unread */
  struct tcp_flow_info fi;
  return tcp_flow_info(W.owner->h->t, W.sfid, &fi) == 0 && fi.readable_bytes >= W.c2s_target;
}
static bool g_outcome(void) { return W.nout > 0; }
static bool g_streams(void) {
  return W.c2s_got == W.c2s_target && W.s2c_got == W.s2c_target && W.c2s_sent == W.c2s_target && W.s2c_sent == W.s2c_target;
}
static bool g_quiet(void) { return false; }

/* Connects C to A and accepts there. */
static uint64_t lid_a;
static void connect_to_a(void) {
  uint64_t lid;
  CHECK_EQ(tcp_listen(W.L[0].h->t, PORT, 8, &lid_a), 0);
  CHECK_EQ(tcp_listen(W.L[1].h->t, PORT, 8, &lid), 0);
  CHECK_EQ(tcp_connect(W.c->t, IP_S, PORT, 40001, W.net.now, &W.cfid), 0);
  for (int i = 0; i < 100 && !W.sfid; i++) {
    run_until(g_quiet, 1000);
    uint64_t id;
    if (tcp_accept(W.L[0].h->t, lid_a, &id) == 0) W.sfid = id;
  }
  W.owner = &W.L[0];
  W.L[0].flows[0] = W.sfid;
  CHECK(run_until(g_connected, SEC));
}

/* Starts moving the server flow from its owner to the other lane; the record is n bytes of seed. */
static int move(uint64_t mid, uint32_t budget_ms, size_t rec_len, uint8_t seed) {
  static uint8_t rec[8192];
  for (size_t i = 0; i < rec_len; i++) rec[i] = (uint8_t)(i * 29 + seed);
  struct lhost *from = W.owner, *to = W.owner == &W.L[0] ? &W.L[1] : &W.L[0];
  W.nout = 0;
  int rc = cpb_lane_migrate(from->lane, W.sfid, to->lip, mid, 1, budget_ms, rec_len ? rec : NULL, rec_len, W.net.now);
  if (rc == 0) W.reading = false; /* frozen: nothing to read until it is decided */
  return rc;
}

static bool record_is(const struct lhost *lh, size_t n, uint8_t seed) {
  if (lh->rec_len != n) return false;
  for (size_t i = 0; i < n; i++)
    if (lh->rec[i] != (uint8_t)(i * 29 + seed)) return false;
  return true;
}

/* The whole scenario: 100 KiB unread at A, 300 KiB queued at A and a full-MSS client segment in flight
 * when A offers the flow to B; then B -> A with more of both. Returns the outcomes' errors. */
static void scenario(uint64_t seed, unsigned loss, unsigned dup, unsigned reorder, bool clean) {
  world_open(seed, loss, dup, reorder);
  connect_to_a();
  W.c2s_target = 100 * 1024;
  CHECK(run_until(g_delivered_in, 5 * SEC));
  W.s2c_target = 300 * 1024;
  apps_turn(W.net.now); /* queued at A: most of it unsent, the rest unacknowledged */
  struct tcp_flow_info fi;
  CHECK_EQ(tcp_flow_info(W.L[0].h->t, W.sfid, &fi), 0);
  CHECK(fi.unacked_bytes + fi.unsent_bytes >= 300 * 1024);
  CHECK(fi.readable_bytes >= 100 * 1024);
  struct tcp_stats cs0;
  tcp_get_stats(W.c->t, &cs0);
  uint64_t a_fid = W.sfid;
  CHECK_EQ(move(1, 3000, 3000, 0x11), 0);
  W.c2s_target += 1460; /* one full-sized segment, caught by the freeze at A: held, forwarded in parts */
  CHECK(run_until(g_outcome, 4 * SEC));
  CHECK_EQ(W.out_id[0], 1);
  struct cpb_lane_stats sa, sb;
  cpb_lane_get_stats(W.L[0].lane, &sa);
  cpb_lane_get_stats(W.L[1].lane, &sb);
  fprintf(stderr, "  seed %llu A->B: err %d, parts out %llu, resent %llu, send failures %llu; B parts in %llu dup %llu, "
                  "reassembled %llu, forwarded in %llu; lane dropped %llu of %llu\n",
          (unsigned long long)seed, W.out_err[0], (unsigned long long)sa.parts_out, (unsigned long long)sa.offers_resent,
          (unsigned long long)sa.send_failures, (unsigned long long)sb.parts_in, (unsigned long long)sb.parts_dup,
          (unsigned long long)sb.reassembled, (unsigned long long)sb.forwarded_in, (unsigned long long)W.lane_dropped,
          (unsigned long long)W.lane_sent);
  if (clean) {
    CHECK_EQ(W.out_err[0], 0);
    CHECK(sa.send_failures > 0); /* the ring filled: the rest went from poll */
    CHECK(sb.forwarded_in >= 1); /* the full-MSS segment, in two parts: */
    CHECK(sb.reassembled >= 2);  /* the offer and that forward */
  }
  if (W.out_err[0] == 0) {
    CHECK(W.owner == &W.L[1]);
    CHECK(record_is(&W.L[1], 3000, 0x11));
    for (int k = 0; k < CPB_LANE_APP_STATE; k++) W.bad += W.L[1].state[k] != (uint8_t)(a_fid + (uint64_t)k);
  } else {
    CHECK(W.owner == &W.L[0]); /* given back: the flow serves on at A */
  }
  W.reading = true;
  CHECK(run_until(g_streams, 10 * SEC));
  CHECK_EQ(W.bad, 0);
  if (clean) {
    struct tcp_stats cs;
    tcp_get_stats(W.c->t, &cs);
    CHECK_EQ(cs.retransmits - cs0.retransmits, 0); /* the forwarded segment needed no retransmission */
  }

  /* and back (or there, if it was given back), with more in both directions */
  W.s2c_target += 50 * 1024;
  apps_turn(W.net.now);
  CHECK_EQ(move(2, 3000, 100, 0x22), 0);
  W.c2s_target += 20 * 1024;
  CHECK(run_until(g_outcome, 4 * SEC));
  CHECK_EQ(W.out_id[0], 2);
  if (clean) CHECK_EQ(W.out_err[0], 0);
  W.reading = true;
  CHECK(run_until(g_streams, 10 * SEC));
  CHECK_EQ(W.bad, 0);
  CHECK_EQ(W.c2s_got, 100 * 1024 + 1460 + 20 * 1024);
  CHECK_EQ(W.s2c_got, 350 * 1024);
  /* every grace ends; nothing stays frozen, waiting or assembling */
  run_until(g_quiet, SEC);
  for (int i = 0; i < 2; i++) {
    struct cpb_lane_stats s;
    cpb_lane_get_stats(W.L[i].lane, &s);
    CHECK_EQ(s.bad_frames + s.auth_failures, 0);
  }
  world_close();
}

TEST(lane_parts_move_big_buffers_there_and_back) { scenario(1, 0, 0, 0, true); }

TEST(lane_parts_move_big_buffers_over_a_lossy_lane) {
  for (uint64_t seed = 2; seed < 5; seed++) scenario(seed, 20, 20, 50, false);
}

/* Both pool buffers taken: a third big offer is refused with -EBUSY and its flow runs on. */
TEST(lane_parts_pool_exhausted_is_busy) {
  world_open(9, 0, 0, 0);
  connect_to_a();
  uint64_t first = W.sfid;
  /* two more client flows to A */
  uint64_t ids[3] = {first, 0, 0};
  for (int f = 1; f < 3; f++) {
    uint64_t cid;
    CHECK_EQ(tcp_connect(W.c->t, IP_S, PORT, (uint16_t)(40001 + f), W.net.now, &cid), 0);
    for (int i = 0; i < 100 && !ids[f]; i++) {
      run_until(g_quiet, 1000);
      uint64_t id;
      if (tcp_accept(W.L[0].h->t, lid_a, &id) == 0) ids[f] = id;
    }
    W.L[0].flows[f] = ids[f];
  }
  static uint8_t junk[8000];
  memset(junk, 0x5a, sizeof(junk));
  for (int f = 0; f < 3; f++) CHECK_EQ(tcp_send(W.L[0].h->t, ids[f], junk, sizeof(junk), W.net.now), (long)sizeof(junk));
  CHECK_EQ(cpb_lane_migrate(W.L[0].lane, ids[0], LIP_B, 11, 1, 500, NULL, 0, W.net.now), 0);
  CHECK_EQ(cpb_lane_migrate(W.L[0].lane, ids[1], LIP_B, 12, 1, 500, NULL, 0, W.net.now), 0);
  CHECK_EQ(cpb_lane_migrate(W.L[0].lane, ids[2], LIP_B, 13, 1, 500, NULL, 0, W.net.now), -EBUSY);
  struct tcp_flow_info fi;
  CHECK_EQ(tcp_flow_info(W.L[0].h->t, ids[2], &fi), 0);
  CHECK(!fi.frozen);
  /* a record beyond the message limit never gets that far */
  CHECK_EQ(cpb_lane_migrate(W.L[0].lane, ids[2], LIP_B, 14, 1, 500, junk, CPB_LANE_MSG_MAX + 1, W.net.now), -EMSGSIZE);
  CHECK_EQ(cpb_lane_migrate(W.L[0].lane, ids[2], LIP_B, 15, 1, 500, NULL, 5, W.net.now), -EINVAL);
  W.owner = NULL; /* nobody reads */
  run_until(g_quiet, 2 * SEC);
  world_close();
}

/* ---- hostile parts, fed to lane A directly from two peers with keys ---- */

#define KEY_X 31
#define KEY_Y 32
#define PART_DATA 1386

static struct lane_key kx, ky; /* the peers' side of their keys */

static void put16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32le(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64le(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* Seals a part as lane.h describes it (type 5) and feeds it to A from peer. */
static void part_in(cpb_ip4_t peer, uint32_t msg, uint8_t type, uint16_t index, uint16_t count, uint32_t total,
                    const uint8_t *m, size_t len) {
  static uint8_t pt[1500], d[1600];
  put32le(pt, msg);
  pt[4] = type, pt[5] = 0;
  put16le(pt + 6, index);
  put16le(pt + 8, count);
  put32le(pt + 10, total);
  memcpy(pt + 14, m, len);
  struct lane_key *k = peer == LIP_X ? &kx : &ky;
  long n = lane_key_seal(k, 5, pt, 14 + len, d, sizeof(d));
  CHECK(n > 0);
  cpb_lane_input(W.L[0].lane, peer, d, (size_t)n, W.net.now);
}

/* All parts of message m (total bytes) in order, skipping index skip (-1: none). */
static void message_in(cpb_ip4_t peer, uint32_t msg, uint8_t type, const uint8_t *m, uint32_t total, int skip) {
  uint16_t count = (uint16_t)((total + PART_DATA - 1) / PART_DATA);
  for (uint16_t i = 0; i < count; i++)
    if (i != skip) part_in(peer, msg, type, i, count, total, m + (size_t)i * PART_DATA, CPB_MIN(PART_DATA, total - (size_t)i * PART_DATA));
}

/* An offer with a garbage snapshot and a big record: it completes and is refused (answered). */
static uint32_t big_offer(uint8_t *m, uint64_t mid, uint32_t rec) {
  size_t o = 0;
  put64le(m, mid), put32le(m + 8, 1), o = 12;
  m[o++] = 4;
  memcpy(m + o, "sink", 4), o += 4;
  memset(m + o, 7, 32), o += 32;
  put32le(m + o, 40), o += 4;
  memset(m + o, 0xa5, 40), o += 40;
  put32le(m + o, rec), o += 4;
  for (uint32_t i = 0; i < rec; i++) m[o + i] = (uint8_t)(i ^ mid);
  return (uint32_t)(o + rec);
}

static struct cpb_lane_stats st_a(void) {
  struct cpb_lane_stats s;
  cpb_lane_get_stats(W.L[0].lane, &s);
  return s;
}

static size_t answers_to(cpb_ip4_t peer) {
  size_t n = 0;
  for (size_t i = 0; i < W.nq; i++) n += W.q[i].dst == peer && W.q[i].src == LIP_A;
  return n;
}

TEST(lane_parts_hostile) {
  world_open(7, 0, 0, 0);
  struct cpb_lane_dir x_tx, x_rx, y_tx, y_rx;
  dir_fill(&x_tx, 0x31), dir_fill(&x_rx, 0x52), dir_fill(&y_tx, 0x35), dir_fill(&y_rx, 0x56);
  CHECK_EQ(cpb_lane_set_key(W.L[0].lane, LIP_X, KEY_X, &x_tx, &x_rx, -1), 0);
  CHECK_EQ(cpb_lane_set_key(W.L[0].lane, LIP_Y, KEY_Y, &y_tx, &y_rx, -1), 0);
  CHECK_EQ(lane_key_init(&kx, KEY_X, &x_rx, &x_tx), 0);
  CHECK_EQ(lane_key_init(&ky, KEY_Y, &y_rx, &y_tx), 0);
  static uint8_t m1[20000], m2[20000], z[1500];
  uint32_t t1 = big_offer(m1, 501, 9000), t2 = big_offer(m2, 502, 15000);
  uint16_t c1 = (uint16_t)((t1 + PART_DATA - 1) / PART_DATA);
  struct cpb_lane_stats s0 = st_a(), s;

  /* Malformed parts: each a bad frame, none kept. */
  part_in(LIP_X, 1, 1, 0, c1 + 1, t1, m1, PART_DATA);          /* count disagrees with total */
  part_in(LIP_X, 1, 1, c1, c1, t1, m1, 10);                    /* index >= count */
  part_in(LIP_X, 1, 1, 0, 1, 1000, m1, 1000);                   /* fits one datagram: never in parts */
  part_in(LIP_X, 1, 1, 0, 474, CPB_LANE_MSG_MAX + 1, m1, PART_DATA); /* beyond the limit */
  part_in(LIP_X, 1, 1, 0, c1, t1, m1, PART_DATA - 1);          /* shorter than its place */
  part_in(LIP_X, 1, 1, c1 - 1, c1, t1, m1, PART_DATA);         /* the last, longer than what is left */
  part_in(LIP_X, 1, 2, 0, c1, t1, m1, PART_DATA);              /* an answer never comes in parts */
  part_in(LIP_X, 1, 4, 0, c1, t1, m1, PART_DATA);              /* a forward longer than a held segment */
  part_in(LIP_X, 1, 1, 0, c1, t1, m1, 0);                      /* no bytes */
  s = st_a();
  CHECK_EQ(s.bad_frames - s0.bad_frames, 9);
  CHECK_EQ(s.parts_in - s0.parts_in, 0);

  /* Two peers' offers interleaved, with duplicates, and X's part 0 disagreeing with its slot on the way. */
  s0 = s;
  uint16_t c2 = (uint16_t)((t2 + PART_DATA - 1) / PART_DATA);
  for (uint16_t i = 0; i < CPB_MAX(c1, c2); i++) {
    if (i < c1) part_in(LIP_X, 1, 1, i, c1, t1, m1 + (size_t)i * PART_DATA, CPB_MIN(PART_DATA, t1 - (size_t)i * PART_DATA));
    if (i < c2) part_in(LIP_Y, 1, 1, i, c2, t2, m2 + (size_t)i * PART_DATA, CPB_MIN(PART_DATA, t2 - (size_t)i * PART_DATA));
    if (i == 1) {
      part_in(LIP_Y, 1, 1, 0, c2, t2, m2, PART_DATA);              /* a duplicate */
      part_in(LIP_X, 1, 4, 0, 2, 2000, m1, PART_DATA);             /* same message number, other type/total */
      part_in(LIP_X, 1, 1, 0, c1, t1, z, PART_DATA);               /* overlapping, other bytes: a duplicate, ignored */
    }
  }
  s = st_a();
  CHECK_EQ(s.reassembled - s0.reassembled, 2);
  CHECK_EQ(s.offers_in - s0.offers_in, 2);
  CHECK_EQ(s.rejected_in - s0.rejected_in, 2); /* garbage snapshots */
  CHECK_EQ(s.parts_dup - s0.parts_dup, 2);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 1);
  CHECK_EQ(answers_to(LIP_X), 1);
  CHECK_EQ(answers_to(LIP_Y), 1);
  /* A copy of X's offer again (its answer was lost): reassembled, answered as before. */
  s0 = s;
  message_in(LIP_X, 1, 1, m1, t1, -1);
  s = st_a();
  CHECK_EQ(s.repeated_offers - s0.repeated_offers, 1);
  CHECK_EQ(answers_to(LIP_X), 2);

  /* Slots that never complete. A third big message while both big slots are still arriving waits: its parts
   * are refused (its source sends it again) and neither slot is pushed out. */
  s0 = s;
  message_in(LIP_X, 2, 1, m1, t1, 3);
  message_in(LIP_Y, 2, 1, m2, t2, 0);
  message_in(LIP_X, 3, 1, m2, t2, 5);
  s = st_a();
  CHECK_EQ(s.reasm_busy - s0.reasm_busy, c2 - 1);
  CHECK_EQ(s.reasm_evicted - s0.reasm_evicted, 0);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 0);
  /* Once they got nothing for LANE_SLOT_BUSY_US, its next copy pushes out the oldest. */
  W.net.now += LANE_SLOT_BUSY_US;
  message_in(LIP_X, 3, 1, m2, t2, 5);
  s = st_a();
  CHECK_EQ(s.reasm_busy - s0.reasm_busy, c2 - 1);
  CHECK_EQ(s.reasm_evicted - s0.reasm_evicted, 1);
  CHECK_EQ(s.reassembled - s0.reassembled, 0);
  /* the evicted one's missing part now starts a new slot (evicting Y's, idle), and completes nothing */
  part_in(LIP_X, 2, 1, 3, c1, t1, m1 + 3 * PART_DATA, PART_DATA);
  s = st_a();
  CHECK_EQ(s.reassembled - s0.reassembled, 0);
  CHECK_EQ(s.reasm_evicted - s0.reasm_evicted, 2);
  /* X's message 3 is still there: its hole filled, it completes */
  part_in(LIP_X, 3, 1, 5, c2, t2, m2 + 5 * PART_DATA, PART_DATA);
  s = st_a();
  CHECK_EQ(s.reassembled - s0.reassembled, 1);
  /* a forward in parts for no migration: assembled, kept for an offer that never comes */
  static uint8_t fw[2000];
  put64le(fw, 777), put32le(fw + 8, 1), put32le(fw + 12, IP_C), put32le(fw + 16, IP_S), put16le(fw + 20, 2000 - 22);
  message_in(LIP_Y, 3, 4, fw, 2000, -1);
  s = st_a();
  CHECK_EQ(s.reassembled - s0.reassembled, 2);
  CHECK_EQ(s.forward_early - s0.forward_early, 1);
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 0);
  /* the incomplete ones go after their time, and so does the forward */
  W.net.now += 2 * SEC;
  cpb_lane_poll(W.L[0].lane, W.net.now);
  s = st_a();
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 1);
  CHECK_EQ(s.reasm_evicted - s0.reasm_evicted, 3);
  CHECK_EQ(s.adopted_in, 0);
  lane_key_clear(&kx);
  lane_key_clear(&ky);
  world_close();
}
