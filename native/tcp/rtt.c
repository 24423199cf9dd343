/* RTT estimation and the retransmission timeout per RFC 6298, in microseconds. Samples come from the
 * timestamp echo when timestamps are in use (RFC 7323 §4: the echo names the transmission, so
 * retransmissions are not ambiguous) and otherwise from one timed segment at a time that Karn's
 * algorithm invalidates when it is retransmitted (see output.c). A valid sample also ends the
 * exponential backoff. */
#include "tcb.h"

#define RTT_G_US 1000u /* clock granularity G: timestamps tick in milliseconds */

void rtt_init(struct cpb_tcp *t, struct tcb *b) {
  b->srtt = 0;
  b->rttvar = 0;
  b->rto = t->cfg.rto_initial_us;
  b->backoff = 0;
}

void rtt_sample(struct cpb_tcp *t, struct tcb *b, uint32_t r) {
  if (r == 0) r = 1;
  if (b->srtt == 0) {
    b->srtt = r;
    b->rttvar = r / 2;
  } else {
    uint32_t diff = b->srtt > r ? b->srtt - r : r - b->srtt;
    b->rttvar = (uint32_t)(((uint64_t)b->rttvar * 3 + diff) / 4);
    b->srtt = (uint32_t)(((uint64_t)b->srtt * 7 + r) / 8);
    if (b->srtt == 0) b->srtt = 1;
  }
  rto_update(t, b);
  b->backoff = 0;
}

void rto_update(struct cpb_tcp *t, struct tcb *b) {
  if (b->srtt == 0) return; /* no sample yet: the initial RTO stands (RFC 6298 2.1) */
  uint64_t rto = (uint64_t)b->srtt + CPB_MAX((uint64_t)RTT_G_US, 4ULL * b->rttvar);
  if (rto < rto_floor(t, b)) rto = rto_floor(t, b);
  if (rto > t->cfg.rto_max_us) rto = t->cfg.rto_max_us;
  b->rto = (uint32_t)rto;
}
