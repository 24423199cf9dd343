/* Flow lifecycle. A TCB slot is taken at SYN (passive) or connect (active) and given back only when both
 * sides are done with it: the protocol (state CLOSED, which TIME_WAIT expiry also leads to) and the
 * application (tcp_close/tcp_abort, or never having accepted it). Ids are slot | generation << 20 with
 * the generation kept in a per-slot array outside the slot (the arena zeroes slots on allocation) and
 * bumped on free, so an id that outlived its flow finds nothing instead of a stranger's connection. */
#include "tcb.h"

static const char *const state_names[] = {
    "CLOSED",     "LISTEN",     "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
    "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING",  "LAST_ACK",     "TIME_WAIT",
};

const char *tcp_state_name(enum tcp_state s) {
  return (unsigned)s < CPB_ARRAY_LEN(state_names) ? state_names[s] : "?";
}

struct tcb *flow_alloc(struct cpb_tcp *t) {
  if (t->stats.flows_current >= t->cfg.max_flows) return NULL;
  uint32_t idx = cpb_arena_slot_alloc(t->arena);
  if (idx == CPB_NO_SLOT) return NULL;
  if (idx >= t->nslots) {
    cpb_arena_slot_free(t->arena, idx);
    return NULL;
  }
  struct tcb *b = tcb_at(t, idx);
  b->self = idx;
  b->gen = t->gen[idx];
  b->listener = 0;
  b->acc_next = b->acc_prev = b->ev_next = b->out_next = TCP_NONE;
  b->hold_head = b->hold_tail = TCP_NONE;
  chunkq_init(&b->sndq);
  chunkq_init(&b->rcvq);
  seqr_clear(&b->ooo);
  seqr_clear(&b->sacked);
  t->live[idx] = 1;
  t->stats.flows_current++;
  return b;
}

struct tcb *flow_by_id(struct cpb_tcp *t, uint64_t id) {
  if (id & TCP_ID_LISTENER) return NULL;
  uint32_t idx = (uint32_t)(id & TCP_ID_SLOT_MASK);
  uint64_t gen = id >> TCP_ID_SLOT_BITS;
  if (idx >= t->nslots || !t->live[idx] || gen != t->gen[idx]) return NULL;
  struct tcb *b = tcb_at(t, idx);
  return (b->flags & TF_APP) ? b : NULL;
}

void tcb_set_state(struct cpb_tcp *t, struct tcb *b, enum tcp_state s) {
  if (s == TCP_ESTABLISHED && b->state != TCP_ESTABLISHED) t->stats.established++;
  b->state = (uint8_t)s;
}

void flow_set_closed(struct cpb_tcp *t, struct tcb *b, int err) {
  if (b->state == TCP_CLOSED) return;
  b->state = TCP_CLOSED;
  if (!b->err) b->err = err;
  flowtab_remove(t, b);
  timer_clear_all(t, b);
  output_unschedule(t, b);
  chunkq_clear(t->arena, &b->sndq);
  b->flags &= ~(TF_IN_RECOVERY | TF_SACK_RECOVERY);
  if (err) {
    chunkq_clear(t->arena, &b->rcvq);
    seqr_clear(&b->ooo);
    if (err == -ETIMEDOUT) t->stats.timeouts++;
  }
  ev_raise(t, b, TCP_EV_CLOSED);
}

bool flow_maybe_free(struct cpb_tcp *t, struct tcb *b) {
  if (b->state != TCP_CLOSED || (b->flags & TF_APP)) return false;
  if (b->listener) listen_detach(t, b);
  hold_drop_all(t, b);
  ev_cancel(t, b);
  output_unschedule(t, b);
  timer_clear_all(t, b);
  flowtab_remove(t, b);
  chunkq_clear(t->arena, &b->sndq);
  chunkq_clear(t->arena, &b->rcvq);
  uint32_t idx = b->self;
  uint32_t g = (t->gen[idx] + 1) & TCP_GEN_MASK;
  t->gen[idx] = g ? g : 1;
  t->live[idx] = 0;
  t->stats.flows_current--;
  cpb_arena_slot_free(t->arena, idx);
  return true;
}

void flow_fill_info(const struct cpb_tcp *t, const struct tcb *b, struct tcp_flow_info *fi) {
  memset(fi, 0, sizeof(*fi));
  fi->id = tcb_id(b);
  fi->state = (enum tcp_state)b->state;
  fi->local_ip = b->lip;
  fi->remote_ip = b->rip;
  fi->local_port = b->lport;
  fi->remote_port = b->rport;
  fi->snd_una = b->snd_una;
  fi->snd_nxt = b->snd_nxt;
  fi->snd_wnd = b->snd_wnd;
  fi->rcv_nxt = b->rcv_nxt;
  fi->rcv_wnd = seq_gt(b->rcv_adv, b->rcv_nxt) ? b->rcv_adv - b->rcv_nxt : 0;
  fi->snd_wscale = b->snd_wscale;
  fi->rcv_wscale = b->rcv_wscale;
  fi->ts_ok = b->flags & TF_TS_OK;
  fi->sack_ok = b->flags & TF_SACK_OK;
  fi->nodelay = b->flags & TF_NODELAY;
  fi->keepalive = b->flags & TF_KEEPALIVE;
  fi->mss = b->smss;
  fi->cwnd = b->cwnd;
  fi->ssthresh = b->ssthresh;
  fi->srtt_us = b->srtt;
  fi->rttvar_us = b->rttvar;
  fi->rto_us = rto_current(t, b);
  uint32_t sent = seq_gt(b->snd_max, b->sndq_seq) ? b->snd_max - b->sndq_seq : 0;
  fi->unacked_bytes = CPB_MIN(sent, b->sndq.len);
  fi->unsent_bytes = b->sndq.len - fi->unacked_bytes;
  fi->readable_bytes = b->rcvq.len;
  fi->bytes_in = b->bytes_in;
  fi->bytes_out = b->bytes_out;
  fi->retransmits = b->retransmits;
  fi->frozen = tcb_frozen(b);
  fi->held_segs = b->hold_n;
}
