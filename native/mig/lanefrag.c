/* See lanefrag.h: parts of a lane message, and putting them back together. */
#include "lanefrag.h"

#include <stdlib.h>

_Static_assert(LANE_MAX_PARTS <= UINT16_MAX, "a part index fits in u16");
_Static_assert(CPB_LANE_MSG_MAX <= UINT32_MAX, "a total fits in u32");

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

size_t lane_part_emit(uint32_t msg, uint8_t type, const uint8_t *m, size_t total, uint16_t index, uint8_t *out) {
  size_t off = (size_t)index * LANE_PART_DATA;
  size_t len = CPB_MIN((size_t)LANE_PART_DATA, total - off);
  put32(out, msg);
  out[4] = type;
  out[5] = 0;
  put16(out + 6, index);
  put16(out + 8, lane_part_count(total));
  put32(out + 10, (uint32_t)total);
  memcpy(out + LANE_PART_HEAD, m + off, len);
  return LANE_PART_HEAD + len;
}

int lane_part_parse(const uint8_t *p, size_t n, struct lane_part *out) {
  if (n <= LANE_PART_HEAD || p[5] != 0) return -EBADMSG;
  struct lane_part v = {.msg = get32(p), .type = p[4], .index = get16(p + 6), .count = get16(p + 8), .total = get32(p + 10)};
  /* A message that fits one datagram never comes in parts; one beyond the limit has no slot. */
  if (v.total <= LANE_MAX_PLAIN || v.total > CPB_LANE_MSG_MAX || v.count != lane_part_count(v.total) || v.index >= v.count)
    return -EBADMSG;
  size_t off = (size_t)v.index * LANE_PART_DATA;
  v.len = n - LANE_PART_HEAD;
  if (v.len != CPB_MIN((size_t)LANE_PART_DATA, v.total - off)) return -EBADMSG;
  v.data = p + LANE_PART_HEAD;
  *out = v;
  return 0;
}

/* ---- slots ---- */

int lane_reasm_init(struct lane_reasm *r) {
  memset(r, 0, sizeof(*r));
  size_t big = (size_t)CPB_LANE_MSG_MAX, all = LANE_RX_BIG * big + LANE_RX_SMALL * (size_t)LANE_SMALL_MAX;
  r->mem = malloc(all); /* not zeroed: pages stay untouched until a message needs them, and only what parts wrote is read */
  if (!r->mem) return -ENOMEM;
  uint8_t *p = r->mem;
  for (int i = 0; i < LANE_RX_BIG + LANE_RX_SMALL; i++) {
    r->slots[i].cap = i < LANE_RX_BIG ? big : LANE_SMALL_MAX;
    r->slots[i].buf = p;
    p += r->slots[i].cap;
  }
  return 0;
}

void lane_reasm_free(struct lane_reasm *r) {
  for (int i = 0; i < LANE_RX_BIG + LANE_RX_SMALL; i++)
    if (r->slots[i].used) lane_reasm_release(&r->slots[i]);
  free(r->mem);
  r->mem = NULL;
}

void lane_reasm_release(struct lane_slot *s) {
  /* Only what parts wrote: the rest of the slot was never touched (and stays unmapped). */
  for (uint16_t i = 0; i < s->count; i++)
    if (s->bits[i / 64] >> (i % 64) & 1) memset(s->buf + (size_t)i * LANE_PART_DATA, 0, CPB_MIN((size_t)LANE_PART_DATA, s->total - (size_t)i * LANE_PART_DATA));
  uint8_t *buf = s->buf;
  size_t cap = s->cap;
  memset(s, 0, sizeof(*s));
  s->buf = buf, s->cap = cap;
}

static struct lane_slot *slot_find(struct lane_reasm *r, cpb_ip4_t peer, uint64_t key_id, uint32_t msg) {
  for (int i = 0; i < LANE_RX_BIG + LANE_RX_SMALL; i++) {
    struct lane_slot *s = &r->slots[i];
    if (s->used && s->peer == peer && s->key_id == key_id && s->msg == msg) return s;
  }
  return NULL;
}

/* A free slot of the class that holds total bytes, else its oldest that may go (given up); NULL when none may
 * (lanefrag.h: a big slot still arriving stays). */
static struct lane_slot *slot_take(struct lane_reasm *r, uint32_t total, cpb_time_t now) {
  bool big = total > LANE_SMALL_MAX;
  int lo = big ? 0 : LANE_RX_BIG, hi = big ? LANE_RX_BIG : LANE_RX_BIG + LANE_RX_SMALL;
  struct lane_slot *oldest = NULL;
  for (int i = lo; i < hi; i++) {
    struct lane_slot *s = &r->slots[i];
    if (!s->used) return s;
    if (big && now < s->touched + LANE_SLOT_BUSY_US) continue;
    if (!oldest || s->born < oldest->born) oldest = s;
  }
  if (!oldest) return NULL;
  r->evicted++;
  lane_reasm_release(oldest);
  return oldest;
}

static bool done_lately(const struct lane_reasm *r, cpb_ip4_t peer, uint64_t key_id, uint32_t msg) {
  for (int i = 0; i < LANE_DONE_IDS; i++)
    if (r->done[i].msg == msg && r->done[i].peer == peer && r->done[i].key_id == key_id) return true;
  return false;
}

int lane_reasm_add(struct lane_reasm *r, cpb_ip4_t peer, uint64_t key_id, const struct lane_part *p, cpb_time_t now,
                   struct lane_slot **done) {
  struct lane_slot *s = slot_find(r, peer, key_id, p->msg);
  if (!s && done_lately(r, peer, key_id, p->msg)) return LANE_PART_DONE_BEFORE;
  if (s && (s->type != p->type || s->total != p->total || s->count != p->count)) return -EBADMSG;
  if (!s) {
    s = slot_take(r, p->total, now);
    if (!s) {
      r->busy++;
      return -EBUSY;
    }
    s->used = true;
    s->peer = peer, s->key_id = key_id, s->msg = p->msg;
    s->type = p->type, s->total = p->total, s->count = p->count;
    s->born = ++r->born;
  }
  s->touched = now; /* a copy that brings only parts it has still shows its source is sending */
  if (s->bits[p->index / 64] >> (p->index % 64) & 1) return LANE_PART_DUP;
  s->bits[p->index / 64] |= 1ull << (p->index % 64);
  memcpy(s->buf + (size_t)p->index * LANE_PART_DATA, p->data, p->len);
  if (++s->have < s->count) return LANE_PART_KEPT;
  r->done[r->done_next] = (struct lane_done_id){.peer = peer, .key_id = key_id, .msg = p->msg};
  r->done_next = (r->done_next + 1) % LANE_DONE_IDS;
  *done = s;
  return LANE_PART_DONE;
}

cpb_time_t lane_reasm_expire(struct lane_reasm *r, cpb_time_t now) {
  cpb_time_t next = UINT64_MAX;
  for (int i = 0; i < LANE_RX_BIG + LANE_RX_SMALL; i++) {
    struct lane_slot *s = &r->slots[i];
    if (!s->used) continue;
    if (now >= s->touched + LANE_SLOT_TTL_US) {
      r->evicted++;
      lane_reasm_release(s);
    } else {
      next = CPB_MIN(next, s->touched + LANE_SLOT_TTL_US);
    }
  }
  return next;
}
