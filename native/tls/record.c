/* The record layer proper: the suite table, key installation, seal/open of one record, and the CTLS
 * snapshot codec (layout in record.h). The EVP contexts are created once per session and keyed once
 * per key; a record only sets its nonce, so the packet path does not allocate. */
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "record.h"

static const struct cpb_tls_suite_info suites[] = {
    {0x1301, CPB_TLS13, CPB_TLS_AES128GCM, CPB_TLS_SHA256, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"},
    {0x1302, CPB_TLS13, CPB_TLS_AES256GCM, CPB_TLS_SHA384, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"},
    {0x1303, CPB_TLS13, CPB_TLS_CHACHA20, CPB_TLS_SHA256, "TLS_CHACHA20_POLY1305_SHA256",
     "TLS_CHACHA20_POLY1305_SHA256"},
    {0xC02B, CPB_TLS12, CPB_TLS_AES128GCM, CPB_TLS_SHA256, "ECDHE-ECDSA-AES128-GCM-SHA256",
     "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
    {0xC02C, CPB_TLS12, CPB_TLS_AES256GCM, CPB_TLS_SHA384, "ECDHE-ECDSA-AES256-GCM-SHA384",
     "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
    {0xC02F, CPB_TLS12, CPB_TLS_AES128GCM, CPB_TLS_SHA256, "ECDHE-RSA-AES128-GCM-SHA256",
     "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0xC030, CPB_TLS12, CPB_TLS_AES256GCM, CPB_TLS_SHA384, "ECDHE-RSA-AES256-GCM-SHA384",
     "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0xCCA8, CPB_TLS12, CPB_TLS_CHACHA20, CPB_TLS_SHA256, "ECDHE-RSA-CHACHA20-POLY1305",
     "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xCCA9, CPB_TLS12, CPB_TLS_CHACHA20, CPB_TLS_SHA256, "ECDHE-ECDSA-CHACHA20-POLY1305",
     "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0x009E, CPB_TLS12, CPB_TLS_AES128GCM, CPB_TLS_SHA256, "DHE-RSA-AES128-GCM-SHA256",
     "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009F, CPB_TLS12, CPB_TLS_AES256GCM, CPB_TLS_SHA384, "DHE-RSA-AES256-GCM-SHA384",
     "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0xCCAA, CPB_TLS12, CPB_TLS_CHACHA20, CPB_TLS_SHA256, "DHE-RSA-CHACHA20-POLY1305",
     "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0x009C, CPB_TLS12, CPB_TLS_AES128GCM, CPB_TLS_SHA256, "AES128-GCM-SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009D, CPB_TLS12, CPB_TLS_AES256GCM, CPB_TLS_SHA384, "AES256-GCM-SHA384", "TLS_RSA_WITH_AES_256_GCM_SHA384"},
};

const struct cpb_tls_suite_info *cpb_tls_suite(uint16_t id) {
  for (size_t i = 0; i < CPB_ARRAY_LEN(suites); i++)
    if (suites[i].id == id) return &suites[i];
  return NULL;
}

static const EVP_CIPHER *cipher_of(int aead) {
  switch (aead) {
  case CPB_TLS_AES128GCM: return EVP_aes_128_gcm();
  case CPB_TLS_AES256GCM: return EVP_aes_256_gcm();
  case CPB_TLS_CHACHA20: return EVP_chacha20_poly1305();
  default: return NULL;
  }
}

int cpb_tls_evp_init(struct cpb_tls_evp *e) {
  memset(e, 0, sizeof(*e));
  e->c[0] = EVP_CIPHER_CTX_new();
  e->c[1] = EVP_CIPHER_CTX_new();
  if (!e->c[0] || !e->c[1]) {
    cpb_tls_evp_free(e);
    return -ENOMEM;
  }
  return 0;
}

void cpb_tls_evp_free(struct cpb_tls_evp *e) {
  EVP_CIPHER_CTX_free(e->c[0]); /* _free also wipes the key schedule */
  EVP_CIPHER_CTX_free(e->c[1]);
  memset(e, 0, sizeof(*e));
}

int cpb_tls_rec_init(struct cpb_tls_rec *r, uint16_t version, uint16_t suite, bool server) {
  const struct cpb_tls_suite_info *si = cpb_tls_suite(suite);
  if (!si || si->version != version) return -EINVAL;
  memset(r, 0, sizeof(*r));
  r->version = version;
  r->suite = suite;
  r->aead = si->aead;
  r->hash = si->hash;
  r->key_len = si->aead == CPB_TLS_AES128GCM ? 16 : 32;
  r->secret_len = version == CPB_TLS13 ? (uint8_t)cpb_tls_hash_len(si->hash) : 0;
  r->iv_len = (version == CPB_TLS12 && si->aead != CPB_TLS_CHACHA20) ? 4 : 12;
  r->server = server;
  return 0;
}

static struct cpb_tls_dir *dir_of(struct cpb_tls_rec *r, int dir) { return dir ? &r->wr : &r->rd; }

static int derive13(const struct cpb_tls_rec *r, struct cpb_tls_dir *d) {
  int rc = cpb_tls_hkdf_expand_label(r->hash, d->secret, r->secret_len, "key", NULL, 0, d->key, r->key_len);
  if (rc == 0) rc = cpb_tls_hkdf_expand_label(r->hash, d->secret, r->secret_len, "iv", NULL, 0, d->iv, 12);
  return rc;
}

int cpb_tls_rec_set_secret(struct cpb_tls_rec *r, int dir, const uint8_t *secret) {
  if (r->version != CPB_TLS13) return -EINVAL;
  struct cpb_tls_dir *d = dir_of(r, dir);
  memcpy(d->secret, secret, r->secret_len);
  d->seq = 0;
  return derive13(r, d);
}

int cpb_tls_rec_set_master(struct cpb_tls_rec *r, const uint8_t master[48], const uint8_t client_random[32],
                           const uint8_t server_random[32]) {
  if (r->version != CPB_TLS12) return -EINVAL;
  uint8_t seed[64], kb[2 * 32 + 2 * 12];
  memcpy(seed, server_random, 32);
  memcpy(seed + 32, client_random, 32);
  size_t need = 2u * r->key_len + 2u * r->iv_len; /* AEAD suites have no MAC keys */
  int rc = cpb_tls12_prf(r->hash, master, 48, "key expansion", seed, sizeof(seed), kb, need);
  if (rc == 0) {
    struct cpb_tls_dir *cw = r->server ? &r->rd : &r->wr, *sw = r->server ? &r->wr : &r->rd;
    memcpy(cw->key, kb, r->key_len);
    memcpy(sw->key, kb + r->key_len, r->key_len);
    memcpy(cw->iv, kb + 2 * r->key_len, r->iv_len);
    memcpy(sw->iv, kb + 2 * r->key_len + r->iv_len, r->iv_len);
  }
  OPENSSL_cleanse(kb, sizeof(kb));
  return rc;
}

int cpb_tls_rec_update(struct cpb_tls_rec *r, int dir) {
  if (r->version != CPB_TLS13) return -EINVAL;
  struct cpb_tls_dir *d = dir_of(r, dir);
  uint8_t next[48];
  int rc = cpb_tls_hkdf_expand_label(r->hash, d->secret, r->secret_len, "traffic upd", NULL, 0, next, r->secret_len);
  if (rc == 0) {
    memcpy(d->secret, next, r->secret_len);
    rc = derive13(r, d);
    d->seq = 0;
    d->key_updates++;
  }
  OPENSSL_cleanse(next, sizeof(next));
  return rc;
}

size_t cpb_tls_rec_overhead(const struct cpb_tls_rec *r) {
  if (r->version == CPB_TLS13) return 1 + CPB_TLS_TAG_LEN;
  return CPB_TLS_TAG_LEN + (r->iv_len == 4 ? 8 : 0);
}

long cpb_tls_rec_check_hdr(const struct cpb_tls_rec *r, const uint8_t hdr[5], uint8_t *alert) {
  uint8_t type = hdr[0];
  uint16_t ver = cpb_get_be16(hdr + 1), len = cpb_get_be16(hdr + 3);
  if (type < CPB_TLS_CT_CCS || type > CPB_TLS_CT_APPDATA) {
    *alert = CPB_TLS_AL_UNEXPECTED_MESSAGE;
    return -EPROTO;
  }
  if (ver != 0x0303) {
    *alert = CPB_TLS_AL_PROTOCOL_VERSION;
    return -EPROTO;
  }
  if (len > CPB_TLS_MAX_CIPHER) {
    *alert = CPB_TLS_AL_RECORD_OVERFLOW;
    return -EPROTO;
  }
  /* After the handshake every record is protected: TLS 1.3 hides the type (outer 23); a
   * change_cipher_spec is never valid once the record layer runs. */
  if (type == CPB_TLS_CT_CCS || (r->version == CPB_TLS13 && type != CPB_TLS_CT_APPDATA)) {
    *alert = CPB_TLS_AL_UNEXPECTED_MESSAGE;
    return -EPROTO;
  }
  if (len < cpb_tls_rec_overhead(r) - (r->version == CPB_TLS13 ? 1 : 0) || (r->version == CPB_TLS13 && len < 17)) {
    *alert = CPB_TLS_AL_DECODE_ERROR;
    return -EPROTO;
  }
  return len;
}

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* Per-record nonce: 1.3 and 1.2 ChaCha XOR the seq into the IV's low 8 bytes; 1.2 GCM appends the
 * explicit part (= seq) to the salt. */
static void make_nonce(const struct cpb_tls_rec *r, const struct cpb_tls_dir *d, const uint8_t *explicit_nonce,
                       uint8_t nonce[12]) {
  if (r->iv_len == 4) {
    memcpy(nonce, d->iv, 4);
    memcpy(nonce + 4, explicit_nonce, 8);
    return;
  }
  uint8_t s[8];
  put_be64(s, d->seq);
  memcpy(nonce, d->iv, 12);
  for (int i = 0; i < 8; i++) nonce[4 + i] ^= s[i];
}

static int key_ctx(struct cpb_tls_rec *r, struct cpb_tls_evp *e, int dir) {
  if (e->keyed[dir]) return 0;
  EVP_CIPHER_CTX *c = e->c[dir];
  const EVP_CIPHER *ci = cipher_of(r->aead);
  if (!ci || !c) return -EINVAL;
  if (EVP_CipherInit_ex(c, ci, NULL, NULL, NULL, dir) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
      EVP_CipherInit_ex(c, NULL, NULL, dir_of(r, dir)->key, NULL, dir) != 1)
    return -EIO;
  e->keyed[dir] = true;
  return 0;
}

long cpb_tls_rec_seal(struct cpb_tls_rec *r, struct cpb_tls_evp *e, uint8_t type, const void *pt, size_t len,
                      uint8_t *out, size_t cap) {
  struct cpb_tls_dir *d = &r->wr;
  if (len > CPB_TLS_MAX_PLAIN || (len == 0 && type != CPB_TLS_CT_APPDATA)) return -EINVAL;
  if (d->seq == UINT64_MAX) return -EOVERFLOW; /* RFC 8446 §5.3: never wrap; rekey or close */
  size_t total = CPB_TLS_HDR_LEN + len + cpb_tls_rec_overhead(r);
  if (cap < total) return -ENOSPC;
  int rc = key_ctx(r, e, 1);
  if (rc) return rc;
  EVP_CIPHER_CTX *c = e->c[1];
  uint8_t nonce[12], aad[13], *body = out + CPB_TLS_HDR_LEN;
  size_t aad_len;
  int n;
  out[0] = r->version == CPB_TLS13 ? CPB_TLS_CT_APPDATA : type;
  cpb_put_be16(out + 1, 0x0303);
  cpb_put_be16(out + 3, (uint16_t)(total - CPB_TLS_HDR_LEN));
  if (r->version == CPB_TLS13) {
    memcpy(aad, out, 5);
    aad_len = 5;
  } else {
    put_be64(aad, d->seq);
    aad[8] = type;
    cpb_put_be16(aad + 9, 0x0303);
    cpb_put_be16(aad + 11, (uint16_t)len);
    aad_len = 13;
    if (r->iv_len == 4) { /* explicit nonce = seq */
      put_be64(body, d->seq);
      body += 8;
    }
  }
  make_nonce(r, d, body - 8, nonce);
  if (EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 1) != 1 || EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) != 1)
    return -EIO;
  size_t off = 0;
  if (len && EVP_CipherUpdate(c, body, &n, pt, (int)len) != 1) return -EIO;
  off = len;
  if (r->version == CPB_TLS13) {
    if (EVP_CipherUpdate(c, body + off, &n, &type, 1) != 1) return -EIO;
    off += 1;
  }
  if (EVP_CipherFinal_ex(c, body + off, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, CPB_TLS_TAG_LEN, body + off) != 1)
    return -EIO;
  d->seq++;
  d->records++;
  return (long)total;
}

long cpb_tls_rec_open(struct cpb_tls_rec *r, struct cpb_tls_evp *e, uint8_t *rec, size_t len, uint8_t *type,
                      uint8_t **content, uint8_t *alert) {
  struct cpb_tls_dir *d = &r->rd;
  if (len < CPB_TLS_HDR_LEN) return -EINVAL;
  long blen = cpb_tls_rec_check_hdr(r, rec, alert);
  if (blen < 0) return blen;
  if ((size_t)blen + CPB_TLS_HDR_LEN != len) return -EINVAL;
  if (d->seq == UINT64_MAX) {
    *alert = CPB_TLS_AL_INTERNAL_ERROR;
    return -EPROTO;
  }
  int rc = key_ctx(r, e, 0);
  if (rc) return rc;
  EVP_CIPHER_CTX *c = e->c[0];
  uint8_t nonce[12], aad[13], *body = rec + CPB_TLS_HDR_LEN;
  size_t aad_len, clen = (size_t)blen - CPB_TLS_TAG_LEN;
  int n;
  if (r->version == CPB_TLS13) {
    memcpy(aad, rec, 5);
    aad_len = 5;
  } else {
    if (r->iv_len == 4) {
      body += 8;
      clen -= 8;
    }
    put_be64(aad, d->seq);
    aad[8] = rec[0];
    cpb_put_be16(aad + 9, 0x0303);
    cpb_put_be16(aad + 11, (uint16_t)clen);
    aad_len = 13;
  }
  make_nonce(r, d, body - 8, nonce);
  if (EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 0) != 1 || EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) != 1)
    return -EIO;
  if (clen && EVP_CipherUpdate(c, body, &n, body, (int)clen) != 1) return -EIO;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, CPB_TLS_TAG_LEN, body + clen) != 1) return -EIO;
  if (EVP_CipherFinal_ex(c, body + clen, &n) != 1) {
    OPENSSL_cleanse(body, clen); /* never hand out unauthenticated plaintext */
    *alert = CPB_TLS_AL_BAD_RECORD_MAC;
    return -EPROTO;
  }
  uint8_t t = rec[0];
  if (r->version == CPB_TLS13) { /* TLSInnerPlaintext: content | type | zeros */
    while (clen > 0 && body[clen - 1] == 0) clen--;
    if (clen == 0) {
      *alert = CPB_TLS_AL_UNEXPECTED_MESSAGE;
      return -EPROTO;
    }
    t = body[--clen];
    if (t < CPB_TLS_CT_ALERT || t > CPB_TLS_CT_APPDATA) {
      *alert = CPB_TLS_AL_UNEXPECTED_MESSAGE;
      return -EPROTO;
    }
  }
  if (clen > CPB_TLS_MAX_PLAIN) {
    *alert = CPB_TLS_AL_RECORD_OVERFLOW;
    return -EPROTO;
  }
  d->seq++;
  d->records++;
  *type = t;
  *content = body;
  return (long)clen;
}

/* ------------------------------------------------------------------ CTLS v1 snapshot */

static void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_le64(const uint8_t *p) { return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32); }

#define S_DIR_RD 24
#define S_DIR_WR 144
#define S_ALPN 264
#define S_SNI 520
#define S_RESV 776

static void enc_dir(uint8_t *p, const struct cpb_tls_dir *d) {
  put_le64(p, d->seq);
  put_le64(p + 8, d->records);
  put_le64(p + 16, d->key_updates);
  memcpy(p + 24, d->key, 32);
  memcpy(p + 56, d->iv, 12);
  memcpy(p + 68, d->secret, 48);
}

long cpb_tls_rec_encode(const struct cpb_tls_rec *r, uint8_t *buf, size_t cap) {
  if (cap < CPB_TLS_SNAP_LEN) return -ENOSPC;
  memset(buf, 0, CPB_TLS_SNAP_LEN);
  memcpy(buf, CPB_TLS_SNAP_MAGIC, 4);
  put_le16(buf + 4, CPB_TLS_SNAP_VERSION);
  put_le32(buf + 8, CPB_TLS_SNAP_LEN);
  put_le32(buf + 12, CPB_TLS_SNAP_STATE_LEN);
  uint8_t *s = buf + CPB_TLS_SNAP_HDR_LEN;
  put_le16(s, r->version);
  put_le16(s + 2, r->suite);
  s[4] = r->server;
  s[5] = r->flags;
  s[8] = r->hs_have;
  memcpy(s + 12, r->hs_hdr, 4);
  put_le32(s + 16, r->hs_skip);
  enc_dir(s + S_DIR_RD, &r->rd);
  enc_dir(s + S_DIR_WR, &r->wr);
  s[S_ALPN] = r->alpn_len;
  memcpy(s + S_ALPN + 1, r->alpn, r->alpn_len);
  s[S_SNI] = r->sni_len;
  memcpy(s + S_SNI + 1, r->sni, r->sni_len);
  return CPB_TLS_SNAP_LEN;
}

static bool all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

static int dec_dir(const struct cpb_tls_rec *r, const uint8_t *p, struct cpb_tls_dir *d) {
  d->seq = get_le64(p);
  d->records = get_le64(p + 8);
  d->key_updates = get_le64(p + 16);
  memcpy(d->key, p + 24, 32);
  memcpy(d->iv, p + 56, 12);
  memcpy(d->secret, p + 68, 48);
  if (d->seq == UINT64_MAX || !all_zero(p + 116, 4)) return -EINVAL;
  if (!all_zero(d->key + r->key_len, 32u - r->key_len) || !all_zero(d->iv + r->iv_len, 12u - r->iv_len)) return -EINVAL;
  if (!all_zero(d->secret + r->secret_len, 48u - r->secret_len)) return -EINVAL;
  if (r->version == CPB_TLS12) {
    /* 1.2: the Finished was record 0 under these keys and is not counted */
    if (d->key_updates != 0 || d->seq != d->records + 1) return -EINVAL;
    return 0;
  }
  if (d->records < d->seq || d->key_updates > d->records) return -EINVAL;
  /* 1.3: key and IV follow from the traffic secret; a state where they do not is corrupt */
  struct cpb_tls_dir x = *d;
  int bad = derive13(r, &x) != 0 || CRYPTO_memcmp(x.key, d->key, 32) != 0 ||
            CRYPTO_memcmp(x.iv, d->iv, 12) != 0;
  OPENSSL_cleanse(&x, sizeof(x));
  return bad ? -EINVAL : 0;
}

int cpb_tls_rec_decode(struct cpb_tls_rec *out, const uint8_t *buf, size_t len) {
  if (!buf || len < CPB_TLS_SNAP_HDR_LEN || memcmp(buf, CPB_TLS_SNAP_MAGIC, 4) != 0) return -EBADMSG;
  if (get_le16(buf + 4) != CPB_TLS_SNAP_VERSION || get_le16(buf + 6) != 0) return -EBADMSG;
  if (get_le32(buf + 8) != CPB_TLS_SNAP_LEN || get_le32(buf + 12) != CPB_TLS_SNAP_STATE_LEN || len != CPB_TLS_SNAP_LEN)
    return -EBADMSG;
  const uint8_t *s = buf + CPB_TLS_SNAP_HDR_LEN;
  struct cpb_tls_rec r;
  if (cpb_tls_rec_init(&r, get_le16(s), get_le16(s + 2), s[4] == 1) != 0) return -EINVAL;
  if (s[4] > 1 || (s[5] & ~CPB_TLS_SF_ALL) || !all_zero(s + 6, 2) || !all_zero(s + 9, 3) || !all_zero(s + 20, 4))
    return -EINVAL;
  r.flags = s[5];
  if (r.version == CPB_TLS12 && (r.flags & CPB_TLS_SF_KU_OWED)) return -EINVAL;
  r.hs_have = s[8];
  memcpy(r.hs_hdr, s + 12, 4);
  r.hs_skip = get_le32(s + 16);
  /* Reassembly: either some header bytes (< 4) or a body being skipped, never both. */
  if (r.hs_have > 3 || !all_zero(r.hs_hdr + r.hs_have, 4u - r.hs_have) || r.hs_skip >= (1u << 24) ||
      (r.hs_have && r.hs_skip))
    return -EINVAL;
  if (dec_dir(&r, s + S_DIR_RD, &r.rd) != 0 || dec_dir(&r, s + S_DIR_WR, &r.wr) != 0) return -EINVAL;
  r.alpn_len = s[S_ALPN];
  memcpy(r.alpn, s + S_ALPN + 1, 255);
  r.sni_len = s[S_SNI];
  memcpy(r.sni, s + S_SNI + 1, 255);
  if (!all_zero((const uint8_t *)r.alpn + r.alpn_len, 255u - r.alpn_len) ||
      !all_zero((const uint8_t *)r.sni + r.sni_len, 255u - r.sni_len) || !all_zero(s + S_RESV, CPB_TLS_SNAP_STATE_LEN - S_RESV))
    return -EINVAL;
  for (unsigned i = 0; i < r.alpn_len; i++)
    if (r.alpn[i] == 0) return -EINVAL; /* names are handed out as C strings */
  for (unsigned i = 0; i < r.sni_len; i++)
    if (r.sni[i] == 0) return -EINVAL;
  *out = r;
  OPENSSL_cleanse(&r, sizeof(r));
  return 0;
}
