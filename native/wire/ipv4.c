/* IPv4 header (RFC 791).
 *
 * Parse checks lengths in the order a hostile packet could abuse them: the fixed header, then IHL
 * against the buffer, then total_length against both. The buffer may be longer than total_length
 * (Ethernet pads short frames to 60 bytes), so the payload is bounded by total_length, never by the
 * buffer. Options are covered by the checksum and otherwise skipped. Fragments are reported, not
 * reassembled: the stack sets DF on everything it sends and counts and drops what arrives fragmented.
 * Emit always writes a 20-byte header without options. */
#include "ipv4.h"
#include "checksum.h"

#define IPV4_FLAG_DF 0x4000
#define IPV4_FLAG_MF 0x2000
#define IPV4_FRAG_OFFSET_MASK 0x1fff
#define IPV4_MAX_TOTAL_LEN 0xffff

int ipv4_parse(const uint8_t *buf, size_t len, struct ipv4_repr *out, const uint8_t **payload) {
  if (len < IPV4_MIN_HDR_LEN) return -EINVAL;
  if ((buf[0] >> 4) != 4) return -EINVAL;
  size_t hdr_len = (size_t)(buf[0] & 0x0f) * 4;
  if (hdr_len < IPV4_MIN_HDR_LEN || hdr_len > len) return -EINVAL;
  size_t total = cpb_get_be16(buf + 2);
  if (total < hdr_len || total > len) return -EINVAL;
  /* A correct header sums to 0xffff, which csum_fold complements to zero. */
  if (csum_fold(csum_add(0, buf, hdr_len)) != 0) return -EBADMSG;

  uint16_t frag = cpb_get_be16(buf + 6);
  out->tos = buf[1];
  out->id = cpb_get_be16(buf + 4);
  out->dont_fragment = (frag & IPV4_FLAG_DF) != 0;
  out->is_fragment = (frag & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) != 0;
  out->ttl = buf[8];
  out->proto = buf[9];
  out->src = cpb_get_be32(buf + 12);
  out->dst = cpb_get_be32(buf + 16);
  out->hdr_len = (uint8_t)hdr_len;
  out->payload_len = (uint16_t)(total - hdr_len);
  *payload = buf + hdr_len;
  return 0;
}

int ipv4_emit(const struct ipv4_repr *r, uint8_t *buf, size_t cap) {
  if (r->payload_len > IPV4_MAX_TOTAL_LEN - IPV4_MIN_HDR_LEN) return -EINVAL;
  if (cap < IPV4_MIN_HDR_LEN) return -ENOSPC;
  buf[0] = 0x45;
  buf[1] = r->tos;
  cpb_put_be16(buf + 2, (uint16_t)(IPV4_MIN_HDR_LEN + r->payload_len));
  cpb_put_be16(buf + 4, r->id);
  cpb_put_be16(buf + 6, r->dont_fragment ? IPV4_FLAG_DF : 0);
  buf[8] = r->ttl;
  buf[9] = r->proto;
  cpb_put_be16(buf + 10, 0);
  cpb_put_be32(buf + 12, r->src);
  cpb_put_be32(buf + 16, r->dst);
  cpb_put_be16(buf + 10, csum_fold(csum_add(0, buf, IPV4_MIN_HDR_LEN)));
  return IPV4_MIN_HDR_LEN;
}
