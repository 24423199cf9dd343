/* Snapshot wire format (see snapshot.h): a bounded writer and a checked reader walk the same field list
 * in the same order, so the layout is written down once per direction and a round-trip test holds them
 * together. The reader never reads past the state section it has checked the length of, and parsing is
 * split into framing (-EBADMSG: is this a v1 CTCP record of consistent length?) and meaning (-EINVAL:
 * would these values make a TCB the engine's invariants hold for?). The meaning checks are exactly
 * the invariants the engine relies on to index its queues: sequence variables ordered inside the send
 * data, out-of-order ranges inside the receive window, SACK blocks inside the flight, shift counts and
 * windows representable, times bounded so rebasing cannot overflow, doubles finite. */
#include "snapshot.h"

#include "tcp.h"

/* ---- little-endian writer (the caller guarantees room) ---- */
struct wr {
  uint8_t *p;
  size_t off;
};

static void w8(struct wr *w, uint8_t v) { w->p[w->off++] = v; }
static void w16(struct wr *w, uint16_t v) {
  w8(w, (uint8_t)v);
  w8(w, (uint8_t)(v >> 8));
}
static void w32(struct wr *w, uint32_t v) {
  w16(w, (uint16_t)v);
  w16(w, (uint16_t)(v >> 16));
}
static void w64(struct wr *w, uint64_t v) {
  w32(w, (uint32_t)v);
  w32(w, (uint32_t)(v >> 32));
}
static void wdbl(struct wr *w, double d) {
  uint64_t v;
  memcpy(&v, &d, sizeof(v));
  w64(w, v);
}
static void wzero(struct wr *w, size_t n) {
  memset(w->p + w->off, 0, n);
  w->off += n;
}

/* ---- checked little-endian reader: past the end it yields zeros and remembers it ---- */
struct rd {
  const uint8_t *p;
  size_t len, off;
  bool overrun, nonzero; /* nonzero: a reserved byte was not zero */
};

static uint8_t r8(struct rd *r) {
  if (r->off >= r->len) {
    r->overrun = true;
    return 0;
  }
  return r->p[r->off++];
}
static uint16_t r16(struct rd *r) {
  uint16_t lo = r8(r);
  return (uint16_t)(lo | (uint16_t)r8(r) << 8);
}
static uint32_t r32(struct rd *r) {
  uint32_t lo = r16(r);
  return lo | (uint32_t)r16(r) << 16;
}
static uint64_t r64(struct rd *r) {
  uint64_t lo = r32(r);
  return lo | (uint64_t)r32(r) << 32;
}
static double rdbl(struct rd *r) {
  uint64_t v = r64(r);
  double d;
  memcpy(&d, &v, sizeof(d));
  return d;
}
static void rzero(struct rd *r, size_t n) {
  while (n--)
    if (r8(r)) r->nonzero = true;
}

/* ---- the field list, twice ---- */
static void w_ranges(struct wr *w, const struct seqranges *s) {
  w8(w, s->n);
  wzero(w, 3);
  w32(w, s->clock);
  for (int i = 0; i < SEQR_MAX; i++) {
    bool used = i < s->n;
    w32(w, used ? s->r[i].left : 0);
    w32(w, used ? s->r[i].right : 0);
    w32(w, used ? s->r[i].stamp : 0);
  }
}

static void r_ranges(struct rd *r, struct seqranges *s) {
  memset(s, 0, sizeof(*s));
  uint8_t n = r8(r);
  rzero(r, 3);
  s->clock = r32(r);
  for (int i = 0; i < SEQR_MAX; i++) {
    uint32_t l = r32(r), rt = r32(r), st = r32(r);
    if (i < n) {
      s->r[i].left = l;
      s->r[i].right = rt;
      s->r[i].stamp = st;
    } else if (l | rt | st) {
      r->nonzero = true; /* unused entries are zero: one encoding per state */
    }
  }
  s->n = n; /* checked against SEQR_MAX by snap_check */
}

static void w_header(struct wr *w, uint32_t total) {
  memcpy(w->p, TCP_SNAP_MAGIC, 4);
  w->off += 4;
  w16(w, TCP_SNAP_VERSION);
  w16(w, 0);
  w32(w, total);
  w32(w, TCP_SNAP_STATE_LEN);
}

size_t tcp_snap_len(const struct tcp_snap *s) {
  return (size_t)TCP_SNAP_FIXED_LEN + s->snd_len + s->rcv_len + s->ooo_len;
}

void tcp_snap_encode_fixed(const struct tcp_snap *s, uint8_t *buf) {
  struct wr w = {.p = buf};
  w_header(&w, (uint32_t)tcp_snap_len(s));
  w32(&w, s->lip);
  w32(&w, s->rip);
  w16(&w, s->lport);
  w16(&w, s->rport);
  w8(&w, s->state);
  w8(&w, s->snd_wscale);
  w8(&w, s->rcv_wscale);
  w8(&w, s->backoff);
  w8(&w, s->dupacks);
  w8(&w, s->retries);
  w8(&w, s->probes);
  w8(&w, s->limited_tx);
  w32(&w, s->flags);
  w16(&w, s->peer_mss);
  w16(&w, s->smss);
  w16(&w, s->rcv_mss);
  wzero(&w, 2);
  const uint32_t snd[] = {s->iss,    s->snd_una, s->snd_nxt,     s->snd_max, s->snd_wnd,
                          s->snd_wl1, s->snd_wl2, s->max_snd_wnd, s->snd_sml, s->sndq_seq};
  for (size_t i = 0; i < CPB_ARRAY_LEN(snd); i++) w32(&w, snd[i]);
  const uint32_t rcv[] = {s->irs, s->rcv_nxt, s->rcv_adv, s->last_ack_sent, s->ooo_fin_seq};
  for (size_t i = 0; i < CPB_ARRAY_LEN(rcv); i++) w32(&w, rcv[i]);
  w32(&w, s->ts_val);
  w32(&w, s->ts_recent);
  w64(&w, s->ts_recent_age);
  w32(&w, s->srtt);
  w32(&w, s->rttvar);
  w32(&w, s->rto);
  w32(&w, s->rtt_seq);
  w64(&w, s->rtt_age);
  const uint32_t cc[] = {s->cwnd, s->ssthresh, s->recover, s->bytes_acked, s->high_rxt, s->rescue_rxt};
  for (size_t i = 0; i < CPB_ARRAY_LEN(cc); i++) w32(&w, cc[i]);
  w_ranges(&w, &s->sacked);
  w_ranges(&w, &s->ooo);
  wdbl(&w, s->w_max);
  wdbl(&w, s->w_last_max);
  wdbl(&w, s->k);
  wdbl(&w, s->w_est);
  wdbl(&w, s->acc);
  w64(&w, s->cubic_age);
  w64(&w, s->last_rcv_age);
  w32(&w, s->keepidle_us);
  w8(&w, s->timer_mask);
  wzero(&w, 3);
  for (int k = 0; k < TCP_SNAP_TIMERS; k++) w64(&w, s->timer_left[k]);
  w64(&w, s->bytes_in);
  w64(&w, s->bytes_out);
  w64(&w, s->retransmits);
  w32(&w, s->snd_len);
  w32(&w, s->rcv_len);
  w32(&w, s->ooo_len);
}

static void r_state(struct rd *r, struct tcp_snap *s) {
  s->lip = r32(r);
  s->rip = r32(r);
  s->lport = r16(r);
  s->rport = r16(r);
  s->state = r8(r);
  s->snd_wscale = r8(r);
  s->rcv_wscale = r8(r);
  s->backoff = r8(r);
  s->dupacks = r8(r);
  s->retries = r8(r);
  s->probes = r8(r);
  s->limited_tx = r8(r);
  s->flags = r32(r);
  s->peer_mss = r16(r);
  s->smss = r16(r);
  s->rcv_mss = r16(r);
  rzero(r, 2);
  uint32_t *snd[] = {&s->iss,    &s->snd_una, &s->snd_nxt,     &s->snd_max, &s->snd_wnd,
                     &s->snd_wl1, &s->snd_wl2, &s->max_snd_wnd, &s->snd_sml, &s->sndq_seq};
  for (size_t i = 0; i < CPB_ARRAY_LEN(snd); i++) *snd[i] = r32(r);
  uint32_t *rcv[] = {&s->irs, &s->rcv_nxt, &s->rcv_adv, &s->last_ack_sent, &s->ooo_fin_seq};
  for (size_t i = 0; i < CPB_ARRAY_LEN(rcv); i++) *rcv[i] = r32(r);
  s->ts_val = r32(r);
  s->ts_recent = r32(r);
  s->ts_recent_age = r64(r);
  s->srtt = r32(r);
  s->rttvar = r32(r);
  s->rto = r32(r);
  s->rtt_seq = r32(r);
  s->rtt_age = r64(r);
  uint32_t *cc[] = {&s->cwnd, &s->ssthresh, &s->recover, &s->bytes_acked, &s->high_rxt, &s->rescue_rxt};
  for (size_t i = 0; i < CPB_ARRAY_LEN(cc); i++) *cc[i] = r32(r);
  r_ranges(r, &s->sacked);
  r_ranges(r, &s->ooo);
  s->w_max = rdbl(r);
  s->w_last_max = rdbl(r);
  s->k = rdbl(r);
  s->w_est = rdbl(r);
  s->acc = rdbl(r);
  s->cubic_age = r64(r);
  s->last_rcv_age = r64(r);
  s->keepidle_us = r32(r);
  s->timer_mask = r8(r);
  rzero(r, 3);
  for (int k = 0; k < TCP_SNAP_TIMERS; k++) s->timer_left[k] = r64(r);
  s->bytes_in = r64(r);
  s->bytes_out = r64(r);
  s->retransmits = r64(r);
  s->snd_len = r32(r);
  s->rcv_len = r32(r);
  s->ooo_len = r32(r);
}

long tcp_snap_encode(const struct tcp_snap *s, uint8_t *buf, size_t cap) {
  size_t n = tcp_snap_len(s);
  if (n > cap || n > UINT32_MAX) return -ENOSPC;
  tcp_snap_encode_fixed(s, buf);
  uint8_t *p = buf + TCP_SNAP_FIXED_LEN;
  if (s->snd_len) memcpy(p, s->snd_data, s->snd_len);
  p += s->snd_len;
  if (s->rcv_len) memcpy(p, s->rcv_data, s->rcv_len);
  p += s->rcv_len;
  if (s->ooo_len) memcpy(p, s->ooo_data, s->ooo_len);
  return (long)n;
}

/* ---- meaning ---- */

/* Sorted, disjoint, non-touching (the assembler merges touching ranges), each inside [lo, hi] with
 * left > lo when strict_lo. Returns the bytes covered, or -1. */
static int64_t ranges_ok(const struct seqranges *s, uint32_t lo, uint32_t hi, bool strict_lo) {
  if (s->n > SEQR_MAX) return -1;
  uint64_t bytes = 0;
  uint32_t prev_right = lo;
  for (int i = 0; i < s->n; i++) {
    uint32_t l = s->r[i].left, r = s->r[i].right;
    if (!seq_lt(l, r) || seq_gt(r, hi) || seq_lt(l, lo)) return -1;
    if (i == 0 ? (strict_lo && l == lo) : !seq_gt(l, prev_right)) return -1;
    if ((uint32_t)(r - lo) > (uint32_t)(hi - lo)) return -1; /* also inside when hi - lo is huge */
    bytes += r - l;
    prev_right = r;
  }
  return (int64_t)bytes;
}

static bool dbl_ok(double v) { return v >= 0.0 && v <= 1e12; } /* false for NaN */

static bool state_movable(uint8_t st) {
  return st == TCP_ESTABLISHED || st == TCP_FIN_WAIT_1 || st == TCP_FIN_WAIT_2 || st == TCP_CLOSE_WAIT ||
         st == TCP_CLOSING || st == TCP_LAST_ACK;
}

static int snap_check(const struct tcp_snap *s) {
  if (!s->lip || !s->rip || !s->lport || !s->rport) return -EINVAL;
  if (!state_movable(s->state)) return -EINVAL;
  uint32_t f = s->flags;
  if (f & ~(uint32_t)TCP_SNAP_F_ALL) return -EINVAL;
  uint8_t st = s->state;
  bool fin_q = st == TCP_FIN_WAIT_1 || st == TCP_FIN_WAIT_2 || st == TCP_CLOSING || st == TCP_LAST_ACK;
  bool fin_r = st == TCP_CLOSE_WAIT || st == TCP_CLOSING || st == TCP_LAST_ACK;
  if (fin_q != !!(f & TCP_SNAP_F_FIN_QUEUED) || fin_r != !!(f & TCP_SNAP_F_FIN_RCVD)) return -EINVAL;
  if ((f & TCP_SNAP_F_OOO_FIN) && fin_r) return -EINVAL;
  if ((f & TCP_SNAP_F_SACK_RECOVERY) && !((f & TCP_SNAP_F_RECOVERY) && (f & TCP_SNAP_F_SACK))) return -EINVAL;
  if ((f & TCP_SNAP_F_FIRST_PARTIAL) && !(f & TCP_SNAP_F_RECOVERY)) return -EINVAL;

  /* options */
  if (s->snd_wscale > 14 || s->rcv_wscale > 14) return -EINVAL;
  if (!(f & TCP_SNAP_F_WSCALE) && (s->snd_wscale || s->rcv_wscale)) return -EINVAL;
  if (s->peer_mss < 64 || s->smss < 32 || s->smss > s->peer_mss || s->rcv_mss == 0) return -EINVAL;
  if (s->backoff > 30 || s->limited_tx > 2) return -EINVAL;

  /* send sequence space: SND.UNA <= SND.NXT <= SND.MAX <= end of data (+ FIN), inside the send data */
  if (s->snd_len > TCP_SNAP_MAX_DATA || s->rcv_len > TCP_SNAP_MAX_DATA || s->ooo_len > TCP_SNAP_MAX_DATA)
    return -EINVAL;
  uint32_t fin_end = s->sndq_seq + s->snd_len + (fin_q ? 1u : 0u);
  int32_t d1 = (int32_t)(s->snd_nxt - s->snd_una), d2 = (int32_t)(s->snd_max - s->snd_nxt);
  int32_t d3 = (int32_t)(fin_end - s->snd_max);
  if (d1 < 0 || d2 < 0 || d3 < 0 || (uint64_t)d1 + (uint64_t)d2 + (uint64_t)d3 > TCP_SNAP_MAX_DATA + 1ULL)
    return -EINVAL;
  bool fin_acked = fin_q && s->snd_len == 0 && s->sndq_seq + 1 == s->snd_una;
  if (s->sndq_seq != s->snd_una && !fin_acked) return -EINVAL;
  if (st == TCP_FIN_WAIT_2 && s->snd_una != fin_end) return -EINVAL;
  if (s->snd_wnd > s->max_snd_wnd || s->max_snd_wnd > TCP_SNAP_MAX_WND) return -EINVAL;
  if (!(f & TCP_SNAP_F_SACK) && s->sacked.n) return -EINVAL;
  if (ranges_ok(&s->sacked, s->snd_una, s->snd_max, false) < 0) return -EINVAL;

  /* receive sequence space: the right edge we advertised bounds everything out of order */
  int32_t wnd = (int32_t)(s->rcv_adv - s->rcv_nxt);
  if (wnd < (fin_r ? -1 : 0) || (int64_t)wnd > (int64_t)(65535u << s->rcv_wscale)) return -EINVAL;
  int64_t ooo = ranges_ok(&s->ooo, s->rcv_nxt, s->rcv_adv, true);
  if (ooo < 0 || (uint64_t)ooo != s->ooo_len) return -EINVAL;
  if ((f & TCP_SNAP_F_OOO_FIN) && !(seq_gt(s->ooo_fin_seq, s->rcv_nxt) && seq_le(s->ooo_fin_seq, s->rcv_adv)))
    return -EINVAL;

  /* timestamps, RTT, congestion control */
  if (!(f & TCP_SNAP_F_TS) && (s->ts_val || s->ts_recent || s->ts_recent_age)) return -EINVAL;
  if (s->ts_recent_age > TCP_SNAP_MAX_AGE) return -EINVAL;
  if (s->rto == 0 || s->rtt_age > TCP_SNAP_MAX_AGE) return -EINVAL;
  if (!(f & TCP_SNAP_F_RTT_TIMING) && s->rtt_age) return -EINVAL;
  if (s->cwnd == 0 || s->cwnd > TCP_SNAP_MAX_CWND || s->ssthresh == 0 || s->ssthresh > TCP_SNAP_MAX_CWND ||
      s->bytes_acked > TCP_SNAP_MAX_CWND)
    return -EINVAL;
  if (!dbl_ok(s->w_max) || !dbl_ok(s->w_last_max) || !dbl_ok(s->k) || !dbl_ok(s->w_est) || !dbl_ok(s->acc))
    return -EINVAL;
  if (s->cubic_age > TCP_SNAP_MAX_AGE || (!(f & TCP_SNAP_F_CUBIC_EPOCH) && s->cubic_age)) return -EINVAL;

  /* keepalive and timers */
  if (s->last_rcv_age > TCP_SNAP_MAX_AGE || s->keepidle_us == 0) return -EINVAL;
  if (s->timer_mask >> TCP_SNAP_TIMERS) return -EINVAL;
  for (int k = 0; k < TCP_SNAP_TIMERS; k++) {
    if (s->timer_left[k] > TCP_SNAP_MAX_AGE) return -EINVAL;
    if (!(s->timer_mask & (1u << k)) && s->timer_left[k]) return -EINVAL;
  }
  return 0;
}

int tcp_snap_parse(const uint8_t *buf, size_t len, struct tcp_snap *out) {
  memset(out, 0, sizeof(*out));
  if (!buf || len < TCP_SNAP_HDR_LEN) return -EBADMSG;
  struct rd r = {.p = buf, .len = len};
  if (memcmp(buf, TCP_SNAP_MAGIC, 4) != 0) return -EBADMSG;
  r.off = 4;
  uint16_t version = r16(&r), hflags = r16(&r);
  uint32_t total = r32(&r), state_len = r32(&r);
  if (version != TCP_SNAP_VERSION || hflags != 0 || state_len != TCP_SNAP_STATE_LEN) return -EBADMSG;
  if (total != len || len < TCP_SNAP_FIXED_LEN) return -EBADMSG;
  r.len = TCP_SNAP_FIXED_LEN; /* the state section only */
  r_state(&r, out);
  if (r.overrun || r.off != TCP_SNAP_FIXED_LEN) return -EBADMSG;
  if ((uint64_t)TCP_SNAP_FIXED_LEN + out->snd_len + out->rcv_len + out->ooo_len != len) return -EBADMSG;
  if (r.nonzero) return -EINVAL;
  int rc = snap_check(out);
  if (rc) return rc;
  out->snd_data = buf + TCP_SNAP_FIXED_LEN;
  out->rcv_data = out->snd_data + out->snd_len;
  out->ooo_data = out->rcv_data + out->rcv_len;
  return 0;
}
