/* NewReno window growth (RFC 5681 §3.1) counted in bytes: cwnd grows by one segment once a whole
 * window's worth of bytes has been acknowledged, which is exact under delayed ACKs where the per-ACK
 * formula undercounts. The loss response halves the flight. The recovery mechanics (fast retransmit,
 * partial ACKs, RFC 6582) are in recovery.c and shared with CUBIC. */
#include "tcb.h"

void newreno_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked) {
  (void)t;
  b->bytes_acked += acked;
  if (b->bytes_acked >= b->cwnd) {
    b->bytes_acked -= b->cwnd;
    b->cwnd += b->smss;
  }
}

uint32_t newreno_ssthresh(const struct tcb *b) { return cc_flight(b) / 2; }
