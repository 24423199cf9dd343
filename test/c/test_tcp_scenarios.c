/* Packetdrill-style scripted TCP scenarios on a virtual clock. Every .pkt file in test/scenarios becomes a
 * test case. A script line is `<time> <action>`; time is `+secs` (relative to the previous line) or
 * `secs` (absolute from the start). Actions:
 *   < FLAGS SEQ:END(LEN) [ack N] [win N] [<options>] [badcsum]   inject a segment
 *   > FLAGS SEQ:END(LEN) [ack N] [win N] [<options>]             the next segment we must emit
 *   listen PORT [BACKLOG] | unlisten | accept [ERR] | connect PORT [ERR] | lport P | rport P
 *   send N [= M|ERR] | recv N [= M|ERR|EOF] | shutdown | close | abort | setopt NAME VAL
 *   expect state S | expect event TYPE [ERR] | expect noevents | expect stat NAME [>=] V
 *   expect info FIELD V | expect flows N | expect chunks N | expect noflow
 * `config KEY VALUE` lines (no time) set tcp_config before the first action.
 * Sequence numbers are relative like packetdrill: inbound SEQ and outbound ACK count from the remote
 * ISN (a fixed base near 2^32 so wraparound is always exercised), inbound ACK/SACK and outbound SEQ from
 * our ISS (fixed through tcp_debug_fix_iss, also near the wrap). Our TSval equals script milliseconds.
 * Payload bytes follow a pattern by stream offset in both directions and are verified: what we send
 * (including retransmissions) and what recv returns. Any field of an expected segment may be `*`.
 * Expected segments must come within TOL of their time; an unexpected segment fails the script. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "t.h"
#include "tcp/tcp.h"
#include "tcp/tcp_debug.h"
#include "wire/tcp.h"

#define LOCAL_IP 0xc0a80001u  /* 192.168.0.1 */
#define REMOTE_IP 0xc0a80002u /* 192.168.0.2 */
#define OUR_ISS 4294967000u
#define REMOTE_BASE 4294966000u
#define T0 1000000ULL /* the clock starts at 1 s so that TSval = now_ms + offset is script ms */
#define TOL_US 5000
#define MAXCAP 64
#define MAXEV 256
#define WILD 0xffffffffffffffffULL

struct cap_seg {
  uint8_t buf[1600];
  size_t len;
  cpb_time_t at;
  cpb_ip4_t src, dst;
};

struct scen {
  const char *file;
  int line;
  bool failed;
  char msg[2048];
  struct cpb_arena arena;
  struct cpb_tcp *t;
  struct tcp_config cfg;
  bool inited;
  cpb_time_t now, next_deadline;
  int64_t script_us;
  struct cap_seg caps[MAXCAP];
  int ncap;
  struct tcp_event evs[MAXEV];
  int nev;
  uint64_t lid, fid;
  bool have_lid, have_fid;
  uint16_t lport, rport;
  uint64_t send_off, recv_off;
};

static uint8_t pat(uint64_t off) { return (uint8_t)(off * 131 + (off >> 8) * 7 + 13); }

static void fail(struct scen *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define FAIL(...)        \
  do {                   \
    fail(__VA_ARGS__);   \
    return;              \
  } while (0)
static void fail(struct scen *s, const char *fmt, ...) {
  if (s->failed) return;
  s->failed = true;
  int n = snprintf(s->msg, sizeof(s->msg), "%s:%d: ", s->file, s->line);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->msg + n, sizeof(s->msg) - (size_t)n, fmt, ap);
  va_end(ap);
}

/* ---- ipout capture ---- */
static uint8_t *cap_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  struct scen *s = ctx;
  if (s->ncap >= MAXCAP) {
    fail(s, "more than %d segments emitted without being expected", MAXCAP);
    return NULL;
  }
  struct cap_seg *c = &s->caps[s->ncap];
  c->src = src;
  c->dst = dst;
  *cap = 1480; /* 1500-byte MTU minus the IPv4 header */
  return c->buf;
}

static void cap_commit(void *ctx, size_t len) {
  struct scen *s = ctx;
  struct cap_seg *c = &s->caps[s->ncap];
  if (len == 0) return;
  tcp_fill_checksum(c->buf, len, c->src, c->dst);
  c->len = len;
  c->at = s->now;
  s->ncap++;
}

static void drain_events(struct scen *s) {
  struct tcp_event ev;
  while (s->t && tcp_next_event(s->t, &ev)) {
    if (s->nev < MAXEV) s->evs[s->nev++] = ev;
  }
}

static void poll_at(struct scen *s, cpb_time_t now) {
  s->now = now;
  s->next_deadline = tcp_poll(s->t, now);
  drain_events(s);
}

static void advance_to(struct scen *s, cpb_time_t target) {
  int guard = 0;
  while (s->next_deadline <= target && guard++ < 100000) poll_at(s, s->next_deadline > s->now ? s->next_deadline : s->now);
  if (target > s->now) poll_at(s, target);
}

/* ---- names ---- */
static const struct {
  const char *n;
  int v;
} errnames[] = {{"ENOENT", -ENOENT},       {"EAGAIN", -EAGAIN},         {"ECONNRESET", -ECONNRESET},
                {"ETIMEDOUT", -ETIMEDOUT}, {"ECONNREFUSED", -ECONNREFUSED}, {"EPIPE", -EPIPE},
                {"ENOTCONN", -ENOTCONN},   {"EADDRINUSE", -EADDRINUSE}, {"EINVAL", -EINVAL},
                {"EADDRNOTAVAIL", -EADDRNOTAVAIL},
                {"OK", 0}};

static bool err_by_name(const char *n, int *v) {
  for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
    if (!strcmp(errnames[i].n, n)) {
      *v = errnames[i].v;
      return true;
    }
  return false;
}

static const char *err_name(long v) {
  static char buf[32];
  for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
    if (errnames[i].v == v) return errnames[i].n;
  snprintf(buf, sizeof(buf), "%ld", v);
  return buf;
}

static const char *ev_names[] = {"?", "ACCEPTABLE", "CONNECTED", "READABLE", "WRITABLE", "CLOSED"};

/* ---- segment spec ---- */
struct segspec {
  uint8_t flags;
  uint64_t seq, end, len, ack, win; /* WILD = unchecked */
  bool has_ack_field;
  bool opts_given;
  struct tcp_opts o;
  bool ts_val_wild, ts_ecr_wild;
  bool badcsum;
};

static bool parse_num(const char **pp, uint64_t *v) {
  const char *p = *pp;
  while (*p == ' ') p++;
  if (*p == '*') {
    *v = WILD;
    *pp = p + 1;
    return true;
  }
  char *e;
  unsigned long long x = strtoull(p, &e, 10);
  if (e == p) return false;
  *v = x;
  *pp = e;
  return true;
}

static bool parse_opts(struct scen *s, const char *p, const char *end, struct segspec *sp) {
  char buf[512];
  size_t n = (size_t)(end - p);
  if (n >= sizeof(buf)) return false;
  memcpy(buf, p, n);
  buf[n] = 0;
  sp->opts_given = true;
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    uint64_t a, b;
    const char *q;
    if (!strncmp(tok, "mss", 3)) {
      q = tok + 3;
      if (!parse_num(&q, &a)) return false;
      sp->o.has_mss = true;
      sp->o.mss = (uint16_t)a;
    } else if (!strncmp(tok, "sackOK", 6)) {
      sp->o.sack_permitted = true;
    } else if (!strncmp(tok, "TS val", 6)) {
      q = tok + 6;
      if (!parse_num(&q, &a)) return false;
      while (*q == ' ') q++;
      if (strncmp(q, "ecr", 3)) return false;
      q += 3;
      if (!parse_num(&q, &b)) return false;
      sp->o.has_ts = true;
      sp->ts_val_wild = a == WILD;
      sp->ts_ecr_wild = b == WILD;
      sp->o.ts_val = (uint32_t)a;
      sp->o.ts_ecr = (uint32_t)b;
    } else if (!strncmp(tok, "wscale", 6)) {
      q = tok + 6;
      if (!parse_num(&q, &a)) return false;
      sp->o.has_wscale = true;
      sp->o.wscale = (uint8_t)a;
    } else if (!strncmp(tok, "sack", 4)) {
      q = tok + 4;
      while (*q) {
        if (!parse_num(&q, &a)) break;
        if (*q != ':') return false;
        q++;
        if (!parse_num(&q, &b)) return false;
        if (sp->o.nsack >= TCP_MAX_SACK_BLOCKS) return false;
        sp->o.sack[sp->o.nsack].left = (uint32_t)a;
        sp->o.sack[sp->o.nsack].right = (uint32_t)b;
        sp->o.nsack++;
      }
    } else if (!strcmp(tok, "nop") || !strcmp(tok, "eol")) {
    } else {
      fail(s, "unknown option '%s'", tok);
      return false;
    }
  }
  return true;
}

static bool parse_seg(struct scen *s, const char *p, struct segspec *sp) {
  memset(sp, 0, sizeof(*sp));
  sp->ack = sp->win = WILD;
  while (*p == ' ') p++;
  for (; *p && *p != ' '; p++) {
    switch (*p) {
      case 'S': sp->flags |= TCP_SYN; break;
      case 'F': sp->flags |= TCP_FIN; break;
      case 'R': sp->flags |= TCP_RST; break;
      case 'P': sp->flags |= TCP_PSH; break;
      case '.': sp->flags |= TCP_ACK; break;
      case 'U': sp->flags |= TCP_URG; break;
      default: fail(s, "bad flag '%c'", *p); return false;
    }
  }
  if (!parse_num(&p, &sp->seq) || *p != ':') goto bad;
  p++;
  if (!parse_num(&p, &sp->end) || *p != '(') goto bad;
  p++;
  if (!parse_num(&p, &sp->len) || *p != ')') goto bad;
  p++;
  for (;;) {
    while (*p == ' ') p++;
    if (!*p) break;
    if (!strncmp(p, "ack", 3)) {
      p += 3;
      if (!parse_num(&p, &sp->ack)) goto bad;
      sp->has_ack_field = true;
    } else if (!strncmp(p, "win", 3)) {
      p += 3;
      if (!parse_num(&p, &sp->win)) goto bad;
    } else if (*p == '<') {
      const char *e = strchr(p, '>');
      if (!e || !parse_opts(s, p + 1, e, sp)) goto bad;
      p = e + 1;
    } else if (!strncmp(p, "badcsum", 7)) {
      sp->badcsum = true;
      p += 7;
    } else {
      goto bad;
    }
  }
  return true;
bad:
  fail(s, "cannot parse segment near '%s'", p);
  return false;
}

static void fmt_seg(char *out, size_t cap, const struct tcp_repr *r, uint32_t seq_base, uint32_t ack_base,
                    uint32_t sack_base) {
  char f[8];
  int n = 0;
  if (r->flags & TCP_SYN) f[n++] = 'S';
  if (r->flags & TCP_FIN) f[n++] = 'F';
  if (r->flags & TCP_RST) f[n++] = 'R';
  if (r->flags & TCP_PSH) f[n++] = 'P';
  if (r->flags & TCP_ACK) f[n++] = '.';
  f[n] = 0;
  uint32_t sq = r->seq - seq_base;
  int w = snprintf(out, cap, "%s %u:%u(%u)", f, sq, sq + r->payload_len, r->payload_len);
  if (r->flags & TCP_ACK) w += snprintf(out + w, cap - (size_t)w, " ack %u", r->ack - ack_base);
  w += snprintf(out + w, cap - (size_t)w, " win %u <", r->window);
  const struct tcp_opts *o = &r->opts;
  const char *sep = "";
  if (o->has_mss) w += snprintf(out + w, cap - (size_t)w, "%smss %u", sep, o->mss), sep = ",";
  if (o->sack_permitted) w += snprintf(out + w, cap - (size_t)w, "%ssackOK", sep), sep = ",";
  if (o->has_ts) w += snprintf(out + w, cap - (size_t)w, "%sTS val %u ecr %u", sep, o->ts_val, o->ts_ecr), sep = ",";
  if (o->has_wscale) w += snprintf(out + w, cap - (size_t)w, "%swscale %u", sep, o->wscale), sep = ",";
  if (o->nsack) {
    w += snprintf(out + w, cap - (size_t)w, "%ssack", sep);
    for (int i = 0; i < o->nsack; i++)
      w += snprintf(out + w, cap - (size_t)w, " %u:%u", o->sack[i].left - sack_base, o->sack[i].right - sack_base);
  }
  snprintf(out + w, cap - (size_t)w, ">");
}

/* ---- actions ---- */
static void inject(struct scen *s, const char *spec) {
  struct segspec sp;
  if (!parse_seg(s, spec, &sp)) return;
  struct tcp_repr r;
  memset(&r, 0, sizeof(r));
  r.sport = s->rport;
  r.dport = s->lport;
  r.seq = (uint32_t)(REMOTE_BASE + sp.seq);
  r.ack = sp.has_ack_field ? (uint32_t)(OUR_ISS + sp.ack) : 0;
  r.flags = sp.flags;
  r.window = sp.win == WILD ? 65535 : (uint16_t)sp.win;
  r.opts = sp.o;
  for (int i = 0; i < r.opts.nsack; i++) {
    r.opts.sack[i].left += OUR_ISS;
    r.opts.sack[i].right += OUR_ISS;
  }
  uint8_t buf[1600];
  int h = tcp_emit_header(&r, buf, sizeof(buf));
  if (h < 0 || (size_t)h + sp.len > sizeof(buf)) {
    fail(s, "cannot build segment");
    return;
  }
  for (uint64_t i = 0; i < sp.len; i++) buf[h + i] = pat(sp.seq + i - 1);
  size_t len = (size_t)h + sp.len;
  tcp_fill_checksum(buf, len, REMOTE_IP, LOCAL_IP);
  if (sp.badcsum) buf[16] ^= 0x5a;
  tcp_input(s->t, REMOTE_IP, LOCAL_IP, buf, len, s->now);
  drain_events(s);
}

static bool opts_equal(const struct segspec *sp, const struct tcp_opts *o, char *why, size_t cap) {
  const struct tcp_opts *e = &sp->o;
  if (e->has_mss != o->has_mss || (e->has_mss && e->mss != o->mss)) return snprintf(why, cap, "mss"), false;
  if (e->sack_permitted != o->sack_permitted) return snprintf(why, cap, "sackOK"), false;
  if (e->has_wscale != o->has_wscale || (e->has_wscale && e->wscale != o->wscale))
    return snprintf(why, cap, "wscale"), false;
  if (e->has_ts != o->has_ts) return snprintf(why, cap, "TS presence"), false;
  if (e->has_ts && !sp->ts_val_wild && e->ts_val != o->ts_val) return snprintf(why, cap, "TS val"), false;
  if (e->has_ts && !sp->ts_ecr_wild && e->ts_ecr != o->ts_ecr) return snprintf(why, cap, "TS ecr"), false;
  if (e->nsack != o->nsack) return snprintf(why, cap, "number of SACK blocks"), false;
  for (int i = 0; i < e->nsack; i++)
    if ((uint32_t)(REMOTE_BASE + e->sack[i].left) != o->sack[i].left ||
        (uint32_t)(REMOTE_BASE + e->sack[i].right) != o->sack[i].right)
      return snprintf(why, cap, "SACK block %d", i), false;
  return true;
}

static void expect_out(struct scen *s, const char *spec, const char *raw, cpb_time_t when) {
  struct segspec sp;
  if (!parse_seg(s, spec, &sp)) return;
  int guard = 0;
  while (s->ncap == 0 && s->next_deadline <= when + TOL_US && guard++ < 100000)
    poll_at(s, s->next_deadline > s->now ? s->next_deadline : s->now);
  if (s->ncap == 0 && when > s->now) advance_to(s, when);
  if (s->ncap == 0) {
    fail(s, "expected at %.3f: %s\n      but nothing was sent", (double)(when - T0) / 1e6, raw);
    return;
  }
  struct cap_seg c = s->caps[0];
  memmove(&s->caps[0], &s->caps[1], sizeof(s->caps[0]) * (size_t)(s->ncap - 1));
  s->ncap--;
  struct tcp_repr r;
  int rc = tcp_parse(c.buf, c.len, c.src, c.dst, true, &r);
  if (rc != 0) {
    fail(s, "emitted segment does not parse (%d)", rc);
    return;
  }
  char got[512];
  fmt_seg(got, sizeof(got), &r, OUR_ISS, REMOTE_BASE, REMOTE_BASE);
  char why[128] = "";
  bool ok = true;
  int64_t dt = (int64_t)c.at - (int64_t)when;
  if (dt > TOL_US || dt < -TOL_US) snprintf(why, sizeof(why), "time"), ok = false;
  if (ok && r.flags != sp.flags) snprintf(why, sizeof(why), "flags"), ok = false;
  if (ok && sp.seq != WILD && (uint32_t)(r.seq - OUR_ISS) != (uint32_t)sp.seq) snprintf(why, sizeof(why), "seq"), ok = false;
  if (ok && sp.len != WILD && r.payload_len != sp.len) snprintf(why, sizeof(why), "length"), ok = false;
  if (ok && sp.ack != WILD && (uint32_t)(r.ack - REMOTE_BASE) != (uint32_t)sp.ack) snprintf(why, sizeof(why), "ack"), ok = false;
  if (ok && sp.win != WILD && r.window != sp.win) snprintf(why, sizeof(why), "window"), ok = false;
  if (ok && sp.opts_given) ok = opts_equal(&sp, &r.opts, why, sizeof(why));
  if (ok && r.sport != s->lport) snprintf(why, sizeof(why), "source port %u", r.sport), ok = false;
  if (ok) {
    uint64_t off = (uint32_t)(r.seq - OUR_ISS) - 1;
    for (uint32_t i = 0; i < r.payload_len; i++)
      if (r.payload[i] != pat(off + i)) {
        snprintf(why, sizeof(why), "payload byte %u (stream offset %llu)", i, (unsigned long long)(off + i));
        ok = false;
        break;
      }
  }
  if (!ok)
    fail(s, "segment differs (%s)\n      expected at %.3f: %s\n      got      at %.3f: > %s", why,
         (double)(when - T0) / 1e6, raw, (double)(c.at - T0) / 1e6, got);
}

static void check_no_pending(struct scen *s) {
  if (s->ncap == 0 || s->failed) return;
  struct tcp_repr r;
  char got[512] = "(unparseable)";
  if (tcp_parse(s->caps[0].buf, s->caps[0].len, s->caps[0].src, s->caps[0].dst, true, &r) == 0)
    fmt_seg(got, sizeof(got), &r, OUR_ISS, REMOTE_BASE, REMOTE_BASE);
  fail(s, "unexpected segment at %.3f: > %s", (double)(s->caps[0].at - T0) / 1e6, got);
}

static bool parse_expect_ret(struct scen *s, const char *p, long *want, bool *has) {
  while (*p == ' ') p++;
  *has = false;
  if (!*p) return true;
  if (*p == '=') {
    p++;
    *want = strtol(p, NULL, 10);
    *has = true;
    return true;
  }
  char name[32];
  if (sscanf(p, "%31s", name) != 1) return false;
  if (!strcmp(name, "EOF")) {
    *want = 0;
    *has = true;
    return true;
  }
  int v;
  if (!err_by_name(name, &v)) {
    fail(s, "unknown result '%s'", name);
    return false;
  }
  *want = v;
  *has = true;
  return true;
}

static uint64_t stat_by_name(struct scen *s, const char *n, bool *ok) {
  struct tcp_stats st;
  tcp_get_stats(s->t, &st);
  *ok = true;
#define S(f) if (!strcmp(n, #f)) return st.f;
  S(segs_in) S(segs_out) S(bytes_in) S(bytes_out) S(bad_segments) S(bad_checksums) S(no_listener_rsts)
  S(rsts_sent) S(rsts_received) S(active_opens) S(passive_opens) S(established) S(backlog_drops)
  S(flow_limit_drops) S(retransmits) S(rto_timeouts) S(fast_retransmits) S(sack_recoveries) S(dup_acks)
  S(ooo_segments) S(dup_segments) S(out_of_window) S(paws_drops) S(challenge_acks) S(zero_window_probes)
  S(keepalive_probes) S(delayed_acks) S(timeouts) S(chunk_exhausted) S(flows_current) S(listeners_current)
  S(syncookies_sent) S(syncookies_ok) S(syncookies_failed)
#undef S
  *ok = false;
  return 0;
}

static int64_t info_by_name(struct scen *s, const char *n, bool *ok) {
  struct tcp_flow_info fi;
  *ok = false;
  if (tcp_flow_info(s->t, s->fid, &fi) != 0) {
    fail(s, "no flow for info");
    return 0;
  }
  *ok = true;
#define I(f) if (!strcmp(n, #f)) return (int64_t)fi.f;
  I(snd_wnd) I(rcv_wnd) I(snd_wscale) I(rcv_wscale) I(ts_ok) I(sack_ok) I(mss) I(cwnd) I(ssthresh)
  I(srtt_us) I(rttvar_us) I(rto_us) I(unacked_bytes) I(unsent_bytes) I(readable_bytes) I(retransmits)
  I(bytes_in) I(bytes_out) I(nodelay) I(keepalive)
#undef I
  *ok = false;
  return 0;
}

struct find_ctx {
  struct scen *s;
  const char *state;
};

static void find_cb(void *ctx, const struct tcp_flow_info *fi) {
  struct find_ctx *c = ctx;
  if (fi->local_port == c->s->lport && fi->remote_port == c->s->rport) c->state = tcp_state_name(fi->state);
}

/* The app released its id (close): find the orphan by its ports instead. */
static const char *orphan_state(struct scen *s) {
  struct find_ctx c = {s, "GONE"};
  tcp_foreach_flow(s->t, find_cb, &c);
  return c.state;
}

static void do_expect(struct scen *s, const char *p) {
  char what[32], a[64] = "", b[64] = "", c[64] = "";
  int n = sscanf(p, "%31s %63s %63s %63s", what, a, b, c);
  if (n < 1) {
    fail(s, "bad expect");
    return;
  }
  if (!strcmp(what, "state")) {
    struct tcp_flow_info fi;
    const char *got = "GONE";
    if (s->have_fid && tcp_flow_info(s->t, s->fid, &fi) == 0) got = tcp_state_name(fi.state);
    else got = orphan_state(s);
    if (strcmp(got, a)) fail(s, "state is %s, expected %s", got, a);
  } else if (!strcmp(what, "event")) {
    for (int i = 0; i < s->nev; i++) {
      if (strcmp(ev_names[s->evs[i].type <= 5 ? s->evs[i].type : 0], a)) continue;
      if (n >= 3) {
        int e;
        if (!err_by_name(b, &e)) FAIL(s, "unknown error %s", b);
        if (s->evs[i].err != e) FAIL(s, "event %s has err %s, expected %s", a, err_name(s->evs[i].err), b);
      }
      memmove(&s->evs[i], &s->evs[i + 1], sizeof(s->evs[0]) * (size_t)(s->nev - i - 1));
      s->nev--;
      return;
    }
    fail(s, "no %s event pending (%d others)", a, s->nev);
  } else if (!strcmp(what, "noevents")) {
    if (s->nev) fail(s, "unexpected event %s", ev_names[s->evs[0].type <= 5 ? s->evs[0].type : 0]);
  } else if (!strcmp(what, "stat") || !strcmp(what, "info")) {
    bool ge = !strcmp(b, ">="), le = !strcmp(b, "<=");
    const char *vs = (ge || le) ? c : b;
    int64_t want = strtoll(vs, NULL, 10), got;
    bool ok;
    got = !strcmp(what, "stat") ? (int64_t)stat_by_name(s, a, &ok) : info_by_name(s, a, &ok);
    if (s->failed) return;
    if (!ok) FAIL(s, "unknown %s '%s'", what, a);
    if (ge ? got < want : le ? got > want : got != want)
      fail(s, "%s %s is %lld, expected %s%lld", what, a, (long long)got, ge ? ">= " : le ? "<= " : "",
           (long long)want);
  } else if (!strcmp(what, "flows")) {
    long want = strtol(a, NULL, 10);
    if ((long)tcp_debug_flows_live(s->t) != want || (long)s->arena.hdr->slots_used != want)
      fail(s, "flows %u (slots %u), expected %ld", tcp_debug_flows_live(s->t), s->arena.hdr->slots_used, want);
  } else if (!strcmp(what, "chunks")) {
    long want = strtol(a, NULL, 10);
    if ((long)s->arena.hdr->chunks_used != want) fail(s, "chunks %u, expected %ld", s->arena.hdr->chunks_used, want);
  } else if (!strcmp(what, "lport")) {
    long want = strtol(a, NULL, 10);
    if (s->lport != want) fail(s, "local port %u, expected %ld", s->lport, want);
  } else if (!strcmp(what, "noflow")) {
    struct tcp_flow_info fi;
    if (tcp_flow_info(s->t, s->fid, &fi) != -ENOENT) fail(s, "flow id still valid");
  } else {
    fail(s, "unknown expect '%s'", what);
  }
}

static void do_config(struct scen *s, const char *p) {
  char k[32];
  unsigned long v = 0, v2 = 0;
  char sv[32] = "";
  int n = sscanf(p, "%31s %31s", k, sv);
  if (n < 2) FAIL(s, "bad config");
  v = strtoul(sv, NULL, 10);
  struct tcp_config *c = &s->cfg;
  if (!strcmp(k, "mss")) c->mss = (uint16_t)v;
  else if (!strcmp(k, "wscale")) c->wscale = (uint8_t)v;
  else if (!strcmp(k, "timestamps")) c->timestamps = v != 0;
  else if (!strcmp(k, "sack")) c->sack = v != 0;
  else if (!strcmp(k, "cc")) c->cc = !strcmp(sv, "newreno") ? TCP_CC_NEWRENO : TCP_CC_CUBIC;
  else if (!strcmp(k, "rcvbuf")) c->rcvbuf = (uint32_t)v;
  else if (!strcmp(k, "sndbuf")) c->sndbuf = (uint32_t)v;
  else if (!strcmp(k, "delack_ms")) c->delack_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "time_wait_ms")) c->time_wait_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "fin_wait2_ms")) c->fin_wait2_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "keepidle_ms")) c->keepalive_idle_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "keepintvl_ms")) c->keepalive_intvl_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "keepcnt")) c->keepalive_probes = (uint32_t)v;
  else if (!strcmp(k, "syn_retries")) c->syn_retries = (uint32_t)v;
  else if (!strcmp(k, "max_retries")) c->max_retries = (uint32_t)v;
  else if (!strcmp(k, "rto_min_ms")) c->rto_min_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "rto_initial_ms")) c->rto_initial_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "rto_max_ms")) c->rto_max_us = (uint32_t)v * 1000;
  else if (!strcmp(k, "backlog")) c->default_backlog = (uint32_t)v;
  else if (!strcmp(k, "max_flows")) c->max_flows = (uint32_t)v;
  else if (!strcmp(k, "challenge_ack_limit")) c->challenge_ack_limit = (uint32_t)v;
  else if (!strcmp(k, "syncookies")) c->syncookies_off = v == 0;
  else if (!strcmp(k, "ephemeral")) {
    if (sscanf(p, "%*s %lu %lu", &v, &v2) != 2) FAIL(s, "ephemeral LO HI");
    c->ephemeral_lo = (uint16_t)v;
    c->ephemeral_hi = (uint16_t)v2;
  } else fail(s, "unknown config '%s'", k);
}

static void ensure_init(struct scen *s) {
  if (s->inited || s->failed) return;
  struct cpb_arena_config ac = {.slots = 64, .chunks = 4096};
  if (cpb_arena_create(&s->arena, &ac) != 0) FAIL(s, "arena");
  s->t = malloc(tcp_sizeof());
  struct cpb_ipout out = {.ctx = s, .begin = cap_begin, .commit = cap_commit};
  int rc = tcp_init(s->t, &s->arena, &s->cfg, &out);
  if (rc != 0) FAIL(s, "tcp_init: %d", rc);
  tcp_debug_fix_iss(s->t, OUR_ISS, (uint32_t)(0 - (uint32_t)(T0 / 1000)));
  s->inited = true;
  s->now = T0;
  s->next_deadline = UINT64_MAX;
}

static void do_action(struct scen *s, const char *p, const char *raw, cpb_time_t when) {
  char cmd[32] = "";
  sscanf(p, "%31s", cmd);
  const char *rest = p + strlen(cmd);
  while (*rest == ' ') rest++;
  if (!strcmp(cmd, ">")) {
    expect_out(s, rest, raw, when);
    return;
  }
  advance_to(s, when);
  check_no_pending(s);
  if (s->failed) return;
  long want = 0;
  bool has = false;
  if (!strcmp(cmd, "<")) {
    inject(s, rest);
  } else if (!strcmp(cmd, "listen")) {
    unsigned port = 0, backlog = 0;
    char ename[32] = "OK";
    int ewant = 0;
    int nf = sscanf(rest, "%u %u %31s", &port, &backlog, ename);
    if (nf < 3) sscanf(rest, "%u %31s", &port, ename);
    if (!err_by_name(ename, &ewant)) ewant = 0;
    uint64_t lid;
    int rc = tcp_listen(s->t, (uint16_t)port, backlog, &lid);
    if (rc != ewant) FAIL(s, "listen: %s", err_name(rc));
    if (rc) return;
    s->lid = lid;
    s->have_lid = true;
    s->lport = (uint16_t)port;
  } else if (!strcmp(cmd, "unlisten")) {
    int rc = tcp_unlisten(s->t, s->lid, s->now);
    if (rc) fail(s, "unlisten: %s", err_name(rc));
  } else if (!strcmp(cmd, "accept")) {
    if (!parse_expect_ret(s, rest, &want, &has)) return;
    uint64_t id;
    int rc = tcp_accept(s->t, s->lid, &id);
    if (rc != (has ? want : 0)) FAIL(s, "accept returned %s", err_name(rc));
    if (rc == 0) {
      s->fid = id;
      s->have_fid = true;
      s->send_off = s->recv_off = 0;
    }
  } else if (!strcmp(cmd, "connect")) {
    unsigned port = 0, sport = 0;
    char ename[32] = "OK";
    int ewant = 0;
    if (sscanf(rest, "%u %u %31s", &port, &sport, ename) < 3) sscanf(rest, "%u %31s", &port, ename);
    if (!err_by_name(ename, &ewant)) ewant = 0;
    uint64_t id;
    int rc = tcp_connect(s->t, REMOTE_IP, (uint16_t)port, (uint16_t)sport, s->now, &id);
    if (rc != ewant) FAIL(s, "connect: %s", err_name(rc));
    if (rc) return;
    struct tcp_flow_info fi;
    tcp_flow_info(s->t, id, &fi);
    s->fid = id;
    s->have_fid = true;
    s->lport = fi.local_port;
    s->rport = (uint16_t)port;
    s->send_off = s->recv_off = 0;
  } else if (!strcmp(cmd, "lport")) {
    s->lport = (uint16_t)strtoul(rest, NULL, 10);
  } else if (!strcmp(cmd, "rport")) {
    s->rport = (uint16_t)strtoul(rest, NULL, 10);
  } else if (!strcmp(cmd, "send")) {
    char *e;
    unsigned long n = strtoul(rest, &e, 10);
    if (!parse_expect_ret(s, e, &want, &has)) return;
    uint8_t *buf = malloc(n ? n : 1);
    for (unsigned long i = 0; i < n; i++) buf[i] = pat(s->send_off + i);
    long rc = tcp_send(s->t, s->fid, buf, n, s->now);
    free(buf);
    long exp = has ? want : (long)n;
    if (rc != exp) FAIL(s, "send returned %s, expected %s", err_name(rc), err_name(exp));
    if (rc > 0) s->send_off += (uint64_t)rc;
  } else if (!strcmp(cmd, "recv")) {
    char *e;
    unsigned long n = strtoul(rest, &e, 10);
    if (!parse_expect_ret(s, e, &want, &has)) return;
    uint8_t *buf = malloc(n ? n : 1);
    long rc = tcp_recv(s->t, s->fid, buf, n, s->now);
    long exp = has ? want : (long)n;
    if (rc != exp) {
      free(buf);
      FAIL(s, "recv returned %s, expected %s", err_name(rc), err_name(exp));
    }
    for (long i = 0; i < rc; i++)
      if (buf[i] != pat(s->recv_off + (uint64_t)i)) {
        free(buf);
        FAIL(s, "recv byte %ld (stream offset %llu) wrong", i, (unsigned long long)(s->recv_off + (uint64_t)i));
      }
    free(buf);
    if (rc > 0) s->recv_off += (uint64_t)rc;
  } else if (!strcmp(cmd, "shutdown") || !strcmp(cmd, "close") || !strcmp(cmd, "abort")) {
    if (!parse_expect_ret(s, rest, &want, &has)) return;
    int rc = !strcmp(cmd, "shutdown") ? tcp_shutdown(s->t, s->fid, s->now)
             : !strcmp(cmd, "close")  ? tcp_close(s->t, s->fid, s->now)
                                      : tcp_abort(s->t, s->fid, s->now);
    if (rc != (has ? want : 0)) FAIL(s, "%s returned %s", cmd, err_name(rc));
  } else if (!strcmp(cmd, "setopt")) {
    char name[32];
    unsigned v = 0;
    int used = 0;
    if (sscanf(rest, "%31s %u%n", name, &v, &used) != 2) FAIL(s, "setopt NAME VAL [ERRNO]");
    enum tcp_sockopt o = !strcmp(name, "nodelay")     ? TCP_OPT_NODELAY
                         : !strcmp(name, "keepalive")  ? TCP_OPT_KEEPALIVE
                         : !strcmp(name, "rto_min_us") ? TCP_OPT_RTO_MIN_US
                                                       : TCP_OPT_KEEPIDLE_MS;
    if (!parse_expect_ret(s, rest + used, &want, &has)) return; /* "setopt NAME VAL EINVAL": a refusal */
    int rc = tcp_setopt(s->t, s->fid, o, v);
    if (rc != (has ? want : 0)) FAIL(s, "setopt %s %u returned %s", name, v, err_name(rc));
  } else if (!strcmp(cmd, "expect")) {
    do_expect(s, rest);
  } else {
    FAIL(s, "unknown action '%s'", cmd);
  }
  if (s->t && !s->failed) poll_at(s, s->now);
}

static void run_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "  cannot open %s\n", path);
    t_failures_in_case++;
    return;
  }
  struct scen *s = calloc(1, sizeof(*s));
  s->file = path;
  tcp_config_defaults(&s->cfg);
  s->cfg.local_ip = LOCAL_IP;
  s->cfg.max_flows = 32;
  for (int i = 0; i < 16; i++) s->cfg.iss_secret[i] = (uint8_t)(i * 17 + 3);
  s->rport = 40000;
  s->lport = 8080;
  char line[1024];
  while (!s->failed && fgets(line, sizeof(line), f)) {
    s->line++;
    char *p = line;
    size_t L = strlen(p);
    while (L && (p[L - 1] == '\n' || p[L - 1] == '\r' || p[L - 1] == ' ')) p[--L] = 0;
    char *hash = strchr(p, '#');
    if (hash) *hash = 0;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) continue;
    if (!strncmp(p, "config", 6)) {
      if (s->inited) fail(s, "config after the first action");
      else do_config(s, p + 6);
      continue;
    }
    ensure_init(s);
    if (s->failed) break;
    char *e;
    double secs = strtod(p + (*p == '+'), &e);
    if (e == p + (*p == '+')) {
      fail(s, "line must start with a time");
      break;
    }
    int64_t us = (int64_t)(secs * 1e6 + (secs >= 0 ? 0.5 : -0.5));
    s->script_us = *p == '+' ? s->script_us + us : us;
    while (*e == ' ' || *e == '\t') e++;
    do_action(s, e, e, T0 + (cpb_time_t)s->script_us);
  }
  fclose(f);
  if (!s->failed && s->inited) check_no_pending(s);
  if (s->failed) {
    fprintf(stderr, "  %s\n", s->msg);
    t_failures_in_case++;
  }
  if (s->t) {
    tcp_fini(s->t);
    if (!s->failed && (s->arena.hdr->slots_used || s->arena.hdr->chunks_used)) {
      fprintf(stderr, "  %s: tcp_fini left %u slots / %u chunks\n", path, s->arena.hdr->slots_used,
              s->arena.hdr->chunks_used);
      t_failures_in_case++;
    }
    free(s->t);
  }
  if (s->inited) cpb_arena_destroy(&s->arena);
  free(s);
}

/* ---- one test case per script ---- */
#define MAX_SCRIPTS 128
static char script_paths[MAX_SCRIPTS][512];
static int nscripts;

#define TR(n) \
  static void scen_##n(void) { run_file(script_paths[n]); }
TR(0)
TR(1)
TR(2)
TR(3)
TR(4)
TR(5)
TR(6)
TR(7)
TR(8)
TR(9)
TR(10)
TR(11)
TR(12)
TR(13)
TR(14)
TR(15)
TR(16)
TR(17)
TR(18)
TR(19)
TR(20)
TR(21)
TR(22)
TR(23)
TR(24)
TR(25)
TR(26)
TR(27)
TR(28)
TR(29)
TR(30)
TR(31)
TR(32)
TR(33)
TR(34)
TR(35)
TR(36)
TR(37)
TR(38)
TR(39)
TR(40)
TR(41)
TR(42)
TR(43)
TR(44)
TR(45)
TR(46)
TR(47)
TR(48)
TR(49)
TR(50)
TR(51)
TR(52)
TR(53)
TR(54)
TR(55)
TR(56)
TR(57)
TR(58)
TR(59)
TR(60)
TR(61)
TR(62)
TR(63)
TR(64)
TR(65)
TR(66)
TR(67)
TR(68)
TR(69)
TR(70)
TR(71)
TR(72)
TR(73)
TR(74)
TR(75)
TR(76)
TR(77)
TR(78)
TR(79)
TR(80)
TR(81)
TR(82)
TR(83)
TR(84)
TR(85)
TR(86)
TR(87)
TR(88)
TR(89)
TR(90)
TR(91)
TR(92)
TR(93)
TR(94)
TR(95)
TR(96)
TR(97)
TR(98)
TR(99)
TR(100)
TR(101)
TR(102)
TR(103)
TR(104)
TR(105)
TR(106)
TR(107)
TR(108)
TR(109)
TR(110)
TR(111)
TR(112)
TR(113)
TR(114)
TR(115)
TR(116)
TR(117)
TR(118)
TR(119)
TR(120)
TR(121)
TR(122)
TR(123)
TR(124)
TR(125)
TR(126)
TR(127)
static void (*const tramp[MAX_SCRIPTS])(void) = {
    scen_0, scen_1, scen_2, scen_3, scen_4, scen_5, scen_6, scen_7,
    scen_8, scen_9, scen_10, scen_11, scen_12, scen_13, scen_14, scen_15,
    scen_16, scen_17, scen_18, scen_19, scen_20, scen_21, scen_22, scen_23,
    scen_24, scen_25, scen_26, scen_27, scen_28, scen_29, scen_30, scen_31,
    scen_32, scen_33, scen_34, scen_35, scen_36, scen_37, scen_38, scen_39,
    scen_40, scen_41, scen_42, scen_43, scen_44, scen_45, scen_46, scen_47,
    scen_48, scen_49, scen_50, scen_51, scen_52, scen_53, scen_54, scen_55,
    scen_56, scen_57, scen_58, scen_59, scen_60, scen_61, scen_62, scen_63,
    scen_64, scen_65, scen_66, scen_67, scen_68, scen_69, scen_70, scen_71,
    scen_72, scen_73, scen_74, scen_75, scen_76, scen_77, scen_78, scen_79,
    scen_80, scen_81, scen_82, scen_83, scen_84, scen_85, scen_86, scen_87,
    scen_88, scen_89, scen_90, scen_91, scen_92, scen_93, scen_94, scen_95,
    scen_96, scen_97, scen_98, scen_99, scen_100, scen_101, scen_102, scen_103,
    scen_104, scen_105, scen_106, scen_107, scen_108, scen_109, scen_110, scen_111,
    scen_112, scen_113, scen_114, scen_115, scen_116, scen_117, scen_118, scen_119,
    scen_120, scen_121, scen_122, scen_123, scen_124, scen_125, scen_126, scen_127};

static bool is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void no_scripts(void) {
  fprintf(stderr, "  no scenario directory found (set CPB_SCENARIO_DIR or run from the repo root)\n");
  t_failures_in_case++;
}

/* glibc passes argc/argv to constructors, which lets `test_tcp_scenarios DIR` name the directory. */
__attribute__((constructor(200))) static void register_scripts(int argc, char **argv) {
  const char *dir = getenv("CPB_SCENARIO_DIR");
  if (!dir && argc > 1 && is_dir(argv[1])) dir = argv[1];
  static const char *cands[] = {"test/scenarios", "../scenarios", "../../scenarios", "../../test/scenarios"};
  for (size_t i = 0; !dir && i < sizeof(cands) / sizeof(cands[0]); i++)
    if (is_dir(cands[i])) dir = cands[i];
  static char exe_rel[600];
  if (!dir) {
    /* Relative to the binary (test/c/bin/..): works from any working directory. */
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
      exe[n] = 0;
      char *slash = strrchr(exe, '/');
      if (slash) *slash = 0;
      snprintf(exe_rel, sizeof(exe_rel), "%s/../../scenarios", exe);
      if (is_dir(exe_rel)) dir = exe_rel;
    }
  }
  if (!dir) {
    if (t_ncases < T_MAX_CASES) t_cases[t_ncases++] = (struct t_case){"scenarios_missing", no_scripts};
    return;
  }
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)) && nscripts < MAX_SCRIPTS) {
    size_t n = strlen(de->d_name);
    if (n < 5 || strcmp(de->d_name + n - 4, ".pkt")) continue;
    snprintf(script_paths[nscripts++], sizeof(script_paths[0]), "%s/%s", dir, de->d_name);
  }
  closedir(d);
  qsort(script_paths, (size_t)nscripts, sizeof(script_paths[0]), cmp_str);
  for (int i = 0; i < nscripts && t_ncases < T_MAX_CASES; i++)
    t_cases[t_ncases++] = (struct t_case){script_paths[i], tramp[i]};
}
