/* Listeners and the passive open. A listener is a small record outside the arena (it holds no data),
 * named by an id with TCP_ID_LISTENER set. Each SYN that fits the backlog (half-open + ready children
 * < backlog; beyond it a SYN cookie answers, syncookie.c) gets a full TCB in SYN_RECEIVED right away,
 * which keeps one code path for every state; the children hang off the listener in two doubly-linked lists (half-open,
 * ready) so establishing, accepting and dying are O(1). Segments to a listener follow RFC 9293
 * §3.10.7.2: RST ignored, ACK answered with RST, SYN opens. */
#include "tcb.h"

struct tcp_listener *listener_find(struct cpb_tcp *t, uint16_t port) {
  for (uint32_t i = 0; i < t->cfg.max_listeners; i++)
    if (t->lis[i].used && t->lis[i].port == port) return &t->lis[i];
  return NULL;
}

static struct tcp_listener *listener_by_id(struct cpb_tcp *t, uint64_t id, uint32_t *idx) {
  if (!(id & TCP_ID_LISTENER)) return NULL;
  uint32_t i = (uint32_t)(id & TCP_ID_SLOT_MASK);
  uint64_t gen = (id & ~TCP_ID_LISTENER) >> TCP_ID_SLOT_BITS;
  if (i >= t->cfg.max_listeners || !t->lis[i].used || t->lis[i].gen != gen) return NULL;
  *idx = i;
  return &t->lis[i];
}

/* Pushes at the tail when a tail pointer is given (ready list, oldest first), else at the head. */
static void list_push(struct cpb_tcp *t, uint32_t *head, uint32_t *tail, struct tcb *b) {
  if (!tail) {
    b->acc_prev = TCP_NONE;
    b->acc_next = *head;
    if (*head != TCP_NONE) tcb_at(t, *head)->acc_prev = b->self;
    *head = b->self;
    return;
  }
  b->acc_next = TCP_NONE;
  b->acc_prev = *tail;
  if (*tail == TCP_NONE) *head = b->self;
  else tcb_at(t, *tail)->acc_next = b->self;
  *tail = b->self;
}

static void list_unlink(struct cpb_tcp *t, uint32_t *head, uint32_t *tail, struct tcb *b) {
  if (b->acc_prev == TCP_NONE) *head = b->acc_next;
  else tcb_at(t, b->acc_prev)->acc_next = b->acc_next;
  if (b->acc_next == TCP_NONE) {
    if (tail) *tail = b->acc_prev;
  } else {
    tcb_at(t, b->acc_next)->acc_prev = b->acc_prev;
  }
  b->acc_next = b->acc_prev = TCP_NONE;
}

void listen_established(struct cpb_tcp *t, struct tcb *b) {
  if (!b->listener || (b->flags & TF_ACCEPT_Q)) return;
  uint32_t li = b->listener - 1;
  struct tcp_listener *l = &t->lis[li];
  list_unlink(t, &l->half_head, NULL, b);
  l->nhalf--;
  list_push(t, &l->ready_head, &l->ready_tail, b);
  l->nqueued++;
  b->flags |= TF_ACCEPT_Q;
  ev_raise_listener(t, li);
}

void listen_detach(struct cpb_tcp *t, struct tcb *b) {
  if (!b->listener) return;
  struct tcp_listener *l = &t->lis[b->listener - 1];
  if (b->flags & TF_ACCEPT_Q) {
    list_unlink(t, &l->ready_head, &l->ready_tail, b);
    l->nqueued--;
  } else {
    list_unlink(t, &l->half_head, NULL, b);
    l->nhalf--;
  }
  b->flags &= ~TF_ACCEPT_Q;
  b->listener = 0;
}

/* The final ACK of a SYN-cookie handshake (syncookie.c): the TCB the SYN did not get is built now, in
 * SYN_RECEIVED as if it had waited in the queue, and the ACK (with any data on it) completes it through
 * the ordinary path. Returns false when the ACK is no valid cookie (the caller answers it with a RST). */
static bool cookie_accept(struct cpb_tcp *t, struct tcp_listener *l, cpb_ip4_t lip, cpb_ip4_t rip,
                          const struct tcp_repr *r, cpb_time_t now) {
  if (!l->cookie_at || now - l->cookie_at > SYNCOOKIE_CHECK_US) return false;
  struct tcp_repr syn;
  if (!syncookie_check(t, lip, rip, r, now, &syn)) {
    t->stats.syncookies_failed++;
    return false;
  }
  if (l->nqueued >= l->backlog) {
    t->stats.backlog_drops++; /* the app is not accepting: the peer's retransmission may find room */
    return true;
  }
  struct tcb *b = flow_alloc(t);
  if (!b) {
    t->stats.flow_limit_drops++;
    output_rst_reply(t, lip, rip, r); /* at max flows: refused, as a SYN would be */
    return true;
  }
  tcb_init_common(t, b, lip, r->dport, rip, r->sport, now);
  uint32_t iss = r->ack - 1;
  b->iss = b->snd_una = b->snd_sml = b->recover = iss;
  b->snd_nxt = b->snd_max = b->sndq_seq = iss + 1;
  tcb_apply_syn_options(t, b, &syn, now);
  b->irs = syn.seq;
  b->rcv_nxt = syn.seq + 1;
  b->rcv_adv = b->rcv_nxt + CPB_MIN(t->cfg.rcvbuf, 65535u); /* the window our SYN-ACK offered */
  b->last_ack_sent = b->rcv_nxt;
  b->snd_wnd = b->max_snd_wnd = (uint32_t)r->window << b->snd_wscale;
  b->snd_wl1 = syn.seq;
  b->snd_wl2 = iss;
  tcb_set_state(t, b, TCP_SYN_RECEIVED);
  b->flags |= TF_PASSIVE;
  b->listener = (uint32_t)(l - t->lis) + 1;
  list_push(t, &l->half_head, NULL, b);
  l->nhalf++;
  flowtab_insert(t, b);
  t->stats.passive_opens++;
  t->stats.syncookies_ok++;
  tcb_input(t, b, r, now);
  flow_maybe_free(t, b);
  return true;
}

void listen_input(struct cpb_tcp *t, struct tcp_listener *l, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r,
                  cpb_time_t now) {
  if (r->flags & TCP_RST) return;
  if (r->flags & TCP_ACK) {
    if (!cookie_accept(t, l, lip, rip, r, now)) output_rst_reply(t, lip, rip, r);
    return;
  }
  if (!(r->flags & TCP_SYN) || (r->flags & TCP_FIN)) return;
  if (l->nhalf + l->nqueued >= l->backlog) {
    /* RFC 4987: the SYN queue is full, answer statelessly; a full accept queue is the app's limit. */
    if (!t->cfg.syncookies_off && l->nqueued < l->backlog) {
      syncookie_send(t, lip, rip, r, now);
      l->cookie_at = now ? now : 1;
      return;
    }
    t->stats.backlog_drops++;
    return;
  }
  struct tcb *b = flow_alloc(t);
  if (!b) {
    /* max flows (or arena slots) reached: a clean refusal the client sees at once, not a retry loop */
    t->stats.flow_limit_drops++;
    output_rst_reply(t, lip, rip, r);
    return;
  }
  tcb_init_common(t, b, lip, r->dport, rip, r->sport, now);
  tcb_apply_syn_options(t, b, r, now);
  b->irs = r->seq;
  b->rcv_nxt = r->seq + 1;
  b->rcv_adv = b->rcv_nxt;
  b->last_ack_sent = b->rcv_nxt;
  b->snd_wnd = r->window; /* a SYN's window is never scaled */
  b->max_snd_wnd = b->snd_wnd;
  b->snd_wl1 = r->seq;
  b->snd_wl2 = b->iss;
  tcb_set_state(t, b, TCP_SYN_RECEIVED);
  b->flags |= TF_PASSIVE;
  b->listener = (uint32_t)(l - t->lis) + 1;
  list_push(t, &l->half_head, NULL, b);
  l->nhalf++;
  flowtab_insert(t, b);
  output_first_syn(t, b, now);
  t->stats.passive_opens++;
}

int tcp_listen(struct cpb_tcp *t, uint16_t port, uint32_t backlog, uint64_t *listener_id) {
  if (port == 0) return -EINVAL;
  if (listener_find(t, port)) return -EADDRINUSE;
  for (uint32_t i = 0; i < t->cfg.max_listeners; i++) {
    struct tcp_listener *l = &t->lis[i];
    if (l->used) continue;
    uint32_t gen = l->gen;
    memset(l, 0, sizeof(*l));
    l->gen = gen;
    l->used = true;
    l->port = port;
    l->backlog = backlog ? backlog : t->cfg.default_backlog;
    if (l->backlog > t->cfg.max_flows) l->backlog = t->cfg.max_flows;
    l->half_head = l->ready_head = l->ready_tail = TCP_NONE;
    l->ev_next = TCP_NONE;
    t->stats.listeners_current++;
    *listener_id = TCP_ID_LISTENER | i | ((uint64_t)l->gen << TCP_ID_SLOT_BITS);
    return 0;
  }
  return -ENOSPC;
}

static void reset_child(struct cpb_tcp *t, struct tcb *b, cpb_time_t now) {
  if (b->state != TCP_SYN_RECEIVED) (void)output_rst_for(t, b, now);
  flow_set_closed(t, b, -ECONNRESET);
  flow_maybe_free(t, b);
}

int tcp_unlisten(struct cpb_tcp *t, uint64_t listener_id, cpb_time_t now) {
  uint32_t li;
  struct tcp_listener *l = listener_by_id(t, listener_id, &li);
  if (!l) return -ENOENT;
  t->now = now;
  while (l->half_head != TCP_NONE) reset_child(t, tcb_at(t, l->half_head), now);
  while (l->ready_head != TCP_NONE) reset_child(t, tcb_at(t, l->ready_head), now);
  ev_cancel_listener(t, li);
  l->used = false;
  uint32_t g = (l->gen + 1) & TCP_GEN_MASK;
  l->gen = g ? g : 1;
  t->stats.listeners_current--;
  return 0;
}

int tcp_accept(struct cpb_tcp *t, uint64_t listener_id, uint64_t *flow_id) {
  uint32_t li;
  struct tcp_listener *l = listener_by_id(t, listener_id, &li);
  if (!l) return -ENOENT;
  if (l->ready_head == TCP_NONE) return -EAGAIN;
  struct tcb *b = tcb_at(t, l->ready_head);
  listen_detach(t, b);
  b->flags |= TF_APP;
  *flow_id = tcb_id(b);
  if (b->rcvq.len > 0 || (b->flags & TF_FIN_RCVD)) ev_raise(t, b, TCP_EV_READABLE);
  return 0;
}
