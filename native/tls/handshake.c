/* The handshake half: an SSL_CTX per cpb_tls_ctx and an SSL per session over memory BIOs, fed from
 * TCP one whole record at a time, until the handshake is done; then the switch to our record layer.
 *
 * Feeding whole records and stopping at completion keeps every record after the switch in TCP, so the
 * record layer starts exactly where OpenSSL stopped reading. Write side: the wbio is drained into TCP
 * before OpenSSL runs again, so what it holds after the completing call was produced by that call; a
 * TLS 1.3 server's NewSessionTickets are in there, under the application key: each is counted (by
 * opening it with that key at the next sequence number) so our first record gets the right seq.
 * TLS 1.2: both Finished messages are seq 0 under the new keys, so application data starts at 1.
 * Secrets come from the keylog callback; TLS 1.2's master secret is cross-checked with the session's. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>

#include "sess_int.h"

/* Record-layer-compatible TLS 1.2 suites (AEAD only, forward secret) unless the caller says otherwise. */
#define DEFAULT_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+aRSA+AESGCM:DHE+aRSA+CHACHA20:!aNULL:!PSK"

/* ------------------------------------------------------------------ context */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* "LABEL <client_random hex> <secret hex>" */
static void keylog_cb(const SSL *ssl, const char *line) {
  struct cpb_tls_sess *s = SSL_get_app_data(ssl);
  if (!s) return;
  const char *sp = strchr(line, ' ');
  if (!sp) return;
  size_t ll = (size_t)(sp - line);
  const char *sec = strchr(sp + 1, ' ');
  if (!sec) return;
  sec++;
  uint8_t v[48];
  size_t n = 0;
  while (sec[0] && sec[1] && n < sizeof(v)) {
    int hi = hexval(sec[0]), lo = hexval(sec[1]);
    if (hi < 0 || lo < 0) break;
    v[n++] = (uint8_t)(hi << 4 | lo);
    sec += 2;
  }
  if (*sec) n = 0; /* longer than any secret we use, or garbage */
#define IS(lbl) (ll == sizeof(lbl) - 1 && memcmp(line, lbl, ll) == 0)
  if (n && IS("CLIENT_TRAFFIC_SECRET_0")) {
    memcpy(s->c_secret, v, n), s->c_len = n, s->have_c = true;
  } else if (n && IS("SERVER_TRAFFIC_SECRET_0")) {
    memcpy(s->s_secret, v, n), s->s_len = n, s->have_s = true;
  } else if (n == 48 && IS("CLIENT_RANDOM")) {
    memcpy(s->master, v, 48), s->have_master = true;
  }
#undef IS
  OPENSSL_cleanse(v, sizeof(v));
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
  (void)ssl;
  struct cpb_tls_ctx *c = arg;
  unsigned char *o = NULL;
  if (SSL_select_next_proto(&o, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol, as Node does */
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

/* Server with sni_callback: the first time, note the name and pause (the application picks a context);
 * the second time (after cpb_tls_sess_set_ctx) continue. */
static int client_hello_cb(SSL *ssl, int *al, void *arg) {
  (void)al;
  (void)arg;
  struct cpb_tls_sess *s = SSL_get_app_data(ssl);
  if (!s || s->sni_answered) return SSL_CLIENT_HELLO_SUCCESS;
  const unsigned char *p;
  size_t len;
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len)) return SSL_CLIENT_HELLO_SUCCESS;
  /* ServerNameList: u16 len | { u8 type | u16 len | name } — take the first host_name */
  if (len < 5 || cpb_get_be16(p) != len - 2 || p[2] != 0) return SSL_CLIENT_HELLO_SUCCESS;
  size_t nl = cpb_get_be16(p + 3);
  if (nl == 0 || nl > len - 5 || nl >= sizeof(s->servername)) return SSL_CLIENT_HELLO_SUCCESS;
  for (size_t i = 0; i < nl; i++)
    if (p[5 + i] <= 0x20 || p[5 + i] >= 0x7f) return SSL_CLIENT_HELLO_SUCCESS; /* not a host name */
  memcpy(s->servername, p + 5, nl);
  s->servername[nl] = 0;
  s->want_sni = true;
  return SSL_CLIENT_HELLO_RETRY;
}

static void ssl_err(char *err, size_t errlen, const char *what) {
  if (!err || !errlen) return;
  unsigned long e = ERR_peek_last_error();
  char buf[160] = "";
  if (e) ERR_error_string_n(e, buf, sizeof(buf));
  snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

static int load_pem_certs(struct cpb_tls_ctx *c, const char *pem, size_t len, bool chain, char *err, size_t errlen) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  if (!b) return -ENOMEM;
  int rc = 0, count = 0;
  X509 *x;
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
    int ok;
    if (!chain) ok = X509_STORE_add_cert(SSL_CTX_get_cert_store(c->ssl_ctx), x);
    else if (count == 0) ok = SSL_CTX_use_certificate(c->ssl_ctx, x);
    else ok = SSL_CTX_add1_chain_cert(c->ssl_ctx, x);
    X509_free(x);
    if (ok != 1) {
      ssl_err(err, errlen, chain ? "certificate" : "ca");
      rc = -EINVAL;
      break;
    }
    count++;
  }
  ERR_clear_error(); /* the loop ends on "no start line" */
  if (rc == 0 && count == 0) {
    snprintf(err, errlen, "%s: no PEM certificate found", chain ? "cert" : "ca");
    rc = -EINVAL;
  }
  BIO_free(b);
  return rc;
}

static bool alpn_wire_ok(const uint8_t *p, size_t len) {
  if (len == 0 || len > 255) return false;
  for (size_t i = 0; i < len;) {
    if (p[i] == 0 || i + 1 + p[i] > len) return false;
    i += 1 + p[i];
  }
  return true;
}

/* Narrows what OpenSSL may negotiate to the suites the record layer carries (AEAD only): the caller's
 * lists (or OpenSSL's defaults) intersected with record.c's table, so a Node-style list with CBC suites
 * still works. A version left with no suite is switched off; nothing left at all is an error. */
static int keep_record_suites(SSL_CTX *x, char *err, size_t errlen) {
  char l12[1024] = "", l13[256] = "";
  bool dropped = false;
  STACK_OF(SSL_CIPHER) *cl = SSL_CTX_get_ciphers(x);
  for (int i = 0; cl && i < sk_SSL_CIPHER_num(cl); i++) {
    const SSL_CIPHER *ci = sk_SSL_CIPHER_value(cl, i);
    const struct cpb_tls_suite_info *si = cpb_tls_suite(SSL_CIPHER_get_protocol_id(ci));
    if (!si) {
      dropped = true;
      continue;
    }
    char *l = si->version == CPB_TLS13 ? l13 : l12;
    size_t cap = si->version == CPB_TLS13 ? sizeof(l13) : sizeof(l12), used = strlen(l);
    snprintf(l + used, cap - used, "%s%s", used ? ":" : "", SSL_CIPHER_get_name(ci));
  }
  if (!l12[0] && !l13[0]) {
    snprintf(err, errlen, "no cipher the record layer supports (AES-GCM and ChaCha20-Poly1305 only)");
    return -EINVAL;
  }
  if (!dropped) return 0;
  int minv = (int)SSL_CTX_get_min_proto_version(x), maxv = (int)SSL_CTX_get_max_proto_version(x);
  if (!l13[0]) {
    if (minv == TLS1_3_VERSION) goto none;
    SSL_CTX_set_max_proto_version(x, TLS1_2_VERSION);
  } else if (SSL_CTX_set_ciphersuites(x, l13) != 1) {
    goto none;
  }
  if (!l12[0]) {
    if (maxv == TLS1_2_VERSION) goto none;
    SSL_CTX_set_min_proto_version(x, TLS1_3_VERSION);
  } else if (SSL_CTX_set_cipher_list(x, l12) != 1) {
    goto none;
  }
  return 0;
none:
  snprintf(err, errlen, "no cipher the record layer supports for the allowed versions");
  ERR_clear_error();
  return -EINVAL;
}

static int ver_ok(uint16_t v) { return v == 0 || v == CPB_TLS12 || v == CPB_TLS13; }

int cpb_tls_ctx_new(struct cpb_tls_ctx **out, const struct cpb_tls_ctx_config *cfg, char *err, size_t errlen) {
  char dummy[2];
  if (!err || !errlen) err = dummy, errlen = sizeof(dummy);
  *out = NULL;
  err[0] = 0;
  if (!cfg || !ver_ok(cfg->min_version) || !ver_ok(cfg->max_version) ||
      (cfg->min_version && cfg->max_version && cfg->min_version > cfg->max_version)) {
    snprintf(err, errlen, "bad version range");
    return -EINVAL;
  }
  if (cfg->alpn_len && !alpn_wire_ok(cfg->alpn, cfg->alpn_len)) {
    snprintf(err, errlen, "bad ALPN list");
    return -EINVAL;
  }
  if (cfg->server && (!cfg->cert_pem || !cfg->key_pem)) {
    snprintf(err, errlen, "a server needs a certificate and a key");
    return -EINVAL;
  }
  struct cpb_tls_ctx *c = calloc(1, sizeof(*c));
  if (!c) return -ENOMEM;
  c->refs = 1;
  c->server = cfg->server;
  c->sni_callback = cfg->server && cfg->sni_callback;
  c->verify_peer = !cfg->server && cfg->verify_peer;
  int rc = -EINVAL;
  ERR_clear_error();
  c->ssl_ctx = SSL_CTX_new(cfg->server ? TLS_server_method() : TLS_client_method());
  if (!c->ssl_ctx) {
    ssl_err(err, errlen, "SSL_CTX_new");
    rc = -ENOMEM;
    goto fail;
  }
  SSL_CTX *x = c->ssl_ctx;
  if (!SSL_CTX_set_min_proto_version(x, cfg->min_version ? cfg->min_version : TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(x, cfg->max_version ? cfg->max_version : TLS1_3_VERSION)) {
    ssl_err(err, errlen, "version range");
    goto fail;
  }
  /* Renegotiation would need OpenSSL back after the switch; compression is a CRIME. */
  SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode(x, cfg->server ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set_cipher_list(x, cfg->ciphers ? cfg->ciphers : DEFAULT_TLS12_CIPHERS) != 1) {
    ssl_err(err, errlen, "cipher list");
    goto fail;
  }
  if (cfg->ciphersuites && SSL_CTX_set_ciphersuites(x, cfg->ciphersuites) != 1) {
    ssl_err(err, errlen, "ciphersuites");
    goto fail;
  }
  if ((rc = keep_record_suites(x, err, errlen)) != 0) goto fail;
  rc = -EINVAL;
  if (cfg->cert_pem && (rc = load_pem_certs(c, cfg->cert_pem, cfg->cert_len, true, err, errlen)) != 0) goto fail;
  rc = -EINVAL;
  if (cfg->key_pem) {
    BIO *b = BIO_new_mem_buf(cfg->key_pem, (int)cfg->key_len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    int ok = k && SSL_CTX_use_PrivateKey(x, k) == 1 && SSL_CTX_check_private_key(x) == 1;
    EVP_PKEY_free(k);
    if (!ok) {
      ssl_err(err, errlen, "private key");
      goto fail;
    }
  }
  if (cfg->ca_pem && (rc = load_pem_certs(c, cfg->ca_pem, cfg->ca_len, false, err, errlen)) != 0) goto fail;
  rc = -EINVAL;
  SSL_CTX_set_verify(x, c->verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  if (cfg->alpn_len) {
    if (cfg->server) {
      memcpy(c->alpn, cfg->alpn, cfg->alpn_len);
      c->alpn_len = cfg->alpn_len;
      SSL_CTX_set_alpn_select_cb(x, alpn_select_cb, c);
    } else if (SSL_CTX_set_alpn_protos(x, cfg->alpn, (unsigned)cfg->alpn_len) != 0) {
      ssl_err(err, errlen, "ALPN");
      goto fail;
    }
  }
  SSL_CTX_set_keylog_callback(x, keylog_cb);
  if (c->sni_callback) SSL_CTX_set_client_hello_cb(x, client_hello_cb, c);
  *out = c;
  return 0;
fail:
  if (!err[0]) snprintf(err, errlen, "TLS context setup failed");
  cpb_tls_ctx_free(c);
  return rc;
}

void cpb_tls_ctx_free(struct cpb_tls_ctx *c) {
  if (!c || --c->refs > 0) return;
  SSL_CTX_free(c->ssl_ctx);
  OPENSSL_cleanse(c, sizeof(*c));
  free(c);
}

/* ------------------------------------------------------------------ session (handshake phase) */

int cpb_tls_sess_new(struct cpb_tls_sess **out, struct cpb_tls_ctx *ctx, const char *servername, char *err,
                     size_t errlen) {
  char dummy[2];
  if (!err || !errlen) err = dummy, errlen = sizeof(dummy);
  *out = NULL;
  err[0] = 0;
  if (!ctx || (servername && strlen(servername) >= sizeof(((struct cpb_tls_sess *)0)->servername))) {
    snprintf(err, errlen, "bad arguments");
    return -EINVAL;
  }
  struct cpb_tls_sess *s = calloc(1, sizeof(*s));
  if (!s) return -ENOMEM;
  if (cpb_tls_evp_init(&s->evp) != 0) {
    free(s);
    return -ENOMEM;
  }
  s->server = ctx->server;
  s->ctx = ctx;
  ctx->refs++;
  ERR_clear_error();
  s->ssl = SSL_new(ctx->ssl_ctx);
  BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
  if (!s->ssl || !rb || !wb) {
    BIO_free(rb);
    BIO_free(wb);
    ssl_err(err, errlen, "SSL_new");
    cpb_tls_sess_free(s);
    return -ENOMEM;
  }
  BIO_set_mem_eof_return(rb, -1); /* empty means "more later", not EOF */
  SSL_set_bio(s->ssl, rb, wb);
  SSL_set_app_data(s->ssl, s);
  if (s->server) {
    SSL_set_accept_state(s->ssl);
  } else {
    SSL_set_connect_state(s->ssl);
    if (servername && servername[0]) {
      snprintf(s->servername, sizeof(s->servername), "%s", servername);
      if (SSL_set_tlsext_host_name(s->ssl, servername) != 1 || (ctx->verify_peer && SSL_set1_host(s->ssl, servername) != 1)) {
        ssl_err(err, errlen, "servername");
        cpb_tls_sess_free(s);
        return -EINVAL;
      }
    }
  }
  *out = s;
  return 0;
}

void tls_hs_release(struct cpb_tls_sess *s) {
  if (s->ssl) {
    SSL_set_app_data(s->ssl, NULL);
    SSL_free(s->ssl); /* frees both BIOs */
    s->ssl = NULL;
  }
  if (s->sni_ctx) cpb_tls_ctx_free(s->sni_ctx);
  if (s->ctx) cpb_tls_ctx_free(s->ctx);
  s->ctx = s->sni_ctx = NULL;
  OPENSSL_cleanse(s->c_secret, sizeof(s->c_secret));
  OPENSSL_cleanse(s->s_secret, sizeof(s->s_secret));
  OPENSSL_cleanse(s->master, sizeof(s->master));
  s->have_c = s->have_s = s->have_master = false;
}

int cpb_tls_sess_set_ctx(struct cpb_tls_sess *s, struct cpb_tls_ctx *ctx) {
  if (!s || !s->ssl || !s->want_sni) return -EINVAL;
  if (ctx) {
    if (!ctx->server) return -EINVAL;
    if (SSL_set_SSL_CTX(s->ssl, ctx->ssl_ctx) == NULL) return -EINVAL;
    ctx->refs++;
    if (s->sni_ctx) cpb_tls_ctx_free(s->sni_ctx);
    s->sni_ctx = ctx;
  }
  s->want_sni = false;
  s->sni_answered = true;
  return 0;
}

const char *cpb_tls_servername(const struct cpb_tls_sess *s) {
  if (!s) return NULL;
  if (s->done) return s->rec.sni_len ? s->rec.sni : NULL;
  return s->servername[0] ? s->servername : NULL;
}

/* Moves what OpenSSL wrote into TCP, as far as TCP takes it. 0 when the wbio is empty, 1 when bytes
 * remain (TCP full), or TCP's error. */
static int flush_wbio(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now) {
  BIO *wb = SSL_get_wbio(s->ssl);
  for (int guard = 0; guard < 4096; guard++) {
    size_t pending = BIO_ctrl_pending(wb);
    if (pending == 0) return 0;
    long space = tcp_send_space(t, flow);
    if (space == -ENOTCONN) return 1; /* TCP handshake still running */
    if (space < 0) return (int)space;
    if (space == 0) return 1;
    int want = (int)CPB_MIN(CPB_MIN(pending, (size_t)space), sizeof(s->buf));
    int n = BIO_read(wb, s->buf, want);
    if (n <= 0) return -EIO;
    long r = tcp_send(t, flow, s->buf, (size_t)n, now);
    if (r != n) return r < 0 ? (int)r : -EIO;
  }
  return 1;
}

/* Moves one whole record from TCP into the rbio. 0 fed, 1 not whole yet, -ECONNRESET peer ended. */
static int feed_record(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now) {
  uint8_t hdr[5];
  long r = tcp_peek(t, flow, 0, hdr, sizeof(hdr));
  if (r == -EAGAIN) return 1;
  if (r < 0) return (int)r;
  if (r == 0) {
    tls_set_error(s, "connection closed during the handshake");
    return -ECONNRESET;
  }
  if (r < 5) {
    long e = tcp_peek(t, flow, (size_t)r, hdr, 1);
    if (e == 0) {
      tls_set_error(s, "connection closed in a record header during the handshake");
      return -ECONNRESET;
    }
    return e == -EAGAIN ? 1 : (int)e;
  }
  size_t total = CPB_TLS_HDR_LEN + cpb_get_be16(hdr + 3);
  if (total > sizeof(s->buf)) { /* OpenSSL would refuse it too; spare the copy */
    tls_set_error(s, "handshake record of %zu bytes is too long", total);
    return -EMSGSIZE;
  }
  uint8_t last;
  r = tcp_peek(t, flow, total - 1, &last, 1);
  if (r == -EAGAIN) return 1;
  if (r == 0) {
    tls_set_error(s, "connection closed in a record during the handshake");
    return -ECONNRESET;
  }
  if (r < 0) return (int)r;
  r = tcp_recv(t, flow, s->buf, total, now);
  if (r != (long)total) return r < 0 ? (int)r : -EIO;
  if (BIO_write(SSL_get_rbio(s->ssl), s->buf, (int)total) != (int)total) return -ENOMEM;
  return 0;
}

/* TLS 1.3: how many records in the wbio open under our own application write key, in order. */
static uint64_t count_app_records(struct cpb_tls_sess *s) {
  char *data = NULL;
  long len = BIO_get_mem_data(SSL_get_wbio(s->ssl), &data);
  struct cpb_tls_rec trial = s->rec;
  trial.rd = s->rec.wr;
  trial.rd.seq = 0;
  uint64_t n = 0;
  cpb_tls_evp_rekey(&s->evp, 0);
  for (long off = 0; data && off + 5 <= len;) {
    size_t total = CPB_TLS_HDR_LEN + cpb_get_be16((uint8_t *)data + off + 3);
    if ((long)total > len - off || total > sizeof(s->buf)) break;
    if ((uint8_t)data[off] == CPB_TLS_CT_APPDATA) {
      memcpy(s->buf, data + off, total);
      uint8_t type, alert, *content;
      if (cpb_tls_rec_open(&trial, &s->evp, s->buf, total, &type, &content, &alert) >= 0) n++;
    }
    off += (long)total;
  }
  cpb_tls_evp_rekey(&s->evp, 0);
  OPENSSL_cleanse(&trial, sizeof(trial));
  OPENSSL_cleanse(s->buf, sizeof(s->buf));
  return n;
}

/* The handshake is complete: build the record layer's state from what OpenSSL negotiated. */
static int hs_switch(struct cpb_tls_sess *s) {
  SSL *ssl = s->ssl;
  int v = SSL_version(ssl);
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  if ((v != TLS1_2_VERSION && v != TLS1_3_VERSION) || !c) {
    tls_set_error(s, "negotiated version 0x%04x is not TLS 1.2 or 1.3", (unsigned)v);
    return -EPROTO;
  }
  uint16_t suite = SSL_CIPHER_get_protocol_id(c);
  if (cpb_tls_rec_init(&s->rec, (uint16_t)v, suite, s->server) != 0) {
    tls_set_error(s, "negotiated cipher %s has no record layer here (AEAD suites only)", SSL_CIPHER_get_name(c));
    return -EPROTO;
  }
  int rc;
  if (v == TLS1_3_VERSION) {
    if (!s->have_c || !s->have_s || s->c_len != s->rec.secret_len || s->s_len != s->rec.secret_len) {
      tls_set_error(s, "traffic secrets missing from the key log");
      return -EPROTO;
    }
    rc = cpb_tls_rec_set_secret(&s->rec, 0, s->server ? s->c_secret : s->s_secret);
    if (rc == 0) rc = cpb_tls_rec_set_secret(&s->rec, 1, s->server ? s->s_secret : s->c_secret);
    if (rc == 0) s->rec.wr.seq = s->rec.wr.records = count_app_records(s);
  } else {
    uint8_t cr[32], sr[32], mk[48];
    SSL_SESSION *ss = SSL_get_session(ssl);
    if (!s->have_master || !ss || SSL_get_client_random(ssl, cr, 32) != 32 || SSL_get_server_random(ssl, sr, 32) != 32 ||
        SSL_SESSION_get_master_key(ss, mk, 48) != 48 || CRYPTO_memcmp(mk, s->master, 48) != 0) {
      OPENSSL_cleanse(mk, sizeof(mk));
      tls_set_error(s, "master secret missing from the key log or inconsistent");
      return -EPROTO;
    }
    OPENSSL_cleanse(mk, sizeof(mk));
    rc = cpb_tls_rec_set_master(&s->rec, s->master, cr, sr);
    s->rec.rd.seq = s->rec.wr.seq = 1; /* each Finished was record 0 under these keys */
  }
  if (rc) {
    tls_set_error(s, "key derivation failed");
    return -EPROTO;
  }
  cpb_tls_evp_rekey(&s->evp, 0);
  cpb_tls_evp_rekey(&s->evp, 1);
  const unsigned char *alpn = NULL;
  unsigned alen = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alen);
  if (alpn && alen && alen <= 255) {
    memcpy(s->rec.alpn, alpn, alen);
    s->rec.alpn_len = (uint8_t)alen;
  }
  const char *sn = s->server ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : s->servername;
  if (sn && sn[0]) {
    size_t l = strlen(sn);
    if (l <= 255) {
      memcpy(s->rec.sni, sn, l);
      s->rec.sni_len = (uint8_t)l;
    }
  }
  snprintf(s->cipher, sizeof(s->cipher), "%s", SSL_CIPHER_get_name(c));
  const char *std = SSL_CIPHER_standard_name(c);
  snprintf(s->standard, sizeof(s->standard), "%s", std ? std : s->cipher);
  snprintf(s->protocol, sizeof(s->protocol), "%s", v == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
  return 0;
}

static int hs_fail(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now, int rc) {
  if (s->ssl) {
    if (rc == -EPROTO && !s->last_error[0]) {
      unsigned long e = ERR_peek_last_error();
      char buf[160] = "handshake failed";
      if (e) ERR_error_string_n(e, buf, sizeof(buf));
      tls_set_error(s, "%s", buf);
    }
    flush_wbio(s, t, flow, now); /* OpenSSL's alert, if it wrote one */
    ERR_clear_error();
    tls_hs_release(s);
  }
  s->err = rc;
  return rc;
}

int cpb_tls_handshake(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now) {
  if (!s) return -EINVAL;
  if (s->err) return s->err;
  if (s->done) return CPB_TLS_HS_DONE;
  if (!s->ssl) return -EINVAL;
  if (s->want_sni) return CPB_TLS_HS_WANT_SNI;
  for (int iter = 0; iter < 1024; iter++) {
    int f = flush_wbio(s, t, flow, now);
    if (f < 0) return hs_fail(s, t, flow, now, f);
    if (s->finishing) { /* keys are in place; hand over once OpenSSL's last bytes are out */
      if (f) return CPB_TLS_HS_AGAIN;
      tls_hs_release(s);
      s->finishing = false;
      s->done = true;
      return CPB_TLS_HS_DONE;
    }
    if (f) return CPB_TLS_HS_AGAIN; /* keep the wbio empty before OpenSSL writes again */
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
      if (BIO_ctrl_pending(SSL_get_rbio(s->ssl)) != 0) {
        tls_set_error(s, "bytes left over in the handshake buffer");
        return hs_fail(s, t, flow, now, -EPROTO);
      }
      int rc = hs_switch(s);
      if (rc) return hs_fail(s, t, flow, now, rc);
      s->finishing = true;
      continue;
    }
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ: {
      f = flush_wbio(s, t, flow, now);
      if (f < 0) return hs_fail(s, t, flow, now, f);
      if (f) return CPB_TLS_HS_AGAIN;
      int fr = feed_record(s, t, flow, now);
      if (fr < 0) return hs_fail(s, t, flow, now, fr == -EMSGSIZE ? -EPROTO : fr);
      if (fr) return CPB_TLS_HS_AGAIN;
      break;
    }
    case SSL_ERROR_WANT_CLIENT_HELLO_CB:
      f = flush_wbio(s, t, flow, now);
      if (f < 0) return hs_fail(s, t, flow, now, f);
      return CPB_TLS_HS_WANT_SNI;
    default:
      return hs_fail(s, t, flow, now, -EPROTO);
    }
  }
  return CPB_TLS_HS_AGAIN;
}
