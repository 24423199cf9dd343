/* The record-layer phase of a session: reading and writing application data over one TCP flow,
 * post-handshake messages (KeyUpdate, NewSessionTicket, refused renegotiation), alerts, info, and the
 * CTLS snapshot/adopt pair.
 *
 * A record is read from TCP only when it is whole (tcp_peek for the header and its last byte), and
 * only when its plaintext fits the caller's buffer, so nothing half-read lives here: a partial record
 * travels in TCP's snapshot. A record is written only when TCP takes it whole (tcp_send_space). The
 * one scratch buffer holds a single record between tcp_recv and the copy into the caller's buffer. */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sess_int.h"

#define HS_HELLO_REQUEST 0
#define HS_CLIENT_HELLO 1
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24

void tls_set_error(struct cpb_tls_sess *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
  va_end(ap);
}

const char *cpb_tls_last_error(const struct cpb_tls_sess *s) { return s && s->last_error[0] ? s->last_error : NULL; }

void tls_names_from_suite(struct cpb_tls_sess *s) {
  const struct cpb_tls_suite_info *si = cpb_tls_suite(s->rec.suite);
  snprintf(s->cipher, sizeof(s->cipher), "%s", si ? si->name : "");
  snprintf(s->standard, sizeof(s->standard), "%s", si ? si->standard : "");
  snprintf(s->protocol, sizeof(s->protocol), "%s", s->rec.version == CPB_TLS13 ? "TLSv1.3" : "TLSv1.2");
}

void cpb_tls_sess_free(struct cpb_tls_sess *s) {
  if (!s) return;
  tls_hs_release(s);
  cpb_tls_evp_free(&s->evp);
  OPENSSL_cleanse(s, sizeof(*s));
  free(s);
}

int tls_send_ctl(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, uint8_t type, const uint8_t *msg, size_t len,
                 cpb_time_t now) {
  uint8_t rec[64];
  size_t need = CPB_TLS_HDR_LEN + len + cpb_tls_rec_overhead(&s->rec);
  if (need > sizeof(rec)) return -EINVAL;
  long space = tcp_send_space(t, flow);
  if (space < 0) return (int)space;
  if ((size_t)space < need) return -EAGAIN;
  long n = cpb_tls_rec_seal(&s->rec, &s->evp, type, msg, len, rec, sizeof(rec));
  if (n < 0) return (int)n;
  long r = tcp_send(t, flow, rec, (size_t)n, now);
  OPENSSL_cleanse(rec, sizeof(rec));
  if (r != n) {
    s->err = -EIO; /* TCP holds part of a record: the stream is unusable */
    return r < 0 ? (int)r : -EIO;
  }
  return 0;
}

/* Fatal: tell the peer (best effort), remember, and refuse everything from now on. */
static long fatal(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now, uint8_t alert,
                  const char *why) {
  if (!s->last_error[0] || !s->err) tls_set_error(s, "%s (alert %u sent)", why, alert);
  uint8_t m[2] = {2, alert};
  if (!(s->rec.flags & CPB_TLS_SF_CLOSE_SENT)) tls_send_ctl(s, t, flow, CPB_TLS_CT_ALERT, m, 2, now);
  s->rec.flags |= CPB_TLS_SF_CLOSE_SENT;
  s->err = -EPROTO;
  return -EPROTO;
}

static int send_key_update(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, bool request, cpb_time_t now) {
  uint8_t m[5] = {HS_KEY_UPDATE, 0, 0, 1, request ? 1 : 0};
  int rc = tls_send_ctl(s, t, flow, CPB_TLS_CT_HANDSHAKE, m, sizeof(m), now);
  if (rc) return rc;
  if (cpb_tls_rec_update(&s->rec, 1) != 0) {
    s->err = -EIO;
    return -EIO;
  }
  cpb_tls_evp_rekey(&s->evp, 1);
  s->rec.flags &= (uint8_t)~CPB_TLS_SF_KU_OWED;
  return 0;
}

/* The KeyUpdate the peer asked for goes out before our next application data (RFC 8446 §4.6.3). */
static int flush_owed(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now) {
  if (!(s->rec.flags & CPB_TLS_SF_KU_OWED) || (s->rec.flags & CPB_TLS_SF_CLOSE_SENT)) return 0;
  return send_key_update(s, t, flow, false, now);
}

/* Post-handshake handshake messages, possibly split across records (header bytes are kept in the
 * state; a ticket's body is skipped as it arrives). Returns 0 or -EPROTO (alert sent). */
static long handle_hs(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now, const uint8_t *p,
                      size_t n) {
  struct cpb_tls_rec *r = &s->rec;
  bool tls13 = r->version == CPB_TLS13;
  size_t i = 0;
  while (i < n) {
    if (r->hs_skip) {
      size_t k = CPB_MIN(n - i, (size_t)r->hs_skip);
      r->hs_skip -= (uint32_t)k;
      i += k;
      continue;
    }
    while (r->hs_have < 4 && i < n) r->hs_hdr[r->hs_have++] = p[i++];
    if (r->hs_have < 4) break;
    uint8_t type = r->hs_hdr[0];
    uint32_t mlen = ((uint32_t)r->hs_hdr[1] << 16) | ((uint32_t)r->hs_hdr[2] << 8) | r->hs_hdr[3];
    r->hs_have = 0;
    memset(r->hs_hdr, 0, sizeof(r->hs_hdr));
    if (tls13 && type == HS_KEY_UPDATE) {
      /* One byte of body, and the message must end the record: a key change never splits a record. */
      if (mlen != 1) return fatal(s, t, flow, now, CPB_TLS_AL_DECODE_ERROR, "KeyUpdate of bad length");
      if (n - i != 1) return fatal(s, t, flow, now, CPB_TLS_AL_UNEXPECTED_MESSAGE, "KeyUpdate not at a record's end");
      uint8_t req = p[i++];
      if (req > 1) return fatal(s, t, flow, now, CPB_TLS_AL_ILLEGAL_PARAMETER, "KeyUpdate request out of range");
      if (cpb_tls_rec_update(r, 0) != 0) return fatal(s, t, flow, now, CPB_TLS_AL_INTERNAL_ERROR, "key update failed");
      cpb_tls_evp_rekey(&s->evp, 0);
      if (req) r->flags |= CPB_TLS_SF_KU_OWED;
      continue;
    }
    if (tls13 && type == HS_NEW_SESSION_TICKET && !r->server) { /* tickets are not kept: no resumption */
      r->hs_skip = mlen;
      continue;
    }
    if (!tls13 && ((type == HS_CLIENT_HELLO && r->server) || (type == HS_HELLO_REQUEST && !r->server))) {
      /* Renegotiation is refused with a warning (RFC 5746 §4.2 / 5246 §7.2.2); the connection lives on. */
      if (type == HS_HELLO_REQUEST && mlen != 0)
        return fatal(s, t, flow, now, CPB_TLS_AL_DECODE_ERROR, "HelloRequest with a body");
      uint8_t m[2] = {1, CPB_TLS_AL_NO_RENEGOTIATION};
      int rc = tls_send_ctl(s, t, flow, CPB_TLS_CT_ALERT, m, 2, now);
      if (rc && rc != -EAGAIN) return rc;
      r->hs_skip = mlen;
      continue;
    }
    return fatal(s, t, flow, now, CPB_TLS_AL_UNEXPECTED_MESSAGE, "unexpected handshake message after the handshake");
  }
  return 0;
}

long cpb_tls_recv(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, void *buf, size_t len, cpb_time_t now) {
  if (!s || (!buf && len)) return -EINVAL;
  if (s->err) return s->err;
  if (!s->done) return -ENOTCONN;
  struct cpb_tls_rec *r = &s->rec;
  if (r->flags & CPB_TLS_SF_CLOSE_RCVD) return 0;
  int orc = flush_owed(s, t, flow, now);
  if (orc && orc != -EAGAIN && orc != -EPIPE) return orc;
  for (;;) {
    uint8_t hdr[5], alert = 0, last;
    long n = tcp_peek(t, flow, 0, hdr, sizeof(hdr));
    if (n == 0 || (n > 0 && n < 5 && tcp_peek(t, flow, (size_t)n, &last, 1) == 0)) {
      tls_set_error(s, "connection ended without close_notify (truncation)");
      return -ECONNRESET;
    }
    if (n < 0) return n;
    if (n < 5) return -EAGAIN;
    long blen = cpb_tls_rec_check_hdr(r, hdr, &alert);
    if (blen < 0) return fatal(s, t, flow, now, alert, "bad record header");
    size_t total = CPB_TLS_HDR_LEN + (size_t)blen;
    n = tcp_peek(t, flow, total - 1, &last, 1);
    if (n == 0) {
      tls_set_error(s, "connection ended inside a record (truncation)");
      return -ECONNRESET;
    }
    if (n < 0) return n;
    size_t ovh = cpb_tls_rec_overhead(r);
    size_t bound = (size_t)blen > ovh ? (size_t)blen - ovh : 0; /* most plaintext this record can hold */
    if (bound > len && len < CPB_TLS_MAX_PLAIN) return -EAGAIN;
    n = tcp_recv(t, flow, s->buf, total, now);
    if (n != (long)total) {
      s->err = -EIO;
      return n < 0 ? n : -EIO;
    }
    uint8_t type, *content;
    n = cpb_tls_rec_open(r, &s->evp, s->buf, total, &type, &content, &alert);
    if (n < 0) return n == -EPROTO ? fatal(s, t, flow, now, alert, "record failed to open") : n;
    if (type != CPB_TLS_CT_HANDSHAKE && (r->hs_have || r->hs_skip))
      return fatal(s, t, flow, now, CPB_TLS_AL_UNEXPECTED_MESSAGE, "record interleaved with a handshake message");
    if (type == CPB_TLS_CT_APPDATA) {
      if (n == 0) continue;
      memcpy(buf, content, (size_t)n);
      OPENSSL_cleanse(content, (size_t)n);
      return n;
    }
    if (type == CPB_TLS_CT_ALERT) {
      if (n != 2) return fatal(s, t, flow, now, CPB_TLS_AL_DECODE_ERROR, "alert of bad length");
      uint8_t level = content[0], desc = content[1];
      if (desc == CPB_TLS_AL_CLOSE_NOTIFY) {
        r->flags |= CPB_TLS_SF_CLOSE_RCVD;
        return 0;
      }
      if (desc == CPB_TLS_AL_USER_CANCELED || (r->version == CPB_TLS12 && level == 1)) continue;
      tls_set_error(s, "peer sent alert %u", desc);
      r->flags |= CPB_TLS_SF_CLOSE_RCVD;
      s->err = -EPROTO;
      return -EPROTO;
    }
    if (n == 0) return fatal(s, t, flow, now, CPB_TLS_AL_UNEXPECTED_MESSAGE, "empty handshake record");
    long hr = handle_hs(s, t, flow, now, content, (size_t)n);
    if (hr < 0) return hr;
    orc = flush_owed(s, t, flow, now);
    if (orc && orc != -EAGAIN && orc != -EPIPE) return orc;
  }
}

long cpb_tls_send(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, const void *data, size_t len, cpb_time_t now) {
  if (!s || (!data && len)) return -EINVAL;
  if (s->err) return s->err;
  if (!s->done) return -ENOTCONN;
  if (s->rec.flags & CPB_TLS_SF_CLOSE_SENT) return -EPIPE;
  int rc = flush_owed(s, t, flow, now);
  if (rc) return rc;
  const uint8_t *p = data;
  size_t done = 0, ovh = CPB_TLS_HDR_LEN + cpb_tls_rec_overhead(&s->rec);
  while (done < len) {
    long space = tcp_send_space(t, flow);
    if (space < 0) return done ? (long)done : space;
    if ((size_t)space <= ovh) break;
    size_t n = CPB_MIN(CPB_MIN(len - done, (size_t)CPB_TLS_MAX_PLAIN), (size_t)space - ovh);
    long rl = cpb_tls_rec_seal(&s->rec, &s->evp, CPB_TLS_CT_APPDATA, p + done, n, s->buf, sizeof(s->buf));
    if (rl < 0) return done ? (long)done : rl;
    long r = tcp_send(t, flow, s->buf, (size_t)rl, now);
    if (r != rl) {
      s->err = -EIO;
      return r < 0 ? r : -EIO;
    }
    done += n;
  }
  return done ? (long)done : -EAGAIN;
}

int cpb_tls_close_notify(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, cpb_time_t now) {
  if (!s) return -EINVAL;
  if (s->err) return s->err;
  if (!s->done) return -ENOTCONN;
  if (s->rec.flags & CPB_TLS_SF_CLOSE_SENT) return 0;
  uint8_t m[2] = {1, CPB_TLS_AL_CLOSE_NOTIFY};
  int rc = tls_send_ctl(s, t, flow, CPB_TLS_CT_ALERT, m, 2, now);
  if (rc == 0) s->rec.flags |= CPB_TLS_SF_CLOSE_SENT;
  return rc;
}

int cpb_tls_key_update(struct cpb_tls_sess *s, struct cpb_tcp *t, uint64_t flow, bool request_peer, cpb_time_t now) {
  if (!s) return -EINVAL;
  if (s->err) return s->err;
  if (!s->done) return -ENOTCONN;
  if (s->rec.version != CPB_TLS13) return -EPROTONOSUPPORT;
  if (s->rec.flags & CPB_TLS_SF_CLOSE_SENT) return -EPIPE;
  return send_key_update(s, t, flow, request_peer, now);
}

int cpb_tls_info(const struct cpb_tls_sess *s, struct cpb_tls_info *o) {
  if (!s || !o) return -EINVAL;
  memset(o, 0, sizeof(*o));
  o->done = s->done;
  const char *sn = cpb_tls_servername(s);
  if (sn) snprintf(o->servername, sizeof(o->servername), "%s", sn);
  if (!s->done) return 0;
  o->version = s->rec.version;
  snprintf(o->protocol, sizeof(o->protocol), "%s", s->protocol);
  snprintf(o->cipher, sizeof(o->cipher), "%s", s->cipher);
  snprintf(o->standard_cipher, sizeof(o->standard_cipher), "%s", s->standard);
  memcpy(o->alpn, s->rec.alpn, s->rec.alpn_len);
  o->records_in = s->rec.rd.records;
  o->records_out = s->rec.wr.records;
  o->key_updates_in = s->rec.rd.key_updates;
  o->key_updates_out = s->rec.wr.key_updates;
  return 0;
}

/* ------------------------------------------------------------------ migration */

long cpb_tls_snapshot_size(const struct cpb_tls_sess *s) {
  if (!s || !s->done || s->err) return -EINVAL;
  return CPB_TLS_SNAP_LEN;
}

long cpb_tls_snapshot(const struct cpb_tls_sess *s, uint8_t *buf, size_t cap) {
  if (!s || !buf || !s->done || s->err) return -EINVAL;
  return cpb_tls_rec_encode(&s->rec, buf, cap);
}

int cpb_tls_adopt(struct cpb_tls_sess **out, const uint8_t *buf, size_t len, char *err, size_t errlen) {
  char dummy[2];
  if (!err || !errlen) err = dummy, errlen = sizeof(dummy);
  err[0] = 0;
  if (!out) return -EINVAL;
  *out = NULL;
  struct cpb_tls_sess *s = calloc(1, sizeof(*s));
  if (!s) return -ENOMEM;
  int rc = cpb_tls_rec_decode(&s->rec, buf, len);
  if (rc) {
    snprintf(err, errlen, rc == -EBADMSG ? "TLS snapshot: bad framing" : "TLS snapshot: field out of range");
    free(s);
    return rc;
  }
  if (cpb_tls_evp_init(&s->evp) != 0) {
    cpb_tls_sess_free(s);
    return -ENOMEM;
  }
  s->server = s->rec.server;
  s->done = true;
  tls_names_from_suite(s);
  *out = s;
  return 0;
}
