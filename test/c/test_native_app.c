/* Native apps: the transforms on their own (sockperf framing split at every byte), then two engines on a
 * mem: wire, one serving a native echo or sockperf listener on its engine thread, the other driven from
 * the test thread as the addon drives it. Covers echo of 4 MB through a stalled reader (backpressure
 * with bounded memory in the app), close when the peer closes, and that the application still gets the
 * events of its own listeners while native ones are consumed by the engine. */
#include <stdatomic.h>
#include <time.h>

#include "apps/native.h"
#include "enginetest.h"
#include "t.h"

#define SRV_IP IP(10, 98, 0, 1)
#define CLI_IP IP(10, 98, 0, 2)

/* ---- the transforms ---- */

static void sp_header(uint8_t *p, uint64_t seq, uint16_t flags, uint32_t len) {
  cpb_put_be32(p, (uint32_t)(seq >> 32));
  cpb_put_be32(p + 4, (uint32_t)seq);
  cpb_put_be16(p + 8, flags);
  cpb_put_be32(p + 10, len);
}

/* Three messages: a 100-byte ping, a 40-byte message without pong request, a bare 14-byte ping. */
static size_t sp_stream(uint8_t *buf) {
  size_t o = 0;
  sp_header(buf + o, 7, 1 | 2, 100);
  for (int i = 14; i < 100; i++) buf[o + (size_t)i] = (uint8_t)i;
  o += 100;
  sp_header(buf + o, 8, 1 | 4, 40);
  memset(buf + o + 14, 0xee, 26);
  o += 40;
  sp_header(buf + o, 9, 1 | 2, 14);
  return o + 14;
}

static void sp_expect(const uint8_t *in, const uint8_t *out, size_t outlen) {
  CHECK_EQ(outlen, 114);
  CHECK(memcmp(out, in, 8) == 0);
  CHECK_EQ(cpb_get_be16(out + 8), 2); /* client bit cleared, pong bit kept */
  CHECK(memcmp(out + 10, in + 10, 90) == 0);
  CHECK(memcmp(out + 100, in + 140, 8) == 0);
  CHECK_EQ(cpb_get_be16(out + 108), 2);
  CHECK_EQ(cpb_get_be32(out + 110), 14);
}

TEST(native_sockperf_whole_and_split) {
  uint8_t in[256], out[512];
  size_t n = sp_stream(in);
  _Alignas(8) uint8_t st[CPB_NATIVE_STATE];
  memset(st, 0, sizeof(st));
  long w = cpb_native_sockperf.on_data(st, in, n, out);
  REQUIRE(w >= 0);
  sp_expect(in, out, (size_t)w);
  /* Every split point, in up to three pieces: output never exceeds input + CPB_NATIVE_CARRY. */
  for (size_t a = 0; a <= n; a++) {
    for (size_t b = a; b <= n; b += 7) {
      memset(st, 0, sizeof(st));
      uint8_t got[512];
      size_t glen = 0;
      size_t cuts[4] = {0, a, b, n};
      for (int k = 0; k < 3; k++) {
        uint8_t piece_out[256 + CPB_NATIVE_CARRY];
        long pw = cpb_native_sockperf.on_data(st, in + cuts[k], cuts[k + 1] - cuts[k], piece_out);
        REQUIRE(pw >= 0 && (size_t)pw <= cuts[k + 1] - cuts[k] + CPB_NATIVE_CARRY);
        memcpy(got + glen, piece_out, (size_t)pw);
        glen += (size_t)pw;
      }
      if (glen != 114 || memcmp(got, out, 114) != 0) {
        fprintf(stderr, "  split at %zu,%zu: %zu bytes\n", a, b, glen);
        CHECK(0);
        return;
      }
    }
  }
}

TEST(native_sockperf_rejects_bad_length) {
  uint8_t in[14], out[14 + CPB_NATIVE_CARRY];
  _Alignas(8) uint8_t st[CPB_NATIVE_STATE];
  memset(st, 0, sizeof(st));
  sp_header(in, 1, 3, 13);
  CHECK_EQ(cpb_native_sockperf.on_data(st, in, sizeof(in), out), -EPROTO);
  memset(st, 0, sizeof(st));
  sp_header(in, 1, 3, 65537);
  CHECK_EQ(cpb_native_sockperf.on_data(st, in, sizeof(in), out), -EPROTO);
}

TEST(native_app_find) {
  CHECK(cpb_native_app_find("echo") == &cpb_native_echo);
  CHECK(cpb_native_app_find("sockperf") == &cpb_native_sockperf);
  CHECK(cpb_native_app_find("http") == NULL);
  CHECK(cpb_native_app_find(NULL) == NULL);
}

/* ---- two engines ---- */

static int start(struct cpb_engine **e, const char *uri, cpb_ip4_t ip, uint8_t last_mac) {
  return start_engine(e, uri, ip, 0x98, last_mac);
}

struct pair {
  struct cpb_engine *srv, *cli;
};

static bool pair_start(struct pair *p, const char *wire) {
  p->srv = p->cli = NULL;
  if (start(&p->srv, wire, SRV_IP, 1) != 0) return false;
  if (start(&p->cli, wire, CLI_IP, 2) != 0) {
    cpb_engine_stop(p->srv);
    return false;
  }
  return true;
}

static void pair_stop(struct pair *p) {
  cpb_engine_stop(p->cli);
  cpb_engine_stop(p->srv);
}

static struct cpb_native_stats srv_native(struct pair *p) {
  struct cpb_native_stats s;
  memset(&s, 0, sizeof(s));
  cpb_engine_enter(p->srv);
  const struct cpb_native *n = cpb_engine_native(p->srv);
  if (n) cpb_native_get_stats(n, &s);
  cpb_engine_leave(p->srv);
  return s;
}

static int listen_native(struct pair *p, uint16_t port, const char *app) {
  uint64_t lid = 0;
  cpb_engine_enter(p->srv);
  int rc = cpb_engine_listen_native(p->srv, port, 16, cpb_native_app_find(app), &lid);
  cpb_engine_leave(p->srv);
  return rc;
}

/* Connects the client and waits for TCP_EV_CONNECTED; returns the flow id or 0. */
static uint64_t client_connect(struct pair *p, uint16_t port) {
  uint64_t fid = 0;
  cpb_time_t now = cpb_engine_enter(p->cli);
  int rc = tcp_connect(cpb_engine_tcp(p->cli), SRV_IP, port, 0, now, &fid);
  cpb_engine_leave(p->cli);
  if (rc != 0) return 0;
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  while (cpb_clock_now() < deadline) {
    bool up = false;
    struct tcp_event ev;
    cpb_engine_enter(p->cli);
    while (cpb_engine_next_event(p->cli, &ev))
      if (ev.id == fid && ev.type == TCP_EV_CONNECTED) up = true;
    cpb_engine_leave(p->cli);
    if (up) return fid;
    nap();
  }
  return 0;
}

static uint8_t pattern(uint64_t i) { return (uint8_t)(i * 13 + 5 + (i >> 9)); }

struct xfer {
  uint64_t sent, got;
  bool ok;
};

/* One step of the client: send up to `limit` pattern bytes, and read (verifying) when `read`. */
static bool client_step(struct pair *p, uint64_t fid, struct xfer *x, uint64_t limit, bool read) {
  static uint8_t buf[65536];
  bool progress = false;
  cpb_time_t now = cpb_engine_enter(p->cli);
  if (x->sent < limit) {
    size_t chunk = (size_t)CPB_MIN(sizeof(buf), limit - x->sent);
    for (size_t i = 0; i < chunk; i++) buf[i] = pattern(x->sent + i);
    long n = tcp_send(cpb_engine_tcp(p->cli), fid, buf, chunk, now);
    if (n > 0) {
      x->sent += (uint64_t)n;
      progress = true;
    }
  }
  if (read) {
    long n = tcp_recv(cpb_engine_tcp(p->cli), fid, buf, sizeof(buf), now);
    if (n > 0) {
      for (long i = 0; i < n && x->ok; i++)
        if (buf[i] != pattern(x->got + (uint64_t)i)) x->ok = false;
      x->got += (uint64_t)n;
      progress = true;
    }
  }
  struct tcp_event ev;
  while (cpb_engine_next_event(p->cli, &ev)) {}
  cpb_engine_leave(p->cli);
  return progress;
}

struct flow_probe {
  uint16_t port;
  uint32_t readable;
  int count;
};
static void probe_flow(void *ctx, const struct tcp_flow_info *fi) {
  struct flow_probe *pr = ctx;
  if (fi->local_port != pr->port) return;
  pr->readable = fi->readable_bytes;
  pr->count++;
}

static uint32_t slots_used(struct cpb_engine *e) {
  cpb_engine_enter(e);
  uint32_t n = cpb_engine_arena(e)->hdr->slots_used;
  cpb_engine_leave(e);
  return n;
}

/* Waits until both arenas are empty (flows finished FIN exchange and a 1 ms TIME_WAIT). */
static uint32_t wait_slots_free(struct pair *p) {
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  uint32_t left = 1;
  while (cpb_clock_now() < deadline && (left = slots_used(p->srv) + slots_used(p->cli)) != 0) nap();
  return left;
}

static void echo_run(const char *wire, uint64_t total) {
  struct pair p;
  REQUIRE(pair_start(&p, wire));
  CHECK_EQ(listen_native(&p, 7, "echo"), 0);
  CHECK_EQ(listen_native(&p, 7, "echo"), -EADDRINUSE);
  uint64_t fid = client_connect(&p, 7);
  CHECK(fid != 0);
  if (!fid) {
    pair_stop(&p);
    return;
  }
  struct xfer x = {.ok = true};

  /* A short exchange first. */
  cpb_time_t deadline = cpb_clock_now() + 20 * CPB_US_PER_S;
  while (x.got < 1000 && cpb_clock_now() < deadline && x.ok)
    if (!client_step(&p, fid, &x, 1000, true)) nap();
  CHECK_EQ(x.got, 1000);

  /* Backpressure: send without reading until everything is full. The client's receive buffer fills,
   * then the server's send buffer, the app's output area and the server's receive buffer; the client
   * must then be stuck well short of `total`, with the app holding at most one output area. */
  int idle = 0;
  while (idle < 200 && x.sent < total && cpb_clock_now() < deadline) {
    if (client_step(&p, fid, &x, total, false)) idle = 0;
    else {
      idle++;
      nap();
    }
  }
  CHECK(x.sent < total);
  struct cpb_native_stats ns = srv_native(&p);
  CHECK(ns.bytes_in - ns.bytes_out <= CPB_NATIVE_OUT);
  CHECK(ns.bytes_in < x.sent);
  struct flow_probe pr = {.port = 7};
  cpb_engine_enter(p.srv);
  tcp_foreach_flow(cpb_engine_tcp(p.srv), probe_flow, &pr);
  cpb_engine_leave(p.srv);
  CHECK_EQ(pr.count, 1);
  /* The app stopped reading: data waits in TCP, under its window (with loss, a hole may hide it). */
  if (!strchr(wire, '?')) CHECK(pr.readable > 0);
  printf("  %s: stalled with %llu sent, %llu echoed, server holding %u unread\n", wire,
         (unsigned long long)x.sent, (unsigned long long)ns.bytes_out, pr.readable);

  /* Read again: everything comes back byte-exact. */
  deadline = cpb_clock_now() + 60 * CPB_US_PER_S;
  while (x.got < total && cpb_clock_now() < deadline && x.ok)
    if (!client_step(&p, fid, &x, total, true)) nap();
  CHECK(x.ok);
  CHECK_EQ(x.got, total);

  /* The client closes: the native flow sees EOF and closes too; both slots are freed. */
  cpb_time_t now = cpb_engine_enter(p.cli);
  CHECK_EQ(tcp_close(cpb_engine_tcp(p.cli), fid, now), 0);
  cpb_engine_leave(p.cli);
  CHECK_EQ(wait_slots_free(&p), 0);
  ns = srv_native(&p);
  CHECK_EQ(ns.accepted, 1);
  CHECK_EQ(ns.closed, 1);
  CHECK_EQ(ns.resets, 0);
  CHECK_EQ(ns.flows, 0);
  CHECK_EQ(ns.bytes_in, total);
  CHECK_EQ(ns.bytes_out, total);
  pair_stop(&p);
}

TEST(native_echo_4mb_with_backpressure) { echo_run("mem:native-echo", 4u << 20); }

TEST(native_echo_faulty_wire) { echo_run("mem:native-faulty?loss=0.02&dup=0.01&reorder=0.02&corrupt=0.01&seed=5", 2u << 20); }

/* Reads until `want` bytes arrived on fid (or 10 s). */
static size_t client_read(struct pair *p, uint64_t fid, uint8_t *buf, size_t want) {
  size_t got = 0;
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  while (got < want && cpb_clock_now() < deadline) {
    cpb_time_t now = cpb_engine_enter(p->cli);
    long n = tcp_recv(cpb_engine_tcp(p->cli), fid, buf + got, want - got, now);
    struct tcp_event ev;
    while (cpb_engine_next_event(p->cli, &ev)) {}
    cpb_engine_leave(p->cli);
    if (n > 0) got += (size_t)n;
    else nap();
  }
  return got;
}

TEST(native_sockperf_ping_pong) {
  struct pair p;
  REQUIRE(pair_start(&p, "mem:native-sockperf"));
  CHECK_EQ(listen_native(&p, 11111, "sockperf"), 0);
  uint64_t fid = client_connect(&p, 11111);
  REQUIRE(fid != 0);
  uint8_t in[256], out[256];
  size_t n = sp_stream(in);
  for (int round = 0; round < 50; round++) {
    cpb_time_t now = cpb_engine_enter(p.cli);
    CHECK_EQ(tcp_send(cpb_engine_tcp(p.cli), fid, in, n, now), (long)n);
    cpb_engine_leave(p.cli);
    size_t got = client_read(&p, fid, out, 114);
    sp_expect(in, out, got);
  }
  cpb_time_t now = cpb_engine_enter(p.cli);
  tcp_close(cpb_engine_tcp(p.cli), fid, now);
  cpb_engine_leave(p.cli);
  CHECK_EQ(wait_slots_free(&p), 0);
  struct cpb_native_stats ns = srv_native(&p);
  CHECK_EQ(ns.bytes_in, 50 * n);
  CHECK_EQ(ns.bytes_out, 50 * 114);
  CHECK_EQ(ns.closed, 1);
  pair_stop(&p);
}

/* A bad sockperf length resets the flow: the client sees ECONNRESET. */
TEST(native_sockperf_bad_frame_resets) {
  struct pair p;
  REQUIRE(pair_start(&p, "mem:native-badframe"));
  CHECK_EQ(listen_native(&p, 11111, "sockperf"), 0);
  uint64_t fid = client_connect(&p, 11111);
  REQUIRE(fid != 0);
  uint8_t bad[14];
  sp_header(bad, 1, 3, 5);
  cpb_time_t now = cpb_engine_enter(p.cli);
  CHECK_EQ(tcp_send(cpb_engine_tcp(p.cli), fid, bad, sizeof(bad), now), 14);
  cpb_engine_leave(p.cli);
  int32_t closed_err = 1;
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  while (closed_err == 1 && cpb_clock_now() < deadline) {
    struct tcp_event ev;
    cpb_engine_enter(p.cli);
    while (cpb_engine_next_event(p.cli, &ev))
      if (ev.id == fid && ev.type == TCP_EV_CLOSED) closed_err = ev.err;
    cpb_engine_leave(p.cli);
    nap();
  }
  CHECK_EQ(closed_err, -ECONNRESET);
  now = cpb_engine_enter(p.cli);
  tcp_close(cpb_engine_tcp(p.cli), fid, now);
  cpb_engine_leave(p.cli);
  CHECK_EQ(srv_native(&p).resets, 1);
  CHECK_EQ(wait_slots_free(&p), 0);
  pair_stop(&p);
}

/* An ordinary listener beside a native one: its events still reach the application, in order, and no
 * event of the native flows does. */
TEST(native_and_app_listeners_side_by_side) {
  struct pair p;
  REQUIRE(pair_start(&p, "mem:native-mixed"));
  CHECK_EQ(listen_native(&p, 7, "echo"), 0);
  uint64_t app_lid = 0;
  cpb_engine_enter(p.srv);
  CHECK_EQ(tcp_listen(cpb_engine_tcp(p.srv), 80, 16, &app_lid), 0);
  cpb_engine_leave(p.srv);

  uint64_t nf = client_connect(&p, 7);
  uint64_t af = client_connect(&p, 80);
  REQUIRE(nf != 0 && af != 0);
  static const char msg[] = "hello, engine";
  cpb_time_t now = cpb_engine_enter(p.cli);
  CHECK_EQ(tcp_send(cpb_engine_tcp(p.cli), nf, msg, sizeof(msg), now), (long)sizeof(msg));
  CHECK_EQ(tcp_send(cpb_engine_tcp(p.cli), af, msg, sizeof(msg), now), (long)sizeof(msg));
  cpb_engine_leave(p.cli);
  uint8_t back[sizeof(msg)];
  CHECK_EQ(client_read(&p, nf, back, sizeof(msg)), sizeof(msg));
  CHECK(memcmp(back, msg, sizeof(msg)) == 0);

  /* The application side of the server: ACCEPTABLE for its listener, then READABLE for its flow. */
  uint64_t sfid = 0;
  bool readable = false, foreign = false;
  uint8_t got[sizeof(msg)];
  long gotn = 0;
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  while (!(sfid && readable) && cpb_clock_now() < deadline) {
    struct tcp_event ev;
    now = cpb_engine_enter(p.srv);
    while (cpb_engine_next_event(p.srv, &ev)) {
      if (ev.type == TCP_EV_ACCEPTABLE && ev.id == app_lid) {
        CHECK(sfid == 0);
        CHECK_EQ(tcp_accept(cpb_engine_tcp(p.srv), app_lid, &sfid), 0);
      } else if (ev.id != sfid || ev.type != TCP_EV_READABLE) {
        if (ev.id != sfid) foreign = true; /* an event of a native listener or flow leaked to the application */
        continue;
      }
      /* Data may have come with the accept (no READABLE then) or after it. */
      long n = readable ? 0 : tcp_recv(cpb_engine_tcp(p.srv), sfid, got, sizeof(got), now);
      if (n > 0) {
        gotn = n;
        readable = true;
      }
    }
    cpb_engine_leave(p.srv);
    nap();
  }
  CHECK(!foreign);
  CHECK(sfid != 0);
  CHECK_EQ(gotn, (long)sizeof(msg));
  CHECK(memcmp(got, msg, sizeof(msg)) == 0);
  CHECK(atomic_load(&notified) > 0);

  now = cpb_engine_enter(p.cli);
  tcp_close(cpb_engine_tcp(p.cli), nf, now);
  tcp_close(cpb_engine_tcp(p.cli), af, now);
  cpb_engine_leave(p.cli);
  now = cpb_engine_enter(p.srv);
  tcp_close(cpb_engine_tcp(p.srv), sfid, now);
  cpb_engine_leave(p.srv);
  CHECK_EQ(wait_slots_free(&p), 0);
  CHECK_EQ(srv_native(&p).closed, 1);
  pair_stop(&p);
}

/* Many flows at once, closed in an interleaved order: the flow table finds each one through insertions
 * and deletions, and every flow gets exactly its own bytes back. */
TEST(native_echo_many_flows) {
  enum { FLOWS = 24, BYTES = 20000 };
  struct pair p;
  REQUIRE(pair_start(&p, "mem:native-many"));
  CHECK_EQ(listen_native(&p, 7, "echo"), 0);
  uint64_t fid[FLOWS];
  struct xfer x[FLOWS];
  for (int i = 0; i < FLOWS; i++) {
    fid[i] = client_connect(&p, 7);
    REQUIRE(fid[i] != 0);
    x[i] = (struct xfer){.ok = true};
  }
  /* The client is connected at the SYN-ACK; the server accepts at the ACK just after. */
  cpb_time_t deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  while (srv_native(&p).flows < FLOWS && cpb_clock_now() < deadline) nap();
  CHECK_EQ(srv_native(&p).flows, FLOWS);
  bool closed[FLOWS] = {false};
  int open = FLOWS;
  deadline = cpb_clock_now() + 60 * CPB_US_PER_S;
  for (int order = 0; open > 0 && cpb_clock_now() < deadline;) {
    bool progress = false;
    for (int i = 0; i < FLOWS; i++)
      if (!closed[i] && client_step(&p, fid[i], &x[i], BYTES, true)) progress = true;
    /* Close in the order 0, 7, 14, 21, 4, ... (coprime step) once a flow is complete. */
    int k = (order * 7) % FLOWS;
    if (!closed[k] && x[k].got == BYTES) {
      cpb_time_t now = cpb_engine_enter(p.cli);
      CHECK_EQ(tcp_close(cpb_engine_tcp(p.cli), fid[k], now), 0);
      cpb_engine_leave(p.cli);
      closed[k] = true;
      open--;
      order++;
      progress = true;
    }
    if (!progress) nap();
  }
  CHECK_EQ(open, 0);
  for (int i = 0; i < FLOWS; i++) {
    CHECK(x[i].ok);
    CHECK_EQ(x[i].got, BYTES);
  }
  CHECK_EQ(wait_slots_free(&p), 0);
  struct cpb_native_stats ns = srv_native(&p);
  CHECK_EQ(ns.accepted, FLOWS);
  CHECK_EQ(ns.closed, FLOWS);
  CHECK_EQ(ns.flows, 0);
  CHECK_EQ(ns.bytes_out, (uint64_t)FLOWS * BYTES);
  pair_stop(&p);
}
