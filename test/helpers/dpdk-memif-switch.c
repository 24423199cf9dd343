/* A userspace Ethernet switch between memif ports, for the DPDK migration test: memif is point-to-point,
 * so three runtimes that must reach each other (a client, a migration source and its target) hang off a
 * switch, the way VPP or OVS-DPDK would connect them in production. No kernel in the data path.
 *
 *   dpdk-memif-switch SOCKET...   one memif server port per socket (runtimes connect as role=client)
 *
 * Forwarding: by destination MAC (learned from source MACs), flooding broadcasts and unknown MACs. On top,
 * TCP flows are learned like MACs: a segment A:a -> B:b sent from port P says frames B:b -> A:a belong to P
 * (their destination MAC is rewritten to P's). After a migration the target is the one sending the flow's
 * segments, so the flow follows it — the switch's version of the balancer's redirect table, without one.
 * It uses the engine's own dpdk: backend (native/dev/dpdk.c) for its ports. Stops on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dev/dev.h"

#define MAX_PORTS 8
#define MACS 64
#define FLOWS 4096

struct mac_entry { uint8_t mac[6]; int port; bool used; };
struct flow_entry { uint32_t a, b; uint16_t pa, pb; int port; bool used; };

static struct cpb_dev *ports[MAX_PORTS];
static uint8_t port_mac[MAX_PORTS][6];
static bool port_mac_known[MAX_PORTS];
static struct mac_entry macs[MACS];
static struct flow_entry flows[FLOWS];
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static void learn_mac(const uint8_t *mac, int port) {
  if (mac[0] & 1) return;
  memcpy(port_mac[port], mac, 6);
  port_mac_known[port] = true;
  int free_slot = -1;
  for (int i = 0; i < MACS; i++) {
    if (macs[i].used && !memcmp(macs[i].mac, mac, 6)) { macs[i].port = port; return; }
    if (!macs[i].used && free_slot < 0) free_slot = i;
  }
  if (free_slot >= 0) macs[free_slot] = (struct mac_entry){.port = port, .used = true}, memcpy(macs[free_slot].mac, mac, 6);
}

static int mac_port(const uint8_t *mac) {
  for (int i = 0; i < MACS; i++) if (macs[i].used && !memcmp(macs[i].mac, mac, 6)) return macs[i].port;
  return -1;
}

static uint32_t flow_hash(uint32_t a, uint16_t pa, uint32_t b, uint16_t pb) {
  uint64_t h = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)pa << 16 | pb) * 0xbf58476d1ce4e5b9ULL;
  return (uint32_t)(h >> 40) % FLOWS;
}

/* The slot for the flow whose frames travel from a:pa to b:pb (linear probing; the table only grows). */
static struct flow_entry *flow_slot(uint32_t a, uint16_t pa, uint32_t b, uint16_t pb, bool create) {
  uint32_t h = flow_hash(a, pa, b, pb);
  for (uint32_t i = 0; i < FLOWS; i++) {
    struct flow_entry *f = &flows[(h + i) % FLOWS];
    if (f->used && f->a == a && f->b == b && f->pa == pa && f->pb == pb) return f;
    if (!f->used) {
      if (!create) return NULL;
      *f = (struct flow_entry){.a = a, .b = b, .pa = pa, .pb = pb, .port = -1, .used = true};
      return f;
    }
  }
  return NULL;
}

/* IPv4/TCP 4-tuple of an Ethernet frame; false for anything else. */
static bool tcp_tuple(const uint8_t *p, uint32_t len, uint32_t *src, uint16_t *sport, uint32_t *dst, uint16_t *dport) {
  if (len < 14 + 20 + 4 || cpb_get_be16(p + 12) != 0x0800 || p[14 + 9] != 6) return false;
  uint32_t ihl = (uint32_t)(p[14] & 0xf) * 4;
  if (ihl < 20 || len < 14 + ihl + 4) return false;
  *src = cpb_get_be32(p + 14 + 12);
  *dst = cpb_get_be32(p + 14 + 16);
  *sport = cpb_get_be16(p + 14 + ihl);
  *dport = cpb_get_be16(p + 14 + ihl + 2);
  return true;
}

static void send_to(int port, struct cpb_frame *f) {
  if (ports[port]) ports[port]->ops->tx_burst(ports[port], f, 1, 0);
}

static void forward(int in, int nports, struct cpb_frame *f) {
  uint8_t *p = f->data;
  if (f->len < 14) return;
  learn_mac(p + 6, in);
  uint32_t src, dst;
  uint16_t sport, dport;
  if (tcp_tuple(p, f->len, &src, &sport, &dst, &dport)) {
    struct flow_entry *back = flow_slot(dst, dport, src, sport, true); /* frames coming back belong to `in` */
    if (back) back->port = in;
    struct flow_entry *fwd = flow_slot(src, sport, dst, dport, false);
    if (fwd && fwd->port >= 0 && fwd->port != in && port_mac_known[fwd->port]) {
      memcpy(p, port_mac[fwd->port], 6);
      send_to(fwd->port, f);
      return;
    }
  }
  int out = (p[0] & 1) ? -1 : mac_port(p);
  if (out == in) return;
  if (out >= 0) {
    send_to(out, f);
    return;
  }
  for (int k = 0; k < nports; k++) if (k != in) send_to(k, f);
}

int main(int argc, char **argv) {
  int n = argc - 1;
  if (n < 2 || n > MAX_PORTS) {
    fprintf(stderr, "usage: %s SOCKET SOCKET [SOCKET...] (2..%d memif server ports)\n", argv[0], MAX_PORTS);
    return 2;
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  for (int i = 0; i < n; i++) {
    char uri[600], err[600];
    snprintf(uri, sizeof(uri), "net_memif%d,role=server,socket=%s,id=0", i, argv[i + 1]);
    int rc = cpb_dev_dpdk_ops.open(&ports[i], uri, err, sizeof(err));
    if (rc) {
      fprintf(stderr, "switch: %s\n", err);
      for (int k = 0; k < i; k++) ports[k]->ops->close(ports[k]);
      return 1;
    }
    ports[i]->ops = &cpb_dev_dpdk_ops;
  }
  printf("{\"event\":\"ready\",\"ports\":%d}\n", n);
  fflush(stdout);
  struct cpb_frame rx[CPB_BURST];
  while (!stop) {
    int busy = 0;
    for (int i = 0; i < n; i++) {
      int got = ports[i]->ops->rx_burst(ports[i], rx, CPB_BURST, 0);
      for (int k = 0; k < got; k++) forward(i, n, &rx[k]);
      if (got) ports[i]->ops->rx_release(ports[i], rx, got);
      busy += got;
    }
    if (!busy) usleep(20); /* a test fixture on a shared 2-core box: do not spin */
  }
  for (int i = 0; i < n; i++) ports[i]->ops->close(ports[i]);
  return 0;
}
