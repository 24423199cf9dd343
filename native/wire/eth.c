/* Ethernet II header. The frame is taken as it comes: an 802.1Q tag is reported as ETHERTYPE_VLAN and
 * left to the caller, because the device backends strip tags (or steer untagged traffic only). */
#include "eth.h"

int eth_parse(const uint8_t *buf, size_t len, struct eth_repr *out, const uint8_t **payload, size_t *payload_len) {
  if (len < ETH_HDR_LEN) return -EINVAL;
  memcpy(out->dst, buf, ETH_ADDR_LEN);
  memcpy(out->src, buf + 6, ETH_ADDR_LEN);
  out->ethertype = cpb_get_be16(buf + 12);
  *payload = buf + ETH_HDR_LEN;
  *payload_len = len - ETH_HDR_LEN;
  return 0;
}

int eth_emit(const struct eth_repr *r, uint8_t *buf, size_t cap) {
  if (cap < ETH_HDR_LEN) return -ENOSPC;
  memcpy(buf, r->dst, ETH_ADDR_LEN);
  memcpy(buf + 6, r->src, ETH_ADDR_LEN);
  cpb_put_be16(buf + 12, r->ethertype);
  return ETH_HDR_LEN;
}

bool eth_is_broadcast(const uint8_t addr[ETH_ADDR_LEN]) {
  static const uint8_t bcast[ETH_ADDR_LEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  return memcmp(addr, bcast, ETH_ADDR_LEN) == 0;
}
