/* TCP header and options (RFC 9293 §3.1-3.2, RFC 7323, RFC 2018).
 *
 * Parse: fixed header and data offset are checked first, then (optionally) the checksum, so a
 * corrupted segment is reported as such before its options are interpreted. Options are walked with
 * the cursor bounded by the header end: a length byte that is missing, below 2 or runs past the
 * header makes the whole segment invalid (-EINVAL), because everything after it would be guesswork.
 * An option whose length is wrong for its kind, or a repeat of a kind already seen, is skipped by its
 * own length and ignored. Values are reported as received; policy (clamping the window scale, a
 * floor on MSS, whether an option is allowed on this segment) belongs to the TCP layer.
 *
 * Emit: option layout copies Linux so captures of our traffic read like any other host's:
 *   SYN / SYN-ACK  MSS, SACK-permitted+TS (or NOP,NOP,TS / NOP,NOP,SACK-permitted), NOP,WS
 *   otherwise      NOP,NOP,TS, then NOP,NOP,SACK with as many blocks as fit in 40 bytes
 * MSS, window scale and SACK-permitted are SYN-only options, SACK blocks are never sent on a SYN. */
#include "tcp.h"
#include "checksum.h"
#include "ipv4.h"

#define OPT_EOL 0
#define OPT_NOP 1
#define OPT_MSS 2
#define OPT_WS 3
#define OPT_SACK_PERM 4
#define OPT_SACK 5
#define OPT_TS 8

#define OPTLEN_MSS 4
#define OPTLEN_WS 3
#define OPTLEN_SACK_PERM 2
#define OPTLEN_TS 10
#define OPTLEN_SACK_BASE 2
#define OPTLEN_SACK_BLOCK 8

#define TCP_MAX_OPT_LEN (TCP_MAX_HDR_LEN - TCP_MIN_HDR_LEN)
/* Aligned sizes of what emit writes. */
#define EMIT_TS_LEN 12   /* NOP,NOP,TS or SACK-permitted,TS */
#define EMIT_WORD_LEN 4  /* MSS; NOP,WS; NOP,NOP,SACK-permitted; NOP,NOP + SACK kind/len */

static int parse_options(const uint8_t *p, size_t n, struct tcp_opts *o) {
  size_t i = 0;
  bool seen_sack = false;
  while (i < n) {
    uint8_t kind = p[i];
    if (kind == OPT_EOL) break;
    if (kind == OPT_NOP) {
      i++;
      continue;
    }
    if (n - i < 2) return -EINVAL;
    size_t olen = p[i + 1];
    if (olen < 2 || olen > n - i) return -EINVAL;
    const uint8_t *v = p + i + 2;
    switch (kind) {
    case OPT_MSS:
      if (olen == OPTLEN_MSS && !o->has_mss) {
        o->has_mss = true;
        o->mss = cpb_get_be16(v);
      }
      break;
    case OPT_WS:
      if (olen == OPTLEN_WS && !o->has_wscale) {
        o->has_wscale = true;
        o->wscale = v[0];
      }
      break;
    case OPT_SACK_PERM:
      if (olen == OPTLEN_SACK_PERM) o->sack_permitted = true;
      break;
    case OPT_SACK: {
      size_t body = olen - OPTLEN_SACK_BASE;
      size_t nb = body / OPTLEN_SACK_BLOCK;
      if (!seen_sack && body % OPTLEN_SACK_BLOCK == 0 && nb >= 1 && nb <= TCP_MAX_SACK_BLOCKS) {
        seen_sack = true;
        for (size_t b = 0; b < nb; b++) {
          o->sack[b].left = cpb_get_be32(v + b * OPTLEN_SACK_BLOCK);
          o->sack[b].right = cpb_get_be32(v + b * OPTLEN_SACK_BLOCK + 4);
        }
        o->nsack = (uint8_t)nb;
      }
      break;
    }
    case OPT_TS:
      if (olen == OPTLEN_TS && !o->has_ts) {
        o->has_ts = true;
        o->ts_val = cpb_get_be32(v);
        o->ts_ecr = cpb_get_be32(v + 4);
      }
      break;
    default:
      break; /* unknown kinds (MD5, TFO, MPTCP, ...) are skipped by their length */
    }
    i += olen;
  }
  return 0;
}

int tcp_parse(const uint8_t *buf, size_t len, cpb_ip4_t src, cpb_ip4_t dst, bool verify_csum, struct tcp_repr *out) {
  /* Longer than any IPv4 payload: the pseudo-header length field could not even describe it. */
  if (len < TCP_MIN_HDR_LEN || len > 0xffff) return -EINVAL;
  size_t hdr_len = (size_t)(buf[12] >> 4) * 4;
  if (hdr_len < TCP_MIN_HDR_LEN || hdr_len > len) return -EINVAL;
  if (verify_csum) {
    uint32_t acc = csum_pseudo4(src, dst, IPPROTO_TCP_, (uint16_t)len);
    if (csum_fold(csum_add(acc, buf, len)) != 0) return -EBADMSG;
  }
  struct tcp_opts opts;
  memset(&opts, 0, sizeof opts);
  int rc = parse_options(buf + TCP_MIN_HDR_LEN, hdr_len - TCP_MIN_HDR_LEN, &opts);
  if (rc < 0) return rc;

  out->sport = cpb_get_be16(buf);
  out->dport = cpb_get_be16(buf + 2);
  out->seq = cpb_get_be32(buf + 4);
  out->ack = cpb_get_be32(buf + 8);
  out->flags = buf[13];
  out->window = cpb_get_be16(buf + 14);
  out->urgent = cpb_get_be16(buf + 18);
  out->opts = opts;
  out->payload = buf + hdr_len;
  out->payload_len = (uint32_t)(len - hdr_len);
  return 0;
}

/* SACK blocks that fit beside the other options of a non-SYN segment. */
static unsigned sack_blocks_to_emit(const struct tcp_repr *r) {
  if (r->flags & TCP_SYN) return 0;
  size_t room = TCP_MAX_OPT_LEN - (r->opts.has_ts ? EMIT_TS_LEN : 0) - EMIT_WORD_LEN;
  unsigned fit = (unsigned)(room / OPTLEN_SACK_BLOCK);
  unsigned n = CPB_MIN((unsigned)r->opts.nsack, (unsigned)TCP_MAX_SACK_BLOCKS);
  return CPB_MIN(n, fit);
}

size_t tcp_header_len(const struct tcp_repr *r) {
  const struct tcp_opts *o = &r->opts;
  size_t n = TCP_MIN_HDR_LEN;
  if (r->flags & TCP_SYN) {
    if (o->has_mss) n += EMIT_WORD_LEN;
    if (o->has_ts) n += EMIT_TS_LEN;
    else if (o->sack_permitted) n += EMIT_WORD_LEN;
    if (o->has_wscale) n += EMIT_WORD_LEN;
  } else {
    if (o->has_ts) n += EMIT_TS_LEN;
    unsigned nb = sack_blocks_to_emit(r);
    if (nb) n += EMIT_WORD_LEN + (size_t)nb * OPTLEN_SACK_BLOCK;
  }
  return n;
}

static uint8_t *put4(uint8_t *p, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  p[0] = a;
  p[1] = b;
  p[2] = c;
  p[3] = d;
  return p + 4;
}

static uint8_t *put_ts(uint8_t *p, const struct tcp_opts *o) {
  cpb_put_be32(p, o->ts_val);
  cpb_put_be32(p + 4, o->ts_ecr);
  return p + 8;
}

int tcp_emit_header(const struct tcp_repr *r, uint8_t *buf, size_t cap) {
  size_t hdr_len = tcp_header_len(r);
  if (cap < hdr_len) return -ENOSPC;
  const struct tcp_opts *o = &r->opts;
  cpb_put_be16(buf, r->sport);
  cpb_put_be16(buf + 2, r->dport);
  cpb_put_be32(buf + 4, r->seq);
  cpb_put_be32(buf + 8, r->ack);
  buf[12] = (uint8_t)((hdr_len / 4) << 4);
  buf[13] = r->flags;
  cpb_put_be16(buf + 14, r->window);
  cpb_put_be16(buf + 16, 0);
  cpb_put_be16(buf + 18, r->urgent);

  uint8_t *p = buf + TCP_MIN_HDR_LEN;
  if (r->flags & TCP_SYN) {
    if (o->has_mss) {
      p = put4(p, OPT_MSS, OPTLEN_MSS, 0, 0);
      cpb_put_be16(p - 2, o->mss);
    }
    if (o->has_ts) {
      /* SACK-permitted takes the place of the two NOPs that would align TS. */
      if (o->sack_permitted) p = put4(p, OPT_SACK_PERM, OPTLEN_SACK_PERM, OPT_TS, OPTLEN_TS);
      else p = put4(p, OPT_NOP, OPT_NOP, OPT_TS, OPTLEN_TS);
      p = put_ts(p, o);
    } else if (o->sack_permitted) {
      p = put4(p, OPT_NOP, OPT_NOP, OPT_SACK_PERM, OPTLEN_SACK_PERM);
    }
    if (o->has_wscale) p = put4(p, OPT_NOP, OPT_WS, OPTLEN_WS, o->wscale);
  } else {
    if (o->has_ts) {
      p = put4(p, OPT_NOP, OPT_NOP, OPT_TS, OPTLEN_TS);
      p = put_ts(p, o);
    }
    unsigned nb = sack_blocks_to_emit(r);
    if (nb) {
      p = put4(p, OPT_NOP, OPT_NOP, OPT_SACK, (uint8_t)(OPTLEN_SACK_BASE + nb * OPTLEN_SACK_BLOCK));
      for (unsigned b = 0; b < nb; b++) {
        cpb_put_be32(p, o->sack[b].left);
        cpb_put_be32(p + 4, o->sack[b].right);
        p += OPTLEN_SACK_BLOCK;
      }
    }
  }
  return (int)hdr_len;
}

void tcp_fill_checksum(uint8_t *buf, size_t seg_len, cpb_ip4_t src, cpb_ip4_t dst) {
  /* A segment that cannot be a TCP segment in an IPv4 datagram is left untouched. */
  if (seg_len < TCP_MIN_HDR_LEN || seg_len > 0xffff) return;
  cpb_put_be16(buf + 16, 0);
  uint32_t acc = csum_pseudo4(src, dst, IPPROTO_TCP_, (uint16_t)seg_len);
  cpb_put_be16(buf + 16, csum_fold(csum_add(acc, buf, seg_len)));
}
