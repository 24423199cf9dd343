/* The shared-memory arena: one memfd mapping (hugepages when the system has them) that holds
 * fixed-size TCB slots and a pool of fixed-size data chunks. Everything inside refers to everything
 * else by index, never by pointer, so the arena can be mapped at any address (JS maps it read-only for
 * stats) and a TCB can be copied out as a snapshot and back in elsewhere.
 *
 * Layout: [header][slot 0 .. slot N-1][chunk next-links u32 x M][chunk 0 .. chunk M-1]
 * Only the engine thread allocates and frees; no locking inside. */
#ifndef CPB_ARENA_H
#define CPB_ARENA_H
#include "common.h"

#define CPB_ARENA_MAGIC 0x59425043u /* "CPBY" little-endian */
#define CPB_ARENA_VERSION 1
#define CPB_SLOT_SIZE 1024u  /* one TCB; an idle connection costs exactly this */
#define CPB_CHUNK_SIZE 2048u /* send/receive data unit */
#define CPB_NO_CHUNK UINT32_MAX
#define CPB_NO_SLOT UINT32_MAX

struct cpb_arena_config {
  uint32_t slots;  /* max TCBs */
  uint32_t chunks; /* data chunks in the shared pool */
  bool try_hugepages;
};

/* Lives at offset 0 of the mapping; readable by anyone who maps the memfd. */
struct cpb_arena_header {
  uint32_t magic;
  uint32_t version;
  uint32_t slot_size;
  uint32_t chunk_size;
  uint32_t slots;
  uint32_t chunks;
  uint64_t slots_off;
  uint64_t links_off;
  uint64_t chunks_off;
  uint64_t total_size;
  uint32_t slots_used;
  uint32_t chunks_used;
  uint32_t slots_peak;
  uint32_t chunks_peak;
  uint64_t chunk_alloc_failures;
  uint32_t slot_free_head;
  uint32_t chunk_free_head;
  uint32_t hugepages;
};

struct cpb_arena {
  uint8_t *base;
  size_t size;
  int fd;
  struct cpb_arena_header *hdr;
  uint32_t *links; /* chunk free-list / chain links; slot free list reuses the first 4 bytes of a slot */
};

/* Returns 0, -EINVAL (zero sizes or too large), or -errno from memfd_create/ftruncate/mmap. */
int cpb_arena_create(struct cpb_arena *a, const struct cpb_arena_config *cfg);
void cpb_arena_destroy(struct cpb_arena *a);
size_t cpb_arena_size_for(const struct cpb_arena_config *cfg);

/* Slots come back zeroed. */
uint32_t cpb_arena_slot_alloc(struct cpb_arena *a);
void cpb_arena_slot_free(struct cpb_arena *a, uint32_t idx);
static inline void *cpb_arena_slot(const struct cpb_arena *a, uint32_t idx) {
  return a->base + a->hdr->slots_off + (size_t)idx * CPB_SLOT_SIZE;
}

uint32_t cpb_arena_chunk_alloc(struct cpb_arena *a);
void cpb_arena_chunk_free(struct cpb_arena *a, uint32_t idx);
static inline uint8_t *cpb_arena_chunk(const struct cpb_arena *a, uint32_t idx) {
  return a->base + a->hdr->chunks_off + (size_t)idx * CPB_CHUNK_SIZE;
}
/* Link word of a chunk: the next chunk in a chain (CPB_NO_CHUNK ends it). */
static inline uint32_t *cpb_arena_chunk_link(const struct cpb_arena *a, uint32_t idx) { return &a->links[idx]; }
static inline uint32_t cpb_arena_chunks_free(const struct cpb_arena *a) { return a->hdr->chunks - a->hdr->chunks_used; }
#endif
