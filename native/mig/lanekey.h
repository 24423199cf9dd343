/* One key of the migration lane (lane.h): the AES-256-GCM contexts and IVs of both directions, the send
 * counter and the replay window of what was received. Sealing writes the whole datagram (header, which
 * is the AAD, then ciphertext and tag); opening checks the window before the tag and commits it after. */
#ifndef CPB_LANE_KEY_H
#define CPB_LANE_KEY_H
#include <openssl/evp.h>

#include "lane.h"

#define LANE_HDR_LEN 20 /* u8 version | u8 type | u16 0 | u64 key id | u64 seq */
#define LANE_TAG_LEN 16
#define LANE_WINDOW 64

struct lane_key {
  bool used;
  uint64_t id;
  uint64_t tx_seq;  /* last sequence number sent */
  uint32_t tx_msg;  /* last message number sent in parts (lanefrag.h) */
  uint64_t rx_top;  /* highest sequence number accepted */
  uint64_t rx_bits; /* bit i: rx_top - i was accepted */
  uint8_t tx_iv[12], rx_iv[12];
  EVP_CIPHER_CTX *tx, *rx;
  uint64_t installed; /* order of installation: the newest sends */
};

/* Keys k as id; 0 or -ENOMEM (then k is clear). */
int lane_key_init(struct lane_key *k, uint64_t id, const struct cpb_lane_dir *tx, const struct cpb_lane_dir *rx);
/* Frees the contexts (which wipes the key schedules) and zeroes k. */
void lane_key_clear(struct lane_key *k);
/* Seals len bytes of plaintext as a datagram of type into out (cap bytes); its length, or -EMSGSIZE, -EIO. */
long lane_key_seal(struct lane_key *k, uint8_t type, const uint8_t *pt, size_t len, uint8_t *out, size_t cap);
/* Opens datagram p (len >= LANE_HDR_LEN + LANE_TAG_LEN) into plain; the plaintext length, -EALREADY (a
 * replay, or out of the window) or -EBADMSG (the tag does not verify: plain is wiped). */
long lane_key_open(struct lane_key *k, const uint8_t *p, size_t len, uint8_t *plain);
#endif
