/* The sender's SACK scoreboard and the RFC 6675 helpers computed from it. The scoreboard is a set of
 * SACKed ranges above SND.UNA; a "hole" is an unSACKed gap below the highest SACKed byte. Because nothing
 * inside a hole is SACKed, IsLost() is the same for every byte of a hole, so Pipe and NextSeg work hole
 * by hole instead of segment by segment. HighRxt marks how far holes have been retransmitted. Blocks
 * that make no sense (below SND.UNA as D-SACK, beyond SND.MAX, inverted) are ignored. */
#include "tcb.h"

#define DUPTHRESH 3u

void sack_update(struct cpb_tcp *t, struct tcb *b, const struct tcp_repr *r) {
  (void)t;
  if (!(b->flags & TF_SACK_OK)) return;
  for (int i = 0; i < r->opts.nsack && i < TCP_MAX_SACK_BLOCKS; i++) {
    uint32_t l = r->opts.sack[i].left, rr = r->opts.sack[i].right;
    if (!seq_lt(l, rr) || !seq_gt(rr, b->snd_una) || seq_gt(rr, b->snd_max)) continue;
    if (seq_lt(l, b->snd_una)) l = b->snd_una;
    (void)seqr_add(&b->sacked, l, rr); /* a full scoreboard only loses information */
  }
}

bool sack_is_lost(const struct tcb *b, uint32_t seq) {
  uint32_t ranges;
  uint32_t bytes = seqr_bytes_above(&b->sacked, seq, &ranges);
  return ranges >= DUPTHRESH || bytes > (DUPTHRESH - 1) * b->smss;
}

static uint32_t overlap(uint32_t l1, uint32_t r1, uint32_t l2, uint32_t r2) {
  uint32_t l = seq_gt(l1, l2) ? l1 : l2;
  uint32_t r = seq_lt(r1, r2) ? r1 : r2;
  return seq_lt(l, r) ? r - l : 0;
}

uint32_t sack_pipe(const struct tcb *b) {
  uint32_t pipe = 0, cur = b->snd_una;
  uint32_t rx_end = seq_gt(b->high_rxt, b->snd_una) ? b->high_rxt : b->snd_una;
  for (int i = 0; i < b->sacked.n; i++) {
    uint32_t hl = cur, hr = b->sacked.r[i].left;
    if (seq_lt(hl, hr)) {
      if (!sack_is_lost(b, hl)) pipe += hr - hl;
      pipe += overlap(hl, hr, b->snd_una, rx_end);
    }
    cur = b->sacked.r[i].right;
  }
  if (seq_lt(cur, b->snd_max)) {
    pipe += b->snd_max - cur;
    pipe += overlap(cur, b->snd_max, b->snd_una, rx_end);
  }
  return pipe;
}

bool sack_next_seg(struct cpb_tcp *t, struct tcb *b, uint32_t *seq, uint32_t *len, bool *is_new) {
  (void)t;
  uint32_t start = seq_gt(b->high_rxt, b->snd_una) ? b->high_rxt : b->snd_una;
  uint32_t cur = b->snd_una;
  /* Rule 1: the first lost, not yet retransmitted hole byte. */
  for (int i = 0; i < b->sacked.n; i++) {
    uint32_t hl = seq_gt(start, cur) ? start : cur, hr = b->sacked.r[i].left;
    if (seq_lt(hl, hr) && sack_is_lost(b, hl)) {
      *seq = hl;
      *len = CPB_MIN(hr - hl, (uint32_t)b->smss);
      *is_new = false;
      return true;
    }
    cur = b->sacked.r[i].right;
  }
  /* Rule 2: new data the receiver's window allows. */
  uint32_t end = snd_data_end(b);
  uint32_t wend = b->snd_una + b->snd_wnd;
  if (seq_lt(b->snd_nxt, end) && seq_lt(b->snd_nxt, wend)) {
    *seq = b->snd_nxt;
    *len = CPB_MIN(CPB_MIN(end - b->snd_nxt, wend - b->snd_nxt), (uint32_t)b->smss);
    *is_new = true;
    return true;
  }
  /* Rule 3: an unSACKed byte below the highest SACK that is not (yet) deemed lost. */
  cur = b->snd_una;
  for (int i = 0; i < b->sacked.n; i++) {
    uint32_t hl = seq_gt(start, cur) ? start : cur, hr = b->sacked.r[i].left;
    if (seq_lt(hl, hr)) {
      *seq = hl;
      *len = CPB_MIN(hr - hl, (uint32_t)b->smss);
      *is_new = false;
      return true;
    }
    cur = b->sacked.r[i].right;
  }
  return false;
}
