/* Shared-memory arena: memfd-backed so the mapping can be shared (JS maps it read-only for stats) and
 * so hugepages can back it when the system has them reserved (MFD_HUGETLB), falling back to normal pages.
 * Free lists are index-linked inside the arena itself, which keeps it position independent. Slots come
 * back zeroed because a TCB must never inherit state from a previous flow. */
#include "arena.h"

#include <sys/mman.h>
#include <unistd.h>

#define ARENA_ALIGN 4096u

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static void layout(const struct cpb_arena_config *cfg, uint64_t *slots_off, uint64_t *links_off,
                   uint64_t *chunks_off, uint64_t *total) {
  *slots_off = align_up(sizeof(struct cpb_arena_header), ARENA_ALIGN);
  *links_off = align_up(*slots_off + (uint64_t)cfg->slots * CPB_SLOT_SIZE, 64);
  *chunks_off = align_up(*links_off + (uint64_t)cfg->chunks * sizeof(uint32_t), ARENA_ALIGN);
  *total = align_up(*chunks_off + (uint64_t)cfg->chunks * CPB_CHUNK_SIZE, 2u << 20);
}

size_t cpb_arena_size_for(const struct cpb_arena_config *cfg) {
  uint64_t s, l, c, t;
  layout(cfg, &s, &l, &c, &t);
  return (size_t)t;
}

static int map_memfd(struct cpb_arena *a, size_t size, bool huge) {
  int fd = memfd_create("capybara-arena", MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0));
  if (fd < 0) return -errno;
  if (ftruncate(fd, (off_t)size) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | (huge ? MAP_POPULATE : 0), fd, 0);
  if (p == MAP_FAILED) {
    int e = -errno;
    close(fd);
    return e;
  }
  a->fd = fd;
  a->base = p;
  a->size = size;
  return 0;
}

int cpb_arena_create(struct cpb_arena *a, const struct cpb_arena_config *cfg) {
  memset(a, 0, sizeof(*a));
  a->fd = -1;
  if (cfg->slots == 0 || cfg->chunks == 0 || cfg->slots >= CPB_NO_SLOT || cfg->chunks >= CPB_NO_CHUNK) return -EINVAL;
  uint64_t slots_off, links_off, chunks_off, total;
  layout(cfg, &slots_off, &links_off, &chunks_off, &total);
  if (total > (64ULL << 30)) return -EINVAL;

  bool huge = false;
  int rc = -1;
  if (cfg->try_hugepages) {
    rc = map_memfd(a, total, true);
    huge = rc == 0;
  }
  if (!huge) rc = map_memfd(a, total, false);
  if (rc != 0) return rc;

  struct cpb_arena_header *h = (struct cpb_arena_header *)a->base;
  h->magic = CPB_ARENA_MAGIC;
  h->version = CPB_ARENA_VERSION;
  h->slot_size = CPB_SLOT_SIZE;
  h->chunk_size = CPB_CHUNK_SIZE;
  h->slots = cfg->slots;
  h->chunks = cfg->chunks;
  h->slots_off = slots_off;
  h->links_off = links_off;
  h->chunks_off = chunks_off;
  h->total_size = total;
  h->hugepages = huge;
  a->hdr = h;
  a->links = (uint32_t *)(a->base + links_off);

  /* Free lists in ascending order, so early allocations are dense and touch few pages. */
  for (uint32_t i = 0; i < cfg->slots; i++) {
    uint32_t next = i + 1 < cfg->slots ? i + 1 : CPB_NO_SLOT;
    memcpy(cpb_arena_slot(a, i), &next, sizeof(next));
  }
  h->slot_free_head = 0;
  for (uint32_t i = 0; i < cfg->chunks; i++) a->links[i] = i + 1 < cfg->chunks ? i + 1 : CPB_NO_CHUNK;
  h->chunk_free_head = 0;
  return 0;
}

void cpb_arena_destroy(struct cpb_arena *a) {
  if (a->base) munmap(a->base, a->size);
  if (a->fd >= 0) close(a->fd);
  memset(a, 0, sizeof(*a));
  a->fd = -1;
}

uint32_t cpb_arena_slot_alloc(struct cpb_arena *a) {
  struct cpb_arena_header *h = a->hdr;
  uint32_t idx = h->slot_free_head;
  if (idx == CPB_NO_SLOT) return CPB_NO_SLOT;
  void *slot = cpb_arena_slot(a, idx);
  memcpy(&h->slot_free_head, slot, sizeof(uint32_t));
  memset(slot, 0, CPB_SLOT_SIZE);
  if (++h->slots_used > h->slots_peak) h->slots_peak = h->slots_used;
  return idx;
}

void cpb_arena_slot_free(struct cpb_arena *a, uint32_t idx) {
  struct cpb_arena_header *h = a->hdr;
  if (idx >= h->slots) return;
  memcpy(cpb_arena_slot(a, idx), &h->slot_free_head, sizeof(uint32_t));
  h->slot_free_head = idx;
  h->slots_used--;
}

uint32_t cpb_arena_chunk_alloc(struct cpb_arena *a) {
  struct cpb_arena_header *h = a->hdr;
  uint32_t idx = h->chunk_free_head;
  if (idx == CPB_NO_CHUNK) {
    h->chunk_alloc_failures++;
    return CPB_NO_CHUNK;
  }
  h->chunk_free_head = a->links[idx];
  a->links[idx] = CPB_NO_CHUNK;
  if (++h->chunks_used > h->chunks_peak) h->chunks_peak = h->chunks_used;
  return idx;
}

void cpb_arena_chunk_free(struct cpb_arena *a, uint32_t idx) {
  struct cpb_arena_header *h = a->hdr;
  if (idx >= h->chunks) return;
  a->links[idx] = h->chunk_free_head;
  h->chunk_free_head = idx;
  h->chunks_used--;
}
