/* TLS sessions end to end over the engine's TCP on the link simulator, against stock OpenSSL: a peer
 * that keeps OpenSSL's own record layer (SSL_read/SSL_write over memory BIOs whose bytes travel through
 * its TCP flow). Our server against an OpenSSL client and our client against an OpenSSL server, for
 * TLS 1.3 x {AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305} and TLS 1.2 x {ECDHE-RSA-AES128-GCM,
 * ECDHE-ECDSA-AES256-GCM, ECDHE-RSA-CHACHA20}: handshake, ALPN, SNI (pause and resume with another
 * certificate), data both ways (small, 1 MB, thousands of tiny writes), KeyUpdate both ways with and
 * without a request, close_notify. Migration: the server's TCP flow and TLS session move between two
 * instances that share its address, mid-stream, with a partly received record in TCP at the moment of
 * the snapshot, and a KeyUpdate after the move. Hostile input: a flipped bit, a truncated record at
 * EOF, a wrong version, an oversized length, handshake messages after the switch, renegotiation, and
 * forged CTLS snapshots. Certificates are made at run time (RSA 2048, ECDSA P-256, self-signed). */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "linksim.h"
#include "t.h"
#include "tls/sess_int.h"

#define IP_A 0x0a000001u
#define IP_S 0x0a000002u
#define PORT 443
#define SEC CPB_US_PER_S
#define T0 (1000 * SEC)

/* ------------------------------------------------------------------ certificates */

struct cred {
  EVP_PKEY *key;
  X509 *cert;
  char *cert_pem, *key_pem;
  size_t cert_len, key_len;
};
static struct cred rsa_cred, ec_cred, ec2_cred, rsa2_cred;

static char *to_pem(int (*w)(BIO *, void *), void *obj, size_t *len) {
  BIO *b = BIO_new(BIO_s_mem());
  w(b, obj);
  char *p;
  long n = BIO_get_mem_data(b, &p);
  char *out = malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  out[n] = 0;
  *len = (size_t)n;
  BIO_free(b);
  return out;
}
static int w_cert(BIO *b, void *x) { return PEM_write_bio_X509(b, x); }
static int w_key(BIO *b, void *k) { return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL); }

static void make_cred(struct cred *c, bool ec, const char *cn) {
  if (c->cert) return;
  c->key = ec ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
  if (!c->key) abort();
  X509 *x = X509_new();
  static long serial = 1;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400);
  X509_set_pubkey(x, c->key);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, n);
  char san[128];
  snprintf(san, sizeof(san), "DNS:%s", cn);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  if (!X509_sign(x, c->key, EVP_sha256())) abort();
  c->cert = x;
  c->cert_pem = to_pem(w_cert, x, &c->cert_len);
  c->key_pem = to_pem(w_key, c->key, &c->key_len);
}

/* ------------------------------------------------------------------ variants */

struct variant {
  uint16_t ver;
  const char *name; /* OpenSSL name: ciphersuite (1.3) or cipher (1.2) */
  const char *standard;
  bool ec;
};
static const struct variant variants[] = {
    {CPB_TLS13, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", false},
    {CPB_TLS13, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", true},
    {CPB_TLS13, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", false},
    {CPB_TLS12, "ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", false},
    {CPB_TLS12, "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true},
    {CPB_TLS12, "ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", false},
};

static const uint8_t alpn_srv[] = "\x02h2\x08http/1.1";
static const uint8_t alpn_cli[] = "\x08http/1.1\x06spdy/1";
#define SNI_NAME "capy.test"

/* ------------------------------------------------------------------ the two ends */

struct end {
  bool ours, have, connected;
  int host;
  uint64_t fid;
  /* ours */
  struct cpb_tls_sess *s;
  bool sni_seen;
  /* stock OpenSSL */
  SSL *ssl;
  uint8_t pend[65536];
  size_t pend_len, pend_off;
  bool tcp_eof;
  unsigned long ssl_err; /* first error OpenSSL reported */
  /* application */
  bool hs_done, got_close;
  uint64_t to_send, sent, rcvd;
  size_t max_write;
  uint8_t seed_out, seed_in;
  int bad;
  long err;
};

struct world {
  struct ls_net net;
  struct end e[2]; /* [0] the client role (host 0), [1] the server role (host 1, or 2 after a move) */
  struct cpb_tls_ctx *ctx, *sni_ctx;
  SSL_CTX *peer_ctx;
  bool paused; /* a migration is in flight: our end does nothing */
  bool ignore_errors; /* run on after a failure (to watch the other end's reaction) */
  bool (*goal)(struct world *w);
  /* migration */
  int migrations, partial_at_freeze;
  uint64_t mig_every, next_mig, mig_limit;
  cpb_time_t mig_done_at;
  uint8_t *tsnap;
  long tsnap_len;
  uint8_t csnap[CPB_TLS_SNAP_LEN];
};

static uint8_t pat(uint8_t seed, uint64_t off) { return (uint8_t)((off * 131 + (off >> 9) * 7 + seed) & 0xff); }
static uint8_t iobuf[65536];

static bool verify(struct end *e, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(e->seed_in, e->rcvd + i)) {
      if (!e->bad++) fprintf(stderr, "  data mismatch at byte %llu\n", (unsigned long long)(e->rcvd + i));
      return false;
    }
  return true;
}

static size_t next_chunk(struct end *e) {
  size_t n = (size_t)CPB_MIN(e->to_send - e->sent, (uint64_t)sizeof(iobuf));
  if (e->max_write) n = CPB_MIN(n, 1 + (size_t)(e->sent % e->max_write));
  for (size_t i = 0; i < n; i++) iobuf[i] = pat(e->seed_out, e->sent + i);
  return n;
}

static void pump_ours(struct world *w, struct end *e) {
  if (!e->have || w->paused || e->err) return;
  struct ls_host *h = &w->net.h[e->host];
  cpb_time_t now = ls_host_now(h);
  if (!e->hs_done) {
    int r = cpb_tls_handshake(e->s, h->t, e->fid, now);
    if (r == CPB_TLS_HS_WANT_SNI) {
      e->sni_seen = true;
      const char *sn = cpb_tls_servername(e->s);
      CHECK(sn && strcmp(sn, SNI_NAME) == 0);
      CHECK_EQ(cpb_tls_sess_set_ctx(e->s, w->sni_ctx), 0);
      r = cpb_tls_handshake(e->s, h->t, e->fid, now);
    }
    if (r < 0) {
      e->err = r;
      return;
    }
    if (r != CPB_TLS_HS_DONE) return;
    e->hs_done = true;
  }
  while (e->sent < e->to_send) {
    size_t n = next_chunk(e);
    long r = cpb_tls_send(e->s, h->t, e->fid, iobuf, n, now);
    if (r <= 0) {
      if (r != -EAGAIN) e->err = r;
      break;
    }
    e->sent += (uint64_t)r;
  }
  while (!e->got_close) {
    long r = cpb_tls_recv(e->s, h->t, e->fid, iobuf, sizeof(iobuf), now);
    if (r > 0) {
      verify(e, iobuf, (size_t)r);
      e->rcvd += (uint64_t)r;
      continue;
    }
    if (r == 0) e->got_close = true;
    else if (r != -EAGAIN) e->err = r;
    break;
  }
}

static void peer_flush(struct world *w, struct end *e) {
  struct ls_host *h = &w->net.h[e->host];
  for (int guard = 0; guard < 1000; guard++) {
    if (e->pend_off == e->pend_len) {
      int n = BIO_read(SSL_get_wbio(e->ssl), e->pend, sizeof(e->pend));
      if (n <= 0) return;
      e->pend_len = (size_t)n;
      e->pend_off = 0;
    }
    long r = tcp_send(h->t, e->fid, e->pend + e->pend_off, e->pend_len - e->pend_off, ls_host_now(h));
    if (r <= 0) return;
    e->pend_off += (size_t)r;
  }
}

static void peer_note_error(struct end *e, int r) {
  int se = SSL_get_error(e->ssl, r);
  if (se == SSL_ERROR_WANT_READ) return;
  if (se == SSL_ERROR_ZERO_RETURN) {
    e->got_close = true;
    return;
  }
  if (!e->ssl_err) e->ssl_err = ERR_peek_error() ? ERR_peek_error() : 1;
  ERR_clear_error();
  e->err = -EPROTO;
}

static void pump_peer(struct world *w, struct end *e) {
  if (!e->have || e->err) return;
  struct ls_host *h = &w->net.h[e->host];
  cpb_time_t now = ls_host_now(h);
  for (;;) {
    long r = tcp_recv(h->t, e->fid, iobuf, sizeof(iobuf), now);
    if (r > 0) BIO_write(SSL_get_rbio(e->ssl), iobuf, (int)r);
    if (r == 0) e->tcp_eof = true;
    if (r <= 0) break;
  }
  if (!e->hs_done) {
    ERR_clear_error();
    int r = SSL_do_handshake(e->ssl);
    if (r == 1) e->hs_done = true;
    else peer_note_error(e, r);
  }
  if (e->hs_done && !e->err) {
    while (e->sent < e->to_send && BIO_ctrl_pending(SSL_get_wbio(e->ssl)) < 65536 && e->pend_off == e->pend_len) {
      size_t n = next_chunk(e);
      ERR_clear_error();
      int r = SSL_write(e->ssl, iobuf, (int)n);
      if (r <= 0) {
        peer_note_error(e, r);
        break;
      }
      e->sent += (uint64_t)r;
      peer_flush(w, e);
    }
    while (!e->got_close && !e->err) {
      ERR_clear_error();
      int r = SSL_read(e->ssl, iobuf, sizeof(iobuf));
      if (r > 0) {
        verify(e, iobuf, (size_t)r);
        e->rcvd += (uint64_t)r;
        continue;
      }
      peer_note_error(e, r);
      break;
    }
  }
  peer_flush(w, e);
}

static void drain_events(struct world *w) {
  for (int i = 0; i < w->net.nh; i++) {
    struct tcp_event ev;
    while (tcp_next_event(w->net.h[i].t, &ev)) {
      if (ev.type == TCP_EV_ACCEPTABLE) {
        uint64_t id;
        if (tcp_accept(w->net.h[i].t, ev.id, &id) == 0) {
          w->e[1].fid = id;
          w->e[1].host = i;
          w->e[1].have = true;
        }
      }
    }
  }
}

static void migrate_step(struct world *w);

static bool step(struct ls_net *n, void *ctx) {
  (void)n;
  struct world *w = ctx;
  drain_events(w);
  migrate_step(w);
  for (int i = 0; i < 2; i++) {
    if (w->e[i].ours) pump_ours(w, &w->e[i]);
    else pump_peer(w, &w->e[i]);
  }
  if (w->paused) n->wake_at = w->mig_done_at;
  if (w->ignore_errors) return w->goal(w);
  return w->goal(w) || w->e[0].err || w->e[1].err || w->e[0].bad || w->e[1].bad;
}

static bool run(struct world *w, bool (*goal)(struct world *w)) {
  w->goal = goal;
  bool ok = ls_run(&w->net, step, w, w->net.now + 120 * SEC);
  return ok && !w->e[0].err && !w->e[1].err && !w->e[0].bad && !w->e[1].bad && goal(w);
}

/* Runs until goal (or until either end fails); true when the goal was reached, errors or not. */
static bool run_to(struct world *w, bool (*goal)(struct world *w)) {
  w->goal = goal;
  ls_run(&w->net, step, w, w->net.now + 120 * SEC);
  return goal(w);
}

static bool g_hs(struct world *w) { return w->e[0].hs_done && w->e[1].hs_done; }
static bool g_data(struct world *w) {
  return w->e[0].rcvd == w->e[1].to_send && w->e[1].rcvd == w->e[0].to_send && w->e[0].sent == w->e[0].to_send &&
         w->e[1].sent == w->e[1].to_send;
}

static struct end *ours_of(struct world *w) { return w->e[0].ours ? &w->e[0] : &w->e[1]; }
static struct end *peer_of(struct world *w) { return w->e[0].ours ? &w->e[1] : &w->e[0]; }

static bool g_peer_closed(struct world *w) { return peer_of(w)->got_close; }
static bool g_ours_closed(struct world *w) { return ours_of(w)->got_close; }
static bool g_ours_err(struct world *w) { return ours_of(w)->err != 0; }

static void exchange(struct world *w, uint64_t bytes, size_t max_write) {
  for (int i = 0; i < 2; i++) {
    w->e[i].to_send += bytes;
    w->e[i].max_write = max_write;
  }
  bool ok = run(w, g_data);
  CHECK(ok);
  if (!ok)
    fprintf(stderr, "  exchange(%llu): c sent %llu rcvd %llu err %ld | s sent %llu rcvd %llu err %ld | %s\n",
            (unsigned long long)bytes, (unsigned long long)w->e[0].sent, (unsigned long long)w->e[0].rcvd,
            w->e[0].err, (unsigned long long)w->e[1].sent, (unsigned long long)w->e[1].rcvd, w->e[1].err,
            cpb_tls_last_error(ours_of(w)->s) ? cpb_tls_last_error(ours_of(w)->s) : "-");
  for (int i = 0; i < 2; i++) w->e[i].max_write = 0;
}

static int peer_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                        unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  unsigned char *o;
  if (SSL_select_next_proto(&o, outlen, alpn_srv, sizeof(alpn_srv) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

struct opts {
  bool ours_server, sni, migrate;
  bool small_sndbuf; /* 3000-byte send buffers: flights and records must wait for room */
};

static void tweak_small(struct tcp_config *c, void *ctx) {
  (void)ctx;
  c->sndbuf = 3000;
}

static void world_init(struct world *w, const struct variant *v, const struct opts *o) {
  memset(w, 0, sizeof(*w));
  ls_init(&w->net, 7, T0);
  w->net.f.delay_us = 200;
  void (*tw)(struct tcp_config *, void *) = o->small_sndbuf ? tweak_small : NULL;
  ls_add_host(&w->net, IP_A, 0, 4096, tw, NULL);
  ls_add_host(&w->net, IP_S, 0, 4096, tw, NULL);
  struct ls_host *c = ls_add_host(&w->net, IP_S, 12345, 4096, tw, NULL);
  c->up = false;
  make_cred(&rsa_cred, false, "rsa." SNI_NAME);
  make_cred(&ec_cred, true, "ec." SNI_NAME);
  const struct cred *cr = v->ec ? &ec_cred : &rsa_cred;
  char err[256];
  /* our end */
  struct cpb_tls_ctx_config cfg = {.server = o->ours_server, .min_version = CPB_TLS12, .max_version = CPB_TLS13};
  if (o->ours_server) {
    cfg.cert_pem = cr->cert_pem, cfg.cert_len = cr->cert_len;
    cfg.key_pem = cr->key_pem, cfg.key_len = cr->key_len;
    cfg.alpn = alpn_srv, cfg.alpn_len = sizeof(alpn_srv) - 1;
    cfg.sni_callback = o->sni;
  } else {
    cfg.ca_pem = cr->cert_pem, cfg.ca_len = cr->cert_len;
    cfg.verify_peer = true;
    cfg.alpn = alpn_cli, cfg.alpn_len = sizeof(alpn_cli) - 1;
  }
  if (cpb_tls_ctx_new(&w->ctx, &cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "ctx: %s\n", err);
    abort();
  }
  if (o->sni) {
    struct cred *c2 = v->ec ? &ec2_cred : &rsa2_cred; /* the certificate chosen after the pause */
    make_cred(c2, v->ec, SNI_NAME);
    cfg.cert_pem = c2->cert_pem, cfg.cert_len = c2->cert_len;
    cfg.key_pem = c2->key_pem, cfg.key_len = c2->key_len;
    cfg.sni_callback = false;
    if (cpb_tls_ctx_new(&w->sni_ctx, &cfg, err, sizeof(err)) != 0) abort();
  }
  /* the stock OpenSSL end: pins the version and the suite */
  SSL_CTX *p = SSL_CTX_new(o->ours_server ? TLS_client_method() : TLS_server_method());
  SSL_CTX_set_min_proto_version(p, v->ver);
  SSL_CTX_set_max_proto_version(p, v->ver);
  if (v->ver == CPB_TLS13) SSL_CTX_set_ciphersuites(p, v->name);
  else SSL_CTX_set_cipher_list(p, v->name);
  if (o->ours_server) {
    SSL_CTX_set_alpn_protos(p, alpn_cli, sizeof(alpn_cli) - 1);
  } else {
    SSL_CTX_use_certificate(p, cr->cert);
    SSL_CTX_use_PrivateKey(p, cr->key);
    SSL_CTX_set_alpn_select_cb(p, peer_alpn_cb, NULL);
  }
  w->peer_ctx = p;
  struct end *ours = o->ours_server ? &w->e[1] : &w->e[0], *peer = o->ours_server ? &w->e[0] : &w->e[1];
  ours->ours = true;
  w->e[0].seed_out = w->e[1].seed_in = 17;
  w->e[1].seed_out = w->e[0].seed_in = 201;
  w->e[1].host = 1;
  peer->ssl = SSL_new(p);
  SSL_set_bio(peer->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  BIO_set_mem_eof_return(SSL_get_rbio(peer->ssl), -1);
  const char *sn = o->sni ? SNI_NAME : v->ec ? "ec." SNI_NAME : "rsa." SNI_NAME;
  if (o->ours_server) {
    SSL_set_connect_state(peer->ssl);
    SSL_set_tlsext_host_name(peer->ssl, sn);
  } else {
    SSL_set_accept_state(peer->ssl);
  }
  if (cpb_tls_sess_new(&ours->s, w->ctx, o->ours_server ? NULL : sn, err, sizeof(err)) != 0) abort();
  uint64_t lid;
  if (tcp_listen(w->net.h[1].t, PORT, 4, &lid) != 0) abort();
  if (tcp_connect(w->net.h[0].t, IP_S, PORT, 0, ls_host_now(&w->net.h[0]), &w->e[0].fid) != 0) abort();
  w->e[0].have = true;
}

static void world_free(struct world *w) {
  for (int i = 0; i < 2; i++) {
    cpb_tls_sess_free(w->e[i].s);
    SSL_free(w->e[i].ssl);
  }
  cpb_tls_ctx_free(w->ctx);
  cpb_tls_ctx_free(w->sni_ctx);
  SSL_CTX_free(w->peer_ctx);
  free(w->tsnap);
  ls_free(&w->net);
  ERR_clear_error();
}

/* ------------------------------------------------------------------ migration */

static void forward(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
  struct ls_host *h = ctx;
  tcp_input(h->t, src, dst, seg, len, ls_host_now(h));
}

static void migrate_step(struct world *w) {
  struct end *e = &w->e[1];
  if (!e->ours || !e->hs_done || !w->mig_every) return;
  struct ls_host *src = &w->net.h[e->host];
  if (w->paused) {
    if (w->net.now < w->mig_done_at) return;
    int to = e->host == 1 ? 2 : 1;
    struct ls_host *dst = &w->net.h[to];
    uint64_t nid;
    int rc = tcp_adopt(dst->t, w->tsnap, (size_t)w->tsnap_len, ls_host_now(dst), &nid);
    CHECK_EQ(rc, 0);
    struct cpb_tls_sess *ns = NULL;
    char err[128];
    CHECK_EQ(cpb_tls_adopt(&ns, w->csnap, sizeof(w->csnap), err, sizeof(err)), 0);
    OPENSSL_cleanse(w->csnap, sizeof(w->csnap));
    if (rc || !ns) abort();
    dst->up = true;
    src->up = false;
    tcp_held_drain(src->t, e->fid, forward, dst);
    CHECK_EQ(tcp_release(src->t, e->fid, ls_host_now(src)), 0);
    cpb_tls_sess_free(e->s); /* the old session is gone: only the snapshot carried it */
    e->s = ns;
    e->fid = nid;
    e->host = to;
    w->paused = false;
    w->migrations++;
    return;
  }
  uint64_t progress = w->e[0].rcvd + w->e[1].rcvd;
  if (w->migrations >= (int)w->mig_limit || progress < w->next_mig) return;
  w->next_mig = progress + w->mig_every;
  /* read what is whole first: whatever TCP still holds is then part of a record */
  pump_ours(w, e);
  struct tcp_flow_info fi;
  cpb_time_t now = ls_host_now(src);
  CHECK_EQ(tcp_freeze(src->t, e->fid, now), 0);
  tcp_flow_info(src->t, e->fid, &fi);
  if (fi.readable_bytes > 0) w->partial_at_freeze++;
  long need = tcp_snapshot_size(src->t, e->fid);
  REQUIRE(need > 0);
  w->tsnap = realloc(w->tsnap, (size_t)need);
  w->tsnap_len = tcp_snapshot(src->t, e->fid, w->tsnap, (size_t)need, now);
  CHECK_EQ(w->tsnap_len, need);
  CHECK_EQ(cpb_tls_snapshot_size(e->s), CPB_TLS_SNAP_LEN);
  CHECK_EQ(cpb_tls_snapshot(e->s, w->csnap, sizeof(w->csnap)), CPB_TLS_SNAP_LEN);
  w->paused = true;
  w->mig_done_at = w->net.now + 3000; /* 3 ms in transit */
}

/* ------------------------------------------------------------------ the interop scenario */

static void check_info(struct world *w, const struct variant *v) {
  struct end *o = ours_of(w), *p = peer_of(w);
  struct cpb_tls_info in;
  REQUIRE(cpb_tls_info(o->s, &in) == 0);
  CHECK(in.done);
  CHECK_EQ(in.version, v->ver);
  CHECK(strcmp(in.cipher, v->name) == 0);
  CHECK(strcmp(in.standard_cipher, v->standard) == 0);
  CHECK(strcmp(in.cipher, SSL_get_cipher_name(p->ssl)) == 0);
  CHECK(strcmp(in.protocol, SSL_get_version(p->ssl)) == 0);
  CHECK(strcmp(in.alpn, "http/1.1") == 0);
  const unsigned char *a;
  unsigned al;
  SSL_get0_alpn_selected(p->ssl, &a, &al);
  CHECK(al == 8 && memcmp(a, "http/1.1", 8) == 0);
}

static void interop(const struct variant *v, const struct opts *o) {
  static struct world w;
  world_init(&w, v, o);
  struct end *ours = ours_of(&w), *peer = peer_of(&w);
  bool ok = run(&w, g_hs);
  CHECK(ok);
  if (!ok) {
    fprintf(stderr, "  %s %s: handshake failed: ours err %ld (%s), peer err %ld (%s)\n", v->name,
            o->ours_server ? "server" : "client", ours->err, cpb_tls_last_error(ours->s) ? cpb_tls_last_error(ours->s) : "-",
            peer->err, peer->ssl_err ? ERR_error_string(peer->ssl_err, NULL) : "-");
    world_free(&w);
    return;
  }
  check_info(&w, v);
  /* a TLS 1.3 server's first records were OpenSSL's two tickets: our write seq starts after them */
  if (v->ver == CPB_TLS13) CHECK_EQ(ours->s->rec.wr.seq, o->ours_server ? 2 : 0);
  else CHECK(ours->s->rec.wr.seq == 1 && ours->s->rec.rd.seq == 1);
  if (o->sni) { /* the certificate the peer saw is the one chosen after the pause */
    CHECK(ours->sni_seen);
    X509 *pc = SSL_get1_peer_certificate(peer->ssl);
    CHECK(pc && X509_cmp(pc, (v->ec ? &ec2_cred : &rsa2_cred)->cert) == 0);
    X509_free(pc);
    struct cpb_tls_info in;
    cpb_tls_info(ours->s, &in);
    CHECK(strcmp(in.servername, SNI_NAME) == 0);
  }
  if (!o->ours_server) CHECK(strcmp(SSL_get_servername(peer->ssl, TLSEXT_NAMETYPE_host_name), v->ec ? "ec." SNI_NAME : "rsa." SNI_NAME) == 0);
  exchange(&w, 100, 0);
  if (!o->small_sndbuf) { /* a record is taken from TCP only when its plaintext fits the caller's buffer */
    static uint8_t big[20000];
    memset(big, 0, sizeof(big));
    CHECK_EQ(SSL_write(peer->ssl, big, 10000), 10000);
    peer_flush(&w, peer);
    ls_run(&w.net, NULL, NULL, w.net.now + SEC);
    struct ls_host *oh0 = &w.net.h[ours->host];
    CHECK_EQ(cpb_tls_recv(ours->s, oh0->t, ours->fid, big, 9999, ls_host_now(oh0)), -EAGAIN);
    CHECK_EQ(cpb_tls_recv(ours->s, oh0->t, ours->fid, big, 10000, ls_host_now(oh0)), 10000);
    CHECK_EQ(cpb_tls_recv(ours->s, oh0->t, ours->fid, big, sizeof(big), ls_host_now(oh0)), -EAGAIN);
  }
  if (o->migrate) {
    w.mig_every = 150000;
    w.next_mig = w.e[0].rcvd + w.e[1].rcvd + 20000;
    w.mig_limit = 6;
  }
  exchange(&w, 1 << 20, 0);
  exchange(&w, 3000, 7); /* thousands of tiny records both ways */
  struct cpb_tls_info ri;
  cpb_tls_info(ours->s, &ri);
  CHECK(ri.records_in > 64 + 400 && ri.records_out > 64 + 400); /* 1 MB in 16 KB records + the tiny ones */
  if (o->migrate) {
    CHECK(w.migrations >= 4);
    CHECK(w.partial_at_freeze >= 1);
    w.mig_every = 0;
  }
  struct ls_host *oh = &w.net.h[ours->host];
  if (v->ver == CPB_TLS13) {
    struct cpb_tls_info in;
    /* the peer updates and asks us to: we answer before our next data */
    CHECK_EQ(SSL_key_update(peer->ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    exchange(&w, 5000, 0);
    CHECK_EQ(SSL_key_update(peer->ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    exchange(&w, 5000, 0);
    cpb_tls_info(ours->s, &in);
    CHECK_EQ(in.key_updates_in, 2);
    CHECK_EQ(in.key_updates_out, 1);
    CHECK_EQ(cpb_tls_key_update(ours->s, oh->t, ours->fid, true, ls_host_now(oh)), 0);
    exchange(&w, 70000, 0);
    CHECK_EQ(cpb_tls_key_update(ours->s, oh->t, ours->fid, false, ls_host_now(oh)), 0);
    exchange(&w, 5000, 0);
    cpb_tls_info(ours->s, &in);
    CHECK_EQ(in.key_updates_in, 3); /* the peer answered our request */
    CHECK_EQ(in.key_updates_out, 3);
    if (o->migrate) { /* one more move after all those key changes, then another update */
      w.mig_every = 1;
      w.next_mig = 0;
      w.mig_limit = (uint64_t)w.migrations + 1;
      exchange(&w, 40000, 0);
      CHECK_EQ(w.mig_limit, (uint64_t)w.migrations);
      w.mig_every = 0;
      oh = &w.net.h[ours->host];
      CHECK_EQ(cpb_tls_key_update(ours->s, oh->t, ours->fid, true, ls_host_now(oh)), 0);
      CHECK_EQ(SSL_key_update(peer->ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
      exchange(&w, 30000, 0);
    }
  } else {
    CHECK_EQ(cpb_tls_key_update(ours->s, oh->t, ours->fid, true, ls_host_now(oh)), -EPROTONOSUPPORT);
  }
  /* close_notify from us; the peer answers with its own */
  oh = &w.net.h[ours->host];
  CHECK_EQ(cpb_tls_close_notify(ours->s, oh->t, ours->fid, ls_host_now(oh)), 0);
  CHECK_EQ(cpb_tls_send(ours->s, oh->t, ours->fid, "x", 1, ls_host_now(oh)), -EPIPE);
  CHECK(run(&w, g_peer_closed));
  CHECK_EQ(SSL_shutdown(peer->ssl), 1);
  peer_flush(&w, peer);
  CHECK(run(&w, g_ours_closed));
  CHECK_EQ(cpb_tls_recv(ours->s, oh->t, ours->fid, iobuf, sizeof(iobuf), ls_host_now(oh)), 0);
  world_free(&w);
}

TEST(interop_our_server_every_suite) {
  for (size_t i = 0; i < CPB_ARRAY_LEN(variants); i++) interop(&variants[i], &(struct opts){.ours_server = true});
}

TEST(interop_our_client_every_suite) {
  for (size_t i = 0; i < CPB_ARRAY_LEN(variants); i++) interop(&variants[i], &(struct opts){.ours_server = false});
}

TEST(sni_pause_and_resume) {
  interop(&variants[0], &(struct opts){.ours_server = true, .sni = true});
  interop(&variants[3], &(struct opts){.ours_server = true, .sni = true});
}

TEST(migration_mid_stream_tls13_and_tls12) {
  interop(&variants[0], &(struct opts){.ours_server = true, .migrate = true});
  interop(&variants[2], &(struct opts){.ours_server = true, .migrate = true});
  interop(&variants[5], &(struct opts){.ours_server = true, .migrate = true});
}

/* ------------------------------------------------------------------ hostile input */

/* A handshaken connection (our server, the stock client) with a little data both ways. */
static bool hostile_setup(struct world *w, const struct variant *v) {
  world_init(w, v, &(struct opts){.ours_server = true});
  bool ok = run(w, g_hs);
  CHECK(ok);
  if (ok) exchange(w, 1000, 0);
  return ok;
}

/* Sends raw bytes on the peer's TCP flow, bypassing its TLS. */
static void peer_raw(struct world *w, const uint8_t *p, size_t n) {
  struct end *pe = peer_of(w);
  struct ls_host *h = &w->net.h[pe->host];
  CHECK_EQ(tcp_send(h->t, pe->fid, p, n, ls_host_now(h)), (long)n);
}

/* One record the peer's OpenSSL seals (taken out of its wbio before it reaches TCP). */
static int peer_record(struct world *w, const char *msg, uint8_t *out, size_t cap) {
  struct end *pe = peer_of(w);
  CHECK(SSL_write(pe->ssl, msg, (int)strlen(msg)) > 0);
  return BIO_read(SSL_get_wbio(pe->ssl), out, (int)cap);
}

/* The alert our end sent, as the peer's OpenSSL reports it. */
static bool g_peer_failed(struct world *w) { return peer_of(w)->err != 0 || peer_of(w)->got_close; }
static bool peer_saw_alert(struct world *w, int alert) {
  struct end *pe = peer_of(w);
  w->ignore_errors = true;
  run_to(w, g_peer_failed);
  w->ignore_errors = false;
  bool ok = pe->err && ERR_GET_REASON(pe->ssl_err) == SSL_AD_REASON_OFFSET + alert;
  if (!ok) fprintf(stderr, "  peer: err %ld reason %d, wanted alert %d\n", pe->err, ERR_GET_REASON(pe->ssl_err), alert);
  return ok;
}

TEST(hostile_flipped_bit_gets_bad_record_mac) {
  for (size_t k = 0; k < CPB_ARRAY_LEN(variants); k += 3) {
    static struct world w;
    if (hostile_setup(&w, &variants[k])) {
      uint8_t rec[200];
      int n = peer_record(&w, "hello, flipped", rec, sizeof(rec));
      REQUIRE(n > 20);
      rec[n - 3] ^= 0x04;
      peer_raw(&w, rec, (size_t)n);
      CHECK(run_to(&w, g_ours_err));
      CHECK_EQ(ours_of(&w)->err, -EPROTO);
      CHECK(peer_saw_alert(&w, CPB_TLS_AL_BAD_RECORD_MAC));
      struct ls_host *oh = &w.net.h[ours_of(&w)->host];
      CHECK_EQ(cpb_tls_recv(ours_of(&w)->s, oh->t, ours_of(&w)->fid, iobuf, 10, ls_host_now(oh)), -EPROTO);
      CHECK_EQ(cpb_tls_snapshot_size(ours_of(&w)->s), -EINVAL); /* a failed session does not move */
    }
    world_free(&w);
  }
}

TEST(hostile_truncated_record_at_eof) {
  static struct world w;
  if (hostile_setup(&w, &variants[0])) {
    uint8_t rec[200];
    int n = peer_record(&w, "cut short", rec, sizeof(rec));
    peer_raw(&w, rec, (size_t)n - 4);
    struct end *pe = peer_of(&w);
    struct ls_host *ph = &w.net.h[pe->host];
    CHECK_EQ(tcp_shutdown(ph->t, pe->fid, ls_host_now(ph)), 0);
    CHECK(run_to(&w, g_ours_err));
    CHECK_EQ(ours_of(&w)->err, -ECONNRESET);
  }
  world_free(&w);
}

TEST(hostile_headers_wrong_version_and_oversized) {
  struct { uint8_t hdr[5]; int alert; } cases[] = {
      {{23, 3, 1, 0, 40}, CPB_TLS_AL_PROTOCOL_VERSION},
      {{23, 3, 3, 0x41, 0x01}, CPB_TLS_AL_RECORD_OVERFLOW},
      {{22, 3, 3, 0, 40}, CPB_TLS_AL_UNEXPECTED_MESSAGE}, /* plaintext handshake in TLS 1.3 */
      {{20, 3, 3, 0, 1}, CPB_TLS_AL_UNEXPECTED_MESSAGE},  /* change_cipher_spec after the switch */
  };
  for (size_t i = 0; i < CPB_ARRAY_LEN(cases); i++) {
    static struct world w;
    if (hostile_setup(&w, &variants[i & 1 ? 0 : 1])) {
      static uint8_t junk[5 + 0x4101];
      memset(junk, 0x5a, sizeof(junk));
      memcpy(junk, cases[i].hdr, 5);
      peer_raw(&w, junk, 5 + 40);
      CHECK(run_to(&w, g_ours_err));
      CHECK_EQ(ours_of(&w)->err, -EPROTO);
      CHECK(peer_saw_alert(&w, cases[i].alert));
    }
    world_free(&w);
  }
}

/* Seals msg as the peer would (its write state is our read state), at the peer's next seq. */
static int forge_from_peer(struct world *w, uint8_t type, const uint8_t *msg, size_t len, uint8_t *out, size_t cap) {
  struct cpb_tls_sess *s = ours_of(w)->s;
  struct cpb_tls_rec f = s->rec;
  f.wr = s->rec.rd;
  struct cpb_tls_evp e;
  cpb_tls_evp_init(&e);
  long n = cpb_tls_rec_seal(&f, &e, type, msg, len, out, cap);
  cpb_tls_evp_free(&e);
  return (int)n;
}

TEST(hostile_handshake_messages_after_the_switch_tls13) {
  const uint8_t ch[] = {1, 0, 0, 4, 3, 3, 0, 0};       /* a (truncated) ClientHello */
  const uint8_t ku_bad[] = {24, 0, 0, 1, 7};           /* KeyUpdate with request 7 */
  const uint8_t ku_mid[] = {24, 0, 0, 1, 0, 0, 0};     /* KeyUpdate not at the end of its record */
  const uint8_t fin[] = {20, 0, 0, 4, 1, 2, 3, 4};     /* Finished */
  struct { const uint8_t *m; size_t n; int alert; } cases[] = {
      {ch, sizeof(ch), CPB_TLS_AL_UNEXPECTED_MESSAGE},
      {ku_bad, sizeof(ku_bad), CPB_TLS_AL_ILLEGAL_PARAMETER},
      {ku_mid, sizeof(ku_mid), CPB_TLS_AL_UNEXPECTED_MESSAGE},
      {fin, sizeof(fin), CPB_TLS_AL_UNEXPECTED_MESSAGE},
  };
  for (size_t i = 0; i < CPB_ARRAY_LEN(cases); i++) {
    static struct world w;
    if (hostile_setup(&w, &variants[0])) {
      uint8_t rec[100];
      int n = forge_from_peer(&w, CPB_TLS_CT_HANDSHAKE, cases[i].m, cases[i].n, rec, sizeof(rec));
      REQUIRE(n > 0);
      peer_raw(&w, rec, (size_t)n);
      CHECK(run_to(&w, g_ours_err));
      CHECK_EQ(ours_of(&w)->err, -EPROTO);
      CHECK(peer_saw_alert(&w, cases[i].alert));
    }
    world_free(&w);
  }
}

TEST(hostile_renegotiation_refused_tls12) {
  static struct world w;
  if (hostile_setup(&w, &variants[3])) {
    struct end *pe = peer_of(&w);
    CHECK_EQ(SSL_renegotiate(pe->ssl), 1);
    pe->hs_done = false; /* the stock client now runs a handshake again */
    run(&w, g_peer_closed);
    /* our end refused with a warning and lives on; OpenSSL gives up on its renegotiation */
    CHECK_EQ(ours_of(&w)->err, 0);
    CHECK(pe->err != 0);
    CHECK_EQ(ERR_GET_REASON(pe->ssl_err), SSL_R_NO_RENEGOTIATION);
  }
  world_free(&w);
}

TEST(hostile_post_handshake_ticket_ignored_by_our_client) {
  /* every TLS 1.3 client run above already received OpenSSL's two tickets after the switch; here one
   * more arrives mid-stream, split across two records */
  static struct world w;
  world_init(&w, &variants[0], &(struct opts){.ours_server = false});
  if (run(&w, g_hs)) {
    exchange(&w, 1000, 0);
    struct end *pe = peer_of(&w);
    CHECK_EQ(SSL_new_session_ticket(pe->ssl), 1);
    CHECK_EQ(SSL_do_handshake(pe->ssl), 1);
    peer_flush(&w, pe);
    exchange(&w, 1000, 0);
    CHECK_EQ(ours_of(&w)->err, 0);
  }
  world_free(&w);
}

TEST(adopt_refuses_forged_snapshots) {
  static struct world w;
  if (hostile_setup(&w, &variants[1])) {
    static uint8_t snap[CPB_TLS_SNAP_LEN], bad[CPB_TLS_SNAP_LEN + 1];
    REQUIRE(cpb_tls_snapshot(ours_of(&w)->s, snap, sizeof(snap)) == CPB_TLS_SNAP_LEN);
    CHECK_EQ(cpb_tls_snapshot(ours_of(&w)->s, snap, sizeof(snap) - 1), -ENOSPC);
    char err[128];
    struct cpb_tls_sess *s = NULL;
    int accepted = 0;
    for (size_t i = 0; i < CPB_TLS_SNAP_LEN; i++) {
      memcpy(bad, snap, sizeof(snap));
      bad[i] ^= 0x80;
      int rc = cpb_tls_adopt(&s, bad, CPB_TLS_SNAP_LEN, err, sizeof(err));
      if (rc == 0) {
        accepted++; /* a key/iv/secret/counter byte: a different but well-formed state */
        cpb_tls_sess_free(s);
      } else {
        CHECK(s == NULL && (rc == -EBADMSG || rc == -EINVAL) && err[0]);
      }
    }
    CHECK(accepted < 300);
    for (size_t l = 0; l <= CPB_TLS_SNAP_LEN; l++) {
      if (l == CPB_TLS_SNAP_LEN) continue;
      CHECK_EQ(cpb_tls_adopt(&s, snap, l, err, sizeof(err)), -EBADMSG);
    }
    CHECK_EQ(cpb_tls_adopt(&s, snap, CPB_TLS_SNAP_LEN, err, sizeof(err)), 0);
    struct cpb_tls_info a, b;
    cpb_tls_info(s, &a);
    cpb_tls_info(ours_of(&w)->s, &b);
    CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    cpb_tls_sess_free(s);
  }
  world_free(&w);
}

TEST(small_send_buffers_split_flights_and_records) {
  interop(&variants[0], &(struct opts){.ours_server = true, .small_sndbuf = true});
  interop(&variants[3], &(struct opts){.ours_server = false, .small_sndbuf = true});
}

TEST(context_config_checks) {
  make_cred(&rsa_cred, false, "rsa." SNI_NAME);
  char err[256];
  struct cpb_tls_ctx *c = NULL;
  struct cpb_tls_ctx_config cfg = {.server = true, .cert_pem = rsa_cred.cert_pem, .cert_len = rsa_cred.cert_len,
                                   .key_pem = rsa_cred.key_pem, .key_len = rsa_cred.key_len};
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), 0);
  cpb_tls_ctx_free(c);
  /* a Node-style list: the CBC suites in it are dropped, the AEAD ones stay */
  cfg.ciphers = "HIGH:!aNULL:!kRSA";
  REQUIRE(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)) == 0);
  STACK_OF(SSL_CIPHER) *cl = SSL_CTX_get_ciphers(c->ssl_ctx);
  CHECK(sk_SSL_CIPHER_num(cl) >= 6);
  for (int i = 0; i < sk_SSL_CIPHER_num(cl); i++) CHECK(cpb_tls_suite(SSL_CIPHER_get_protocol_id(sk_SSL_CIPHER_value(cl, i))));
  cpb_tls_ctx_free(c);
  cfg.ciphers = "ECDHE-RSA-AES128-SHA"; /* CBC only: TLS 1.2 is switched off ... */
  REQUIRE(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)) == 0);
  CHECK_EQ(SSL_CTX_get_min_proto_version(c->ssl_ctx), TLS1_3_VERSION);
  cpb_tls_ctx_free(c);
  cfg.max_version = CPB_TLS12; /* ... and with TLS 1.2 only nothing is left */
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  cfg.ciphers = NULL, cfg.max_version = 0;
  cfg.ciphersuites = "TLS_AES_128_CCM_SHA256";
  REQUIRE(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)) == 0);
  CHECK_EQ(SSL_CTX_get_max_proto_version(c->ssl_ctx), TLS1_2_VERSION);
  cpb_tls_ctx_free(c);
  cfg.min_version = CPB_TLS13;
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  cfg.ciphersuites = NULL, cfg.min_version = 0;
  cfg.key_pem = ec_cred.key_pem ? ec_cred.key_pem : "junk", cfg.key_len = 4; /* not this certificate's key */
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  cfg.key_pem = rsa_cred.key_pem, cfg.key_len = rsa_cred.key_len;
  cfg.alpn = (const uint8_t *)"\x05h2", cfg.alpn_len = 3; /* length byte overruns */
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  cfg.alpn = NULL, cfg.alpn_len = 0;
  cfg.min_version = CPB_TLS13, cfg.max_version = CPB_TLS12;
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  cfg.min_version = 0x0301, cfg.max_version = 0;
  CHECK_EQ(cpb_tls_ctx_new(&c, &cfg, err, sizeof(err)), -EINVAL);
  struct cpb_tls_ctx_config none = {.server = true};
  CHECK_EQ(cpb_tls_ctx_new(&c, &none, err, sizeof(err)), -EINVAL);
  CHECK(c == NULL);
  /* a client session refuses data calls before its handshake */
  struct cpb_tls_ctx_config cc = {.server = false};
  REQUIRE(cpb_tls_ctx_new(&c, &cc, err, sizeof(err)) == 0);
  struct cpb_tls_sess *s = NULL;
  REQUIRE(cpb_tls_sess_new(&s, c, "x.test", err, sizeof(err)) == 0);
  cpb_tls_ctx_free(c); /* the session keeps its own reference */
  CHECK_EQ(cpb_tls_recv(s, NULL, 0, iobuf, 10, 0), -ENOTCONN);
  CHECK_EQ(cpb_tls_send(s, NULL, 0, "x", 1, 0), -ENOTCONN);
  CHECK_EQ(cpb_tls_snapshot_size(s), -EINVAL);
  struct cpb_tls_info in;
  CHECK_EQ(cpb_tls_info(s, &in), 0);
  CHECK(!in.done && strcmp(in.servername, "x.test") == 0);
  cpb_tls_sess_free(s);
}

TEST(hostile_hello_request_refused_by_our_client_tls12) {
  static struct world w;
  world_init(&w, &variants[5], &(struct opts){.ours_server = false});
  if (run(&w, g_hs)) {
    exchange(&w, 1000, 0);
    struct end *pe = peer_of(&w);
    CHECK_EQ(SSL_renegotiate(pe->ssl), 1);
    SSL_do_handshake(pe->ssl); /* writes the HelloRequest */
    pe->hs_done = false;
    run(&w, g_peer_closed);
    CHECK_EQ(ours_of(&w)->err, 0); /* a warning, and our end carries on */
    CHECK(pe->err != 0);
    CHECK_EQ(ERR_GET_REASON(pe->ssl_err), SSL_R_NO_RENEGOTIATION);
  }
  world_free(&w);
}
