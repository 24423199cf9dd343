/* Active open and what every new TCB shares: the 4-tuple, RFC 6528 ISS, a per-flow timestamp offset,
 * the RTO start value, and the SYN option negotiation (MSS clamp, window scale only when both SYNs carry
 * it and clamped to 14, timestamps and SACK only when both offer them). SYN_SENT input follows RFC 9293
 * §3.10.7.3, including simultaneous open (SYN without ACK -> SYN_RECEIVED, answer SYN-ACK with our ISS)
 * and RFC 5961 §3.2 (a RST is accepted only when it acknowledges our SYN). Ephemeral ports are taken
 * from the configured range starting at a rotating cursor, skipping ports with a listener or with
 * the same 4-tuple in use. */
#include "tcb.h"

void tcb_init_common(struct cpb_tcp *t, struct tcb *b, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip,
                     uint16_t rport, cpb_time_t now) {
  b->lip = lip;
  b->lport = lport;
  b->rip = rip;
  b->rport = rport;
  b->iss = iss_generate(t, lip, lport, rip, rport, now);
  b->ts_offset = ts_offset_generate(t, lip, lport, rip, rport);
  b->snd_una = b->snd_nxt = b->snd_max = b->snd_sml = b->iss;
  b->sndq_seq = b->iss + 1;
  b->rcv_wscale = CPB_MIN(t->cfg.wscale, TCP_MAX_WSCALE);
  b->peer_mss = TCP_DEFAULT_MSS;
  b->smss = (uint16_t)CPB_MIN((uint32_t)TCP_DEFAULT_MSS, t->cfg.mss);
  b->rcv_mss = b->smss;
  b->last_rcv = now;
  b->keepidle_us = t->cfg.keepalive_idle_us;
  b->recover = b->iss;
  rtt_init(t, b);
}

void tcb_apply_syn_options(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now) {
  const struct tcp_opts *o = &r->opts;
  b->peer_mss = o->has_mss ? CPB_MAX(o->mss, (uint16_t)64) : TCP_DEFAULT_MSS;
  if (o->has_wscale) {
    b->flags |= TF_WS_OK;
    b->snd_wscale = CPB_MIN(o->wscale, TCP_MAX_WSCALE);
    b->rcv_wscale = CPB_MIN(t->cfg.wscale, TCP_MAX_WSCALE);
  } else {
    b->flags &= ~TF_WS_OK;
    b->snd_wscale = b->rcv_wscale = 0;
  }
  if (t->cfg.timestamps && o->has_ts) {
    b->flags |= TF_TS_OK;
    b->ts_recent = o->ts_val;
    b->ts_recent_age = now;
  }
  if (t->cfg.sack && o->sack_permitted) b->flags |= TF_SACK_OK;
  uint32_t m = CPB_MIN((uint32_t)b->peer_mss, (uint32_t)t->cfg.mss);
  if (b->flags & TF_TS_OK) m -= TCP_TS_LEN;
  b->smss = (uint16_t)m;
  b->rcv_mss = (uint16_t)CPB_MIN((uint32_t)TCP_DEFAULT_MSS, m);
  cc_init(t, b);
}

static bool port_free(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t p, cpb_ip4_t dst, uint16_t dport) {
  return !listener_find(t, p) && !flowtab_lookup(t, lip, p, dst, dport);
}

int tcp_connect(struct cpb_tcp *t, cpb_ip4_t dst, uint16_t dport, uint16_t sport, cpb_time_t now, uint64_t *flow_id) {
  t->now = now;
  if (dst == 0 || dport == 0) return -EINVAL;
  cpb_ip4_t lip = t->cfg.local_ip;
  if (sport == 0) {
    uint32_t lo = t->cfg.ephemeral_lo, hi = t->cfg.ephemeral_hi;
    uint32_t n = hi - lo + 1;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t p = lo + (t->next_ephemeral + i) % n;
      if (port_free(t, lip, (uint16_t)p, dst, dport)) {
        sport = (uint16_t)p;
        t->next_ephemeral = (t->next_ephemeral + i + 1) % n;
        break;
      }
    }
    if (sport == 0) return -EADDRNOTAVAIL;
  } else if (flowtab_lookup(t, lip, sport, dst, dport)) {
    return -EADDRINUSE;
  }
  struct tcb *b = flow_alloc(t);
  if (!b) {
    t->stats.flow_limit_drops++;
    return -ENOBUFS;
  }
  tcb_init_common(t, b, lip, sport, dst, dport, now);
  cc_init(t, b);
  b->flags |= TF_APP;
  tcb_set_state(t, b, TCP_SYN_SENT);
  flowtab_insert(t, b);
  output_first_syn(t, b, now);
  t->stats.active_opens++;
  *flow_id = tcb_id(b);
  return 0;
}

void syn_sent_input(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now) {
  bool has_ack = r->flags & TCP_ACK;
  if (has_ack && (seq_le(r->ack, b->iss) || seq_gt(r->ack, b->snd_max))) {
    if (!(r->flags & TCP_RST)) output_rst_reply(t, b->lip, b->rip, r);
    return;
  }
  if (r->flags & TCP_RST) {
    if (has_ack) {
      t->stats.rsts_received++;
      flow_set_closed(t, b, -ECONNREFUSED);
    }
    return;
  }
  if (!(r->flags & TCP_SYN)) return;
  b->irs = r->seq;
  b->rcv_nxt = r->seq + 1;
  b->rcv_adv = b->rcv_nxt;
  tcb_apply_syn_options(t, b, r, now);
  b->snd_wnd = r->window;
  b->max_snd_wnd = b->snd_wnd;
  b->snd_wl1 = r->seq;
  if (has_ack) {
    b->snd_una = r->ack;
    b->snd_wl2 = r->ack;
    if ((b->flags & TF_TS_OK) && r->opts.ts_ecr) {
      rtt_sample(t, b, (uint32_t)(ts_now(b, now) - r->opts.ts_ecr) * 1000u);
    } else if ((b->flags & TF_RTT_TIMING) && b->retries == 0) {
      rtt_sample(t, b, (uint32_t)(now - b->rtt_time));
    }
    b->flags &= ~TF_RTT_TIMING;
    b->backoff = 0;
    b->retries = 0;
    timer_clear(t, b, TT_RTO);
    tcb_set_state(t, b, TCP_ESTABLISHED);
    b->flags |= TF_ACK_NOW;
    ev_raise(t, b, TCP_EV_CONNECTED);
    if (b->flags & TF_FIN_QUEUED) tcb_set_state(t, b, TCP_FIN_WAIT_1);
    tcp_output(t, b, now);
    return;
  }
  /* Simultaneous open: both SYNs crossed. */
  b->snd_wl2 = b->iss;
  tcb_set_state(t, b, TCP_SYN_RECEIVED);
  b->flags &= ~TF_RTT_TIMING;
  (void)output_syn(t, b, now);
}
