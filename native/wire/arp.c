/* ARP (RFC 826), restricted to the only form the stack speaks: Ethernet hardware addresses and IPv4
 * protocol addresses. Anything else is a well-formed packet we do not support (-EPROTONOSUPPORT), not
 * a malformed one, so callers can count the two apart. Bytes past ARP_LEN (Ethernet padding) are
 * ignored. */
#include "arp.h"

#define ARP_HTYPE_ETHER 1

int arp_parse(const uint8_t *buf, size_t len, struct arp_repr *out) {
  if (len < ARP_LEN) return -EINVAL;
  if (cpb_get_be16(buf) != ARP_HTYPE_ETHER || cpb_get_be16(buf + 2) != ETHERTYPE_IPV4 ||
      buf[4] != ETH_ADDR_LEN || buf[5] != 4)
    return -EPROTONOSUPPORT;
  uint16_t op = cpb_get_be16(buf + 6);
  if (op != ARP_OP_REQUEST && op != ARP_OP_REPLY) return -EPROTONOSUPPORT;
  out->op = op;
  memcpy(out->sha, buf + 8, ETH_ADDR_LEN);
  out->spa = cpb_get_be32(buf + 14);
  memcpy(out->tha, buf + 18, ETH_ADDR_LEN);
  out->tpa = cpb_get_be32(buf + 24);
  return 0;
}

int arp_emit(const struct arp_repr *r, uint8_t *buf, size_t cap) {
  if (cap < ARP_LEN) return -ENOSPC;
  cpb_put_be16(buf, ARP_HTYPE_ETHER);
  cpb_put_be16(buf + 2, ETHERTYPE_IPV4);
  buf[4] = ETH_ADDR_LEN;
  buf[5] = 4;
  cpb_put_be16(buf + 6, r->op);
  memcpy(buf + 8, r->sha, ETH_ADDR_LEN);
  cpb_put_be32(buf + 14, r->spa);
  memcpy(buf + 18, r->tha, ETH_ADDR_LEN);
  cpb_put_be32(buf + 24, r->tpa);
  return ARP_LEN;
}
