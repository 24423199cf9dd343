/* Timer bookkeeping. Each TCB keeps one deadline per timer kind (RTO, delayed ACK, persist, keepalive,
 * linger = TIME_WAIT / orphaned FIN_WAIT_2) and sits in a binary min-heap keyed by the earliest of them,
 * with its heap position stored in the TCB. Arming is O(log n), tcp_poll only touches flows that are
 * due, and the next deadline is the heap's top: no scan of all flows, ever. The heap array is sized
 * at init to the slot count. */
#include "tcb.h"


static inline cpb_time_t hkey(const struct cpb_tcp *t, uint32_t pos) { return tcb_at(t, t->heap[pos])->deadline; }

static void hswap(struct cpb_tcp *t, uint32_t a, uint32_t b) {
  uint32_t sa = t->heap[a], sb = t->heap[b];
  t->heap[a] = sb;
  t->heap[b] = sa;
  tcb_at(t, sb)->heap_pos = a + 1;
  tcb_at(t, sa)->heap_pos = b + 1;
}

static void sift_up(struct cpb_tcp *t, uint32_t i) {
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (hkey(t, p) <= hkey(t, i)) break;
    hswap(t, p, i);
    i = p;
  }
}

static void sift_down(struct cpb_tcp *t, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < t->heap_n && hkey(t, l) < hkey(t, m)) m = l;
    if (r < t->heap_n && hkey(t, r) < hkey(t, m)) m = r;
    if (m == i) break;
    hswap(t, i, m);
    i = m;
  }
}

static void heap_remove(struct cpb_tcp *t, struct tcb *b) {
  uint32_t i = b->heap_pos - 1;
  b->heap_pos = 0;
  t->heap_n--;
  if (i == t->heap_n) return;
  t->heap[i] = t->heap[t->heap_n];
  tcb_at(t, t->heap[i])->heap_pos = i + 1;
  sift_down(t, i);
  sift_up(t, i);
}

static void heap_update(struct cpb_tcp *t, struct tcb *b) {
  cpb_time_t d = 0;
  for (int k = 0; k < TT_COUNT; k++)
    if (b->timer[k] && (d == 0 || b->timer[k] < d)) d = b->timer[k];
  b->deadline = d;
  if (d == 0) {
    if (b->heap_pos) heap_remove(t, b);
    return;
  }
  if (!b->heap_pos) {
    t->heap[t->heap_n] = b->self;
    b->heap_pos = ++t->heap_n;
  }
  sift_down(t, b->heap_pos - 1);
  sift_up(t, b->heap_pos - 1);
}

void timer_set(struct cpb_tcp *t, struct tcb *b, enum tcp_timer k, cpb_time_t at) {
  if (at == 0) at = 1;
  if (b->timer[k] == at) return;
  b->timer[k] = at;
  heap_update(t, b);
}

void timer_clear(struct cpb_tcp *t, struct tcb *b, enum tcp_timer k) {
  if (!b->timer[k]) return;
  b->timer[k] = 0;
  heap_update(t, b);
}

void timer_clear_all(struct cpb_tcp *t, struct tcb *b) {
  memset(b->timer, 0, sizeof(b->timer));
  heap_update(t, b);
}

void timer_suspend(struct cpb_tcp *t, struct tcb *b) {
  if (b->heap_pos) heap_remove(t, b);
}

void timer_resume(struct cpb_tcp *t, struct tcb *b) { heap_update(t, b); }

cpb_time_t timers_next(const struct cpb_tcp *t) { return t->heap_n ? hkey(t, 0) : UINT64_MAX; }

uint32_t rto_current(const struct cpb_tcp *t, const struct tcb *b) {
  uint64_t r = (uint64_t)b->rto << CPB_MIN(b->backoff, 30);
  return (uint32_t)CPB_MIN(r, (uint64_t)t->cfg.rto_max_us);
}

void rto_arm(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) { timer_set(t, b, TT_RTO, now + rto_current(t, b)); }

void timers_run(struct cpb_tcp *t, cpb_time_t now) {
  /* Bounded: a handler always re-arms in the future, but never loop more than twice the flows. */
  uint32_t budget = 2 * t->nslots + 16;
  while (t->heap_n && hkey(t, 0) <= now && budget--) {
    struct tcb *b = tcb_at(t, t->heap[0]);
    unsigned due = 0;
    for (int k = 0; k < TT_COUNT; k++)
      if (b->timer[k] && b->timer[k] <= now) {
        due |= 1u << k;
        b->timer[k] = 0;
      }
    heap_update(t, b);
    timeout_fire(t, b, due, now);
  }
}
