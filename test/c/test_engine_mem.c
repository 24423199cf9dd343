/* Two engines (two threads, two arenas) joined by a mem: wire, driven from the test thread the way the
 * addon drives them: calls under cpb_engine_enter/leave, events drained after notify. Proves the locking
 * and wake-up protocol end to end under ASan, with and without injected faults. */
#include <stdatomic.h>
#include <time.h>

#include "enginetest.h"
#include "t.h"


static int start(struct cpb_engine **e, const char *uri, cpb_ip4_t ip, uint8_t last_mac) {
  return start_engine(e, uri, ip, 0x99, last_mac);
}

static uint8_t pattern(uint64_t i) { return (uint8_t)(i * 31 + 7 + (i >> 11)); }

/* Moves `total` bytes client -> server and back (echo by the test thread), verifying every byte. */
static void run_transfer(const char *wire, uint64_t total) {
  struct cpb_engine *srv = NULL, *cli = NULL;
  REQUIRE(start(&srv, wire, IP(10, 99, 0, 1), 1) == 0);
  char wire2[128];
  snprintf(wire2, sizeof(wire2), "%s", wire);
  if (start(&cli, wire2, IP(10, 99, 0, 2), 2) != 0) {
    cpb_engine_stop(srv);
    REQUIRE(0);
  }
  uint64_t lid = 0, sfid = 0, cfid = 0;
  cpb_time_t now = cpb_engine_enter(srv);
  (void)now;
  CHECK_EQ(tcp_listen(cpb_engine_tcp(srv), 5001, 8, &lid), 0);
  cpb_engine_leave(srv);
  now = cpb_engine_enter(cli);
  CHECK_EQ(tcp_connect(cpb_engine_tcp(cli), IP(10, 99, 0, 1), 5001, 0, now, &cfid), 0);
  cpb_engine_leave(cli);

  static uint8_t buf[65536];
  uint64_t sent = 0, echoed_out = 0, got_back = 0;
  bool have_srv = false, client_done = false, ok = true;
  uint64_t pending = 0; /* bytes read by the server side, not yet written back */
  static uint8_t hold[65536];
  cpb_time_t deadline = cpb_clock_now() + 60 * CPB_US_PER_S;
  while (got_back < total && cpb_clock_now() < deadline && ok) {
    bool progress = false;
    now = cpb_engine_enter(srv);
    if (!have_srv && tcp_accept(cpb_engine_tcp(srv), lid, &sfid) == 0) have_srv = true;
    if (have_srv) {
      if (pending == 0) {
        long n = tcp_recv(cpb_engine_tcp(srv), sfid, hold, sizeof(hold), now);
        if (n > 0) { pending = (uint64_t)n; progress = true; }
      }
      if (pending) {
        long n = tcp_send(cpb_engine_tcp(srv), sfid, hold, pending, now);
        if (n > 0) {
          memmove(hold, hold + n, pending - (uint64_t)n);
          pending -= (uint64_t)n;
          echoed_out += (uint64_t)n;
          progress = true;
        }
      }
    }
    struct tcp_event ev;
    while (tcp_next_event(cpb_engine_tcp(srv), &ev)) {}
    cpb_engine_leave(srv);

    now = cpb_engine_enter(cli);
    if (sent < total) {
      size_t chunk = (size_t)CPB_MIN(sizeof(buf), total - sent);
      for (size_t i = 0; i < chunk; i++) buf[i] = pattern(sent + i);
      long n = tcp_send(cpb_engine_tcp(cli), cfid, buf, chunk, now);
      if (n > 0) { sent += (uint64_t)n; progress = true; }
    }
    long n = tcp_recv(cpb_engine_tcp(cli), cfid, buf, sizeof(buf), now);
    if (n > 0) {
      for (long i = 0; i < n; i++)
        if (buf[i] != pattern(got_back + (uint64_t)i)) { ok = false; break; }
      got_back += (uint64_t)n;
      progress = true;
    }
    while (tcp_next_event(cpb_engine_tcp(cli), &ev)) {}
    if (got_back == total && !client_done) {
      tcp_close(cpb_engine_tcp(cli), cfid, now);
      client_done = true;
    }
    cpb_engine_leave(cli);
    if (!progress) nap();
  }
  CHECK(ok);
  CHECK_EQ(got_back, total);
  CHECK_EQ(echoed_out, total);
  if (have_srv) {
    now = cpb_engine_enter(srv);
    tcp_close(cpb_engine_tcp(srv), sfid, now);
    cpb_engine_leave(srv);
  }
  /* Both sides close; the flows finish their FIN exchange and TIME_WAIT (1 ms here) and free their slots. */
  deadline = cpb_clock_now() + 10 * CPB_US_PER_S;
  uint32_t left = 1;
  while (cpb_clock_now() < deadline && left) {
    nap();
    cpb_engine_enter(srv);
    left = cpb_engine_arena(srv)->hdr->slots_used;
    cpb_engine_leave(srv);
    cpb_engine_enter(cli);
    left += cpb_engine_arena(cli)->hdr->slots_used;
    cpb_engine_leave(cli);
  }
  CHECK_EQ(left, 0);
  CHECK(atomic_load(&notified) > 0);
  struct tcp_stats st;
  cpb_engine_enter(cli);
  tcp_get_stats(cpb_engine_tcp(cli), &st);
  cpb_engine_leave(cli);
  printf("  %s: %llu bytes echoed, client retransmits %llu, fast %llu, rto %llu\n", wire,
         (unsigned long long)got_back, (unsigned long long)st.retransmits, (unsigned long long)st.fast_retransmits,
         (unsigned long long)st.rto_timeouts);
  cpb_engine_stop(cli);
  cpb_engine_stop(srv);
}

TEST(engine_mem_echo_clean_wire) { run_transfer("mem:engine-clean", 4u << 20); }

TEST(engine_mem_echo_faulty_wire) {
  run_transfer("mem:engine-faulty?loss=0.03&dup=0.01&reorder=0.02&corrupt=0.01&seed=11", 2u << 20);
}

TEST(engine_reports_bad_device) {
  struct cpb_engine *e = NULL;
  struct cpb_engine_config cfg;
  cpb_engine_config_defaults(&cfg);
  snprintf(cfg.device, sizeof(cfg.device), "carrier-pigeon:1");
  char err[256] = "";
  CHECK_EQ(cpb_engine_start(&e, &cfg, on_notify, NULL, err, sizeof(err)), -ENODEV);
  CHECK(e == NULL);
  CHECK(strlen(err) > 0);
}
