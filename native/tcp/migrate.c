/* TCB <-> snapshot. tcp_snapshot copies a frozen TCB into the format's plain struct (times made relative
 * to the freeze instant, flags translated to the format's own bits) and streams the queued bytes
 * straight from the chunk chains into the caller's buffer: no allocation, one copy. tcp_adopt parses
 * (every field checked, snapshot.c), then checks what only this host can judge, in an order that
 * allocates nothing until everything is known to fit: MSS within ours, 4-tuple free, a slot, chunk
 * budgets and free chunks for the send data and for the receive data up to the last out-of-order
 * byte. Only then does it take a slot and write, so a rejected snapshot leaves no trace.
 *
 * Rebasing: a deadline that had d left at the freeze fires at now + d here; an age a becomes now - a;
 * the timestamp offset is chosen so that TS.Val here starts at the value it had at the freeze, which
 * keeps it monotonic for the peer's PAWS whatever this host's clock reads. The adopted flow raises
 * TCP_EV_ADOPTED and at once sends an ACK with its window (and whatever data the windows allow), so
 * the peer's view is refreshed and a stalled sender learns where the receiver stands. */
#include "snapshot.h"
#include "tcb.h"

static const struct {
  uint32_t tf, sf;
} flag_map[] = {
    {TF_FIN_QUEUED, TCP_SNAP_F_FIN_QUEUED},   {TF_FIN_RCVD, TCP_SNAP_F_FIN_RCVD},
    {TF_OOO_FIN, TCP_SNAP_F_OOO_FIN},         {TF_TS_OK, TCP_SNAP_F_TS},
    {TF_SACK_OK, TCP_SNAP_F_SACK},            {TF_WS_OK, TCP_SNAP_F_WSCALE},
    {TF_NODELAY, TCP_SNAP_F_NODELAY},         {TF_KEEPALIVE, TCP_SNAP_F_KEEPALIVE},
    {TF_IN_RECOVERY, TCP_SNAP_F_RECOVERY},    {TF_SACK_RECOVERY, TCP_SNAP_F_SACK_RECOVERY},
    {TF_FIRST_PARTIAL, TCP_SNAP_F_FIRST_PARTIAL}, {TF_RTT_TIMING, TCP_SNAP_F_RTT_TIMING},
    {TF_ACK_NOW, TCP_SNAP_F_ACK_NOW},         {TF_PASSIVE, TCP_SNAP_F_PASSIVE},
};

static const uint8_t timer_map[TCP_SNAP_TIMERS] = {
    [TCP_SNAP_T_RTO] = TT_RTO,           [TCP_SNAP_T_DELACK] = TT_DELACK, [TCP_SNAP_T_PERSIST] = TT_PERSIST,
    [TCP_SNAP_T_KEEPALIVE] = TT_KEEPALIVE, [TCP_SNAP_T_LINGER] = TT_LINGER,
};
_Static_assert((int)TT_COUNT == (int)TCP_SNAP_TIMERS, "every engine timer has a place in the snapshot");

static uint64_t age_at(cpb_time_t ref, cpb_time_t t) {
  uint64_t a = ref > t ? ref - t : 0;
  return CPB_MIN(a, TCP_SNAP_MAX_AGE);
}
static cpb_time_t back_from(cpb_time_t now, uint64_t age) { return now > age ? now - age : 0; }
static uint32_t chunks_for(uint64_t bytes) { return (uint32_t)((bytes + CPB_CHUNK_SIZE - 1) / CPB_CHUNK_SIZE); }

static void snap_from_tcb(const struct tcb *b, struct tcp_snap *s) {
  const cpb_time_t f = b->frozen_at;
  memset(s, 0, sizeof(*s));
  s->lip = b->lip;
  s->rip = b->rip;
  s->lport = b->lport;
  s->rport = b->rport;
  s->state = b->state;
  s->snd_wscale = b->snd_wscale;
  s->rcv_wscale = b->rcv_wscale;
  s->backoff = b->backoff;
  s->dupacks = b->dupacks;
  s->retries = b->retries;
  s->probes = b->probes;
  s->limited_tx = b->limited_tx;
  for (size_t i = 0; i < CPB_ARRAY_LEN(flag_map); i++)
    if (b->flags & flag_map[i].tf) s->flags |= flag_map[i].sf;
  if (b->cubic.epoch) s->flags |= TCP_SNAP_F_CUBIC_EPOCH;
  s->peer_mss = b->peer_mss;
  s->smss = b->smss;
  s->rcv_mss = b->rcv_mss;
  s->iss = b->iss;
  s->snd_una = b->snd_una;
  s->snd_nxt = b->snd_nxt;
  s->snd_max = b->snd_max;
  s->snd_wnd = b->snd_wnd;
  s->snd_wl1 = b->snd_wl1;
  s->snd_wl2 = b->snd_wl2;
  s->max_snd_wnd = b->max_snd_wnd;
  s->snd_sml = b->snd_sml;
  s->sndq_seq = b->sndq_seq;
  s->irs = b->irs;
  s->rcv_nxt = b->rcv_nxt;
  s->rcv_adv = b->rcv_adv;
  s->last_ack_sent = b->last_ack_sent;
  s->ooo_fin_seq = b->ooo_fin_seq;
  if (b->flags & TF_TS_OK) {
    s->ts_val = ts_now(b, f);
    s->ts_recent = b->ts_recent;
    s->ts_recent_age = age_at(f, b->ts_recent_age);
  }
  s->srtt = b->srtt;
  s->rttvar = b->rttvar;
  s->rto = b->rto;
  s->rtt_seq = b->rtt_seq;
  if (b->flags & TF_RTT_TIMING) s->rtt_age = age_at(f, b->rtt_time);
  s->cwnd = b->cwnd;
  s->ssthresh = b->ssthresh;
  s->recover = b->recover;
  s->bytes_acked = b->bytes_acked;
  s->high_rxt = b->high_rxt;
  s->rescue_rxt = b->rescue_rxt;
  s->sacked = b->sacked;
  s->ooo = b->ooo;
  s->w_max = b->cubic.w_max;
  s->w_last_max = b->cubic.w_last_max;
  s->k = b->cubic.k;
  s->w_est = b->cubic.w_est;
  s->acc = b->cubic.acc;
  if (b->cubic.epoch) s->cubic_age = age_at(f, b->cubic.epoch);
  s->last_rcv_age = age_at(f, b->last_rcv);
  s->keepidle_us = b->keepidle_us;
  for (int k = 0; k < TCP_SNAP_TIMERS; k++) {
    cpb_time_t at = b->timer[timer_map[k]];
    if (!at) continue;
    s->timer_mask |= (uint8_t)(1u << k);
    s->timer_left[k] = CPB_MIN(at > f ? at - f : 0, TCP_SNAP_MAX_AGE);
  }
  s->bytes_in = b->bytes_in;
  s->bytes_out = b->bytes_out;
  s->retransmits = b->retransmits;
  s->snd_len = b->sndq.len;
  s->rcv_len = b->rcvq.len;
  s->ooo_len = seqr_bytes(&b->ooo);
}

static struct tcb *frozen_flow(struct cpb_tcp *t, uint64_t id, long *err) {
  struct tcb *b = flow_by_id(t, id);
  *err = !b ? -ENOENT : !tcb_frozen(b) ? -EINVAL : 0;
  return *err ? NULL : b;
}

long tcp_snapshot_size(struct cpb_tcp *t, uint64_t flow_id) {
  long err;
  struct tcb *b = frozen_flow(t, flow_id, &err);
  if (!b) return err;
  return (long)((size_t)TCP_SNAP_FIXED_LEN + b->sndq.len + b->rcvq.len + seqr_bytes(&b->ooo));
}

long tcp_snapshot(struct cpb_tcp *t, uint64_t flow_id, uint8_t *buf, size_t cap, cpb_time_t now) {
  long err;
  struct tcb *b = frozen_flow(t, flow_id, &err);
  if (!b) return err;
  t->now = now;
  struct tcp_snap s;
  snap_from_tcb(b, &s);
  size_t n = tcp_snap_len(&s);
  if (!buf || cap < n) return -ENOSPC;
  tcp_snap_encode_fixed(&s, buf);
  uint8_t *p = buf + TCP_SNAP_FIXED_LEN;
  chunkq_peek(t->arena, &b->sndq, 0, p, s.snd_len);
  p += s.snd_len;
  chunkq_peek(t->arena, &b->rcvq, 0, p, s.rcv_len);
  p += s.rcv_len;
  for (int i = 0; i < b->ooo.n; i++) {
    uint32_t len = b->ooo.r[i].right - b->ooo.r[i].left;
    chunkq_peek(t->arena, &b->rcvq, b->rcvq.len + (b->ooo.r[i].left - b->rcv_nxt), p, len);
    p += len;
  }
  return (long)n;
}

/* Everything this host must be able to give before a slot is taken. */
static int adopt_admit(struct cpb_tcp *t, const struct tcp_snap *s) {
  if (s->smss > t->cfg.mss) return -EINVAL; /* our interface could not carry its segments */
  if (flowtab_lookup(t, s->lip, s->lport, s->rip, s->rport)) return -EEXIST;
  if (t->stats.flows_current >= t->cfg.max_flows) return -ENOSPC;
  uint64_t ext = s->rcv_len;
  if (s->ooo.n) ext += s->ooo.r[s->ooo.n - 1].right - s->rcv_nxt;
  struct tcb probe = {.rcv_wscale = s->rcv_wscale};
  uint32_t snd_need = chunks_for(s->snd_len), rcv_need = chunks_for(ext);
  if (snd_need > snd_max_chunks(t) || rcv_need > rcv_max_chunks(t, &probe)) return -ENOSPC;
  if ((uint64_t)snd_need + rcv_need > cpb_arena_chunks_free(t->arena)) return -ENOSPC;
  return 0;
}

static void tcb_from_snap(struct tcb *b, const struct tcp_snap *s, cpb_time_t now) {
  uint32_t fl = TF_APP;
  for (size_t i = 0; i < CPB_ARRAY_LEN(flag_map); i++)
    if (s->flags & flag_map[i].sf) fl |= flag_map[i].tf;
  b->flags = fl;
  b->state = s->state;
  b->snd_wscale = s->snd_wscale;
  b->rcv_wscale = s->rcv_wscale;
  b->backoff = s->backoff;
  b->dupacks = s->dupacks;
  b->retries = s->retries;
  b->probes = s->probes;
  b->limited_tx = s->limited_tx;
  b->err = 0;
  b->lip = s->lip;
  b->rip = s->rip;
  b->lport = s->lport;
  b->rport = s->rport;
  b->peer_mss = s->peer_mss;
  b->smss = s->smss;
  b->rcv_mss = s->rcv_mss;
  b->iss = s->iss;
  b->snd_una = s->snd_una;
  b->snd_nxt = s->snd_nxt;
  b->snd_max = s->snd_max;
  b->snd_wnd = s->snd_wnd;
  b->snd_wl1 = s->snd_wl1;
  b->snd_wl2 = s->snd_wl2;
  b->max_snd_wnd = s->max_snd_wnd;
  b->snd_sml = s->snd_sml;
  b->sndq_seq = s->sndq_seq;
  b->irs = s->irs;
  b->rcv_nxt = s->rcv_nxt;
  b->rcv_adv = s->rcv_adv;
  b->last_ack_sent = s->last_ack_sent;
  b->ooo_fin_seq = s->ooo_fin_seq;
  b->ts_offset = s->ts_val - (uint32_t)(now / CPB_US_PER_MS); /* ts_now(b, now) == s->ts_val */
  b->ts_recent = s->ts_recent;
  b->ts_recent_age = (s->flags & TCP_SNAP_F_TS) ? back_from(now, s->ts_recent_age) : 0;
  b->srtt = s->srtt;
  b->rttvar = s->rttvar;
  b->rto = s->rto;
  b->rtt_seq = s->rtt_seq;
  b->rtt_time = back_from(now, s->rtt_age);
  b->cwnd = s->cwnd;
  b->ssthresh = s->ssthresh;
  b->recover = s->recover;
  b->bytes_acked = s->bytes_acked;
  b->high_rxt = s->high_rxt;
  b->rescue_rxt = s->rescue_rxt;
  b->sacked = s->sacked;
  b->ooo = s->ooo;
  b->cubic.w_max = s->w_max;
  b->cubic.w_last_max = s->w_last_max;
  b->cubic.k = s->k;
  b->cubic.w_est = s->w_est;
  b->cubic.acc = s->acc;
  b->cubic.epoch = (s->flags & TCP_SNAP_F_CUBIC_EPOCH) ? CPB_MAX(back_from(now, s->cubic_age), (cpb_time_t)1) : 0;
  b->last_rcv = back_from(now, s->last_rcv_age);
  b->keepidle_us = s->keepidle_us;
  b->bytes_in = s->bytes_in;
  b->bytes_out = s->bytes_out;
  b->retransmits = s->retransmits;
}

static int restore_data(struct cpb_tcp *t, struct tcb *b, const struct tcp_snap *s) {
  uint32_t sb = snd_max_chunks(t), rb = rcv_max_chunks(t, b);
  if (chunkq_append(t->arena, &b->sndq, s->snd_data, s->snd_len, sb) != 0) return -ENOSPC;
  if (chunkq_append(t->arena, &b->rcvq, s->rcv_data, s->rcv_len, rb) != 0) return -ENOSPC;
  const uint8_t *p = s->ooo_data;
  for (int i = 0; i < s->ooo.n; i++) {
    uint32_t len = s->ooo.r[i].right - s->ooo.r[i].left;
    uint32_t off = s->rcv_len + (s->ooo.r[i].left - s->rcv_nxt);
    if (chunkq_write(t->arena, &b->rcvq, off, p, len, rb) != 0) return -ENOSPC;
    p += len;
  }
  return 0;
}

int tcp_adopt(struct cpb_tcp *t, const uint8_t *buf, size_t len, cpb_time_t now, uint64_t *flow_id) {
  t->now = now;
  if (!flow_id) return -EINVAL;
  struct tcp_snap s;
  int rc = tcp_snap_parse(buf, len, &s);
  if (rc == 0) rc = adopt_admit(t, &s);
  struct tcb *b = NULL;
  if (rc == 0) {
    b = flow_alloc(t);
    if (!b) rc = -ENOSPC;
  }
  if (rc == 0) {
    tcb_from_snap(b, &s, now);
    rc = restore_data(t, b, &s);
    if (rc != 0) { /* admitted sizes make this unreachable; undo all the same */
      b->flags = 0;
      b->state = TCP_CLOSED;
      flow_maybe_free(t, b);
    }
  }
  if (rc != 0) {
    t->stats.adopt_rejects++;
    return rc;
  }
  flowtab_insert(t, b);
  for (int k = 0; k < TCP_SNAP_TIMERS; k++)
    if (s.timer_mask & (1u << k)) timer_set(t, b, (enum tcp_timer)timer_map[k], now + s.timer_left[k]);
  t->stats.adopted++;
  ev_raise(t, b, TCP_EV_ADOPTED);
  if (b->rcvq.len > 0 || (b->flags & TF_FIN_RCVD)) ev_raise(t, b, TCP_EV_READABLE);
  b->flags |= TF_ACK_NOW;
  tcp_output(t, b, now);
  *flow_id = tcb_id(b);
  return 0;
}
