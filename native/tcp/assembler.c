/* Sorted disjoint sequence ranges. Comparisons are modular (seq_lt etc.), which is sound because all
 * ranges of one set lie within one receive window or one flight, far below 2^31. Insertion finds the
 * ranges the new one overlaps or touches, folds them into one, and shifts the tail of the array; with
 * at most eight entries that is cheaper than anything cleverer. */
#include "assembler.h"

void seqr_clear(struct seqranges *s) { memset(s, 0, sizeof(*s)); }

int seqr_add(struct seqranges *s, uint32_t left, uint32_t right) {
  if (!seq_lt(left, right)) return -EINVAL;
  int first = 0;
  while (first < s->n && seq_lt(s->r[first].right, left)) first++;
  int last = first; /* one past the last range merged */
  while (last < s->n && seq_le(s->r[last].left, right)) last++;
  int merged = last - first;
  if (merged == 0 && s->n == SEQR_MAX) return -ENOSPC;
  uint32_t l = left, r = right;
  if (merged > 0) {
    if (seq_lt(s->r[first].left, l)) l = s->r[first].left;
    if (seq_gt(s->r[last - 1].right, r)) r = s->r[last - 1].right;
  }
  int shift = 1 - merged; /* +1 inserts, 0 replaces, negative collapses */
  if (shift > 0) {
    memmove(&s->r[first + 1], &s->r[first], (size_t)(s->n - first) * sizeof(s->r[0]));
  } else if (shift < 0) {
    memmove(&s->r[first + 1], &s->r[last], (size_t)(s->n - last) * sizeof(s->r[0]));
  }
  s->n = (uint8_t)(s->n + shift);
  s->r[first].left = l;
  s->r[first].right = r;
  s->r[first].stamp = ++s->clock;
  return first;
}

static void seqr_remove(struct seqranges *s, int i) {
  memmove(&s->r[i], &s->r[i + 1], (size_t)(s->n - i - 1) * sizeof(s->r[0]));
  s->n--;
}

uint32_t seqr_pop_front(struct seqranges *s, uint32_t base) {
  while (s->n > 0 && seq_le(s->r[0].left, base)) {
    if (seq_gt(s->r[0].right, base)) base = s->r[0].right;
    seqr_remove(s, 0);
  }
  return base;
}

void seqr_trim(struct seqranges *s, uint32_t base) {
  while (s->n > 0 && seq_le(s->r[0].right, base)) seqr_remove(s, 0);
  if (s->n > 0 && seq_lt(s->r[0].left, base)) s->r[0].left = base;
}

bool seqr_contains(const struct seqranges *s, uint32_t seq) {
  for (int i = 0; i < s->n; i++)
    if (seq_ge(seq, s->r[i].left) && seq_lt(seq, s->r[i].right)) return true;
  return false;
}

uint32_t seqr_bytes(const struct seqranges *s) {
  uint32_t b = 0;
  for (int i = 0; i < s->n; i++) b += s->r[i].right - s->r[i].left;
  return b;
}

uint32_t seqr_bytes_above(const struct seqranges *s, uint32_t seq, uint32_t *ranges_above) {
  uint32_t b = 0, n = 0;
  for (int i = 0; i < s->n; i++) {
    if (seq_le(s->r[i].right, seq)) continue;
    uint32_t l = seq_gt(s->r[i].left, seq) ? s->r[i].left : seq + 1;
    if (seq_lt(l, s->r[i].right)) {
      b += s->r[i].right - l;
      n++;
    }
  }
  if (ranges_above) *ranges_above = n;
  return b;
}

int seqr_recent(const struct seqranges *s, struct seqrange *out, int max) {
  int cnt = 0;
  bool used[SEQR_MAX] = {false};
  while (cnt < max && cnt < s->n) {
    int best = -1;
    for (int i = 0; i < s->n; i++)
      if (!used[i] && (best < 0 || (int32_t)(s->r[i].stamp - s->r[best].stamp) > 0)) best = i;
    used[best] = true;
    out[cnt++] = s->r[best];
  }
  return cnt;
}
