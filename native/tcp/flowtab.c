/* 4-tuple -> TCB slot. Open addressing with linear probing over a power-of-two table sized at init to
 * at least twice max_flows (load <= 0.5), so probes stay short and nothing is allocated later.
 * Deletion shifts later members of the cluster back instead of leaving tombstones, so a long-running
 * engine never degrades. The hash is keyed (from the ISS secret) so a peer cannot aim collisions. */
#include <stdlib.h>

#include "tcb.h"

static inline uint32_t ft_hash(const struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip,
                               uint16_t rport) {
  uint64_t x = ((uint64_t)rip << 32 | (uint64_t)rport << 16 | lport) ^ t->hkey[0];
  x ^= (uint64_t)lip * 0x9e3779b97f4a7c15ULL;
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL ^ t->hkey[1];
  x ^= x >> 29;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 32;
  return (uint32_t)x;
}

int flowtab_init(struct cpb_tcp *t, uint32_t max_flows) {
  uint32_t size = 16;
  while (size < max_flows * 2u && size < (1u << 30)) size <<= 1;
  t->ftab = malloc(sizeof(uint32_t) * size);
  if (!t->ftab) return -ENOMEM;
  for (uint32_t i = 0; i < size; i++) t->ftab[i] = TCP_NONE;
  t->ftab_mask = size - 1;
  uint8_t m[4] = {'f', 't', 'a', 'b'};
  t->hkey[0] = siphash24(t->cfg.iss_secret, m, sizeof(m));
  m[0] = 'g';
  t->hkey[1] = siphash24(t->cfg.iss_secret, m, sizeof(m)) | 1;
  return 0;
}

static inline bool ft_match(const struct tcb *b, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport) {
  return b->lport == lport && b->rport == rport && b->rip == rip && b->lip == lip;
}

struct tcb *flowtab_lookup(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport) {
  uint32_t i = ft_hash(t, lip, lport, rip, rport) & t->ftab_mask;
  for (;;) {
    uint32_t s = t->ftab[i];
    if (s == TCP_NONE) return NULL;
    struct tcb *b = tcb_at(t, s);
    if (ft_match(b, lip, lport, rip, rport)) return b;
    i = (i + 1) & t->ftab_mask;
  }
}

void flowtab_insert(struct cpb_tcp *t, struct tcb *b) {
  if (b->flags & TF_HASHED) return;
  uint32_t i = ft_hash(t, b->lip, b->lport, b->rip, b->rport) & t->ftab_mask;
  while (t->ftab[i] != TCP_NONE) i = (i + 1) & t->ftab_mask;
  t->ftab[i] = b->self;
  b->flags |= TF_HASHED;
}

void flowtab_remove(struct cpb_tcp *t, struct tcb *b) {
  if (!(b->flags & TF_HASHED)) return;
  b->flags &= ~TF_HASHED;
  uint32_t i = ft_hash(t, b->lip, b->lport, b->rip, b->rport) & t->ftab_mask;
  while (t->ftab[i] != b->self) {
    if (t->ftab[i] == TCP_NONE) return; /* not found: cannot happen while TF_HASHED is honest */
    i = (i + 1) & t->ftab_mask;
  }
  /* Backward-shift: move later cluster members whose home is at or before the hole into it. */
  uint32_t hole = i;
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & t->ftab_mask;
    uint32_t s = t->ftab[j];
    if (s == TCP_NONE) break;
    struct tcb *o = tcb_at(t, s);
    uint32_t home = ft_hash(t, o->lip, o->lport, o->rip, o->rport) & t->ftab_mask;
    /* o may move to the hole when its home is not cyclically within (hole, j]. */
    bool in_between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!in_between) {
      t->ftab[hole] = s;
      hole = j;
    }
  }
  t->ftab[hole] = TCP_NONE;
}
