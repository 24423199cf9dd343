/* libFuzzer target for snapshot restore: arbitrary bytes go to tcp_adopt on fresh TCP instances. Each
 * input runs twice: as given (framing checks) and with a repaired header (magic, version, lengths made
 * right, so mutations reach the field checks). Whatever tcp_adopt accepts must behave like a flow: it
 * is read from, written to and left to its timers; it must freeze and snapshot into bytes that parse
 * and that a second instance adopts in turn (snapshot -> adopt closure). Whatever it rejects must leave
 * no slot or chunk behind, and after tcp_fini every slot and chunk of the shared arena is back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "tcp/snapshot.h"
#include "tcp/tcp.h"

#define SEC CPB_US_PER_S

static struct cpb_arena arena;
static uint8_t frame[1600];
static uint8_t io[65536];
static uint8_t fixed[1 << 20];
static uint8_t snap[1 << 21];

static uint8_t *out_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  (void)ctx;
  (void)src;
  (void)dst;
  *cap = 1480;
  return frame;
}
static void out_commit(void *ctx, size_t len) {
  (void)ctx;
  (void)len;
}

static struct cpb_tcp *instance(void) {
  struct tcp_config c;
  tcp_config_defaults(&c);
  c.local_ip = 0x0a000002u;
  c.max_flows = 4;
  c.hold_segs = 4;
  struct cpb_tcp *t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = NULL, .begin = out_begin, .commit = out_commit};
  if (!t || tcp_init(t, &arena, &c, &out) != 0) abort();
  return t;
}

static void drain(struct cpb_tcp *t) {
  struct tcp_event ev;
  while (tcp_next_event(t, &ev)) {
  }
}

/* Uses an adopted flow the way an application and the clock would. */
static void exercise(struct cpb_tcp *t, uint64_t id, cpb_time_t now) {
  drain(t);
  for (int i = 0; i < 64 && tcp_recv(t, id, io, sizeof(io), now) > 0; i++) {
  }
  (void)tcp_send(t, id, io, 3000, now);
  cpb_time_t steps[] = {now + 1000, now + 250000, now + 3 * SEC, now + 130 * SEC, now + 3000 * SEC};
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    tcp_poll(t, steps[i]);
    drain(t);
  }
}

static void one(const uint8_t *data, size_t size) {
  struct cpb_tcp *t1 = instance(), *t2 = instance();
  cpb_time_t now = 10 * SEC;
  uint64_t id;
  int rc = tcp_adopt(t1, data, size, now, &id);
  if (rc == 0) {
    tcp_poll(t1, now + 500);
    if (tcp_freeze(t1, id, now + 500) == 0) {
      long n = tcp_snapshot_size(t1, id);
      if (n < 0 || (size_t)n > sizeof(snap) || tcp_snapshot(t1, id, snap, sizeof(snap), now + 500) != n) abort();
      struct tcp_snap s;
      if (tcp_snap_parse(snap, (size_t)n, &s) != 0) abort(); /* we wrote something we would refuse */
      uint64_t id2;
      if (tcp_adopt(t2, snap, (size_t)n, now + 5000, &id2) != 0) abort();
      if (tcp_release(t1, id, now + 600) != 0) abort();
      exercise(t2, id2, now + 5000);
    } else {
      exercise(t1, id, now + 500);
    }
  } else if (rc != -EINVAL && rc != -EBADMSG && rc != -ENOSPC && rc != -EEXIST) {
    abort();
  } else if (arena.hdr->slots_used || arena.hdr->chunks_used) {
    abort(); /* a rejected adopt left something behind */
  }
  tcp_fini(t1);
  tcp_fini(t2);
  free(t1);
  free(t2);
  if (arena.hdr->slots_used || arena.hdr->chunks_used) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!arena.base) {
    struct cpb_arena_config ac = {.slots = 8, .chunks = 2048};
    if (cpb_arena_create(&arena, &ac) != 0) abort();
  }
  one(data, size);
  if (size >= TCP_SNAP_HDR_LEN && size <= sizeof(fixed)) {
    memcpy(fixed, data, size);
    memcpy(fixed, TCP_SNAP_MAGIC, 4);
    fixed[4] = TCP_SNAP_VERSION;
    fixed[5] = fixed[6] = fixed[7] = 0;
    uint32_t total = (uint32_t)size, st = TCP_SNAP_STATE_LEN;
    for (int i = 0; i < 4; i++) {
      fixed[8 + i] = (uint8_t)(total >> (8 * i));
      fixed[12 + i] = (uint8_t)(st >> (8 * i));
    }
    one(fixed, size);
  }
  return 0;
}
