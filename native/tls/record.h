/* The TLS record layer: seals and opens TLS 1.3 and TLS 1.2 AEAD records (AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305) with keys that OpenSSL's handshake produced. Bytes in, bytes out: no sockets and
 * no allocation. Its state (struct cpb_tls_rec) is plain data, no pointers, fixed size, so a snapshot
 * is a bounded copy; the EVP cipher contexts live beside it in struct cpb_tls_evp, a cache that is
 * rebuilt from the state whenever a key changes and never travels.
 *
 * Nonces: TLS 1.3 (RFC 8446 §5.3) iv XOR seq (left-padded to 12 bytes); TLS 1.2 GCM (RFC 5288) a 4-byte
 * salt from the key block plus an explicit 8-byte nonce carried in the record (we send seq, as
 * OpenSSL does); TLS 1.2 ChaCha20-Poly1305 (RFC 7905) iv XOR seq like 1.3, nothing explicit. Additional
 * data: 1.3 the record header; 1.2 seq | type | version | plaintext length.
 *
 * Errors: -EPROTO with *alert set to the TLS alert to send (record_overflow, bad_record_mac,
 * decode_error, unexpected_message, protocol_version); -EINVAL on misuse; -ENOSPC output too small.
 *
 * ---- "CTLS" v1 snapshot (the TLS layer's record in the CPBY container) ----
 * All integers little-endian. Total length is exactly CPB_TLS_SNAP_LEN (fixed).
 *   header (16)   "CTLS" | u16 version = 1 | u16 flags = 0 | u32 total length = 1024
 *                 | u32 state length = 1008
 *   state (1008)  offset from the start of the state:
 *     0   u16 TLS version (0x0303 | 0x0304)      2  u16 cipher suite (IANA; must be in the table
 *     4   u8  role (0 client, 1 server)              of record.c, and of that version)
 *     5   u8  session flags (CPB_TLS_SF_*)       6  u16 reserved = 0
 *     8   u32 post-handshake reassembly: u8 header bytes held (0..4) | u8[3] reserved = 0
 *     12  u8[4] handshake header bytes held       16 u32 handshake body bytes still to skip (< 2^24)
 *     20  u32 reserved = 0
 *     24  read direction (120)                   144 write direction (120), each:
 *           +0 u64 seq  +8 u64 records  +16 u64 key updates  +24 u8[32] key (unused tail zero)
 *           +56 u8[12] iv (1.2 GCM: 4-byte salt, the rest zero)  +68 u8[48] traffic secret (1.3;
 *           unused tail zero, all zero on 1.2)  +116 u32 reserved = 0
 *     264 u8 alpn length (0..255) | u8[255] alpn
 *     520 u8 servername length (0..255) | u8[255] servername
 *     776 u8[232] reserved = 0
 * Parsing checks magic, version, lengths, every reserved byte, suite/version agreement, key and
 * secret tails, sequence numbers below 2^64-1, flag bits, the reassembly state, the counters against
 * the sequence numbers (1.2: seq = records + 1, the Finished being uncounted; 1.3: records >= seq),
 * and on 1.3 that each key and IV follow from their traffic secret. Key bytes of 1.2, secrets and
 * counters cannot be judged here: the CPBY container's CRC and the channel's AEAD protect them. */
#ifndef CPB_TLS_RECORD_H
#define CPB_TLS_RECORD_H
#include "../common.h"

#define CPB_TLS12 0x0303 /* same tokens as session.h */
#define CPB_TLS13 0x0304

#define CPB_TLS_CT_CCS 20
#define CPB_TLS_CT_ALERT 21
#define CPB_TLS_CT_HANDSHAKE 22
#define CPB_TLS_CT_APPDATA 23

#define CPB_TLS_HDR_LEN 5
#define CPB_TLS_MAX_PLAIN 16384u                    /* 2^14 */
#define CPB_TLS_MAX_CIPHER (CPB_TLS_MAX_PLAIN + 256u) /* 2^14 + 256 */
#define CPB_TLS_MAX_RECORD (CPB_TLS_HDR_LEN + CPB_TLS_MAX_CIPHER)
#define CPB_TLS_TAG_LEN 16

/* Alerts (RFC 8446 §6). */
enum {
  CPB_TLS_AL_CLOSE_NOTIFY = 0, CPB_TLS_AL_UNEXPECTED_MESSAGE = 10, CPB_TLS_AL_BAD_RECORD_MAC = 20,
  CPB_TLS_AL_RECORD_OVERFLOW = 22, CPB_TLS_AL_HANDSHAKE_FAILURE = 40, CPB_TLS_AL_ILLEGAL_PARAMETER = 47,
  CPB_TLS_AL_DECODE_ERROR = 50, CPB_TLS_AL_PROTOCOL_VERSION = 70, CPB_TLS_AL_INTERNAL_ERROR = 80,
  CPB_TLS_AL_USER_CANCELED = 90, CPB_TLS_AL_NO_RENEGOTIATION = 100,
};

enum cpb_tls_aead { CPB_TLS_AES128GCM = 1, CPB_TLS_AES256GCM = 2, CPB_TLS_CHACHA20 = 3 };
enum cpb_tls_hash { CPB_TLS_SHA256 = 1, CPB_TLS_SHA384 = 2 };

struct cpb_tls_suite_info {
  uint16_t id;       /* IANA */
  uint16_t version;  /* CPB_TLS12 or CPB_TLS13 (0x0303 / 0x0304) */
  uint8_t aead, hash;
  const char *name;     /* OpenSSL's name */
  const char *standard; /* IANA name */
};
/* NULL when the suite is not one this layer can carry. */
const struct cpb_tls_suite_info *cpb_tls_suite(uint16_t id);

struct cpb_tls_dir {
  uint64_t seq, records, key_updates;
  uint8_t key[32];
  uint8_t iv[12];
  uint8_t secret[48];
};

/* Session flags kept in the state (and the snapshot). */
enum {
  CPB_TLS_SF_CLOSE_RCVD = 1u << 0, /* peer's close_notify seen */
  CPB_TLS_SF_CLOSE_SENT = 1u << 1, /* ours sent */
  CPB_TLS_SF_KU_OWED = 1u << 2,    /* peer asked for a KeyUpdate we have not sent yet */
  CPB_TLS_SF_ALL = (1u << 3) - 1,
};

struct cpb_tls_rec {
  uint16_t version, suite;
  uint8_t aead, hash, key_len, secret_len, iv_len; /* iv_len: 12, or 4 (1.2 GCM salt) */
  uint8_t server, flags;
  uint8_t hs_have;        /* post-handshake message reassembly: header bytes held */
  uint8_t hs_hdr[4];
  uint32_t hs_skip;       /* body bytes of an ignored message still to come */
  struct cpb_tls_dir rd, wr;
  uint8_t alpn_len, sni_len;
  char alpn[255], sni[255];
};

/* EVP contexts for both directions, keyed lazily from the state. */
struct cpb_tls_evp {
  void *c[2];      /* EVP_CIPHER_CTX: [0] read, [1] write */
  bool keyed[2];
};
int cpb_tls_evp_init(struct cpb_tls_evp *e);   /* -ENOMEM */
void cpb_tls_evp_free(struct cpb_tls_evp *e);
static inline void cpb_tls_evp_rekey(struct cpb_tls_evp *e, int dir) { e->keyed[dir] = false; }

/* Sets version, suite and lengths. -EINVAL for an unknown suite or a suite of the other version. */
int cpb_tls_rec_init(struct cpb_tls_rec *r, uint16_t version, uint16_t suite, bool server);
/* TLS 1.3: installs a traffic secret (secret_len bytes) for dir (0 read, 1 write) and derives key/iv. */
int cpb_tls_rec_set_secret(struct cpb_tls_rec *r, int dir, const uint8_t *secret);
/* TLS 1.2: derives both directions from the master secret and the randoms (RFC 5246 §6.3). */
int cpb_tls_rec_set_master(struct cpb_tls_rec *r, const uint8_t master[48], const uint8_t client_random[32],
                           const uint8_t server_random[32]);
/* TLS 1.3 KeyUpdate for dir: secret = HKDF-Expand-Label(secret, "traffic upd", "", Hash.length), new
 * key/iv, seq 0. The caller rekeys the EVP cache. */
int cpb_tls_rec_update(struct cpb_tls_rec *r, int dir);

/* Ciphertext overhead of one record after the header (tag, explicit nonce, 1.3 inner type byte). */
size_t cpb_tls_rec_overhead(const struct cpb_tls_rec *r);
/* Checks a record header: type, version, length. Returns the body length or -EPROTO (+alert). */
long cpb_tls_rec_check_hdr(const struct cpb_tls_rec *r, const uint8_t hdr[5], uint8_t *alert);
/* Seals len (<= 16384) bytes of content type `type` into out as one whole record (header included);
 * returns its length. Advances the write seq. */
long cpb_tls_rec_seal(struct cpb_tls_rec *r, struct cpb_tls_evp *e, uint8_t type, const void *pt, size_t len,
                      uint8_t *out, size_t cap);
/* Opens one whole record in place (rec: header + body, len bytes). On success returns the content
 * length, *type the (inner) content type and *content points into rec. Advances the read seq. */
long cpb_tls_rec_open(struct cpb_tls_rec *r, struct cpb_tls_evp *e, uint8_t *rec, size_t len, uint8_t *type,
                      uint8_t **content, uint8_t *alert);

/* Snapshot of the state ("CTLS" v1 above). */
#define CPB_TLS_SNAP_MAGIC "CTLS"
#define CPB_TLS_SNAP_VERSION 1
#define CPB_TLS_SNAP_HDR_LEN 16
#define CPB_TLS_SNAP_STATE_LEN 1008
#define CPB_TLS_SNAP_LEN (CPB_TLS_SNAP_HDR_LEN + CPB_TLS_SNAP_STATE_LEN)
long cpb_tls_rec_encode(const struct cpb_tls_rec *r, uint8_t *buf, size_t cap);
/* -EBADMSG framing, -EINVAL a field out of range; *r untouched on failure. */
int cpb_tls_rec_decode(struct cpb_tls_rec *r, const uint8_t *buf, size_t len);

/* Key schedule helpers (keysched.c). */
int cpb_tls_hkdf_expand_label(int hash, const uint8_t *secret, size_t secret_len, const char *label,
                              const uint8_t *ctx, size_t ctx_len, uint8_t *out, size_t out_len);
int cpb_tls12_prf(int hash, const uint8_t *secret, size_t secret_len, const char *label, const uint8_t *seed,
                  size_t seed_len, uint8_t *out, size_t out_len);
size_t cpb_tls_hash_len(int hash);
#endif
