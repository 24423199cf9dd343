/* Internet checksum (RFC 1071).
 *
 * The one's-complement sum does not depend on byte order (RFC 1071 §2(B)): adding native-endian words
 * and swapping the folded 16-bit result once gives the same value as adding big-endian words. So the
 * bulk loop loads 64-bit words with memcpy (any alignment, no aliasing games), adds them with an
 * end-around carry (2^64 = 1 mod 0xffff), and the result is converted once at the end. The
 * accumulator callers hold is always a sum of *big-endian* 16-bit words, so pieces summed here,
 * csum_pseudo4 and hand-added header fields compose freely. */
#include "checksum.h"

static inline uint64_t add_carry(uint64_t a, uint64_t b) {
  uint64_t s = a + b;
  return s + (s < b); /* cannot overflow again: s < b <= UINT64_MAX means s <= UINT64_MAX - 1 */
}

static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Native-endian one's-complement sum of `len` bytes, folded to 16 bits. */
static uint16_t sum_native(const uint8_t *p, size_t len) {
  uint64_t s0 = 0, s1 = 0;
  /* Two independent accumulators let the carries of consecutive words overlap in the pipeline. */
  while (len >= 32) {
    s0 = add_carry(s0, load64(p));
    s1 = add_carry(s1, load64(p + 8));
    s0 = add_carry(s0, load64(p + 16));
    s1 = add_carry(s1, load64(p + 24));
    p += 32;
    len -= 32;
  }
  s0 = add_carry(s0, s1);
  while (len >= 8) {
    s0 = add_carry(s0, load64(p));
    p += 8;
    len -= 8;
  }
  /* Every load starts at an even offset, so 16-bit word boundaries stay where RFC 1071 puts them. */
  if (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    s0 = add_carry(s0, w);
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    s0 = add_carry(s0, w);
    p += 2;
    len -= 2;
  }
  if (len) {
    uint8_t pad[2] = {p[0], 0}; /* odd tail: the missing byte is zero in wire order */
    uint16_t w;
    memcpy(&w, pad, 2);
    s0 = add_carry(s0, w);
  }
  s0 = (s0 & 0xffffffffu) + (s0 >> 32);
  s0 = (s0 & 0xffffu) + (s0 >> 16);
  s0 = (s0 & 0xffffu) + (s0 >> 16);
  s0 = (s0 & 0xffffu) + (s0 >> 16);
  return (uint16_t)s0;
}

uint32_t csum_add(uint32_t acc, const void *data, size_t len) {
  uint16_t s = sum_native((const uint8_t *)data, len);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  s = __builtin_bswap16(s);
#endif
  uint64_t t = (uint64_t)acc + s;
  return (uint32_t)((t & 0xffffffffu) + (t >> 32)); /* 2^32 = 1 mod 0xffff, and this cannot carry */
}

uint16_t csum_fold(uint32_t acc) {
  uint32_t s = (acc & 0xffffu) + (acc >> 16);
  s = (s & 0xffffu) + (s >> 16);
  return (uint16_t)~s;
}

uint32_t csum_pseudo4(cpb_ip4_t src, cpb_ip4_t dst, uint8_t proto, uint16_t l4_len) {
  return (src >> 16) + (src & 0xffffu) + (dst >> 16) + (dst & 0xffffu) + proto + l4_len;
}
