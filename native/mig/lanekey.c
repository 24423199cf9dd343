/* See lanekey.h. The nonce is the IV XOR the sequence number, as keys.ts and TLS 1.3 build it. */
#include "lanekey.h"

static void put64le(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint64_t get64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void nonce_of(const uint8_t iv[12], uint64_t seq, uint8_t out[12]) {
  memcpy(out, iv, 12);
  for (int i = 0; i < 8; i++) out[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
}

static EVP_CIPHER_CTX *keyed(const uint8_t key[32], int enc) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (!c) return NULL;
  if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
      EVP_CipherInit_ex(c, NULL, NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(c);
    return NULL;
  }
  return c;
}

int lane_key_init(struct lane_key *k, uint64_t id, const struct cpb_lane_dir *tx, const struct cpb_lane_dir *rx) {
  lane_key_clear(k);
  k->tx = keyed(tx->key, 1);
  k->rx = keyed(rx->key, 0);
  if (!k->tx || !k->rx) {
    lane_key_clear(k);
    return -ENOMEM;
  }
  memcpy(k->tx_iv, tx->iv, 12);
  memcpy(k->rx_iv, rx->iv, 12);
  k->id = id;
  k->used = true;
  return 0;
}

void lane_key_clear(struct lane_key *k) {
  EVP_CIPHER_CTX_free(k->tx);
  EVP_CIPHER_CTX_free(k->rx);
  memset(k, 0, sizeof(*k));
}

long lane_key_seal(struct lane_key *k, uint8_t type, const uint8_t *pt, size_t len, uint8_t *out, size_t cap) {
  if (cap < LANE_HDR_LEN + len + LANE_TAG_LEN) return -EMSGSIZE;
  uint64_t seq = ++k->tx_seq;
  out[0] = CPB_LANE_VERSION;
  out[1] = type;
  out[2] = out[3] = 0;
  put64le(out + 4, k->id);
  put64le(out + 12, seq);
  uint8_t nonce[12];
  nonce_of(k->tx_iv, seq, nonce);
  int n;
  uint8_t *body = out + LANE_HDR_LEN;
  if (EVP_CipherInit_ex(k->tx, NULL, NULL, NULL, nonce, 1) != 1 || EVP_CipherUpdate(k->tx, NULL, &n, out, LANE_HDR_LEN) != 1 ||
      (len && EVP_CipherUpdate(k->tx, body, &n, pt, (int)len) != 1) || EVP_CipherFinal_ex(k->tx, body + len, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(k->tx, EVP_CTRL_AEAD_GET_TAG, LANE_TAG_LEN, body + len) != 1)
    return -EIO;
  return (long)(LANE_HDR_LEN + len + LANE_TAG_LEN);
}

long lane_key_open(struct lane_key *k, const uint8_t *p, size_t len, uint8_t *plain) {
  size_t clen = len - LANE_HDR_LEN - LANE_TAG_LEN;
  uint64_t seq = get64le(p + 12);
  if (seq == 0 || (seq <= k->rx_top && (k->rx_top - seq >= LANE_WINDOW || (k->rx_bits >> (k->rx_top - seq)) & 1)))
    return -EALREADY;
  uint8_t nonce[12], tag[LANE_TAG_LEN];
  memcpy(tag, p + len - LANE_TAG_LEN, LANE_TAG_LEN);
  nonce_of(k->rx_iv, seq, nonce);
  int n;
  if (EVP_CipherInit_ex(k->rx, NULL, NULL, NULL, nonce, 0) != 1 || EVP_CipherUpdate(k->rx, NULL, &n, p, LANE_HDR_LEN) != 1 ||
      (clen && EVP_CipherUpdate(k->rx, plain, &n, p + LANE_HDR_LEN, (int)clen) != 1) ||
      EVP_CIPHER_CTX_ctrl(k->rx, EVP_CTRL_AEAD_SET_TAG, LANE_TAG_LEN, tag) != 1 || EVP_CipherFinal_ex(k->rx, plain + clen, &n) != 1) {
    memset(plain, 0, clen); /* unauthenticated plaintext is never looked at */
    return -EBADMSG;
  }
  if (seq > k->rx_top) {
    uint64_t shift = seq - k->rx_top;
    k->rx_bits = shift >= LANE_WINDOW ? 1 : (k->rx_bits << shift) | 1;
    k->rx_top = seq;
  } else {
    k->rx_bits |= 1ull << (k->rx_top - seq);
  }
  return (long)clen;
}
