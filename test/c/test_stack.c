/* Network layer below TCP: ARP answers and resolution, ICMP echo, and the drops that must be counted
 * (frames for others, fragments, bad checksums). Frames are built with the wire emitters and the
 * replies are read back with the wire parsers, so both directions of the formats are exercised. */
#include "stack.h"
#include "t.h"
#include "wire/arp.h"
#include "wire/checksum.h"
#include "wire/eth.h"
#include "wire/icmp.h"
#include "wire/ipv4.h"

#define IP(a, b, c, d) (((cpb_ip4_t)(a) << 24) | ((cpb_ip4_t)(b) << 16) | ((cpb_ip4_t)(c) << 8) | (d))

static const uint8_t OUR_MAC[6] = {0x02, 0, 0, 0, 0, 0x10};
static const uint8_t PEER_MAC[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static uint8_t sent[16][CPB_FRAME_MAX];
static size_t sent_len[16];
static int nsent;

static void capture(void *ctx, struct cpb_frame *frames, int n) {
  (void)ctx;
  for (int i = 0; i < n && nsent < 16; i++, nsent++) {
    memcpy(sent[nsent], frames[i].data, frames[i].len);
    sent_len[nsent] = frames[i].len;
  }
}

static void setup(struct cpb_stack *s) {
  struct cpb_stack_config cfg = {.ip = IP(10, 77, 1, 10), .prefix_len = 24, .gateway = IP(10, 77, 1, 1), .mtu = 1500};
  memcpy(cfg.mac, OUR_MAC, 6);
  cpb_stack_init(s, &cfg, capture, NULL);
  nsent = 0;
}

static size_t arp_frame(uint8_t *buf, uint16_t op, const uint8_t *dst, cpb_ip4_t spa, cpb_ip4_t tpa) {
  struct eth_repr e = {.ethertype = ETHERTYPE_ARP};
  memcpy(e.dst, dst, 6);
  memcpy(e.src, PEER_MAC, 6);
  eth_emit(&e, buf, 64);
  struct arp_repr a = {.op = op, .spa = spa, .tpa = tpa};
  memcpy(a.sha, PEER_MAC, 6);
  arp_emit(&a, buf + ETH_HDR_LEN, 64);
  return ETH_HDR_LEN + ARP_LEN;
}

static size_t ping_frame(uint8_t *buf, cpb_ip4_t dst, bool fragment) {
  struct eth_repr e = {.ethertype = ETHERTYPE_IPV4};
  memcpy(e.dst, OUR_MAC, 6);
  memcpy(e.src, PEER_MAC, 6);
  eth_emit(&e, buf, 128);
  static const uint8_t data[] = "0123456789abcdef0123456789abcdef0123456789abcdef";
  struct icmp_repr ic = {.type = ICMP_ECHO_REQUEST, .ident = 0x1234, .seqno = 7, .data = data, .data_len = 48};
  int n = icmp_emit(&ic, buf + 34, 128);
  struct ipv4_repr ip = {.src = IP(10, 77, 0, 2), .dst = dst, .proto = IPPROTO_ICMP_, .ttl = 63, .payload_len = (uint16_t)n};
  ipv4_emit(&ip, buf + ETH_HDR_LEN, 128);
  if (fragment) { /* set MF and fix the header checksum */
    buf[ETH_HDR_LEN + 6] |= 0x20;
    buf[ETH_HDR_LEN + 10] = buf[ETH_HDR_LEN + 11] = 0;
    cpb_put_be16(buf + ETH_HDR_LEN + 10, csum_fold(csum_add(0, buf + ETH_HDR_LEN, 20)));
  }
  return 34 + (size_t)n;
}

TEST(stack_answers_arp_for_its_address_only) {
  struct cpb_stack s;
  setup(&s);
  uint8_t f[64];
  cpb_stack_input(&s, f, arp_frame(f, ARP_OP_REQUEST, BCAST, IP(10, 77, 1, 1), IP(10, 77, 1, 2)), 1000);
  cpb_stack_flush(&s);
  CHECK_EQ(nsent, 0); /* the kernel's address, not ours */
  cpb_stack_input(&s, f, arp_frame(f, ARP_OP_REQUEST, BCAST, IP(10, 77, 1, 1), IP(10, 77, 1, 10)), 1000);
  cpb_stack_flush(&s);
  REQUIRE(nsent == 1);
  struct eth_repr e;
  const uint8_t *p;
  size_t plen;
  REQUIRE(eth_parse(sent[0], sent_len[0], &e, &p, &plen) == 0);
  CHECK(memcmp(e.dst, PEER_MAC, 6) == 0);
  CHECK_EQ(e.ethertype, ETHERTYPE_ARP);
  struct arp_repr a;
  REQUIRE(arp_parse(p, plen, &a) == 0);
  CHECK_EQ(a.op, ARP_OP_REPLY);
  CHECK_EQ(a.spa, IP(10, 77, 1, 10));
  CHECK(memcmp(a.sha, OUR_MAC, 6) == 0);
  CHECK_EQ(a.tpa, IP(10, 77, 1, 1));
  CHECK_EQ(s.stats.arp_replies_sent, 1);
}

static void bare_tcp_segment(struct cpb_stack *s) {
  size_t cap;
  uint8_t *seg = s->ipout.begin(s->ipout.ctx, IP(10, 77, 1, 10), IP(10, 77, 0, 2), &cap);
  REQUIRE(seg != NULL);
  CHECK_EQ(cap, 1480);
  memset(seg, 0, 20);
  seg[12] = 5 << 4; /* a bare TCP header so the checksum pass has something valid */
  s->ipout.commit(s->ipout.ctx, 20);
}

static void check_tcp_frame_to_peer(int i) {
  struct eth_repr e;
  const uint8_t *p;
  size_t plen;
  REQUIRE(eth_parse(sent[i], sent_len[i], &e, &p, &plen) == 0);
  CHECK(memcmp(e.dst, PEER_MAC, 6) == 0);
  CHECK(memcmp(e.src, OUR_MAC, 6) == 0);
  struct ipv4_repr ip;
  const uint8_t *l4;
  REQUIRE(ipv4_parse(p, plen, &ip, &l4) == 0);
  CHECK_EQ(ip.dst, IP(10, 77, 0, 2));
  CHECK_EQ(ip.proto, IPPROTO_TCP_);
  CHECK_EQ(ip.payload_len, 20);
  CHECK(ip.dont_fragment);
}

/* Off-link destination with the gateway unknown: frames are parked, one ARP request goes out (rate
 * limited), and the parked frames leave with the right MAC as soon as the reply arrives. */
TEST(stack_parks_frames_until_next_hop_resolves) {
  struct cpb_stack s;
  setup(&s);
  s.now = 5000;
  bare_tcp_segment(&s);
  bare_tcp_segment(&s);
  cpb_stack_flush(&s);
  REQUIRE(nsent == 1);
  struct arp_repr a;
  REQUIRE(arp_parse(sent[0] + ETH_HDR_LEN, sent_len[0] - ETH_HDR_LEN, &a) == 0);
  CHECK_EQ(a.op, ARP_OP_REQUEST);
  CHECK_EQ(a.tpa, IP(10, 77, 1, 1));
  CHECK_EQ(s.stats.arp_parked, 2);
  uint8_t f[64];
  cpb_stack_input(&s, f, arp_frame(f, ARP_OP_REPLY, OUR_MAC, IP(10, 77, 1, 1), IP(10, 77, 1, 10)), 6000);
  cpb_stack_flush(&s);
  REQUIRE(nsent == 3);
  check_tcp_frame_to_peer(1);
  check_tcp_frame_to_peer(2);
  /* Resolved now: the next frame goes straight out. */
  bare_tcp_segment(&s);
  cpb_stack_flush(&s);
  REQUIRE(nsent == 4);
  check_tcp_frame_to_peer(3);
}

TEST(stack_parking_is_bounded) {
  struct cpb_stack s;
  setup(&s);
  s.now = 5000;
  size_t cap;
  for (int i = 0; i < CPB_ARP_PENDING; i++) {
    uint8_t *seg = s.ipout.begin(s.ipout.ctx, IP(10, 77, 1, 10), IP(10, 77, 0, 2), &cap);
    REQUIRE(seg != NULL);
    memset(seg, 0, 20);
    s.ipout.commit(s.ipout.ctx, 20);
  }
  CHECK(s.ipout.begin(s.ipout.ctx, IP(10, 77, 1, 10), IP(10, 77, 0, 2), &cap) == NULL);
  CHECK_EQ(s.stats.arp_unresolved_drops, 1);
}

TEST(stack_answers_ping_and_counts_what_it_drops) {
  struct cpb_stack s;
  setup(&s);
  uint8_t f[64];
  cpb_stack_input(&s, f, arp_frame(f, ARP_OP_REQUEST, BCAST, IP(10, 77, 1, 1), IP(10, 77, 1, 10)), 1000);
  cpb_stack_flush(&s);
  nsent = 0;
  uint8_t pf[128];
  cpb_stack_input(&s, pf, ping_frame(pf, IP(10, 77, 1, 10), false), 2000);
  cpb_stack_flush(&s);
  REQUIRE(nsent == 1);
  const uint8_t *p, *l4;
  size_t plen;
  struct eth_repr e;
  struct ipv4_repr ip;
  struct icmp_repr ic;
  REQUIRE(eth_parse(sent[0], sent_len[0], &e, &p, &plen) == 0);
  REQUIRE(ipv4_parse(p, plen, &ip, &l4) == 0);
  CHECK_EQ(ip.dst, IP(10, 77, 0, 2));
  REQUIRE(icmp_parse(l4, ip.payload_len, &ic) == 0);
  CHECK_EQ(ic.type, ICMP_ECHO_REPLY);
  CHECK_EQ(ic.ident, 0x1234);
  CHECK_EQ(ic.seqno, 7);
  CHECK_EQ(ic.data_len, 48);

  nsent = 0;
  cpb_stack_input(&s, pf, ping_frame(pf, IP(10, 77, 1, 99), false), 3000);
  cpb_stack_input(&s, pf, ping_frame(pf, IP(10, 77, 1, 10), true), 3000);
  size_t n = ping_frame(pf, IP(10, 77, 1, 10), false);
  pf[ETH_HDR_LEN + 10] ^= 0x55; /* header checksum */
  cpb_stack_input(&s, pf, n, 3000);
  cpb_stack_input(&s, pf, 10, 3000); /* runt */
  cpb_stack_flush(&s);
  CHECK_EQ(nsent, 0);
  CHECK_EQ(s.stats.not_for_us, 1);
  CHECK_EQ(s.stats.ipv4_fragments_dropped, 1);
  CHECK_EQ(s.stats.ipv4_bad_checksum, 1);
  CHECK_EQ(s.stats.bad_frames, 1);
}
