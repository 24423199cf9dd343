/* The engine's side of native apps (see native.h): which listeners and flows are native, the event
 * ring for the application side, and the read → app → send loop of a native flow.
 *
 * Flows are found by id in an open-addressed table (linear probing, backward-shift deletion, so no
 * tombstones pile up) pointing into a fixed pool; everything is allocated in cpb_native_new.
 * A flow is read only when its output area is empty: what the app produced is sent, whatever the send
 * buffer did not take stays in the area until TCP_EV_WRITABLE, and until then incoming data stays in
 * TCP's receive buffer, whose window then closes on the peer. */
#include "native.h"

#include <stdio.h>
#include <stdlib.h>

#define NO_ENTRY UINT32_MAX

struct native_flow {
  uint64_t id;
  const struct cpb_native_app *app;
  uint32_t out_off, out_len;
  bool eof; /* the peer has finished: close once the output area is empty */
  _Alignas(8) uint8_t state[CPB_NATIVE_STATE];
  uint8_t out[CPB_NATIVE_OUT];
};

struct native_listener {
  uint64_t id;
  uint16_t port;
  const struct cpb_native_app *app;
};

struct cpb_native {
  uint32_t max_flows, hmask;
  struct native_flow *pool;
  uint32_t *free_list, nfree;
  uint64_t *hkey;
  uint32_t *hval; /* pool index, NO_ENTRY when the bucket is empty */
  struct native_listener lis[CPB_NATIVE_MAX_LISTENERS];
  uint32_t nlis;
  struct tcp_event ring[CPB_NATIVE_RING];
  uint32_t ring_head, ring_len;
  struct cpb_native_stats stats;
  uint8_t scratch[CPB_NATIVE_OUT];
};

const struct cpb_native_app *cpb_native_app_find(const char *name) {
  static const struct cpb_native_app *const apps[] = {&cpb_native_echo, &cpb_native_sockperf};
  for (size_t i = 0; name && i < CPB_ARRAY_LEN(apps); i++)
    if (strcmp(apps[i]->name, name) == 0) return apps[i];
  return NULL;
}

struct cpb_native *cpb_native_new(uint32_t max_flows) {
  if (max_flows == 0 || max_flows > CPB_NATIVE_MAX_FLOWS) max_flows = CPB_NATIVE_MAX_FLOWS;
  uint32_t buckets = 16;
  while (buckets < 2 * max_flows) buckets <<= 1;
  struct cpb_native *n = calloc(1, sizeof(*n));
  if (!n) return NULL;
  n->max_flows = max_flows;
  n->hmask = buckets - 1;
  n->pool = calloc(max_flows, sizeof(*n->pool));
  n->free_list = calloc(max_flows, sizeof(*n->free_list));
  n->hkey = calloc(buckets, sizeof(*n->hkey));
  n->hval = malloc(buckets * sizeof(*n->hval));
  if (!n->pool || !n->free_list || !n->hkey || !n->hval) {
    cpb_native_free(n);
    return NULL;
  }
  for (uint32_t i = 0; i < buckets; i++) n->hval[i] = NO_ENTRY;
  for (uint32_t i = 0; i < max_flows; i++) n->free_list[i] = max_flows - 1 - i;
  n->nfree = max_flows;
  return n;
}

void cpb_native_free(struct cpb_native *n) {
  if (!n) return;
  free(n->pool);
  free(n->free_list);
  free(n->hkey);
  free(n->hval);
  free(n);
}

/* ---- flow table ---- */

static uint32_t bucket_of(const struct cpb_native *n, uint64_t id) {
  return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & n->hmask;
}

static uint32_t find_bucket(const struct cpb_native *n, uint64_t id) {
  for (uint32_t b = bucket_of(n, id);; b = (b + 1) & n->hmask) {
    if (n->hval[b] == NO_ENTRY) return NO_ENTRY;
    if (n->hkey[b] == id) return b;
  }
}

static struct native_flow *flow_find(struct cpb_native *n, uint64_t id) {
  uint32_t b = find_bucket(n, id);
  return b == NO_ENTRY ? NULL : &n->pool[n->hval[b]];
}

static struct native_flow *flow_add(struct cpb_native *n, uint64_t id, const struct cpb_native_app *app) {
  if (n->nfree == 0) return NULL;
  uint32_t idx = n->free_list[--n->nfree];
  struct native_flow *f = &n->pool[idx];
  memset(f, 0, offsetof(struct native_flow, out)); /* the output area is empty: no need to clear it */
  f->id = id;
  f->app = app;
  uint32_t b = bucket_of(n, id);
  while (n->hval[b] != NO_ENTRY) b = (b + 1) & n->hmask; /* at most half full: always ends */
  n->hkey[b] = id;
  n->hval[b] = idx;
  n->stats.flows++;
  return f;
}

/* Backward-shift deletion: later members of the probe run move up so lookups never stop early. */
static void flow_remove(struct cpb_native *n, struct native_flow *f) {
  uint32_t hole = find_bucket(n, f->id);
  if (hole == NO_ENTRY) return;
  n->free_list[n->nfree++] = n->hval[hole];
  n->stats.flows--;
  for (uint32_t j = (hole + 1) & n->hmask; n->hval[j] != NO_ENTRY; j = (j + 1) & n->hmask) {
    uint32_t home = bucket_of(n, n->hkey[j]);
    /* The entry at j may fill the hole unless its home lies cyclically in (hole, j]. */
    bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    n->hkey[hole] = n->hkey[j];
    n->hval[hole] = n->hval[j];
    hole = j;
  }
  n->hval[hole] = NO_ENTRY;
}

static const struct native_listener *listener_find(const struct cpb_native *n, uint64_t id) {
  for (uint32_t i = 0; i < n->nlis; i++)
    if (n->lis[i].id == id) return &n->lis[i];
  return NULL;
}

int cpb_native_listen(struct cpb_native *n, struct cpb_tcp *t, uint16_t port, uint32_t backlog,
                      const struct cpb_native_app *app, uint64_t *listener_id) {
  if (!app) return -EINVAL;
  if (n->nlis == CPB_NATIVE_MAX_LISTENERS) return -ENOSPC;
  uint64_t lid = 0;
  int rc = tcp_listen(t, port, backlog, &lid);
  if (rc != 0) return rc;
  n->lis[n->nlis++] = (struct native_listener){.id = lid, .port = port, .app = app};
  *listener_id = lid;
  return 0;
}

/* ---- a native flow's I/O ---- */

static void flow_finish(struct cpb_native *n, struct cpb_tcp *t, struct native_flow *f, bool reset, cpb_time_t now) {
  if (reset) {
    tcp_abort(t, f->id, now);
    n->stats.resets++;
  } else {
    tcp_close(t, f->id, now); /* FIN after what is queued; the orphan finishes in TCP */
    n->stats.closed++;
  }
  flow_remove(n, f);
}

/* Sends what waits in the output area. Returns 1 when it is empty, 0 when TCP is full (WRITABLE follows),
 * -errno when the flow failed. */
static int flush_out(struct cpb_native *n, struct cpb_tcp *t, struct native_flow *f, cpb_time_t now) {
  while (f->out_len > 0) {
    long s = tcp_send(t, f->id, f->out + f->out_off, f->out_len, now);
    if (s == -EAGAIN) return 0;
    if (s < 0) return (int)s;
    f->out_off += (uint32_t)s;
    f->out_len -= (uint32_t)s;
    n->stats.bytes_out += (uint64_t)s;
  }
  f->out_off = 0;
  return 1;
}

/* Runs the flow as far as it can go: flush, then read → app → send until TCP has nothing more to read
 * or no more room. Bounded by the receive buffer. */
static void flow_run(struct cpb_native *n, struct cpb_tcp *t, struct native_flow *f, cpb_time_t now) {
  for (;;) {
    int fl = flush_out(n, t, f, now);
    if (fl < 0) {
      flow_finish(n, t, f, false, now); /* reset or timed out: TCP already told the peer */
      return;
    }
    if (fl == 0) return;
    if (f->eof) {
      flow_finish(n, t, f, false, now);
      return;
    }
    long r = tcp_recv(t, f->id, n->scratch, CPB_NATIVE_OUT - CPB_NATIVE_CARRY, now);
    if (r == -EAGAIN) return;
    if (r == 0) {
      f->eof = true; /* nothing left to flush (the area is empty): close on the next turn */
      continue;
    }
    if (r < 0) {
      flow_finish(n, t, f, false, now);
      return;
    }
    n->stats.bytes_in += (uint64_t)r;
    long w = f->app->on_data(f->state, n->scratch, (size_t)r, f->out);
    if (w < 0 || w > r + CPB_NATIVE_CARRY) {
      flow_finish(n, t, f, true, now);
      return;
    }
    f->out_len = (uint32_t)w;
  }
}

static void accept_all(struct cpb_native *n, struct cpb_tcp *t, const struct native_listener *l, cpb_time_t now) {
  uint64_t fid;
  while (tcp_accept(t, l->id, &fid) == 0) {
    n->stats.accepted++;
    struct native_flow *f = flow_add(n, fid, l->app);
    if (!f) {
      n->stats.table_full++;
      tcp_abort(t, fid, now);
      continue;
    }
    /* A responder has nothing more to add to a reply: let it go at once. */
    tcp_setopt(t, fid, TCP_OPT_NODELAY, 1);
    /* Data (or the FIN) that came with the handshake raised no event: nobody owned the flow yet. */
    flow_run(n, t, f, now);
  }
}

/* Handles ev when it belongs to a native listener or flow; false when it is the application's. */
static bool handle_native(struct cpb_native *n, struct cpb_tcp *t, const struct tcp_event *ev, cpb_time_t now) {
  if (ev->type == TCP_EV_ACCEPTABLE) {
    const struct native_listener *l = listener_find(n, ev->id);
    if (!l) return false;
    accept_all(n, t, l, now);
    return true;
  }
  struct native_flow *f = flow_find(n, ev->id);
  if (!f) return false;
  if (ev->type == TCP_EV_CLOSED) flow_finish(n, t, f, false, now); /* frees the handle */
  else flow_run(n, t, f, now);
  return true;
}

int cpb_native_round(struct cpb_native *n, struct cpb_tcp *t, cpb_time_t now) {
  int handled = 0;
  struct tcp_event ev;
  while (n->ring_len < CPB_NATIVE_RING && tcp_next_event(t, &ev)) {
    if (handle_native(n, t, &ev, now)) {
      handled++;
      continue;
    }
    n->ring[(n->ring_head + n->ring_len) % CPB_NATIVE_RING] = ev;
    n->ring_len++;
  }
  return handled;
}

bool cpb_native_next_event(struct cpb_native *n, struct cpb_tcp *t, cpb_time_t now, struct tcp_event *ev) {
  if (n->ring_len > 0) {
    *ev = n->ring[n->ring_head];
    n->ring_head = (n->ring_head + 1) % CPB_NATIVE_RING;
    n->ring_len--;
    return true;
  }
  while (tcp_next_event(t, ev))
    if (!handle_native(n, t, ev, now)) return true;
  return false;
}

bool cpb_native_has_events(const struct cpb_native *n, const struct cpb_tcp *t) {
  return n->ring_len > 0 || tcp_has_events(t);
}

void cpb_native_get_stats(const struct cpb_native *n, struct cpb_native_stats *out) { *out = n->stats; }

/* ---- live migration (the engine's migration lane, native/mig/lane.h) ---- */

int cpb_native_export(struct cpb_native *n, uint64_t flow_id, char *name, size_t name_cap, uint8_t *state, size_t state_len) {
  struct native_flow *f = flow_find(n, flow_id);
  if (!f) return -ENOENT;
  if (f->out_len > 0 || f->eof) return -EBUSY; /* replies still to send, or closing: not worth moving */
  if (state_len != CPB_NATIVE_STATE || strlen(f->app->name) >= name_cap) return -EINVAL;
  snprintf(name, name_cap, "%s", f->app->name);
  memcpy(state, f->state, CPB_NATIVE_STATE);
  return 0;
}

static const struct native_listener *listener_on(const struct cpb_native *n, uint16_t port, const char *name) {
  for (uint32_t i = 0; i < n->nlis; i++)
    if (n->lis[i].port == port && strcmp(n->lis[i].app->name, name) == 0) return &n->lis[i];
  return NULL;
}

bool cpb_native_accepts(const struct cpb_native *n, uint16_t port, const char *name) {
  return n->nfree > 0 && listener_on(n, port, name) != NULL;
}

int cpb_native_adopt(struct cpb_native *n, struct cpb_tcp *t, uint64_t flow_id, uint16_t port, const char *name,
                     const uint8_t *state, cpb_time_t now) {
  const struct native_listener *l = listener_on(n, port, name);
  if (!l) return -EPROTONOSUPPORT;
  struct native_flow *f = flow_add(n, flow_id, l->app);
  if (!f) {
    n->stats.table_full++;
    return -ENOSPC;
  }
  memcpy(f->state, state, CPB_NATIVE_STATE);
  n->stats.migrated_in++;
  flow_run(n, t, f, now); /* what the snapshot brought unread, and what the adopt's ACK may bring back */
  return 0;
}

void cpb_native_forget(struct cpb_native *n, uint64_t flow_id) {
  struct native_flow *f = flow_find(n, flow_id);
  if (!f) return;
  n->stats.migrated_out++;
  flow_remove(n, f);
}
