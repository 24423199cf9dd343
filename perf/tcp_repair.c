/* The Prism-style baseline of the migration benchmark: the same live handoff capybara does, done by the
 * Linux kernel's own TCP with TCP_REPAIR between two kernel sockets on two hosts behind the VIP.
 *
 *   tcp_repair agent --name hostA --port P --unix DIR/hostA.sock --peer DIR/hostB.sock
 *                    [--lb-map /run/capybara/bpf/lb/lb_redirect --backend N] [--forward on|off]
 *
 * One agent runs in each host's namespace, listens on the kernel's VIP:P and echoes. The bench drives it
 * with lines on stdin ("link", "migrate", "quit") and reads one JSON line per event on stdout. On
 * "migrate" the owner of the connection
 *   freeze    turns TCP_REPAIR on (the kernel stops transmitting on the socket),
 *   snapshot  reads the sequence numbers, both queues (MSG_PEEK in repair mode), the negotiated options,
 *             the window and the timestamp clock into one blob,
 *   ship      writes the blob to the peer agent over a unix socket (both namespaces share the filesystem)
 *             and waits for its answer; the peer builds a socket in repair mode bound to VIP:P, restores
 *             everything, "connects" to the client without a handshake,
 *   steer     then (still on the target) writes the flow into the balancer's redirect table (one bpf map
 *             update, the same call capybara's runtimes make: native/dev/lbsteer.c) and only then turns
 *             repair off (the kernel sends a window probe, so the client hears of the new owner at once).
 *             Steering from the source after the answer, as capybara does, loses a race here: the
 *             target speaks first, the client answers, and its segment still reaches the old socket,
 *             which rejects it for acknowledging data it never sent (a challenge ACK; the client
 *             retransmits 200 ms later). capybara's source holds such segments and forwards them.
 *   release   closes the old socket, which in repair mode leaves without a FIN or RST (with --forward on,
 *             after forwarding and a 50 ms grace, see below).
 * The segments that reach the old owner between snapshot and steer are queued there in repair mode but
 * not acknowledged. Plain TCP_REPAIR (--forward off) drops them with the socket and the client's
 * retransmission timer (200 ms at least) recovers them: that is what the kernel API alone gives. With
 * --forward on the source ships those bytes to the target after steering, which appends them to its
 * receive queue (repair on for that moment): the kernel counterpart of capybara's hold-and-forward.
 *
 * This is a measuring tool, not engine code: it reads the clock and allocates as it pleases. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../native/common.h"
#include "../native/dev/lbsteer.h"

#define TR_MAGIC 0x43505452u     /* "CPTR": a connection */
#define TR_FWD_MAGIC 0x43505446u /* "CPTF": bytes that reached the source after its snapshot */
#define TR_FWD_HDR_LEN 8u
#define TR_VERSION 1u
#define TR_HDR_LEN 80u
#define TR_MAX_QUEUE (64u << 20)
#define TR_MAX_PEERS 4
#define TR_GRACE_US 50000u /* as capybara's RELEASE_GRACE_MS: stragglers past the balancer still arrive */
#define TR_TCP_ESTABLISHED 1 /* tcpi_state; linux/tcp.h has no name for it */

#ifndef TCPOPT_MSS
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_TIMESTAMP 8
#endif

/* What a connection is, as the kernel lets it be read and written in repair mode. */
struct tr_state {
  uint32_t local_addr, peer_addr; /* network order, as sockaddr_in holds them */
  uint16_t local_port, peer_port; /* network order */
  uint32_t snd_seq;               /* sequence number of the first byte of the send queue */
  uint32_t rcv_seq;               /* sequence number of the first unread byte of the receive queue */
  uint32_t sndq_len, sndq_unsent, rcvq_len;
  uint32_t mss, snd_wscale, rcv_wscale, options; /* options: TCPI_OPT_* */
  uint32_t timestamp;
  struct tcp_repair_window win;
  uint8_t *sndq, *rcvq;
};

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void emit(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

static int sockopt_int(int fd, int level, int name, int v) {
  return setsockopt(fd, level, name, &v, sizeof(v)) ? -errno : 0;
}

static int select_queue(int fd, int q) { return sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, q); }

static int get_u32(int fd, int name, uint32_t *out) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, IPPROTO_TCP, name, &v, &len)) return -errno;
  *out = (uint32_t)v;
  return 0;
}

/* Peeks up to len bytes of a queue (selected beforehand) into a fresh buffer; returns the count. */
static int peek_queue(int fd, uint32_t len, uint8_t **out) {
  *out = NULL;
  if (len == 0) return 0;
  if (len > TR_MAX_QUEUE) return -EFBIG;
  uint8_t *b = malloc(len);
  if (!b) return -ENOMEM;
  ssize_t n = recv(fd, b, len, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && errno == EAGAIN) n = 0;
  if (n < 0) {
    int e = -errno;
    free(b);
    return e;
  }
  *out = b;
  return (int)n;
}

/* Reads the state of a socket already in repair mode. */
static int tr_export(int fd, struct tr_state *s) {
  memset(s, 0, sizeof(*s));
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);
  if (getsockname(fd, (struct sockaddr *)&a, &alen)) return -errno;
  s->local_addr = a.sin_addr.s_addr;
  s->local_port = a.sin_port;
  alen = sizeof(a);
  if (getpeername(fd, (struct sockaddr *)&a, &alen)) return -errno;
  s->peer_addr = a.sin_addr.s_addr;
  s->peer_port = a.sin_port;

  /* Repair mode stops transmission, not reception: ACKs still shrink the send queue from its head and
   * data still grows the receive queue at its tail while we read. So the window is read first (its
   * rcv_wup may not pass the rcv_nxt we ship), the send queue is taken from its fixed end (write_seq),
   * and the receive queue is read until rcv_nxt stood still around the peek. */
  socklen_t wlen = sizeof(s->win);
  if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &s->win, &wlen)) return -errno;
  if (wlen != sizeof(s->win)) return -EIO;

  int outq = 0, unsent = 0, inq = 0;
  uint32_t seq = 0, seq2 = 0;
  int rc;
  if (ioctl(fd, SIOCOUTQ, &outq) || ioctl(fd, SIOCOUTQNSD, &unsent)) return -errno;
  if (outq < 0 || unsent < 0) return -EIO;
  if ((rc = select_queue(fd, TCP_SEND_QUEUE)) || (rc = get_u32(fd, TCP_QUEUE_SEQ, &seq))) return rc;
  if ((rc = peek_queue(fd, (uint32_t)outq, &s->sndq)) < 0) return rc;
  s->sndq_len = (uint32_t)rc;
  s->snd_seq = seq - s->sndq_len; /* TCP_QUEUE_SEQ is write_seq: the end of the queue */
  s->sndq_unsent = CPB_MIN((uint32_t)unsent, s->sndq_len); /* nothing is sent in repair mode */

  if ((rc = select_queue(fd, TCP_RECV_QUEUE))) return rc;
  for (int tries = 0;; tries++) {
    if (tries == 8) return -EAGAIN;
    free(s->rcvq);
    s->rcvq = NULL;
    if ((rc = get_u32(fd, TCP_QUEUE_SEQ, &seq))) return rc;
    if (ioctl(fd, SIOCINQ, &inq)) return -errno;
    if (inq < 0) return -EIO;
    if ((rc = peek_queue(fd, (uint32_t)inq, &s->rcvq)) < 0) return rc;
    s->rcvq_len = (uint32_t)rc;
    if ((rc = get_u32(fd, TCP_QUEUE_SEQ, &seq2))) return rc;
    if (seq == seq2 && s->rcvq_len == (uint32_t)inq) break;
  }
  s->rcv_seq = seq - s->rcvq_len; /* rcv_nxt: the end of what was received */
  if ((rc = select_queue(fd, TCP_NO_QUEUE))) return rc;

  struct tcp_info ti;
  socklen_t tlen = sizeof(ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen)) return -errno;
  if (ti.tcpi_state != TR_TCP_ESTABLISHED) return -ENOTCONN;
  s->options = ti.tcpi_options;
  s->snd_wscale = ti.tcpi_snd_wscale;
  s->rcv_wscale = ti.tcpi_rcv_wscale;
  if ((rc = get_u32(fd, TCP_MAXSEG, &s->mss))) return rc;
  if ((s->options & TCPI_OPT_TIMESTAMPS) && (rc = get_u32(fd, TCP_TIMESTAMP, &s->timestamp))) return rc;
  return 0;
}

static void tr_state_free(struct tr_state *s) {
  free(s->sndq);
  free(s->rcvq);
  s->sndq = s->rcvq = NULL;
}

/* The blob: a fixed big-endian header, then the send queue, then the receive queue. */
static uint8_t *tr_encode(const struct tr_state *s, uint32_t *len_out) {
  uint32_t len = TR_HDR_LEN + s->sndq_len + s->rcvq_len;
  uint8_t *b = malloc(len);
  if (!b) return NULL;
  const uint32_t f[] = {TR_MAGIC, TR_VERSION, ntohl(s->local_addr), ntohl(s->peer_addr),
                        ((uint32_t)ntohs(s->local_port) << 16) | ntohs(s->peer_port), s->snd_seq, s->rcv_seq,
                        s->sndq_len, s->sndq_unsent, s->rcvq_len, s->mss, s->snd_wscale, s->rcv_wscale, s->options,
                        s->timestamp, s->win.snd_wl1, s->win.snd_wnd, s->win.max_window, s->win.rcv_wnd};
  _Static_assert(sizeof(f) + 4 == TR_HDR_LEN, "header layout");
  for (size_t i = 0; i < CPB_ARRAY_LEN(f); i++) cpb_put_be32(b + 4 * i, f[i]);
  cpb_put_be32(b + sizeof(f), s->win.rcv_wup);
  if (s->sndq_len) memcpy(b + TR_HDR_LEN, s->sndq, s->sndq_len);
  if (s->rcvq_len) memcpy(b + TR_HDR_LEN + s->sndq_len, s->rcvq, s->rcvq_len);
  *len_out = len;
  return b;
}

/* Parses a blob; the queues point into it (not owned). */
static int tr_decode(const uint8_t *b, uint32_t len, struct tr_state *s) {
  memset(s, 0, sizeof(*s));
  if (len < TR_HDR_LEN) return -EBADMSG;
  uint32_t f[TR_HDR_LEN / 4];
  for (size_t i = 0; i < CPB_ARRAY_LEN(f); i++) f[i] = cpb_get_be32(b + 4 * i);
  if (f[0] != TR_MAGIC || f[1] != TR_VERSION) return -EBADMSG;
  s->local_addr = htonl(f[2]);
  s->peer_addr = htonl(f[3]);
  s->local_port = htons((uint16_t)(f[4] >> 16));
  s->peer_port = htons((uint16_t)f[4]);
  s->snd_seq = f[5];
  s->rcv_seq = f[6];
  s->sndq_len = f[7];
  s->sndq_unsent = f[8];
  s->rcvq_len = f[9];
  s->mss = f[10];
  s->snd_wscale = f[11];
  s->rcv_wscale = f[12];
  s->options = f[13];
  s->timestamp = f[14];
  s->win = (struct tcp_repair_window){.snd_wl1 = f[15], .snd_wnd = f[16], .max_window = f[17], .rcv_wnd = f[18], .rcv_wup = f[19]};
  if (s->sndq_len > TR_MAX_QUEUE || s->rcvq_len > TR_MAX_QUEUE || s->sndq_unsent > s->sndq_len) return -EBADMSG;
  if ((uint64_t)TR_HDR_LEN + s->sndq_len + s->rcvq_len != len) return -EBADMSG;
  if (s->snd_wscale > 14 || s->rcv_wscale > 14 || s->mss == 0 || s->mss > 65535) return -EBADMSG;
  s->sndq = (uint8_t *)b + TR_HDR_LEN;
  s->rcvq = (uint8_t *)b + TR_HDR_LEN + s->sndq_len;
  return 0;
}

/* Queues bytes into the selected queue of a socket in repair mode. */
static int fill_queue(int fd, const uint8_t *p, uint32_t len) {
  while (len > 0) {
    ssize_t n = send(fd, p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    p += n;
    len -= (uint32_t)n;
  }
  return 0;
}

/* Pointing the balancer at the target, between restoring the socket and letting it speak. */
struct tr_steer {
  int lb_fd;
  uint32_t backend;
  int rc;
  uint64_t us;
};

static void tr_steer_flow(struct tr_steer *st, const struct tr_state *s) {
  uint64_t t = now_us();
  st->rc = st->lb_fd >= 0 ? cpb_lb_redirect(st->lb_fd, ntohl(s->peer_addr), ntohs(s->peer_port), ntohl(s->local_addr),
                                            ntohs(s->local_port), st->backend)
                          : -ENOTSUP;
  st->us = now_us() - t;
}

/* Builds a live socket from a state; returns the fd or -errno. The order follows what the kernel allows:
 * sequence numbers only before connect, options only before any byte is queued for sending, the window
 * only once rcv_nxt is where the queue put it. */
static int tr_import(const struct tr_state *s, struct tr_steer *st) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc;
  /* Repair mode lets the socket share VIP:port with the listener (the kernel forces address reuse). */
  if ((rc = sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON))) goto fail;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = s->local_port, .sin_addr.s_addr = s->local_addr};
  if (bind(fd, (struct sockaddr *)&a, sizeof(a))) goto fail_errno;
  if ((rc = select_queue(fd, TCP_SEND_QUEUE)) || (rc = sockopt_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)s->snd_seq))) goto fail;
  if ((rc = select_queue(fd, TCP_RECV_QUEUE)) || (rc = sockopt_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)s->rcv_seq))) goto fail;
  if ((s->options & TCPI_OPT_TIMESTAMPS) && (rc = sockopt_int(fd, IPPROTO_TCP, TCP_TIMESTAMP, (int)s->timestamp))) goto fail;
  struct sockaddr_in p = {.sin_family = AF_INET, .sin_port = s->peer_port, .sin_addr.s_addr = s->peer_addr};
  if (connect(fd, (struct sockaddr *)&p, sizeof(p))) goto fail_errno; /* no handshake in repair mode */

  struct tcp_repair_opt opts[4];
  unsigned n = 0;
  opts[n++] = (struct tcp_repair_opt){.opt_code = TCPOPT_MSS, .opt_val = s->mss};
  if (s->options & TCPI_OPT_WSCALE) opts[n++] = (struct tcp_repair_opt){.opt_code = TCPOPT_WINDOW, .opt_val = s->snd_wscale | (s->rcv_wscale << 16)};
  if (s->options & TCPI_OPT_SACK) opts[n++] = (struct tcp_repair_opt){.opt_code = TCPOPT_SACK_PERM, .opt_val = 0};
  if (s->options & TCPI_OPT_TIMESTAMPS) opts[n++] = (struct tcp_repair_opt){.opt_code = TCPOPT_TIMESTAMP, .opt_val = 0};
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, (socklen_t)(n * sizeof(opts[0])))) goto fail_errno;

  if ((rc = select_queue(fd, TCP_RECV_QUEUE)) || (rc = fill_queue(fd, s->rcvq, s->rcvq_len))) goto fail;
  /* Bytes already transmitted go in as sent (the kernel retransmits them if unacknowledged); the rest is
   * written normally once repair is off, so it is transmitted. */
  uint32_t sent = s->sndq_len - s->sndq_unsent;
  if ((rc = select_queue(fd, TCP_SEND_QUEUE)) || (rc = fill_queue(fd, s->sndq, sent))) goto fail;
  if ((rc = select_queue(fd, TCP_NO_QUEUE))) goto fail;
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &s->win, sizeof(s->win))) goto fail_errno;
  tr_steer_flow(st, s);
  if ((rc = sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF))) goto fail;
  if ((rc = sockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1))) goto fail;
  if ((rc = fill_queue(fd, s->sndq + sent, s->sndq_unsent))) goto fail;
  return fd;
fail_errno:
  rc = -errno;
fail:
  close(fd);
  return rc;
}

/* Appends bytes starting at seq to the receive queue of a live socket (repair on for the moment it takes):
 * what reached the source after its snapshot. Bytes the target already has are skipped; a hole is refused. */
static int tr_append(int fd, uint32_t seq, const uint8_t *p, uint32_t len) {
  int rc = sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  if (rc) return rc;
  uint32_t nxt = 0;
  if (!(rc = select_queue(fd, TCP_RECV_QUEUE)) && !(rc = get_u32(fd, TCP_QUEUE_SEQ, &nxt))) {
    if (seq_gt(seq, nxt)) rc = -EPROTO;
    else if (nxt - seq < len) rc = fill_queue(fd, p + (nxt - seq), len - (nxt - seq));
  }
  select_queue(fd, TCP_NO_QUEUE);
  /* Off with a window probe: the client hears at once that the bytes arrived. */
  int off = sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
  return rc ? rc : off;
}

static int read_full(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -ECONNRESET;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

struct agent {
  const char *name, *unix_path, *peer_path, *lb_map;
  int port, backend; /* backend: this host's index in the balancer */
  bool forward; /* hand the target what reaches the old socket after the snapshot */
  /* With forward: the old socket, kept in repair mode for TR_GRACE_US after steering. */
  struct {
    int fd;
    uint64_t deadline;
    uint32_t queue_seq; /* sequence number of the first byte of its receive queue */
    uint32_t fwd_end;   /* forwarded up to here */
  } drain;
  int listen_fd, unix_fd, link_fd, conn, lb_fd;
  int peers[TR_MAX_PEERS];
  uint32_t migrations;
};

static int unix_addr(const char *path, struct sockaddr_un *u) {
  memset(u, 0, sizeof(*u));
  u->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(u->sun_path)) return -ENAMETOOLONG;
  strcpy(u->sun_path, path);
  return 0;
}

static int agent_listen(struct agent *ag) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ag->port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16)) {
    int e = -errno;
    close(fd);
    return e;
  }
  ag->listen_fd = fd;
  struct sockaddr_un u;
  int rc = unix_addr(ag->unix_path, &u);
  if (rc) return rc;
  unlink(ag->unix_path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (bind(fd, (struct sockaddr *)&u, sizeof(u)) || listen(fd, 4)) {
    int e = -errno;
    close(fd);
    return e;
  }
  ag->unix_fd = fd;
  return 0;
}

static int agent_link(struct agent *ag) {
  if (ag->link_fd >= 0) return 0;
  struct sockaddr_un u;
  int rc = unix_addr(ag->peer_path, &u);
  if (rc) return rc;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&u, sizeof(u))) {
    int e = -errno;
    close(fd);
    return e;
  }
  ag->link_fd = fd;
  return 0;
}

/* The answer to a request on the link: [be32 rc][be32 µs][be32 steer µs][be32 steer rc]. */
struct link_answer {
  int32_t rc, steer_rc;
  uint32_t us, steer_us;
};

static void link_answer(int pfd, int rc, uint64_t us, const struct tr_steer *st) {
  uint8_t ans[16];
  cpb_put_be32(ans, (uint32_t)rc);
  cpb_put_be32(ans + 4, (uint32_t)us);
  cpb_put_be32(ans + 8, st ? (uint32_t)st->us : 0);
  cpb_put_be32(ans + 12, st ? (uint32_t)st->rc : 0);
  write_full(pfd, ans, sizeof(ans));
}

/* One request on the link to the peer: [be32 length][head][body], then its answer. */
static int link_call(struct agent *ag, const uint8_t *head, uint32_t hlen, const uint8_t *body, uint32_t blen, struct link_answer *a) {
  uint8_t len[4], ans[16];
  cpb_put_be32(len, hlen + blen);
  int rc;
  if ((rc = write_full(ag->link_fd, len, 4)) || (rc = write_full(ag->link_fd, head, hlen)) ||
      (blen && (rc = write_full(ag->link_fd, body, blen))) || (rc = read_full(ag->link_fd, ans, sizeof(ans))))
    return rc;
  a->rc = (int32_t)cpb_get_be32(ans);
  a->us = cpb_get_be32(ans + 4);
  a->steer_us = cpb_get_be32(ans + 8);
  a->steer_rc = (int32_t)cpb_get_be32(ans + 12);
  return 0;
}

/* Ships the bytes [from, to) of the old socket's receive queue (which starts at queue_seq; the agent never
 * reads it after the freeze) to the target. Returns the count or -errno. */
static int agent_forward(struct agent *ag, int fd, uint32_t queue_seq, uint32_t from, uint32_t to) {
  if (seq_le(to, from)) return 0;
  uint8_t *q = NULL;
  int rc = select_queue(fd, TCP_RECV_QUEUE);
  if (!rc) rc = peek_queue(fd, to - queue_seq, &q);
  if (rc >= 0 && (uint32_t)rc != to - queue_seq) rc = -EIO; /* the queue only grows: all must be there */
  if (rc < 0) {
    free(q);
    return rc;
  }
  uint8_t head[TR_FWD_HDR_LEN];
  cpb_put_be32(head, TR_FWD_MAGIC);
  cpb_put_be32(head + 4, from);
  struct link_answer a;
  rc = link_call(ag, head, sizeof(head), q + (from - queue_seq), to - from, &a);
  free(q);
  return rc ? rc : a.rc ? a.rc : (int)(to - from);
}

/* rcv_nxt of a socket in repair mode. */
static int repair_rcv_nxt(int fd, uint32_t *out) {
  int rc = select_queue(fd, TCP_RECV_QUEUE);
  return rc ? rc : get_u32(fd, TCP_QUEUE_SEQ, out);
}

/* End of the grace: forward the last stragglers, then let the old socket go silently. */
static void agent_drain_end(struct agent *ag) {
  if (ag->drain.fd < 0) return;
  uint32_t nxt = 0;
  int rc = repair_rcv_nxt(ag->drain.fd, &nxt);
  if (!rc && seq_gt(nxt, ag->drain.fwd_end)) {
    rc = agent_forward(ag, ag->drain.fd, ag->drain.queue_seq, ag->drain.fwd_end, nxt);
    if (rc > 0) emit("{\"event\":\"straggled\",\"on\":\"%s\",\"bytes\":%d}", ag->name, rc);
  }
  if (rc < 0) emit("{\"event\":\"error\",\"stage\":\"grace\",\"message\":\"%s\"}", strerror(-rc));
  close(ag->drain.fd);
  ag->drain.fd = -1;
}

/* The source side of one handoff; prints the per-phase times. */
static void agent_migrate(struct agent *ag) {
  if (ag->conn < 0) return emit("{\"event\":\"error\",\"message\":\"no connection to migrate\"}");
  int rc = agent_link(ag);
  if (rc) return emit("{\"event\":\"error\",\"message\":\"link to peer: %s\"}", strerror(-rc));
  struct tr_state s;
  uint8_t *blob = NULL;
  uint32_t len = 0;
  const char *stage = "freeze";
  uint64_t t0 = now_us();
  rc = sockopt_int(ag->conn, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  uint64_t t1 = now_us();
  if (rc) goto fail;
  stage = "snapshot";
  rc = tr_export(ag->conn, &s);
  if (!rc && !(blob = tr_encode(&s, &len))) rc = -ENOMEM;
  uint64_t t2 = now_us();
  if (rc) goto unfreeze;
  stage = "ship";
  struct link_answer ans = {0};
  rc = link_call(ag, blob, len, NULL, 0, &ans);
  uint64_t t3 = now_us();
  if (rc) goto unfreeze;
  if (ans.rc) {
    rc = ans.rc;
    stage = "adopt";
    if (ans.steer_rc == 0 && ag->lb_fd >= 0) /* the target steered, then failed: take the flow back */
      cpb_lb_redirect(ag->lb_fd, ntohl(s.peer_addr), ntohs(s.peer_port), ntohl(s.local_addr), ntohs(s.local_port), (uint32_t)ag->backend);
    goto unfreeze;
  }
  int steer_rc = ans.steer_rc;
  /* What reached the old socket after the snapshot (queued there, not acknowledged): the target never got
   * it. Forwarded when asked; otherwise the client retransmits it when its timer fires. */
  uint32_t rcv_end = s.rcv_seq + s.rcvq_len, nxt = 0;
  if (repair_rcv_nxt(ag->conn, &nxt) || seq_lt(nxt, rcv_end)) nxt = rcv_end;
  uint32_t late = nxt - rcv_end;
  int fwd_rc = ag->forward ? agent_forward(ag, ag->conn, s.rcv_seq, rcv_end, nxt) : 0;
  if (fwd_rc > 0) fwd_rc = 0;
  if (ag->forward) {
    agent_drain_end(ag);
    ag->drain.fd = ag->conn;
    ag->drain.deadline = now_us() + TR_GRACE_US;
    ag->drain.queue_seq = s.rcv_seq;
    ag->drain.fwd_end = fwd_rc == 0 ? nxt : rcv_end;
  } else {
    close(ag->conn); /* in repair mode: gone without a FIN or RST */
  }
  ag->conn = -1;
  uint64_t t5 = now_us();
  ag->migrations++;
  emit("{\"event\":\"migrated\",\"from\":\"%s\",\"freezeUs\":%llu,\"snapshotUs\":%llu,\"shipUs\":%llu,\"adoptUs\":%u,"
       "\"steerUs\":%u,\"releaseUs\":%llu,\"totalUs\":%llu,\"frozenAtUs\":%llu,\"doneAtUs\":%llu,\"snapshotBytes\":%u,\"sndQueue\":%u,\"rcvQueue\":%u,\"lateBytes\":%u,\"forwardedBytes\":%u,\"steered\":%s%s%s%s%s%s%s}",
       ag->name, (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1), (unsigned long long)(t3 - t2), ans.us,
       ans.steer_us, (unsigned long long)(t5 - t3), (unsigned long long)(t5 - t0), (unsigned long long)t0, (unsigned long long)t5, len, s.sndq_len, s.rcvq_len, late,
       ag->forward && fwd_rc == 0 ? late : 0, steer_rc == 0 ? "true" : "false", steer_rc ? ",\"steerError\":\"" : "",
       steer_rc ? strerror(-steer_rc) : "", steer_rc ? "\"" : "", fwd_rc ? ",\"forwardError\":\"" : "", fwd_rc ? strerror(-fwd_rc) : "",
       fwd_rc ? "\"" : "");
  free(blob);
  tr_state_free(&s);
  return;
unfreeze:
  /* The peer refused or failed: the connection carries on here. */
  sockopt_int(ag->conn, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
  free(blob);
  tr_state_free(&s);
fail:
  emit("{\"event\":\"error\",\"stage\":\"%s\",\"message\":\"%s\"}", stage, strerror(-rc));
}

/* The target side: one blob in, a live socket out, the answer back. */
static void agent_adopt(struct agent *ag, int pfd) {
  uint8_t hdr[4];
  int rc = read_full(pfd, hdr, 4);
  if (rc) {
    close(pfd);
    for (int i = 0; i < TR_MAX_PEERS; i++)
      if (ag->peers[i] == pfd) ag->peers[i] = -1;
    return;
  }
  uint32_t len = cpb_get_be32(hdr);
  uint8_t *blob = len >= TR_FWD_HDR_LEN && len <= TR_HDR_LEN + 2 * TR_MAX_QUEUE ? malloc(len) : NULL;
  rc = blob ? read_full(pfd, blob, len) : -EBADMSG;
  uint64_t t0 = now_us();
  if (!rc && len >= TR_FWD_HDR_LEN && cpb_get_be32(blob) == TR_FWD_MAGIC) {
    rc = ag->conn >= 0 ? tr_append(ag->conn, cpb_get_be32(blob + 4), blob + TR_FWD_HDR_LEN, len - TR_FWD_HDR_LEN) : -ENOTCONN;
    link_answer(pfd, rc, now_us() - t0, NULL);
    free(blob);
    if (rc) emit("{\"event\":\"error\",\"stage\":\"forward\",\"message\":\"%s\"}", strerror(-rc));
    return;
  }
  if (ag->drain.fd >= 0) {
    /* The flow comes back within the grace: its old socket here would clash with the new one, and what
     * it holds is older than the peer's snapshot. (No forward now: the peer waits for our answer.) */
    close(ag->drain.fd);
    ag->drain.fd = -1;
  }
  struct tr_state s;
  int fd = rc ? rc : tr_decode(blob, len, &s);
  struct tr_steer st = {.lb_fd = ag->lb_fd, .backend = (uint32_t)ag->backend, .rc = -ENOTSUP};
  if (fd == 0) fd = ag->conn >= 0 ? -EBUSY : tr_import(&s, &st);
  uint64_t t1 = now_us();
  link_answer(pfd, fd < 0 ? fd : 0, t1 - t0, &st);
  free(blob);
  if (fd < 0) return emit("{\"event\":\"error\",\"stage\":\"adopt\",\"message\":\"%s\"}", strerror(-fd));
  ag->conn = fd;
  emit("{\"event\":\"adopted\",\"on\":\"%s\",\"adoptUs\":%llu,\"bytes\":%u}", ag->name, (unsigned long long)(t1 - t0), len);
}

static void agent_echo(struct agent *ag) {
  uint8_t buf[65536];
  ssize_t n = recv(ag->conn, buf, sizeof(buf), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0 || write_full(ag->conn, buf, (size_t)n)) {
    emit("{\"event\":\"closed\",\"on\":\"%s\",\"message\":\"%s\"}", ag->name, n < 0 ? strerror(errno) : "end of stream");
    close(ag->conn);
    ag->conn = -1;
  }
}

static void agent_accept(struct agent *ag) {
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);
  int fd = accept4(ag->listen_fd, (struct sockaddr *)&a, &alen, SOCK_CLOEXEC);
  if (fd < 0) return;
  if (ag->conn >= 0) { /* one flow at a time: the benchmark migrates one connection */
    close(fd);
    return;
  }
  sockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  ag->conn = fd;
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  emit("{\"event\":\"accepted\",\"on\":\"%s\",\"peer\":\"%s:%u\"}", ag->name, ip, ntohs(a.sin_port));
}

/* Returns false on "quit" or end of input. */
static bool agent_command(struct agent *ag) {
  char line[128];
  if (!fgets(line, sizeof(line), stdin)) return false;
  if (!strncmp(line, "quit", 4)) return false;
  if (!strncmp(line, "migrate", 7)) {
    agent_migrate(ag);
  } else if (!strncmp(line, "link", 4)) {
    int rc = agent_link(ag);
    if (rc) emit("{\"event\":\"error\",\"stage\":\"link\",\"message\":\"%s\"}", strerror(-rc));
    else emit("{\"event\":\"linked\",\"on\":\"%s\"}", ag->name);
  } else {
    emit("{\"event\":\"error\",\"message\":\"unknown command\"}");
  }
  return true;
}

static int agent_run(struct agent *ag) {
  int rc = agent_listen(ag);
  if (rc) {
    fprintf(stderr, "tcp_repair: listen: %s\n", strerror(-rc));
    return 1;
  }
  if (ag->lb_map) {
    ag->lb_fd = cpb_lb_open(ag->lb_map);
    if (ag->lb_fd < 0) {
      fprintf(stderr, "tcp_repair: %s: %s\n", ag->lb_map, strerror(-ag->lb_fd));
      return 1;
    }
  }
  setvbuf(stdin, NULL, _IONBF, 0); /* poll() watches fd 0: nothing may sit in a stdio buffer */
  emit("{\"event\":\"listening\",\"on\":\"%s\",\"port\":%d}", ag->name, ag->port);
  for (;;) {
    struct pollfd p[4 + TR_MAX_PEERS];
    nfds_t n = 0;
    p[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
    p[n++] = (struct pollfd){.fd = ag->listen_fd, .events = POLLIN};
    p[n++] = (struct pollfd){.fd = ag->unix_fd, .events = POLLIN};
    p[n++] = (struct pollfd){.fd = ag->conn, .events = POLLIN}; /* fd -1 is ignored by poll */
    for (int i = 0; i < TR_MAX_PEERS; i++) p[n++] = (struct pollfd){.fd = ag->peers[i], .events = POLLIN};
    int timeout = -1;
    if (ag->drain.fd >= 0) {
      uint64_t t = now_us();
      timeout = t >= ag->drain.deadline ? 0 : (int)((ag->drain.deadline - t + 999) / 1000);
    }
    int ready = poll(p, n, timeout);
    if (ag->drain.fd >= 0 && now_us() >= ag->drain.deadline) agent_drain_end(ag);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[3].revents && ag->conn == p[3].fd) agent_echo(ag);
    for (int i = 0; i < TR_MAX_PEERS; i++)
      if (p[4 + i].revents && ag->peers[i] == p[4 + i].fd) agent_adopt(ag, ag->peers[i]);
    if (p[1].revents) agent_accept(ag);
    if (p[2].revents) {
      int fd = accept4(ag->unix_fd, NULL, NULL, SOCK_CLOEXEC);
      int slot = -1;
      for (int i = 0; i < TR_MAX_PEERS && fd >= 0; i++)
        if (ag->peers[i] < 0 && slot < 0) slot = i;
      if (slot >= 0) ag->peers[slot] = fd;
      else if (fd >= 0) close(fd);
    }
    if (p[0].revents && !agent_command(ag)) break;
  }
  agent_drain_end(ag);
  unlink(ag->unix_path);
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: tcp_repair agent --name NAME --port PORT --unix PATH --peer PATH [--lb-map PINNED_MAP --backend N] [--forward on|off]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "agent")) return usage();
  struct agent ag = {.port = -1, .backend = -1, .listen_fd = -1, .unix_fd = -1, .link_fd = -1, .conn = -1, .lb_fd = -1, .drain.fd = -1};
  for (int i = 0; i < TR_MAX_PEERS; i++) ag.peers[i] = -1;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--name")) ag.name = v;
    else if (!strcmp(k, "--port")) ag.port = atoi(v);
    else if (!strcmp(k, "--unix")) ag.unix_path = v;
    else if (!strcmp(k, "--peer")) ag.peer_path = v;
    else if (!strcmp(k, "--lb-map")) ag.lb_map = v;
    else if (!strcmp(k, "--backend")) ag.backend = atoi(v);
    else if (!strcmp(k, "--forward")) ag.forward = !strcmp(v, "on");
    else return usage();
  }
  if (!ag.name || ag.port <= 0 || ag.port > 65535 || !ag.unix_path || !ag.peer_path) return usage();
  if (ag.lb_map && ag.backend < 0) return usage();
  signal(SIGPIPE, SIG_IGN);
  return agent_run(&ag);
}
