/* sockperf: the server side of sockperf's ping-pong mode, as runtime/apps/sockperf.ts does it in JS.
 * Every message starts with a 14-byte header in network order: u64 sequence, u16 flags (1 = from the
 * client, 2 = pong requested, 4 = warm-up), u32 total length including the header. A message that asks
 * for a pong goes back unchanged except for the client bit, which sockperf requires to be clear on
 * replies; other messages are dropped.
 *
 * Streaming rather than buffering whole messages: only the header is collected (it may straddle two
 * reads); the body is then copied through or skipped as it arrives, so a flow needs a few bytes of state
 * however large its messages are. */
#include "native.h"

#define SP_HEADER 14
#define SP_MAX_MESSAGE 65536
#define SP_FLAG_CLIENT 1
#define SP_FLAG_PONG_REQUEST 2

struct sp_state {
  uint8_t hdr[SP_HEADER];
  uint8_t hdr_len;   /* header bytes collected; SP_HEADER while in the body */
  bool reply;        /* the current message is copied back */
  uint32_t body_left;
};
_Static_assert(sizeof(struct sp_state) <= CPB_NATIVE_STATE, "sockperf state must fit the flow's area");

static long sp_on_data(void *state, const uint8_t *in, size_t n, uint8_t *out) {
  struct sp_state *s = state;
  size_t r = 0, w = 0;
  while (r < n) {
    if (s->hdr_len < SP_HEADER) {
      size_t take = CPB_MIN((size_t)(SP_HEADER - s->hdr_len), n - r);
      memcpy(s->hdr + s->hdr_len, in + r, take);
      s->hdr_len = (uint8_t)(s->hdr_len + take);
      r += take;
      if (s->hdr_len < SP_HEADER) break;
      uint32_t len = cpb_get_be32(s->hdr + 10);
      if (len < SP_HEADER || len > SP_MAX_MESSAGE) return -EPROTO;
      uint16_t flags = cpb_get_be16(s->hdr + 8);
      s->reply = (flags & SP_FLAG_PONG_REQUEST) != 0;
      s->body_left = len - SP_HEADER;
      if (s->reply) {
        /* At most SP_HEADER - 1 of these bytes came from an earlier call: within CPB_NATIVE_CARRY. */
        memcpy(out + w, s->hdr, SP_HEADER);
        cpb_put_be16(out + w + 8, (uint16_t)(flags & ~SP_FLAG_CLIENT));
        w += SP_HEADER;
      }
    }
    size_t take = CPB_MIN((size_t)s->body_left, n - r);
    if (s->reply) {
      memcpy(out + w, in + r, take);
      w += take;
    }
    r += take;
    s->body_left -= (uint32_t)take;
    if (s->body_left == 0) s->hdr_len = 0;
  }
  return (long)w;
}

const struct cpb_native_app cpb_native_sockperf = {.name = "sockperf", .on_data = sp_on_data};
