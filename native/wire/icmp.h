/* ICMPv4 echo request/reply (RFC 792); other types are parsed far enough to be counted. */
#ifndef CPB_WIRE_ICMP_H
#define CPB_WIRE_ICMP_H
#include "../common.h"

#define ICMP_HDR_LEN 8
#define ICMP_ECHO_REPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO_REQUEST 8

struct icmp_repr {
  uint8_t type;
  uint8_t code;
  uint16_t ident; /* echo only */
  uint16_t seqno; /* echo only */
  const uint8_t *data; /* bytes after the 8-byte header */
  size_t data_len;
};

/* -EINVAL when short, -EBADMSG when the checksum over the whole message is wrong. */
int icmp_parse(const uint8_t *buf, size_t len, struct icmp_repr *out);
/* Writes header + data with checksum; returns total length or -ENOSPC (-EINVAL when the message
 * would not fit one IPv4 datagram). r->data may point into buf. */
int icmp_emit(const struct icmp_repr *r, uint8_t *buf, size_t cap);
#endif
