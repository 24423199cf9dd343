/* Arena: geometry, zeroed slots, free-list reuse, exhaustion, and the idle-connection budget. */
#include "arena.h"
#include "t.h"

TEST(arena_slots_and_chunks) {
  struct cpb_arena a;
  struct cpb_arena_config cfg = {.slots = 4, .chunks = 3};
  REQUIRE(cpb_arena_create(&a, &cfg) == 0);
  CHECK_EQ(a.hdr->magic, CPB_ARENA_MAGIC);
  uint32_t s[4];
  for (int i = 0; i < 4; i++) {
    s[i] = cpb_arena_slot_alloc(&a);
    CHECK(s[i] != CPB_NO_SLOT);
    memset(cpb_arena_slot(&a, s[i]), 0xab, CPB_SLOT_SIZE);
  }
  CHECK_EQ(cpb_arena_slot_alloc(&a), CPB_NO_SLOT);
  cpb_arena_slot_free(&a, s[2]);
  uint32_t again = cpb_arena_slot_alloc(&a);
  CHECK_EQ(again, s[2]);
  const uint8_t *p = cpb_arena_slot(&a, again);
  int nonzero = 0;
  for (unsigned i = 0; i < CPB_SLOT_SIZE; i++) nonzero |= p[i];
  CHECK_EQ(nonzero, 0);
  CHECK_EQ(a.hdr->slots_used, 4);

  uint32_t c0 = cpb_arena_chunk_alloc(&a), c1 = cpb_arena_chunk_alloc(&a), c2 = cpb_arena_chunk_alloc(&a);
  CHECK(c0 != CPB_NO_CHUNK && c1 != CPB_NO_CHUNK && c2 != CPB_NO_CHUNK);
  CHECK_EQ(cpb_arena_chunk_alloc(&a), CPB_NO_CHUNK);
  CHECK_EQ(a.hdr->chunk_alloc_failures, 1);
  memset(cpb_arena_chunk(&a, c2), 0x5a, CPB_CHUNK_SIZE); /* whole chunk writable */
  cpb_arena_chunk_free(&a, c1);
  CHECK_EQ(cpb_arena_chunks_free(&a), 1);
  CHECK_EQ(cpb_arena_chunk_alloc(&a), c1);
  cpb_arena_destroy(&a);
}

TEST(arena_rejects_bad_geometry) {
  struct cpb_arena a;
  struct cpb_arena_config cfg = {.slots = 0, .chunks = 1};
  CHECK_EQ(cpb_arena_create(&a, &cfg), -EINVAL);
}

/* DESIGN/issue budget: 100,000 idle connections fit in a 256 MB arena together with a data pool. */
TEST(arena_idle_connection_budget) {
  struct cpb_arena_config cfg = {.slots = 100000, .chunks = 65536};
  CHECK(cpb_arena_size_for(&cfg) <= (256u << 20));
  CHECK(CPB_SLOT_SIZE <= 2048);
}
