/* Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secret)
 * where M is a 4-microsecond clock and F a keyed hash. F is SipHash-2-4 (written here from the paper's
 * description), keyed with the configured 16-byte secret. The same hash, in another domain, gives each
 * flow a random timestamp offset (RFC 7323 §7.1) so TSval does not leak the host's uptime. */
#include "tcb.h"

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static inline uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

#define SIPROUND                                                              \
  do {                                                                        \
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                 \
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                    \
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                    \
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                 \
  } while (0)

uint64_t siphash24(const uint8_t key[16], const void *data, size_t len) {
  const uint8_t *in = data;
  uint64_t k0 = le64(key), k1 = le64(key + 8);
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
  size_t full = len & ~(size_t)7;
  for (size_t i = 0; i < full; i += 8) {
    uint64_t m = le64(in + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t i = 0; i < (len & 7); i++) b |= (uint64_t)in[full + i] << (8 * i);
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t tuple_hash(struct cpb_tcp *t, uint8_t domain, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip,
                           uint16_t rport) {
  uint8_t m[13];
  cpb_put_be32(m, lip);
  cpb_put_be16(m + 4, lport);
  cpb_put_be32(m + 6, rip);
  cpb_put_be16(m + 10, rport);
  m[12] = domain;
  return siphash24(t->cfg.iss_secret, m, sizeof(m));
}

uint32_t iss_generate(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport,
                      cpb_time_t now) {
  if (t->fixed_iss) return t->fixed_iss_val;
  return (uint32_t)(now / 4) + (uint32_t)tuple_hash(t, 1, lip, lport, rip, rport);
}

uint32_t ts_offset_generate(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport) {
  if (t->fixed_iss) return t->fixed_tsoff;
  return (uint32_t)tuple_hash(t, 2, lip, lport, rip, rport);
}
