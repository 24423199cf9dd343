/* What handshake.c and session.c share: the session and context structs. Not part of the contract
 * (session.h is); the addon never sees inside. */
#ifndef CPB_TLS_SESS_INT_H
#define CPB_TLS_SESS_INT_H
#include <openssl/ssl.h>

#include "record.h"
#include "session.h"

struct cpb_tls_ctx {
  SSL_CTX *ssl_ctx;
  int refs;
  bool server, sni_callback, verify_peer;
  uint8_t alpn[256]; /* server: the protocols it accepts, wire format */
  size_t alpn_len;
};

struct cpb_tls_sess {
  struct cpb_tls_rec rec; /* the record layer's plain state: what a snapshot carries */
  struct cpb_tls_evp evp;
  bool done;     /* record layer active */
  int err;       /* sticky: after a fatal error every call returns it */
  /* handshake phase (all released at the switch) */
  SSL *ssl;
  struct cpb_tls_ctx *ctx, *sni_ctx; /* references held */
  bool server, want_sni, sni_answered, finishing;
  bool have_c, have_s, have_master;
  uint8_t c_secret[48], s_secret[48], master[48];
  size_t c_len, s_len;
  char servername[256];
  /* kept for cpb_tls_info */
  char protocol[8], cipher[64], standard[64];
  char last_error[200];
  uint8_t buf[CPB_TLS_MAX_RECORD]; /* one whole record, in or out */
};

/* handshake.c */
void tls_hs_release(struct cpb_tls_sess *s);
/* session.c */
void tls_set_error(struct cpb_tls_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Seals and sends one control record if TCP has room for it whole: 0, -EAGAIN, or TCP's error. */
int tls_send_ctl(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, uint8_t type, const uint8_t *msg, size_t len,
                 cpb_time_t now);
void tls_names_from_suite(struct cpb_tls_sess *s);
#endif
