/* libFuzzer target for TCP input against a live TCB in every state. The first three input bytes choose
 * the state and the options; the harness then drives a real handshake (and the closing steps) with a
 * scripted peer to reach it: SYN_SENT, SYN_RECEIVED, ESTABLISHED (opened actively, passively, or through
 * a SYN cookie), FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT, frozen, or with data in
 * flight both ways and out-of-order data queued. The rest of the input is a program of operations:
 *   segments from the peer (flags, sequence and acknowledgment numbers relative to RCV.NXT / SND.UNA so
 *   mutations stay near the window, or absolute; raw option bytes; a timestamp option that echoes ours;
 *   payload), application calls (recv, send, shutdown, close, abort, nodelay/keepalive), time passing,
 *   and migration (freeze, unfreeze, snapshot -> release -> adopt back into the same instance).
 * Checks: no crash or sanitizer report; the flow's send and receive queues stay within their caps and
 * its sequence variables ordered; and after the timers have run and tcp_fini, no slot or chunk is left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "tcp/snapshot.h"
#include "tcp/tcp.h"
#include "tcp/tcp_debug.h"
#include "wire/tcp.h"

#define US 0x0a000001u
#define PEER 0x0a000002u
#define LPORT 80
#define PPORT 40000
#define OUR_ISS 4294960000u
#define PEER_ISN 4294950000u
#define MS CPB_US_PER_MS
#define BUF (64u * 1024)

struct h {
  const uint8_t *p;
  size_t n;
  struct cpb_tcp *t;
  uint64_t lid, fid;
  bool have_fid;
  cpb_time_t now;
  uint32_t peer_ts, our_ts;
  bool ts, sack, ws;
  uint8_t last[1600];
  size_t last_len;
  uint32_t last_seq;
  bool last_syn;
};

static struct cpb_arena arena;
static struct h H;
static uint8_t frame[1600];
static uint8_t io[BUF];
static uint8_t snap[1 << 20];

static uint8_t take8(struct h *h) {
  if (!h->n) return 0;
  h->n--;
  return *h->p++;
}
static uint16_t take16(struct h *h) { return (uint16_t)(take8(h) | take8(h) << 8); }
static uint32_t take32(struct h *h) { return (uint32_t)take16(h) | (uint32_t)take16(h) << 16; }

static uint8_t *out_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  (void)ctx, (void)src, (void)dst;
  *cap = 1480;
  return frame;
}
static void out_commit(void *ctx, size_t len) {
  struct h *h = ctx;
  if (!len) return;
  struct tcp_repr r;
  tcp_fill_checksum(frame, len, US, PEER);
  if (tcp_parse(frame, len, US, PEER, true, &r) != 0) abort(); /* we emitted what we would refuse */
  if (r.opts.has_ts) h->our_ts = r.opts.ts_val;
  memcpy(h->last, frame, len);
  h->last_len = len;
  h->last_seq = r.seq;
  h->last_syn = r.flags & TCP_SYN;
}

/* Sends a peer segment with raw option bytes (padded with NOPs... EOL) and a pattern payload. */
static void seg_raw(struct h *h, uint16_t sport, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
                    const uint8_t *opt, size_t optlen, size_t plen) {
  uint8_t b[1600];
  if (optlen > 40) optlen = 40;
  size_t olen = (optlen + 3) & ~(size_t)3;
  size_t hl = 20 + olen;
  if (plen > sizeof(b) - hl) plen = sizeof(b) - hl;
  memset(b, 0, hl);
  cpb_put_be16(b, sport);
  cpb_put_be16(b + 2, LPORT);
  cpb_put_be32(b + 4, seq);
  cpb_put_be32(b + 8, ack);
  b[12] = (uint8_t)((hl / 4) << 4);
  b[13] = flags;
  cpb_put_be16(b + 14, win);
  if (optlen) memcpy(b + 20, opt, optlen);
  for (size_t i = 0; i < plen; i++) b[hl + i] = (uint8_t)(seq + i);
  tcp_fill_checksum(b, hl + plen, PEER, US);
  tcp_input(h->t, PEER, US, b, hl + plen, h->now);
}

/* Options the scripted peer uses: MSS/WS/SACK-permitted on SYNs, the timestamp on everything. */
static size_t std_opts(struct h *h, bool syn, uint8_t *o) {
  size_t n = 0;
  if (syn) {
    o[n++] = 2, o[n++] = 4, o[n++] = 0x05, o[n++] = 0xb4; /* MSS 1460 */
    if (h->ws) o[n++] = 1, o[n++] = 3, o[n++] = 3, o[n++] = 6;
    if (h->sack) o[n++] = 1, o[n++] = 1, o[n++] = 4, o[n++] = 2;
  }
  if (h->ts) {
    o[n++] = 1, o[n++] = 1, o[n++] = 8, o[n++] = 10;
    cpb_put_be32(o + n, ++h->peer_ts);
    cpb_put_be32(o + n + 4, syn && !h->have_fid ? 0 : h->our_ts);
    n += 8;
  }
  return n;
}

static void seg(struct h *h, uint32_t seq, uint32_t ack, uint8_t flags, size_t plen) {
  uint8_t o[40];
  size_t n = std_opts(h, flags & TCP_SYN, o);
  seg_raw(h, PPORT, seq, ack, flags, 65535, o, n, plen);
}

static void poll(struct h *h, cpb_time_t dt) {
  h->now += dt;
  tcp_poll(h->t, h->now);
  struct tcp_event ev;
  while (tcp_next_event(h->t, &ev)) {
  }
}

static bool info(struct h *h, struct tcp_flow_info *fi) { return h->have_fid && tcp_flow_info(h->t, h->fid, fi) == 0; }

static void accept_it(struct h *h) {
  if (!h->have_fid && tcp_accept(h->t, h->lid, &h->fid) == 0) h->have_fid = true;
}

/* Reaches the state the first bytes ask for. */
static void setup(struct h *h, uint8_t state, uint8_t opt) {
  h->ts = opt & 1, h->sack = opt & 2, h->ws = opt & 4;
  bool active = opt & 8;
  uint32_t rn = PEER_ISN + 1; /* the peer's next sequence number */
  if (state == 11) { /* ESTABLISHED through a SYN cookie: fill a backlog of one first */
    (void)tcp_listen(h->t, LPORT, 1, &h->lid);
    seg_raw(h, PPORT + 1, 1, 0, TCP_SYN, 1000, NULL, 0, 0);
    seg(h, PEER_ISN, 0, TCP_SYN, 0);
    uint32_t cookie = h->last_seq;
    poll(h, 10 * MS);
    seg(h, rn, cookie + 1, TCP_ACK, 0);
    accept_it(h);
    return;
  }
  if (active || state == 0) {
    if (tcp_connect(h->t, PEER, PPORT, LPORT, h->now, &h->fid) != 0) return;
    h->have_fid = true;
    poll(h, MS);
    if (state == 0) return;
    seg(h, PEER_ISN, OUR_ISS + 1, TCP_SYN | TCP_ACK, 0);
  } else {
    (void)tcp_listen(h->t, LPORT, 0, &h->lid);
    seg(h, PEER_ISN, 0, TCP_SYN, 0);
    if (state == 1) return;
    poll(h, 10 * MS);
    seg(h, rn, OUR_ISS + 1, TCP_ACK, 0);
    accept_it(h);
  }
  poll(h, MS);
  uint32_t fin = OUR_ISS + 1; /* our FIN's sequence number when nothing was sent */
  switch (state) {
    case 3: (void)tcp_shutdown(h->t, h->fid, h->now); break;
    case 4: (void)tcp_shutdown(h->t, h->fid, h->now), poll(h, MS), seg(h, rn, fin + 1, TCP_ACK, 0); break;
    case 5: seg(h, rn, OUR_ISS + 1, TCP_FIN | TCP_ACK, 0); break;
    case 6: (void)tcp_shutdown(h->t, h->fid, h->now), poll(h, MS), seg(h, rn, fin, TCP_FIN | TCP_ACK, 0); break;
    case 7: seg(h, rn, OUR_ISS + 1, TCP_FIN | TCP_ACK, 0), poll(h, MS), (void)tcp_shutdown(h->t, h->fid, h->now); break;
    case 8:
      (void)tcp_shutdown(h->t, h->fid, h->now), poll(h, MS);
      seg(h, rn, fin + 1, TCP_FIN | TCP_ACK, 0);
      break;
    case 9: (void)tcp_freeze(h->t, h->fid, h->now); break;
    case 10:
      memset(io, 'x', 6000);
      (void)tcp_send(h->t, h->fid, io, 6000, h->now);
      poll(h, MS);
      seg(h, rn + 1000, OUR_ISS + 1, TCP_ACK, 500); /* out of order: a hole at rn */
      seg(h, rn, OUR_ISS + 1, TCP_ACK, 300);
      break;
    default: break;
  }
  poll(h, MS);
}

static void invariants(struct h *h) {
  struct tcp_flow_info fi;
  if (!info(h, &fi)) return;
  if (fi.readable_bytes > BUF) abort();                  /* receive buffer cap */
  if (fi.unacked_bytes + fi.unsent_bytes > BUF) abort(); /* send buffer cap */
  if ((int32_t)(fi.snd_nxt - fi.snd_una) < 0 && fi.state != TCP_SYN_SENT) abort();
}

static void migrate_back(struct h *h) {
  struct tcp_flow_info fi;
  if (!info(h, &fi)) return;
  if (!fi.frozen && tcp_freeze(h->t, h->fid, h->now) != 0) return;
  long n = tcp_snapshot(h->t, h->fid, snap, sizeof(snap), h->now);
  if (n < 0) return;
  struct tcp_snap s;
  int prc = tcp_snap_parse(snap, (size_t)n, &s);
  if (prc != 0) {
    fprintf(stderr, "snapshot of a %s flow (snd_una %u snd_nxt %u rcv_nxt %u, %u unacked, %u unsent, %u readable) "
            "does not parse: %d\n", tcp_state_name(fi.state), fi.snd_una, fi.snd_nxt, fi.rcv_nxt, fi.unacked_bytes,
            fi.unsent_bytes, fi.readable_bytes, prc);
    abort();
  }
  if (tcp_release(h->t, h->fid, h->now) != 0) abort();
  h->have_fid = false;
  uint64_t id;
  int rc = tcp_adopt(h->t, snap, (size_t)n, h->now + 5 * MS, &id);
  if (rc != 0) abort(); /* our own snapshot of a flow we just released must be adoptable */
  h->fid = id;
  h->have_fid = true;
}

static void op(struct h *h) {
  uint8_t o = take8(h);
  struct tcp_flow_info fi;
  bool have = info(h, &fi);
  uint32_t rcv = have ? fi.rcv_nxt : PEER_ISN + 1, una = have ? fi.snd_una : OUR_ISS + 1;
  switch (o & 7) {
    case 0: case 1: case 2: case 3: {
      uint8_t flags = take8(h);
      uint8_t mode = take8(h);
      uint32_t seq = (mode & 1) ? take32(h) : rcv + (uint32_t)(int32_t)(int16_t)take16(h);
      uint32_t ack = (mode & 2) ? take32(h) : una + (uint32_t)(int32_t)(int16_t)take16(h);
      uint16_t win = take16(h);
      uint8_t opts[40];
      size_t on = 0;
      if (mode & 4) {
        on = take8(h) % 41;
        for (size_t i = 0; i < on; i++) opts[i] = take8(h);
      } else {
        on = std_opts(h, flags & TCP_SYN, opts);
        if ((mode & 8) && on >= 12) cpb_put_be32(opts + on - 8, take32(h)); /* a chosen TSval */
      }
      size_t plen = (size_t)take8(h) * ((mode & 16) ? 8 : 1);
      seg_raw(h, (mode & 32) ? (uint16_t)(PPORT + 1) : PPORT, seq, ack, flags, win, opts, on, plen);
      break;
    }
    case 4:
      if (h->have_fid) (void)tcp_recv(h->t, h->fid, io, (size_t)take8(h) * 64 + 1, h->now);
      break;
    case 5:
      if (h->have_fid) {
        size_t n = (size_t)take8(h) * 64;
        memset(io, 'y', n);
        (void)tcp_send(h->t, h->fid, io, n, h->now);
      }
      break;
    case 6: {
      uint8_t d = take8(h);
      poll(h, (d & 0x80) ? (cpb_time_t)(d & 0x7f) * CPB_US_PER_S : (cpb_time_t)d * 10 * MS);
      break;
    }
    default: {
      uint8_t c = take8(h) % 8;
      if (!h->have_fid) {
        accept_it(h);
        break;
      }
      switch (c) {
        case 0: (void)tcp_shutdown(h->t, h->fid, h->now); break;
        case 1: (void)tcp_close(h->t, h->fid, h->now), h->have_fid = false; break;
        case 2: (void)tcp_abort(h->t, h->fid, h->now), h->have_fid = false; break;
        case 3: (void)tcp_freeze(h->t, h->fid, h->now); break;
        case 4: (void)tcp_unfreeze(h->t, h->fid, h->now); break;
        case 5: migrate_back(h); break;
        case 6: (void)tcp_setopt(h->t, h->fid, TCP_OPT_NODELAY, 1); break;
        default: (void)tcp_setopt(h->t, h->fid, TCP_OPT_KEEPALIVE, 1); break;
      }
    }
  }
  tcp_poll(h->t, h->now);
  invariants(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!arena.base) {
    struct cpb_arena_config ac = {.slots = 8, .chunks = 256};
    if (cpb_arena_create(&arena, &ac) != 0) abort();
  }
  if (size < 3) return 0;
  struct h *h = &H;
  memset(h, 0, sizeof(*h));
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = US;
  c.max_flows = 6;
  c.hold_segs = 8;
  c.rcvbuf = c.sndbuf = BUF;
  c.timestamps = c.sack = true;
  c.challenge_ack_limit = (data[2] & 1) ? 0 : 1000;
  c.cc = (data[2] & 2) ? TCP_CC_NEWRENO : TCP_CC_CUBIC;
  h->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = h, .begin = out_begin, .commit = out_commit};
  if (!h->t || tcp_init(h->t, &arena, &c, &out) != 0) abort();
  tcp_debug_fix_iss(h->t, OUR_ISS, 12345);
  h->now = 100 * CPB_US_PER_S;
  h->peer_ts = 5000;
  setup(h, data[0] % 12, data[1]);
  h->p = data + 3;
  h->n = size - 3;
  for (int i = 0; i < 512 && h->n > 0; i++) op(h);
  for (int i = 0; i < 6; i++) poll(h, 60 * CPB_US_PER_S);
  tcp_fini(h->t);
  free(h->t);
  if (arena.hdr->slots_used || arena.hdr->chunks_used) abort();
  return 0;
}
