/* TCP header and options (RFC 9293, RFC 7323 window scale and timestamps, RFC 2018 SACK).
 * Parsing is checked: after tcp_parse succeeds every field of the repr is valid; absurd options
 * (bad lengths, truncated, duplicates beyond the first) are skipped or rejected, never read past. */
#ifndef CPB_WIRE_TCP_H
#define CPB_WIRE_TCP_H
#include "../common.h"

#define TCP_MIN_HDR_LEN 20
#define TCP_MAX_HDR_LEN 60
#define TCP_MAX_SACK_BLOCKS 4

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80

struct tcp_sack_block {
  uint32_t left;
  uint32_t right;
};

struct tcp_opts {
  bool has_mss;
  bool has_wscale;
  bool sack_permitted;
  bool has_ts;
  uint16_t mss;
  uint8_t wscale;  /* as received; the caller clamps to 14 (RFC 7323 §2.3) */
  uint32_t ts_val;
  uint32_t ts_ecr;
  uint8_t nsack;
  struct tcp_sack_block sack[TCP_MAX_SACK_BLOCKS];
};

struct tcp_repr {
  uint16_t sport;
  uint16_t dport;
  uint32_t seq;
  uint32_t ack;
  uint8_t flags;
  uint16_t window; /* raw, unscaled */
  uint16_t urgent;
  struct tcp_opts opts;
  const uint8_t *payload; /* parse: points into the buffer; emit: ignored (caller writes payload) */
  uint32_t payload_len;
};

/* Parses a segment of `len` bytes (the IP payload). When verify_csum is set the checksum over the
 * pseudo-header is checked (-EBADMSG on mismatch). -EINVAL when short or data offset is invalid. */
int tcp_parse(const uint8_t *buf, size_t len, cpb_ip4_t src, cpb_ip4_t dst, bool verify_csum, struct tcp_repr *out);
/* Length of the header tcp_emit_header would write for r (options padded to 4 bytes). */
size_t tcp_header_len(const struct tcp_repr *r);
/* Writes the header and options (checksum field zero). Returns the header length or -ENOSPC. */
int tcp_emit_header(const struct tcp_repr *r, uint8_t *buf, size_t cap);
/* Computes and stores the checksum of a complete segment (header + payload) already in buf. */
void tcp_fill_checksum(uint8_t *buf, size_t seg_len, cpb_ip4_t src, cpb_ip4_t dst);
#endif
