/* A small fixed set of disjoint sequence ranges [left, right), kept sorted, in the spirit of smoltcp's
 * Assembler. The receiver uses one to remember out-of-order data (and to report SACK blocks, most
 * recent first); the sender uses one as its SACK scoreboard. Fixed size so it fits in a TCB: a range
 * that would need a ninth slot is refused and the caller drops the segment (or ignores the block). */
#ifndef CPB_TCP_ASSEMBLER_H
#define CPB_TCP_ASSEMBLER_H
#include "../common.h"

#define SEQR_MAX 8

struct seqrange {
  uint32_t left, right;
  uint32_t stamp; /* bumped when the range last grew: SACK blocks are reported newest first */
};

struct seqranges {
  struct seqrange r[SEQR_MAX];
  uint32_t clock;
  uint8_t n;
};

void seqr_clear(struct seqranges *s);
/* Adds [left, right) merging with overlapping or touching ranges. Returns the index of the resulting
 * range, or -ENOSPC when it would need more than SEQR_MAX ranges (nothing changes then), -EINVAL when
 * empty. */
int seqr_add(struct seqranges *s, uint32_t left, uint32_t right);
/* If the first range starts at or before `base`, removes it and returns how far the contiguous data
 * now reaches (its right edge, or base if it ended before base); otherwise returns base. */
uint32_t seqr_pop_front(struct seqranges *s, uint32_t base);
/* Removes everything below `base` (cumulative ACK on the scoreboard). */
void seqr_trim(struct seqranges *s, uint32_t base);
/* True when seq lies inside a range. */
bool seqr_contains(const struct seqranges *s, uint32_t seq);
/* Total bytes covered, and bytes / ranges strictly above seq. */
uint32_t seqr_bytes(const struct seqranges *s);
uint32_t seqr_bytes_above(const struct seqranges *s, uint32_t seq, uint32_t *ranges_above);
/* Up to max ranges ordered by stamp, newest first. Returns the count. */
int seqr_recent(const struct seqranges *s, struct seqrange *out, int max);
#endif
