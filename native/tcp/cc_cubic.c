/* CUBIC (RFC 9438) in segments and seconds. W_cubic(t) = C (t - K)^3 + W_max with C = 0.4, beta = 0.7,
 * K = cbrt((W_max - cwnd_epoch) / C). Each ACK moves cwnd toward W_cubic(t + RTT) (bounded to 1.5x), and
 * the Reno-friendly estimate W_est (alpha = 3(1-beta)/(1+beta)) takes over where it is larger. Fractional
 * growth is accumulated in a double (cubic.acc) so small increments are not lost to truncation. Fast
 * convergence lowers W_max when a loss happens below the previous maximum. */
#include "tcb.h"

#define CUBIC_C 0.4
#define CUBIC_BETA 0.7

static double cbrt_pos(double v) {
  if (v <= 0) return 0;
  double x = v > 1 ? v / 3 : 1;
  for (int i = 0; i < 100; i++) {
    double nx = (2 * x + v / (x * x)) / 3;
    if (nx == x || (nx < x ? x - nx : nx - x) < 1e-9 * x) return nx;
    x = nx;
  }
  return x;
}

void cubic_reset(struct tcb *b) { memset(&b->cubic, 0, sizeof(b->cubic)); }

void cubic_on_ack(struct cpb_tcp *t, struct tcb *b, uint32_t acked, cpb_time_t now) {
  (void)t;
  double mss = b->smss;
  double cw = b->cwnd / mss;
  if (b->cubic.epoch == 0) {
    b->cubic.epoch = now ? now : 1;
    if (cw < b->cubic.w_max) {
      b->cubic.k = cbrt_pos((b->cubic.w_max - cw) / CUBIC_C);
    } else {
      b->cubic.k = 0;
      b->cubic.w_max = cw;
    }
    b->cubic.w_est = cw;
    b->cubic.acc = 0;
  }
  double tt = (double)(now - b->cubic.epoch + b->srtt) / 1e6;
  double d = tt - b->cubic.k;
  double target = CUBIC_C * d * d * d + b->cubic.w_max;
  if (target < cw) target = cw;
  if (target > 1.5 * cw) target = 1.5 * cw;
  double segs = acked / mss;
  double alpha = b->cubic.w_est < b->cubic.w_max ? 3.0 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA) : 1.0;
  b->cubic.w_est += alpha * segs / cw;
  double inc = (target - cw) / cw * segs; /* segments */
  double next = cw + inc;
  if (b->cubic.w_est > next) next = b->cubic.w_est;
  /* carry sub-byte growth in bytes_acked so it accumulates across ACKs */
  double grow = (next - cw) * mss + b->cubic.acc;
  if (grow < 0) grow = 0;
  uint32_t whole = (uint32_t)grow;
  b->cwnd += whole;
  b->cubic.acc = grow - whole;
}

uint32_t cubic_on_loss(struct tcb *b) {
  double cw = b->cwnd / (double)b->smss;
  if (cw < b->cubic.w_last_max) b->cubic.w_max = cw * (1 + CUBIC_BETA) / 2;
  else b->cubic.w_max = cw;
  b->cubic.w_last_max = cw;
  b->cubic.epoch = 0;
  return (uint32_t)(b->cwnd * CUBIC_BETA);
}
