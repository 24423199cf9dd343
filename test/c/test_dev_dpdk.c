/* dpdk: URIs that must fail before EAL starts (so no hugepages, root or NIC are needed here): a missing
 * device, malformed options, and, in a build without DPDK, the sentence that says how to get it. The data
 * path runs against real PMDs in test/interop/dpdk*.test.ts. */
#include "t.h"

#include "dev/dev.h"

static int open_err(const char *uri, char *err, size_t len) {
  struct cpb_dev *d = NULL;
  int rc = cpb_dev_open(&d, uri, err, len);
  CHECK(d == NULL);
  return rc;
}

#ifdef CPB_HAVE_DPDK
TEST(dpdk_needs_a_device) {
  char err[300];
  CHECK_EQ(open_err("dpdk:", err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "no device given") != NULL);
  CHECK_EQ(open_err("dpdk:?mbufs=1024", err, sizeof(err)), -EINVAL);
}

TEST(dpdk_rejects_bad_options) {
  char err[300];
  const char *bad[] = {"dpdk:net_null0?mbufs=1", "dpdk:net_null0?mbufs=", "dpdk:net_null0?rxd=99999",
                       "dpdk:net_null0?txd=-5", "dpdk:net_null0?bogus=1", "dpdk:net_null0?mbufs=12x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_EQ(open_err(bad[i], err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "bad option") != NULL);
  }
}

TEST(dpdk_rejects_overlong_devargs) {
  char uri[1200], err[300];
  memset(uri, 'a', sizeof(uri) - 1);
  memcpy(uri, "dpdk:", 5);
  uri[sizeof(uri) - 1] = 0;
  CHECK_EQ(open_err(uri, err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "longer than") != NULL);
}
#else
TEST(dpdk_says_how_to_get_it) {
  char err[300];
  CHECK_EQ(open_err("dpdk:net_af_packet0,iface=eth0", err, sizeof(err)), -ENOTSUP);
  CHECK(strstr(err, "libdpdk-dev") != NULL);
}
#endif
