/* The lane's reassembly slots (native/mig/lanefrag.h) when more big messages arrive at once than there are
 * big slots: three sources each send a 260 KB offer (189 parts) over a path that loses 2 % of parts, copy
 * after copy in turn, as a target met them in the JS-lane soak. Pushing out the oldest slot for every new
 * message made them evict each other: one completed only when a single copy arrived unbroken (0.98^189,
 * about 2 %). Slots still arriving now stay and the third waits, so all three complete in a few copies. */
#include "mig/lanefrag.h"
#include "t.h"

#define TOTAL (260u * 1024)
#define SOURCES 3
#define ROUNDS 12

static uint32_t rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(*s >> 33);
}

/* One copy of source i's message: every part, 2 % of them lost. True when it completed the message. */
static bool copy_in(struct lane_reasm *r, int i, const uint8_t *m, cpb_time_t now, uint64_t *seed) {
  static uint8_t part[LANE_MAX_PLAIN];
  uint16_t count = lane_part_count(TOTAL);
  bool done = false;
  for (uint16_t k = 0; k < count; k++) {
    size_t n = lane_part_emit((uint32_t)(100 + i), 1, m, TOTAL, k, part);
    if (rnd(seed) % 100 < 2) continue;
    struct lane_part p;
    CHECK_EQ(lane_part_parse(part, n, &p), 0);
    struct lane_slot *s = NULL;
    int rc = lane_reasm_add(r, (cpb_ip4_t)(0x0a000001 + i), 7, &p, now, &s);
    CHECK(rc >= 0 || rc == -EBUSY);
    if (rc == LANE_PART_DONE) {
      CHECK_EQ(s->total, TOTAL);
      CHECK(memcmp(s->buf, m, TOTAL) == 0);
      lane_reasm_release(s);
      done = true;
    }
  }
  return done;
}

TEST(lanefrag_three_big_messages_at_once_all_complete_in_a_few_copies) {
  static struct lane_reasm r;
  REQUIRE(lane_reasm_init(&r) == 0);
  static uint8_t msg[TOTAL];
  for (uint32_t i = 0; i < TOTAL; i++) msg[i] = (uint8_t)(i * 31 + 7);
  uint64_t seed = 42;
  bool done[SOURCES] = {false};
  int rounds = 0, complete = 0;
  cpb_time_t now = 1000000;
  /* Each source sends its next copy 1 ms after the last one, as the lane's first re-sends go. */
  for (; rounds < ROUNDS && complete < SOURCES; rounds++) {
    for (int i = 0; i < SOURCES; i++) {
      if (!done[i] && copy_in(&r, i, msg, now, &seed)) {
        done[i] = true;
        complete++;
      }
      now += 300;
    }
  }
  printf("  three big messages: complete %d of %d after %d rounds; evicted %llu, parts refused %llu\n", complete,
         SOURCES, rounds, (unsigned long long)r.evicted, (unsigned long long)r.busy);
  CHECK_EQ(complete, SOURCES);
  CHECK(rounds <= 6);
  CHECK(r.busy > 0); /* the third did wait */
  lane_reasm_free(&r);
}
