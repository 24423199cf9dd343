/* Receiving data and FIN (RFC 9293 §3.10.7.4 "seventh"/"eighth"). The segment is trimmed to
 * [RCV.NXT, right edge of the advertised window]. In-order bytes are appended to the receive queue and
 * pull in any out-of-order ranges they now touch; out-of-order bytes are written at their offset in
 * the same chunk chain and remembered in the assembler (a segment that would need a ninth hole, or a
 * chunk the pool does not have, is dropped and the sender retransmits). A FIN beyond a hole waits for
 * the hole to fill. ACK policy, Linux-like: immediately for out-of-order data, hole fills and FIN;
 * otherwise every second full-sized segment, or after delack_us. An orphan (app closed) that receives
 * new data answers with RST, as Linux does, since nobody will ever read it. */
#include "tcb.h"

uint32_t rcv_max_chunks(const struct cpb_tcp *t, const struct tcb *b) {
  return (t->cfg.rcvbuf + (1u << b->rcv_wscale) + 2 * CPB_CHUNK_SIZE) / CPB_CHUNK_SIZE + 1;
}

static void fin_received(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  /* Out-of-order bytes still held lie beyond the FIN: the peer contradicted itself. The FIN wins and
   * they go (Linux drops its out-of-order queue in tcp_fin too); kept, they would sit at RCV.NXT for ever
   * and make the flow's snapshot unadoptable (fuzz_tcp_input, regressions/tcp_input/ooo-data-past-fin). */
  if (b->ooo.n) {
    seqr_clear(&b->ooo);
    chunkq_truncate(t->arena, &b->rcvq, b->rcvq.len);
  }
  b->rcv_nxt++;
  b->flags |= TF_FIN_RCVD | TF_ACK_NOW;
  b->flags &= ~TF_OOO_FIN;
  ev_raise(t, b, TCP_EV_READABLE);
  switch (b->state) {
    case TCP_ESTABLISHED:
      tcb_set_state(t, b, TCP_CLOSE_WAIT);
      break;
    case TCP_FIN_WAIT_1:
      if (fin_acked(b)) enter_time_wait(t, b, now);
      else tcb_set_state(t, b, TCP_CLOSING);
      break;
    case TCP_FIN_WAIT_2:
      enter_time_wait(t, b, now);
      break;
    default:
      break;
  }
}

static void delack_or_ack(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (b->flags & TF_ACK_NOW) return;
  if (b->rcv_nxt - b->last_ack_sent >= 2u * b->rcv_mss) {
    b->flags |= TF_ACK_NOW;
  } else if (!timer_armed(b, TT_DELACK)) {
    timer_set(t, b, TT_DELACK, now + t->cfg.delack_us);
  }
}

void data_process(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r, cpb_time_t now) {
  if (b->state != TCP_ESTABLISHED && b->state != TCP_FIN_WAIT_1 && b->state != TCP_FIN_WAIT_2) return;
  uint32_t seq = r->seq, len = r->payload_len;
  const uint8_t *p = r->payload;
  bool fin = r->flags & TCP_FIN;

  if (seq_lt(seq, b->rcv_nxt)) {
    uint32_t d = b->rcv_nxt - seq;
    if (d > len) {
      len = 0;
      fin = false;
    } else {
      p += d;
      len -= d;
      seq = b->rcv_nxt;
    }
  }
  uint32_t wend = seq_gt(b->rcv_adv, b->rcv_nxt) ? b->rcv_adv : b->rcv_nxt;
  if (seq_gt(seq + len, wend)) {
    len = seq_gt(wend, seq) ? wend - seq : 0;
    fin = false;
  }
  if (len && (b->flags & TF_DISCARD)) {
    (void)output_rst_for(t, b, now);
    flow_set_closed(t, b, -ECONNRESET);
    return;
  }
  if (!len && !fin) {
    b->flags |= TF_ACK_NOW; /* e.g. a probe beyond the window: tell the sender where we stand */
    return;
  }

  if (len) {
    if (len > b->rcv_mss) b->rcv_mss = (uint16_t)CPB_MIN(len, (uint32_t)t->cfg.mss);
    if (seq == b->rcv_nxt) {
      bool had_holes = b->ooo.n > 0;
      if (chunkq_append(t->arena, &b->rcvq, p, len, rcv_max_chunks(t, b)) != 0) {
        t->stats.chunk_exhausted++;
        return;
      }
      b->rcv_nxt += len;
      t->stats.bytes_in += len;
      b->bytes_in += len;
      if (had_holes) {
        uint32_t nn = seqr_pop_front(&b->ooo, b->rcv_nxt);
        if (nn != b->rcv_nxt) {
          chunkq_extend(&b->rcvq, nn - b->rcv_nxt);
          b->rcv_nxt = nn;
        }
        if (b->ooo.n == 0) chunkq_truncate(t->arena, &b->rcvq, b->rcvq.len);
        b->flags |= TF_ACK_NOW;
      }
      ev_raise(t, b, TCP_EV_READABLE);
      if ((b->flags & TF_OOO_FIN) && b->rcv_nxt == b->ooo_fin_seq) fin = true;
      else if (fin && seq + len != b->rcv_nxt) fin = false; /* FIN sits beyond a range we still hold */
      /* Data went past a FIN we were waiting for: the peer contradicted itself; its later bytes win and
       * the stale FIN is forgotten (kept, it would never match RCV.NXT and breaks the snapshot's rules;
       * found by fuzz_tcp_input, test/fuzz/regressions/tcp_input/ooo-fin-passed). */
      if ((b->flags & TF_OOO_FIN) && seq_gt(b->rcv_nxt, b->ooo_fin_seq)) b->flags &= ~TF_OOO_FIN;
      delack_or_ack(t, b, now);
    } else {
      uint32_t off = b->rcvq.len + (seq - b->rcv_nxt);
      t->stats.ooo_segments++;
      b->flags |= TF_ACK_NOW;
      if (chunkq_write(t->arena, &b->rcvq, off, p, len, rcv_max_chunks(t, b)) != 0) {
        t->stats.chunk_exhausted++;
        return;
      }
      if (seqr_add(&b->ooo, seq, seq + len) < 0) {
        if (b->ooo.n == 0) chunkq_truncate(t->arena, &b->rcvq, b->rcvq.len);
        return;
      }
      if (fin) {
        b->flags |= TF_OOO_FIN;
        b->ooo_fin_seq = seq + len;
      }
      return;
    }
  } else if (seq != b->rcv_nxt) {
    b->flags |= TF_OOO_FIN | TF_ACK_NOW;
    b->ooo_fin_seq = seq;
    return;
  }
  if (fin) fin_received(t, b, now);
}

void rcv_after_read(struct cpb_tcp *t, struct tcb *b) {
  if (b->state != TCP_ESTABLISHED && b->state != TCP_FIN_WAIT_1 && b->state != TCP_FIN_WAIT_2) return;
  uint32_t cur = seq_gt(b->rcv_adv, b->rcv_nxt) ? b->rcv_adv - b->rcv_nxt : 0;
  uint32_t avail = rcv_window_avail(t, b);
  uint32_t maxw = 65535u << b->rcv_wscale;
  if (avail > maxw) avail = maxw;
  uint32_t sws = CPB_MIN(t->cfg.rcvbuf / 2, (uint32_t)b->rcv_mss);
  if (avail > cur && avail - cur >= sws && avail >= 2 * cur) {
    b->flags |= TF_ACK_NOW;
    output_schedule(t, b);
  }
}
