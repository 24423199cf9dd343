/* Key schedule helpers: HKDF-Expand-Label (RFC 8446 §7.1, RFC 5869 §2.3) for TLS 1.3 traffic keys and
 * KeyUpdate, and the TLS 1.2 PRF P_hash (RFC 5246 §5) for the key block. Built on one-shot HMAC from
 * OpenSSL; every intermediate buffer is wiped before returning. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "record.h"

size_t cpb_tls_hash_len(int hash) { return hash == CPB_TLS_SHA384 ? 48 : hash == CPB_TLS_SHA256 ? 32 : 0; }

static const EVP_MD *md_of(int hash) {
  return hash == CPB_TLS_SHA384 ? EVP_sha384() : hash == CPB_TLS_SHA256 ? EVP_sha256() : NULL;
}

static int hmac(const EVP_MD *md, const uint8_t *key, size_t key_len, const uint8_t *a, size_t alen,
                const uint8_t *b, size_t blen, uint8_t *out) {
  uint8_t msg[512];
  if (alen + blen > sizeof(msg)) return -EINVAL;
  memcpy(msg, a, alen);
  if (blen) memcpy(msg + alen, b, blen);
  unsigned int olen = 0;
  uint8_t *r = HMAC(md, key, (int)key_len, msg, alen + blen, out, &olen);
  OPENSSL_cleanse(msg, sizeof(msg));
  return r ? 0 : -EIO;
}

int cpb_tls_hkdf_expand_label(int hash, const uint8_t *secret, size_t secret_len, const char *label,
                              const uint8_t *ctx, size_t ctx_len, uint8_t *out, size_t out_len) {
  const EVP_MD *md = md_of(hash);
  size_t hl = cpb_tls_hash_len(hash), llen = strlen(label);
  if (!md || out_len == 0 || out_len > 255 * hl || llen > 249 || ctx_len > 255) return -EINVAL;
  /* HkdfLabel: u16 length | opaque label<7..255> = "tls13 " + label | opaque context<0..255> */
  uint8_t info[2 + 1 + 255 + 1 + 255 + 1];
  size_t n = 0;
  cpb_put_be16(info, (uint16_t)out_len);
  n = 2;
  info[n++] = (uint8_t)(6 + llen);
  memcpy(info + n, "tls13 ", 6);
  n += 6;
  memcpy(info + n, label, llen);
  n += llen;
  info[n++] = (uint8_t)ctx_len;
  if (ctx_len) memcpy(info + n, ctx, ctx_len);
  n += ctx_len;
  /* HKDF-Expand: T(i) = HMAC(PRK, T(i-1) | info | i) */
  uint8_t t[64], in[64 + sizeof(info)];
  size_t tlen = 0, done = 0;
  int rc = 0;
  for (uint8_t i = 1; done < out_len; i++) {
    memcpy(in, t, tlen);
    memcpy(in + tlen, info, n);
    in[tlen + n] = i;
    if ((rc = hmac(md, secret, secret_len, in, tlen + n + 1, NULL, 0, t)) != 0) break;
    tlen = hl;
    size_t take = CPB_MIN(hl, out_len - done);
    memcpy(out + done, t, take);
    done += take;
  }
  OPENSSL_cleanse(t, sizeof(t));
  OPENSSL_cleanse(in, sizeof(in));
  return rc;
}

int cpb_tls12_prf(int hash, const uint8_t *secret, size_t secret_len, const char *label, const uint8_t *seed,
                  size_t seed_len, uint8_t *out, size_t out_len) {
  const EVP_MD *md = md_of(hash);
  size_t hl = cpb_tls_hash_len(hash), llen = strlen(label);
  uint8_t ls[256];
  if (!md || llen + seed_len > sizeof(ls)) return -EINVAL;
  memcpy(ls, label, llen);
  memcpy(ls + llen, seed, seed_len);
  size_t lslen = llen + seed_len;
  /* P_hash: A(0) = seed, A(i) = HMAC(secret, A(i-1)); output HMAC(secret, A(i) | seed) ... */
  uint8_t a[64], blk[64];
  int rc = hmac(md, secret, secret_len, ls, lslen, NULL, 0, a);
  size_t done = 0;
  while (rc == 0 && done < out_len) {
    if ((rc = hmac(md, secret, secret_len, a, hl, ls, lslen, blk)) != 0) break;
    size_t take = CPB_MIN(hl, out_len - done);
    memcpy(out + done, blk, take);
    done += take;
    rc = hmac(md, secret, secret_len, a, hl, NULL, 0, a);
  }
  OPENSSL_cleanse(a, sizeof(a));
  OPENSSL_cleanse(blk, sizeof(blk));
  OPENSSL_cleanse(ls, sizeof(ls));
  return rc;
}
