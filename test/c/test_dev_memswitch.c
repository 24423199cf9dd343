/* The mem: switch (ports > 2): ports are taken in order or by port=K, unknown and broadcast frames are
 * flooded, MACs are learned from senders, a steered TCP flow goes to its port with the destination MAC
 * rewritten, removing the entry restores MAC forwarding, and the table counts its entries. */
#include <pthread.h>
#include <stdatomic.h>

#include "dev/dev.h"
#include "t.h"

static struct cpb_dev *sw_open(const char *uri) {
  char err[256] = "";
  struct cpb_dev *d = NULL;
  int rc = cpb_dev_open(&d, uri, err, sizeof(err));
  if (rc) fprintf(stderr, "  open %s: %d %s\n", uri, rc, err);
  return rc ? NULL : d;
}

static const uint8_t MAC_A[6] = {2, 0, 0, 0, 0, 0xa}, MAC_B[6] = {2, 0, 0, 0, 0, 0xb}, MAC_C[6] = {2, 0, 0, 0, 0, 0xc};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* An Ethernet + IPv4 + TCP header from src:sport to dst:dport; the frame's last byte is `tag`. */
static uint32_t tcp_frame(uint8_t *buf, const uint8_t *dmac, const uint8_t *smac, cpb_ip4_t src, uint16_t sport,
                          cpb_ip4_t dst, uint16_t dport, uint8_t tag) {
  memset(buf, 0, 64);
  memcpy(buf, dmac, 6);
  memcpy(buf + 6, smac, 6);
  buf[12] = 0x08, buf[13] = 0x00;
  buf[14] = 0x45, buf[14 + 9] = 6;
  cpb_put_be32(buf + 14 + 12, src);
  cpb_put_be32(buf + 14 + 16, dst);
  cpb_put_be16(buf + 34, sport);
  cpb_put_be16(buf + 36, dport);
  buf[63] = tag;
  return 64;
}

static int send_frame(struct cpb_dev *d, uint8_t *buf, uint32_t len) {
  struct cpb_frame f = {buf, len, 0};
  return d->ops->tx_burst(d, &f, 1, 0);
}

/* Receives what is waiting on d; returns the count, the last frame's tag and its destination MAC. */
static int recv_all(struct cpb_dev *d, uint8_t *tag, uint8_t mac[6]) {
  struct cpb_frame in[CPB_BURST];
  int n = d->ops->rx_burst(d, in, CPB_BURST, 0);
  if (n > 0) {
    *tag = in[n - 1].data[in[n - 1].len - 1];
    memcpy(mac, in[n - 1].data, 6);
  }
  d->ops->rx_release(d, in, n);
  return n;
}

TEST(ports_are_taken_in_order_or_by_number) {
  char err[256];
  struct cpb_dev *a = sw_open("mem:swports?ports=3&port=2"), *b = sw_open("mem:swports"), *c = sw_open("mem:swports"), *x = NULL;
  REQUIRE(a && b && c);
  CHECK_EQ(cpb_dev_open(&x, "mem:swports", err, sizeof(err)), -EBUSY);
  CHECK(strstr(err, "port") != NULL);
  CHECK_EQ(cpb_dev_open(&x, "mem:swports?port=1", err, sizeof(err)), -EBUSY);
  CHECK_EQ(cpb_dev_open(&x, "mem:swports?port=5", err, sizeof(err)), -EINVAL);
  CHECK_EQ(cpb_dev_open(&x, "mem:swports2?ports=17", err, sizeof(err)), -EINVAL);
  b->ops->close(b);
  x = sw_open("mem:swports?port=0");
  CHECK(x != NULL);
  if (x) x->ops->close(x);
  a->ops->close(a);
  c->ops->close(c);
}

TEST(flood_learn_steer_and_unsteer) {
  struct cpb_dev *a = sw_open("mem:sw?ports=3"), *b = sw_open("mem:sw"), *c = sw_open("mem:sw");
  REQUIRE(a && b && c);
  uint8_t buf[64], tag = 0, mac[6];
  const cpb_ip4_t CLI = 0x0a000001, VIP = 0x0a000064;
  /* B and C announce themselves (broadcast): both floods reach everyone else. */
  CHECK_EQ(send_frame(b, buf, tcp_frame(buf, BCAST, MAC_B, VIP, 80, CLI, 5000, 1)), 1);
  CHECK_EQ(send_frame(c, buf, tcp_frame(buf, BCAST, MAC_C, VIP, 80, CLI, 5000, 2)), 1);
  CHECK_EQ(recv_all(a, &tag, mac), 2);
  CHECK_EQ(recv_all(b, &tag, mac), 1);
  CHECK_EQ(tag, 2);
  CHECK_EQ(recv_all(c, &tag, mac), 1);
  CHECK_EQ(tag, 1);
  /* A frame to B's MAC goes to B alone (learned). */
  CHECK_EQ(send_frame(a, buf, tcp_frame(buf, MAC_B, MAC_A, CLI, 5000, VIP, 80, 3)), 1);
  CHECK_EQ(recv_all(b, &tag, mac), 1);
  CHECK_EQ(tag, 3);
  CHECK_EQ(recv_all(c, &tag, mac), 0);
  /* Steered to C: the same frame goes to C, addressed to C's MAC; other flows still go by MAC. */
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5000, VIP, 80, 2), 1);
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5001, VIP, 80, 1), 2);
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5000, VIP, 80, 2), 2); /* idempotent */
  CHECK_EQ(send_frame(a, buf, tcp_frame(buf, MAC_B, MAC_A, CLI, 5000, VIP, 80, 4)), 1);
  CHECK_EQ(recv_all(b, &tag, mac), 0);
  CHECK_EQ(recv_all(c, &tag, mac), 1);
  CHECK_EQ(tag, 4);
  CHECK(memcmp(mac, MAC_C, 6) == 0);
  CHECK_EQ(send_frame(a, buf, tcp_frame(buf, MAC_B, MAC_A, CLI, 5002, VIP, 80, 5)), 1);
  CHECK_EQ(recv_all(b, &tag, mac), 1);
  CHECK_EQ(tag, 5);
  /* Removing entries restores MAC forwarding; removing a missing one changes nothing. */
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5000, VIP, 80, -1), 1);
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5000, VIP, 80, -1), 1);
  CHECK_EQ(cpb_mem_steer("sw", CLI, 5001, VIP, 80, -1), 0);
  CHECK_EQ(send_frame(a, buf, tcp_frame(buf, MAC_B, MAC_A, CLI, 5000, VIP, 80, 6)), 1);
  CHECK_EQ(recv_all(b, &tag, mac), 1);
  CHECK_EQ(recv_all(c, &tag, mac), 0);
  CHECK_EQ(cpb_mem_steer("nosuchwire", CLI, 1, VIP, 2, 0), -ENOENT);
  CHECK_EQ(cpb_mem_steer("sw", CLI, 1, VIP, 2, 3), -EINVAL);
  a->ops->close(a);
  b->ops->close(b);
  c->ops->close(c);
}

TEST(many_entries_in_and_out) {
  struct cpb_dev *a = sw_open("mem:swmany?ports=3");
  REQUIRE(a);
  const cpb_ip4_t CLI = 0x0a000001, VIP = 0x0a000064;
  int n = 0, rc = 0;
  for (uint16_t p = 1; (rc = cpb_mem_steer("swmany", CLI, p, VIP, 80, p % 3)) > 0; p++) n = rc;
  CHECK_EQ(rc, -ENOSPC);
  CHECK(n >= 1000);
  /* Remove in a different order than inserted; every one is found (backward-shift keeps runs whole). */
  int total = n;
  for (int p = total; p >= 1; p -= 2) CHECK_EQ(cpb_mem_steer("swmany", CLI, (uint16_t)p, VIP, 80, -1), --n);
  for (int p = 1 + (total & 1); p <= total; p += 2) CHECK_EQ(cpb_mem_steer("swmany", CLI, (uint16_t)p, VIP, 80, -1), --n);
  CHECK_EQ(n, 0);
  a->ops->close(a);
}

TEST(cable_has_no_steering) {
  struct cpb_dev *a = sw_open("mem:swcable"), *b = sw_open("mem:swcable");
  REQUIRE(a && b);
  CHECK_EQ(cpb_mem_steer("swcable", 1, 2, 3, 4, 0), -EINVAL);
  a->ops->close(a);
  b->ops->close(b);
}

/* cpb_mem_steer_lookup reads back what cpb_mem_steer wrote: the port while steered, -ENOENT once the entry
 * is removed (or for a flow never steered, including the reverse direction), -ENODEV without a switch. */
TEST(steer_lookup_reads_back_the_table) {
  struct cpb_dev *a = sw_open("mem:swlookup?ports=3"), *x = sw_open("mem:swlookupcable");
  REQUIRE(a && x);
  const cpb_ip4_t CLI = 0x0a000001, VIP = 0x0a000064;
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5000, VIP, 80), -ENOENT);
  CHECK_EQ(cpb_mem_steer("swlookup", CLI, 5000, VIP, 80, 2), 1);
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5000, VIP, 80), 2);
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", VIP, 80, CLI, 5000), -ENOENT);
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5001, VIP, 80), -ENOENT);
  CHECK_EQ(cpb_mem_steer("swlookup", CLI, 5000, VIP, 80, 0), 1); /* moved to port 0 */
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5000, VIP, 80), 0);
  /* Entries moved back by removals (backward shift) are still found. */
  for (uint16_t p = 1; p <= 300; p++) CHECK_EQ(cpb_mem_steer("swlookup", CLI, p, VIP, 80, p % 3), 1 + p);
  for (uint16_t p = 1; p <= 300; p += 2) CHECK(cpb_mem_steer("swlookup", CLI, p, VIP, 80, -1) >= 0);
  for (uint16_t p = 1; p <= 300; p++)
    CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, p, VIP, 80), p & 1 ? -ENOENT : p % 3);
  CHECK_EQ(cpb_mem_steer("swlookup", CLI, 5000, VIP, 80, -1), 150);
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5000, VIP, 80), -ENOENT);
  CHECK_EQ(cpb_mem_steer_lookup("nosuchwire", CLI, 5000, VIP, 80), -ENODEV);
  CHECK_EQ(cpb_mem_steer_lookup("swlookupcable", CLI, 5000, VIP, 80), -ENODEV);
  a->ops->close(a);
  x->ops->close(x);
  CHECK_EQ(cpb_mem_steer_lookup("swlookup", CLI, 5000, VIP, 80), -ENODEV); /* freed with its last port */
}

/* Regression: while the steering table is being rewritten all the time (other flows come and go), a
 * steered flow's frames never go by their MAC to the wrong port: they reach the steered port or, if a
 * writer kept the table busy too long, are dropped (TCP retransmits those; a wrong port would reset). */
struct churn { atomic_bool stop; long writes; };

static void *churn_main(void *arg) {
  struct churn *c = arg;
  for (uint16_t p = 1; !atomic_load(&c->stop); p = (uint16_t)(p % 2000 + 1)) {
    cpb_mem_steer("swchurn", 0x0a000002, p, 0x0a000064, 80, p % 3);
    cpb_mem_steer("swchurn", 0x0a000002, (uint16_t)(p + 2000), 0x0a000064, 80, -1);
    c->writes++;
  }
  return NULL;
}

TEST(steered_frames_never_take_the_mac_path_during_table_writes) {
  struct cpb_dev *a = sw_open("mem:swchurn?ports=3&slots=8192"), *b = sw_open("mem:swchurn"), *c = sw_open("mem:swchurn");
  REQUIRE(a && b && c);
  uint8_t buf[64], tag = 0, mac[6];
  const cpb_ip4_t CLI = 0x0a000001, VIP = 0x0a000064;
  CHECK_EQ(send_frame(b, buf, tcp_frame(buf, BCAST, MAC_B, VIP, 80, CLI, 5000, 0)), 1); /* learn B and C */
  CHECK_EQ(send_frame(c, buf, tcp_frame(buf, BCAST, MAC_C, VIP, 80, CLI, 5000, 0)), 1);
  recv_all(a, &tag, mac);
  recv_all(b, &tag, mac);
  recv_all(c, &tag, mac);
  CHECK(cpb_mem_steer("swchurn", CLI, 5000, VIP, 80, 2) > 0);
  struct churn ch = {.writes = 0};
  atomic_init(&ch.stop, false);
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, churn_main, &ch) == 0);
  int at_b = 0, at_c = 0;
  for (int round = 0; round < 200; round++) {
    for (int i = 0; i < 32; i++) send_frame(a, buf, tcp_frame(buf, MAC_B, MAC_A, CLI, 5000, VIP, 80, 1));
    at_b += recv_all(b, &tag, mac);
    at_c += recv_all(c, &tag, mac);
  }
  atomic_store(&ch.stop, true);
  pthread_join(t, NULL);
  struct cpb_dev_stats st;
  a->ops->get_stats(a, &st);
  CHECK_EQ(at_b, 0);
  CHECK_EQ((uint64_t)at_c + st.tx_dropped, 200u * 32u);
  CHECK(ch.writes > 0);
  a->ops->close(a);
  b->ops->close(b);
  c->ops->close(c);
}
