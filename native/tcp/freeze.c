/* Freezing a flow for live migration, and the two ways out of it: release (the target took it) and
 * unfreeze (it did not). A frozen flow stays in the flow table so its segments are still recognised,
 * but they are kept, not processed: the source must neither ACK data the target will not have nor
 * advance state the snapshot no longer shows. Held segments live in a pool of fixed buffers allocated
 * at tcp_init (cfg.hold_segs), threaded per flow in arrival order; a flow may hold at most
 * TCP_HOLD_FLOW_SEGS segments / TCP_HOLD_FLOW_BYTES, so one busy flow cannot starve the others, and
 * what does not fit is dropped and counted (the peer retransmits it). Every held segment raises the
 * flow's READABLE event, so the runtime can forward it as it arrives.
 *
 * The flow's clock stops at the freeze: its timers leave the heap with their deadlines, and unfreeze
 * shifts every deadline and age by the pause, and the timestamp offset by the pause in milliseconds,
 * so the flow resumes exactly where it stood (no RTO fires for the pause, TS.Val continues from where
 * it stopped and stays monotonic). The snapshot (migrate.c) expresses the same quantities relative to
 * the freeze instant, so unfreeze and adopt rebase alike. */
#include <stdlib.h>

#include "tcb.h"

int hold_init(struct cpb_tcp *t) {
  t->hold_free = TCP_NONE;
  if (t->cfg.hold_segs == 0) return 0;
  if (t->cfg.hold_segs > (1u << 20)) return -EINVAL;
  t->hold = malloc(sizeof(struct tcp_held) * t->cfg.hold_segs);
  if (!t->hold) return -ENOMEM;
  for (uint32_t i = 0; i < t->cfg.hold_segs; i++) t->hold[i].next = i + 1 < t->cfg.hold_segs ? i + 1 : TCP_NONE;
  t->hold_free = 0;
  return 0;
}

void hold_fini(struct cpb_tcp *t) {
  free(t->hold);
  t->hold = NULL;
  t->hold_free = TCP_NONE;
}

void hold_segment(struct cpb_tcp *t, struct tcb *b, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  if (t->hold_free == TCP_NONE || len > TCP_HOLD_SEG_MAX || b->hold_n >= TCP_HOLD_FLOW_SEGS ||
      b->hold_bytes + len > TCP_HOLD_FLOW_BYTES) {
    t->stats.held_drops++;
    return;
  }
  uint32_t i = t->hold_free;
  struct tcp_held *h = &t->hold[i];
  t->hold_free = h->next;
  h->next = TCP_NONE;
  h->len = (uint32_t)len;
  h->src = src;
  h->dst = dst;
  memcpy(h->data, seg, len);
  if (b->hold_tail == TCP_NONE) b->hold_head = i;
  else t->hold[b->hold_tail].next = i;
  b->hold_tail = i;
  b->hold_n++;
  b->hold_bytes += (uint32_t)len;
  t->stats.held_segments++;
  /* Tell the migrating application at once (a frozen flow has nothing else to read): it passes held
   * segments on to the target while the target is still adopting, so forwarding is off the blackout's
   * critical path. */
  ev_raise(t, b, TCP_EV_READABLE);
}

/* Unlinks the oldest held segment; the caller returns it with hold_put once done with the bytes. */
static struct tcp_held *hold_pop(struct cpb_tcp *t, struct tcb *b, uint32_t *idx) {
  uint32_t i = b->hold_head;
  if (i == TCP_NONE) return NULL;
  struct tcp_held *h = &t->hold[i];
  b->hold_head = h->next;
  if (b->hold_head == TCP_NONE) b->hold_tail = TCP_NONE;
  b->hold_n--;
  b->hold_bytes -= h->len;
  *idx = i;
  return h;
}

static void hold_put(struct cpb_tcp *t, uint32_t i) {
  t->hold[i].next = t->hold_free;
  t->hold_free = i;
}

void hold_drop_all(struct cpb_tcp *t, struct tcb *b) {
  uint32_t i;
  while (hold_pop(t, b, &i)) hold_put(t, i);
}

/* Frozen flows are named by the app's id like any other; only the app (or the runtime on its behalf)
 * migrates a flow. */
static struct tcb *frozen_by_id(struct cpb_tcp *t, uint64_t id, int *err) {
  struct tcb *b = flow_by_id(t, id);
  if (!b) {
    *err = -ENOENT;
    return NULL;
  }
  if (!tcb_frozen(b)) {
    *err = -EINVAL;
    return NULL;
  }
  return b;
}

int tcp_freeze(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) return -EALREADY;
  switch (b->state) {
    case TCP_ESTABLISHED:
    case TCP_FIN_WAIT_1:
    case TCP_FIN_WAIT_2:
    case TCP_CLOSE_WAIT:
    case TCP_CLOSING:
    case TCP_LAST_ACK:
      break;
    default:
      return -ENOTCONN;
  }
  b->flags |= TF_FROZEN;
  b->frozen_at = now;
  output_unschedule(t, b); /* output owed stays owed (TF_ACK_NOW travels in the snapshot) */
  timer_suspend(t, b);
  t->stats.frozen++;
  return 0;
}

static cpb_time_t shifted(cpb_time_t v, cpb_time_t d) { return v ? v + d : 0; }

int tcp_unfreeze(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  int err = 0;
  struct tcb *b = frozen_by_id(t, flow_id, &err);
  if (!b) return err;
  t->now = now;
  cpb_time_t pause = now > b->frozen_at ? now - b->frozen_at : 0;
  for (int k = 0; k < TT_COUNT; k++) b->timer[k] = shifted(b->timer[k], pause);
  b->rtt_time += pause;
  b->ts_recent_age += pause;
  b->last_rcv += pause;
  b->cubic.epoch = shifted(b->cubic.epoch, pause);
  /* TS.Val = now_ms + offset continues from its value at the freeze (never below it: the floor of a
   * sum is at least the sum of the floors). */
  b->ts_offset -= (uint32_t)(pause / CPB_US_PER_MS);
  b->flags &= ~TF_FROZEN;
  timer_resume(t, b);
  t->stats.unfrozen++;
  uint32_t i;
  struct tcp_held *h;
  while ((h = hold_pop(t, b, &i)) != NULL) {
    tcp_input(t, h->src, h->dst, h->data, h->len, now); /* may close the flow; the app still holds it */
    hold_put(t, i);
  }
  if (b->state != TCP_CLOSED) output_schedule(t, b);
  return 0;
}

int tcp_release(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  int err = 0;
  struct tcb *b = frozen_by_id(t, flow_id, &err);
  if (!b) return err;
  t->now = now;
  hold_drop_all(t, b);
  b->flags &= ~(TF_APP | TF_FROZEN | TF_WANT_WRITABLE);
  b->state = TCP_CLOSED; /* not flow_set_closed: no event, no RST, the connection lives on elsewhere */
  t->stats.released++;
  flow_maybe_free(t, b);
  return 0;
}

int tcp_held_drain(struct cpb_tcp *t, uint64_t flow_id, tcp_held_fn fn, void *ctx) {
  int err = 0;
  struct tcb *b = frozen_by_id(t, flow_id, &err);
  if (!b) return err;
  int n = 0;
  uint32_t i, todo = b->hold_n; /* what fn feeds back in (it should not) waits for the next drain */
  struct tcp_held *h;
  while (todo-- > 0 && (h = hold_pop(t, b, &i)) != NULL) {
    if (fn) fn(ctx, h->src, h->dst, h->data, h->len);
    hold_put(t, i);
    n++;
  }
  return n;
}
