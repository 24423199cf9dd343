/* Congestion-control entry points shared by both algorithms: the initial window (RFC 6928), slow
 * start with appropriate byte counting (RFC 3465, L = 2 segments), and the RTO reaction (RFC 5681 §3.1:
 * ssthresh from the flight only on the first timeout of a segment, cwnd = one segment). The growth in
 * congestion avoidance and the multiplicative decrease are the algorithm's (cfg.cc). */
#include "tcb.h"

#define CWND_CAP (1u << 30)

uint32_t cc_flight(const struct tcb *b) { return b->snd_max - b->snd_una; }

void cc_init(struct cpb_tcp *t, struct tcb *b) {
  (void)t;
  uint32_t m = b->smss;
  b->cwnd = CPB_MIN(10 * m, CPB_MAX(2 * m, 14600u));
  b->ssthresh = CWND_CAP;
  b->bytes_acked = 0;
  cubic_reset(b);
}

void cc_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, cpb_time_t now) {
  if (b->cwnd < b->ssthresh) {
    b->cwnd += CPB_MIN(acked, 2u * b->smss);
    if (b->cwnd > b->ssthresh && b->ssthresh != CWND_CAP) b->cwnd = b->ssthresh;
  } else if (t->cfg.cc == TCP_CC_NEWRENO) {
    newreno_on_ack(t, b, acked);
  } else {
    cubic_on_ack(t, b, acked, now);
  }
  if (b->cwnd > CWND_CAP) b->cwnd = CWND_CAP;
}

void cc_on_loss(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  (void)now;
  uint32_t ss = t->cfg.cc == TCP_CC_NEWRENO ? newreno_ssthresh(b) : cubic_on_loss(b);
  b->ssthresh = CPB_MAX(ss, 2u * b->smss);
  b->cwnd = b->ssthresh;
  b->bytes_acked = 0;
}

void cc_on_rto(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (b->backoff == 0) {
    cc_on_loss(t, b, now);
  }
  b->cwnd = b->smss;
  b->bytes_acked = 0;
  b->cubic.epoch = 0;
}
