/* Loss recovery driven by ACKs. Duplicate ACKs are counted (RFC 5681 definition; with SACK, an ACK that
 * carries SACK blocks for outstanding data also counts, RFC 6675). Limited transmit (RFC 3042) lets the
 * first two duplicates release new data. The third duplicate, or SACK showing SND.UNA lost, starts
 * recovery when the ACK is beyond `recover` (RFC 6582 §3.2 guards against a second reduction for the
 * same loss event):
 *   - with SACK: RFC 6675 — cwnd = ssthresh, retransmit the first hole now, then NextSeg under
 *     cwnd - pipe (driven from tcp_output); ends when SND.UNA passes the recovery point;
 *   - without: NewReno (RFC 6582) — cwnd = ssthresh + 3 SMSS, inflate per duplicate, retransmit the next
 *     hole on each partial ACK and deflate, full ACK sets cwnd = min(ssthresh, flight + SMSS).
 * An RTO ends recovery and throws the scoreboard away (RFC 2018 §8: the receiver may have reneged). */
#include "tcb.h"

static void retransmit_head(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  uint32_t end = snd_data_end(b);
  uint32_t len = seq_lt(b->snd_una, end) ? CPB_MIN(end - b->snd_una, (uint32_t)b->smss) : 0;
  int n = output_segment(t, b, b->snd_una, len, now);
  if (n >= 0 && seq_gt(b->snd_una + (uint32_t)n, b->high_rxt)) b->high_rxt = b->snd_una + (uint32_t)n;
}

static void enter_recovery(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  b->recover = b->snd_max;
  b->flags |= TF_IN_RECOVERY | TF_FIRST_PARTIAL;
  t->stats.fast_retransmits++;
  cc_on_loss(t, b, now);
  b->high_rxt = b->snd_una;
  if (b->flags & TF_SACK_OK) {
    b->flags |= TF_SACK_RECOVERY;
    t->stats.sack_recoveries++;
  } else {
    b->cwnd = b->ssthresh + 3u * b->smss;
  }
  b->limited_tx = 0;
  retransmit_head(t, b, now);
  rto_arm(t, b, now);
}

void recovery_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, uint32_t data_acked, bool is_dup,
                     cpb_time_t now) {
  if (acked) {
    b->dupacks = 0;
    b->limited_tx = 0;
    if (!(b->flags & TF_IN_RECOVERY)) {
      if (data_acked) cc_on_ack(t, b, data_acked, now); /* the SYN's or FIN's sequence number is no data */
      return;
    }
    if (seq_ge(b->snd_una, b->recover)) {
      uint32_t flight = cc_flight(b);
      b->cwnd = CPB_MIN(b->ssthresh, CPB_MAX(flight, (uint32_t)b->smss) + b->smss);
      b->flags &= ~(TF_IN_RECOVERY | TF_SACK_RECOVERY | TF_FIRST_PARTIAL);
      return;
    }
    if (!(b->flags & TF_SACK_RECOVERY)) {
      retransmit_head(t, b, now);
      b->cwnd = b->cwnd > acked ? b->cwnd - acked : 0;
      if (acked >= b->smss) b->cwnd += b->smss;
      if (b->cwnd < b->smss) b->cwnd = b->smss;
    }
    if (b->flags & TF_FIRST_PARTIAL) {
      b->flags &= ~TF_FIRST_PARTIAL;
      rto_arm(t, b, now);
    }
    return;
  }
  if (!is_dup) return;
  if (b->dupacks < 255) b->dupacks++;
  t->stats.dup_acks++;
  if (b->flags & TF_IN_RECOVERY) {
    if (!(b->flags & TF_SACK_RECOVERY)) b->cwnd += b->smss;
    return;
  }
  bool lost = b->dupacks >= 3 || ((b->flags & TF_SACK_OK) && sack_is_lost(b, b->snd_una));
  if (lost && b->snd_nxt == b->snd_max && seq_gt(b->snd_una, b->recover)) {
    enter_recovery(t, b, now);
  } else if (b->dupacks <= 2) {
    b->limited_tx = b->dupacks;
  }
}

void recovery_on_rto(struct cpb_tcp *t, struct tcb *b) {
  (void)t;
  b->flags &= ~(TF_IN_RECOVERY | TF_SACK_RECOVERY | TF_FIRST_PARTIAL);
  b->recover = b->snd_max;
  seqr_clear(&b->sacked);
  b->high_rxt = b->snd_una;
  b->dupacks = 0;
  b->limited_tx = 0;
}
