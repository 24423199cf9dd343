/* Wire formats (native/wire/): golden frames, edge cases of every parser, the checksum against a naive
 * reference, and a bounded seeded fuzz of every parser.
 *
 * The golden frames are real Linux traffic: two network namespaces joined by a veth pair (MTU 1500,
 * TX checksum offload off, tcp_rmem max 6 MiB so Linux picks window scale 7), captured with tcpdump,
 * which reported every checksum correct. The SACK frames are Linux's answers to out-of-order segments
 * sent by a raw-socket peer. The test re-verifies every checksum with its own byte-wise sum before
 * trusting a frame, parses each field by field, and re-emits it byte for byte. */
#include "t.h"
#include "wire/arp.h"
#include "wire/checksum.h"
#include "wire/eth.h"
#include "wire/icmp.h"
#include "wire/ipv4.h"
#include "wire/tcp.h"

#define IP4(a, b, c, d) (((cpb_ip4_t)(a) << 24) | ((cpb_ip4_t)(b) << 16) | ((cpb_ip4_t)(c) << 8) | (cpb_ip4_t)(d))
#define L3 ETH_HDR_LEN                      /* offset of the IPv4 header in a frame */
#define L4 (ETH_HDR_LEN + IPV4_MIN_HDR_LEN) /* offset of TCP/ICMP (all golden IP headers are 20 bytes) */

/* ---- golden frames ---- */

/* ARP request: who-has 10.99.0.3 tell 10.99.0.1 */
static const uint8_t g_arp_request[42] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x0a, 0x63, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x00, 0x03,
};
/* ping 10.99.0.2: echo request id 0x140a seq 1, 56 data bytes (timeval + 0x10..0x37), DF */
static const uint8_t g_ping_request[98] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x54, 0x41, 0x57, 0x40, 0x00, 0x40, 0x01, 0xe4, 0x89, 0x0a, 0x63, 0x00, 0x01, 0x0a, 0x63,
    0x00, 0x02, 0x08, 0x00, 0x64, 0xda, 0x14, 0x0a, 0x00, 0x01, 0x66, 0x08, 0x05, 0x6b, 0x00, 0x00,
    0x00, 0x00, 0x4d, 0xd4, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x36, 0x37,
};
/* the Linux echo reply to it (IP id 0x826d, DF clear) */
static const uint8_t g_ping_reply[98] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x54, 0x82, 0x6d, 0x00, 0x00, 0x40, 0x01, 0xe3, 0x73, 0x0a, 0x63, 0x00, 0x02, 0x0a, 0x63,
    0x00, 0x01, 0x00, 0x00, 0x6c, 0xda, 0x14, 0x0a, 0x00, 0x01, 0x66, 0x08, 0x05, 0x6b, 0x00, 0x00,
    0x00, 0x00, 0x4d, 0xd4, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x36, 0x37,
};
/* SYN 10.99.0.1:37434 > 10.99.0.2:5001: mss 1460,sackOK,TS val 2507886980 ecr 0,nop,wscale 7 */
static const uint8_t g_syn[74] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x0d, 0xef, 0x40, 0x00, 0x40, 0x06, 0x18, 0x05, 0x0a, 0x63, 0x00, 0x01, 0x0a, 0x63,
    0x00, 0x02, 0x92, 0x3a, 0x13, 0x89, 0x89, 0x21, 0x8d, 0x05, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0x95, 0x5c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x95, 0x7b,
    0x51, 0x84, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
};
/* SYN-ACK: mss 1460,sackOK,TS val 2124947192 ecr 2507886980,nop,wscale 7 */
static const uint8_t g_synack[74] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x25, 0xf4, 0x0a, 0x63, 0x00, 0x02, 0x0a, 0x63,
    0x00, 0x01, 0x13, 0x89, 0x92, 0x3a, 0xb6, 0xe9, 0x83, 0xab, 0x89, 0x21, 0x8d, 0x06, 0xa0, 0x12,
    0xfe, 0x88, 0xb9, 0x7d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x7e, 0xa8,
    0x1e, 0xf8, 0x95, 0x7b, 0x51, 0x84, 0x01, 0x03, 0x03, 0x07,
};
/* PSH-ACK with 10 bytes "ok 204800\n": nop,nop,TS val 2124947194 ecr 2507886982 */
static const uint8_t g_data[76] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3e, 0x87, 0x21, 0x40, 0x00, 0x40, 0x06, 0x9e, 0xd0, 0x0a, 0x63, 0x00, 0x02, 0x0a, 0x63,
    0x00, 0x01, 0x13, 0x89, 0x92, 0x3a, 0xb6, 0xe9, 0x83, 0xac, 0x89, 0x24, 0xad, 0x07, 0x80, 0x18,
    0x03, 0xa7, 0x9b, 0x05, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x7e, 0xa8, 0x1e, 0xfa, 0x95, 0x7b,
    0x51, 0x86, 0x6f, 0x6b, 0x20, 0x32, 0x30, 0x34, 0x38, 0x30, 0x30, 0x0a,
};
/* ACK from 10.99.0.1:5002: nop,nop,TS val 707795633 ecr 5001,nop,nop,sack 1 {1000101:1000201} */
static const uint8_t g_sack1[78] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x03, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x40, 0x83, 0xf1, 0x40, 0x00, 0x40, 0x06, 0xa1, 0xfd, 0x0a, 0x63, 0x00, 0x01, 0x0a, 0x63,
    0x00, 0x03, 0x13, 0x8a, 0x9c, 0x40, 0x04, 0x02, 0x52, 0xe4, 0x00, 0x0f, 0x42, 0x41, 0xb0, 0x10,
    0x01, 0xfe, 0x02, 0xa7, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x2a, 0x30, 0x1a, 0xb1, 0x00, 0x00,
    0x13, 0x89, 0x01, 0x01, 0x05, 0x0a, 0x00, 0x0f, 0x42, 0xa5, 0x00, 0x0f, 0x43, 0x09,
};
/* ACK: TS val 707795734 ecr 5001, sack 3 {1000501:1000601}{1000301:1000401}{1000101:1000201} */
static const uint8_t g_sack3[94] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x03, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x50, 0x83, 0xf3, 0x40, 0x00, 0x40, 0x06, 0xa1, 0xeb, 0x0a, 0x63, 0x00, 0x01, 0x0a, 0x63,
    0x00, 0x03, 0x13, 0x8a, 0x9c, 0x40, 0x04, 0x02, 0x52, 0xe4, 0x00, 0x0f, 0x42, 0x41, 0xf0, 0x10,
    0x01, 0xfe, 0xb1, 0xd8, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x2a, 0x30, 0x1b, 0x16, 0x00, 0x00,
    0x13, 0x89, 0x01, 0x01, 0x05, 0x1a, 0x00, 0x0f, 0x44, 0x35, 0x00, 0x0f, 0x44, 0x99, 0x00, 0x0f,
    0x43, 0x6d, 0x00, 0x0f, 0x43, 0xd1, 0x00, 0x0f, 0x42, 0xa5, 0x00, 0x0f, 0x43, 0x09,
};
/* ACK 1000401 win 508: TS val 707796459 ecr 5006, sack 1 {1000501:1000601} */
static const uint8_t g_sack1b[78] = {
    0x52, 0x54, 0x00, 0x12, 0x34, 0x03, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x40, 0x83, 0xf5, 0x40, 0x00, 0x40, 0x06, 0xa1, 0xf9, 0x0a, 0x63, 0x00, 0x01, 0x0a, 0x63,
    0x00, 0x03, 0x13, 0x8a, 0x9c, 0x40, 0x04, 0x02, 0x52, 0xe4, 0x00, 0x0f, 0x43, 0xd1, 0xb0, 0x10,
    0x01, 0xfc, 0xfa, 0xb9, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x2a, 0x30, 0x1d, 0xeb, 0x00, 0x00,
    0x13, 0x8e, 0x01, 0x01, 0x05, 0x0a, 0x00, 0x0f, 0x44, 0x35, 0x00, 0x0f, 0x44, 0x99,
};

/* ---- the naive reference: one byte at a time, big-endian words, no cleverness ---- */

static uint32_t naive_sum(uint64_t s, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) s += (i % 2 == 0) ? (uint64_t)p[i] << 8 : p[i];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}
static uint16_t naive_csum(const uint8_t *p, size_t n) { return (uint16_t)~naive_sum(0, p, n); }
/* TCP/UDP checksum with the IPv4 pseudo-header written out as the 12 bytes RFC 9293 §3.1 shows. */
static uint16_t naive_l4_csum(cpb_ip4_t src, cpb_ip4_t dst, uint8_t proto, const uint8_t *seg, size_t n) {
  uint8_t ph[12] = {(uint8_t)(src >> 24), (uint8_t)(src >> 16), (uint8_t)(src >> 8), (uint8_t)src,
                    (uint8_t)(dst >> 24), (uint8_t)(dst >> 16), (uint8_t)(dst >> 8), (uint8_t)dst,
                    0, proto, (uint8_t)(n >> 8), (uint8_t)n};
  return (uint16_t)~naive_sum(naive_sum(0, ph, sizeof ph), seg, n);
}
static cpb_ip4_t frame_src(const uint8_t *f) { return cpb_get_be32(f + L3 + 12); }
static cpb_ip4_t frame_dst(const uint8_t *f) { return cpb_get_be32(f + L3 + 16); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t xorshift(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* ---- checksum ---- */

TEST(csum_rfc1071_example) {
  /* RFC 1071 §3: these bytes sum to ddf2 (in big-endian order), so the checksum field is ~ddf2. */
  const uint8_t b[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  CHECK_EQ(naive_sum(0, b, 8), 0xddf2);
  CHECK_EQ(csum_fold(csum_add(0, b, 8)), 0x220d);
  CHECK_EQ(csum_fold(csum_add(csum_add(0, b, 2), b + 2, 6)), 0x220d);
  CHECK_EQ(csum_fold(csum_add(csum_add(0, b, 4), b + 4, 4)), 0x220d);
  /* The IPv4 header example of Wikipedia's "Internet checksum" article, checksum 0xb861. */
  uint8_t ip[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                    0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  CHECK_EQ(csum_fold(csum_add(0, ip, 20)), 0);
  ip[10] = ip[11] = 0;
  CHECK_EQ(csum_fold(csum_add(0, ip, 20)), 0xb861);
  CHECK_EQ(naive_csum(ip, 20), 0xb861);
}

TEST(csum_odd_lengths_and_unaligned_starts) {
  static uint8_t buf[4096 + 64];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)xorshift();
  int bad = 0;
  for (size_t off = 0; off < 16; off++) {
    for (size_t len = 0; len <= 300; len++) {
      if (csum_fold(csum_add(0, buf + off, len)) != naive_csum(buf + off, len)) bad++;
    }
    for (size_t len = 301; len + off <= sizeof buf; len += 37) {
      if (csum_fold(csum_add(0, buf + off, len)) != naive_csum(buf + off, len)) bad++;
    }
  }
  CHECK_EQ(bad, 0);
  /* A running accumulator (anything a caller could hold) combines like the naive sum. */
  for (int i = 0; i < 2000; i++) {
    uint32_t acc = (uint32_t)xorshift();
    size_t off = xorshift() % 64, len = xorshift() % 2048;
    uint16_t want = (uint16_t)~naive_sum(acc, buf + off, len);
    if (csum_fold(csum_add(acc, buf + off, len)) != want) bad++;
    /* Split at an even point: the pieces chain to the same result. */
    size_t cut = (xorshift() % (len + 1)) & ~(size_t)1;
    if (csum_fold(csum_add(csum_add(acc, buf + off, cut), buf + off + cut, len - cut)) != want) bad++;
  }
  CHECK_EQ(bad, 0);
  /* Carries everywhere: all-ones data, and the largest accumulator. */
  memset(buf, 0xff, sizeof buf);
  for (size_t len = 0; len <= 4096; len += 31) {
    if (csum_fold(csum_add(0xffffffffu, buf + 1, len)) != (uint16_t)~naive_sum(0xffffffffu, buf + 1, len)) bad++;
  }
  memset(buf, 0, sizeof buf);
  CHECK_EQ(csum_fold(csum_add(0, buf + 3, 1001)), 0xffff);
  CHECK_EQ(bad, 0);
}

TEST(csum_pseudo4_matches_bytes) {
  for (int i = 0; i < 1000; i++) {
    cpb_ip4_t s = (cpb_ip4_t)xorshift(), d = (cpb_ip4_t)xorshift();
    uint16_t n = (uint16_t)xorshift();
    uint8_t proto = (uint8_t)xorshift();
    uint8_t ph[12];
    cpb_put_be32(ph, s);
    cpb_put_be32(ph + 4, d);
    ph[8] = 0;
    ph[9] = proto;
    cpb_put_be16(ph + 10, n);
    CHECK_EQ(csum_fold(csum_pseudo4(s, d, proto, n)), naive_csum(ph, 12));
  }
}

/* ---- golden frames: the bytes are trustworthy before anything is parsed ---- */

struct golden { const char *name; const uint8_t *b; size_t n; };
#define G(x) {#x, x, sizeof x}
static const struct golden goldens[] = {G(g_arp_request), G(g_ping_request), G(g_ping_reply), G(g_syn),
                                        G(g_synack), G(g_data), G(g_sack1), G(g_sack3), G(g_sack1b)};

TEST(golden_checksums_verify_with_naive_sum) {
  for (size_t i = 1; i < CPB_ARRAY_LEN(goldens); i++) { /* [0] is ARP: no checksum */
    const uint8_t *f = goldens[i].b;
    size_t n = goldens[i].n;
    size_t l4 = n - L4;
    CHECK_EQ(naive_sum(0, f + L3, IPV4_MIN_HDR_LEN), 0xffff);
    CHECK_EQ(cpb_get_be16(f + L3 + 2), n - L3);
    if (f[L3 + 9] == IPPROTO_TCP_) CHECK_EQ(naive_l4_csum(frame_src(f), frame_dst(f), 6, f + L4, l4), 0);
    else CHECK_EQ(naive_csum(f + L4, l4), 0);
  }
}

static const uint8_t mac1[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x01};
static const uint8_t mac2[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x02};
static const uint8_t mac3[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x03};

/* ---- Ethernet and ARP ---- */

TEST(eth_parse_emit) {
  struct eth_repr e;
  const uint8_t *pl;
  size_t pn;
  REQUIRE(eth_parse(g_arp_request, sizeof g_arp_request, &e, &pl, &pn) == 0);
  CHECK(eth_is_broadcast(e.dst));
  CHECK(memcmp(e.src, mac1, 6) == 0);
  CHECK_EQ(e.ethertype, ETHERTYPE_ARP);
  CHECK(pl == g_arp_request + 14);
  CHECK_EQ(pn, 28);
  REQUIRE(eth_parse(g_syn, sizeof g_syn, &e, &pl, &pn) == 0);
  CHECK(!eth_is_broadcast(e.dst));
  CHECK(memcmp(e.dst, mac2, 6) == 0);
  CHECK_EQ(e.ethertype, ETHERTYPE_IPV4);
  uint8_t out[14];
  CHECK_EQ(eth_emit(&e, out, sizeof out), ETH_HDR_LEN);
  CHECK(memcmp(out, g_syn, 14) == 0);
  const uint8_t almost[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
  CHECK(!eth_is_broadcast(almost));
  CHECK_EQ(eth_parse(g_syn, 13, &e, &pl, &pn), -EINVAL);
  CHECK_EQ(eth_parse(g_syn, 14, &e, &pl, &pn), 0);
  CHECK_EQ(pn, 0);
}

TEST(golden_arp_request) {
  struct eth_repr e;
  const uint8_t *pl;
  size_t pn;
  REQUIRE(eth_parse(g_arp_request, sizeof g_arp_request, &e, &pl, &pn) == 0);
  struct arp_repr a;
  REQUIRE(arp_parse(pl, pn, &a) == 0);
  CHECK_EQ(a.op, ARP_OP_REQUEST);
  CHECK(memcmp(a.sha, mac1, 6) == 0);
  CHECK_EQ(a.spa, IP4(10, 99, 0, 1));
  const uint8_t zero[6] = {0};
  CHECK(memcmp(a.tha, zero, 6) == 0);
  CHECK_EQ(a.tpa, IP4(10, 99, 0, 3));
  uint8_t out[sizeof g_arp_request];
  memset(out, 0xaa, sizeof out);
  CHECK_EQ(eth_emit(&e, out, sizeof out), 14);
  CHECK_EQ(arp_emit(&a, out + 14, sizeof out - 14), ARP_LEN);
  CHECK(memcmp(out, g_arp_request, sizeof out) == 0);
}

TEST(arp_reply_with_ethernet_padding) {
  /* A reply as it arrives from a NIC: padded to the 60-byte Ethernet minimum. */
  uint8_t f[60] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x03, 0x08, 0x06,
                   0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x03,
                   0x0a, 0x63, 0x00, 0x03, 0x52, 0x54, 0x00, 0x12, 0x34, 0x01, 0x0a, 0x63, 0x00, 0x01};
  struct arp_repr a;
  REQUIRE(arp_parse(f + 14, sizeof f - 14, &a) == 0);
  CHECK_EQ(a.op, ARP_OP_REPLY);
  CHECK(memcmp(a.sha, mac3, 6) == 0);
  CHECK_EQ(a.spa, IP4(10, 99, 0, 3));
  CHECK(memcmp(a.tha, mac1, 6) == 0);
  CHECK_EQ(a.tpa, IP4(10, 99, 0, 1));
  uint8_t out[ARP_LEN];
  CHECK_EQ(arp_emit(&a, out, sizeof out), ARP_LEN);
  CHECK(memcmp(out, f + 14, ARP_LEN) == 0);
}

TEST(arp_rejects) {
  uint8_t p[ARP_LEN];
  memcpy(p, g_arp_request + 14, ARP_LEN);
  struct arp_repr a;
  CHECK_EQ(arp_parse(p, ARP_LEN - 1, &a), -EINVAL);
  CHECK_EQ(arp_parse(p, 0, &a), -EINVAL);
  const size_t field[] = {1, 3, 4, 5, 7}; /* htype, ptype, hlen, plen, op (low bytes) */
  for (size_t i = 0; i < CPB_ARRAY_LEN(field); i++) {
    memcpy(p, g_arp_request + 14, ARP_LEN);
    p[field[i]] ^= 0x40;
    CHECK_EQ(arp_parse(p, ARP_LEN, &a), -EPROTONOSUPPORT);
  }
  memcpy(p, g_arp_request + 14, ARP_LEN);
  p[7] = 3; /* RARP request */
  CHECK_EQ(arp_parse(p, ARP_LEN, &a), -EPROTONOSUPPORT);
  p[7] = 0;
  CHECK_EQ(arp_parse(p, ARP_LEN, &a), -EPROTONOSUPPORT);
  p[7] = 2;
  CHECK_EQ(arp_parse(p, ARP_LEN, &a), 0);
}

/* ---- IPv4 and ICMP ---- */

TEST(golden_ping_request) {
  struct ipv4_repr ip;
  const uint8_t *pl;
  REQUIRE(ipv4_parse(g_ping_request + L3, sizeof g_ping_request - L3, &ip, &pl) == 0);
  CHECK_EQ(ip.src, IP4(10, 99, 0, 1));
  CHECK_EQ(ip.dst, IP4(10, 99, 0, 2));
  CHECK_EQ(ip.proto, IPPROTO_ICMP_);
  CHECK_EQ(ip.ttl, 64);
  CHECK_EQ(ip.tos, 0);
  CHECK_EQ(ip.id, 0x4157);
  CHECK(ip.dont_fragment);
  CHECK(!ip.is_fragment);
  CHECK_EQ(ip.hdr_len, 20);
  CHECK_EQ(ip.payload_len, 64);
  CHECK(pl == g_ping_request + L4);
  struct icmp_repr ic;
  REQUIRE(icmp_parse(pl, ip.payload_len, &ic) == 0);
  CHECK_EQ(ic.type, ICMP_ECHO_REQUEST);
  CHECK_EQ(ic.code, 0);
  CHECK_EQ(ic.ident, 0x140a);
  CHECK_EQ(ic.seqno, 1);
  CHECK_EQ(ic.data_len, 56);
  CHECK(ic.data == g_ping_request + L4 + 8);
  CHECK_EQ(ic.data[16], 0x10); /* iputils fills after the timeval with 0x10, 0x11, ... */
  CHECK_EQ(ic.data[55], 0x37);

  uint8_t out[sizeof g_ping_request];
  memset(out, 0xaa, sizeof out);
  struct eth_repr e = {.ethertype = ETHERTYPE_IPV4};
  memcpy(e.dst, mac2, 6);
  memcpy(e.src, mac1, 6);
  CHECK_EQ(eth_emit(&e, out, sizeof out), 14);
  CHECK_EQ(ipv4_emit(&ip, out + L3, sizeof out - L3), 20);
  CHECK_EQ(icmp_emit(&ic, out + L4, sizeof out - L4), 64);
  CHECK(memcmp(out, g_ping_request, sizeof out) == 0);
}

TEST(golden_ping_reply_built_in_place) {
  /* Build Linux's reply the way an echo responder would: over a copy of the request, data in place. */
  uint8_t buf[sizeof g_ping_request];
  memcpy(buf, g_ping_request, sizeof buf);
  struct icmp_repr ic;
  REQUIRE(icmp_parse(buf + L4, sizeof buf - L4, &ic) == 0);
  ic.type = ICMP_ECHO_REPLY;
  CHECK_EQ(icmp_emit(&ic, buf + L4, sizeof buf - L4), 64);
  struct ipv4_repr ip = {.src = IP4(10, 99, 0, 2), .dst = IP4(10, 99, 0, 1), .proto = IPPROTO_ICMP_,
                         .ttl = 64, .id = 0x826d, .payload_len = 64};
  CHECK_EQ(ipv4_emit(&ip, buf + L3, sizeof buf - L3), 20);
  CHECK(memcmp(buf + L3, g_ping_reply + L3, sizeof buf - L3) == 0);

  struct ipv4_repr pip;
  const uint8_t *pl;
  REQUIRE(ipv4_parse(g_ping_reply + L3, sizeof g_ping_reply - L3, &pip, &pl) == 0);
  CHECK(!pip.dont_fragment);
  CHECK_EQ(pip.id, 0x826d);
  struct icmp_repr rep;
  REQUIRE(icmp_parse(pl, pip.payload_len, &rep) == 0);
  CHECK_EQ(rep.type, ICMP_ECHO_REPLY);
  CHECK_EQ(rep.ident, 0x140a);
  CHECK_EQ(rep.seqno, 1);
  CHECK(memcmp(rep.data, ic.data, 56) == 0);
}

static void set_ip_csum(uint8_t *h, size_t hl) {
  h[10] = h[11] = 0;
  cpb_put_be16(h + 10, naive_csum(h, hl));
}

TEST(ipv4_rejects) {
  uint8_t p[sizeof g_syn - L3];
  struct ipv4_repr ip;
  const uint8_t *pl;
#define RESET() memcpy(p, g_syn + L3, sizeof p)
  RESET();
  CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), 0);
  for (size_t n = 0; n < 20; n++) CHECK_EQ(ipv4_parse(p, n, &ip, &pl), -EINVAL);
  p[0] = 0x65; /* version 6 */
  set_ip_csum(p, 20);
  CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), -EINVAL);
  for (uint8_t ihl = 0; ihl < 5; ihl++) {
    RESET();
    p[0] = (uint8_t)(0x40 | ihl);
    set_ip_csum(p, 20);
    CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), -EINVAL);
  }
  RESET();
  p[0] = 0x46; /* IHL 6 but only 20 bytes given */
  CHECK_EQ(ipv4_parse(p, 20, &ip, &pl), -EINVAL);
  RESET();
  cpb_put_be16(p + 2, 19); /* total below header */
  set_ip_csum(p, 20);
  CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), -EINVAL);
  RESET();
  cpb_put_be16(p + 2, (uint16_t)(sizeof p + 1)); /* total beyond buffer */
  set_ip_csum(p, 20);
  CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), -EINVAL);
  RESET();
  cpb_put_be16(p + 2, 20); /* header only: fine */
  set_ip_csum(p, 20);
  CHECK_EQ(ipv4_parse(p, sizeof p, &ip, &pl), 0);
  CHECK_EQ(ip.payload_len, 0);
  for (size_t bit = 0; bit < 160; bit++) {
    RESET();
    p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    int rc = ipv4_parse(p, sizeof p, &ip, &pl);
    /* A single flipped bit always breaks the checksum; version/IHL/length flips may be caught first. */
    size_t byte = bit / 8;
    if (byte == 0 || byte == 2 || byte == 3) CHECK(rc == -EINVAL || rc == -EBADMSG);
    else CHECK_EQ(rc, -EBADMSG);
  }
#undef RESET
}

TEST(ipv4_padding_options_fragments) {
  /* The echo request followed by Ethernet padding: the payload stops at total_length. */
  uint8_t p[sizeof g_ping_request - L3 + 6];
  memset(p, 0, sizeof p);
  memcpy(p, g_ping_request + L3, sizeof g_ping_request - L3);
  struct ipv4_repr ip;
  const uint8_t *pl;
  REQUIRE(ipv4_parse(p, sizeof p, &ip, &pl) == 0);
  CHECK_EQ(ip.payload_len, 64);
  struct icmp_repr ic;
  CHECK_EQ(icmp_parse(pl, ip.payload_len, &ic), 0);
  CHECK_EQ(icmp_parse(pl, ip.payload_len + 6, &ic), 0); /* zero padding does not change the sum */
  CHECK_EQ(ic.data_len, 62);

  /* A 24-byte header with a Router Alert option (RFC 2113): the option is skipped. */
  uint8_t o[24 + 8];
  memcpy(o, g_ping_request + L3, 20);
  o[0] = 0x46;
  cpb_put_be16(o + 2, sizeof o);
  o[20] = 0x94; o[21] = 0x04; o[22] = 0; o[23] = 0;
  memset(o + 24, 0x5a, 8);
  set_ip_csum(o, 24);
  REQUIRE(ipv4_parse(o, sizeof o, &ip, &pl) == 0);
  CHECK_EQ(ip.hdr_len, 24);
  CHECK_EQ(ip.payload_len, 8);
  CHECK(pl == o + 24);
  set_ip_csum(o, 20); /* checksum over the fixed part only is wrong: options are covered */
  CHECK_EQ(ipv4_parse(o, sizeof o, &ip, &pl), -EBADMSG);

  /* Fragments: MF, a non-zero offset, or both; DF alone is not a fragment. */
  const struct { uint16_t frag; bool df, is_frag; } cases[] = {
      {0x0000, false, false}, {0x4000, true, false}, {0x2000, false, true},
      {0x0001, false, true},  {0x1fff, false, true}, {0x20b9, false, true}, {0x8000, false, false}};
  for (size_t i = 0; i < CPB_ARRAY_LEN(cases); i++) {
    memcpy(p, g_ping_request + L3, 84);
    cpb_put_be16(p + 6, cases[i].frag);
    set_ip_csum(p, 20);
    REQUIRE(ipv4_parse(p, 84, &ip, &pl) == 0);
    CHECK_EQ(ip.dont_fragment, cases[i].df);
    CHECK_EQ(ip.is_fragment, cases[i].is_frag);
  }
}

TEST(ipv4_emit_fields) {
  struct ipv4_repr r = {.src = IP4(192, 168, 0, 1), .dst = IP4(192, 168, 0, 199), .proto = 17, .ttl = 64,
                        .tos = 0, .id = 0, .dont_fragment = true, .payload_len = 0x73 - 20};
  /* Wikipedia's checksum example header again, this time produced by emit. */
  const uint8_t want[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                            0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  uint8_t out[20];
  CHECK_EQ(ipv4_emit(&r, out, sizeof out), 20);
  CHECK(memcmp(out, want, 20) == 0);
  r.dont_fragment = false;
  r.is_fragment = true; /* ignored: emit never fragments */
  r.hdr_len = 60;       /* ignored: emit never writes options */
  r.tos = 0xb8;
  CHECK_EQ(ipv4_emit(&r, out, sizeof out), 20);
  CHECK_EQ(out[0], 0x45);
  CHECK_EQ(out[1], 0xb8);
  CHECK_EQ(cpb_get_be16(out + 6), 0);
  CHECK_EQ(naive_csum(out, 20), 0);
  r.payload_len = 65535 - 20;
  CHECK_EQ(ipv4_emit(&r, out, sizeof out), 20);
  CHECK_EQ(cpb_get_be16(out + 2), 65535);
  r.payload_len = 65535 - 19;
  CHECK_EQ(ipv4_emit(&r, out, sizeof out), -EINVAL);
}

TEST(icmp_rejects_and_odd_lengths) {
  struct icmp_repr ic;
  uint8_t m[8 + 7];
  for (size_t n = 0; n < 8; n++) CHECK_EQ(icmp_parse(g_ping_request + L4, n, &ic), -EINVAL);
  /* An odd-length echo (ping -s 7): the checksum pads with a zero byte. */
  struct icmp_repr r = {.type = ICMP_ECHO_REQUEST, .ident = 0xbeef, .seqno = 0x0102,
                        .data = (const uint8_t *)"abcdefg", .data_len = 7};
  CHECK_EQ(icmp_emit(&r, m, sizeof m), 15);
  CHECK_EQ(cpb_get_be16(m + 2), naive_csum((uint8_t[15]){8, 0, 0, 0, 0xbe, 0xef, 1, 2, 'a', 'b', 'c', 'd', 'e', 'f', 'g'}, 15));
  REQUIRE(icmp_parse(m, sizeof m, &ic) == 0);
  CHECK_EQ(ic.ident, 0xbeef);
  CHECK_EQ(ic.seqno, 0x0102);
  CHECK_EQ(ic.data_len, 7);
  CHECK(memcmp(ic.data, "abcdefg", 7) == 0);
  for (size_t bit = 0; bit < sizeof m * 8; bit++) {
    m[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    CHECK_EQ(icmp_parse(m, sizeof m, &ic), -EBADMSG);
    m[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  /* Data that overlaps the header being written (a message shifted within one buffer). */
  uint8_t sh[8 + 40];
  for (size_t i = 0; i < sizeof sh; i++) sh[i] = (uint8_t)(i * 7);
  uint8_t want[40];
  memcpy(want, sh + 3, 40);
  struct icmp_repr o = {.type = ICMP_ECHO_REPLY, .ident = 1, .seqno = 2, .data = sh + 3, .data_len = 40};
  CHECK_EQ(icmp_emit(&o, sh, sizeof sh), 48);
  CHECK(memcmp(sh + 8, want, 40) == 0);
  CHECK_EQ(naive_csum(sh, sizeof sh), 0);
  /* Header-only message; a non-echo type reports no ident/seqno. */
  struct icmp_repr u = {.type = ICMP_DEST_UNREACH, .code = 4, .ident = 0, .seqno = 1400};
  CHECK_EQ(icmp_emit(&u, m, 8), 8);
  REQUIRE(icmp_parse(m, 8, &ic) == 0);
  CHECK_EQ(ic.type, ICMP_DEST_UNREACH);
  CHECK_EQ(ic.code, 4);
  CHECK_EQ(ic.ident, 0);
  CHECK_EQ(ic.seqno, 0);
  CHECK_EQ(ic.data_len, 0);
  CHECK_EQ(cpb_get_be16(m + 6), 1400);
  u.data_len = 65535;
  CHECK_EQ(icmp_emit(&u, m, sizeof m), -EINVAL);
}

/* ---- TCP ---- */

static void tcp_golden(const uint8_t *f, size_t n, struct tcp_repr *t) {
  memset(t, 0x5a, sizeof *t);
  const uint8_t *pl;
  struct ipv4_repr ip;
  if (ipv4_parse(f + L3, n - L3, &ip, &pl) != 0 || ip.proto != IPPROTO_TCP_ ||
      tcp_parse(pl, ip.payload_len, ip.src, ip.dst, true, t) != 0) {
    fprintf(stderr, "  golden frame did not parse\n");
    t_failures_in_case++;
    memset(t, 0, sizeof *t);
  }
}

/* Emits eth + IPv4 + TCP from the parsed reprs and compares with the capture, byte for byte. */
static void tcp_reemit(const uint8_t *f, size_t n) {
  struct eth_repr e;
  struct ipv4_repr ip;
  struct tcp_repr t;
  const uint8_t *p3, *p4;
  size_t n3;
  if (eth_parse(f, n, &e, &p3, &n3) || ipv4_parse(p3, n3, &ip, &p4) || tcp_parse(p4, ip.payload_len, ip.src, ip.dst, true, &t)) {
    t_failures_in_case++;
    return;
  }
  uint8_t out[1600];
  memset(out, 0xaa, sizeof out);
  CHECK_EQ(eth_emit(&e, out, sizeof out), 14);
  CHECK_EQ(ipv4_emit(&ip, out + L3, sizeof out - L3), 20);
  size_t hl = tcp_header_len(&t);
  CHECK_EQ(hl, (size_t)(t.payload - p4));
  CHECK_EQ(tcp_emit_header(&t, out + L4, sizeof out - L4), (int)hl);
  memcpy(out + L4 + hl, t.payload, t.payload_len);
  tcp_fill_checksum(out + L4, hl + t.payload_len, ip.src, ip.dst);
  CHECK_EQ(L4 + hl + t.payload_len, n);
  if (memcmp(out, f, n) != 0) {
    for (size_t i = 0; i < n; i++)
      if (out[i] != f[i]) { fprintf(stderr, "  first difference at byte %zu: %02x != %02x\n", i, out[i], f[i]); break; }
    t_failures_in_case++;
  }
}

TEST(golden_tcp_syn) {
  struct tcp_repr t;
  tcp_golden(g_syn, sizeof g_syn, &t);
  CHECK_EQ(t.sport, 37434);
  CHECK_EQ(t.dport, 5001);
  CHECK_EQ(t.seq, 2300677381u);
  CHECK_EQ(t.ack, 0);
  CHECK_EQ(t.flags, TCP_SYN);
  CHECK_EQ(t.window, 64240);
  CHECK_EQ(t.urgent, 0);
  CHECK(t.opts.has_mss);
  CHECK_EQ(t.opts.mss, 1460);
  CHECK(t.opts.sack_permitted);
  CHECK(t.opts.has_ts);
  CHECK_EQ(t.opts.ts_val, 2507886980u);
  CHECK_EQ(t.opts.ts_ecr, 0);
  CHECK(t.opts.has_wscale);
  CHECK_EQ(t.opts.wscale, 7);
  CHECK_EQ(t.opts.nsack, 0);
  CHECK_EQ(t.payload_len, 0);
  CHECK(t.payload == g_syn + sizeof g_syn);
  CHECK_EQ(tcp_header_len(&t), 40);
  tcp_reemit(g_syn, sizeof g_syn);
}

TEST(golden_tcp_synack) {
  struct tcp_repr t;
  tcp_golden(g_synack, sizeof g_synack, &t);
  CHECK_EQ(t.sport, 5001);
  CHECK_EQ(t.dport, 37434);
  CHECK_EQ(t.seq, 3068756907u);
  CHECK_EQ(t.ack, 2300677382u);
  CHECK_EQ(t.flags, TCP_SYN | TCP_ACK);
  CHECK_EQ(t.window, 65160);
  CHECK(t.opts.has_mss && t.opts.mss == 1460);
  CHECK(t.opts.sack_permitted);
  CHECK(t.opts.has_ts && t.opts.ts_val == 2124947192u && t.opts.ts_ecr == 2507886980u);
  CHECK(t.opts.has_wscale && t.opts.wscale == 7);
  CHECK_EQ(t.payload_len, 0);
  tcp_reemit(g_synack, sizeof g_synack);
}

TEST(golden_tcp_data) {
  struct tcp_repr t;
  tcp_golden(g_data, sizeof g_data, &t);
  CHECK_EQ(t.sport, 5001);
  CHECK_EQ(t.seq, 3068756908u);
  CHECK_EQ(t.ack, 2300882183u);
  CHECK_EQ(t.flags, TCP_PSH | TCP_ACK);
  CHECK_EQ(t.window, 935);
  CHECK(!t.opts.has_mss && !t.opts.has_wscale && !t.opts.sack_permitted);
  CHECK(t.opts.has_ts && t.opts.ts_val == 2124947194u && t.opts.ts_ecr == 2507886982u);
  CHECK_EQ(t.opts.nsack, 0);
  REQUIRE(t.payload_len == 10);
  CHECK(memcmp(t.payload, "ok 204800\n", 10) == 0);
  CHECK_EQ(tcp_header_len(&t), 32);
  tcp_reemit(g_data, sizeof g_data);
  /* The checksum covers the payload and the pseudo-header. */
  uint8_t seg[sizeof g_data - L4];
  memcpy(seg, g_data + L4, sizeof seg);
  struct tcp_repr u;
  CHECK_EQ(tcp_parse(seg, sizeof seg, frame_src(g_data), frame_dst(g_data), true, &u), 0);
  CHECK_EQ(tcp_parse(seg, sizeof seg, frame_src(g_data) ^ 1, frame_dst(g_data), true, &u), -EBADMSG);
  CHECK_EQ(tcp_parse(seg, sizeof seg - 1, frame_src(g_data), frame_dst(g_data), true, &u), -EBADMSG);
  seg[sizeof seg - 1] ^= 0x20;
  CHECK_EQ(tcp_parse(seg, sizeof seg, frame_src(g_data), frame_dst(g_data), true, &u), -EBADMSG);
  CHECK_EQ(tcp_parse(seg, sizeof seg, frame_src(g_data), frame_dst(g_data), false, &u), 0);
}

TEST(golden_tcp_sack_blocks) {
  struct tcp_repr t;
  tcp_golden(g_sack1, sizeof g_sack1, &t);
  CHECK_EQ(t.sport, 5002);
  CHECK_EQ(t.dport, 40000);
  CHECK_EQ(t.seq, 67261156u);
  CHECK_EQ(t.ack, 1000001u);
  CHECK_EQ(t.flags, TCP_ACK);
  CHECK_EQ(t.window, 510);
  CHECK(t.opts.has_ts && t.opts.ts_val == 707795633u && t.opts.ts_ecr == 5001);
  REQUIRE(t.opts.nsack == 1);
  CHECK_EQ(t.opts.sack[0].left, 1000101u);
  CHECK_EQ(t.opts.sack[0].right, 1000201u);
  tcp_reemit(g_sack1, sizeof g_sack1);

  tcp_golden(g_sack3, sizeof g_sack3, &t);
  CHECK(t.opts.has_ts && t.opts.ts_val == 707795734u && t.opts.ts_ecr == 5001);
  REQUIRE(t.opts.nsack == 3);
  const uint32_t want[3][2] = {{1000501, 1000601}, {1000301, 1000401}, {1000101, 1000201}};
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(t.opts.sack[i].left, want[i][0]);
    CHECK_EQ(t.opts.sack[i].right, want[i][1]);
  }
  CHECK_EQ(tcp_header_len(&t), 60);
  tcp_reemit(g_sack3, sizeof g_sack3);

  tcp_golden(g_sack1b, sizeof g_sack1b, &t);
  CHECK_EQ(t.ack, 1000401u);
  CHECK_EQ(t.window, 508);
  CHECK(t.opts.has_ts && t.opts.ts_val == 707796459u && t.opts.ts_ecr == 5006);
  REQUIRE(t.opts.nsack == 1);
  CHECK_EQ(t.opts.sack[0].left, 1000501u);
  CHECK_EQ(t.opts.sack[0].right, 1000601u);
  tcp_reemit(g_sack1b, sizeof g_sack1b);
}

static struct tcp_repr base_repr(uint8_t flags) {
  struct tcp_repr r;
  memset(&r, 0, sizeof r);
  r.sport = 40000;
  r.dport = 443;
  r.seq = 0x01020304;
  r.ack = 0xa0b0c0d0;
  r.flags = flags;
  r.window = 1024;
  return r;
}

static int emit_and_reparse(const struct tcp_repr *r, uint8_t *out, struct tcp_repr *back) {
  int n = tcp_emit_header(r, out, TCP_MAX_HDR_LEN);
  if (n < 0) return n;
  tcp_fill_checksum(out, (size_t)n, IP4(10, 0, 0, 1), IP4(10, 0, 0, 2));
  if (naive_l4_csum(IP4(10, 0, 0, 1), IP4(10, 0, 0, 2), 6, out, (size_t)n) != 0) return -999;
  int rc = tcp_parse(out, (size_t)n, IP4(10, 0, 0, 1), IP4(10, 0, 0, 2), true, back);
  return rc < 0 ? rc : n;
}

TEST(tcp_emit_sack_blocks_that_fit) {
  uint8_t out[TCP_MAX_HDR_LEN];
  struct tcp_repr r = base_repr(TCP_ACK), back;
  for (int i = 0; i < 4; i++) r.opts.sack[i] = (struct tcp_sack_block){1000u * (uint32_t)i + 1, 1000u * (uint32_t)i + 500};
  r.opts.nsack = 4;
  r.opts.has_ts = true;
  r.opts.ts_val = 11;
  r.opts.ts_ecr = 22;
  /* With timestamps: 12 + 4 + 3*8 = 40 bytes; the fourth block is dropped. */
  CHECK_EQ(tcp_header_len(&r), 60);
  REQUIRE(emit_and_reparse(&r, out, &back) == 60);
  const uint8_t hdr_ts[8] = {1, 1, 5, 26, 0, 0, 0, 1};
  CHECK(memcmp(out + 32, hdr_ts, 8) == 0);
  CHECK_EQ(back.opts.nsack, 3);
  CHECK(memcmp(back.opts.sack, r.opts.sack, 3 * sizeof r.opts.sack[0]) == 0);
  /* Without timestamps: 4 + 4*8 = 36 bytes, all four go. */
  r.opts.has_ts = false;
  CHECK_EQ(tcp_header_len(&r), 56);
  REQUIRE(emit_and_reparse(&r, out, &back) == 56);
  const uint8_t hdr4[4] = {1, 1, 5, 34};
  CHECK(memcmp(out + 20, hdr4, 4) == 0);
  CHECK_EQ(back.opts.nsack, 4);
  CHECK(memcmp(back.opts.sack, r.opts.sack, 4 * sizeof r.opts.sack[0]) == 0);
  CHECK(!back.opts.has_ts);
  /* A count beyond the array is clamped, never read past. */
  r.opts.nsack = 200;
  CHECK_EQ(tcp_header_len(&r), 56);
  /* Zero blocks, zero options. */
  r.opts.nsack = 0;
  CHECK_EQ(tcp_header_len(&r), 20);
  REQUIRE(emit_and_reparse(&r, out, &back) == 20);
  CHECK_EQ(out[12], 0x50);
}

TEST(tcp_emit_option_layouts) {
  uint8_t out[TCP_MAX_HDR_LEN];
  struct tcp_repr r = base_repr(TCP_SYN), back;
  r.opts.has_mss = true;
  r.opts.mss = 1460;
  r.opts.sack_permitted = true;
  r.opts.has_wscale = true;
  r.opts.wscale = 7;
  /* Without timestamps Linux writes MSS, NOP,NOP,SACK-permitted, NOP,WS. */
  const uint8_t no_ts[12] = {2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7};
  REQUIRE(emit_and_reparse(&r, out, &back) == 32);
  CHECK(memcmp(out + 20, no_ts, 12) == 0);
  CHECK(back.opts.has_mss && back.opts.mss == 1460 && back.opts.sack_permitted && back.opts.wscale == 7);
  /* Timestamps without SACK: MSS, NOP,NOP,TS, NOP,WS. */
  r.opts.sack_permitted = false;
  r.opts.has_ts = true;
  r.opts.ts_val = 0x01020304;
  r.opts.ts_ecr = 0;
  const uint8_t ts_only[20] = {2, 4, 0x05, 0xb4, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7};
  REQUIRE(emit_and_reparse(&r, out, &back) == 40);
  CHECK(memcmp(out + 20, ts_only, 20) == 0);
  CHECK(!back.opts.sack_permitted && back.opts.has_ts && back.opts.ts_val == 0x01020304);
  /* SYN never carries SACK blocks; non-SYN never carries MSS, WS or SACK-permitted. */
  r.opts.nsack = 2;
  CHECK_EQ(tcp_header_len(&r), 40);
  struct tcp_repr a = r;
  a.flags = TCP_ACK;
  a.opts.sack[0] = (struct tcp_sack_block){5, 6};
  a.opts.sack[1] = (struct tcp_sack_block){7, 8};
  REQUIRE(emit_and_reparse(&a, out, &back) == 20 + 12 + 4 + 16);
  CHECK(!back.opts.has_mss && !back.opts.has_wscale && !back.opts.sack_permitted);
  CHECK(back.opts.has_ts && back.opts.nsack == 2 && back.opts.sack[1].right == 8);
  /* A bare SYN. */
  struct tcp_repr bare = base_repr(TCP_SYN);
  REQUIRE(emit_and_reparse(&bare, out, &back) == 20);
  CHECK_EQ(back.seq, 0x01020304u);
  CHECK_EQ(back.ack, 0xa0b0c0d0u);
  CHECK_EQ(back.window, 1024);
  CHECK_EQ(back.flags, TCP_SYN);
  CHECK(!back.opts.has_mss && !back.opts.has_ts && !back.opts.has_wscale && !back.opts.sack_permitted);
  /* Urgent pointer and every flag bit survive. */
  struct tcp_repr all = base_repr(0xff & ~TCP_SYN);
  all.urgent = 0xbeef;
  REQUIRE(emit_and_reparse(&all, out, &back) == 20);
  CHECK_EQ(back.flags, 0xff & ~TCP_SYN);
  CHECK_EQ(back.urgent, 0xbeef);
}

/* Builds a segment with the given option bytes (padded with EOL to a multiple of 4) and parses it
 * without checksum verification. */
static int parse_opts(const uint8_t *opt, size_t n, struct tcp_repr *t) {
  uint8_t seg[TCP_MAX_HDR_LEN + 4];
  memset(seg, 0, sizeof seg);
  size_t hl = TCP_MIN_HDR_LEN + ((n + 3) & ~(size_t)3);
  if (hl > TCP_MAX_HDR_LEN) return -1000;
  memcpy(seg, g_syn + L4, 20);
  seg[12] = (uint8_t)((hl / 4) << 4);
  memcpy(seg + 20, opt, n);
  seg[hl] = 0xee; /* one payload byte past the options */
  int rc = tcp_parse(seg, hl + 1, 0, 0, false, t);
  if (rc == 0 && (t->payload_len != 1 || t->payload[0] != 0xee)) return -1001;
  return rc;
}
#define OPTS(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

TEST(tcp_option_parsing_edge_cases) {
  struct tcp_repr t;
  /* EOL ends the list: the WS after it is not read. */
  CHECK_EQ(parse_opts(OPTS(2, 4, 5, 0xb4, 0, 3, 3, 7), &t), 0);
  CHECK(t.opts.has_mss && t.opts.mss == 1460 && !t.opts.has_wscale);
  /* Unknown kinds are skipped by their length (here TCP Fast Open cookie and an experimental). */
  CHECK_EQ(parse_opts(OPTS(34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 254, 2, 2, 4, 2, 0), &t), 0);
  CHECK(t.opts.has_mss && t.opts.mss == 0x0200 && !t.opts.sack_permitted);
  /* Wrong length for a known kind: ignored, and parsing goes on by its length. */
  CHECK_EQ(parse_opts(OPTS(2, 3, 0, 1, 3, 3, 7, 0), &t), 0);
  CHECK(!t.opts.has_mss && t.opts.has_wscale && t.opts.wscale == 7);
  CHECK_EQ(parse_opts(OPTS(3, 4, 7, 0, 4, 3, 0, 1), &t), 0);
  CHECK(!t.opts.has_wscale && !t.opts.sack_permitted);
  CHECK_EQ(parse_opts(OPTS(8, 8, 1, 2, 3, 4, 5, 6, 4, 2, 0, 0), &t), 0);
  CHECK(!t.opts.has_ts && t.opts.sack_permitted);
  CHECK_EQ(parse_opts(OPTS(5, 12, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9, 1, 1, 5, 2), &t), 0);
  CHECK_EQ(t.opts.nsack, 0); /* 12 is not 2 + 8n; 2 is an empty list */
  /* Lengths below 2, past the header, or missing: the segment is rejected. */
  CHECK_EQ(parse_opts(OPTS(1, 1, 7, 0), &t), -EINVAL);
  CHECK_EQ(parse_opts(OPTS(1, 1, 7, 1), &t), -EINVAL);
  CHECK_EQ(parse_opts(OPTS(1, 1, 2, 0), &t), -EINVAL);
  CHECK_EQ(parse_opts(OPTS(1, 1, 8, 12, 0, 0, 0, 1, 0, 0, 0, 2), &t), -EINVAL);
  CHECK_EQ(parse_opts(OPTS(1, 1, 1, 2), &t), -EINVAL); /* kind in the last byte, no length */
  CHECK_EQ(parse_opts(OPTS(1, 1, 1, 99), &t), -EINVAL);
  CHECK_EQ(parse_opts(OPTS(2, 4, 5, 0xb4, 1, 1, 1, 1, 3, 5, 7, 0), &t), -EINVAL);
  /* The first of a repeated option wins. */
  CHECK_EQ(parse_opts(OPTS(2, 4, 5, 0xb4, 2, 4, 2, 0x18, 1, 3, 3, 2, 1, 3, 3, 14), &t), 0);
  CHECK(t.opts.mss == 1460 && t.opts.wscale == 2);
  CHECK_EQ(parse_opts(OPTS(1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4), &t), 0);
  CHECK(t.opts.has_ts && t.opts.ts_val == 1 && t.opts.ts_ecr == 2);
  CHECK_EQ(parse_opts(OPTS(1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 0, 3, 0, 0, 0, 4), &t), 0);
  CHECK(t.opts.nsack == 1 && t.opts.sack[0].left == 1 && t.opts.sack[0].right == 2);
  /* Four SACK blocks fill 34 of the 40 bytes. */
  CHECK_EQ(parse_opts(OPTS(1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
                           0, 0, 0, 7, 0, 0, 0, 8, 1, 1, 1, 1), &t), 0);
  REQUIRE(t.opts.nsack == 4);
  CHECK(t.opts.sack[3].left == 7 && t.opts.sack[3].right == 8);
  /* 40 bytes of NOPs: nothing, and no reading past. */
  uint8_t nops[40];
  memset(nops, 1, sizeof nops);
  CHECK_EQ(parse_opts(nops, sizeof nops, &t), 0);
  CHECK(!t.opts.has_mss && !t.opts.has_ts && t.opts.nsack == 0);
  /* The MSS value and a window scale above 14 are reported as received. */
  CHECK_EQ(parse_opts(OPTS(2, 4, 0, 0, 1, 3, 3, 200), &t), 0);
  CHECK(t.opts.has_mss && t.opts.mss == 0 && t.opts.wscale == 200);
}

TEST(tcp_header_rejects) {
  uint8_t seg[64];
  struct tcp_repr t;
  memset(seg, 0, sizeof seg);
  memcpy(seg, g_syn + L4, 40);
  for (size_t n = 0; n < 20; n++) CHECK_EQ(tcp_parse(seg, n, 0, 0, false, &t), -EINVAL);
  CHECK_EQ(tcp_parse(seg, 39, 0, 0, false, &t), -EINVAL); /* data offset 10 words, 39 bytes */
  CHECK_EQ(tcp_parse(seg, 40, 0, 0, false, &t), 0);
  for (uint8_t doff = 0; doff < 5; doff++) {
    seg[12] = (uint8_t)(doff << 4);
    CHECK_EQ(tcp_parse(seg, 40, 0, 0, false, &t), -EINVAL);
  }
  seg[12] = 0xf0; /* 60-byte header */
  CHECK_EQ(tcp_parse(seg, 59, 0, 0, false, &t), -EINVAL);
  memset(seg + 40, 1, 20);
  CHECK_EQ(tcp_parse(seg, 60, 0, 0, false, &t), 0);
  CHECK_EQ(t.payload_len, 0);
  seg[12] = 0x5f; /* reserved and AE bits do not change the data offset */
  CHECK_EQ(tcp_parse(seg, 40, 0, 0, false, &t), 0);
  CHECK_EQ(t.payload_len, 20);
  CHECK(t.payload == seg + 20);
  /* Every single-bit error in the golden SYN is caught by the checksum (or the data offset check). */
  for (size_t bit = 0; bit < 40 * 8; bit++) {
    memcpy(seg, g_syn + L4, 40);
    seg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    int rc = tcp_parse(seg, 40, frame_src(g_syn), frame_dst(g_syn), true, &t);
    CHECK(rc == -EBADMSG || (bit / 8 == 12 && rc == -EINVAL));
  }
}

TEST(tcp_fill_checksum_vs_naive) {
  static uint8_t seg[1600];
  int bad = 0;
  for (int i = 0; i < 3000; i++) {
    size_t n = 20 + xorshift() % (sizeof seg - 20);
    for (size_t j = 0; j < n; j++) seg[j] = (uint8_t)xorshift();
    cpb_ip4_t s = (cpb_ip4_t)xorshift(), d = (cpb_ip4_t)xorshift();
    tcp_fill_checksum(seg, n, s, d);
    if (naive_l4_csum(s, d, 6, seg, n) != 0) bad++;
    seg[16] = seg[17] = 0;
    uint16_t want = naive_l4_csum(s, d, 6, seg, n);
    tcp_fill_checksum(seg, n, s, d);
    if (cpb_get_be16(seg + 16) != want) bad++;
  }
  CHECK_EQ(bad, 0);
}

/* Every emitter refuses a buffer one byte short, and writes nothing past an exact-size one
 * (heap buffers of the exact size let ASan see a write past the end). */
TEST(emit_enospc_and_exact_fit) {
  struct eth_repr e = {.ethertype = 1};
  struct arp_repr a = {.op = 1};
  struct ipv4_repr ip = {.payload_len = 0};
  struct icmp_repr ic = {.type = 8, .data = g_ping_request, .data_len = 21};
  struct tcp_repr t;
  tcp_golden(g_sack3, sizeof g_sack3, &t);
  const size_t need[5] = {14, 28, 20, 29, 60};
  for (int k = 0; k < 5; k++) {
    for (size_t cap = 0; cap <= need[k]; cap++) {
      uint8_t *b = malloc(cap ? cap : 1);
      REQUIRE(b);
      int rc = 0;
      switch (k) {
      case 0: rc = eth_emit(&e, b, cap); break;
      case 1: rc = arp_emit(&a, b, cap); break;
      case 2: rc = ipv4_emit(&ip, b, cap); break;
      case 3: rc = icmp_emit(&ic, b, cap); break;
      case 4: rc = tcp_emit_header(&t, b, cap); break;
      }
      if (cap < need[k]) CHECK_EQ(rc, -ENOSPC);
      else CHECK_EQ(rc, (int)need[k]);
      free(b);
    }
  }
}

/* ---- fuzz: random and mutated variants of the golden frames through every parser ---- */

struct fuzz_stats {
  long eth_ok, arp_ok, arp_bad, arp_unsup, ip_ok, ip_bad, ip_csum, icmp_ok, icmp_bad, icmp_csum;
  long tcp_ok, tcp_bad, tcp_csum, tcp_opts_seen, tcp_sack_seen;
  long wrong_code, broken_invariant;
};

static void fix_checksums(uint8_t *f, size_t n) {
  if (n < L3 + 20 || (f[L3] >> 4) != 4) return;
  size_t hl = (size_t)(f[L3] & 15) * 4, tot = cpb_get_be16(f + L3 + 2);
  if (hl < 20 || L3 + hl > n) return;
  set_ip_csum(f + L3, hl);
  if (tot < hl || L3 + tot > n) return;
  uint8_t *l4 = f + L3 + hl;
  size_t l4n = tot - hl;
  if (f[L3 + 9] == IPPROTO_TCP_ && l4n >= 20) {
    l4[16] = l4[17] = 0;
    cpb_put_be16(l4 + 16, naive_l4_csum(frame_src(f), frame_dst(f), 6, l4, l4n));
  } else if (f[L3 + 9] == IPPROTO_ICMP_ && l4n >= 8) {
    l4[2] = l4[3] = 0;
    cpb_put_be16(l4 + 2, naive_csum(l4, l4n));
  }
}

/* Emit what was parsed and parse it again: what emit can express must come back unchanged. */
static bool tcp_roundtrip_ok(const struct tcp_repr *t) {
  uint8_t out[TCP_MAX_HDR_LEN];
  struct tcp_repr b;
  int n = tcp_emit_header(t, out, sizeof out);
  if (n < 20 || (size_t)n != tcp_header_len(t)) return false;
  if (tcp_parse(out, (size_t)n, 0, 0, false, &b) != 0) return false;
  if (b.sport != t->sport || b.dport != t->dport || b.seq != t->seq || b.ack != t->ack || b.flags != t->flags ||
      b.window != t->window || b.urgent != t->urgent || b.payload_len != 0)
    return false;
  const struct tcp_opts *x = &t->opts, *y = &b.opts;
  if (x->has_ts != y->has_ts || (x->has_ts && (x->ts_val != y->ts_val || x->ts_ecr != y->ts_ecr))) return false;
  if (t->flags & TCP_SYN) {
    if (x->has_mss != y->has_mss || (x->has_mss && x->mss != y->mss)) return false;
    if (x->has_wscale != y->has_wscale || (x->has_wscale && x->wscale != y->wscale)) return false;
    if (x->sack_permitted != y->sack_permitted || y->nsack != 0) return false;
  } else {
    if (y->has_mss || y->has_wscale || y->sack_permitted) return false;
    unsigned fit = x->has_ts ? 3 : 4;
    if (y->nsack != CPB_MIN((unsigned)x->nsack, fit)) return false;
    if (memcmp(y->sack, x->sack, y->nsack * sizeof y->sack[0]) != 0) return false;
  }
  return true;
}

static void fuzz_tcp(const uint8_t *p, size_t n, cpb_ip4_t s, cpb_ip4_t d, bool verify, struct fuzz_stats *st) {
  struct tcp_repr t;
  int rc = tcp_parse(p, n, s, d, verify, &t);
  if (rc == 0) {
    st->tcp_ok++;
    size_t hl = (size_t)(t.payload - p);
    if (hl < 20 || hl > 60 || hl % 4 || hl + t.payload_len != n || t.opts.nsack > TCP_MAX_SACK_BLOCKS)
      st->broken_invariant++;
    else if (!tcp_roundtrip_ok(&t)) st->broken_invariant++;
    if (t.opts.has_mss || t.opts.has_ts || t.opts.has_wscale || t.opts.sack_permitted) st->tcp_opts_seen++;
    if (t.opts.nsack) st->tcp_sack_seen++;
  } else if (rc == -EINVAL) st->tcp_bad++;
  else if (rc == -EBADMSG) st->tcp_csum++;
  else st->wrong_code++;
}

static void fuzz_icmp(const uint8_t *p, size_t n, struct fuzz_stats *st) {
  struct icmp_repr ic;
  int rc = icmp_parse(p, n, &ic);
  if (rc == 0) {
    st->icmp_ok++;
    if (ic.data != p + 8 || ic.data_len != n - 8) st->broken_invariant++;
  } else if (rc == -EINVAL) st->icmp_bad++;
  else if (rc == -EBADMSG) st->icmp_csum++;
  else st->wrong_code++;
}

static void fuzz_frame(const uint8_t *f, size_t n, struct fuzz_stats *st) {
  struct eth_repr e;
  const uint8_t *p3;
  size_t n3;
  int rc = eth_parse(f, n, &e, &p3, &n3);
  if (rc == -EINVAL) return;
  if (rc != 0 || p3 != f + 14 || n3 != n - 14) { st->wrong_code++; return; }
  st->eth_ok++;
  /* Every L3 parser sees every frame, whatever the ethertype says. */
  struct arp_repr a;
  rc = arp_parse(p3, n3, &a);
  if (rc == 0) st->arp_ok++;
  else if (rc == -EINVAL) st->arp_bad++;
  else if (rc == -EPROTONOSUPPORT) st->arp_unsup++;
  else st->wrong_code++;

  struct ipv4_repr ip;
  const uint8_t *p4;
  rc = ipv4_parse(p3, n3, &ip, &p4);
  if (rc == 0) {
    st->ip_ok++;
    if (ip.hdr_len < 20 || p4 != p3 + ip.hdr_len || (size_t)ip.hdr_len + ip.payload_len > n3) {
      st->broken_invariant++;
      return;
    }
    /* Emit the header again over the same payload and parse it back. */
    static uint8_t again[65536];
    struct ipv4_repr b;
    const uint8_t *bp;
    memcpy(again + 20, p4, ip.payload_len);
    if (ipv4_emit(&ip, again, sizeof again) != 20 || ipv4_parse(again, 20u + ip.payload_len, &b, &bp) != 0 ||
        b.src != ip.src || b.dst != ip.dst || b.proto != ip.proto || b.ttl != ip.ttl || b.tos != ip.tos ||
        b.id != ip.id || b.dont_fragment != ip.dont_fragment || b.is_fragment || b.hdr_len != 20 ||
        b.payload_len != ip.payload_len || bp != again + 20)
      st->broken_invariant++;
    fuzz_tcp(p4, ip.payload_len, ip.src, ip.dst, true, st);
    fuzz_icmp(p4, ip.payload_len, st);
  } else if (rc == -EINVAL) st->ip_bad++;
  else if (rc == -EBADMSG) st->ip_csum++;
  else st->wrong_code++;
  /* And the L4 parsers straight on whatever follows 20 bytes, so broken IP does not shield them. */
  if (n3 >= 20) {
    fuzz_tcp(p3 + 20, n3 - 20, 0, 0, false, st);
    fuzz_icmp(p3 + 20, n3 - 20, st);
  }
}

static void mutate(uint8_t *f, size_t *n, size_t cap) {
  static const uint8_t interesting[] = {0, 1, 2, 3, 4, 5, 8, 10, 18, 26, 34, 0x3f, 0x40, 0x45, 0x4f, 0x7f, 0x80, 0xf0, 0xff};
  switch (xorshift() % 8) {
  case 0: /* a few bit flips anywhere */
    for (int k = 1 + (int)(xorshift() % 4); k > 0 && *n; k--) f[xorshift() % *n] ^= (uint8_t)(1u << (xorshift() % 8));
    break;
  case 1: /* interesting values at random offsets */
    for (int k = 1 + (int)(xorshift() % 4); k > 0 && *n; k--)
      f[xorshift() % *n] = interesting[xorshift() % sizeof interesting];
    break;
  case 2: /* truncation */
    *n = xorshift() % (*n + 1);
    break;
  case 3: /* all random, any length up to cap */
    *n = xorshift() % cap;
    for (size_t i = 0; i < *n; i++) f[i] = (uint8_t)xorshift();
    if (*n > 14 && xorshift() % 2) { f[12] = 0x08; f[13] = 0x00; f[14] = 0x45; }
    break;
  case 4: /* scribble over the TCP options region */
    if (*n > L4 + 20) {
      for (size_t i = L4 + 20; i < CPB_MIN(*n, (size_t)L4 + 60); i++)
        if (xorshift() % 3 == 0) f[i] = interesting[xorshift() % sizeof interesting];
    }
    break;
  case 5: /* data offset / IHL / total length nudged */
    if (*n > L4 + 13) f[L4 + 12] = (uint8_t)(xorshift() << 4);
    if (*n > L3 + 3 && xorshift() % 2) f[L3] = (uint8_t)(0x40 | (xorshift() % 16));
    if (*n > L3 + 3 && xorshift() % 2) cpb_put_be16(f + L3 + 2, (uint16_t)(*n - L3 + (xorshift() % 9) - 4));
    break;
  case 6: /* grow with random bytes (padding, or data past the header) */
    while (*n < cap && xorshift() % 8) f[(*n)++] = (uint8_t)xorshift();
    break;
  default: /* a bit of everything */
    for (int k = 1 + (int)(xorshift() % 8); k > 0 && *n; k--) f[xorshift() % *n] = (uint8_t)xorshift();
    *n -= xorshift() % (*n / 4 + 1);
    break;
  }
}

TEST(fuzz_parsers_with_mutated_golden_frames) {
  struct fuzz_stats st;
  memset(&st, 0, sizeof st);
  rng = 0x243f6a8885a308d3ull;
  uint8_t work[256];
  const int iters = 200000;
  for (int it = 0; it < iters; it++) {
    const struct golden *g = &goldens[xorshift() % CPB_ARRAY_LEN(goldens)];
    size_t n = g->n;
    memcpy(work, g->b, n);
    int rounds = 1 + (int)(xorshift() % 3);
    for (int r = 0; r < rounds; r++) mutate(work, &n, sizeof work);
    /* Most of the time, make the checksums right again so the mutation reaches the option parser. */
    if (xorshift() % 4) fix_checksums(work, n);
    /* An exact-size heap copy: one byte of over-read is an ASan report. */
    uint8_t *f = malloc(n ? n : 1);
    REQUIRE(f);
    memcpy(f, work, n);
    fuzz_frame(f, n, &st);
    free(f);
  }
  printf("  fuzz: eth %ld | arp ok %ld bad %ld unsup %ld | ip ok %ld bad %ld csum %ld | icmp ok %ld bad %ld csum %ld"
         " | tcp ok %ld bad %ld csum %ld opts %ld sack %ld\n",
         st.eth_ok, st.arp_ok, st.arp_bad, st.arp_unsup, st.ip_ok, st.ip_bad, st.ip_csum, st.icmp_ok, st.icmp_bad,
         st.icmp_csum, st.tcp_ok, st.tcp_bad, st.tcp_csum, st.tcp_opts_seen, st.tcp_sack_seen);
  CHECK_EQ(st.wrong_code, 0);
  CHECK_EQ(st.broken_invariant, 0);
  /* The fuzz reached every outcome of every parser, so it is not just bouncing off the first check. */
  CHECK(st.arp_ok > 1000 && st.arp_bad > 1000 && st.arp_unsup > 1000);
  CHECK(st.ip_ok > 10000 && st.ip_bad > 1000 && st.ip_csum > 1000);
  CHECK(st.icmp_ok > 1000 && st.icmp_bad > 1000 && st.icmp_csum > 1000);
  CHECK(st.tcp_ok > 10000 && st.tcp_bad > 1000 && st.tcp_csum > 1000);
  CHECK(st.tcp_opts_seen > 1000 && st.tcp_sack_seen > 1000);
}
