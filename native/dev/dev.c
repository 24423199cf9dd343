/* Device URIs: "scheme:spec" is dispatched to the backend whose ops table names that scheme. The
 * table of backends is fixed at build time; xdp: is present only when libxdp was found (CPB_HAVE_XDP),
 * and asking for it otherwise says so instead of pretending the scheme does not exist. */
#include <stdio.h>

#include "dev.h"

static const struct cpb_dev_ops *const backends[] = {
    &cpb_dev_mem_ops,
#ifdef CPB_HAVE_XDP
    &cpb_dev_xsk_ops,
#endif
#ifdef CPB_HAVE_DPDK
    &cpb_dev_dpdk_ops,
#endif
};

int cpb_dev_open(struct cpb_dev **out, const char *uri, char *err, size_t errlen) {
  char dummy[1];
  if (!err || !errlen) err = dummy, errlen = sizeof(dummy);
  err[0] = 0;
  if (!out || !uri) {
    snprintf(err, errlen, "device: no URI given");
    return -EINVAL;
  }
  *out = NULL;
  const char *colon = strchr(uri, ':');
  size_t slen = colon ? (size_t)(colon - uri) : 0;
  for (size_t i = 0; colon && i < CPB_ARRAY_LEN(backends); i++) {
    const struct cpb_dev_ops *ops = backends[i];
    if (strlen(ops->scheme) != slen || memcmp(ops->scheme, uri, slen)) continue;
    int rc = ops->open(out, colon + 1, err, errlen);
    if (rc == 0) (*out)->ops = ops;
    return rc;
  }
#ifndef CPB_HAVE_XDP
  if (colon && slen == 3 && !memcmp(uri, "xdp", 3)) {
    snprintf(err, errlen, "device \"%s\": xdp: is unavailable because libxdp/libbpf were not found when "
                          "the engine was built (install libxdp-dev and libbpf-dev, then rebuild)", uri);
    return -ENOTSUP;
  }
#endif
#ifndef CPB_HAVE_DPDK
  if (colon && slen == 4 && !memcmp(uri, "dpdk", 4)) {
    snprintf(err, errlen, "device \"%s\": dpdk: is unavailable because DPDK (pkg-config libdpdk) was not found "
                          "when the engine was built (apt-get install libdpdk-dev, then rebuild: npx node-gyp rebuild)", uri);
    return -ENOTSUP;
  }
#endif
  snprintf(err, errlen, "device \"%s\": unknown scheme; known schemes are mem:NAME%s", uri,
#ifdef CPB_HAVE_XDP
           " and xdp:IFACE[@queue]?ip=A.B.C.D"
#else
           " (xdp: needs a build with libxdp)"
#endif
  );
  return -ENODEV;
}
