/* mem:NAME — an in-memory wire for tests and simulations: a cable with two ends, or a small switch.
 *
 * Design:
 * - A process-global registry (mutex, touched only by open/close and steering writes) maps NAME to a
 *   wire of P ports (ports=P, default 2: a cable). An open takes the first free port (or port=K); when
 *   all are taken it fails with -EBUSY. The wire is freed when its last port closes.
 * - Every ordered pair of ports (src, dst) has its own lock-free single-producer/single-consumer ring of
 *   fixed 2 KiB frame slots (C11 acquire/release on head and tail), allocated when the wire is made: the
 *   data path never allocates or locks. rx_burst hands out pointers into the slots; the consumer advances
 *   a ring's tail only in rx_release, so the producer cannot overwrite a frame the engine still reads.
 * - Forwarding is done by the sender's thread. On a cable every frame goes to the other end. On a switch
 *   (P > 2): an IPv4/TCP frame whose flow is in the steering table goes to the port the table names, its
 *   destination MAC rewritten to that port's (the analogue of the L4 balancer's redirect table:
 *   cpb_mem_steer() writes it when a flow migrates); otherwise the destination MAC is looked up in a
 *   table learned from source MACs (lock-free, CAS-inserted), and broadcast or unknown destinations are
 *   flooded to every other attached port. The steering table is read under a sequence lock (readers
 *   retry, writers serialise on the wire's mutex), so a reader never blocks and never sees half an entry.
 * - Waking: each port has an eventfd. A receiver that finds its rings empty "arms" the port; a sender
 *   writes the eventfd only if it finds it armed (a Dekker-style pair of seq_cst accesses, so no wakeup is
 *   lost; the CAS 1 -> 2 lets exactly one of several senders write). A busy wire makes no syscalls.
 * - Faults are applied by the sender, from a splitmix64 PRNG seeded with seed + port, so a run is
 *   reproducible: loss, duplication, corruption (one bit past the Ethernet header), reordering (one
 *   frame held back until the next frame passes it, or until MEM_REORDER_HOLD_US) and delay + jitter.
 *   A delayed frame carries its deliver-at time; deliver-at is kept monotonic per sender, so jitter
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
#define MEM_MAC_SLOTS 256u     /* learned MACs per switch (power of two); beyond it, frames flood */
#define MEM_STEER_SLOTS 8192u  /* steering entries per switch (power of two) */
#define MEM_CLAIMS 1024u       /* migration claims remembered per switch */
#define MEM_STEER_MAX (MEM_STEER_SLOTS / 2) /* kept at most half full: probes stay short */
#define MEM_FLOOD (-1)
#define MEM_NOWHERE (-2)

struct mem_slot {
  uint32_t len;
  uint32_t pad;
  cpb_time_t deliver_at;
  uint8_t data[CPB_FRAME_MAX];
};

/* Frames from one port to another: written by the sender's thread, read by the receiver's. */
struct mem_ring {
  _Alignas(MEM_CACHELINE) atomic_uint_fast32_t head; /* next slot the producer fills */
  _Alignas(MEM_CACHELINE) atomic_uint_fast32_t tail; /* next slot the consumer frees */
  uint32_t mask;
  struct mem_slot *slots;
};

/* The receiving side of a port, shared with every sender. */
struct mem_port {
  _Alignas(MEM_CACHELINE) atomic_int armed; /* 0 awake, 1 receiver may sleep, 2 signalled */
  int efd;
  atomic_bool attached;
  bool ever_attached;
  atomic_uint_fast64_t mac; /* last source MAC the port sent from, | MAC_VALID; 0 = not seen yet */
};

#define MAC_VALID (1ull << 48)

/* key: src ip << 32 | dst ip; val: USED | port << 32 | sport << 16 | dport. Relaxed atomics: the
 * sequence lock orders them. */
struct mem_steer {
  atomic_uint_fast64_t key;
  atomic_uint_fast64_t val;
};
#define STEER_USED (1ull << 63)

struct mem_wire {
  struct mem_wire *next;
  char name[MEM_NAME_MAX];
  int nports;
  struct mem_port port[CPB_MEM_MAX_PORTS];
  struct mem_ring *ring; /* ring[src * nports + dst]; the src == dst entries are unused */
  atomic_uint_fast64_t macs[MEM_MAC_SLOTS]; /* mac << 8 | port + 1; 0 = empty */
  atomic_uint steer_seq;                    /* odd while a writer changes the table */
  atomic_uint steer_count;
  struct mem_steer *steer;
  /* Migration claims (cpb_mem_claim): a small ring under the registry lock; the oldest is forgotten first. */
  struct mem_claim { uint64_t key, token; uint32_t ports; int owner; bool used; } claims[MEM_CLAIMS];
  uint32_t claim_next;
};

struct mem_faults {
  uint32_t loss, dup, reorder, corrupt; /* probabilities scaled to 2^32 */
  uint32_t delay_us, jitter_us;
};

struct mem_dev {
  struct cpb_dev base;
  struct mem_wire *w;
  int end;                   /* this device's port */
  uint8_t mac[6];
  struct mem_faults f;
  uint64_t rng;
  cpb_time_t last_deliver;   /* deliver-at of the last frame queued by this port */
  uint32_t rx_peeked[CPB_MEM_MAX_PORTS]; /* per source port: consumer's next slot to hand out (>= tail) */
  int rx_next;               /* source port rx_collect starts with (round robin) */
  bool need_drain;           /* signalled, but the eventfd write may not have landed yet */
  bool held;                 /* a frame held back for reordering */
  int held_dst;
  cpb_time_t held_until;
  uint32_t held_len;
  uint8_t held_data[CPB_FRAME_MAX];
  uint32_t signal_mask;      /* ports given frames in this burst */
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

static struct mem_ring *ring_of(struct mem_wire *w, int src, int dst) { return &w->ring[src * w->nports + dst]; }

/* ---- options ---------------------------------------------------------------------------------- */

struct mem_opts {
  struct mem_faults f;
  uint64_t seed;
  uint32_t slots;
  int ports;  /* 0: not given */
  int port;   /* -1: first free */
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
  if (!strcmp(key, "ports")) {
    if (parse_u64(val, CPB_MEM_MAX_PORTS, &x) || x < 2) return -EINVAL;
    o->ports = (int)x;
    return 0;
  }
  if (!strcmp(key, "port")) {
    if (parse_u64(val, CPB_MEM_MAX_PORTS - 1, &x)) return -EINVAL;
    o->port = (int)x;
    return 0;
  }
  return -ENOENT;
}

/* Splits "NAME?k=v&k=v" into name and options. */
static int parse_spec(const char *spec, char name[MEM_NAME_MAX], struct mem_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof(*o));
  o->seed = 1;
  o->slots = MEM_DEFAULT_SLOTS;
  o->port = -1;
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
             "mem: unknown option \"%s\" (known: loss, dup, reorder, corrupt, delay_us, jitter_us, seed, mac, slots, "
             "ports, port)", kv);
      return -EINVAL;
    }
    if (rc) {
      seterr(err, errlen, "mem: bad value for option \"%s\" (rates are 0..1, times in microseconds, "
                          "mac as 02:00:00:00:00:01, slots a power of two, ports 2..16, port below ports)", kv);
      return -EINVAL;
    }
  }
  return 0;
}

/* ---- wire registry (open/close only) ---------------------------------------------------------- */

static void wire_free(struct mem_wire *w) {
  for (int i = 0; i < w->nports; i++)
    if (w->port[i].efd >= 0) close(w->port[i].efd);
  if (w->ring)
    for (int i = 0; i < w->nports * w->nports; i++) free(w->ring[i].slots);
  free(w->ring);
  free(w->steer);
  free(w);
}

static struct mem_wire *wire_new(const char *name, int nports, uint32_t slots) {
  struct mem_wire *w = calloc(1, sizeof(*w));
  if (!w) return NULL;
  snprintf(w->name, sizeof(w->name), "%s", name);
  w->nports = nports;
  for (int i = 0; i < nports; i++) w->port[i].efd = -1;
  w->ring = calloc((size_t)nports * (size_t)nports, sizeof(*w->ring));
  if (!w->ring) goto fail;
  for (int i = 0; i < nports; i++) {
    w->port[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->port[i].efd < 0) goto fail;
    for (int j = 0; j < nports; j++) {
      if (i == j) continue;
      struct mem_ring *r = ring_of(w, i, j);
      r->mask = slots - 1;
      r->slots = calloc(slots, sizeof(struct mem_slot)); /* zero pages: memory is touched only as used */
      if (!r->slots) goto fail;
    }
  }
  if (nports > 2 && !(w->steer = calloc(MEM_STEER_SLOTS, sizeof(*w->steer)))) goto fail;
  return w;
fail:
  wire_free(w);
  return NULL;
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

static struct mem_wire *wire_find(const char *name) {
  struct mem_wire *w = g_wires;
  while (w && strcmp(w->name, name)) w = w->next;
  return w;
}

static int mem_open(struct cpb_dev **out, const char *spec, char *err, size_t errlen) {
  char name[MEM_NAME_MAX];
  struct mem_opts o;
  int rc = parse_spec(spec, name, &o, err, errlen);
  if (rc) return rc;
  struct mem_dev *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;

  pthread_mutex_lock(&g_lock);
  struct mem_wire *w = wire_find(name);
  if (!w) {
    int nports = o.ports ? o.ports : 2;
    if (o.port >= nports) {
      pthread_mutex_unlock(&g_lock);
      free(d);
      seterr(err, errlen, "mem: port= must be below ports= (wire \"%s\")", name);
      return -EINVAL;
    }
    w = wire_new(name, nports, o.slots);
    if (!w) {
      pthread_mutex_unlock(&g_lock);
      free(d);
      seterr(err, errlen, "mem: out of memory creating wire \"%s\"", name);
      return -ENOMEM;
    }
    w->next = g_wires;
    g_wires = w;
  }
  int end = -1;
  if (o.port >= 0 && o.port < w->nports) {
    if (!atomic_load(&w->port[o.port].attached)) end = o.port;
  } else if (o.port < 0) {
    for (int i = 0; i < w->nports && end < 0; i++)
      if (!atomic_load(&w->port[i].attached)) end = i;
  }
  if (end < 0) {
    pthread_mutex_unlock(&g_lock);
    free(d);
    if (o.port >= w->nports) {
      seterr(err, errlen, "mem: port= is beyond the ports of wire \"%s\"", name);
      return -EINVAL;
    }
    if (w->nports == 2) seterr(err, errlen, "mem: wire \"%s\" already has both ends open", name);
    else seterr(err, errlen, "mem: switch \"%s\" has no free port (the one asked for, or any)", name);
    return -EBUSY;
  }
  /* The port's receive rings are ring[*][end]; as their only consumer we may drop what a previous owner
   * of this port left behind. */
  for (int s = 0; s < w->nports; s++) {
    if (s == end) continue;
    struct mem_ring *rx = ring_of(w, s, end);
    if (w->port[end].ever_attached)
      atomic_store_explicit(&rx->tail, atomic_load_explicit(&rx->head, memory_order_acquire), memory_order_release);
    d->rx_peeked[s] = (uint32_t)atomic_load(&rx->tail);
  }
  w->port[end].ever_attached = true;
  atomic_store(&w->port[end].mac, 0);
  atomic_store(&w->port[end].attached, true);
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
  atomic_store(&w->port[d->end].attached, false);
  bool any = false;
  for (int i = 0; i < w->nports; i++) any |= atomic_load(&w->port[i].attached);
  if (!any) {
    struct mem_wire **pp = &g_wires;
    while (*pp != w) pp = &(*pp)->next;
    *pp = w->next;
    wire_free(w);
  }
  pthread_mutex_unlock(&g_lock);
  free(d);
}

/* ---- switching: learned MACs and the steering table ------------------------------------------ */

static uint64_t mac48(const uint8_t *p) {
  return ((uint64_t)p[0] << 40) | ((uint64_t)p[1] << 32) | ((uint64_t)p[2] << 24) | ((uint64_t)p[3] << 16) |
         ((uint64_t)p[4] << 8) | p[5];
}

static uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (uint32_t)x;
}

/* Remembers that MAC `src` is behind port `port` (a sender learns from its own frames). */
static void mac_learn(struct mem_wire *w, const uint8_t *src, int port) {
  if (src[0] & 1) return; /* a multicast source is bogus: never learn it */
  uint64_t m = mac48(src), want = m << 8 | (uint64_t)(port + 1);
  uint64_t pm = atomic_load_explicit(&w->port[port].mac, memory_order_relaxed);
  if (pm != (m | MAC_VALID)) atomic_store_explicit(&w->port[port].mac, m | MAC_VALID, memory_order_relaxed);
  for (uint32_t i = mix(m) & (MEM_MAC_SLOTS - 1), n = 0; n < MEM_MAC_SLOTS; n++, i = (i + 1) & (MEM_MAC_SLOTS - 1)) {
    uint64_t e = atomic_load_explicit(&w->macs[i], memory_order_relaxed);
    if (e == 0) {
      if (atomic_compare_exchange_strong_explicit(&w->macs[i], &e, want, memory_order_relaxed, memory_order_relaxed)) return;
      /* someone took the slot meanwhile: e is its entry now, look at it as any other */
    }
    if (e >> 8 == m) {
      if (e != want) atomic_store_explicit(&w->macs[i], want, memory_order_relaxed); /* the MAC moved */
      return;
    }
  }
}

static int mac_lookup(struct mem_wire *w, const uint8_t *dst) {
  uint64_t m = mac48(dst);
  for (uint32_t i = mix(m) & (MEM_MAC_SLOTS - 1), n = 0; n < MEM_MAC_SLOTS; n++, i = (i + 1) & (MEM_MAC_SLOTS - 1)) {
    uint64_t e = atomic_load_explicit(&w->macs[i], memory_order_relaxed);
    if (e == 0) return MEM_FLOOD;
    if (e >> 8 == m) return (int)(e & 0xff) - 1;
  }
  return MEM_FLOOD;
}

static uint32_t steer_hash(uint64_t key, uint32_t ports) { return mix(key ^ ((uint64_t)ports << 17)) & (MEM_STEER_SLOTS - 1); }

/* The port a flow is steered to, -1 when it is not steered, or MEM_NOWHERE when a writer kept the table
 * busy for the whole bounded wait (its critical section is a few stores, so only a preempted writer does
 * that): the frame is then dropped rather than sent by its MAC to a runtime that may not hold the flow,
 * which would answer with RST. TCP retransmits a dropped frame. */
static int steer_lookup(struct mem_wire *w, uint64_t key, uint32_t ports) {
  for (int tries = 0; tries < 4096; tries++) {
    unsigned s0 = atomic_load_explicit(&w->steer_seq, memory_order_acquire);
    if (s0 & 1) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    int port = -1;
    for (uint32_t i = steer_hash(key, ports), n = 0; n < MEM_STEER_SLOTS; n++, i = (i + 1) & (MEM_STEER_SLOTS - 1)) {
      uint64_t v = atomic_load_explicit(&w->steer[i].val, memory_order_relaxed);
      if (!(v & STEER_USED)) break;
      if ((uint32_t)v == ports && atomic_load_explicit(&w->steer[i].key, memory_order_relaxed) == key) {
        port = (int)((v >> 32) & 0xff);
        break;
      }
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&w->steer_seq, memory_order_relaxed) == s0) return port;
  }
  return MEM_NOWHERE;
}

/* Where a frame from port `src` goes: a port, MEM_FLOOD, or MEM_NOWHERE. *rewrite is set when the frame
 * is steered and its destination MAC must become the target port's. */
static int route(struct mem_dev *d, const uint8_t *f, uint32_t len, uint64_t *rewrite) {
  struct mem_wire *w = d->w;
  *rewrite = 0;
  if (w->nports == 2) return atomic_load_explicit(&w->port[!d->end].attached, memory_order_acquire) ? !d->end : MEM_NOWHERE;
  if (len < 14) return MEM_NOWHERE;
  mac_learn(w, f + 6, d->end);
  /* IPv4 (no VLAN) carrying TCP, with the ports inside the frame: look the flow up. */
  if (atomic_load_explicit(&w->steer_count, memory_order_relaxed) > 0 && len >= 14 + 20 + 4 && f[12] == 0x08 &&
      f[13] == 0x00 && (f[14] >> 4) == 4 && f[14 + 9] == 6) {
    uint32_t ihl = (uint32_t)(f[14] & 0xf) * 4;
    if (ihl >= 20 && len >= 14 + ihl + 4) {
      uint64_t key = (uint64_t)cpb_get_be32(f + 14 + 12) << 32 | cpb_get_be32(f + 14 + 16);
      uint32_t ports = cpb_get_be32(f + 14 + ihl);
      int p = steer_lookup(w, key, ports);
      if (p == MEM_NOWHERE) return MEM_NOWHERE;
      if (p >= 0 && p != d->end && p < w->nports && atomic_load_explicit(&w->port[p].attached, memory_order_acquire)) {
        *rewrite = atomic_load_explicit(&w->port[p].mac, memory_order_relaxed);
        return p;
      }
    }
  }
  if (f[0] & 1) return MEM_FLOOD;
  int p = mac_lookup(w, f);
  if (p == d->end) return MEM_NOWHERE; /* to itself: a switch does not send a frame back where it came from */
  if (p >= 0 && !atomic_load_explicit(&w->port[p].attached, memory_order_acquire)) return MEM_FLOOD;
  return p;
}

int cpb_mem_steer(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int port) {
  if (!name) return -EINVAL;
  pthread_mutex_lock(&g_lock);
  int rc;
  struct mem_wire *w = wire_find(name);
  if (!w) {
    rc = -ENOENT;
    goto out;
  }
  if (!w->steer || port >= w->nports) {
    rc = -EINVAL;
    goto out;
  }
  uint64_t key = (uint64_t)src << 32 | dst;
  uint32_t ports = (uint32_t)sport << 16 | dport;
  uint32_t i = steer_hash(key, ports);
  for (;; i = (i + 1) & (MEM_STEER_SLOTS - 1)) { /* the table is never full: the loop ends */
    uint64_t v = atomic_load_explicit(&w->steer[i].val, memory_order_relaxed);
    if (!(v & STEER_USED)) break;
    if ((uint32_t)v == ports && atomic_load_explicit(&w->steer[i].key, memory_order_relaxed) == key) break;
  }
  bool found = atomic_load_explicit(&w->steer[i].val, memory_order_relaxed) & STEER_USED;
  unsigned count = atomic_load_explicit(&w->steer_count, memory_order_relaxed);
  if (port >= 0 && !found && count >= MEM_STEER_MAX) {
    rc = -ENOSPC;
    goto out;
  }
  if (port < 0 && !found) {
    rc = (int)count;
    goto out;
  }
  unsigned seq = atomic_load_explicit(&w->steer_seq, memory_order_relaxed);
  atomic_store_explicit(&w->steer_seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  if (port >= 0) {
    atomic_store_explicit(&w->steer[i].key, key, memory_order_relaxed);
    atomic_store_explicit(&w->steer[i].val, STEER_USED | (uint64_t)port << 32 | ports, memory_order_relaxed);
    if (!found) count++;
  } else {
    /* Linear probing: close the gap by moving later entries of the run back (no tombstones). */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & (MEM_STEER_SLOTS - 1);; j = (j + 1) & (MEM_STEER_SLOTS - 1)) {
      uint64_t v = atomic_load_explicit(&w->steer[j].val, memory_order_relaxed);
      if (!(v & STEER_USED)) break;
      uint64_t k = atomic_load_explicit(&w->steer[j].key, memory_order_relaxed);
      uint32_t home = steer_hash(k, (uint32_t)v);
      /* the entry at j may move to hole if its home is not cyclically in (hole, j] */
      bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (stays) continue;
      atomic_store_explicit(&w->steer[hole].key, k, memory_order_relaxed);
      atomic_store_explicit(&w->steer[hole].val, v, memory_order_relaxed);
      hole = j;
    }
    atomic_store_explicit(&w->steer[hole].val, 0, memory_order_relaxed);
    atomic_store_explicit(&w->steer[hole].key, 0, memory_order_relaxed);
    count--;
  }
  atomic_store_explicit(&w->steer_count, count, memory_order_relaxed);
  atomic_store_explicit(&w->steer_seq, seq + 2, memory_order_release);
  rc = (int)count;
out:
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int cpb_mem_steer_lookup(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  if (!name) return -EINVAL;
  /* The registry lock keeps the wire alive while we read; the table itself is read as the data path
   * reads it (under the sequence lock), with the key cpb_mem_steer writes. */
  pthread_mutex_lock(&g_lock);
  struct mem_wire *w = wire_find(name);
  int rc = -ENODEV;
  if (w && w->steer) {
    rc = steer_lookup(w, (uint64_t)src << 32 | dst, (uint32_t)sport << 16 | dport);
    if (rc == MEM_NOWHERE) rc = -EAGAIN; /* cannot happen: writers take the lock we hold */
    else if (rc < 0) rc = -ENOENT;
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

static struct mem_claim *claim_find(struct mem_wire *w, uint64_t key, uint32_t ports, uint64_t token) {
  for (uint32_t i = 0; i < MEM_CLAIMS; i++) {
    struct mem_claim *c = &w->claims[i];
    if (c->used && c->key == key && c->ports == ports && c->token == token) return c;
  }
  return NULL;
}

int cpb_mem_claim(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int port,
                  int *owner) {
  if (!name || port < 0) return -EINVAL;
  pthread_mutex_lock(&g_lock);
  struct mem_wire *w = wire_find(name);
  int rc = -ENODEV;
  if (w && w->steer) {
    uint64_t key = (uint64_t)src << 32 | dst;
    uint32_t ports = (uint32_t)sport << 16 | dport;
    struct mem_claim *c = claim_find(w, key, ports, token);
    if (c) {
      *owner = c->owner;
      rc = -EEXIST;
    } else {
      c = &w->claims[w->claim_next];
      w->claim_next = (w->claim_next + 1) % MEM_CLAIMS;
      *c = (struct mem_claim){.key = key, .ports = ports, .token = token, .owner = port, .used = true};
      rc = 0;
    }
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int cpb_mem_unclaim(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  if (!name) return -EINVAL;
  pthread_mutex_lock(&g_lock);
  struct mem_wire *w = wire_find(name);
  int rc = -ENODEV;
  if (w && w->steer) {
    struct mem_claim *c = claim_find(w, (uint64_t)src << 32 | dst, (uint32_t)sport << 16 | dport, token);
    if (c) c->used = false;
    rc = c ? 0 : -ENOENT;
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

/* ---- data path -------------------------------------------------------------------------------- */

static uint32_t ring_used(struct mem_ring *r) {
  return (uint32_t)(atomic_load_explicit(&r->head, memory_order_relaxed) - atomic_load_explicit(&r->tail, memory_order_acquire));
}

/* Producer side: puts one frame into the ring to port dst. false when the ring is full. */
static bool ring_put(struct mem_dev *d, int dst, const uint8_t *data, uint32_t len, cpb_time_t at, uint64_t rewrite) {
  struct mem_ring *r = ring_of(d->w, d->end, dst);
  uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_relaxed);
  uint32_t tail = (uint32_t)atomic_load_explicit(&r->tail, memory_order_acquire);
  if (head - tail > r->mask) return false;
  struct mem_slot *s = &r->slots[head & r->mask];
  memcpy(s->data, data, len);
  if (rewrite & MAC_VALID)
    for (int k = 0; k < 6; k++) s->data[k] = (uint8_t)(rewrite >> (40 - 8 * k));
  s->len = len;
  s->deliver_at = at;
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
  d->signal_mask |= 1u << dst;
  return true;
}

/* Hands a frame to its port, or to every other attached port. false when a unicast ring was full. */
static bool deliver(struct mem_dev *d, int dst, const uint8_t *data, uint32_t len, cpb_time_t at, uint64_t rewrite) {
  if (dst >= 0) return ring_put(d, dst, data, len, at, rewrite);
  if (dst == MEM_NOWHERE) return true;
  for (int p = 0; p < d->w->nports; p++) {
    if (p == d->end || !atomic_load_explicit(&d->w->port[p].attached, memory_order_acquire)) continue;
    if (!ring_put(d, p, data, len, at, 0)) d->st.tx_dropped++;
  }
  return true;
}

/* Called after a batch was published: wake each receiver given frames, only if it said it might sleep. */
static void ring_signal(struct mem_dev *d) {
  uint32_t mask = d->signal_mask;
  d->signal_mask = 0;
  if (!mask) return;
  atomic_thread_fence(memory_order_seq_cst);
  for (int p = 0; mask; p++, mask >>= 1) {
    if (!(mask & 1)) continue;
    struct mem_port *pt = &d->w->port[p];
    int expect = 1;
    if (atomic_load_explicit(&pt->armed, memory_order_relaxed) == 1 &&
        atomic_compare_exchange_strong(&pt->armed, &expect, 2)) {
      uint64_t one = 1;
      if (write(pt->efd, &one, sizeof(one)) == sizeof(one)) d->st.wakeups++;
    }
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

/* The held frame keeps the route it had when it was held (its MAC already rewritten). */
static void flush_held(struct mem_dev *d, cpb_time_t now) {
  cpb_time_t at = deliver_time(d, now);
  if (!deliver(d, d->held_dst, d->held_data, d->held_len, at, 0)) return; /* full: keep holding, retry later */
  d->last_deliver = at;
  d->held = false;
}

static int mem_tx_burst(struct cpb_dev *dev, const struct cpb_frame *frames, int n, cpb_time_t now) {
  struct mem_dev *d = (struct mem_dev *)dev;
  int i = 0;
  if (d->held && now >= d->held_until) flush_held(d, now);
  for (; i < n; i++) {
    const struct cpb_frame *fr = &frames[i];
    uint64_t rewrite = 0;
    int dst = fr->len == 0 || fr->len > CPB_FRAME_MAX ? MEM_NOWHERE : route(d, fr->data, fr->len, &rewrite);
    if (dst == MEM_NOWHERE) { /* oversize, the cable is unplugged, or no port takes it */
      d->st.tx_dropped++;
      continue;
    }
    /* Room for the frame plus a possible duplicate and a released held frame. */
    if (dst >= 0) {
      uint32_t used = ring_used(ring_of(d->w, d->end, dst)) + (d->held && d->held_dst == dst ? 1 : 0);
      if (used + 1 > ring_of(d->w, d->end, dst)->mask + 1) break;
    }
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
      if (rewrite & MAC_VALID)
        for (int k = 0; k < 6; k++) d->held_data[k] = (uint8_t)(rewrite >> (40 - 8 * k));
      d->held_len = fr->len;
      d->held_dst = dst;
      d->held = true;
      d->held_until = now + MEM_REORDER_HOLD_US;
      d->st.injected_reorder++;
      continue;
    }
    cpb_time_t at = deliver_time(d, now);
    d->last_deliver = at;
    deliver(d, dst, data, fr->len, at, rewrite);
    if (d->f.dup && rnd32(d) < d->f.dup) {
      bool room = dst < 0 || ring_used(ring_of(d->w, d->end, dst)) + (d->held && d->held_dst == dst ? 1 : 0) + 1 <=
                                 ring_of(d->w, d->end, dst)->mask + 1;
      if (room) {
        deliver(d, dst, data, fr->len, at, rewrite);
        d->st.injected_dup++;
      }
    }
    if (d->held) flush_held(d, now); /* the held frame is now behind a later one */
  }
  for (int k = i; k < n; k++) d->st.tx_dropped++;
  ring_signal(d);
  return i;
}

static int rx_collect(struct mem_dev *d, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct mem_wire *w = d->w;
  int n = 0;
  for (int k = 0; k < w->nports && n < max; k++) {
    int s = (d->rx_next + k) % w->nports;
    if (s == d->end) continue;
    struct mem_ring *r = ring_of(w, s, d->end);
    uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_acquire);
    while (n < max && d->rx_peeked[s] != head) {
      struct mem_slot *sl = &r->slots[d->rx_peeked[s] & r->mask];
      if (sl->deliver_at > now) break;
      frames[n].data = sl->data;
      frames[n].len = sl->len;
      frames[n].cookie = (uint64_t)s;
      d->st.rx_frames++;
      d->st.rx_bytes += sl->len;
      d->rx_peeked[s]++;
      n++;
    }
  }
  d->rx_next = (d->rx_next + 1) % w->nports;
  return n;
}

static void drain_efd(struct mem_dev *d, struct mem_port *p) {
  uint64_t v;
  d->need_drain = read(p->efd, &v, sizeof(v)) != sizeof(v);
}

static int mem_rx_burst(struct cpb_dev *dev, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_port *p = &d->w->port[d->end];
  if (d->held && now >= d->held_until) flush_held(d, now), ring_signal(d);
  if (atomic_load_explicit(&p->armed, memory_order_relaxed) != 0) {
    if (atomic_exchange(&p->armed, 0) == 2) d->need_drain = true;
  }
  if (d->need_drain) drain_efd(d, p);
  if (max <= 0) return 0;
  int n = rx_collect(d, frames, max, now);
  if (n == 0) {
    /* Going idle: arm, then look once more so a frame published meanwhile is not slept on. */
    atomic_store(&p->armed, 1);
    atomic_thread_fence(memory_order_seq_cst);
    n = rx_collect(d, frames, max, now);
    if (n && atomic_exchange(&p->armed, 0) == 2) d->need_drain = true; /* not going to sleep after all */
  }
  return n;
}

/* Frees the first n frames handed out, counted per source ring (each ring's frames leave oldest first). */
static void mem_rx_release(struct cpb_dev *dev, struct cpb_frame *frames, int n) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_wire *w = d->w;
  if (n <= 0) return;
  uint32_t count[CPB_MEM_MAX_PORTS] = {0};
  if (w->nports == 2 || !frames) {
    count[!d->end] = (uint32_t)n;
  } else {
    for (int i = 0; i < n; i++)
      if (frames[i].cookie < (uint64_t)w->nports) count[frames[i].cookie]++;
  }
  for (int s = 0; s < w->nports; s++) {
    if (s == d->end || !count[s]) continue;
    struct mem_ring *r = ring_of(w, s, d->end);
    uint32_t tail = (uint32_t)atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint32_t out = d->rx_peeked[s] - tail;
    uint32_t k = count[s] > out ? out : count[s];
    atomic_store_explicit(&r->tail, tail + k, memory_order_release);
  }
}

static int mem_wait_fd(struct cpb_dev *dev) {
  struct mem_dev *d = (struct mem_dev *)dev;
  return d->w->port[d->end].efd;
}

static cpb_time_t mem_next_deadline(struct cpb_dev *dev) {
  struct mem_dev *d = (struct mem_dev *)dev;
  struct mem_wire *w = d->w;
  cpb_time_t t = d->held ? d->held_until : UINT64_MAX;
  for (int s = 0; s < w->nports; s++) {
    if (s == d->end) continue;
    struct mem_ring *r = ring_of(w, s, d->end);
    uint32_t head = (uint32_t)atomic_load_explicit(&r->head, memory_order_acquire);
    if (d->rx_peeked[s] != head) t = CPB_MIN(t, r->slots[d->rx_peeked[s] & r->mask].deliver_at);
  }
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
