/* Application events, coalesced per flow: each TCB (and listener) has a mask of pending event types and
 * sits at most once in an intrusive FIFO threaded through the slots, so the queue can never overflow
 * and a busy flow cannot flood it. Popping takes the oldest entry's lowest pending type (but ADOPTED
 * first, then CONNECTED before READABLE before WRITABLE before CLOSED) and keeps the entry at the head
 * while more remain.
 * FIFO entries are slot indices; listeners are marked with TCP_EV_LISTENER_BIT. */
#include "tcb.h"

static void fifo_push(struct cpb_tcp *t, uint32_t e) {
  if (t->ev_tail == TCP_NONE) t->ev_head = e;
  else if (t->ev_tail & TCP_EV_LISTENER_BIT) t->lis[t->ev_tail & ~TCP_EV_LISTENER_BIT].ev_next = e;
  else tcb_at(t, t->ev_tail)->ev_next = e;
  t->ev_tail = e;
}

static uint32_t *next_of(struct cpb_tcp *t, uint32_t e) {
  return (e & TCP_EV_LISTENER_BIT) ? &t->lis[e & ~TCP_EV_LISTENER_BIT].ev_next : &tcb_at(t, e)->ev_next;
}

static void fifo_remove(struct cpb_tcp *t, uint32_t e) {
  uint32_t prev = TCP_NONE, cur = t->ev_head;
  while (cur != TCP_NONE && cur != e) {
    prev = cur;
    cur = *next_of(t, cur);
  }
  if (cur == TCP_NONE) return;
  uint32_t nx = *next_of(t, e);
  if (prev == TCP_NONE) t->ev_head = nx;
  else *next_of(t, prev) = nx;
  if (t->ev_tail == e) t->ev_tail = prev;
}

void ev_raise(struct cpb_tcp *t, struct tcb *b, enum tcp_event_type ev) {
  if (!(b->flags & TF_APP)) return; /* unaccepted children and orphans have nobody to tell */
  if (ev == TCP_EV_CLOSED) {
    if (b->flags & TF_CLOSED_EV) return;
    b->flags |= TF_CLOSED_EV;
  }
  b->ev_mask |= (uint8_t)(1u << ev);
  if (b->flags & TF_EV_QUEUED) return;
  b->flags |= TF_EV_QUEUED;
  b->ev_next = TCP_NONE;
  fifo_push(t, b->self);
}

void ev_raise_listener(struct cpb_tcp *t, uint32_t lidx) {
  struct tcp_listener *l = &t->lis[lidx];
  l->ev_mask |= (uint8_t)(1u << TCP_EV_ACCEPTABLE);
  if (l->ev_queued) return;
  l->ev_queued = true;
  l->ev_next = TCP_NONE;
  fifo_push(t, lidx | TCP_EV_LISTENER_BIT);
}

void ev_cancel(struct cpb_tcp *t, struct tcb *b) {
  b->ev_mask = 0;
  if (!(b->flags & TF_EV_QUEUED)) return;
  b->flags &= ~TF_EV_QUEUED;
  fifo_remove(t, b->self);
}

void ev_cancel_listener(struct cpb_tcp *t, uint32_t lidx) {
  struct tcp_listener *l = &t->lis[lidx];
  l->ev_mask = 0;
  if (!l->ev_queued) return;
  l->ev_queued = false;
  fifo_remove(t, lidx | TCP_EV_LISTENER_BIT);
}

void ev_check_writable(struct cpb_tcp *t, struct tcb *b) {
  if (!(b->flags & TF_WANT_WRITABLE)) return;
  uint32_t room = t->cfg.sndbuf > b->sndq.len ? t->cfg.sndbuf - b->sndq.len : 0;
  if (room >= t->cfg.sndbuf / 4 || b->sndq.len == 0) {
    b->flags &= ~TF_WANT_WRITABLE;
    ev_raise(t, b, TCP_EV_WRITABLE);
  }
}

bool tcp_next_event(struct cpb_tcp *t, struct tcp_event *ev) {
  while (t->ev_head != TCP_NONE) {
    uint32_t e = t->ev_head;
    uint8_t *mask;
    uint64_t id;
    int32_t err = 0;
    if (e & TCP_EV_LISTENER_BIT) {
      struct tcp_listener *l = &t->lis[e & ~TCP_EV_LISTENER_BIT];
      mask = &l->ev_mask;
      id = TCP_ID_LISTENER | (e & ~TCP_EV_LISTENER_BIT) | ((uint64_t)l->gen << TCP_ID_SLOT_BITS);
    } else {
      struct tcb *b = tcb_at(t, e);
      mask = &b->ev_mask;
      id = tcb_id(b);
      err = b->err;
    }
    if (*mask == 0) {
      t->ev_head = *next_of(t, e);
      if (t->ev_head == TCP_NONE) t->ev_tail = TCP_NONE;
      if (e & TCP_EV_LISTENER_BIT) t->lis[e & ~TCP_EV_LISTENER_BIT].ev_queued = false;
      else tcb_at(t, e)->flags &= ~TF_EV_QUEUED;
      continue;
    }
    /* An adopted flow is announced before anything else about it, so the app knows the id first. */
    int type = (*mask & (1u << TCP_EV_ADOPTED)) ? TCP_EV_ADOPTED : __builtin_ctz(*mask);
    *mask &= (uint8_t)~(1u << type);
    ev->type = (enum tcp_event_type)type;
    ev->id = id;
    ev->err = type == TCP_EV_CLOSED ? err : 0;
    return true;
  }
  return false;
}

bool tcp_has_events(const struct cpb_tcp *t) {
  for (uint32_t e = t->ev_head; e != TCP_NONE;) {
    if (e & TCP_EV_LISTENER_BIT) {
      const struct tcp_listener *l = &t->lis[e & ~TCP_EV_LISTENER_BIT];
      if (l->ev_mask) return true;
      e = l->ev_next;
    } else {
      const struct tcb *b = tcb_at(t, e);
      if (b->ev_mask) return true;
      e = b->ev_next;
    }
  }
  return false;
}
