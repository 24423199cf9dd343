/* ICMPv4 (RFC 792). Only echo is answered, but every message is checksummed over its whole length
 * before anything in it is believed, so a corrupted error message is counted as bad, not acted on.
 * Emit may be handed data that lives in the destination buffer (an echo reply built over the request),
 * so the data is moved before the header is written. */
#include "icmp.h"
#include "checksum.h"

/* The largest message that fits one IPv4 datagram with a 20-byte header. */
#define ICMP_MAX_LEN (0xffff - 20)

static bool is_echo(uint8_t type) { return type == ICMP_ECHO_REQUEST || type == ICMP_ECHO_REPLY; }

int icmp_parse(const uint8_t *buf, size_t len, struct icmp_repr *out) {
  if (len < ICMP_HDR_LEN) return -EINVAL;
  if (csum_fold(csum_add(0, buf, len)) != 0) return -EBADMSG;
  out->type = buf[0];
  out->code = buf[1];
  if (is_echo(buf[0])) {
    out->ident = cpb_get_be16(buf + 4);
    out->seqno = cpb_get_be16(buf + 6);
  } else {
    out->ident = 0;
    out->seqno = 0;
  }
  out->data = buf + ICMP_HDR_LEN;
  out->data_len = len - ICMP_HDR_LEN;
  return 0;
}

int icmp_emit(const struct icmp_repr *r, uint8_t *buf, size_t cap) {
  if (r->data_len > ICMP_MAX_LEN - ICMP_HDR_LEN) return -EINVAL;
  size_t total = ICMP_HDR_LEN + r->data_len;
  if (cap < total) return -ENOSPC;
  if (r->data_len) memmove(buf + ICMP_HDR_LEN, r->data, r->data_len);
  buf[0] = r->type;
  buf[1] = r->code;
  cpb_put_be16(buf + 2, 0);
  /* For non-echo types these four bytes are "unused" or type-specific (e.g. next-hop MTU); the repr
   * fields carry them either way. */
  cpb_put_be16(buf + 4, r->ident);
  cpb_put_be16(buf + 6, r->seqno);
  cpb_put_be16(buf + 2, csum_fold(csum_add(0, buf, total)));
  return (int)total;
}
