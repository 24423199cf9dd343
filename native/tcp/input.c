/* Segment arrival (RFC 9293 §3.10.7). tcp_input verifies and parses (checksum included), finds the
 * connection by 4-tuple, else a listener, else answers with a RST (§3.10.7.1). tcb_input runs the checks
 * for a known connection in the RFC's order, with the later RFCs folded in:
 *   PAWS (RFC 7323 §5.3) -> sequence acceptability (trim later) -> RST (RFC 5961 §3: reset only at
 *   exactly RCV.NXT, challenge ACK elsewhere in the window) -> SYN (RFC 5961 §4: challenge ACK) ->
 *   ACK acceptability (RFC 5961 §5: challenge ACK outside [SND.UNA - MAX.SND.WND, SND.MAX]) ->
 *   TS.Recent update (RFC 7323 §4.3) -> SYN_RECEIVED completion -> ACK processing (ack.c) ->
 *   data and FIN (data.c) -> output.
 * A new SYN for a 4-tuple in TIME_WAIT reopens it when its sequence number or timestamp is newer
 * (RFC 6191 style), so a busy client reusing ports is not refused. */
#include "tcb.h"

static bool seq_acceptable(const struct tcb *b, uint32_t seq, uint32_t seg_len) {
  uint32_t wnd = seq_gt(b->rcv_adv, b->rcv_nxt) ? b->rcv_adv - b->rcv_nxt : 0;
  uint32_t nxt = b->rcv_nxt;
  if (seg_len == 0) {
    if (wnd == 0) return seq == nxt;
    return seq_ge(seq, nxt) && seq_lt(seq, nxt + wnd);
  }
  if (wnd == 0) return false;
  uint32_t last = seq + seg_len - 1;
  return (seq_ge(seq, nxt) && seq_lt(seq, nxt + wnd)) || (seq_ge(last, nxt) && seq_lt(last, nxt + wnd));
}

static void on_reset(struct cpb_tcp *t, struct tcb *b) {
  t->stats.rsts_received++;
  switch (b->state) {
    case TCP_SYN_RECEIVED:
      flow_set_closed(t, b, (b->flags & TF_PASSIVE) ? -ECONNRESET : -ECONNREFUSED);
      break;
    case TCP_TIME_WAIT:
      flow_set_closed(t, b, 0);
      break;
    default:
      flow_set_closed(t, b, -ECONNRESET);
      break;
  }
}

void tcb_input(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *rin, cpb_time_t now) {
  struct tcp_repr rr = *rin;
  struct tcp_repr *r = &rr;
  if (b->state == TCP_SYN_SENT) {
    syn_sent_input(t, b, r, now);
    return;
  }
  if (b->state == TCP_CLOSED || b->state == TCP_LISTEN) return;

  bool syn = r->flags & TCP_SYN;
  if (b->state == TCP_SYN_RECEIVED && syn) {
    /* Simultaneous open: the peer's SYN-ACK answers ours; take it as the ACK that completes it (the
     * SYN flag stays so its window is read unscaled). */
    if (!(b->flags & TF_PASSIVE) && (r->flags & TCP_ACK) && r->seq + 1 == b->rcv_nxt && r->ack == b->snd_nxt) {
      syn = false;
      r->seq += 1;
    } else if (!(r->flags & TCP_ACK) && r->seq == b->irs) {
      (void)output_syn(t, b, now); /* the peer did not get our SYN-ACK */
      return;
    }
  }

  uint32_t seg_len = r->payload_len + (syn ? 1 : 0) + ((r->flags & TCP_FIN) ? 1 : 0);
  bool rst = r->flags & TCP_RST;

  if (b->flags & TF_TS_OK) {
    if (!r->opts.has_ts && !rst) return; /* RFC 7323 §3.2: once negotiated, every segment carries it */
    if (r->opts.has_ts && !rst && seq_lt(r->opts.ts_val, b->ts_recent)) {
      if (now - b->ts_recent_age > TCP_PAWS_24DAYS_US) {
        b->ts_recent = r->opts.ts_val; /* TS.Recent too old to judge by (RFC 7323 §5.5) */
      } else {
        t->stats.paws_drops++;
        (void)output_ack(t, b, now);
        return;
      }
    }
  }

  if (!seq_acceptable(b, r->seq, seg_len)) {
    if (rst) return;
    if (seq_le(r->seq + seg_len, b->rcv_nxt)) t->stats.dup_segments++;
    else t->stats.out_of_window++;
    if (b->state == TCP_TIME_WAIT && (r->flags & TCP_FIN))
      timer_set(t, b, TT_LINGER, now + t->cfg.time_wait_us);
    (void)output_ack(t, b, now);
    return;
  }

  if (rst) {
    if (r->seq == b->rcv_nxt) on_reset(t, b);
    else challenge_ack(t, b, now);
    return;
  }
  if (syn) {
    challenge_ack(t, b, now);
    return;
  }
  if (!(r->flags & TCP_ACK)) return;

  if (b->state == TCP_SYN_RECEIVED) {
    if (!seq_gt(r->ack, b->snd_una) || seq_gt(r->ack, b->snd_max)) {
      output_rst_reply(t, b->lip, b->rip, r);
      return;
    }
  } else if (seq_gt(r->ack, b->snd_max) || seq_lt(r->ack, b->snd_una - b->max_snd_wnd)) {
    challenge_ack(t, b, now); /* RFC 5961 §5.2: blind data injection guard */
    return;
  }

  if ((b->flags & TF_TS_OK) && r->opts.has_ts && seq_le(r->seq, b->last_ack_sent) &&
      seq_ge(r->opts.ts_val, b->ts_recent)) {
    b->ts_recent = r->opts.ts_val;
    b->ts_recent_age = now;
  }
  b->last_rcv = now;
  b->probes = 0;

  if (b->state == TCP_SYN_RECEIVED) {
    tcb_set_state(t, b, TCP_ESTABLISHED);
    timer_clear(t, b, TT_RTO);
    b->retries = 0;
    if (b->flags & TF_PASSIVE) listen_established(t, b);
    else ev_raise(t, b, TCP_EV_CONNECTED);
    if (b->flags & TF_FIN_QUEUED) tcb_set_state(t, b, TCP_FIN_WAIT_1);
  }

  ack_process(t, b, r, now);
  if (b->state == TCP_CLOSED) return;
  if (r->payload_len || (r->flags & TCP_FIN)) data_process(t, b, r, now);
  if (b->state == TCP_CLOSED) return;
  tcp_output(t, b, now);
}

void tcp_input(struct cpb_tcp *t, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len, cpb_time_t now) {
  t->now = now;
  struct tcp_repr r;
  int rc = tcp_parse(seg, len, src, dst, true, &r);
  if (rc == -EBADMSG) {
    t->stats.bad_checksums++;
    return;
  }
  if (rc < 0 || r.sport == 0 || r.dport == 0 || (r.flags & (TCP_SYN | TCP_RST)) == (TCP_SYN | TCP_RST)) {
    t->stats.bad_segments++;
    return;
  }
  t->stats.segs_in++;
  struct tcb *b = flowtab_lookup(t, dst, r.dport, src, r.sport);
  if (b && tcb_frozen(b)) {
    hold_segment(t, b, src, dst, seg, len); /* checksum verified: what is held is worth forwarding */
    return;
  }
  if (b && b->state == TCP_TIME_WAIT && (r.flags & TCP_SYN) && !(r.flags & TCP_ACK) && listener_find(t, r.dport)) {
    bool newer = seq_gt(r.seq, b->rcv_nxt) ||
                 ((b->flags & TF_TS_OK) && r.opts.has_ts && seq_gt(r.opts.ts_val, b->ts_recent));
    if (newer) {
      flow_set_closed(t, b, 0);
      flow_maybe_free(t, b);
      b = NULL;
    }
  }
  if (b) {
    tcb_input(t, b, &r, now);
    flow_maybe_free(t, b);
    return;
  }
  struct tcp_listener *l = listener_find(t, r.dport);
  if (l) {
    listen_input(t, l, dst, src, &r, now);
    return;
  }
  if (!(r.flags & TCP_RST)) {
    t->stats.no_listener_rsts++;
    output_rst_reply(t, dst, src, &r);
  }
}
