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

int cpb_lb_redirect(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t backend) {
  struct lb_flow k;
  memset(&k, 0, sizeof(k));
  k.saddr = htonl(src);
  k.daddr = htonl(dst);
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = 6;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  struct lb_flow_val v = {.backend = backend, .last_seen_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec};
  return bpf_map_update_elem(fd, &k, &v, BPF_ANY) ? -errno : 0;
}

void cpb_lb_close(int fd) {
  if (fd >= 0) close(fd);
}
#else
int cpb_lb_open(const char *pinned_map) {
  (void)pinned_map;
  return -ENOTSUP;
}
int cpb_lb_redirect(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t backend) {
  (void)fd, (void)src, (void)sport, (void)dst, (void)dport, (void)backend;
  return -ENOTSUP;
}
void cpb_lb_close(int fd) { (void)fd; }
#endif
