/* Header-only helpers for tests that run real engines (threads, arenas, devices) on the mem: wire, as
 * the addon drives them. Included by one test file each (static functions, no link-time sharing). */
#ifndef CPB_ENGINETEST_H
#define CPB_ENGINETEST_H
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "engine.h"

#define IP(a, b, c, d) (((cpb_ip4_t)(a) << 24) | ((cpb_ip4_t)(b) << 16) | ((cpb_ip4_t)(c) << 8) | (d))

static atomic_int notified;
static void on_notify(void *ctx) {
  (void)ctx;
  atomic_fetch_add(&notified, 1);
}

static void nap(void) {
  struct timespec ts = {0, 200 * 1000};
  nanosleep(&ts, NULL);
}

/* A small engine on uri with address ip/24 (and vip and gateway gw, 0 for none) and MAC
 * 02:00:00:00:<mac_hi>:<mac_lo>; short TIME_WAIT. */
static int start_engine_at(struct cpb_engine **e, const char *uri, cpb_ip4_t ip, cpb_ip4_t vip, cpb_ip4_t gw, uint8_t mac_hi,
                           uint8_t mac_lo) {
  struct cpb_engine_config cfg;
  cpb_engine_config_defaults(&cfg);
  snprintf(cfg.device, sizeof(cfg.device), "%s", uri);
  cfg.stack.ip = ip;
  cfg.stack.prefix_len = 24;
  cfg.stack.vip = vip;
  cfg.stack.gateway = gw;
  uint8_t mac[6] = {0x02, 0, 0, 0, mac_hi, mac_lo};
  memcpy(cfg.stack.mac, mac, 6);
  cfg.arena.slots = 64;
  cfg.arena.chunks = 2048;
  cfg.arena.try_hugepages = false;
  cfg.tcp.time_wait_us = 1000;
  cfg.spin_us = 20;
  char err[256] = "";
  int rc = cpb_engine_start(e, &cfg, on_notify, NULL, err, sizeof(err));
  if (rc) fprintf(stderr, "  engine start %s: %s\n", uri, err);
  return rc;
}

static inline int start_engine(struct cpb_engine **e, const char *uri, cpb_ip4_t ip, uint8_t mac_hi, uint8_t mac_lo) {
  return start_engine_at(e, uri, ip, 0, 0, mac_hi, mac_lo);
}
#endif
