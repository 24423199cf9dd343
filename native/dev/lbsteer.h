/* Writing the L4 balancer's redirect table from a runtime: one bpf(2) map update on the pinned map, so
 * steering a migrated flow costs microseconds instead of a helper process. Only does something when built
 * with libbpf (CPB_HAVE_XDP). */
#ifndef CPB_LBSTEER_H
#define CPB_LBSTEER_H
#include "../common.h"

/* Opens the pinned redirect map; returns an fd or -errno. */
int cpb_lb_open(const char *pinned_map);
/* Steers TCP flow src:sport -> dst:dport (host order) to backend index; 0 or -errno. */
int cpb_lb_redirect(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint32_t backend);
/* The backend index (>= 0) the redirect map holds for TCP flow src:sport -> dst:dport (host order, the
 * key cpb_lb_redirect writes), -ENOENT when the flow has no entry, or another -errno. */
int cpb_lb_lookup(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport);
/* Claims migration `token` (64 bits, all compared) of TCP flow src:sport -> dst:dport for backend, if
 * nobody has: 0 (claimed now), -EEXIST with *owner the backend that claimed it first, or -errno. One side
 * of a migration claims before it serves the flow (the target) or before it takes it back (the source): an
 * atomic insert, so exactly one of them can. */
int cpb_lb_claim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, uint32_t backend,
                 int32_t *owner);
/* Where claim `token` goes on its probe-th try (24 bits of the map key; exposed for the tests). */
uint32_t cpb_lb_claim_slot(uint64_t token, int probe);
/* Forgets a claim once no late copy of its offer can matter (0 or -errno). */
int cpb_lb_unclaim(int fd, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token);
void cpb_lb_close(int fd);
#endif
