/* The engines' migration lane (native/mig/lane.h) with real engines on a mem: switch: a client engine C
 * (port 0) talks to a VIP that two server engines A (port 1) and B (port 2) share, each serving it with
 * the native echo; the client reaches the VIP through A (its gateway) and the switch's steering table,
 * which the lane writes, decides who gets the flow. Covers a move A -> B -> A with the echo byte-exact
 * throughout, a refusing target, hostile datagrams (fed to the lane directly and through the wire), and
 * a target that never answers (the budget runs out, the flow and its speculatively forwarded segments
 * come back to the source). Every wait is bounded. */
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "enginetest.h"
#include "t.h"

#define IP_A IP(10, 96, 0, 1)
#define IP_B IP(10, 96, 0, 2)
#define IP_C IP(10, 96, 0, 100)
#define IP_X IP(10, 96, 0, 50) /* a peer that exists only as a key: the hostile test's sender */
#define VIP IP(10, 96, 9, 1)   /* off-link for the client: it goes through its gateway, A */
#define PORT 7
#define MSG 64
#define PORT_A 1
#define PORT_B 2
#define KEY_AB 41 /* the key id of the channel between A and B */
#define WAIT_US (5 * CPB_US_PER_S)

struct rig {
  char sw[40];
  struct cpb_engine *a, *b, *c;
  uint64_t cfid;     /* the client's flow */
  uint16_t cport;    /* its local port */
  uint64_t sent, echoed;
  int bad;           /* echoes that differ from what was sent */
};

static int start(struct cpb_engine **e, const char *sw, int port, cpb_ip4_t ip, cpb_ip4_t vip, cpb_ip4_t gw) {
  char uri[96];
  snprintf(uri, sizeof(uri), "mem:%s?ports=3&port=%d", sw, port);
  return start_engine_at(e, uri, ip, vip, gw, 0x96, (uint8_t)(port + 1));
}

static void dir_fill(struct cpb_lane_dir *d, uint8_t seed) {
  for (int i = 0; i < 32; i++) d->key[i] = (uint8_t)(seed + 17 * i);
  for (int i = 0; i < 12; i++) d->iv[i] = (uint8_t)(seed * 3 + 5 * i);
}

/* A -> B keys: A's tx is B's rx and vice versa, one key id. */
static struct cpb_lane_dir DIR_AB, DIR_BA;

static void install_key(struct cpb_engine *e, cpb_ip4_t peer, uint64_t id, const struct cpb_lane_dir *tx,
                        const struct cpb_lane_dir *rx, int32_t backend) {
  cpb_engine_enter(e);
  CHECK_EQ(cpb_lane_set_key(cpb_engine_lane(e), peer, id, tx, rx, backend), 0);
  cpb_engine_leave(e);
}

static void drain_client(struct rig *r) {
  struct tcp_event ev;
  while (cpb_engine_next_event(r->c, &ev)) {}
}

static void msg_of(uint64_t i, uint8_t *m) {
  for (int j = 0; j < MSG; j++) m[j] = (uint8_t)(i * 7 + (uint64_t)j * 13 + 1);
}

/* Sends the next message (all of it: 64 bytes always fit in an empty send buffer). */
static bool send_msg(struct rig *r) {
  uint8_t m[MSG];
  msg_of(r->sent, m);
  cpb_time_t now = cpb_engine_enter(r->c);
  long n = tcp_send(cpb_engine_tcp(r->c), r->cfid, m, MSG, now);
  drain_client(r);
  cpb_engine_leave(r->c);
  if (n != MSG) return false;
  r->sent++;
  return true;
}

/* Waits for the echo of every message sent so far, checking each byte. */
static bool recv_echoes(struct rig *r) {
  static uint8_t got[MSG * 64];
  size_t have = 0;
  size_t want = (size_t)(r->sent - r->echoed) * MSG;
  if (want > sizeof(got)) return false;
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  while (have < want && cpb_clock_now() < deadline) {
    cpb_time_t now = cpb_engine_enter(r->c);
    long n = tcp_recv(cpb_engine_tcp(r->c), r->cfid, got + have, want - have, now);
    drain_client(r);
    cpb_engine_leave(r->c);
    if (n > 0) have += (size_t)n;
    else if (n != -EAGAIN) break;
    else nap();
  }
  for (size_t off = 0; off + MSG <= have; off += MSG) {
    uint8_t m[MSG];
    msg_of(r->echoed++, m);
    if (memcmp(m, got + off, MSG) != 0) r->bad++;
  }
  return have == want;
}

/* count ping-pongs, one message at a time. */
static bool echo(struct rig *r, int count) {
  for (int i = 0; i < count; i++)
    if (!send_msg(r) || !recv_echoes(r)) return false;
  return r->bad == 0;
}

/* Opens the switch, the three engines, native echo listeners (B's on b_port), steering, and connects. */
static bool rig_open(struct rig *r, const char *name, uint16_t b_port) {
  memset(r, 0, sizeof(*r));
  snprintf(r->sw, sizeof(r->sw), "%s-%d", name, (int)getpid());
  if (start(&r->c, r->sw, 0, IP_C, 0, IP_A) || start(&r->a, r->sw, PORT_A, IP_A, VIP, 0) ||
      start(&r->b, r->sw, PORT_B, IP_B, VIP, 0))
    return false;
  const struct cpb_native_app *app = cpb_native_app_find("echo");
  if (!app) return false;
  uint64_t lid;
  cpb_engine_enter(r->a);
  int rc = cpb_engine_listen_native(r->a, PORT, 64, app, &lid);
  rc |= cpb_lane_steer_mem(cpb_engine_lane(r->a), r->sw, PORT_A);
  cpb_engine_leave(r->a);
  cpb_engine_enter(r->b);
  rc |= cpb_engine_listen_native(r->b, b_port, 64, app, &lid);
  rc |= cpb_lane_steer_mem(cpb_engine_lane(r->b), r->sw, PORT_B);
  cpb_engine_leave(r->b);
  if (rc) return false;
  cpb_time_t now = cpb_engine_enter(r->c);
  rc = tcp_connect(cpb_engine_tcp(r->c), VIP, PORT, 0, now, &r->cfid);
  cpb_engine_leave(r->c);
  if (rc) return false;
  struct tcp_flow_info fi = {0};
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  while (cpb_clock_now() < deadline) {
    cpb_engine_enter(r->c);
    rc = tcp_flow_info(cpb_engine_tcp(r->c), r->cfid, &fi);
    drain_client(r);
    cpb_engine_leave(r->c);
    if (rc || fi.state == TCP_ESTABLISHED) break;
    nap();
  }
  r->cport = fi.local_port;
  return rc == 0 && fi.state == TCP_ESTABLISHED && echo(r, 3);
}

static void rig_close(struct rig *r) {
  if (r->c && r->cfid) {
    cpb_time_t now = cpb_engine_enter(r->c);
    tcp_abort(cpb_engine_tcp(r->c), r->cfid, now);
    cpb_engine_leave(r->c);
  }
  cpb_engine_stop(r->c);
  cpb_engine_stop(r->a);
  cpb_engine_stop(r->b);
}

struct find { uint16_t cport; uint64_t id; };
static void find_one(void *ctx, const struct tcp_flow_info *fi) {
  struct find *f = ctx;
  if (fi->remote_port == f->cport && fi->local_port == PORT && fi->state == TCP_ESTABLISHED && !fi->frozen) f->id = fi->id;
}

/* The server flow of the client's connection on e (under e's lock), 0 when e has none. */
static uint64_t server_flow(struct cpb_engine *e, uint16_t cport) {
  struct find f = {.cport = cport, .id = 0};
  tcp_foreach_flow(cpb_engine_tcp(e), find_one, &f);
  return f.id;
}

/* Waits for a lane event of type on e; false at the deadline. */
static bool wait_event(struct cpb_engine *e, int type, struct tcp_event *out) {
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  while (cpb_clock_now() < deadline) {
    struct tcp_event ev;
    bool found = false;
    cpb_engine_enter(e);
    while (!found && cpb_engine_next_event(e, &ev))
      if ((int)ev.type == type) found = true;
    cpb_engine_leave(e);
    if (found) {
      *out = ev;
      return true;
    }
    nap();
  }
  return false;
}

static struct cpb_lane_stats stats_of(struct cpb_engine *e) {
  struct cpb_lane_stats st;
  cpb_engine_enter(e);
  cpb_lane_get_stats(cpb_engine_lane(e), &st);
  cpb_engine_leave(e);
  return st;
}

/* Starts migrating the client's flow from src to peer; the rc of cpb_lane_migrate. */
static int migrate(struct rig *r, struct cpb_engine *src, cpb_ip4_t peer, uint64_t mid, uint32_t budget_ms) {
  cpb_time_t now = cpb_engine_enter(src);
  uint64_t fid = server_flow(src, r->cport);
  int rc = fid ? cpb_lane_migrate(cpb_engine_lane(src), fid, peer, mid, 1, budget_ms, NULL, 0, now) : -ESRCH;
  cpb_engine_leave(src);
  return rc;
}

/* rig_open, then the A <-> B lane keys on both sides; closes what it opened when it fails. */
static bool rig_open_ab(struct rig *r, const char *name, uint16_t b_port) {
  if (!rig_open(r, name, b_port)) {
    rig_close(r);
    return false;
  }
  install_key(r->a, IP_B, KEY_AB, &DIR_AB, &DIR_BA, PORT_B);
  install_key(r->b, IP_A, KEY_AB, &DIR_BA, &DIR_AB, PORT_A);
  return true;
}

TEST(lane_moves_a_native_flow_there_and_back) {
  struct rig r;
  REQUIRE(rig_open_ab(&r, "lane-move", PORT));
  CHECK_EQ(cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT), -ENOENT);

  /* A -> B */
  CHECK_EQ(migrate(&r, r.a, IP_B, 1001, 1000), 0);
  struct tcp_event ev = {0};
  CHECK(wait_event(r.a, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.id, 1001);
  CHECK_EQ(ev.err, 0);
  CHECK(wait_event(r.b, CPB_LANE_EV_IN, &ev));
  uint64_t bfid = ev.id;
  cpb_engine_enter(r.b);
  CHECK_EQ(server_flow(r.b, r.cport), bfid);
  cpb_engine_leave(r.b);
  CHECK_EQ(cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT), PORT_B);
  struct cpb_lane_outcome oc = {0};
  cpb_engine_enter(r.a);
  CHECK(cpb_lane_outcome(cpb_engine_lane(r.a), 1001, &oc));
  cpb_engine_leave(r.a);
  CHECK_EQ(oc.migration_id, 1001);
  CHECK_EQ(oc.err, 0);
  CHECK(oc.answered_us > 0);
  CHECK(oc.snapshot_bytes > 0);
  CHECK(echo(&r, 10));
  struct cpb_lane_stats sa = stats_of(r.a), sb = stats_of(r.b);
  CHECK(sa.offers_sent >= 1); /* re-sent every 1, 2, 4 ms until answered */
  CHECK_EQ(sa.adopted_out, 1);
  CHECK(sb.offers_in >= 1);
  CHECK_EQ(sb.adopted_in, 1);
  CHECK_EQ(sb.steer_errors, 0);

  /* B -> A (A's old copy may still be in its grace: the offer ends it) */
  CHECK_EQ(migrate(&r, r.b, IP_A, 1002, 1000), 0);
  CHECK(wait_event(r.b, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.id, 1002);
  CHECK_EQ(ev.err, 0);
  CHECK(wait_event(r.a, CPB_LANE_EV_IN, &ev));
  CHECK_EQ(cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT), PORT_A);
  cpb_engine_enter(r.b);
  CHECK(cpb_lane_outcome(cpb_engine_lane(r.b), 1002, &oc));
  cpb_engine_leave(r.b);
  CHECK_EQ(oc.err, 0);
  CHECK(oc.answered_us > 0);
  CHECK(echo(&r, 10));
  cpb_engine_enter(r.a);
  CHECK(server_flow(r.a, r.cport) != 0);
  cpb_engine_leave(r.a);
  sa = stats_of(r.a), sb = stats_of(r.b);
  CHECK_EQ(sa.adopted_in + sb.adopted_in, 2);
  CHECK_EQ(sa.auth_failures + sb.auth_failures + sa.bad_frames + sb.bad_frames + sa.replays + sb.replays, 0);
  CHECK_EQ(r.bad, 0);
  CHECK_EQ(r.echoed, r.sent);
  rig_close(&r);
}

TEST(lane_target_without_the_app_refuses_and_the_flow_stays) {
  struct rig r;
  REQUIRE(rig_open_ab(&r, "lane-refuse", PORT + 1)); /* B serves echo, but on another port */
  cpb_engine_enter(r.a);
  uint64_t afid = server_flow(r.a, r.cport);
  cpb_engine_leave(r.a);
  CHECK(afid != 0);
  CHECK_EQ(migrate(&r, r.a, IP_B, 2001, 1000), 0);
  struct tcp_event ev = {0};
  CHECK(wait_event(r.a, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.id, 2001);
  CHECK_EQ(ev.err, -EPROTONOSUPPORT);
  struct cpb_lane_outcome oc = {0};
  cpb_engine_enter(r.a);
  CHECK(cpb_lane_outcome(cpb_engine_lane(r.a), 2001, &oc));
  CHECK_EQ(server_flow(r.a, r.cport), afid); /* unfrozen, same flow */
  cpb_engine_leave(r.a);
  CHECK_EQ(oc.err, -EPROTONOSUPPORT);
  CHECK(echo(&r, 10));
  struct cpb_lane_stats sa = stats_of(r.a), sb = stats_of(r.b);
  CHECK_EQ(sb.rejected_in, 1);
  CHECK_EQ(sb.adopted_in, 0);
  CHECK_EQ(sa.rejected_out, 1);
  CHECK_EQ(sa.gave_back, 1);
  CHECK_EQ(cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT), -ENOENT);
  cpb_engine_enter(r.b);
  CHECK(!cpb_lane_has_events(cpb_engine_lane(r.b)));
  CHECK_EQ(server_flow(r.b, r.cport), 0);
  cpb_engine_leave(r.b);
  rig_close(&r);
}

/* ---- hostile datagrams ---- */

static void put64le(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put32le(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* A datagram sealed as lane.h says: 20-byte header as AAD, AES-256-GCM, nonce = iv ^ (0^4 | seq BE). */
static size_t seal(uint8_t *out, const struct cpb_lane_dir *d, uint8_t type, uint64_t kid, uint64_t seq,
                   const uint8_t *pt, size_t n) {
  out[0] = CPB_LANE_VERSION;
  out[1] = type;
  out[2] = out[3] = 0;
  put64le(out + 4, kid);
  put64le(out + 12, seq);
  uint8_t nonce[12];
  memcpy(nonce, d->iv, 12);
  for (int i = 0; i < 8; i++) nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int len = 0;
  bool ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
            EVP_EncryptInit_ex(c, NULL, NULL, d->key, nonce) == 1 && EVP_EncryptUpdate(c, NULL, &len, out, 20) == 1 &&
            (n == 0 || EVP_EncryptUpdate(c, out + 20, &len, pt, (int)n) == 1) &&
            EVP_EncryptFinal_ex(c, out + 20 + n, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, out + 20 + n) == 1;
  EVP_CIPHER_CTX_free(c);
  CHECK(ok);
  return 20 + n + 16;
}

/* Feeds len bytes of p from src to e's lane through an exactly sized copy, so ASan sees any over-read. */
static void feed(struct cpb_engine *e, cpb_ip4_t src, const uint8_t *p, size_t len) {
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return;
  if (len) memcpy(copy, p, len);
  cpb_time_t now = cpb_engine_enter(e);
  cpb_lane_input(cpb_engine_lane(e), src, copy, len, now);
  cpb_engine_leave(e);
  free(copy);
}

#define KEY_X 77
enum { T_OFFER = 1, T_ADOPTED = 2, T_REJECTED = 3, T_FORWARD = 4 };

/* plaintext head: migration id, epoch */
static size_t body_head(uint8_t *b, uint64_t mid) {
  put64le(b, mid);
  put32le(b + 8, 1);
  return 12;
}

TEST(lane_shrugs_off_hostile_datagrams) {
  struct rig r;
  bool up = rig_open(&r, "lane-hostile", PORT);
  if (!up) rig_close(&r);
  REQUIRE(up);
  struct cpb_lane_dir x_tx, x_rx; /* A's directions towards X; X seals with A's rx */
  dir_fill(&x_tx, 0x31);
  dir_fill(&x_rx, 0x52);
  install_key(r.a, IP_X, KEY_X, &x_tx, &x_rx, -1);
  cpb_engine_enter(r.a);
  uint64_t afid = server_flow(r.a, r.cport);
  cpb_engine_leave(r.a);
  CHECK(afid != 0);
  struct cpb_lane_stats s0 = stats_of(r.a), s;
  uint64_t seq = 1;
  static uint8_t pt[1500], d[1600], tmp[1600];

  /* A FORWARD for a migration nobody started, 100 bytes long; its prefixes are the truncations. */
  size_t n = body_head(pt, 9999);
  put32le(pt + n, IP_C), put32le(pt + n + 4, VIP), pt[n + 8] = 40, pt[n + 9] = 0;
  memset(pt + n + 10, 0xee, 40);
  size_t dlen = seal(d, &x_rx, T_FORWARD, KEY_X, seq++, pt, n + 10 + 40);
  CHECK(dlen > 60);
  for (size_t len = 0; len <= 60; len++) feed(r.a, IP_X, d, len);
  s = stats_of(r.a);
  /* shorter than header + tag + migration id + epoch (48): malformed; longer: the tag cannot match */
  CHECK_EQ(s.bad_frames - s0.bad_frames, 48);
  CHECK_EQ(s.auth_failures - s0.auth_failures, 13);
  CHECK_EQ(s.replays - s0.replays, 0);

  /* The header fields, one at a time. */
  s0 = s;
  memcpy(tmp, d, dlen), tmp[0] = CPB_LANE_VERSION + 1;
  feed(r.a, IP_X, tmp, dlen); /* version */
  memcpy(tmp, d, dlen), tmp[2] = 1;
  feed(r.a, IP_X, tmp, dlen); /* reserved */
  memcpy(tmp, d, dlen), tmp[1] = 0;
  feed(r.a, IP_X, tmp, dlen); /* type 0 */
  memcpy(tmp, d, dlen), tmp[1] = 6;
  feed(r.a, IP_X, tmp, dlen); /* type 6 (5 is PART) */
  memcpy(tmp, d, dlen), tmp[1] = 0xff;
  feed(r.a, IP_X, tmp, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 5);
  s0 = s;
  memcpy(tmp, d, dlen), tmp[4] ^= 1;
  feed(r.a, IP_X, tmp, dlen);         /* unknown key id */
  feed(r.a, IP(10, 96, 0, 51), d, dlen); /* known key id, stranger */
  feed(r.a, 0, d, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.unknown_keys - s0.unknown_keys, 3);
  s0 = s;
  memcpy(tmp, d, dlen), tmp[dlen - 1] ^= 0x80;
  feed(r.a, IP_X, tmp, dlen); /* tag */
  memcpy(tmp, d, dlen), tmp[25] ^= 1;
  feed(r.a, IP_X, tmp, dlen); /* ciphertext */
  memcpy(tmp, d, dlen), tmp[1] = T_OFFER;
  feed(r.a, IP_X, tmp, dlen); /* type (authenticated data) */
  memcpy(tmp, d, dlen), tmp[12] ^= 4;
  feed(r.a, IP_X, tmp, dlen); /* sequence number (authenticated, and the nonce) */
  s = stats_of(r.a);
  CHECK_EQ(s.auth_failures - s0.auth_failures, 4);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 0);

  /* The genuine datagram now passes (failures above left the window alone); a FORWARD for an unknown
   * migration is kept for its offer, not injected; its replay is refused before decryption. */
  s0 = s;
  feed(r.a, IP_X, d, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.forward_early - s0.forward_early, 1);
  CHECK_EQ(s.forwarded_in - s0.forwarded_in, 0);
  s0 = s;
  feed(r.a, IP_X, d, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.replays - s0.replays, 1);
  CHECK_EQ(s.forward_early - s0.forward_early, 0);

  /* Sequence 0 and one that fell out of the 64-entry window are replays too. */
  s0 = s;
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, 0, pt, n + 10 + 40);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, 500, pt, n + 10 + 40);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, 500 - 64, pt, n + 10 + 40);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, 500 - 63, pt, n + 10 + 40); /* still inside: accepted */
  feed(r.a, IP_X, d, dlen);
  seq = 501;
  s = stats_of(r.a);
  CHECK_EQ(s.replays - s0.replays, 2);
  CHECK_EQ(s.forward_early - s0.forward_early, 2);

  /* Authentic but malformed plaintexts: a FORWARD whose length field lies, one with no room for it, a
   * plaintext shorter than its head, answers of the wrong size, an answer for no migration. */
  s0 = s;
  pt[n + 8] = 41;
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, seq++, pt, n + 10 + 40);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_FORWARD, KEY_X, seq++, pt, n + 5);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_ADOPTED, KEY_X, seq++, pt, 12 + 7);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_REJECTED, KEY_X, seq++, pt, 12 + 5);
  feed(r.a, IP_X, d, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 4);
  s0 = s;
  dlen = seal(d, &x_rx, T_ADOPTED, KEY_X, seq++, pt, 12 + 8);
  feed(r.a, IP_X, d, dlen);
  dlen = seal(d, &x_rx, T_REJECTED, KEY_X, seq++, pt, 12 + 4);
  feed(r.a, IP_X, d, dlen);
  s = stats_of(r.a);
  CHECK_EQ(s.answers_in - s0.answers_in, 2);
  CHECK_EQ(s.adopted_out + s.rejected_out + s.gave_back, 0);

  /* Forged OFFERs under the right key: garbage snapshot, empty snapshot, lying lengths, empty and
   * over-long app names, an unknown app. All refused; nothing adopted. */
  s0 = s;
  int offers = 0;
  for (int v = 0; v < 7; v++) {
    size_t o = body_head(pt, 3000 + (uint64_t)v);
    const char *name = v == 5 ? "nosuchapp" : "echo";
    size_t nl = strlen(name);
    pt[o++] = v == 3 ? 0 : v == 4 ? 200 : (uint8_t)nl;
    memcpy(pt + o, name, nl);
    o += nl;
    memset(pt + o, 0x5a, 32);
    o += 32;
    size_t sn = v == 1 ? 0 : 60;
    put32le(pt + o, (uint32_t)sn);
    if (v == 2) put32le(pt + o, 63); /* more than follows (the record's length field included) */
    o += 4;
    for (size_t i = 0; i < sn; i++) pt[o + i] = (uint8_t)(0xa5 ^ i);
    if (v == 5 || v == 6) memcpy(pt + o, "CTCP", 4); /* the snapshot's magic, the rest garbage */
    o += sn;
    put32le(pt + o, 0); /* no record */
    o += 4;
    dlen = seal(d, &x_rx, T_OFFER, KEY_X, seq++, pt, o);
    feed(r.a, IP_X, d, dlen);
    offers++;
  }
  s = stats_of(r.a);
  CHECK_EQ(s.offers_in - s0.offers_in, offers);
  CHECK_EQ(s.rejected_in - s0.rejected_in, offers);
  CHECK_EQ(s.adopted_in, 0);
  /* A repeat of a refused offer is answered as before, not opened again. */
  s0 = s;
  {
    size_t o = body_head(pt, 3000);
    pt[o++] = 4;
    memcpy(pt + o, "echo", 4);
    o += 4 + 32;
    put32le(pt + o, 60);
    o += 4 + 60;
    put32le(pt + o, 0);
    o += 4;
    dlen = seal(d, &x_rx, T_OFFER, KEY_X, seq++, pt, o);
    feed(r.a, IP_X, d, dlen);
  }
  s = stats_of(r.a);
  CHECK_EQ(s.repeated_offers - s0.repeated_offers, 1);
  CHECK_EQ(s.rejected_in - s0.rejected_in, 0);

  /* Through the wire: the client's stack sends A two lane datagrams (proto 253 to A's own address). */
  s0 = stats_of(r.a);
  cpb_engine_enter(r.c);
  struct cpb_stack *cs = cpb_engine_stack(r.c);
  size_t cap = 0;
  uint8_t *p = cpb_stack_dgram_begin(cs, IP_A, &cap);
  CHECK(p != NULL && cap >= 64);
  if (p) {
    memset(p, 0, 64);
    p[0] = 9; /* wrong version */
    cpb_stack_dgram_commit(cs, CPB_LANE_PROTO, 64);
  }
  p = cpb_stack_dgram_begin(cs, IP_A, &cap);
  if (p) {
    memcpy(p, d, 64);
    cpb_stack_dgram_commit(cs, CPB_LANE_PROTO, 64); /* well formed, but the client has no key there */
  }
  cpb_engine_leave(r.c);
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  do {
    s = stats_of(r.a);
    if (s.bad_frames > s0.bad_frames && s.unknown_keys > s0.unknown_keys) break;
    nap();
  } while (cpb_clock_now() < deadline);
  CHECK_EQ(s.bad_frames - s0.bad_frames, 1);
  CHECK_EQ(s.unknown_keys - s0.unknown_keys, 1);

  /* No event, no adoption, and the flow at A serves on untouched. */
  cpb_engine_enter(r.a);
  CHECK(!cpb_lane_has_events(cpb_engine_lane(r.a)));
  CHECK_EQ(server_flow(r.a, r.cport), afid);
  cpb_engine_leave(r.a);
  CHECK(echo(&r, 10));
  s = stats_of(r.a);
  CHECK_EQ(s.adopted_in + s.forwarded_in + s.adopted_out + s.gave_back + s.offers_sent, 0);
  rig_close(&r);
}

/* ---- a straggler forwarded to a flow that is already moving on ---- */

struct held_copy { int n; cpb_ip4_t src, dst; size_t len; uint8_t bytes[TCP_HOLD_SEG_MAX]; };
static void copy_first(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct held_copy *h = ctx;
  if (h->n++ > 0 || len > sizeof(h->bytes)) return;
  h->src = src, h->dst = dst, h->len = len;
  memcpy(h->bytes, seg, len);
}

static uint32_t held_of(struct cpb_engine *e, uint64_t fid) {
  struct tcp_flow_info fi = {0};
  cpb_engine_enter(e);
  int rc = tcp_flow_info(cpb_engine_tcp(e), fid, &fi);
  cpb_engine_leave(e);
  return rc ? UINT32_MAX : fi.held_segs;
}

/* Freezes e's flow fid, has the client send its next message and takes the segment out of the hold into h
 * (a real segment of the client's, for forging forwards). The flow stays frozen with nothing held. */
static bool catch_next_msg(struct rig *r, struct cpb_engine *e, uint64_t fid, struct held_copy *h) {
  cpb_time_t now = cpb_engine_enter(e);
  int rc = tcp_freeze(cpb_engine_tcp(e), fid, now);
  cpb_engine_leave(e);
  if (rc || !send_msg(r)) return false;
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  while (held_of(e, fid) == 0 && cpb_clock_now() < deadline) nap();
  memset(h, 0, sizeof(*h));
  cpb_engine_enter(e);
  int drained = tcp_held_drain(cpb_engine_tcp(e), fid, copy_first, h); /* how many */
  cpb_engine_leave(e);
  return drained >= 1 && h->n == drained && held_of(e, fid) == 0;
}

/* A FORWARD of migration mid carrying h's segment, sealed under (dir, kid, seq) into d (FWD_DGRAM bytes); its length. */
#define FWD_DGRAM (20 + 12 + 10 + TCP_HOLD_SEG_MAX + 16)
static size_t forward_dgram(uint8_t *d, const struct cpb_lane_dir *dir, uint64_t kid, uint64_t seq, uint64_t mid,
                            const struct held_copy *h) {
  static uint8_t pt[12 + 10 + TCP_HOLD_SEG_MAX];
  size_t n = body_head(pt, mid);
  put32le(pt + n, h->src), put32le(pt + n + 4, h->dst), pt[n + 8] = (uint8_t)h->len, pt[n + 9] = (uint8_t)(h->len >> 8);
  memcpy(pt + n + 10, h->bytes, h->len);
  return seal(d, dir, T_FORWARD, kid, seq, pt, n + 10 + h->len);
}

/* The soak once stalled a flow for minutes: moved on every few ms, it was frozen whenever the client's
 * retransmission arrived through a source's grace, the target dropped the forwarded segment because its copy
 * was frozen again, and the client's RTO doubled each time. A frozen target holds the segment instead and
 * passes it on (here: processes it when it carries on). The segment is a real one of the client's,
 * taken from B's own hold, then forwarded to B as A's grace would. */
TEST(lane_forward_into_a_flow_moving_on_is_held_not_dropped) {
  struct rig r;
  REQUIRE(rig_open_ab(&r, "lane-fwd-frozen", PORT));
  CHECK_EQ(migrate(&r, r.a, IP_B, 4001, 1000), 0);
  struct tcp_event ev = {0};
  CHECK(wait_event(r.a, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.err, 0);
  CHECK(wait_event(r.b, CPB_LANE_EV_IN, &ev));
  uint64_t bfid = ev.id;
  CHECK(echo(&r, 3));

  /* B starts moving the flow on: frozen, it holds the client's next message (taken out here). */
  static struct held_copy h;
  REQUIRE(catch_next_msg(&r, r.b, bfid, &h));

  /* The same segment comes back as a FORWARD of migration 4001 from A. */
  static uint8_t d[FWD_DGRAM];
  size_t dlen = forward_dgram(d, &DIR_AB, KEY_AB, 1u << 20, 4001, &h);
  struct cpb_lane_stats s0 = stats_of(r.b);
  feed(r.b, IP_A, d, dlen);
  struct cpb_lane_stats s = stats_of(r.b);
  CHECK_EQ(s.forwarded_in - s0.forwarded_in, 1);
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 0);
  CHECK_EQ(held_of(r.b, bfid), 1);

  /* B carries on after all: the held segment is the client's message, echoed once. */
  cpb_time_t now = cpb_engine_enter(r.b);
  CHECK_EQ(tcp_unfreeze(cpb_engine_tcp(r.b), bfid, now), 0);
  cpb_engine_leave(r.b);
  CHECK(recv_echoes(&r));
  CHECK(echo(&r, 3));
  CHECK_EQ(r.bad, 0);
  CHECK_EQ(r.echoed, r.sent);
  rig_close(&r);
}

/* A forward can come before its offer is whole at the target: a part of the offer's copy was lost and a later
 * copy fills the hole, while the forward went right after the first. The target keeps it and injects it once
 * it adopts; dropped, it cost the client an RTO every time (the soak's stall: a big offer, every retransmission
 * caught by the freeze). The segment is a real one of the client's, taken from A's hold; the forward comes
 * under a second key of A's so that A's own sequence numbers stay fresh for its offer. */
#define KEY_AB2 42
TEST(lane_forward_before_its_offer_waits_for_it) {
  struct rig r;
  REQUIRE(rig_open_ab(&r, "lane-fwd-early", PORT));
  struct cpb_lane_dir tx2, rx2; /* B's directions of the second key; A's would be the reverse */
  dir_fill(&tx2, 0x63);
  dir_fill(&rx2, 0x74);
  install_key(r.b, IP_A, KEY_AB2, &tx2, &rx2, PORT_A);

  /* The client's next message, caught by a freeze at A and taken out of A's hold. */
  cpb_engine_enter(r.a);
  uint64_t afid = server_flow(r.a, r.cport);
  cpb_engine_leave(r.a);
  REQUIRE(afid != 0);
  static struct held_copy h;
  REQUIRE(catch_next_msg(&r, r.a, afid, &h));
  cpb_time_t now = cpb_engine_enter(r.a);
  CHECK_EQ(tcp_unfreeze(cpb_engine_tcp(r.a), afid, now), 0); /* nothing held: A never saw the message */
  cpb_engine_leave(r.a);

  /* Its forward under migration 5001 reaches B before any offer: kept, not injected, not dropped. */
  static uint8_t d[FWD_DGRAM];
  size_t dlen = forward_dgram(d, &rx2, KEY_AB2, 1, 5001, &h);
  struct cpb_lane_stats s0 = stats_of(r.b);
  feed(r.b, IP_A, d, dlen);
  struct cpb_lane_stats s = stats_of(r.b);
  CHECK_EQ(s.forward_early - s0.forward_early, 1);
  CHECK_EQ(s.forwarded_in - s0.forwarded_in, 0);
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 0);

  /* Migration 5001 itself: B adopts, then injects the kept segment; the message is echoed once. */
  CHECK_EQ(migrate(&r, r.a, IP_B, 5001, 1000), 0);
  struct tcp_event ev = {0};
  CHECK(wait_event(r.a, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.err, 0);
  CHECK(wait_event(r.b, CPB_LANE_EV_IN, &ev));
  s = stats_of(r.b);
  CHECK_EQ(s.adopted_in - s0.adopted_in, 1);
  CHECK(s.forwarded_in - s0.forwarded_in >= 1);
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 0);
  CHECK(recv_echoes(&r));
  CHECK(echo(&r, 3));
  CHECK_EQ(r.bad, 0);
  CHECK_EQ(r.echoed, r.sent);

  /* One whose offer never comes is wiped after CPB_LANE_EARLY_US, counted as dropped. */
  dlen = forward_dgram(d, &rx2, KEY_AB2, 2, 5002, &h);
  s0 = stats_of(r.b);
  feed(r.b, IP_A, d, dlen);
  now = cpb_engine_enter(r.b);
  cpb_lane_poll(cpb_engine_lane(r.b), now + CPB_LANE_EARLY_US);
  cpb_engine_leave(r.b);
  s = stats_of(r.b);
  CHECK_EQ(s.forward_early - s0.forward_early, 1);
  CHECK_EQ(s.forward_dropped - s0.forward_dropped, 1);
  CHECK_EQ(s.forwarded_in - s0.forwarded_in, 0);
  rig_close(&r);
}

TEST(lane_budget_runs_out_and_the_flow_comes_back_with_its_segments) {
  struct rig r;
  bool up = rig_open(&r, "lane-budget", PORT);
  if (!up) rig_close(&r);
  REQUIRE(up);
  /* Only A knows the key: B cannot open the offer and never answers. */
  install_key(r.a, IP_B, KEY_AB, &DIR_AB, &DIR_BA, PORT_B);
  /* The client would retransmit only after 2 s: an echo before that came from the kept segment. */
  cpb_engine_enter(r.c);
  CHECK_EQ(tcp_setopt(cpb_engine_tcp(r.c), r.cfid, TCP_OPT_RTO_MIN_US, 2 * CPB_US_PER_S), 0);
  struct tcp_stats cst0;
  tcp_get_stats(cpb_engine_tcp(r.c), &cst0);
  cpb_engine_leave(r.c);
  cpb_engine_enter(r.a);
  uint64_t afid = server_flow(r.a, r.cport);
  cpb_engine_leave(r.a);
  CHECK_EQ(migrate(&r, r.a, IP_B, 4001, 50), 0);
  CHECK(send_msg(&r)); /* reaches A while its flow is frozen: held, forwarded to B, kept */
  struct tcp_event ev = {0};
  CHECK(wait_event(r.a, CPB_LANE_EV_OUT, &ev));
  CHECK_EQ(ev.id, 4001);
  CHECK_EQ(ev.err, -ETIMEDOUT);
  struct cpb_lane_outcome oc = {0};
  cpb_engine_enter(r.a);
  CHECK(cpb_lane_outcome(cpb_engine_lane(r.a), 4001, &oc));
  CHECK_EQ(server_flow(r.a, r.cport), afid);
  cpb_engine_leave(r.a);
  CHECK_EQ(oc.err, -ETIMEDOUT);
  CHECK(oc.forwarded >= 1);
  CHECK(recv_echoes(&r));
  CHECK_EQ(r.bad, 0);
  struct tcp_stats cst;
  cpb_engine_enter(r.c);
  tcp_get_stats(cpb_engine_tcp(r.c), &cst);
  cpb_engine_leave(r.c);
  CHECK_EQ(cst.retransmits - cst0.retransmits, 0);
  CHECK(echo(&r, 10));
  struct cpb_lane_stats sa = stats_of(r.a), sb = stats_of(r.b);
  fprintf(stderr, "  budget: offers sent %llu (re-sent %llu), send failures %llu, forwarded %llu; B unknown keys %llu\n",
          (unsigned long long)sa.offers_sent, (unsigned long long)sa.offers_resent, (unsigned long long)sa.send_failures,
          (unsigned long long)sa.forwarded_out, (unsigned long long)sb.unknown_keys);
  CHECK_EQ(sa.gave_back, 1);
  CHECK(sa.offers_resent >= 1);
  CHECK(sa.forwarded_out >= 1);
  CHECK_EQ(sa.answers_in, 0);
  CHECK(sb.unknown_keys >= 1); /* the offer (some of its re-sends may wait on ARP under load) */
  CHECK_EQ(sb.offers_in, 0);
  CHECK_EQ(cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT), -ENOENT);
  cpb_engine_enter(r.b);
  CHECK(!cpb_lane_has_events(cpb_engine_lane(r.b)));
  cpb_engine_leave(r.b);
  rig_close(&r);
}

/* An offer that reaches the target after the source's budget ran out (here: B's engine cannot run while
 * the test holds its lock, so the offer waits in B's RX ring; on a real network, a delayed or duplicated
 * datagram). The source claims the migration at the switch before it takes the flow back; the target's
 * claim then loses, so it refuses the offer: one owner (lane.h: Ownership). */
TEST(lane_offer_arriving_after_the_budget) {
  struct rig r;
  REQUIRE(rig_open_ab(&r, "lane-late", PORT));
  cpb_engine_enter(r.b); /* B's engine stalls: its input waits */
  CHECK_EQ(migrate(&r, r.a, IP_B, 5001, 50), 0);
  struct tcp_event ev = {0};
  bool out = wait_event(r.a, CPB_LANE_EV_OUT, &ev);
  cpb_engine_leave(r.b);
  CHECK(out);
  CHECK_EQ(ev.err, -ETIMEDOUT); /* A took the flow back and serves it */
  cpb_time_t deadline = cpb_clock_now() + WAIT_US;
  struct cpb_lane_stats sb;
  do {
    sb = stats_of(r.b);
    if (sb.offers_in > 0) break;
    nap();
  } while (cpb_clock_now() < deadline);
  CHECK(sb.offers_in >= 1);
  cpb_engine_enter(r.a);
  bool at_a = server_flow(r.a, r.cport) != 0;
  cpb_engine_leave(r.a);
  cpb_engine_enter(r.b);
  bool at_b = server_flow(r.b, r.cport) != 0;
  cpb_engine_leave(r.b);
  int steered = cpb_mem_steer_lookup(r.sw, IP_C, r.cport, VIP, PORT);
  struct cpb_lane_stats sa = stats_of(r.a);
  fprintf(stderr, "  late offer: at A %d, at B %d, steered to %d, B adopted %llu, A answers_in %llu\n", at_a, at_b,
          steered, (unsigned long long)sb.adopted_in, (unsigned long long)sa.answers_in);
  CHECK(at_a);
  CHECK(!at_b);
  CHECK_EQ(sb.adopted_in, 0);
  CHECK(sb.late_offers >= 1);
  CHECK(steered != PORT_B);
  /* A's flow still serves the client. */
  CHECK(echo(&r, 3));
  rig_close(&r);
}

__attribute__((constructor)) static void keys_init(void) {
  dir_fill(&DIR_AB, 0x11);
  dir_fill(&DIR_BA, 0x77);
}
