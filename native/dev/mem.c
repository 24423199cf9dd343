/* mem:NAME — an in-memory cable with exactly two ends, for tests and simulations.
 *
 * Design:
 * - A process-global registry (mutex, touched only by open/close) maps NAME to a wire. The first open
 *   gets end 0, the second end 1, a third -EBUSY; the wire is freed when both ends are closed.
 * - Each direction is a lock-free single-producer/single-consumer ring of fixed 2 KiB frame slots
 *   (C11 acquire/release on head and tail), allocated at open: the data path never allocates or locks.
 *   rx_burst hands out pointers into the slots; the consumer advances the tail only in rx_release, so
 *   the producer cannot overwrite a frame the engine still reads.
 * - Waking: each direction has an eventfd. A receiver that finds its ring empty "arms" the direction;
 *   the sender writes the eventfd only if it finds it armed (a Dekker-style pair of seq_cst accesses, so
 *   no wakeup is lost). The receiver reads the eventfd only after it was signalled. A busy wire makes
 *   no syscalls at all.
 * - Faults are applied by the sender, from a splitmix64 PRNG seeded with seed + end, so a run is
 *   reproducible: loss, duplication, corruption (one bit past the Ethernet header), reordering (one
 *   frame held back until the next frame passes it, or until MEM_REORDER_HOLD_US) and delay + jitter.
 *   A delayed frame carries its deliver-at time; deliver-at is kept monotonic per direction, so jitter
 *   spreads frames out but never reorders them (reordering is its own fault). rx_burst returns only
 *   frames that are due; next_deadline tells the engine when the next one will be. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dev.h"

#define MEM_NAME_MAX 64
#define MEM_DEFAULT_SLOTS 4096u
#define MEM_REORDER_HOLD_US 500u
#define MEM_CACHELINE 64

struct mem_slot {
  uint32_t len;
  uint32_t pad;
  cpb_time_t deliver_at;
  uint8_t data[CPB_FRAME_MAX];
};

/* One direction of the wire: written by one end's thread, read by the other's. */
struct mem_ring {
  _Alignas(MEM_CACHELINE) atomic_uint_fast32_t head; /* next slot the producer fills */
  _Alignas(MEM_CACHELINE) atomic_uint_fast32_t tail; /* next slot the consumer frees */
  _Alignas(MEM_CACHELINE) atomic_int armed;          /* 0 awake, 1 receiver may sleep, 2 signalled */
  int efd;
  uint32_t mask;
  struct mem_slot *slots;
};

struct mem_wire {
  struct mem_wire *next;
  char name[MEM_NAME_MAX];
  struct mem_ring ring[2];   /* ring[e] carries frames sent by end e */
  atomic_bool attached[2];
  bool ever_attached[2];
};

struct mem_faults {
  uint32_t loss, dup, reorder, corrupt; /* probabilities scaled to 2^32 */
  uint32_t delay_us, jitter_us;
};

struct mem_dev {
  struct cpb_dev base;
  struct mem_wire *w;
  int end;
  uint8_t mac[6];
  struct mem_faults f;
  uint64_t rng;
  cpb_time_t last_deliver;   /* deliver-at of the last frame queued by this end */
  uint32_t rx_peeked;        /* consumer's next slot to hand out (>= tail) */
  bool need_drain;           /* signalled, but the eventfd write may not have landed yet */
  bool held;                 /* a frame held back for reordering */
  cpb_time_t held_until;
  uint32_t held_len;
  uint8_t held_data[CPB_FRAME_MAX];
  struct cpb_dev_stats st;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mem_wire *g_wires;

static void seterr(char *err, size_t errlen, const char *msg, const char *arg) {
  if (err && errlen) snprintf(err, errlen, msg, arg);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint32_t rnd32(struct mem_dev *d) { return (uint32_t)(splitmix64(&d->rng) >> 32); }

/* ---- options ---------------------------------------------------------------------------------- */

struct mem_opts {
  struct mem_faults f;
  uint64_t seed;
  uint32_t slots;
  bool has_mac;
  uint8_t mac[6];
};

static int parse_rate(const char *v, uint32_t *out) {
  char *end;
  double r = strtod(v, &end);
  if (end == v || *end || !(r >= 0.0 && r <= 1.0)) return -EINVAL;
  *out = r >= 1.0 ? UINT32_MAX : (uint32_t)(r * 4294967296.0);
  return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out) {
  char *end;
  if (*v < '0' || *v > '9') return -EINVAL;
  unsigned long long x = strtoull(v, &end, 10);
  if (*end || x > max) return -EINVAL;
  *out = x;
  return 0;
}

static int parse_mac(const char *v, uint8_t mac[6]) {
  unsigned b[6];
  char tail;
  if (sscanf(v, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
    return -EINVAL;
  for (int i = 0; i < 6; i++) mac[i] = (uint8_t)b[i];
  return 0;
}

static int parse_opt(struct mem_opts *o, const char *key, const char *val) {
  uint64_t x;
  if (!strcmp(key, "loss")) return parse_rate(val, &o->f.loss);
  if (!strcmp(key, "dup")) return parse_rate(val, &o->f.dup);
  if (!strcmp(key, "reorder")) return parse_rate(val, &o->f.reorder);
  if (!strcmp(key, "corrupt")) return parse_rate(val, &o->f.corrupt);
  if (!strcmp(key, "mac")) return o->has_mac = true, parse_mac(val, o->mac);
  if (!strcmp(key, "seed")) return parse_u64(val, UINT64_MAX, &o->seed);
  if (!strcmp(key, "delay_us") || !strcmp(key, "jitter_us")) {
    if (parse_u64(val, 10 * CPB_US_PER_S, &x)) return -EINVAL;
    *(key[0] == 'd' ? &o->f.delay_us : &o->f.jitter_us) = (uint32_t)x;
    return 0;
  }
  if (!strcmp(key, "slots")) {
    if (parse_u64(val, 1u << 20, &x) || x < 2 || (x & (x - 1))) return -EINVAL;
    o->slots = (uint32_t)x;
    return 0;
  }
  return -ENOENT;
}

/* Splits "NAME?k=v&k=v" into name and options. */
static int parse_spec(const char *spec, char name[MEM_NAME_MAX], struct mem_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof(*o));
  o->seed = 1;
  o->slots = MEM_DEFAULT_SLOTS;
  size_t nlen = strcspn(spec, "?");
  if (nlen == 0 || nlen >= MEM_NAME_MAX) {
    seterr(err, errlen, "mem: the wire needs a name of 1 to 63 characters (mem:NAME?options), got \"%s\"", spec);
    return -EINVAL;
  }
  memcpy(name, spec, nlen);
  name[nlen] = 0;
  const char *q = spec[nlen] ? spec + nlen + 1 : spec + nlen;
  char kv[128];
  while (*q) {
    size_t n = strcspn(q, "&");
    if (n >= sizeof(kv)) {
      seterr(err, errlen, "mem: option too long in \"%s\"", spec);
      return -EINVAL;
    }
    memcpy(kv, q, n);
    kv[n] = 0;
    q += n + (q[n] == '&');
    if (!n) continue;
    char *eq = strchr(kv, '=');
    if (!eq) {
      seterr(err, errlen, "mem: option \"%s\" needs a value (key=value)", kv);
      return -EINVAL;
    }
    *eq = 0;
    int rc = parse_opt(o, kv, eq + 1);
    if (rc == -ENOENT) {
      seterr(err, errlen,
             "mem: unknown option \"%s\" (known: loss, dup, reorder, corrupt, delay_us, jitter_us, seed, mac, slots)",
             kv);
      return -EINVAL;
    }
    if (rc) {
      seterr(err, errlen, "mem: bad value for option \"%s\" (rates are 0..1, times in microseconds, "
                          "mac as 02:00:00:00:00:01, slots a power of two)", kv);
      return -EINVAL;
    }
  }
  return 0;
}

/* ---- wire registry (open/close only) ---------------------------------------------------------- */

static void wire_free(struct mem_wire *w) {
  for (int i = 0; i < 2; i++) {
    if (w->ring[i].efd >= 0) close(w->ring[i].efd);
    free(w->ring[i].slots);
  }
  free(w);
}

static struct mem_wire *wire_new(const char *name, uint32_t slots) {
  struct mem_wire *w = calloc(1, sizeof(*w));
  if (!w) return NULL;
  snprintf(w->name, sizeof(w->name), "%s", name);
  w->ring[0].efd = w->ring[1].efd = -1;
  for (int i = 0; i < 2; i++) {
    struct mem_ring *r = &w->ring[i];
    r->mask = slots - 1;
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->slots = calloc(slots, sizeof(struct mem_slot));
    if (r->efd < 0 || !r->slots) {
      wire_free(w);
      return NULL;
    }
  }
  return w;
}

static void derive_mac(const char *name, int end, uint8_t mac[6]) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
  mac[0] = 0x02; /* locally administered, unicast */
  mac[1] = (uint8_t)(h >> 24);
  mac[2] = (uint8_t)(h >> 16);
  mac[3] = (uint8_t)(h >> 8);
  mac[4] = (uint8_t)h;
  mac[5] = (uint8_t)(0x10 + end);
}

static int mem_open(struct cpb_dev **out, const char *spec, char *err, size_t errlen) {
  char name[MEM_NAME_MAX];
  struct mem_opts o;
  int rc = parse_spec(spec, name, &o, err, errlen);
  if (rc) return rc;
  struct mem_dev *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;

  pthread_mutex_lock(&g_lock);
  struct mem_wire *w = g_wires;
  while (w && strcmp(w->name, name)) w = w->next;
  if (!w) {
    w = wire_new(name, o.slots);
    if (!w) {
      pthread_mutex_unlock(&g_lock);
      free(d);
      seterr(err, errlen, "mem: out of memory creating wire \"%s\"", name);
      return -ENOMEM;
    }
    w->next = g_wires;
    g_wires = w;
  }
  int end = !atomic_load(&w->attached[0]) ? 0 : !atomic_load(&w->attached[1]) ? 1 : -1;
  if (end < 0) {
    pthread_mutex_unlock(&g_lock);
    free(d);
    seterr(err, errlen, "mem: wire \"%s\" already has both ends open", name);
    return -EBUSY;
  }
  /* The end's receive ring is ring[!end]; as its only consumer we may drop what a previous owner of
   * this end left behind. */
  struct mem_ring *rx = &w->ring[!end];
  if (w->ever_attached[end])
    atomic_store_explicit(&rx->tail, atomic_load_explicit(&rx->head, memory_order_acquire), memory_order_release);
  d->rx_peeked = (uint32_t)atomic_load(&rx->tail);
  w->ever_attached[end] = true;
  atomic_store(&w->attached[end], true);
  pthread_mutex_unlock(&g_lock);

  d->base.ops = &cpb_dev_mem_ops;
  d->w = w;
  d->end = end;
  d->f = o.f;
  d->rng = o.seed + (uint64_t)end;
  if (o.has_mac)
    memcpy(d->mac, o.mac, 6);
  else
    derive_mac(name, end, d->mac);
  *out = &d->base;
  return 0;
}

static void mem_close(struct cpb_dev *dev) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_wire *w = d->w;
  pthread_mutex_lock(&g_lock);
  atomic_store(&w->attached[d->end], false);
  if (!atomic_load(&w->attached[!d->end])) {
    struct mem_wire **pp = &g_wires;
    while (*pp != w) pp = &(*pp)->next;
    *pp = w->next;
    wire_free(w);
  }
  pthread_mutex_unlock(&g_lock);
  free(d);
}

/* ---- data path -------------------------------------------------------------------------------- */

/* Producer side: puts one frame into this end's ring. false when the ring is full. */
static bool ring_put(struct mem_dev *d, const uint8_t *data, uint32_t len, cpb_time_t at) {
  struct mem_ring *r = &d->w->ring[d->end];
  uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_relaxed);
  uint32_t tail = (uint32_t)atomic_load_explicit(&r->tail, memory_order_acquire);
  if (head - tail > r->mask) return false;
  struct mem_slot *s = &r->slots[head & r->mask];
  memcpy(s->data, data, len);
  s->len = len;
  s->deliver_at = at;
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
  return true;
}

/* Called after a batch was published: wake the receiver only if it said it might sleep. */
static void ring_signal(struct mem_dev *d) {
  struct mem_ring *r = &d->w->ring[d->end];
  atomic_thread_fence(memory_order_seq_cst);
  int expect = 1;
  if (atomic_load_explicit(&r->armed, memory_order_relaxed) == 1 &&
      atomic_compare_exchange_strong(&r->armed, &expect, 2)) {
    uint64_t one = 1;
    if (write(r->efd, &one, sizeof(one)) == sizeof(one)) d->st.wakeups++;
  }
}

static cpb_time_t deliver_time(struct mem_dev *d, cpb_time_t now) {
  cpb_time_t at = now + d->f.delay_us;
  if (d->f.jitter_us) {
    uint32_t span = 2 * d->f.jitter_us + 1;
    int64_t j = (int64_t)(rnd32(d) % span) - (int64_t)d->f.jitter_us;
    at = (j < 0 && (cpb_time_t)-j > at - now) ? now : at + (cpb_time_t)j;
  }
  if (at < d->last_deliver) at = d->last_deliver;
  if (at > now) d->st.injected_delay++;
  return at;
}

static void flush_held(struct mem_dev *d, cpb_time_t now) {
  cpb_time_t at = deliver_time(d, now);
  if (!ring_put(d, d->held_data, d->held_len, at)) return; /* full: keep holding, retry later */
  d->last_deliver = at;
  d->held = false;
}

static int mem_tx_burst(struct cpb_dev *dev, const struct cpb_frame *frames, int n, cpb_time_t now) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_ring *r = &d->w->ring[d->end];
  bool peer = atomic_load_explicit(&d->w->attached[!d->end], memory_order_acquire);
  int i = 0;
  if (d->held && now >= d->held_until) flush_held(d, now);
  for (; i < n; i++) {
    const struct cpb_frame *fr = &frames[i];
    if (fr->len == 0 || fr->len > CPB_FRAME_MAX || !peer) { /* oversize, or the cable is unplugged */
      d->st.tx_dropped++;
      continue;
    }
    /* Room for the frame plus a possible duplicate and a released held frame. */
    uint32_t used = (uint32_t)(atomic_load_explicit(&r->head, memory_order_relaxed) -
                               atomic_load_explicit(&r->tail, memory_order_acquire));
    if (used + 1 + (d->held ? 1 : 0) > r->mask + 1) break;
    d->st.tx_frames++;
    d->st.tx_bytes += fr->len;
    if (d->f.loss && rnd32(d) < d->f.loss) {
      d->st.injected_loss++;
      d->st.tx_dropped++;
      continue;
    }
    const uint8_t *data = fr->data;
    uint8_t tmp[CPB_FRAME_MAX];
    if (d->f.corrupt && rnd32(d) < d->f.corrupt && fr->len > 14) {
      memcpy(tmp, fr->data, fr->len);
      uint32_t at = 14 + rnd32(d) % (fr->len - 14);
      tmp[at] ^= (uint8_t)(1u << (rnd32(d) & 7));
      data = tmp;
      d->st.injected_corrupt++;
    }
    if (!d->held && d->f.reorder && rnd32(d) < d->f.reorder) {
      memcpy(d->held_data, data, fr->len);
      d->held_len = fr->len;
      d->held = true;
      d->held_until = now + MEM_REORDER_HOLD_US;
      d->st.injected_reorder++;
      continue;
    }
    cpb_time_t at = deliver_time(d, now);
    d->last_deliver = at;
    ring_put(d, data, fr->len, at);
    if (d->f.dup && rnd32(d) < d->f.dup && used + 2 + (d->held ? 1 : 0) <= r->mask + 1) {
      ring_put(d, data, fr->len, at);
      d->st.injected_dup++;
    }
    if (d->held) flush_held(d, now); /* the held frame is now behind a later one */
  }
  for (int k = i; k < n; k++) d->st.tx_dropped++;
  ring_signal(d);
  return i;
}

static int rx_collect(struct mem_dev *d, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct mem_ring *r = &d->w->ring[!d->end];
  uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_acquire);
  int n = 0;
  while (n < max && d->rx_peeked != head) {
    struct mem_slot *s = &r->slots[d->rx_peeked & r->mask];
    if (s->deliver_at > now) break;
    frames[n].data = s->data;
    frames[n].len = s->len;
    frames[n].cookie = d->rx_peeked;
    d->st.rx_frames++;
    d->st.rx_bytes += s->len;
    d->rx_peeked++;
    n++;
  }
  return n;
}

static void drain_efd(struct mem_dev *d, struct mem_ring *r) {
  uint64_t v;
  d->need_drain = read(r->efd, &v, sizeof(v)) != sizeof(v);
}

static int mem_rx_burst(struct cpb_dev *dev, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_ring *r = &d->w->ring[!d->end];
  if (d->held && now >= d->held_until) flush_held(d, now), ring_signal(d);
  if (atomic_load_explicit(&r->armed, memory_order_relaxed) != 0) {
    if (atomic_exchange(&r->armed, 0) == 2) d->need_drain = true;
  }
  if (d->need_drain) drain_efd(d, r);
  if (max <= 0) return 0;
  int n = rx_collect(d, frames, max, now);
  if (n == 0) {
    /* Going idle: arm, then look once more so a frame published meanwhile is not slept on. */
    atomic_store(&r->armed, 1);
    atomic_thread_fence(memory_order_seq_cst);
    n = rx_collect(d, frames, max, now);
    if (n && atomic_exchange(&r->armed, 0) == 2) d->need_drain = true; /* not going to sleep after all */
  }
  return n;
}

static void mem_rx_release(struct cpb_dev *dev, struct cpb_frame *frames, int n) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_ring *r = &d->w->ring[!d->end];
  (void)frames;
  uint32_t tail = (uint32_t)atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint32_t out = d->rx_peeked - tail;
  if (n < 0) return;
  if ((uint32_t)n > out) n = (int)out; /* frames are released oldest first */
  atomic_store_explicit(&r->tail, tail + (uint32_t)n, memory_order_release);
}

static int mem_wait_fd(struct cpb_dev *dev) {
  struct mem_dev *d = (struct mem_dev *)dev;
  return d->w->ring[!d->end].efd;
}

static cpb_time_t mem_next_deadline(struct cpb_dev *dev) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_ring *r = &d->w->ring[!d->end];
  cpb_time_t t = d->held ? d->held_until : UINT64_MAX;
  uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_acquire);
  if (d->rx_peeked != head) t = CPB_MIN(t, r->slots[d->rx_peeked & r->mask].deliver_at);
  return t;
}

static void mem_get_mac(struct cpb_dev *dev, uint8_t mac[6]) { memcpy(mac, ((struct mem_dev *)dev)->mac, 6); }

static void mem_get_stats(struct cpb_dev *dev, struct cpb_dev_stats *out) { *out = ((struct mem_dev *)dev)->st; }

const struct cpb_dev_ops cpb_dev_mem_ops = {
    .scheme = "mem",
    .open = mem_open,
    .rx_burst = mem_rx_burst,
    .rx_release = mem_rx_release,
    .tx_burst = mem_tx_burst,
    .wait_fd = mem_wait_fd,
    .next_deadline = mem_next_deadline,
    .get_mac = mem_get_mac,
    .get_stats = mem_get_stats,
    .close = mem_close,
};
