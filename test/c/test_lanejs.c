/* JS-served flows on the migration lane (native/mig/lanejs.h): the ports that take them, and the records
 * that wait for JS: bounded in count and bytes, taken once, oldest first, and gone with their flow. */
#include "mig/lanejs.h"
#include "t.h"

TEST(lanejs_ports) {
  struct cpb_lane_js *j = cpb_lane_js_new();
  REQUIRE(j != NULL);
  CHECK(!cpb_lane_js_accepts(j, 80));
  CHECK_EQ(cpb_lane_js_listen(j, 0, true), -EINVAL);
  CHECK_EQ(cpb_lane_js_listen(j, 80, true), 0);
  CHECK_EQ(cpb_lane_js_listen(j, 80, true), 0); /* idempotent: one entry */
  CHECK(cpb_lane_js_accepts(j, 80));
  CHECK(!cpb_lane_js_accepts(j, 0));
  CHECK_EQ(cpb_lane_js_listen(j, 80, false), 0);
  CHECK(!cpb_lane_js_accepts(j, 80));
  CHECK_EQ(cpb_lane_js_listen(j, 80, false), 0);
  for (int p = 1; p <= CPB_LANE_JS_PORTS; p++) CHECK_EQ(cpb_lane_js_listen(j, (uint16_t)p, true), 0);
  CHECK_EQ(cpb_lane_js_listen(j, 9999, true), -ENOSPC);
  CHECK_EQ(cpb_lane_js_listen(j, 7, false), 0);
  CHECK_EQ(cpb_lane_js_listen(j, 9999, true), 0); /* the freed entry is reused */
  CHECK(cpb_lane_js_accepts(j, 9999) && !cpb_lane_js_accepts(j, 7));
  cpb_lane_js_free(j);
}

TEST(lanejs_records_taken_once_oldest_first) {
  struct cpb_lane_js *j = cpb_lane_js_new();
  REQUIRE(j != NULL);
  uint8_t a[100], b[3000];
  memset(a, 'a', sizeof(a));
  memset(b, 'b', sizeof(b));
  CHECK_EQ(cpb_lane_js_stash(j, 0, 0, a, sizeof(a)), -EINVAL);
  CHECK_EQ(cpb_lane_js_stash(j, 7, 70, a, sizeof(a)), 0);
  CHECK_EQ(cpb_lane_js_stash(j, 3, 0, b, sizeof(b)), 0);
  CHECK_EQ(cpb_lane_js_waiting(j), 2);
  uint8_t *rec = NULL;
  uint64_t id = 0, tag = 0;
  CHECK_EQ(cpb_lane_js_take(j, 99, &tag, &rec), -ENOENT);
  long n = cpb_lane_js_take_next(j, &id, &tag, &rec); /* 7 came first */
  CHECK_EQ(n, (long)sizeof(a));
  CHECK_EQ(id, 7);
  CHECK_EQ(tag, 70);
  CHECK(rec && memcmp(rec, a, sizeof(a)) == 0);
  cpb_lane_js_free_record(rec, (size_t)n);
  CHECK_EQ(cpb_lane_js_take(j, 7, &tag, &rec), -ENOENT); /* once */
  n = cpb_lane_js_take(j, 3, &tag, &rec);
  CHECK_EQ(n, (long)sizeof(b));
  CHECK(rec && memcmp(rec, b, sizeof(b)) == 0);
  cpb_lane_js_free_record(rec, (size_t)n);
  CHECK_EQ(cpb_lane_js_take_next(j, &id, &tag, &rec), -ENOENT);
  CHECK_EQ(cpb_lane_js_waiting(j), 0);
  /* A flow gone before JS took it: its record goes too; a reused id replaces what an old flow left. */
  CHECK_EQ(cpb_lane_js_stash(j, 5, 0, a, sizeof(a)), 0);
  cpb_lane_js_drop(j, 5);
  CHECK_EQ(cpb_lane_js_waiting(j), 0);
  CHECK_EQ(cpb_lane_js_stash(j, 5, 0, a, sizeof(a)), 0);
  CHECK_EQ(cpb_lane_js_stash(j, 5, 0, b, sizeof(b)), 0);
  CHECK_EQ(cpb_lane_js_waiting(j), 1);
  n = cpb_lane_js_take(j, 5, &tag, &rec);
  CHECK_EQ(n, (long)sizeof(b));
  cpb_lane_js_free_record(rec, (size_t)n);
  cpb_lane_js_free(j);
}

TEST(lanejs_bounded) {
  struct cpb_lane_js *j = cpb_lane_js_new();
  REQUIRE(j != NULL);
  uint8_t r[16] = {1};
  for (uint64_t id = 1; id <= CPB_LANE_JS_STASH; id++) CHECK_EQ(cpb_lane_js_stash(j, id, 0, r, sizeof(r)), 0);
  CHECK_EQ(cpb_lane_js_stash(j, 100000, 0, r, sizeof(r)), -ENOSPC); /* the offer is refused: the source keeps it */
  CHECK_EQ(cpb_lane_js_waiting(j), CPB_LANE_JS_STASH);
  cpb_lane_js_free(j); /* frees (and wipes) what nobody took: ASan checks nothing leaks */

  j = cpb_lane_js_new();
  REQUIRE(j != NULL);
  size_t big = CPB_LANE_JS_BYTES / 2 + 1;
  uint8_t *blob = calloc(1, big);
  REQUIRE(blob != NULL);
  CHECK_EQ(cpb_lane_js_stash(j, 1, 0, blob, big), 0);
  CHECK_EQ(cpb_lane_js_stash(j, 2, 0, blob, big), -ENOSPC); /* over the byte budget */
  uint8_t *rec = NULL;
  uint64_t tag = 0;
  long n = cpb_lane_js_take(j, 1, &tag, &rec);
  CHECK_EQ(n, (long)big);
  cpb_lane_js_free_record(rec, (size_t)n);
  CHECK_EQ(cpb_lane_js_stash(j, 2, 0, blob, big), 0); /* room again */
  free(blob);
  cpb_lane_js_free(j);
}
