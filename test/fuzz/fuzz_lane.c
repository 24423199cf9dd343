/* libFuzzer target for the migration lane (native/mig/lane.h): a lane over a real TCP instance, with
 * stand-in native apps (a listener table and a flow table), an in-memory balancer (steer/owner entries and
 * claims keyed by flow and token) and one peer, 10.0.0.9, whose keys the harness holds too, so it can seal
 * what the peer would send and open what the lane sends. Each input is a sequence of operations; the
 * first byte of each selects it:
 *   0 raw bytes into cpb_lane_input from the peer or a stranger (header optionally made plausible)
 *   1 bytes sealed as the plaintext of a message of type 1..4 under one of the peer's keys (optionally
 *     with the migration id/epoch of a live migration, or an offer built around a real snapshot with
 *     fuzzed mutations, or a forward carrying a real client segment)
 *   9 a message in parts (type 5) under one of the peer's keys: an offer around a real snapshot with a
 *     big record, a forward of a full-sized client segment, or fuzzed bytes; parts dropped, duplicated,
 *     sent backwards, their headers flipped, message numbers reused
 *   2 time passes; cpb_lane_poll and tcp_poll
 *   3 cpb_lane_migrate of a native flow (one is adopted from a real snapshot first when none is there),
 *     optionally with send data queued first or a record, so the offer goes in parts
 *   4 the last datagram again (replay window)
 *   5 the peer answers the last offer the lane sent (adopted / rejected)
 *   6 a key of the peer installed or dropped
 *   7 the balancer: the peer claims a migration first, or a fault is switched on/off
 *   8 a client segment for one of the flows (held while frozen: the lane forwards it)
 * Invariants: nothing crashes or leaks; everything the lane sends opens under the peer's key and is well
 * formed (parts too, and the messages they make up); every migration started gets exactly one outcome event; an adopted-in event names a flow the app
 * serves; after the clock runs out every migration has ended, no flow is frozen, and once the app's flows
 * are aborted, tcp_fini leaves no slot or chunk of the arena behind. Seeds: corpus/lane/ (README there). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "mig/lane.h"
#include "mig/lanefrag.h"
#include "mig/lanekey.h"
#include "tcp/snapshot.h"
#include "tcp/tcp.h"
#include "wire/checksum.h"

#define SEC CPB_US_PER_S
#define LANE_IP 0x0a000002u   /* the lane's runtime (and the TCP server's address) */
#define CLIENT_IP 0x0a000001u /* the client of the migrated flows */
#define PEER_IP 0x0a000009u
#define STRANGER_IP 0x0a00004du
#define SELF_BACKEND 1
#define PEER_BACKEND 2
#define NKEYIDS 6 /* key ids 1..6: more than CPB_LANE_KEYS, so installs evict */
#define MAXFLOWS 6
#define MAXPEND 64
#define NCLAIMS 32
#define DGRAM_MAX 1600

static void check(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_lane: invariant broken: %s\n", what);
    abort();
  }
}

/* ---- key material: derived from the key id, both directions ---- */

static void dir_of(uint64_t id, bool lane_tx, struct cpb_lane_dir *d) {
  for (int i = 0; i < 32; i++) d->key[i] = (uint8_t)(id * 31 + (uint64_t)i * 7 + (lane_tx ? 0x55 : 0xa3));
  for (int i = 0; i < 12; i++) d->iv[i] = (uint8_t)(id * 13 + (uint64_t)i * 5 + (lane_tx ? 0x11 : 0x77));
}

/* The peer's copy of each key: tx = the lane's rx direction, rx = the lane's tx direction. */
static struct lane_key peer_keys[NKEYIDS + 1];

static void peer_key_reset(uint64_t id) {
  struct cpb_lane_dir ltx, lrx;
  dir_of(id, true, &ltx);
  dir_of(id, false, &lrx);
  if (lane_key_init(&peer_keys[id], id, &lrx, &ltx) != 0) abort();
}

/* ---- little-endian helpers ---- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

/* ---- the world of one input ---- */

static struct cpb_arena arena;
static uint8_t base_snap[4096]; /* a real flow's snapshot (setup_base) */
static size_t base_len;

struct flow {
  bool used, busy;
  uint64_t id;
  uint16_t port;
  char name[CPB_LANE_APP_NAME + 1];
  uint8_t state[CPB_LANE_APP_STATE];
};
struct claim {
  bool used;
  cpb_ip4_t src, dst;
  uint16_t sport, dport;
  uint64_t token;
  int32_t owner;
};
struct steer_ent {
  bool used;
  cpb_ip4_t src, dst;
  uint16_t sport, dport;
  int32_t backend;
};

static struct {
  struct cpb_tcp *tcp;
  struct cpb_lane *lane;
  cpb_time_t now;
  struct flow flows[MAXFLOWS];
  struct claim claims[NCLAIMS];
  uint32_t claim_next;
  struct steer_ent steers[NCLAIMS];
  uint32_t steer_next;
  bool fail_claim, fail_begin, fail_adopt, small_cap;
  uint64_t pending[MAXPEND]; /* migration ids started and not yet decided (0: free) */
  uint16_t next_rport;
  /* what the lane sent */
  uint8_t sendbuf[DGRAM_MAX];
  bool in_send;
  cpb_ip4_t send_dst;
  bool have_offer; /* the last offer the lane sent */
  uint64_t offer_mid, offer_key;
  uint32_t offer_epoch;
  /* the last offer the peer sent that the lane adopted */
  bool have_in;
  uint64_t in_mid;
  uint32_t in_epoch;
  uint16_t in_rport;
  /* the last datagram fed in */
  uint8_t last[DGRAM_MAX];
  size_t last_len;
  cpb_ip4_t last_src;
  uint8_t plain[DGRAM_MAX], dgram[DGRAM_MAX];
  /* the message the lane is sending in parts, as the peer assembles it */
  uint64_t asm_key;
  uint32_t asm_msg, asm_total;
  uint16_t asm_have;
  uint64_t asm_bits[(LANE_MAX_PARTS + 63) / 64];
  uint32_t peer_msg; /* the peer's last message number */
} w;
static uint8_t asm_buf[CPB_LANE_MSG_MAX]; /* the lane's message, reassembled */
static uint8_t big[CPB_LANE_MSG_MAX];     /* a message the peer sends in parts */

static const struct {
  uint16_t port;
  const char *name;
} listeners[] = {{80, "echo"}, {8080, "kv"}};
static const char *const names[] = {"echo", "kv", "nope", "echoecho_echoec"};

/* ---- the TCP instance's output: segments go nowhere ---- */

static uint8_t seg_frame[1600];
static uint8_t *tcp_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  (void)ctx, (void)src, (void)dst;
  *cap = 1480;
  return seg_frame;
}
static void tcp_commit(void *ctx, size_t len) { (void)ctx, (void)len; }

/* ---- the lane's output: every datagram is opened with the peer's key and checked ---- */

/* A whole message from the lane (one datagram, or its parts put together). */
static void check_message(uint64_t kid, uint8_t type, const uint8_t *b, size_t n) {
  check(n >= 12, "message head");
  switch (type) {
  case 1: { /* offer: name, state, snapshot, record */
    size_t off = 12;
    check(n > off, "offer name length");
    size_t nl = b[off++];
    check(nl >= 1 && nl <= CPB_LANE_APP_NAME && n >= off + nl + CPB_LANE_APP_STATE + 8, "offer fields");
    off += nl + CPB_LANE_APP_STATE;
    size_t sn = get32(b + off);
    off += 4;
    check(sn <= n - off - 4, "offer snapshot length");
    struct tcp_snap s;
    check(tcp_snap_parse(b + off, sn, &s) == 0, "offered snapshot parses");
    off += sn;
    check(off + 4 + get32(b + off) == n, "offer record length");
    check(n <= CPB_LANE_MSG_MAX, "offer within the message limit");
    w.have_offer = true;
    w.offer_mid = get64(b), w.offer_epoch = get32(b + 8), w.offer_key = kid;
    break;
  }
  case 2: check(n == 20, "adopted answer length"); break;
  case 3: check(n == 16 && (int32_t)get32(b + 12) < 0, "rejected answer carries -errno"); break;
  case 4: check(n >= 22 && n == 22u + get16(b + 20) && n <= 22u + TCP_HOLD_SEG_MAX, "forward length"); break;
  default: check(false, "message type");
  }
}

/* A part from the lane: well formed, consistent with the other parts of its message; the message is
 * checked when complete. */
static void check_part(uint64_t kid, const uint8_t *b, size_t n) {
  struct lane_part pt;
  check(lane_part_parse(b, n, &pt) == 0, "part parses");
  check(pt.type == 1 || pt.type == 4, "only offers and forwards go in parts");
  check(pt.msg != 0, "message numbers start at 1");
  if (w.asm_key != kid || w.asm_msg != pt.msg) { /* a new message: the last one is done with */
    w.asm_key = kid, w.asm_msg = pt.msg, w.asm_total = pt.total, w.asm_have = 0;
    memset(w.asm_bits, 0, sizeof(w.asm_bits));
  }
  check(pt.total == w.asm_total, "every part of a message has its total");
  if (w.asm_bits[pt.index / 64] >> (pt.index % 64) & 1) return; /* a re-sent copy */
  w.asm_bits[pt.index / 64] |= 1ull << (pt.index % 64);
  memcpy(asm_buf + (size_t)pt.index * LANE_PART_DATA, pt.data, pt.len);
  if (++w.asm_have == pt.count) check_message(kid, pt.type, asm_buf, pt.total);
}

static uint8_t *lane_begin(void *ctx, cpb_ip4_t dst, size_t *cap) {
  (void)ctx;
  check(!w.in_send, "begin twice without commit/abort");
  if (w.fail_begin) return NULL;
  w.in_send = true;
  w.send_dst = dst;
  *cap = w.small_cap ? 200 : 1480;
  return w.sendbuf;
}

static void lane_abort(void *ctx) {
  (void)ctx;
  check(w.in_send, "abort without begin");
  w.in_send = false;
}

static void lane_commit(void *ctx, uint8_t proto, size_t len) {
  (void)ctx;
  check(w.in_send, "commit without begin");
  w.in_send = false;
  check(proto == CPB_LANE_PROTO, "lane datagram protocol");
  check(len >= LANE_HDR_LEN + LANE_TAG_LEN + 12 && len <= (w.small_cap ? 200u : 1480u), "lane datagram length");
  check(w.send_dst == PEER_IP, "lane sends only to the peer with a key");
  const uint8_t *p = w.sendbuf;
  check(p[0] == CPB_LANE_VERSION && p[1] >= 1 && p[1] <= 5 && p[2] == 0 && p[3] == 0, "lane header");
  uint64_t kid = get64(p + 4);
  check(kid >= 1 && kid <= NKEYIDS && peer_keys[kid].used, "lane sends under a key the peer holds");
  long n = lane_key_open(&peer_keys[kid], p, len, w.plain);
  check(n >= 12, "lane datagram opens under the peer's key");
  if (p[1] == 5) check_part(kid, w.plain, (size_t)n);
  else check_message(kid, p[1], w.plain, (size_t)n);
}

/* ---- apps ---- */

/* The bytes of a record the peer offers (the lane's apps.adopt sees them unchanged). */
static uint8_t rec_byte(size_t i, size_t len) { return (uint8_t)(i * 7 + len); }

static struct flow *flow_find(uint64_t id) {
  for (int i = 0; i < MAXFLOWS; i++)
    if (w.flows[i].used && w.flows[i].id == id) return &w.flows[i];
  return NULL;
}

static struct flow *flow_add(uint64_t id, uint16_t port, const char *name, const uint8_t *state) {
  for (int i = 0; i < MAXFLOWS; i++)
    if (!w.flows[i].used) {
      struct flow *f = &w.flows[i];
      memset(f, 0, sizeof(*f));
      f->used = true, f->id = id, f->port = port;
      snprintf(f->name, sizeof(f->name), "%s", name);
      if (state) memcpy(f->state, state, CPB_LANE_APP_STATE);
      return f;
    }
  return NULL;
}

static int app_export(void *ctx, uint64_t id, char name[CPB_LANE_APP_NAME + 1], uint8_t state[CPB_LANE_APP_STATE]) {
  (void)ctx;
  struct flow *f = flow_find(id);
  if (!f) return -ENOENT;
  if (f->busy) return -EBUSY;
  memcpy(name, f->name, CPB_LANE_APP_NAME + 1);
  memcpy(state, f->state, CPB_LANE_APP_STATE);
  return 0;
}

static int nflows(void) {
  int n = 0;
  for (int i = 0; i < MAXFLOWS; i++) n += w.flows[i].used;
  return n;
}

static bool app_accepts(void *ctx, uint16_t port, const char *name) {
  (void)ctx;
  check(name && strlen(name) >= 1 && strlen(name) <= CPB_LANE_APP_NAME, "accepts: name");
  if (nflows() >= MAXFLOWS) return false;
  for (size_t i = 0; i < sizeof(listeners) / sizeof(listeners[0]); i++)
    if (listeners[i].port == port && strcmp(listeners[i].name, name) == 0) return true;
  return false;
}

static int app_adopt(void *ctx, uint64_t id, uint16_t port, const char *name, const uint8_t state[CPB_LANE_APP_STATE],
                     const uint8_t *record, size_t record_len, cpb_time_t now) {
  (void)ctx, (void)now;
  check(record_len <= CPB_LANE_MSG_MAX && (record_len == 0) == (record == NULL), "adopt: the record");
  for (size_t i = 0; i < record_len; i++) check(record[i] == rec_byte(i, record_len), "adopt: the record's bytes");
  check(!flow_find(id), "adopt: flow id served already");
  struct tcp_flow_info fi;
  check(tcp_flow_info(w.tcp, id, &fi) == 0 && fi.local_port == port, "adopt: the flow exists on that port");
  if (w.fail_adopt) return -ENOMEM;
  return flow_add(id, port, name, state) ? 0 : -ENOSPC;
}

static void app_forget(void *ctx, uint64_t id) {
  (void)ctx;
  struct flow *f = flow_find(id);
  check(f != NULL, "forget: a flow the app serves");
  f->used = false;
}

/* ---- balancer ---- */

static bool same(cpb_ip4_t a, uint16_t ap, cpb_ip4_t b, uint16_t bp, cpb_ip4_t c, uint16_t cp, cpb_ip4_t d, uint16_t dp) {
  return a == c && ap == cp && b == d && bp == dp;
}

static int bal_steer(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int32_t backend) {
  (void)ctx;
  check(backend == SELF_BACKEND, "steer: to ourselves");
  for (int i = 0; i < NCLAIMS; i++)
    if (w.steers[i].used && same(w.steers[i].src, w.steers[i].sport, w.steers[i].dst, w.steers[i].dport, src, sport, dst, dport)) {
      w.steers[i].backend = backend;
      return 0;
    }
  struct steer_ent *e = &w.steers[w.steer_next];
  w.steer_next = (w.steer_next + 1) % NCLAIMS;
  *e = (struct steer_ent){.used = true, .src = src, .dst = dst, .sport = sport, .dport = dport, .backend = backend};
  return 0;
}

static int bal_owner(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  (void)ctx;
  if (w.fail_claim) return -EIO;
  for (int i = 0; i < NCLAIMS; i++)
    if (w.steers[i].used && same(w.steers[i].src, w.steers[i].sport, w.steers[i].dst, w.steers[i].dport, src, sport, dst, dport))
      return w.steers[i].backend;
  return -ENOENT;
}

static struct claim *claim_find(cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  for (int i = 0; i < NCLAIMS; i++) {
    struct claim *c = &w.claims[i];
    if (c->used && c->token == token && same(c->src, c->sport, c->dst, c->dport, src, sport, dst, dport)) return c;
  }
  return NULL;
}

static int claim_put(cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
                     int32_t *owner) {
  struct claim *c = claim_find(src, sport, dst, dport, token);
  if (c) {
    *owner = c->owner;
    return -EEXIST;
  }
  c = &w.claims[w.claim_next];
  w.claim_next = (w.claim_next + 1) % NCLAIMS;
  *c = (struct claim){.used = true, .src = src, .sport = sport, .dst = dst, .dport = dport, .token = token, .owner = backend};
  return 0;
}

static int bal_claim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
                     int32_t *owner) {
  (void)ctx;
  check(backend == SELF_BACKEND && token != 0, "claim: ours, with a token");
  if (w.fail_claim) return -EIO;
  return claim_put(src, sport, dst, dport, token, backend, owner);
}

static int bal_unclaim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  (void)ctx;
  struct claim *c = claim_find(src, sport, dst, dport, token);
  if (!c) return -ENOENT;
  check(c->owner == SELF_BACKEND, "unclaim: only our own claim");
  c->used = false;
  return 0;
}

/* ---- flows ---- */

static void drain(void) {
  struct tcp_event ev;
  while (tcp_next_event(w.tcp, &ev)) {
  }
  int guard = 0;
  while (cpb_lane_next_event(w.lane, &ev)) {
    check(++guard <= 64, "lane events bounded");
    if ((int)ev.type == CPB_LANE_EV_IN) {
      check(flow_find(ev.id) != NULL, "adopted-in event names a flow the app serves");
    } else if ((int)ev.type == CPB_LANE_EV_OUT) {
      int i = 0;
      while (i < MAXPEND && w.pending[i] != ev.id) i++;
      check(i < MAXPEND, "outcome event for a migration under way");
      w.pending[i] = 0;
      check(ev.err <= 0, "outcome err is 0 or -errno");
    } else {
      check(false, "lane event type");
    }
  }
  check(!cpb_lane_has_events(w.lane), "events drained");
}

/* A copy of the base snapshot for another client port. */
static long snap_for(uint16_t rport, uint8_t *out, size_t cap) {
  struct tcp_snap s;
  if (tcp_snap_parse(base_snap, base_len, &s) != 0) abort();
  s.rport = rport;
  return tcp_snap_encode(&s, out, cap);
}

static struct flow *new_flow(void) {
  static uint8_t buf[4096];
  uint16_t rport = (uint16_t)(40000 + w.next_rport++);
  long n = snap_for(rport, buf, sizeof(buf));
  check(n > 0, "encode a snapshot");
  uint64_t id;
  int rc = tcp_adopt(w.tcp, buf, (size_t)n, w.now, &id);
  if (rc != 0) {
    check(rc == -ENOSPC || rc == -EEXIST, "adopt of a fresh snapshot");
    return NULL;
  }
  struct flow *f = flow_add(id, 80, "echo", NULL);
  if (!f) tcp_abort(w.tcp, id, w.now);
  else for (int i = 0; i < CPB_LANE_APP_STATE; i++) f->state[i] = (uint8_t)(rport + i);
  return f;
}

/* A client segment for flow id (valid checksum, in-window numbers), flags and payload from the input. */
static size_t client_seg_n(uint64_t id, uint8_t flags, const uint8_t *pl, size_t n, uint8_t *seg, cpb_ip4_t *src,
                           cpb_ip4_t *dst) {
  struct tcp_flow_info fi;
  if (tcp_flow_info(w.tcp, id, &fi) != 0) return 0;
  memset(seg, 0, 20);
  cpb_put_be16(seg, fi.remote_port);
  cpb_put_be16(seg + 2, fi.local_port);
  cpb_put_be32(seg + 4, fi.rcv_nxt);
  cpb_put_be32(seg + 8, fi.snd_una + (flags & 0x80 ? fi.unacked_bytes : 0));
  seg[12] = 5 << 4;
  seg[13] = (uint8_t)((flags & 0x1f) | 0x10); /* ACK always */
  cpb_put_be16(seg + 14, 65535);
  memcpy(seg + 20, pl, n);
  uint32_t acc = csum_pseudo4(fi.remote_ip, fi.local_ip, 6, (uint16_t)(20 + n));
  cpb_put_be16(seg + 16, csum_fold(csum_add(acc, seg, 20 + n)));
  *src = fi.remote_ip, *dst = fi.local_ip;
  return 20 + n;
}

static size_t client_seg(uint64_t id, uint8_t flags, const uint8_t *pl, size_t n, uint8_t *seg, cpb_ip4_t *src, cpb_ip4_t *dst) {
  return client_seg_n(id, flags, pl, CPB_MIN(n, (size_t)1200), seg, src, dst);
}

/* ---- the operations ---- */

struct rd {
  const uint8_t *p;
  size_t n;
};
static uint8_t u8(struct rd *r) {
  if (!r->n) return 0;
  r->n--;
  return *r->p++;
}
static uint16_t u16(struct rd *r) {
  uint16_t lo = u8(r);
  return (uint16_t)(lo | u8(r) << 8);
}
static const uint8_t *take(struct rd *r, size_t *len) {
  if (*len > r->n) *len = r->n;
  const uint8_t *p = r->p;
  r->p += *len, r->n -= *len;
  return p;
}

static void feed(cpb_ip4_t src, const uint8_t *p, size_t n) {
  if (n > sizeof(w.last)) n = sizeof(w.last);
  memmove(w.last, p, n);
  w.last_len = n, w.last_src = src;
  cpb_lane_input(w.lane, src, w.last, n, w.now);
  drain();
}

static void seal_feed(uint64_t kid, uint8_t type, const uint8_t *pt, size_t n) {
  if (!peer_keys[kid].used) return;
  long dn = lane_key_seal(&peer_keys[kid], type, pt, n, w.dgram, sizeof(w.dgram));
  if (dn > 0) feed(PEER_IP, w.dgram, (size_t)dn);
}

/* An offer the peer sends that the lane may adopt: forwards may follow it. */
static void remember_offer(const uint8_t *b, size_t n) {
  if (n < 13) return;
  struct tcp_snap s;
  size_t nl = b[12], off = 13 + nl + CPB_LANE_APP_STATE;
  if (n < off + 8) return;
  size_t sn = get32(b + off);
  if (sn > n - off - 8 || tcp_snap_parse(b + off + 4, sn, &s) != 0) return;
  w.have_in = true;
  w.in_mid = get64(b), w.in_epoch = get32(b + 8), w.in_rport = s.rport;
}

static void op_raw(struct rd *r) {
  uint8_t f = u8(r);
  size_t len = u16(r) % 1600;
  uint8_t buf[1600];
  const uint8_t *p = take(r, &len);
  memcpy(buf, p, len);
  if ((f & 4) && len >= 20) { /* plausible header: reaches key lookup, window and tag */
    buf[0] = CPB_LANE_VERSION, buf[1] = (uint8_t)(1 + (f >> 3) % 4), buf[2] = buf[3] = 0;
    put64(buf + 4, 1 + (f >> 5) % NKEYIDS);
  }
  feed(f & 1 ? STRANGER_IP : f & 2 ? 0 : PEER_IP, buf, len);
}

/* The flow adopted here from the fuzzed peer (the one its forwards must reach), 0 when none. */
static uint64_t adopted_flow(void) {
  uint64_t id = 0;
  for (int i = 0; i < MAXFLOWS; i++) {
    struct tcp_flow_info fi;
    if (w.flows[i].used && tcp_flow_info(w.tcp, w.flows[i].id, &fi) == 0 && fi.remote_port == w.in_rport) id = w.flows[i].id;
  }
  return id;
}

static void op_sealed(struct rd *r) {
  uint8_t t = u8(r), g = u8(r);
  uint8_t type = (uint8_t)(1 + t % 4);
  uint64_t kid = 1 + (t >> 2) % NKEYIDS;
  if ((g & 4) && peer_keys[kid].used) peer_keys[kid].tx_seq += u8(r); /* skip ahead: the window slides */
  size_t len = u16(r) % 1400;
  const uint8_t *p = take(r, &len);
  size_t n = 0;
  if ((g & 2) && type == 1 && base_len) { /* an offer around a real snapshot, with mutations */
    put64(w.plain, len >= 1 ? 1 + p[0] % 8 : 1);
    put32(w.plain + 8, len >= 2 ? p[1] % 4 : 0);
    const char *nm = names[len >= 3 ? p[2] % 4 : 0];
    n = 12;
    w.plain[n++] = (uint8_t)strlen(nm);
    memcpy(w.plain + n, nm, strlen(nm));
    n += strlen(nm);
    memset(w.plain + n, len >= 4 ? p[3] : 0, CPB_LANE_APP_STATE);
    n += CPB_LANE_APP_STATE;
    uint16_t rport = (uint16_t)(50000 + (len >= 5 ? p[4] % 8 : 0));
    long sn = snap_for(rport, w.plain + n + 4, sizeof(w.plain) - n - 8 - 64);
    if (sn <= 0) return;
    if ((g & 8) && len >= 6) { /* the 4-tuple of one of the lane's own flows: it comes back */
      sn = snap_for((uint16_t)(40000 + p[5] % 8), w.plain + n + 4, sizeof(w.plain) - n - 8 - 64);
      if (sn <= 0) return;
    }
    for (size_t i = 6; i + 3 <= len && i < 6 + 3 * 8; i += 3) { /* up to 8 byte flips in the snapshot */
      size_t at = get16(p + i) % (size_t)sn;
      w.plain[n + 4 + at] ^= p[i + 2];
    }
    put32(w.plain + n, (uint32_t)sn);
    n += 4 + (size_t)sn;
    put32(w.plain + n, 0); /* no record */
    n += 4;
    if (g & 16) n -= CPB_MIN(n, (size_t)(len >= 7 ? p[6] % 16 : 1)); /* truncated */
  } else if ((g & 2) && type == 4 && w.have_in) { /* a forward of a real client segment to the adopted flow */
    uint64_t id = adopted_flow();
    if (!id) return;
    put64(w.plain, w.in_mid);
    put32(w.plain + 8, w.in_epoch);
    cpb_ip4_t s, d;
    size_t sl = client_seg(id, len ? p[0] : 0, p + CPB_MIN(len, 1), len ? len - 1 : 0, w.plain + 22, &s, &d);
    if (!sl) return;
    put32(w.plain + 12, s);
    put32(w.plain + 16, d);
    put16(w.plain + 20, (uint16_t)sl);
    n = 22 + sl;
  } else {
    memcpy(w.plain, p, len);
    n = len;
    if ((g & 1) && n >= 12) { /* names a live migration: answers reach it, forwards reach the adopted flow */
      if (type == 4 && w.have_in) put64(w.plain, w.in_mid), put32(w.plain + 8, w.in_epoch);
      else if (w.have_offer) put64(w.plain, w.offer_mid), put32(w.plain + 8, w.offer_epoch);
    }
  }
  if (type == 1) remember_offer(w.plain, n);
  seal_feed(kid, type, w.plain, n);
}

/* Queues the peer's message m (n bytes, inner type) as parts under key kid, shaped by g and the input. */
static void parts_feed(struct rd *r, uint64_t kid, uint8_t type, const uint8_t *m, size_t n, uint8_t g) {
  if (n <= LANE_MAX_PLAIN || n > CPB_LANE_MSG_MAX || !peer_keys[kid].used) return;
  if (!(g & 4) || w.peer_msg == 0) w.peer_msg++; /* else: a message number used before */
  uint16_t count = lane_part_count(n);
  uint16_t skip = (g & 64) ? (uint16_t)(u8(r) % count) : UINT16_MAX;
  uint16_t twice = (g & 128) ? (uint16_t)(u8(r) % count) : UINT16_MAX;
  uint16_t flip = (g & 32) ? (uint16_t)(u8(r) % count) : UINT16_MAX;
  uint8_t flip_at = u8(r), flip_x = u8(r);
  static uint8_t pt[LANE_MAX_PLAIN];
  for (uint16_t k = 0; k < count; k++) {
    uint16_t i = (g & 16) ? (uint16_t)(count - 1 - k) : k; /* backwards */
    if (i == skip) continue;
    size_t pn = lane_part_emit(w.peer_msg, type, m, n, i, pt);
    if (i == flip) pt[flip_at % LANE_PART_HEAD] ^= flip_x | 1; /* a header field that lies */
    for (int c = 0; c < (i == twice ? 2 : 1); c++) seal_feed(kid, 5, pt, pn);
  }
}

static void op_parts(struct rd *r) {
  uint8_t a = u8(r), g = u8(r);
  uint64_t kid = 1 + a % NKEYIDS;
  size_t n = 0;
  uint8_t type = 1;
  if ((g & 3) == 1 && base_len) { /* an offer around a real snapshot with a big record */
    size_t rec = 1400 + (size_t)u16(r) * 4 % 40000;
    uint16_t rport = (uint16_t)(50000 + (a >> 4) % 8);
    put64(big, 1 + (a >> 3) % 8);
    put32(big + 8, 0);
    n = 12;
    big[n++] = 4;
    memcpy(big + n, "echo", 4);
    n += 4;
    memset(big + n, a, CPB_LANE_APP_STATE);
    n += CPB_LANE_APP_STATE;
    long sn = snap_for(rport, big + n + 4, sizeof(big) - n - 8 - rec);
    if (sn <= 0) return;
    put32(big + n, (uint32_t)sn);
    n += 4 + (size_t)sn;
    put32(big + n, (uint32_t)rec);
    n += 4;
    for (size_t i = 0; i < rec; i++) big[n + i] = rec_byte(i, rec);
    n += rec;
    remember_offer(big, n);
  } else if ((g & 3) == 2 && w.have_in) { /* a forward of a full-sized client segment to the adopted flow */
    uint64_t id = adopted_flow();
    if (!id) return;
    static uint8_t pl[1448];
    memset(pl, a, sizeof(pl));
    put64(big, w.in_mid);
    put32(big + 8, w.in_epoch);
    cpb_ip4_t s, d;
    size_t sl = client_seg_n(id, g >> 2, pl, sizeof(pl), big + 22, &s, &d);
    if (!sl) return;
    put32(big + 12, s);
    put32(big + 16, d);
    put16(big + 20, (uint16_t)sl);
    n = 22 + sl;
    type = 4;
  } else { /* fuzzed bytes of a fuzzed length and type */
    size_t len = u16(r) % 3000;
    const uint8_t *p = take(r, &len);
    n = 1401 + (size_t)u16(r) % 20000;
    for (size_t i = 0; i < n; i++) big[i] = len ? p[i % len] : (uint8_t)i;
    type = (uint8_t)(a >> 4) % 6;
  }
  parts_feed(r, kid, type, big, n, g);
}

static void poll_all(void) {
  cpb_lane_poll(w.lane, w.now);
  tcp_poll(w.tcp, w.now);
  drain();
}

static void op_time(struct rd *r) {
  w.now += (cpb_time_t)u16(r) * 20;
  poll_all();
}

static void op_migrate(struct rd *r) {
  uint8_t a = u8(r), b = u8(r), c = u8(r);
  struct flow *f = NULL;
  int k = a % MAXFLOWS;
  for (int i = 0; i < MAXFLOWS && !f; i++)
    if (w.flows[(k + i) % MAXFLOWS].used) f = &w.flows[(k + i) % MAXFLOWS];
  if (!f || (a & 0x40)) f = new_flow();
  if (!f) return;
  if (a & 0x80) f->busy = !f->busy;
  uint64_t mid = b & 0x80 ? 0 : 1 + (b & 7);
  uint32_t epoch = (b >> 3) & 3;
  cpb_ip4_t peer = (a & 0x20) ? STRANGER_IP : PEER_IP;
  struct tcp_flow_info fi;
  bool was_frozen = tcp_flow_info(w.tcp, f->id, &fi) == 0 && fi.frozen; /* migrating already */
  /* A big offer: send data queued first (unsent: the client here never acknowledges), or a record. */
  static uint8_t fill[300 * 1024];
  size_t rec = 0;
  switch ((b >> 5) & 3) {
  case 1: rec = 2000; break;
  case 2: tcp_send(w.tcp, f->id, fill, 40 * 1024, w.now); break;
  case 3: tcp_send(w.tcp, f->id, fill, sizeof(fill), w.now), rec = 100; break;
  }
  for (size_t i = 0; i < rec; i++) fill[i] = rec_byte(i, rec);
  int rc = cpb_lane_migrate(w.lane, f->id, peer, mid, epoch, 1 + c, rec ? fill : NULL, rec, w.now);
  memset(fill, 0, rec);
  check(rc == 0 || rc == -EINVAL || rc == -ENOENT || rc == -EBUSY || rc == -ENOTCONN || rc == -ENOKEY || rc == -EMSGSIZE ||
            rc == -ENOSPC || rc == -EEXIST,
        "migrate: a documented result");
  if (rc == 0) {
    check(tcp_flow_info(w.tcp, f->id, &fi) == 0 && fi.frozen, "migrating flow frozen");
    int i = 0;
    while (i < MAXPEND && w.pending[i]) i++;
    check(i < MAXPEND, "pending table");
    w.pending[i] = mid;
  } else if (tcp_flow_info(w.tcp, f->id, &fi) == 0) {
    check(fi.frozen == was_frozen, "a refused migration leaves the flow as it was");
  }
  drain();
}

static void op_answer(struct rd *r) {
  uint8_t a = u8(r), e = u8(r);
  if (!w.have_offer || !peer_keys[w.offer_key].used) return;
  put64(w.plain, w.offer_mid);
  put32(w.plain + 8, w.offer_epoch);
  if (a & 1) {
    put64(w.plain + 12, w.now - (a >> 1));
    seal_feed(w.offer_key, 2, w.plain, 20);
  } else {
    put32(w.plain + 12, (uint32_t)(a & 2 ? (int32_t)e : -(int32_t)(1 + e % 120)));
    seal_feed(w.offer_key, 3, w.plain, 16);
  }
}

static void op_key(struct rd *r) {
  uint8_t a = u8(r);
  uint64_t id = 1 + (a >> 1) % NKEYIDS;
  if (a & 1) {
    int rc = cpb_lane_drop_key(w.lane, PEER_IP, id);
    check(rc == 0 || rc == -ENOENT, "drop_key result");
    /* the peer keeps its copy: what it still sends under it must be refused as unknown */
  } else {
    struct cpb_lane_dir tx, rx;
    dir_of(id, true, &tx);
    dir_of(id, false, &rx);
    int rc = cpb_lane_set_key(w.lane, PEER_IP, id, &tx, &rx, PEER_BACKEND);
    check(rc == 0 || rc == -EEXIST, "set_key result");
    if (rc == 0) peer_key_reset(id); /* fresh counters on both sides */
  }
}

static void op_balancer(struct rd *r) {
  uint8_t a = u8(r);
  switch (a & 7) {
  case 0: w.fail_claim = !w.fail_claim; break;
  case 1: w.fail_begin = !w.fail_begin; break;
  case 2: w.fail_adopt = !w.fail_adopt; break;
  case 3: w.small_cap = !w.small_cap; break;
  case 4: /* the peer, as target, claimed the lane's last migration (adopted it; the answer is lost) */
  case 5: { /* the peer, as source, gave up on its offer and claimed its flow back */
    bool out = (a & 7) == 4;
    if (out ? !w.have_offer : !w.have_in) return;
    uint64_t kid = out ? w.offer_key : (uint64_t)(1 + (a >> 3) % NKEYIDS);
    struct cpb_lane_dir d;
    dir_of(kid, out, &d); /* the iv of the direction the offer travels */
    uint16_t rport = out ? 0 : w.in_rport;
    if (out) {
      for (int i = 0; i < MAXFLOWS; i++) {
        struct tcp_flow_info fi;
        if (w.flows[i].used && tcp_flow_info(w.tcp, w.flows[i].id, &fi) == 0 && fi.frozen) rport = fi.remote_port;
      }
      if (!rport) return;
    }
    int32_t owner;
    claim_put(CLIENT_IP, rport, LANE_IP, 80, cpb_lane_claim_token(out ? w.offer_mid : w.in_mid, out ? w.offer_epoch : w.in_epoch, d.iv),
              PEER_BACKEND, &owner);
    break;
  }
  default: { /* the balancer names a backend for some flow */
    int32_t be = (int32_t)(a >> 6) - 1;
    uint16_t rport = (uint16_t)(40000 + (a >> 3) % 8);
    for (int i = 0; i < NCLAIMS; i++)
      if (!w.steers[i].used || i == NCLAIMS - 1) {
        w.steers[i] = (struct steer_ent){.used = true, .src = CLIENT_IP, .sport = rport, .dst = LANE_IP, .dport = 80, .backend = be};
        break;
      }
  }
  }
}

static void op_client(struct rd *r) {
  uint8_t a = u8(r), fl = u8(r);
  size_t len = u8(r);
  const uint8_t *p = take(r, &len);
  struct flow *f = NULL;
  for (int i = 0; i < MAXFLOWS && !f; i++)
    if (w.flows[(a + i) % MAXFLOWS].used) f = &w.flows[(a + i) % MAXFLOWS];
  if (!f) return;
  static uint8_t seg[1300];
  cpb_ip4_t s, d;
  size_t n = client_seg(f->id, fl, p, len, seg, &s, &d);
  if (!n) return;
  tcp_input(w.tcp, s, d, seg, n, w.now);
  drain();
}

/* ---- one input ---- */

static void setup_world(void) {
  memset(&w, 0, sizeof(w));
  for (int i = 1; i <= NKEYIDS; i++) lane_key_clear(&peer_keys[i]);
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = LANE_IP;
  c.max_flows = 8;
  c.hold_segs = 32;
  memset(c.iss_secret, 7, sizeof(c.iss_secret));
  w.tcp = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = NULL, .begin = tcp_begin, .commit = tcp_commit};
  if (!w.tcp || tcp_init(w.tcp, &arena, &c, &out) != 0) abort();
  struct cpb_lane_ipout lo = {.begin = lane_begin, .commit = lane_commit, .abort = lane_abort};
  struct cpb_lane_apps apps = {.export_flow = app_export, .accepts = app_accepts, .adopt = app_adopt, .forget = app_forget};
  w.lane = cpb_lane_new(w.tcp, &lo, &apps);
  if (!w.lane) abort();
  struct cpb_lane_steering st = {.steer = bal_steer, .owner = bal_owner, .claim = bal_claim, .unclaim = bal_unclaim, .self = SELF_BACKEND};
  cpb_lane_set_steering(w.lane, &st);
  struct cpb_lane_dir tx, rx;
  dir_of(1, true, &tx);
  dir_of(1, false, &rx);
  if (cpb_lane_set_key(w.lane, PEER_IP, 1, &tx, &rx, PEER_BACKEND) != 0) abort();
  peer_key_reset(1);
  w.now = 100 * SEC;
}

static void finish_world(void) {
  w.fail_claim = w.fail_begin = w.fail_adopt = false;
  /* Every budget (at most 256 ms), re-send and grace runs out. */
  for (int i = 0; i < 4; i++) {
    w.now += SEC;
    poll_all();
  }
  for (int i = 0; i < MAXPEND; i++) check(w.pending[i] == 0, "every migration got its outcome");
  check(!cpb_lane_waiting(w.lane), "no migration waits");
  for (int i = 0; i < MAXFLOWS; i++) {
    if (!w.flows[i].used) continue;
    struct tcp_flow_info fi;
    check(tcp_flow_info(w.tcp, w.flows[i].id, &fi) == 0, "an app's flow exists in TCP");
    check(!fi.frozen, "no flow left frozen");
    if (tcp_abort(w.tcp, w.flows[i].id, w.now) != 0) tcp_close(w.tcp, w.flows[i].id, w.now);
  }
  if (getenv("FUZZ_LANE_STATS")) { /* what an input reached, for judging seeds */
    struct cpb_lane_stats s;
    cpb_lane_get_stats(w.lane, &s);
    fprintf(stderr,
            "lane: offers sent %llu resent %llu in %llu adopted_in %llu rejected_in %llu repeated %llu late %llu | "
            "adopted_out %llu rejected_out %llu gave_back %llu unanswered_released %llu | fwd out %llu in %llu dropped %llu | "
            "bad %llu auth %llu replays %llu unknown_keys %llu send_failures %llu steer_errors %llu | parts out %llu in %llu "
            "dup %llu reassembled %llu evicted %llu\n",
            (unsigned long long)s.offers_sent, (unsigned long long)s.offers_resent, (unsigned long long)s.offers_in,
            (unsigned long long)s.adopted_in, (unsigned long long)s.rejected_in, (unsigned long long)s.repeated_offers,
            (unsigned long long)s.late_offers, (unsigned long long)s.adopted_out, (unsigned long long)s.rejected_out,
            (unsigned long long)s.gave_back, (unsigned long long)s.unanswered_released, (unsigned long long)s.forwarded_out,
            (unsigned long long)s.forwarded_in, (unsigned long long)s.forward_dropped, (unsigned long long)s.bad_frames,
            (unsigned long long)s.auth_failures, (unsigned long long)s.replays, (unsigned long long)s.unknown_keys,
            (unsigned long long)s.send_failures, (unsigned long long)s.steer_errors, (unsigned long long)s.parts_out,
            (unsigned long long)s.parts_in, (unsigned long long)s.parts_dup, (unsigned long long)s.reassembled,
            (unsigned long long)s.reasm_evicted);
  }
  cpb_lane_free(w.lane);
  tcp_fini(w.tcp);
  free(w.tcp);
  for (int i = 1; i <= NKEYIDS; i++) lane_key_clear(&peer_keys[i]);
  check(!arena.hdr->slots_used && !arena.hdr->chunks_used, "arena empty after tcp_fini");
}

/* ---- the base snapshot: a real handshake between a client and the server, then freeze + snapshot ---- */

struct qseg {
  cpb_ip4_t src, dst;
  size_t len;
  uint8_t b[1600];
};
static struct qseg q[32];
static int qn;
static struct qseg *qcur;
static uint8_t *q_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  (void)ctx;
  if (qn == 32) return NULL;
  qcur = &q[qn];
  qcur->src = src, qcur->dst = dst;
  *cap = 1480;
  return qcur->b;
}
static void q_commit(void *ctx, size_t len) { /* the network layer's part: the checksum */
  (void)ctx;
  qcur->len = len;
  qcur->b[16] = qcur->b[17] = 0;
  cpb_put_be16(qcur->b + 16, csum_fold(csum_add(csum_pseudo4(qcur->src, qcur->dst, 6, (uint16_t)len), qcur->b, len)));
  qn++;
}

static void shuttle(struct cpb_tcp *cl, struct cpb_tcp *sv, cpb_time_t now) {
  for (int round = 0; round < 16 && qn; round++) {
    static struct qseg batch[32];
    int n = qn;
    memcpy(batch, q, sizeof(q[0]) * (size_t)n);
    qn = 0;
    for (int i = 0; i < n; i++)
      tcp_input(batch[i].dst == CLIENT_IP ? cl : sv, batch[i].src, batch[i].dst, batch[i].b, batch[i].len, now);
  }
}

static void setup_base(void) {
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.max_flows = 4;
  struct cpb_ipout out = {.ctx = NULL, .begin = q_begin, .commit = q_commit};
  struct cpb_tcp *cl = malloc(tcp_sizeof()), *sv = malloc(tcp_sizeof());
  c.local_ip = CLIENT_IP;
  if (!cl || tcp_init(cl, &arena, &c, &out) != 0) abort();
  c.local_ip = LANE_IP;
  if (!sv || tcp_init(sv, &arena, &c, &out) != 0) abort();
  cpb_time_t now = 10 * SEC;
  uint64_t lid, cid, sid;
  if (tcp_listen(sv, 80, 8, &lid) != 0 || tcp_connect(cl, LANE_IP, 80, 40000, now, &cid) != 0) abort();
  shuttle(cl, sv, now);
  if (tcp_accept(sv, lid, &sid) != 0) abort();
  static const char hello[] = "GET / HTTP/1.1\r\nHost: lane\r\n\r\n";
  if (tcp_send(cl, cid, hello, sizeof(hello) - 1, now + 1000) <= 0) abort(); /* unread at the server */
  shuttle(cl, sv, now + 1000);
  if (tcp_send(sv, sid, "HTTP/1.1 200 OK\r\n", 17, now + 2000) <= 0) abort(); /* lost: unacked */
  qn = 0;
  if (tcp_freeze(sv, sid, now + 3000) != 0) abort();
  long n = tcp_snapshot(sv, sid, base_snap, sizeof(base_snap), now + 3000);
  if (n <= 0) abort();
  base_len = (size_t)n;
  tcp_release(sv, sid, now + 3000);
  tcp_fini(cl);
  tcp_fini(sv);
  free(cl);
  free(sv);
  qn = 0;
  if (arena.hdr->slots_used || arena.hdr->chunks_used) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!arena.base) {
    struct cpb_arena_config ac = {.slots = 16, .chunks = 2048};
    if (cpb_arena_create(&arena, &ac) != 0) abort();
    setup_base();
  }
  setup_world();
  struct rd r = {data, size};
  for (int ops = 0; r.n && ops < 256; ops++) {
    switch (u8(&r) % 10) {
    case 0: op_raw(&r); break;
    case 1: op_sealed(&r); break;
    case 2: op_time(&r); break;
    case 3: op_migrate(&r); break;
    case 4:
      if (w.last_len) feed(w.last_src, w.last, w.last_len);
      break;
    case 5: op_answer(&r); break;
    case 6: op_key(&r); break;
    case 7: op_balancer(&r); break;
    case 8: op_client(&r); break;
    default: op_parts(&r); break;
    }
  }
  finish_world();
  return 0;
}
