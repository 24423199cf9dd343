/* What happens when a timer fires.
 *   RTO: SYN / SYN-ACK resend until syn_retries, then ETIMEDOUT. Data: cwnd to one segment and ssthresh
 *        from the flight (RFC 5681; only on the first timeout of a segment), end recovery, go back to
 *        SND.UNA and resend (go-back-N, SACK information discarded), exponential backoff capped at
 *        rto_max (RFC 6298 5.5), give up with ETIMEDOUT after max_retries.
 *   Delayed ACK: the owed ACK goes out.
 *   Persist: zero-window probe with backoff; a window that is open but too small for the sender's SWS
 *        rule is used anyway (the RFC's "override timeout"). Unanswered probes count like retries.
 *   Keepalive: after keepidle of silence, probes every intvl (SEQ = SND.UNA - 1 to force an ACK);
 *        after keepalive_probes unanswered: RST and ETIMEDOUT. Re-armed lazily from last_rcv, so
 *        receiving a segment costs nothing.
 *   Linger: TIME_WAIT expiry, or an orphan stuck in FIN_WAIT_2 (reset and dropped). */
#include "tcb.h"

static void on_rto(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (b->state == TCP_SYN_SENT || b->state == TCP_SYN_RECEIVED) {
    if (++b->retries > t->cfg.syn_retries) {
      flow_set_closed(t, b, -ETIMEDOUT);
      return;
    }
    t->stats.rto_timeouts++;
    t->stats.retransmits++;
    b->retransmits++;
    b->flags &= ~TF_RTT_TIMING;
    if (b->backoff < 30) b->backoff++;
    (void)output_syn(t, b, now);
    rto_arm(t, b, now);
    return;
  }
  if (b->snd_una == b->snd_max) return;
  if (++b->retries > t->cfg.max_retries) {
    flow_set_closed(t, b, -ETIMEDOUT);
    return;
  }
  t->stats.rto_timeouts++;
  cc_on_rto(t, b, now);
  recovery_on_rto(t, b);
  if (b->backoff < 30) b->backoff++;
  b->flags &= ~TF_RTT_TIMING;
  b->snd_nxt = b->snd_una;
  tcp_output(t, b, now);
  if (!timer_armed(b, TT_RTO) && !timer_armed(b, TT_PERSIST)) rto_arm(t, b, now);
}

static void on_persist(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  uint32_t end = snd_data_end(b);
  if (!seq_lt(b->snd_nxt, end)) return;
  if (b->state != TCP_ESTABLISHED && b->state != TCP_CLOSE_WAIT && b->state != TCP_FIN_WAIT_1 &&
      b->state != TCP_CLOSING && b->state != TCP_LAST_ACK)
    return;
  uint32_t wend = b->snd_una + b->snd_wnd;
  if (seq_gt(wend, b->snd_nxt)) {
    uint32_t len = CPB_MIN(CPB_MIN(end - b->snd_nxt, wend - b->snd_nxt), (uint32_t)b->smss);
    int n = output_segment(t, b, b->snd_nxt, len, now);
    if (n > 0) b->snd_nxt += (uint32_t)n;
    return;
  }
  if (++b->probes > t->cfg.max_retries) {
    flow_set_closed(t, b, -ETIMEDOUT);
    return;
  }
  (void)output_probe(t, b, now);
  if (b->backoff < 30) b->backoff++;
  timer_set(t, b, TT_PERSIST, now + CPB_MAX(rto_current(t, b), rto_floor(t, b)));
}

static void on_keepalive(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (!(b->flags & TF_KEEPALIVE)) return;
  if (b->state != TCP_ESTABLISHED && b->state != TCP_CLOSE_WAIT) return;
  if (b->snd_una != b->snd_max || seq_lt(b->snd_nxt, snd_data_end(b))) {
    timer_set(t, b, TT_KEEPALIVE, now + b->keepidle_us); /* the RTO or persist timer watches the peer */
    return;
  }
  if (now - b->last_rcv < b->keepidle_us && b->probes == 0) {
    timer_set(t, b, TT_KEEPALIVE, b->last_rcv + b->keepidle_us);
    return;
  }
  if (b->probes >= t->cfg.keepalive_probes) {
    (void)output_rst_for(t, b, now);
    flow_set_closed(t, b, -ETIMEDOUT);
    return;
  }
  (void)output_keepalive(t, b, now);
  b->probes++;
  t->stats.keepalive_probes++;
  timer_set(t, b, TT_KEEPALIVE, now + t->cfg.keepalive_intvl_us);
}

static void on_linger(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (b->state == TCP_TIME_WAIT) {
    flow_set_closed(t, b, 0);
  } else if (b->state == TCP_FIN_WAIT_2 && !(b->flags & TF_APP)) {
    (void)output_rst_for(t, b, now);
    flow_set_closed(t, b, 0);
  }
}

void timeout_fire(struct cpb_tcp *t, struct tcb *b, unsigned due, cpb_time_t now) {
  if (b->state == TCP_CLOSED) {
    flow_maybe_free(t, b);
    return;
  }
  if (due & (1u << TT_RTO)) on_rto(t, b, now);
  if ((due & (1u << TT_DELACK)) && b->state != TCP_CLOSED && b->state != TCP_SYN_SENT) {
    t->stats.delayed_acks++;
    (void)output_ack(t, b, now);
  }
  if ((due & (1u << TT_PERSIST)) && b->state != TCP_CLOSED) on_persist(t, b, now);
  if ((due & (1u << TT_KEEPALIVE)) && b->state != TCP_CLOSED) on_keepalive(t, b, now);
  if ((due & (1u << TT_LINGER)) && b->state != TCP_CLOSED) on_linger(t, b, now);
  flow_maybe_free(t, b);
}
