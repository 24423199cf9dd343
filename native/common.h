/* Shared basics for the engine: fixed-width types, byte order, error codes, the clock type.
 * Protocol code never reads a clock: every entry point takes `now` (microseconds, monotonic). */
#ifndef CPB_COMMON_H
#define CPB_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t cpb_time_t; /* microseconds on a monotonic clock */

#define CPB_US_PER_MS 1000ULL
#define CPB_US_PER_S 1000000ULL

#define CPB_LIKELY(x) __builtin_expect(!!(x), 1)
#define CPB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CPB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CPB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CPB_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Functions return 0 or a positive count on success and -errno on failure (libxdp style). */

static inline uint16_t cpb_get_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t cpb_get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void cpb_put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void cpb_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4). */
static inline bool seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline bool seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline bool seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline bool seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

/* IPv4 addresses are kept in host byte order everywhere inside the engine. */
typedef uint32_t cpb_ip4_t;

#endif
