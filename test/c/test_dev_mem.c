/* The mem: wire: frames cross intact and in order, faults are seeded and reproducible and occur at the
 * configured rates, the ring pushes back when full, a wire has exactly two ends, the eventfd wakes a
 * sleeping receiver, and two threads move a million frames over the SPSC rings without loss. */
#include <poll.h>
#include <pthread.h>
#include <sched.h>

#include "dev/dev.h"
#include "t.h"

static struct cpb_dev *open_ok(const char *uri) {
  char err[256] = "";
  struct cpb_dev *d = NULL;
  int rc = cpb_dev_open(&d, uri, err, sizeof(err));
  if (rc) fprintf(stderr, "  open %s: %d %s\n", uri, rc, err);
  return rc ? NULL : d;
}

/* A frame whose payload is a pure function of (seq, len), so the receiver can check every byte. */
static uint32_t make_frame(uint8_t *buf, uint32_t seq, uint32_t len) {
  memset(buf, 0xff, 6);
  memcpy(buf + 6, "\x02\x00\x00\x00\x00\x09", 6);
  buf[12] = 0x88, buf[13] = 0xb5; /* local experimental ethertype */
  cpb_put_be32(buf + 14, seq);
  cpb_put_be32(buf + 18, len);
  for (uint32_t i = 22; i < len; i++) buf[i] = (uint8_t)(seq * 31 + i);
  return len;
}

static bool frame_ok(const struct cpb_frame *f, uint32_t *seq) {
  if (f->len < 22 || cpb_get_be32(f->data + 18) != f->len) return false;
  *seq = cpb_get_be32(f->data + 14);
  for (uint32_t i = 22; i < f->len; i++)
    if (f->data[i] != (uint8_t)(*seq * 31 + i)) return false;
  return true;
}

static int send_one(struct cpb_dev *d, uint32_t seq, uint32_t len, cpb_time_t now) {
  uint8_t buf[CPB_FRAME_MAX];
  struct cpb_frame f = {buf, make_frame(buf, seq, len), 0};
  return d->ops->tx_burst(d, &f, 1, now);
}

TEST(frames_pass_both_ways_intact) {
  struct cpb_dev *a = open_ok("mem:both"), *b = open_ok("mem:both");
  REQUIRE(a && b);
  const uint32_t lens[] = {60, 64, 100, 1514, 2047, CPB_FRAME_MAX};
  for (int dir = 0; dir < 2; dir++) {
    struct cpb_dev *tx = dir ? b : a, *rx = dir ? a : b;
    for (uint32_t i = 0; i < CPB_ARRAY_LEN(lens); i++) CHECK_EQ(send_one(tx, i, lens[i], 0), 1);
    struct cpb_frame fr[CPB_BURST];
    int n = rx->ops->rx_burst(rx, fr, CPB_BURST, 0);
    CHECK_EQ(n, (int)CPB_ARRAY_LEN(lens));
    for (int i = 0; i < n; i++) {
      uint32_t seq = 99;
      CHECK(frame_ok(&fr[i], &seq));
      CHECK_EQ(seq, i);
      CHECK_EQ(fr[i].len, lens[i]);
    }
    rx->ops->rx_release(rx, fr, n);
    CHECK_EQ(rx->ops->rx_burst(rx, fr, CPB_BURST, 0), 0);
    CHECK_EQ(tx->ops->rx_burst(tx, fr, CPB_BURST, 0), 0); /* nothing echoes back */
  }
  /* Oversize frames are refused and counted, the frames around them still go. */
  uint8_t big[CPB_FRAME_MAX + 1] = {0};
  struct cpb_frame three[3] = {{big, 60, 0}, {big, CPB_FRAME_MAX + 1, 0}, {big, 60, 0}};
  CHECK_EQ(a->ops->tx_burst(a, three, 3, 0), 3);
  struct cpb_dev_stats st;
  a->ops->get_stats(a, &st);
  CHECK_EQ(st.tx_dropped, 1);
  CHECK_EQ(st.tx_frames, CPB_ARRAY_LEN(lens) + 2);
  b->ops->get_stats(b, &st);
  CHECK_EQ(st.rx_frames, CPB_ARRAY_LEN(lens));

  uint8_t ma[6], mb[6];
  a->ops->get_mac(a, ma);
  b->ops->get_mac(b, mb);
  CHECK(memcmp(ma, mb, 6) != 0);
  CHECK_EQ(ma[0] & 3, 2); /* locally administered unicast */
  CHECK_EQ(mb[0] & 3, 2);
  a->ops->close(a);
  b->ops->close(b);

  struct cpb_dev *c = open_ok("mem:macs?mac=02:00:00:00:00:01");
  REQUIRE(c);
  c->ops->get_mac(c, ma);
  CHECK(!memcmp(ma, "\x02\x00\x00\x00\x00\x01", 6));
  c->ops->close(c);
}

TEST(order_kept_without_faults) {
  struct cpb_dev *a = open_ok("mem:order"), *b = open_ok("mem:order");
  REQUIRE(a && b);
  uint8_t bufs[CPB_BURST][256];
  struct cpb_frame out[CPB_BURST], in[CPB_BURST];
  uint32_t next_tx = 0, next_rx = 0;
  for (int round = 0; round < 200; round++) {
    int k = 1 + round % CPB_BURST;
    for (int i = 0; i < k; i++) out[i] = (struct cpb_frame){bufs[i], make_frame(bufs[i], next_tx + (uint32_t)i, 60 + (uint32_t)i), 0};
    int sent = a->ops->tx_burst(a, out, k, (cpb_time_t)round);
    CHECK_EQ(sent, k);
    next_tx += (uint32_t)sent;
    int n;
    while ((n = b->ops->rx_burst(b, in, 7, (cpb_time_t)round)) > 0) {
      for (int i = 0; i < n; i++) {
        uint32_t seq;
        CHECK(frame_ok(&in[i], &seq));
        CHECK_EQ(seq, next_rx);
        next_rx++;
      }
      b->ops->rx_release(b, in, n);
    }
  }
  CHECK_EQ(next_rx, next_tx);
  a->ops->close(a);
  b->ops->close(b);
}

/* Sends `count` frames from a to b (draining as it goes, clock stepping 10 µs per burst) and records
 * what arrives: the sequence numbers in arrival order and whether each frame was intact. */
struct trace {
  uint32_t n;
  uint32_t seq[12000];
  bool intact[12000];
  struct cpb_dev_stats tx;
};

static void run_trace(const char *uri, uint32_t count, struct trace *t) {
  memset(t, 0, sizeof(*t));
  struct cpb_dev *a = open_ok(uri), *b = open_ok(uri);
  if (!a || !b) return;
  uint8_t bufs[32][128];
  struct cpb_frame out[32], in[CPB_BURST];
  cpb_time_t now = 0;
  for (uint32_t s = 0; s < count || a->ops->next_deadline(a) != UINT64_MAX ||
                       b->ops->next_deadline(b) != UINT64_MAX;) {
    int k = 0;
    for (; k < 32 && s < count; k++, s++) out[k] = (struct cpb_frame){bufs[k], make_frame(bufs[k], s, 64 + s % 64), 0};
    if (k) CHECK_EQ(a->ops->tx_burst(a, out, k, now), k);
    a->ops->rx_burst(a, in, 0, now); /* lets a release a frame it holds back for reordering */
    int n;
    while ((n = b->ops->rx_burst(b, in, CPB_BURST, now)) > 0) {
      for (int i = 0; i < n && t->n < CPB_ARRAY_LEN(t->seq); i++) {
        t->intact[t->n] = frame_ok(&in[i], &t->seq[t->n]);
        if (!t->intact[t->n]) t->seq[t->n] = cpb_get_be32(in[i].data + 14);
        t->n++;
      }
      b->ops->rx_release(b, in, n);
    }
    now += 10;
  }
  a->ops->get_stats(a, &t->tx);
  a->ops->close(a);
  b->ops->close(b);
}

TEST(same_seed_same_faults) {
  static struct trace t1, t2, t3;
  const char *u1 = "mem:seed?loss=0.1&dup=0.05&reorder=0.05&corrupt=0.02&delay_us=30&jitter_us=20&seed=7";
  const char *u2 = "mem:seed?loss=0.1&dup=0.05&reorder=0.05&corrupt=0.02&delay_us=30&jitter_us=20&seed=8";
  run_trace(u1, 10000, &t1);
  run_trace(u1, 10000, &t2);
  run_trace(u2, 10000, &t3);
  CHECK(t1.n > 8000);
  CHECK_EQ(t1.n, t2.n);
  CHECK(!memcmp(t1.seq, t2.seq, sizeof(t1.seq)));
  CHECK(!memcmp(t1.intact, t2.intact, sizeof(t1.intact)));
  CHECK(!memcmp(&t1.tx, &t2.tx, sizeof(t1.tx)));
  CHECK(t1.tx.injected_loss && t1.tx.injected_dup && t1.tx.injected_reorder && t1.tx.injected_corrupt &&
        t1.tx.injected_delay);
  CHECK(memcmp(t1.seq, t3.seq, sizeof(t1.seq)) != 0); /* another seed, another pattern */
}

static bool within(uint64_t got, double n, double p) {
  double dev = (double)got - n * p; /* within 5 standard deviations, without libm */
  bool ok = dev * dev <= 25 * n * p * (1 - p) + 1;
  if (!ok) fprintf(stderr, "  %llu not within 5 sd of %.1f\n", (unsigned long long)got, n * p);
  return ok;
}

TEST(fault_rates_within_tolerance) {
  const uint32_t N = 100000;
  struct cpb_dev *a = open_ok("mem:rates?loss=0.05&dup=0.02&reorder=0.01&corrupt=0.001&seed=42");
  struct cpb_dev *b = open_ok("mem:rates");
  REQUIRE(a && b);
  static uint8_t seen[100000];
  memset(seen, 0, sizeof(seen));
  uint64_t arrived = 0, damaged = 0, late = 0, dups = 0;
  uint32_t max_seq = 0;
  bool any = false;
  uint8_t bufs[32][128];
  struct cpb_frame out[32], in[CPB_BURST];
  for (uint32_t s = 0; s < N;) {
    int k = 0;
    for (; k < 32 && s < N; k++, s++) out[k] = (struct cpb_frame){bufs[k], make_frame(bufs[k], s, 100), 0};
    CHECK_EQ(a->ops->tx_burst(a, out, k, s), k);
    int n;
    while ((n = b->ops->rx_burst(b, in, CPB_BURST, s)) > 0) {
      for (int i = 0; i < n; i++) {
        uint32_t seq;
        arrived++;
        if (!frame_ok(&in[i], &seq)) {
          damaged++;
          continue;
        }
        if (seq >= N) continue;
        if (seen[seq]++) dups++;
        if (any && seq < max_seq && seen[seq] == 1) late++;
        if (!any || seq > max_seq) max_seq = seq, any = true;
      }
      b->ops->rx_release(b, in, n);
    }
  }
  struct cpb_dev_stats st;
  a->ops->get_stats(a, &st);
  CHECK(within(st.injected_loss, N, 0.05));
  CHECK(within(st.injected_dup, N * 0.95, 0.02));
  CHECK(within(st.injected_reorder, N * 0.95, 0.01));
  CHECK(within(st.injected_corrupt, N * 0.95, 0.001));
  CHECK_EQ(st.tx_frames, N);
  /* What the receiver saw matches what the sender says it did (a held frame may still be held). */
  CHECK(arrived + 1 >= N - st.injected_loss + st.injected_dup && arrived <= N - st.injected_loss + st.injected_dup);
  CHECK(damaged >= st.injected_corrupt && damaged <= 2 * st.injected_corrupt); /* a dup of a corrupted one */
  CHECK(dups <= st.injected_dup);
  CHECK(late + 1 >= st.injected_reorder - damaged && late <= st.injected_reorder);
  a->ops->close(a);
  b->ops->close(b);
}

TEST(delay_and_jitter_hold_frames_until_due) {
  struct cpb_dev *a = open_ok("mem:delay?delay_us=200&jitter_us=50&seed=3"), *b = open_ok("mem:delay");
  REQUIRE(a && b);
  CHECK_EQ(b->ops->next_deadline(b), UINT64_MAX);
  for (uint32_t i = 0; i < 100; i++) CHECK_EQ(send_one(a, i, 80, 1000 + i), 1);
  struct cpb_frame in[CPB_BURST];
  CHECK_EQ(b->ops->rx_burst(b, in, CPB_BURST, 1000), 0);
  cpb_time_t due = b->ops->next_deadline(b);
  CHECK(due >= 1150 && due <= 1250);
  CHECK_EQ(b->ops->rx_burst(b, in, CPB_BURST, due - 1), 0);
  uint32_t next = 0;
  cpb_time_t now = due, prev = 0;
  while (next < 100 && now < 5000) {
    int n = b->ops->rx_burst(b, in, CPB_BURST, now);
    for (int i = 0; i < n; i++) {
      uint32_t seq;
      CHECK(frame_ok(&in[i], &seq));
      CHECK_EQ(seq, next); /* jitter never reorders */
      next++;
    }
    b->ops->rx_release(b, in, n);
    cpb_time_t d = b->ops->next_deadline(b);
    if (d == UINT64_MAX) break;
    CHECK(d > now && d >= prev);
    prev = d;
    now = d;
  }
  CHECK_EQ(next, 100);
  struct cpb_dev_stats st;
  a->ops->get_stats(a, &st);
  CHECK_EQ(st.injected_delay, 100);
  a->ops->close(a);
  b->ops->close(b);
}

TEST(ring_full_pushes_back) {
  struct cpb_dev *a = open_ok("mem:full"), *b = open_ok("mem:full");
  REQUIRE(a && b);
  uint8_t buf[64];
  struct cpb_frame out[CPB_BURST];
  uint32_t accepted = 0, offered = 0;
  for (int r = 0; r < 80; r++) {
    for (int i = 0; i < CPB_BURST; i++) out[i] = (struct cpb_frame){buf, make_frame(buf, 0, 64), 0};
    int n = a->ops->tx_burst(a, out, CPB_BURST, 0);
    CHECK(n >= 0 && n <= CPB_BURST);
    accepted += (uint32_t)n;
    offered += CPB_BURST;
  }
  CHECK_EQ(accepted, 4096);
  struct cpb_dev_stats st;
  a->ops->get_stats(a, &st);
  CHECK_EQ(st.tx_dropped, offered - accepted);
  CHECK_EQ(st.tx_frames, 4096);
  uint32_t got = 0;
  struct cpb_frame in[CPB_BURST];
  int n;
  while ((n = b->ops->rx_burst(b, in, CPB_BURST, 0)) > 0) got += (uint32_t)n, b->ops->rx_release(b, in, n);
  CHECK_EQ(got, 4096);
  CHECK_EQ(a->ops->tx_burst(a, out, 1, 0), 1); /* room again */
  a->ops->close(a);
  b->ops->close(b);
}

TEST(a_wire_has_two_ends) {
  char err[256];
  struct cpb_dev *a = open_ok("mem:ends"), *b = open_ok("mem:ends"), *c = NULL;
  REQUIRE(a && b);
  CHECK_EQ(cpb_dev_open(&c, "mem:ends", err, sizeof(err)), -EBUSY);
  CHECK(strstr(err, "ends") != NULL);
  /* Frames sent to an end that is gone are dropped; a new end attaches in its place and starts clean. */
  CHECK_EQ(send_one(b, 1, 60, 0), 1);
  a->ops->close(a);
  CHECK_EQ(send_one(b, 2, 60, 0), 1);
  struct cpb_dev_stats st;
  b->ops->get_stats(b, &st);
  CHECK_EQ(st.tx_dropped, 1);
  c = open_ok("mem:ends");
  REQUIRE(c);
  struct cpb_frame in[4];
  CHECK_EQ(c->ops->rx_burst(c, in, 4, 0), 0);
  CHECK_EQ(send_one(b, 3, 60, 0), 1);
  uint32_t seq = 0;
  CHECK_EQ(c->ops->rx_burst(c, in, 4, 0), 1);
  CHECK(frame_ok(&in[0], &seq) && seq == 3);
  c->ops->rx_release(c, in, 1);
  CHECK_EQ(send_one(c, 4, 60, 0), 1);
  CHECK_EQ(b->ops->rx_burst(b, in, 4, 0), 1);
  b->ops->rx_release(b, in, 1);
  b->ops->close(b);
  c->ops->close(c);
}

TEST(bad_uris_explain_themselves) {
  char err[256];
  struct cpb_dev *d = NULL;
  CHECK_EQ(cpb_dev_open(&d, "carrier-pigeon:x", err, sizeof(err)), -ENODEV);
  CHECK(strstr(err, "mem:") != NULL);
  CHECK_EQ(cpb_dev_open(&d, "nocolon", err, sizeof(err)), -ENODEV);
  CHECK_EQ(cpb_dev_open(&d, "mem:", err, sizeof(err)), -EINVAL);
  CHECK_EQ(cpb_dev_open(&d, "mem:x?loss=2", err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "loss") != NULL);
  CHECK_EQ(cpb_dev_open(&d, "mem:x?color=red", err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "color") != NULL);
  CHECK_EQ(cpb_dev_open(&d, "mem:x?mac=zz", err, sizeof(err)), -EINVAL);
  CHECK_EQ(cpb_dev_open(&d, "mem:x?slots=1000", err, sizeof(err)), -EINVAL);
  CHECK(d == NULL);
#ifndef CPB_HAVE_XDP
  CHECK_EQ(cpb_dev_open(&d, "xdp:eth0", err, sizeof(err)), -ENOTSUP);
  CHECK(strstr(err, "libxdp") != NULL);
#endif
}

static bool readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

TEST(eventfd_wakes_only_a_sleeping_receiver) {
  struct cpb_dev *a = open_ok("mem:wake"), *b = open_ok("mem:wake");
  REQUIRE(a && b);
  int fd = b->ops->wait_fd(b);
  CHECK(fd >= 0);
  struct cpb_frame in[CPB_BURST];
  struct cpb_dev_stats st;
  /* The receiver has not gone idle yet: no syscall for these. */
  for (int i = 0; i < 10; i++) CHECK_EQ(send_one(a, (uint32_t)i, 60, 0), 1);
  a->ops->get_stats(a, &st);
  CHECK_EQ(st.wakeups, 0);
  CHECK(!readable(fd));
  CHECK_EQ(b->ops->rx_burst(b, in, CPB_BURST, 0), 10);
  b->ops->rx_release(b, in, 10);
  CHECK_EQ(b->ops->rx_burst(b, in, CPB_BURST, 0), 0); /* idle: armed */
  CHECK(!readable(fd));
  CHECK_EQ(send_one(a, 10, 60, 0), 1);
  CHECK_EQ(send_one(a, 11, 60, 0), 1);
  a->ops->get_stats(a, &st);
  CHECK_EQ(st.wakeups, 1); /* one wakeup for the first frame, none for the second */
  CHECK(readable(fd));
  CHECK_EQ(b->ops->rx_burst(b, in, CPB_BURST, 0), 2);
  CHECK(!readable(fd)); /* drained */
  b->ops->rx_release(b, in, 2);
  a->ops->close(a);
  b->ops->close(b);
}

/* ---- two threads, one million frames ------------------------------------------------------------ */

#define MANY 1000000u

struct pump {
  struct cpb_dev *dev;
  uint32_t done, bad, sleeps, timeouts, calls;
};

static void *sender(void *arg) {
  struct pump *p = arg;
  uint8_t bufs[CPB_BURST][128];
  struct cpb_frame out[CPB_BURST];
  uint32_t s = 0;
  while (s < MANY) {
    int k = 0;
    for (; k < CPB_BURST && s + (uint32_t)k < MANY; k++)
      out[k] = (struct cpb_frame){bufs[k], make_frame(bufs[k], s + (uint32_t)k, 60 + (s + (uint32_t)k) % 64), 0};
    int n = p->dev->ops->tx_burst(p->dev, out, k, 0);
    p->calls++;
    s += (uint32_t)n;
    if (n < k) sched_yield();
  }
  p->done = s;
  return NULL;
}

static void *receiver(void *arg) {
  struct pump *p = arg;
  struct cpb_frame in[CPB_BURST];
  uint32_t next = 0;
  while (next < MANY && p->timeouts < 3) {
    int n = p->dev->ops->rx_burst(p->dev, in, CPB_BURST, 0);
    if (n == 0) {
      struct pollfd pf = {p->dev->ops->wait_fd(p->dev), POLLIN, 0};
      p->sleeps++;
      if (poll(&pf, 1, 2000) == 0) p->timeouts++; /* only a lost wakeup would get here */
      continue;
    }
    for (int i = 0; i < n; i++) {
      uint32_t seq;
      if (!frame_ok(&in[i], &seq) || seq != next) p->bad++;
      next++;
    }
    p->dev->ops->rx_release(p->dev, in, n);
  }
  p->done = next;
  return NULL;
}

TEST(two_threads_move_a_million_frames) {
  struct pump tx = {open_ok("mem:pump"), 0, 0, 0, 0, 0}, rx = {open_ok("mem:pump"), 0, 0, 0, 0, 0};
  REQUIRE(tx.dev && rx.dev);
  pthread_t t1, t2;
  REQUIRE(pthread_create(&t2, NULL, receiver, &rx) == 0);
  REQUIRE(pthread_create(&t1, NULL, sender, &tx) == 0);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  CHECK_EQ(tx.done, MANY);
  CHECK_EQ(rx.done, MANY);
  CHECK_EQ(rx.bad, 0);
  CHECK_EQ(rx.timeouts, 0);
  struct cpb_dev_stats st;
  tx.dev->ops->get_stats(tx.dev, &st);
  CHECK(st.wakeups <= tx.calls); /* at most one syscall per burst, and only for an idle receiver */
  printf("  1M frames: %u tx bursts, %u receiver sleeps, %llu wakeups\n", tx.calls, rx.sleeps,
         (unsigned long long)st.wakeups);
  tx.dev->ops->close(tx.dev);
  rx.dev->ops->close(rx.dev);
}
