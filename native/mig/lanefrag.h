/* Messages of the migration lane larger than one datagram (lane.h): the sender cuts the plaintext into
 * parts, each sealed as its own datagram of type PART (its own sequence number, so the replay window
 * works per datagram); the receiver puts them back together in preallocated slots.
 *
 * A part's plaintext (little-endian):
 *   u32 message number (per key and direction, from 1) | u8 inner type | u8 0 | u16 index | u16 count |
 *   u32 total length | bytes [index * LANE_PART_DATA, min(total, (index + 1) * LANE_PART_DATA))
 * count is exactly ceil(total / LANE_PART_DATA) and total exceeds one datagram's plaintext (a message that
 * fits travels whole, as before). Parts may come in any order, twice, or in several copies of the message
 * (the source re-sends all of them): a slot keeps what it has across copies, so a re-send fills holes.
 *
 * Slots: a few big ones (CPB_LANE_MSG_MAX, for offers) and a few small ones (forwarded segments), so a burst
 * of forwards never pushes out an offer being assembled. A slot names (peer, key id, message number); one that
 * gets no part for LANE_SLOT_TTL_US goes. When the small class is full its oldest slot goes (forwards are
 * never sent again: an incomplete one will not complete). A new big message pushes out only a slot that got
 * no part for LANE_SLOT_BUSY_US; while both are still arriving its parts are refused (-EBUSY) and its
 * source's next copy tries again. Pushing out the oldest instead let three offers at once evict each other
 * in turn: each then completed only if one copy of all its parts (189 for 260 KB) arrived unbroken, and on a
 * lossy path that took dozens of copies. The parts of a message completed lately (the rest of the copy that
 * completed it, later copies sent before the answer came) take no slot (LANE_PART_DONE_BEFORE: the lane answers
 * such a copy again from its first part, which names the migration). Slots are wiped when released (they hold
 * snapshots). Allocates only in lane_reasm_init. */
#ifndef CPB_LANE_FRAG_H
#define CPB_LANE_FRAG_H
#include "lane.h"

#define LANE_MAX_PLAIN 1400 /* plaintext of one datagram: 20 + 1400 + 16 + IPv4 20 within a 1500 MTU */
#define LANE_PART_HEAD 14
#define LANE_PART_DATA (LANE_MAX_PLAIN - LANE_PART_HEAD)
#define LANE_MAX_PARTS ((CPB_LANE_MSG_MAX + LANE_PART_DATA - 1) / LANE_PART_DATA)
#define LANE_RX_BIG 2         /* slots of CPB_LANE_MSG_MAX: offers from two peers at once */
#define LANE_RX_SMALL 4       /* slots for messages up to LANE_SMALL_MAX (forwards) */
#define LANE_SMALL_MAX 4096
#define LANE_SLOT_TTL_US 500000
#define LANE_SLOT_BUSY_US 20000 /* a big slot that got a part this recently is still arriving: it stays */
#define LANE_DONE_IDS 16        /* messages completed lately: the rest of their copies take no slot */

struct lane_part {
  uint32_t msg, total;
  uint8_t type;
  uint16_t index, count;
  const uint8_t *data; /* view into the plaintext */
  size_t len;
};

/* Parts in a message of total bytes. */
static inline uint16_t lane_part_count(size_t total) { return (uint16_t)((total + LANE_PART_DATA - 1) / LANE_PART_DATA); }
/* Writes part index of message msg (inner type, total bytes at m) into out (LANE_MAX_PLAIN bytes); its length. */
size_t lane_part_emit(uint32_t msg, uint8_t type, const uint8_t *m, size_t total, uint16_t index, uint8_t *out);
/* Parses and checks a part's plaintext (n bytes): 0 or -EBADMSG (short, reserved byte, index or count
 * inconsistent with total, total out of range, a length that does not match the index). The inner type is
 * the caller's to judge. */
int lane_part_parse(const uint8_t *p, size_t n, struct lane_part *out);

struct lane_slot {
  bool used;
  cpb_ip4_t peer;
  uint64_t key_id;
  uint32_t msg, total;
  uint8_t type;
  uint16_t count, have;
  uint64_t born;        /* order of creation: the oldest goes first */
  cpb_time_t touched;   /* the last part that came (a duplicate too) */
  uint8_t *buf;
  size_t cap;
  uint64_t bits[(LANE_MAX_PARTS + 63) / 64];
};

struct lane_done_id {
  cpb_ip4_t peer;
  uint64_t key_id;
  uint32_t msg; /* 0 = none (message numbers start at 1) */
};

struct lane_reasm {
  struct lane_slot slots[LANE_RX_BIG + LANE_RX_SMALL];
  struct lane_done_id done[LANE_DONE_IDS]; /* ring */
  uint32_t done_next;
  uint8_t *mem;
  uint64_t born;
  uint64_t evicted; /* incomplete slots given up (full class or timeout) */
  uint64_t busy;    /* parts of a new big message refused: both big slots still arriving */
};

enum { LANE_PART_KEPT = 0, LANE_PART_DUP = 1, LANE_PART_DONE = 2, LANE_PART_DONE_BEFORE = 3 };

/* 0 or -ENOMEM. */
int lane_reasm_init(struct lane_reasm *r);
void lane_reasm_free(struct lane_reasm *r);
/* Files part p from (peer, key_id). LANE_PART_DONE: *done is complete (its buf holds total bytes; release
 * it after use); LANE_PART_KEPT / LANE_PART_DUP (had it already) / LANE_PART_DONE_BEFORE (its message was
 * completed lately: nothing kept); -EBADMSG: the part disagrees with its
 * slot's count, total or type (the slot stays as it was); -EBUSY: a new big message, and no big slot may go. */
int lane_reasm_add(struct lane_reasm *r, cpb_ip4_t peer, uint64_t key_id, const struct lane_part *p, cpb_time_t now,
                   struct lane_slot **done);
/* Wipes and frees a slot. */
void lane_reasm_release(struct lane_slot *s);
/* Gives up slots idle for LANE_SLOT_TTL_US; the next time one would expire (UINT64_MAX: none). */
cpb_time_t lane_reasm_expire(struct lane_reasm *r, cpb_time_t now);
#endif
