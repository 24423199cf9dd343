/* Migration claims at the balancer (lane.h: Ownership): the first claim of (flow, token) wins, and a claim
 * is told apart from every other migration's by its whole 64-bit token. A flow moved thousands of times
 * leaves as many claims behind; when only 24 bits of the token were compared, the soak met an older
 * migration's claim once in a few runs: the target took it for its own, answered "adopted" without
 * adopting, and the connection was reset. Here: the mem: switch's claims, and the XDP balancer's in a real
 * BPF LRU map (root only), with two tokens made to share the 24 bits of the map key. */
#include <stdlib.h>
#include <unistd.h>

#include "dev/dev.h"
#include "dev/lbsteer.h"
#include "t.h"

#ifdef CPB_HAVE_XDP
#include <bpf/bpf.h>

#include "bpf/lb_maps.h"
#endif

static const cpb_ip4_t CLI = 0x0a000001, VIP = 0x0a000064;

TEST(mem_claims_compare_the_whole_token) {
  char err[256] = "";
  struct cpb_dev *a = NULL;
  REQUIRE(cpb_dev_open(&a, "mem:swclaims?ports=3", err, sizeof(err)) == 0); /* the switch holds the claims */
  const uint64_t T1 = 0x00000001deadbeefull, T2 = 0x00000002deadbeefull; /* equal in their low 32 bits */
  int owner = -1;
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5000, VIP, 80, T1, 1, &owner), 0);
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5000, VIP, 80, T2, 2, &owner), 0); /* another migration */
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5000, VIP, 80, T2, 1, &owner), -EEXIST);
  CHECK_EQ(owner, 2);
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5000, VIP, 80, T1, 2, &owner), -EEXIST);
  CHECK_EQ(owner, 1);
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5001, VIP, 80, T1, 2, &owner), 0); /* another flow */
  CHECK_EQ(cpb_mem_unclaim("swclaims", CLI, 5000, VIP, 80, T2), 0);
  CHECK_EQ(cpb_mem_unclaim("swclaims", CLI, 5000, VIP, 80, T2), -ENOENT);
  CHECK_EQ(cpb_mem_claim("swclaims", CLI, 5000, VIP, 80, T1, 2, &owner), -EEXIST); /* T1 stays */
  CHECK_EQ(owner, 1);
  a->ops->close(a);
}

#ifdef CPB_HAVE_XDP
struct tok {
  uint32_t slot;
  uint64_t token;
};

static int by_slot(const void *x, const void *y) {
  const struct tok *a = x, *b = y;
  return a->slot < b->slot ? -1 : a->slot > b->slot;
}

/* Two tokens whose first slot is the same (a birthday search: 20,000 tokens give about 12 such pairs). */
static bool colliding_pair(uint64_t *t1, uint64_t *t2) {
  enum { N = 20000 };
  struct tok *v = malloc(N * sizeof(*v));
  if (!v) return false;
  uint64_t x = 0x243F6A8885A308D3ull;
  for (int i = 0; i < N; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = (struct tok){cpb_lb_claim_slot(x | 1, 0), x | 1};
  }
  qsort(v, N, sizeof(*v), by_slot);
  bool found = false;
  for (int i = 1; i < N && !found; i++)
    if (v[i].slot == v[i - 1].slot && v[i].token != v[i - 1].token) *t1 = v[i - 1].token, *t2 = v[i].token, found = true;
  free(v);
  return found;
}

TEST(lb_claims_meeting_in_one_slot_stay_apart) {
  int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "cpb_t_claims", sizeof(struct lb_flow), sizeof(struct lb_flow_val), 1024,
                          NULL);
  if (fd < 0) {
    printf("# skipped: cannot create a BPF map (%d; not root?)\n", -errno);
    return;
  }
  uint64_t t1 = 0, t2 = 0;
  REQUIRE(colliding_pair(&t1, &t2));
  CHECK_EQ(cpb_lb_claim_slot(t1, 0), cpb_lb_claim_slot(t2, 0));
  int32_t owner = -1;
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t1, 1, &owner), 0);
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t2, 2, &owner), 0); /* not t1's: a slot of its own */
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t2, 1, &owner), -EEXIST);
  CHECK_EQ(owner, 2);
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t1, 2, &owner), -EEXIST);
  CHECK_EQ(owner, 1);
  /* Forgetting t1 frees its slot: t2 is still found, and a new claim of t1 is new again. */
  CHECK_EQ(cpb_lb_unclaim(fd, CLI, 5000, VIP, 80, t1), 0);
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t2, 1, &owner), -EEXIST);
  CHECK_EQ(owner, 2);
  CHECK_EQ(cpb_lb_unclaim(fd, CLI, 5000, VIP, 80, t2), 0);
  CHECK_EQ(cpb_lb_unclaim(fd, CLI, 5000, VIP, 80, t2), -ENOENT);
  CHECK_EQ(cpb_lb_claim(fd, CLI, 5000, VIP, 80, t1, 2, &owner), 0);
  /* Claims never look like the balancer's TCP entries. */
  CHECK_EQ(cpb_lb_lookup(fd, CLI, 5000, VIP, 80), -ENOENT);
  close(fd);
}
#endif
