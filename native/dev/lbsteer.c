/* See lbsteer.h. The map is an LRU hash keyed by the flow as it appears on the wire (network order),
 * valued by the backend index and a CLOCK_MONOTONIC last-seen stamp (what bpf_ktime_get_ns reads; layouts
 * in native/bpf/lb_maps.h), so a
 * fresh redirect is never mistaken for an idle entry. */
#include "lbsteer.h"

#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#ifdef CPB_HAVE_XDP
#include <bpf/bpf.h>

#include "../bpf/lb_maps.h"

int cpb_lb_open(const char *pinned_map) {
  int fd = bpf_obj_get(pinned_map);
  return fd < 0 ? -errno : fd;
}

/* The map key of a TCP flow: network order, padding zeroed (see lb_maps.h). */
static void lb_key(struct lb_flow *k, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  memset(k, 0, sizeof(*k));
  k->saddr = htonl(src);
  k->daddr = htonl(dst);
  k->sport = htons(sport);
  k->dport = htons(dport);
  k->proto = 6;
}

int cpb_lb_redirect(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t backend) {
  struct lb_flow k;
  lb_key(&k, src, sport, dst, dport);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  struct lb_flow_val v = {.backend = backend, .last_seen_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec};
  return bpf_map_update_elem(fd, &k, &v, BPF_ANY) ? -errno : 0;
}

int cpb_lb_lookup(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  struct lb_flow k;
  struct lb_flow_val v;
  lb_key(&k, src, sport, dst, dport);
  if (bpf_map_lookup_elem(fd, &k, &v)) return -errno; /* -ENOENT: the flow has no entry */
  return v.backend > INT32_MAX ? -ERANGE : (int)v.backend;
}

/* A claim lives in the redirect map itself under the flow's key with protocol 253 and 24 bits of the token
 * in the key's padding (the XDP program only ever looks up TCP keys, and an LRU map forgets old claims
 * first); the value's padding holds 32 more, checked on a match. A flow moved thousands of times leaves as
 * many claims: 24 bits alone would let a new migration meet an old one's claim (the soak met it once in a
 * few runs) and be decided by it. On such a meeting the claim goes to the next of a few slots that both
 * sides of a migration try in the same order, so they still meet in one. */
#define CLAIM_PROBES 4

uint32_t cpb_lb_claim_slot(uint64_t token, int probe) {
  uint64_t x = token + (uint64_t)probe * 0x9E3779B97F4A7C15ull;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return (uint32_t)x & 0xffffffu;
}

static void claim_key(struct lb_flow *k, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t slot) {
  lb_key(k, src, sport, dst, dport);
  k->proto = 253;
  k->pad[0] = (uint8_t)slot, k->pad[1] = (uint8_t)(slot >> 8), k->pad[2] = (uint8_t)(slot >> 16);
}

static uint32_t claim_check(uint64_t token) { return (uint32_t)(token >> 32) ^ (uint32_t)token; }

int cpb_lb_claim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, uint32_t backend,
                 int32_t *owner) {
  /* Stamped like a flow entry, so the balancer's idle sweep (lbctl expire) keeps it as long as one. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  struct lb_flow_val mine = {.backend = backend, .pad = claim_check(token),
                             .last_seen_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec};
  /* Ours already, in a later slot than one freed since (an unclaim, or the LRU)? */
  for (int probe = 0; probe < CLAIM_PROBES; probe++) {
    struct lb_flow k;
    struct lb_flow_val v;
    claim_key(&k, src, sport, dst, dport, cpb_lb_claim_slot(token, probe));
    if (bpf_map_lookup_elem(fd, &k, &v) == 0 && v.pad == mine.pad) {
      *owner = (int32_t)v.backend;
      return -EEXIST;
    }
  }
  for (int probe = 0; probe < CLAIM_PROBES; probe++) {
    struct lb_flow k;
    struct lb_flow_val v;
    claim_key(&k, src, sport, dst, dport, cpb_lb_claim_slot(token, probe));
    if (bpf_map_update_elem(fd, &k, &mine, BPF_NOEXIST) == 0) return 0;
    if (errno != EEXIST) return -errno;
    if (bpf_map_lookup_elem(fd, &k, &v)) return -errno; /* gone meanwhile (LRU): let the caller ask again */
    if (v.pad != mine.pad) continue; /* another migration's claim: the next slot */
    *owner = (int32_t)v.backend;
    return -EEXIST;
  }
  return -ENOSPC;
}

int cpb_lb_unclaim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  for (int probe = 0; probe < CLAIM_PROBES; probe++) {
    struct lb_flow k;
    struct lb_flow_val v;
    claim_key(&k, src, sport, dst, dport, cpb_lb_claim_slot(token, probe));
    if (bpf_map_lookup_elem(fd, &k, &v)) continue;
    if (v.pad == claim_check(token)) return bpf_map_delete_elem(fd, &k) ? -errno : 0;
  }
  return -ENOENT;
}

void cpb_lb_close(int fd) {
  if (fd >= 0) close(fd);
}
#else
int cpb_lb_claim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, uint32_t backend,
                 int32_t *owner) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport, (void)token, (void)backend, (void)owner;
  return -ENOTSUP;
}
int cpb_lb_unclaim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport, (void)token;
  return -ENOTSUP;
}
int cpb_lb_open(const char *pinned_map) {
  (void)pinned_map;
  return -ENOTSUP;
}
int cpb_lb_redirect(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t backend) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport, (void)backend;
  return -ENOTSUP;
}
int cpb_lb_lookup(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport;
  return -ENOTSUP;
}
void cpb_lb_close(int fd) { (void)fd; }
#endif
