/* libFuzzer target for frame parsing through the whole input path: Ethernet, ARP, IPv4 (options,
 * fragments), ICMP and TCP with options, into a live stack that listens on port 80 and answers.
 *
 * Input: byte 0 holds flags (bit 0: repair the IPv4 header and the TCP/ICMP checksums so mutations get
 * past them; bit 1: the application accepts, echoes and closes), then frames as [u16 length LE][bytes]
 * (the rest of the input is one last frame when a length overruns it). Time advances 1-255 ms between
 * frames (taken from the length's high bits) and timers run, so retransmissions and expiry see the
 * state the frames left. Checks: no crash or sanitizer report, every frame the stack emits is well
 * formed (Ethernet + IPv4 that our own parser accepts), and after tcp_fini every arena slot and chunk
 * is back. Seeds: frames captured on the testbed (corpus/frame, see scripts/fuzz.sh --make-corpus). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "stack.h"
#include "tcp/tcp.h"
#include "wire/checksum.h"
#include "wire/eth.h"
#include "wire/ipv4.h"
#include "wire/tcp.h"

#define MS CPB_US_PER_MS
#define OUR_IP 0x0a4d010au  /* 10.77.1.10, as on the testbed's hostA */
#define VIP 0x0a4d0901u     /* 10.77.9.1 */
#define GW 0x0a4d0101u      /* 10.77.1.1 */
static const uint8_t OUR_MAC[6] = {0x02, 0xca, 0xfe, 0x00, 0x01, 0x0a};

static struct cpb_arena arena;
static struct cpb_stack stack;
static uint8_t buf[CPB_FRAME_MAX + 64];
static uint8_t io[16384];

static void check_out(void *ctx, struct cpb_frame *frames, int n) {
  (void)ctx;
  for (int i = 0; i < n; i++) {
    struct eth_repr e;
    const uint8_t *p;
    size_t plen;
    if (frames[i].len > CPB_FRAME_MAX || eth_parse(frames[i].data, frames[i].len, &e, &p, &plen) != 0) abort();
    if (e.ethertype == ETHERTYPE_IPV4) {
      struct ipv4_repr ip;
      const uint8_t *pl;
      if (ipv4_parse(p, plen, &ip, &pl) != 0) abort(); /* we emitted a header we would refuse */
      if (ip.proto == IPPROTO_TCP_) {
        struct tcp_repr r;
        if (tcp_parse(pl, ip.payload_len, ip.src, ip.dst, true, &r) != 0) abort();
      }
    }
  }
}

static void repair(uint8_t *f, size_t len) {
  if (len < ETH_HDR_LEN + IPV4_MIN_HDR_LEN || f[12] != 0x08 || f[13] != 0x00) return;
  uint8_t *ip = f + ETH_HDR_LEN;
  size_t room = len - ETH_HDR_LEN;
  size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
  if ((ip[0] >> 4) != 4 || ihl < IPV4_MIN_HDR_LEN || ihl > room) return;
  size_t total = ((size_t)ip[2] << 8) | ip[3];
  if (total < ihl || total > room) total = room, ip[2] = (uint8_t)(total >> 8), ip[3] = (uint8_t)total;
  ip[10] = ip[11] = 0;
  uint16_t c = csum_fold(csum_add(0, ip, ihl));
  ip[10] = (uint8_t)(c >> 8);
  ip[11] = (uint8_t)c;
  cpb_ip4_t src = cpb_get_be32(ip + 12), dst = cpb_get_be32(ip + 16);
  uint8_t *l4 = ip + ihl;
  size_t l4len = total - ihl;
  if (ip[9] == IPPROTO_TCP_ && l4len >= 20) {
    tcp_fill_checksum(l4, l4len, src, dst);
  } else if (ip[9] == IPPROTO_ICMP_ && l4len >= 4) {
    l4[2] = l4[3] = 0;
    uint16_t ic = csum_fold(csum_add(0, l4, l4len));
    l4[2] = (uint8_t)(ic >> 8);
    l4[3] = (uint8_t)ic;
  }
}

static void app_round(struct cpb_tcp *t, uint64_t lid, cpb_time_t now) {
  struct tcp_event ev;
  while (tcp_next_event(t, &ev)) {
    if (ev.type == TCP_EV_CLOSED) (void)tcp_close(t, ev.id, now);
  }
  uint64_t fid;
  while (tcp_accept(t, lid, &fid) == 0) {
    long n = tcp_recv(t, fid, io, sizeof(io), now);
    if (n > 0) (void)tcp_send(t, fid, io, (size_t)n, now);
    if (n == 0 || (fid & 1)) (void)tcp_shutdown(t, fid, now);
    (void)tcp_close(t, fid, now); /* the flow lives on as an orphan and finishes by itself */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!arena.base) {
    struct cpb_arena_config ac = {.slots = 16, .chunks = 512};
    if (cpb_arena_create(&arena, &ac) != 0) abort();
  }
  if (size < 1) return 0;
  uint8_t flags = data[0];
  data++, size--;
  struct cpb_stack_config sc = {.ip = OUR_IP, .prefix_len = 24, .gateway = GW, .vip = VIP, .mtu = 1500};
  memcpy(sc.mac, OUR_MAC, 6);
  cpb_stack_init(&stack, &sc, check_out, NULL);
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = OUR_IP;
  c.max_flows = 12;
  c.default_backlog = 4;
  c.hold_segs = 8;
  c.rcvbuf = c.sndbuf = 64 * 1024;
  struct cpb_tcp *t = malloc(tcp_sizeof());
  if (!t || tcp_init(t, &arena, &c, &stack.ipout) != 0) abort();
  cpb_stack_attach_tcp(&stack, t);
  uint64_t lid;
  if (tcp_listen(t, 80, 0, &lid) != 0) abort();
  cpb_time_t now = 1000 * CPB_US_PER_S;
  cpb_stack_announce(&stack, now);
  int frames = 0;
  while (size > 0 && frames++ < 256) {
    size_t len = size;
    unsigned gap = 1;
    if (size >= 2) {
      uint16_t hdr = (uint16_t)(data[0] | data[1] << 8);
      len = hdr & 0x0fff;
      gap = 1 + (hdr >> 12) * 16;
      data += 2, size -= 2;
      if (len > size) len = size;
    }
    if (len > CPB_FRAME_MAX) len = CPB_FRAME_MAX;
    memcpy(buf, data, len);
    if (flags & 1) repair(buf, len);
    cpb_stack_input(&stack, buf, len, now);
    if (flags & 2) app_round(t, lid, now);
    now += gap * MS;
    cpb_stack_poll(&stack, now);
    data += len, size -= len;
  }
  /* Let every timer run out: retransmissions, TIME_WAIT, orphans. */
  for (int i = 0; i < 8; i++) {
    now += 40 * CPB_US_PER_S;
    if (flags & 2) app_round(t, lid, now);
    cpb_stack_poll(&stack, now);
  }
  tcp_fini(t);
  free(t);
  if (arena.hdr->slots_used || arena.hdr->chunks_used) abort();
  return 0;
}
