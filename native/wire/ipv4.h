/* IPv4 header (RFC 791). Options are skipped, fragments are reported so the caller can count and drop
 * them, the header checksum is verified on parse and computed on emit. */
#ifndef CPB_WIRE_IPV4_H
#define CPB_WIRE_IPV4_H
#include "../common.h"

#define IPV4_MIN_HDR_LEN 20
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6

struct ipv4_repr {
  cpb_ip4_t src;
  cpb_ip4_t dst;
  uint8_t proto;
  uint8_t ttl;
  uint8_t tos;
  uint16_t id;
  bool dont_fragment;
  bool is_fragment;     /* MF set or offset != 0 */
  uint8_t hdr_len;      /* bytes, including options */
  uint16_t payload_len; /* total_length - hdr_len */
};

/* Errors: -EINVAL (short, bad version/IHL, total length beyond buffer or below header), -EBADMSG (bad
 * header checksum). *payload points at payload_len bytes; link-layer padding past total_length is ignored. */
int ipv4_parse(const uint8_t *buf, size_t len, struct ipv4_repr *out, const uint8_t **payload);
/* Writes a 20-byte header (no options) with checksum for r->payload_len bytes of payload that follow.
 * Returns IPV4_MIN_HDR_LEN or -ENOSPC (-EINVAL when payload_len + 20 exceeds 65535). */
int ipv4_emit(const struct ipv4_repr *r, uint8_t *buf, size_t cap);
#endif
