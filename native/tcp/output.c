/* Segment output. One function (emit) builds every segment: header from the TCB (ACK = RCV.NXT, window
 * chosen here with receiver-side SWS avoidance and never moving the right edge left, timestamps, SACK
 * blocks newest first), payload copied from the send queue straight into the frame that ipout lends.
 * When ipout has no frame the segment is counted as sent and lost: retransmission recovers it.
 *
 * tcp_output decides what may go: in SACK recovery RFC 6675 NextSeg under cwnd - pipe; otherwise new
 * data from SND.NXT under min(SND.WND, cwnd) with the sender's SWS rule and Nagle (RFC 9293 §3.7.4,
 * §3.8.6.2.1); the FIN rides on the last data segment when it can. A pure ACK goes out only when one is
 * owed and nothing else carried it. The persist timer is armed when data waits for a window and
 * nothing is in flight to bring an update. */
#include "tcb.h"

#define WIN_MAX_UNSCALED 65535u

uint32_t rcv_window_avail(const struct cpb_tcp *t, const struct tcb *b) {
  return t->cfg.rcvbuf > b->rcvq.len ? t->cfg.rcvbuf - b->rcvq.len : 0;
}

static uint16_t select_window(const struct cpb_tcp *t, struct tcb *b, bool syn) {
  uint32_t avail = rcv_window_avail(t, b);
  if (syn) {
    uint32_t w = CPB_MIN(avail, WIN_MAX_UNSCALED);
    if (seq_gt(b->rcv_nxt + w, b->rcv_adv) || b->state == TCP_SYN_SENT) b->rcv_adv = b->rcv_nxt + w;
    return (uint16_t)w;
  }
  uint32_t ws = b->rcv_wscale;
  uint32_t maxw = WIN_MAX_UNSCALED << ws;
  if (avail > maxw) avail = maxw;
  uint32_t cur = seq_gt(b->rcv_adv, b->rcv_nxt) ? b->rcv_adv - b->rcv_nxt : 0;
  uint32_t sws = CPB_MIN(t->cfg.rcvbuf / 2, (uint32_t)b->rcv_mss);
  uint32_t field;
  if (avail <= cur || avail - cur < sws) {
    /* Keep the edge: never shrink, and receiver SWS avoidance waits for a worthwhile step. Rounding
     * up keeps the scaled edge from moving left. */
    field = (cur + (1u << ws) - 1) >> ws;
  } else {
    field = avail >> ws; /* a new edge: never offer more than the buffer holds */
    if ((field << ws) < cur) field = (cur + (1u << ws) - 1) >> ws;
  }
  if (field > WIN_MAX_UNSCALED) field = WIN_MAX_UNSCALED;
  uint32_t edge = b->rcv_nxt + (field << ws);
  if (seq_gt(edge, b->rcv_adv)) b->rcv_adv = edge;
  return (uint16_t)field;
}

/* Builds and sends one segment; returns payload bytes placed (len, possibly clamped by the frame) or
 * -errno when the header cannot be built. A missing frame counts as a loss on the wire. */
static long emit(struct cpb_tcp *t, struct tcb *b, uint32_t seq, uint8_t flags, uint32_t len, cpb_time_t now) {
  struct tcp_repr r;
  memset(&r, 0, sizeof(r));
  r.sport = b->lport;
  r.dport = b->rport;
  r.seq = seq;
  r.flags = flags;
  bool syn = flags & TCP_SYN;
  if (flags & TCP_ACK) r.ack = b->rcv_nxt;
  if (!(flags & TCP_RST) || (flags & TCP_ACK)) r.window = select_window(t, b, syn);
  if (flags & TCP_RST) r.window = 0;
  if (syn) {
    bool active = b->state == TCP_SYN_SENT;
    r.opts.has_mss = true;
    r.opts.mss = t->cfg.mss;
    if (active ? true : (b->flags & TF_WS_OK)) {
      r.opts.has_wscale = true;
      r.opts.wscale = b->rcv_wscale;
    }
    r.opts.sack_permitted = active ? t->cfg.sack : (b->flags & TF_SACK_OK) != 0;
    if (active ? t->cfg.timestamps : (b->flags & TF_TS_OK)) {
      r.opts.has_ts = true;
      r.opts.ts_val = ts_now(b, now);
      r.opts.ts_ecr = active ? 0 : b->ts_recent;
    }
  } else {
    if (b->flags & TF_TS_OK) {
      r.opts.has_ts = true;
      r.opts.ts_val = ts_now(b, now);
      r.opts.ts_ecr = b->ts_recent;
    }
    if ((b->flags & TF_SACK_OK) && b->ooo.n > 0 && !(flags & TCP_RST)) {
      struct seqrange rs[TCP_MAX_SACK_BLOCKS];
      int max = (b->flags & TF_TS_OK) ? 3 : 4;
      int n = seqr_recent(&b->ooo, rs, max);
      for (int i = 0; i < n; i++) {
        r.opts.sack[i].left = rs[i].left;
        r.opts.sack[i].right = rs[i].right;
      }
      r.opts.nsack = (uint8_t)n;
    }
  }
  size_t hlen = tcp_header_len(&r);
  size_t cap = 0;
  uint8_t *buf = t->out.begin(t->out.ctx, b->lip, b->rip, &cap);
  if (flags & TCP_ACK) {
    b->last_ack_sent = b->rcv_nxt;
    b->flags &= ~TF_ACK_NOW;
    timer_clear(t, b, TT_DELACK);
  }
  if (!buf) return len;
  if (cap < hlen) {
    t->out.commit(t->out.ctx, 0);
    return len;
  }
  if (len > cap - hlen) {
    len = (uint32_t)(cap - hlen); /* the frame is smaller than the segment: the FIN waits */
    r.flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
  }
  int h = tcp_emit_header(&r, buf, cap);
  if (h < 0) {
    t->out.commit(t->out.ctx, 0);
    return h;
  }
  if (len) chunkq_peek(t->arena, &b->sndq, seq - b->sndq_seq, buf + h, len);
  t->out.commit(t->out.ctx, (size_t)h + len);
  t->stats.segs_out++;
  t->stats.bytes_out += len;
  b->bytes_out += len;
  if (flags & TCP_RST) t->stats.rsts_sent++;
  return len;
}

int output_segment(struct cpb_tcp *t, struct tcb *b, uint32_t seq, uint32_t len, cpb_time_t now) {
  uint32_t end = snd_data_end(b);
  uint8_t flags = TCP_ACK;
  if (len && seq + len == end) flags |= TCP_PSH;
  if ((b->flags & TF_FIN_QUEUED) && seq + len == end) flags |= TCP_FIN;
  long n = emit(t, b, seq, flags, len, now);
  if (n < 0) return (int)n;
  if ((uint32_t)n < len) flags &= (uint8_t)~TCP_FIN; /* clamped by the frame: FIN waits */
  uint32_t seg_end = seq + (uint32_t)n + ((flags & TCP_FIN) ? 1 : 0);
  if (seq_lt(seq, b->snd_max)) {
    t->stats.retransmits++;
    b->retransmits++;
    if ((b->flags & TF_RTT_TIMING) && seq_lt(seq, b->rtt_seq)) b->flags &= ~TF_RTT_TIMING; /* Karn */
  }
  if ((uint32_t)n < b->smss && seq_gt(seq + (uint32_t)n, b->snd_sml)) b->snd_sml = seq + (uint32_t)n;
  if (seq_gt(seg_end, b->snd_max)) {
    if (!(b->flags & TF_RTT_TIMING)) {
      b->flags |= TF_RTT_TIMING;
      b->rtt_seq = seg_end;
      b->rtt_time = now;
    }
    b->snd_max = seg_end;
  }
  if (!timer_armed(b, TT_RTO)) rto_arm(t, b, now);
  timer_clear(t, b, TT_PERSIST);
  return (int)n;
}

/* Sequence number for segments without data: SND.MAX (as BSD does), so an ACK sent while going back
 * after an RTO is not taken as old by the peer and dropped with its information; never beyond the
 * peer's window (Linux's tcp_acceptable_seq). */
static uint32_t ack_seq(const struct tcb *b) {
  uint32_t wend = b->snd_una + b->snd_wnd;
  uint32_t s = b->snd_max;
  if (seq_gt(s, wend)) s = wend;
  if (seq_lt(s, b->snd_nxt)) s = b->snd_nxt;
  return s;
}

int output_ack(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  long n = emit(t, b, ack_seq(b), TCP_ACK, 0, now);
  return n < 0 ? (int)n : 0;
}

/* Opens the sequence space (both active and passive opens): the SYN or SYN-ACK goes out, is timed for
 * the first RTT sample (Karn: only this first transmission) and the retransmission timer runs. */
void output_first_syn(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  b->snd_nxt = b->iss + 1;
  (void)output_syn(t, b, now);
  b->flags |= TF_RTT_TIMING;
  b->rtt_seq = b->iss + 1;
  b->rtt_time = now;
  rto_arm(t, b, now);
}

int output_syn(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  uint8_t flags = TCP_SYN | (b->state == TCP_SYN_SENT ? 0 : TCP_ACK);
  long n = emit(t, b, b->iss, flags, 0, now);
  if (seq_gt(b->iss + 1, b->snd_max)) b->snd_max = b->iss + 1;
  return n < 0 ? (int)n : 0;
}

int output_rst_for(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  long n = emit(t, b, ack_seq(b), TCP_RST | TCP_ACK, 0, now);
  return n < 0 ? (int)n : 0;
}

/* SEQ = SND.UNA - 1 and no data: the peer must answer with an ACK carrying its current window. */
int output_keepalive(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  long n = emit(t, b, b->snd_una - 1, TCP_ACK, 0, now);
  return n < 0 ? (int)n : 0;
}

/* Zero-window probe, Linux style: an old sequence number forces an ACK that carries the current window,
 * and no sequence state moves, so a probe can never be mistaken for data in flight. */
int output_probe(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  t->stats.zero_window_probes++;
  return output_keepalive(t, b, now);
}

void output_rst_reply(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *in) {
  if (in->flags & TCP_RST) return;
  struct tcp_repr r;
  memset(&r, 0, sizeof(r));
  r.sport = in->dport;
  r.dport = in->sport;
  if (in->flags & TCP_ACK) {
    r.seq = in->ack;
    r.flags = TCP_RST;
  } else {
    r.seq = 0;
    r.ack = in->seq + in->payload_len + ((in->flags & TCP_SYN) ? 1 : 0) + ((in->flags & TCP_FIN) ? 1 : 0);
    r.flags = TCP_RST | TCP_ACK;
  }
  if (output_bare(t, lip, rip, &r)) t->stats.rsts_sent++;
}

bool output_bare(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r) {
  size_t cap = 0;
  uint8_t *buf = t->out.begin(t->out.ctx, lip, rip, &cap);
  if (!buf) return false;
  int h = tcp_emit_header(r, buf, cap);
  if (h < 0) {
    t->out.commit(t->out.ctx, 0);
    return false;
  }
  t->out.commit(t->out.ctx, (size_t)h);
  t->stats.segs_out++;
  return true;
}

bool challenge_ack(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (t->cfg.challenge_ack_limit) {
    if (now - t->chack_epoch >= CPB_US_PER_S || now < t->chack_epoch) {
      t->chack_epoch = now;
      t->chack_count = 0;
    }
    if (t->chack_count >= t->cfg.challenge_ack_limit) return false;
    t->chack_count++;
  }
  t->stats.challenge_acks++;
  (void)output_ack(t, b, now);
  return true;
}

static bool sends_data(enum tcp_state s) {
  return s == TCP_ESTABLISHED || s == TCP_CLOSE_WAIT || s == TCP_FIN_WAIT_1 || s == TCP_CLOSING ||
         s == TCP_LAST_ACK;
}

/* Sender SWS avoidance and Nagle for a segment shorter than a full one. Nagle uses Minshall's variant
 * (as Linux does): a small segment waits only while an earlier small segment is unacknowledged, so the
 * tail of a large write is not held for a round trip behind full-sized segments. */
static bool small_ok(const struct tcb *b, uint32_t len, uint32_t unsent) {
  if (seq_lt(b->snd_nxt, b->snd_max)) return true; /* resending after a timeout: never held back */
  if (len == unsent) {
    if ((b->flags & (TF_NODELAY | TF_FIN_QUEUED)) || !seq_gt(b->snd_sml, b->snd_una)) return true;
    return false;
  }
  return len >= b->max_snd_wnd / 2 && b->max_snd_wnd > 0;
}

void tcp_output(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (!sends_data((enum tcp_state)b->state)) {
    if ((b->flags & TF_ACK_NOW) && b->state != TCP_SYN_SENT && b->state != TCP_CLOSED &&
        b->state != TCP_LISTEN) {
      if (b->state == TCP_SYN_RECEIVED) (void)output_syn(t, b, now);
      else (void)output_ack(t, b, now);
    }
    return;
  }
  for (int guard = 0; guard < 4096; guard++) {
    uint32_t end = snd_data_end(b);
    if (b->flags & TF_SACK_RECOVERY) {
      if (b->cwnd < sack_pipe(b) + b->smss) break;
      uint32_t seq, len;
      bool is_new;
      if (!sack_next_seg(t, b, &seq, &len, &is_new)) break;
      int n = output_segment(t, b, seq, len, now);
      if (n < 0) break;
      if (is_new) {
        uint32_t e = seq + (uint32_t)n;
        if (seq_gt(e, b->snd_nxt)) b->snd_nxt = e;
        if (fin_sent(b) && seq_ge(b->snd_nxt, end)) b->snd_nxt = end + 1;
      } else {
        b->high_rxt = seq + (uint32_t)n;
      }
      continue;
    }
    uint32_t unsent = seq_lt(b->snd_nxt, end) ? end - b->snd_nxt : 0;
    if (unsent) {
      uint32_t wlim = b->snd_una + b->snd_wnd;
      uint32_t clim = b->snd_una + b->cwnd + (uint32_t)b->limited_tx * b->smss;
      uint32_t lim = seq_lt(wlim, clim) ? wlim : clim;
      uint32_t usable = seq_gt(lim, b->snd_nxt) ? lim - b->snd_nxt : 0;
      uint32_t len = CPB_MIN(CPB_MIN(unsent, (uint32_t)b->smss), usable);
      if (len == 0) break;
      if (len < b->smss && !small_ok(b, len, unsent)) break;
      int n = output_segment(t, b, b->snd_nxt, len, now);
      if (n <= 0) break;
      b->snd_nxt += (uint32_t)n;
      if (b->snd_nxt == end && fin_sent(b)) b->snd_nxt++;
      continue;
    }
    if ((b->flags & TF_FIN_QUEUED) && b->snd_nxt == end) {
      if (output_segment(t, b, end, 0, now) < 0) break;
      b->snd_nxt = end + 1;
    }
    break;
  }
  if (b->flags & TF_ACK_NOW) (void)output_ack(t, b, now);
  uint32_t end = snd_data_end(b);
  if (seq_lt(b->snd_nxt, end) && b->snd_nxt == b->snd_una && !timer_armed(b, TT_RTO) &&
      !timer_armed(b, TT_PERSIST)) {
    b->probes = 0;
    timer_set(t, b, TT_PERSIST, now + rto_current(t, b));
  }
}

void output_schedule(struct cpb_tcp *t, struct tcb *b) {
  if (b->flags & TF_OUT_PENDING) return;
  b->flags |= TF_OUT_PENDING;
  b->out_next = TCP_NONE;
  if (t->out_tail == TCP_NONE) t->out_head = b->self;
  else tcb_at(t, t->out_tail)->out_next = b->self;
  t->out_tail = b->self;
}

void output_unschedule(struct cpb_tcp *t, struct tcb *b) {
  if (!(b->flags & TF_OUT_PENDING)) return;
  b->flags &= ~TF_OUT_PENDING;
  uint32_t prev = TCP_NONE, cur = t->out_head;
  while (cur != TCP_NONE && cur != b->self) {
    prev = cur;
    cur = tcb_at(t, cur)->out_next;
  }
  if (cur == TCP_NONE) return;
  if (prev == TCP_NONE) t->out_head = b->out_next;
  else tcb_at(t, prev)->out_next = b->out_next;
  if (t->out_tail == b->self) t->out_tail = prev;
}

void output_flush(struct cpb_tcp *t, cpb_time_t now) {
  while (t->out_head != TCP_NONE) {
    struct tcb *b = tcb_at(t, t->out_head);
    t->out_head = b->out_next;
    if (t->out_head == TCP_NONE) t->out_tail = TCP_NONE;
    b->flags &= ~TF_OUT_PENDING;
    tcp_output(t, b, now);
  }
}
