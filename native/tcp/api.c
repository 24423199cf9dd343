/* The application-facing calls and module setup. tcp_init validates the configuration and allocates
 * every table the module will ever use (flow table, generation array, listeners, timer heap); nothing
 * allocates afterwards. Calls that make output possible (send, recv opening the window, shutdown)
 * only put the flow on the output list: tcp_poll flushes it, so several small sends in one engine
 * iteration leave as one segment. */
#include <stdlib.h>

#include "tcb.h"
#include "tcp_debug.h"

void tcp_config_defaults(struct tcp_config *c) {
  memset(c, 0, sizeof(*c));
  c->max_flows = 1024;
  c->max_listeners = 64;
  c->default_backlog = 128;
  c->rcvbuf = 256 * 1024;
  c->sndbuf = 256 * 1024;
  c->mss = 1460;
  c->wscale = 7;
  c->timestamps = true;
  c->sack = true;
  c->cc = TCP_CC_CUBIC;
  c->rto_initial_us = 1000000;
  c->rto_min_us = 200000;
  c->rto_max_us = 120000000;
  c->delack_us = 40000;
  c->time_wait_us = 60000000;
  c->fin_wait2_us = 60000000;
  c->keepalive_idle_us = UINT32_MAX; /* ~71 min: the field cannot hold Linux's 2 h */
  c->keepalive_intvl_us = 75000000;
  c->keepalive_probes = 9;
  c->syn_retries = 6;
  c->max_retries = 15;
  c->ephemeral_lo = 32768;
  c->ephemeral_hi = 60999;
  c->challenge_ack_limit = 1000;
  c->hold_segs = 2048; /* ~4 MiB of 2 KiB buffers: four flows at their per-flow bound */
}

size_t tcp_sizeof(void) { return sizeof(struct cpb_tcp); }

int tcp_init(struct cpb_tcp *t, struct cpb_arena *arena, const struct tcp_config *cfg, const struct cpb_ipout *out) {
  memset(t, 0, sizeof(*t));
  if (!arena || !arena->hdr || !cfg || !out || !out->begin || !out->commit) return -EINVAL;
  if (cfg->max_flows == 0 || cfg->max_flows > arena->hdr->slots || cfg->max_flows > TCP_ID_SLOT_MASK) return -EINVAL;
  if (cfg->max_listeners == 0 || cfg->max_listeners > TCP_ID_SLOT_MASK) return -EINVAL;
  if (cfg->mss < 88 || cfg->wscale > TCP_MAX_WSCALE || cfg->rcvbuf == 0 || cfg->sndbuf == 0) return -EINVAL;
  if (cfg->rcvbuf > (1u << 30) || cfg->sndbuf > (1u << 30)) return -EINVAL;
  if (cfg->ephemeral_lo == 0 || cfg->ephemeral_lo > cfg->ephemeral_hi) return -EINVAL;
  if (cfg->rto_min_us == 0 || cfg->rto_initial_us == 0 || cfg->rto_max_us < cfg->rto_min_us) return -EINVAL;
  t->cfg = *cfg;
  if (t->cfg.delack_us == 0) t->cfg.delack_us = 1;
  if (t->cfg.keepalive_intvl_us == 0) t->cfg.keepalive_intvl_us = 1;
  t->arena = arena;
  t->out = *out;
  t->nslots = CPB_MIN(arena->hdr->slots, TCP_ID_SLOT_MASK + 1);
  t->gen = malloc(sizeof(uint32_t) * t->nslots);
  t->live = calloc(t->nslots, 1);
  t->heap = malloc(sizeof(uint32_t) * t->nslots);
  t->lis = calloc(cfg->max_listeners, sizeof(struct tcp_listener));
  if (!t->gen || !t->live || !t->heap || !t->lis || flowtab_init(t, cfg->max_flows) != 0 || hold_init(t) != 0) {
    tcp_fini(t);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < t->nslots; i++) t->gen[i] = 1;
  for (uint32_t i = 0; i < cfg->max_listeners; i++) t->lis[i].gen = 1;
  t->ev_head = t->ev_tail = TCP_NONE;
  t->out_head = t->out_tail = TCP_NONE;
  uint8_t m[4] = {'e', 'p', 'h', 0};
  t->next_ephemeral = (uint32_t)(siphash24(cfg->iss_secret, m, sizeof(m)) % ((uint32_t)cfg->ephemeral_hi - cfg->ephemeral_lo + 1));
  return 0;
}

void tcp_fini(struct cpb_tcp *t) {
  if (t->live && t->arena) {
    for (uint32_t i = 0; i < t->nslots; i++) {
      if (!t->live[i]) continue;
      struct tcb *b = tcb_at(t, i);
      chunkq_clear(t->arena, &b->sndq);
      chunkq_clear(t->arena, &b->rcvq);
      cpb_arena_slot_free(t->arena, i);
      t->live[i] = 0;
    }
  }
  free(t->gen);
  free(t->live);
  free(t->heap);
  free(t->lis);
  free(t->ftab);
  hold_fini(t);
  t->gen = NULL;
  t->live = NULL;
  t->heap = NULL;
  t->lis = NULL;
  t->ftab = NULL;
}

cpb_time_t tcp_poll(struct cpb_tcp *t, cpb_time_t now) {
  t->now = now;
  timers_run(t, now);
  output_flush(t, now);
  return timers_next(t);
}

uint32_t snd_max_chunks(const struct cpb_tcp *t) { return t->cfg.sndbuf / CPB_CHUNK_SIZE + 2; }

long tcp_send(struct cpb_tcp *t, uint64_t flow_id, const void *data, size_t len, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) return -EAGAIN;
  if (b->err) return b->err;
  if (b->state == TCP_SYN_SENT || b->state == TCP_SYN_RECEIVED) return -ENOTCONN;
  if ((b->flags & TF_FIN_QUEUED) || (b->state != TCP_ESTABLISHED && b->state != TCP_CLOSE_WAIT)) return -EPIPE;
  if (len == 0) return 0;
  uint32_t room = t->cfg.sndbuf > b->sndq.len ? t->cfg.sndbuf - b->sndq.len : 0;
  size_t want = CPB_MIN(len, (size_t)room);
  size_t done = 0;
  const uint8_t *p = data;
  while (done < want) {
    /* Append chunk-sized pieces so a nearly empty pool still takes what fits. */
    uint32_t piece = (uint32_t)CPB_MIN(want - done, (size_t)CPB_CHUNK_SIZE);
    if (chunkq_append(t->arena, &b->sndq, p + done, piece, snd_max_chunks(t)) != 0) {
      t->stats.chunk_exhausted++;
      break;
    }
    done += piece;
  }
  if (done < len) b->flags |= TF_WANT_WRITABLE;
  if (done == 0) return -EAGAIN;
  output_schedule(t, b);
  return (long)done;
}

long tcp_recv(struct cpb_tcp *t, uint64_t flow_id, void *buf, size_t len, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) return -EAGAIN;
  if (b->rcvq.len > 0 && len > 0) {
    uint32_t n = (uint32_t)CPB_MIN(len, (size_t)b->rcvq.len);
    chunkq_peek(t->arena, &b->rcvq, 0, buf, n);
    chunkq_consume(t->arena, &b->rcvq, n);
    rcv_after_read(t, b);
    return n;
  }
  if (b->err) return b->err;
  if (b->flags & TF_FIN_RCVD) return 0;
  if (len == 0) return 0;
  return -EAGAIN;
}

/* For the TLS record layer: look at unread bytes without consuming them, so a partly received record
 * stays in TCP (and in TCP's snapshot) until it is whole. */
long tcp_peek(struct cpb_tcp *t, uint64_t flow_id, size_t off, void *buf, size_t len) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  if (tcb_frozen(b)) return -EAGAIN;
  if (off < b->rcvq.len && len > 0) {
    uint32_t n = (uint32_t)CPB_MIN(len, (size_t)b->rcvq.len - off);
    chunkq_peek(t->arena, &b->rcvq, (uint32_t)off, buf, n);
    return n;
  }
  if (b->err) return b->err;
  if (b->flags & TF_FIN_RCVD) return 0;
  if (len == 0) return 0;
  return -EAGAIN;
}

/* How many bytes tcp_send would take right now: the send buffer's room, bounded by the chunk budget
 * of the flow and of the pool (so the TLS layer only seals a record TCP can take whole). */
long tcp_send_space(struct cpb_tcp *t, uint64_t flow_id) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  if (tcb_frozen(b)) return 0;
  if (b->err) return b->err;
  if (b->state == TCP_SYN_SENT || b->state == TCP_SYN_RECEIVED) return -ENOTCONN;
  if ((b->flags & TF_FIN_QUEUED) || (b->state != TCP_ESTABLISHED && b->state != TCP_CLOSE_WAIT)) return -EPIPE;
  uint64_t room = t->cfg.sndbuf > b->sndq.len ? t->cfg.sndbuf - b->sndq.len : 0;
  uint64_t used_hi = (uint64_t)b->sndq.head_off + b->sndq.len; /* bytes the chain covers */
  uint64_t cover = (uint64_t)b->sndq.nchunks * CPB_CHUNK_SIZE;
  uint64_t tail_free = cover > used_hi ? cover - used_hi : 0;
  uint32_t maxc = snd_max_chunks(t);
  uint64_t more = maxc > b->sndq.nchunks ? maxc - b->sndq.nchunks : 0;
  more = CPB_MIN(more, (uint64_t)cpb_arena_chunks_free(t->arena));
  uint64_t chunks_room = tail_free + more * CPB_CHUNK_SIZE;
  uint64_t space = CPB_MIN(room, chunks_room);
  /* A caller that finds little room is told (TCP_EV_WRITABLE) when there is more, as after a short
   * tcp_send: it may decline to send a partial record at all. */
  if (space < t->cfg.sndbuf / 4) b->flags |= TF_WANT_WRITABLE;
  return (long)space;
}

static void queue_fin(struct cpb_tcp *t, struct tcb *b) {
  if (b->flags & TF_FIN_QUEUED) return;
  b->flags |= TF_FIN_QUEUED;
  if (b->state == TCP_ESTABLISHED) tcb_set_state(t, b, TCP_FIN_WAIT_1);
  else if (b->state == TCP_CLOSE_WAIT) tcb_set_state(t, b, TCP_LAST_ACK);
  output_schedule(t, b);
}

int tcp_shutdown(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) return -EBUSY;
  if (b->state == TCP_CLOSED) return b->err ? b->err : -ENOTCONN;
  queue_fin(t, b);
  return 0;
}

int tcp_close(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) return -EBUSY; /* being migrated: tcp_unfreeze or tcp_release first */
  b->flags &= ~(TF_APP | TF_WANT_WRITABLE);
  ev_cancel(t, b);
  switch (b->state) {
    case TCP_CLOSED:
      break;
    case TCP_SYN_SENT:
      flow_set_closed(t, b, 0);
      break;
    default:
      if (b->rcvq.len > 0 || b->ooo.n > 0) {
        /* Unread data would be silently lost: tell the peer (RFC 2525 §2.17, as Linux does). */
        if (b->state != TCP_TIME_WAIT) (void)output_rst_for(t, b, now);
        flow_set_closed(t, b, -ECONNRESET);
        break;
      }
      b->flags |= TF_DISCARD;
      queue_fin(t, b);
      if (b->state == TCP_FIN_WAIT_2) timer_set(t, b, TT_LINGER, now + t->cfg.fin_wait2_us);
      break;
  }
  flow_maybe_free(t, b);
  return 0;
}

int tcp_abort(struct cpb_tcp *t, uint64_t flow_id, cpb_time_t now) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  t->now = now;
  if (tcb_frozen(b)) {
    /* Abandoning a migration: what was held is dropped, the timers are cleared by the close below. */
    hold_drop_all(t, b);
    b->flags &= ~TF_FROZEN;
  }
  b->flags &= ~(TF_APP | TF_WANT_WRITABLE);
  ev_cancel(t, b);
  if (b->state != TCP_CLOSED && b->state != TCP_SYN_SENT && b->state != TCP_TIME_WAIT)
    (void)output_rst_for(t, b, now);
  flow_set_closed(t, b, -ECONNRESET);
  flow_maybe_free(t, b);
  return 0;
}

int tcp_setopt(struct cpb_tcp *t, uint64_t flow_id, enum tcp_sockopt opt, uint32_t val) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  if (tcb_frozen(b)) return -EBUSY;
  switch (opt) {
    case TCP_OPT_NODELAY:
      if (val) b->flags |= TF_NODELAY;
      else b->flags &= ~TF_NODELAY;
      output_schedule(t, b);
      return 0;
    case TCP_OPT_KEEPALIVE:
      if (val) {
        b->flags |= TF_KEEPALIVE;
        b->probes = 0;
        if (b->state != TCP_CLOSED) timer_set(t, b, TT_KEEPALIVE, t->now + b->keepidle_us);
      } else {
        b->flags &= ~TF_KEEPALIVE;
        timer_clear(t, b, TT_KEEPALIVE);
      }
      return 0;
    case TCP_OPT_RTO_MIN_US:
      /* A floor below the clock granularity would only fire before any ACK can come back. */
      if (val != 0 && (val < 1000 || val > t->cfg.rto_max_us)) return -EINVAL;
      b->rto_min_us = val;
      rto_update(t, b);
      return 0;
    case TCP_OPT_KEEPIDLE_MS:
      if (val == 0 || (uint64_t)val * 1000 > UINT32_MAX) return -EINVAL;
      b->keepidle_us = val * 1000u;
      if (timer_armed(b, TT_KEEPALIVE)) timer_set(t, b, TT_KEEPALIVE, b->last_rcv + b->keepidle_us);
      return 0;
  }
  return -EINVAL;
}

int tcp_flow_info(struct cpb_tcp *t, uint64_t flow_id, struct tcp_flow_info *out) {
  struct tcb *b = flow_by_id(t, flow_id);
  if (!b) return -ENOENT;
  flow_fill_info(t, b, out);
  return 0;
}

int tcp_find_flow(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport, uint64_t *flow_id) {
  struct tcb *b = flowtab_lookup(t, lip, lport, rip, rport);
  if (!b) return -ENOENT;
  *flow_id = tcb_id(b);
  return 0;
}

void tcp_foreach_flow(struct cpb_tcp *t, void (*fn)(void *ctx, const struct tcp_flow_info *fi), void *ctx) {
  for (uint32_t i = 0; i < t->nslots; i++) {
    if (!t->live[i]) continue;
    struct tcp_flow_info fi;
    flow_fill_info(t, tcb_at(t, i), &fi);
    fn(ctx, &fi);
  }
}

void tcp_get_stats(const struct cpb_tcp *t, struct tcp_stats *out) { *out = t->stats; }

void tcp_debug_fix_iss(struct cpb_tcp *t, uint32_t iss, uint32_t ts_offset) {
  t->fixed_iss = true;
  t->fixed_iss_val = iss;
  t->fixed_tsoff = ts_offset;
}

uint32_t tcp_debug_flows_live(const struct cpb_tcp *t) { return t->stats.flows_current; }
