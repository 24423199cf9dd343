/* ACK processing for an acceptable segment (RFC 9293 §3.10.7.4 "fifth"): release acknowledged bytes,
 * take an RTT sample (timestamp echo, else the timed segment if Karn allows), restart or stop the RTO
 * (RFC 6298 5.2/5.3), update the send window from the newest segment (SND.WL1/WL2 rule, scaled by the
 * peer's shift), hand the ACK to loss recovery (dup ACK counting, NewReno/SACK recovery), and move the
 * closing states along once our FIN is acknowledged. */
#include "tcb.h"

#define TS_RTT_MAX_MS (10u * 60u * 1000u) /* an echo older than this is not a measurement */

void enter_time_wait(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  tcb_set_state(t, b, TCP_TIME_WAIT);
  timer_clear_all(t, b);
  chunkq_clear(t->arena, &b->sndq);
  ev_raise(t, b, TCP_EV_CLOSED);
  if (t->cfg.time_wait_us == 0) {
    flow_set_closed(t, b, 0);
    return;
  }
  timer_set(t, b, TT_LINGER, now + t->cfg.time_wait_us);
}

static void fin_acked_transition(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  switch (b->state) {
    case TCP_FIN_WAIT_1:
      tcb_set_state(t, b, TCP_FIN_WAIT_2);
      timer_clear(t, b, TT_RTO);
      if (!(b->flags & TF_APP)) timer_set(t, b, TT_LINGER, now + t->cfg.fin_wait2_us);
      break;
    case TCP_CLOSING:
      enter_time_wait(t, b, now);
      break;
    case TCP_LAST_ACK:
      flow_set_closed(t, b, 0);
      break;
    default:
      break;
  }
}

void ack_process(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now) {
  uint32_t ack = r->ack;
  uint32_t wnd = (r->flags & TCP_SYN) ? r->window : (uint32_t)r->window << b->snd_wscale;
  uint32_t acked = 0, data_acked = 0;
  bool is_dup = false;

  if (seq_gt(ack, b->snd_una)) {
    acked = ack - b->snd_una;
    sack_update(t, b, r);
    if ((b->flags & TF_TS_OK) && r->opts.has_ts && r->opts.ts_ecr) {
      uint32_t ms = ts_now(b, now) - r->opts.ts_ecr;
      if (ms < TS_RTT_MAX_MS) rtt_sample(t, b, ms ? ms * 1000u : 500u);
    } else if ((b->flags & TF_RTT_TIMING) && seq_ge(ack, b->rtt_seq)) {
      rtt_sample(t, b, (uint32_t)(now - b->rtt_time));
    }
    if ((b->flags & TF_RTT_TIMING) && seq_ge(ack, b->rtt_seq)) b->flags &= ~TF_RTT_TIMING;

    uint32_t end = snd_data_end(b);
    uint32_t upto = seq_lt(ack, end) ? ack : end;
    if (seq_gt(upto, b->sndq_seq)) {
      uint32_t n = upto - b->sndq_seq;
      chunkq_consume(t->arena, &b->sndq, n);
      b->sndq_seq += n;
      data_acked = n;
    }
    b->snd_una = ack;
    if (seq_lt(b->snd_nxt, ack)) b->snd_nxt = ack;
    seqr_trim(&b->sacked, ack);
    if (seq_lt(b->high_rxt, ack)) b->high_rxt = ack;
    b->retries = 0;
    if (b->snd_una == b->snd_max) timer_clear(t, b, TT_RTO);
    else rto_arm(t, b, now);
    ev_check_writable(t, b);
  } else if (ack == b->snd_una && b->snd_max != b->snd_una && r->payload_len == 0 &&
             !(r->flags & TCP_FIN)) {
    sack_update(t, b, r);
    is_dup = wnd == b->snd_wnd || r->opts.nsack > 0;
  }

  if (seq_lt(b->snd_wl1, r->seq) || (b->snd_wl1 == r->seq && seq_le(b->snd_wl2, ack))) {
    bool opened = wnd > 0 && b->snd_wnd == 0;
    b->snd_wnd = wnd;
    b->snd_wl1 = r->seq;
    b->snd_wl2 = ack;
    if (wnd > b->max_snd_wnd) b->max_snd_wnd = wnd;
    if (opened && timer_armed(b, TT_PERSIST)) {
      timer_clear(t, b, TT_PERSIST);
      b->backoff = 0;
    }
  }

  recovery_on_ack(t, b, acked, data_acked, is_dup, now);
  if (fin_acked(b)) fin_acked_transition(t, b, now);
}
