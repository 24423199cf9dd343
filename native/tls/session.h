/* A TLS connection on top of one TCP flow of the engine (the contract between native/tls and the addon).
 *
 * Model (DESIGN.md "TLS", like kernel TLS): OpenSSL runs only the handshake, over memory BIOs; its
 * secrets come from the keylog callback; once the handshake is done the SSL object is freed and this
 * project's record layer (record.h) seals and opens every record. That state is plain data (no
 * pointers), so a TLS snapshot is a bounded copy, like the TCB's.
 *
 * Records are taken from TCP only when whole: a partly received record stays in TCP's receive queue
 * (tcp_peek) and therefore travels inside the TCP layer's snapshot; a record is sealed only when TCP
 * has room for all of it (tcp_send_space), so TCP never holds half a record of ours. Plaintext is
 * opened straight into the caller's buffer and a record is opened only when its plaintext fits, so the
 * session buffers no plaintext either.
 *
 * All calls run under the engine lock (cpb_engine_enter/leave) on the caller's thread, with the flow's
 * `now`. Nothing allocates after cpb_tls_sess_new except OpenSSL during the handshake. Errors are
 * negative errno values; a protocol failure is -EPROTO with the alert sent to the peer and a sentence
 * in cpb_tls_last_error. */
#ifndef CPB_TLS_SESSION_H
#define CPB_TLS_SESSION_H
#include "../common.h"
#include "../tcp/tcp.h"

/* Versions as on the wire. */
#define CPB_TLS12 0x0303
#define CPB_TLS13 0x0304

struct cpb_tls_ctx_config {
  bool server;
  const char *cert_pem; size_t cert_len;  /* server: leaf then chain (PEM); client: optional */
  const char *key_pem; size_t key_len;    /* private key (PEM) matching cert */
  const char *ca_pem; size_t ca_len;      /* trust anchors; client: verify the server when verify_peer */
  bool verify_peer;                       /* client: reject an unverifiable server (rejectUnauthorized) */
  const uint8_t *alpn; size_t alpn_len;   /* ALPN protocols, wire format (len-prefixed list) */
  uint16_t min_version, max_version;      /* 0: TLS 1.2 .. TLS 1.3 */
  const char *ciphers;                    /* TLS 1.2 cipher list (OpenSSL syntax) or NULL */
  const char *ciphersuites;               /* TLS 1.3 suites or NULL */
  bool sni_callback;                      /* server: pause the handshake with CPB_TLS_HS_WANT_SNI */
};

struct cpb_tls_ctx;  /* an SSL_CTX: shared by the sessions created from it; refcounted */
int cpb_tls_ctx_new(struct cpb_tls_ctx **out, const struct cpb_tls_ctx_config *cfg, char *err, size_t errlen);
void cpb_tls_ctx_free(struct cpb_tls_ctx *ctx);

struct cpb_tls_sess;
/* servername: client SNI (and name checked against the certificate when verify_peer), NULL on servers. */
int cpb_tls_sess_new(struct cpb_tls_sess **out, struct cpb_tls_ctx *ctx, const char *servername, char *err,
                     size_t errlen);
/* Frees the session and wipes every key and secret it held. */
void cpb_tls_sess_free(struct cpb_tls_sess *s);

enum cpb_tls_hs {
  CPB_TLS_HS_DONE = 0,      /* handshake finished: record layer active (server: tickets already sent) */
  CPB_TLS_HS_AGAIN = 1,     /* needs more input from the peer (or TCP send room); call again on READABLE/WRITABLE */
  CPB_TLS_HS_WANT_SNI = 2,  /* server with sni_callback: read cpb_tls_servername, then cpb_tls_sess_set_ctx */
};
/* Drives the handshake with the records TCP has received; sends OpenSSL's output through tcp_send.
 * Returns an enum cpb_tls_hs value or a negative error (-EPROTO: handshake failed, alert sent). */
int cpb_tls_handshake(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now);
/* Server, after CPB_TLS_HS_WANT_SNI: continue with this context's certificate (NULL: keep the default). */
int cpb_tls_sess_set_ctx(struct cpb_tls_sess *s, struct cpb_tls_ctx *ctx);
const char *cpb_tls_servername(const struct cpb_tls_sess *s); /* SNI the client sent, or NULL */

/* Plaintext read: bytes opened into buf; 0 at close_notify or at TCP EOF after it; -EAGAIN when no whole
 * record is there (or it would not fit: len >= 16384 always fits); -ECONNRESET when TCP ended without
 * close_notify (truncation); -EPROTO on a bad record (alert sent). Handles KeyUpdate (answering
 * update_requested), ignores post-handshake NewSessionTicket, refuses renegotiation. */
long cpb_tls_recv(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, void *buf, size_t len, cpb_time_t now);
/* Plaintext write: seals records (at most 16384 bytes each) and hands them to TCP; returns plaintext
 * bytes taken (possibly fewer than len), -EAGAIN when TCP has no room for one record, or TCP's errors. */
long cpb_tls_send(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, const void *data, size_t len, cpb_time_t now);
/* Sends close_notify (the caller then shuts TCP down). */
int cpb_tls_close_notify(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now);
/* TLS 1.3 only: sends KeyUpdate and switches the write key; request_peer sets update_requested.
 * -EPROTONOSUPPORT on TLS 1.2, -EAGAIN when TCP has no room. */
int cpb_tls_key_update(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, bool request_peer, cpb_time_t now);

struct cpb_tls_info {
  bool done;                    /* handshake finished */
  uint16_t version;             /* CPB_TLS12 / CPB_TLS13 */
  char protocol[8];             /* "TLSv1.2" / "TLSv1.3", as Node's getProtocol() */
  char cipher[64];              /* OpenSSL name, as Node's getCipher().name */
  char standard_cipher[64];     /* IANA name, as getCipher().standardName */
  char alpn[256];               /* negotiated ALPN protocol or "" */
  char servername[256];         /* SNI or "" */
  uint64_t records_in, records_out, key_updates_in, key_updates_out;
};
int cpb_tls_info(const struct cpb_tls_sess *s, struct cpb_tls_info *out);
const char *cpb_tls_last_error(const struct cpb_tls_sess *s);

/* ---- migration: the TLS layer's record ("CTLS" v1, see record.h for the layout) ----
 * Only a session whose handshake is done (and that holds no pending post-handshake work) can be
 * exported; the TCP flow is frozen and snapshotted separately (the runtime nests the records). */
long cpb_tls_snapshot_size(const struct cpb_tls_sess *s);
long cpb_tls_snapshot(const struct cpb_tls_sess *s, uint8_t *buf, size_t cap); /* -ENOSPC, -EINVAL */
/* Validates every field, then builds a session in the record-layer phase. -EBADMSG framing, -EINVAL
 * a field out of range, -ENOMEM. The caller wipes buf afterwards. */
int cpb_tls_adopt(struct cpb_tls_sess **out, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* ---- TCP helpers the record layer needs (native/tcp/api.c) ----
 * tcp_peek copies up to len unread bytes from offset off without consuming them (-EAGAIN none, 0 EOF
 * when nothing is left); tcp_send_space returns how many bytes tcp_send would take now. */
#endif
