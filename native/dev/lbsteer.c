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

/* A claim lives in the redirect map itself under the flow's key with protocol 253 and the token in the
 * padding: the XDP program only ever looks up TCP keys, and an LRU map forgets old claims first. */
static void claim_key(struct lb_flow *k, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t token) {
  lb_key(k, src, sport, dst, dport);
  k->proto = 253;
  k->pad[0] = (uint8_t)token, k->pad[1] = (uint8_t)(token >> 8), k->pad[2] = (uint8_t)(token >> 16);
}

int cpb_lb_claim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t token, uint32_t backend,
                 int32_t *owner) {
  struct lb_flow k;
  claim_key(&k, src, sport, dst, dport, token);
  /* Stamped like a flow entry, so the balancer's idle sweep (lbctl expire) keeps it as long as one. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  struct lb_flow_val v = {.backend = backend, .last_seen_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec};
  if (bpf_map_update_elem(fd, &k, &v, BPF_NOEXIST) == 0) return 0;
  if (errno != EEXIST) return -errno;
  if (bpf_map_lookup_elem(fd, &k, &v)) return -errno; /* gone meanwhile (LRU): let the caller ask again */
  *owner = (int32_t)v.backend;
  return -EEXIST;
}

int cpb_lb_unclaim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t token) {
  struct lb_flow k;
  claim_key(&k, src, sport, dst, dport, token);
  return bpf_map_delete_elem(fd, &k) ? -errno : 0;
}

void cpb_lb_close(int fd) {
  if (fd >= 0) close(fd);
}
#else
int cpb_lb_claim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t token, uint32_t backend,
                 int32_t *owner) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport, (void)token, (void)backend, (void)owner;
  return -ENOTSUP;
}
int cpb_lb_unclaim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t token) {
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
