/* xdp:IFACE[@queue]?ip=A.B.C.D — AF_XDP through libxdp.
 *
 * Design:
 * - Our own XDP program (native/bpf/steer.bpf.c) sends the stack's frames (TCP/ICMP to its IP, ARP for
 *   its IP) to the socket of the rx queue they arrived on and passes the rest to the kernel. It is
 *   loaded with libxdp (native mode, SKB mode as fallback), so it can share the interface with other
 *   libxdp programs through the dispatcher. The IP comes from the URI (?ip=) and is written into the
 *   program's config map with our pid; a program whose pid is gone is a leftover of a crashed run and
 *   is detached before attaching ours. Devices of one process on the same interface (xdp:eth0@0 and
 *   xdp:eth0@1) share one attached program (refcounted), since without libxdp's dispatcher (it needs
 *   freplace, which some kernels refuse) an interface holds only one XDP program.
 * - One socket per rx queue (all queues unless @queue), each with its OWN UMEM (no shared UMEM): the
 *   queues never contend for buffers and there is no cross-queue bookkeeping. A UMEM has 4096 frames
 *   of 2 KiB: the first half lives in the fill/rx rings, the second half is a TX free list.
 * - Bind without XDP_COPY/XDP_ZEROCOPY: the kernel picks zero-copy when the driver supports it and
 *   falls back to copy otherwise (veth has no zero-copy), which costs nothing to try.
 * - XDP_USE_NEED_WAKEUP: syscalls (sendto for TX, recvfrom for the fill ring) happen only when the
 *   kernel set the ring's need_wakeup flag; every one is counted in stats.wakeups. In copy mode the
 *   TX flag is always set, so each TX burst costs one sendto.
 * - rx_burst polls every socket round-robin; frames point into the UMEM until rx_release puts them
 *   back on the fill ring. TX copies into a free UMEM frame; completions refill the free list.
 * - wait_fd is an epoll fd over all sockets (or the single socket itself). */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <libgen.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/if_xdp.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "dev.h"

#define XSK_FRAMES 4096u
#define XSK_FRAME_SIZE 2048u
#define XSK_HALF (XSK_FRAMES / 2)
#define XSK_MAX_QUEUES 64 /* the XSKMAP's size in steer.bpf.c */
#define BPF_FS "/sys/fs/bpf"
#define BPF_FS_MAGIC_ 0xcafe4a11
#define STEER_OBJ "steer.bpf.o"
#define STEER_PROG "cpb_steer"

struct steer_cfg { /* mirrors struct cpb_steer_cfg in steer.bpf.c */
  uint32_t ip;
  uint32_t owner_pid;
  uint32_t vip;
};

struct xq {
  struct xsk_socket *xsk;
  struct xsk_umem *umem;
  void *area;
  struct xsk_ring_prod fq, tx;
  struct xsk_ring_cons cq, rx;
  int fd;
  uint32_t queue;
  uint32_t n_free;
  uint64_t free_addr[XSK_HALF];
};

/* The steering program attached to one interface, shared by this process's devices on it. */
struct steer {
  struct steer *next;
  int ifindex;
  uint32_t ip, vip;
  int refs;
  int xsks_fd;
  struct xdp_program *prog;
  enum xdp_attach_mode mode;
};

static pthread_mutex_t g_steer_lock = PTHREAD_MUTEX_INITIALIZER;
static struct steer *g_steers;

struct xsk_dev {
  struct cpb_dev base;
  char ifname[IF_NAMESIZE];
  int ifindex;
  uint8_t mac[6];
  struct steer *steer;
  int epfd;
  int nq;
  int rr; /* queue rx_burst starts with, so no queue starves */
  struct xq *q;
  struct cpb_dev_stats st;
};

static _Thread_local char last_log[200];

static int quiet_print(enum libxdp_print_level level, const char *fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  if (level <= LIBXDP_WARN) vsnprintf(last_log, sizeof(last_log), fmt, copy);
  va_end(copy);
  if (getenv("CAPYBARA_XDP_DEBUG")) return vfprintf(stderr, fmt, args);
  return 0;
}

static int quiet_bpf_print(enum libbpf_print_level level, const char *fmt, va_list args) {
  return quiet_print(level == LIBBPF_WARN ? LIBXDP_WARN : LIBXDP_DEBUG, fmt, args);
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static int fail_perm(char *err, size_t errlen) {
  return fail(err, errlen, -EPERM, "xdp: needs root (CAP_NET_ADMIN, CAP_BPF)");
}

/* ---- setup helpers ------------------------------------------------------------------------------ */

/* Reads one "key=A.B.C.D" parameter of the query into *out (network order); 0 when absent. */
static int query_ip(const char *query, const char *key, uint32_t *out, const char *spec, char *err, size_t errlen) {
  size_t klen = strlen(key);
  for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
    if (strncmp(p, key, klen) != 0 || p[klen] != '=') continue;
    char buf[INET_ADDRSTRLEN];
    size_t n = strcspn(p + klen + 1, "&");
    struct in_addr a;
    if (n == 0 || n >= sizeof(buf)) return fail(err, errlen, -EINVAL, "xdp: bad %s= in \"%s\"", key, spec);
    memcpy(buf, p + klen + 1, n);
    buf[n] = 0;
    if (inet_pton(AF_INET, buf, &a) != 1) return fail(err, errlen, -EINVAL, "xdp: \"%s\" is not an IPv4 address", buf);
    *out = a.s_addr; /* network order, as the program compares it */
    return 0;
  }
  *out = 0;
  return 0;
}

static int parse_spec(struct xsk_dev *d, const char *spec, int *queue, uint32_t *ip, uint32_t *vip, char *err,
                      size_t errlen) {
  size_t n = strcspn(spec, "@?");
  if (n == 0 || n >= IF_NAMESIZE)
    return fail(err, errlen, -EINVAL, "xdp: bad interface name in \"%s\" (xdp:IFACE[@queue]?ip=A.B.C.D)", spec);
  memcpy(d->ifname, spec, n);
  d->ifname[n] = 0;
  const char *p = spec + n;
  *queue = -1;
  if (*p == '@') {
    char *end;
    long q = strtol(p + 1, &end, 10);
    if (end == p + 1 || q < 0 || q >= XSK_MAX_QUEUES || (*end && *end != '?'))
      return fail(err, errlen, -EINVAL, "xdp: bad queue in \"%s\" (0..%d)", spec, XSK_MAX_QUEUES - 1);
    *queue = (int)q;
    p = end;
  }
  const char *query = *p == '?' ? p + 1 : NULL;
  int rc = query_ip(query, "ip", ip, spec, err, errlen);
  if (!rc) rc = query_ip(query, "vip", vip, spec, err, errlen);
  if (!rc && !*ip)
    rc = fail(err, errlen, -EINVAL, "xdp: \"%s\" needs the stack's address: xdp:IFACE[@queue]?ip=A.B.C.D[&vip=A.B.C.D]", spec);
  return rc;
}

/* libxdp keeps its dispatcher pinned in bpffs; mount it when the system has not. */
static void ensure_bpffs(void) {
  struct statfs s;
  if (statfs(BPF_FS, &s) == 0 && (uint32_t)s.f_type == BPF_FS_MAGIC_) return;
  if (mount("bpf", BPF_FS, "bpf", 0, "mode=0700") && errno != EBUSY)
    snprintf(last_log, sizeof(last_log), "could not mount bpffs at %s: %s", BPF_FS, strerror(errno));
}

static int queue_count(const char *ifname) {
  struct ethtool_channels ch = {.cmd = ETHTOOL_GCHANNELS};
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  ifr.ifr_data = (char *)&ch;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), n = 0;
  if (s >= 0 && ioctl(s, SIOCETHTOOL, &ifr) == 0) n = (int)CPB_MAX(ch.rx_count, ch.combined_count);
  if (s >= 0) close(s);
  if (n <= 0) { /* no ethtool support: count the queues sysfs shows (right only in the init netns) */
    char path[96];
    snprintf(path, sizeof(path), "/sys/class/net/%s/queues", ifname);
    DIR *dir = opendir(path);
    for (struct dirent *e; dir && (e = readdir(dir));) n += !strncmp(e->d_name, "rx-", 3);
    if (dir) closedir(dir);
  }
  return CPB_MIN(CPB_MAX(n, 1), XSK_MAX_QUEUES);
}

static int read_mac(const char *ifname, uint8_t mac[6]) {
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int rc = ioctl(s, SIOCGIFHWADDR, &ifr) ? -errno : 0;
  close(s);
  if (!rc) memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
  return rc;
}

/* CAP_NET_ADMIN plus CAP_BPF (or CAP_SYS_ADMIN on kernels before CAP_BPF); asked up front so the
 * error names what is missing instead of whichever later step tripped first. */
static bool privileged(void) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
  struct __user_cap_data_struct c[2];
  if (syscall(SYS_capget, &h, c)) return true; /* cannot tell: let the kernel decide */
  uint64_t eff = c[0].effective | (uint64_t)c[1].effective << 32;
  bool bpf = eff & (1ULL << 39 /* CAP_BPF */) || eff & (1ULL << CAP_SYS_ADMIN);
  return (eff & (1ULL << CAP_NET_ADMIN)) && bpf;
}

static bool readable_file(const char *path) { return access(path, R_OK) == 0; }

/* $CAPYBARA_BPF_DIR, else beside the binary/addon holding this code or one folder up, else ./build. */
static void find_prog(char *out, size_t cap) {
  const char *dir = getenv("CAPYBARA_BPF_DIR");
  if (dir && *dir) {
    snprintf(out, cap, "%s/" STEER_OBJ, dir);
    return;
  }
  Dl_info info;
  if (dladdr((void *)&cpb_dev_xsk_ops, &info) && info.dli_fname) {
    char self[512];
    snprintf(self, sizeof(self), "%s", info.dli_fname);
    const char *base = dirname(self);
    const char *try[] = {"%s/" STEER_OBJ, "%s/../" STEER_OBJ, "%s/../build/" STEER_OBJ};
    for (size_t i = 0; i < CPB_ARRAY_LEN(try); i++) {
      snprintf(out, cap, try[i], base);
      if (readable_file(out)) return;
    }
  }
  snprintf(out, cap, "build/" STEER_OBJ);
}

/* The pid recorded in a loaded steer program's config map, or 0 when it cannot be read. */
static uint32_t prog_owner(struct xdp_program *p) {
  uint32_t ids[8] = {0}, owner = 0;
  struct bpf_prog_info info = {0};
  uint32_t len = sizeof(info);
  info.nr_map_ids = CPB_ARRAY_LEN(ids);
  info.map_ids = (uint64_t)(uintptr_t)ids;
  if (bpf_obj_get_info_by_fd(xdp_program__fd(p), &info, &len)) return 0;
  for (uint32_t i = 0; i < CPB_MIN(info.nr_map_ids, CPB_ARRAY_LEN(ids)); i++) {
    int mfd = bpf_map_get_fd_by_id(ids[i]);
    if (mfd < 0) continue;
    struct bpf_map_info mi = {0};
    uint32_t mlen = sizeof(mi), key = 0;
    struct steer_cfg cfg;
    if (!bpf_obj_get_info_by_fd(mfd, &mi, &mlen) && !strcmp(mi.name, "cpb_cfg") &&
        !bpf_map_lookup_elem(mfd, &key, &cfg))
      owner = cfg.owner_pid;
    close(mfd);
  }
  return owner;
}

static bool is_stale(struct xdp_program *p) {
  if (!p || strcmp(xdp_program__name(p), STEER_PROG)) return false;
  uint32_t pid = prog_owner(p);
  return pid == 0 || (kill((pid_t)pid, 0) && errno == ESRCH);
}

/* Detaches steer programs left on the interface by processes that no longer exist. */
static void detach_stale(int ifindex) {
  struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
  if (!mp || libxdp_get_error(mp)) return;
  if (xdp_multiprog__is_legacy(mp)) {
    if (is_stale(xdp_multiprog__main_prog(mp))) xdp_multiprog__detach(mp);
  } else {
    struct xdp_program *stale[16];
    size_t n = 0;
    for (struct xdp_program *p = xdp_multiprog__next_prog(NULL, mp); p && n < CPB_ARRAY_LEN(stale);
         p = xdp_multiprog__next_prog(p, mp))
      if (is_stale(p)) stale[n++] = p;
    if (n) xdp_program__detach_multi(stale, n, ifindex, xdp_multiprog__attach_mode(mp), 0);
  }
  xdp_multiprog__close(mp);
}

static void steer_free(struct steer *s) {
  if (s->prog) {
    xdp_program__detach(s->prog, s->ifindex, s->mode, 0);
    xdp_program__close(s->prog);
  }
  free(s);
}

/* Loads and attaches the program (native mode, else SKB mode) and writes its config. */
static int steer_load(struct steer *s, const char *ifname, char *err, size_t errlen) {
  char path[600];
  find_prog(path, sizeof(path));
  if (!readable_file(path))
    return fail(err, errlen, -ENOENT, "xdp: program file not found: %s (set CAPYBARA_BPF_DIR, or build it "
                                      "with make -C native/bpf)", path);
  detach_stale(s->ifindex);
  struct xdp_program *prog = xdp_program__open_file(path, "xdp", NULL);
  int rc = (int)libxdp_get_error(prog);
  if (rc) return fail(err, errlen, rc, "xdp: could not open %s: %s", path, strerror(-rc));
  s->mode = XDP_MODE_NATIVE;
  rc = xdp_program__attach(prog, s->ifindex, s->mode, 0);
  if (rc && rc != -EPERM) {
    s->mode = XDP_MODE_SKB;
    rc = xdp_program__attach(prog, s->ifindex, s->mode, 0);
  }
  if (rc) {
    xdp_program__close(prog);
    if (rc == -EPERM) return fail_perm(err, errlen);
    return fail(err, errlen, rc, "xdp: could not attach %s to %s: %s (%s)", path, ifname, strerror(-rc), last_log);
  }
  s->prog = prog;
  struct bpf_object *obj = xdp_program__bpf_obj(prog);
  struct bpf_map *xm = obj ? bpf_object__find_map_by_name(obj, "cpb_xsks") : NULL;
  struct bpf_map *cm = obj ? bpf_object__find_map_by_name(obj, "cpb_cfg") : NULL;
  struct steer_cfg cfg = {s->ip, (uint32_t)getpid(), s->vip};
  uint32_t key = 0;
  if (!xm || !cm || bpf_map_update_elem(bpf_map__fd(cm), &key, &cfg, BPF_ANY))
    return fail(err, errlen, -EINVAL, "xdp: %s lacks the cpb_xsks/cpb_cfg maps this engine expects", path);
  s->xsks_fd = bpf_map__fd(xm);
  return 0;
}

/* The interface's steering program: this process's existing one, or a newly attached one. */
static int steer_get(struct xsk_dev *d, uint32_t ip, uint32_t vip, char *err, size_t errlen) {
  int rc = 0;
  pthread_mutex_lock(&g_steer_lock);
  struct steer *s = g_steers;
  while (s && s->ifindex != d->ifindex) s = s->next;
  if (s && (s->ip != ip || s->vip != vip)) {
    char a[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &s->ip, a, sizeof(a));
    rc = fail(err, errlen, -EBUSY, "xdp: %s already steers %s to this process; one address per interface", d->ifname, a);
  } else if (s) {
    s->refs++;
  } else if (!(s = calloc(1, sizeof(*s)))) {
    rc = -ENOMEM;
  } else {
    *s = (struct steer){.next = g_steers, .ifindex = d->ifindex, .ip = ip, .vip = vip, .refs = 1, .xsks_fd = -1};
    if ((rc = steer_load(s, d->ifname, err, errlen)))
      steer_free(s);
    else
      g_steers = s;
  }
  if (!rc) d->steer = s;
  pthread_mutex_unlock(&g_steer_lock);
  return rc;
}

static void steer_put(struct steer *s) {
  pthread_mutex_lock(&g_steer_lock);
  if (--s->refs == 0) {
    struct steer **pp = &g_steers;
    while (*pp != s) pp = &(*pp)->next;
    *pp = s->next;
    steer_free(s);
  }
  pthread_mutex_unlock(&g_steer_lock);
}

static int queue_open(struct xsk_dev *d, struct xq *q, uint32_t queue, int xsks_fd, char *err, size_t errlen) {
  size_t size = (size_t)XSK_FRAMES * XSK_FRAME_SIZE;
  q->queue = queue;
  q->fd = -1;
  q->area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q->area == MAP_FAILED) {
    q->area = NULL;
    return fail(err, errlen, -ENOMEM, "xdp: cannot map %zu bytes of UMEM", size);
  }
  struct xsk_umem_config uc = {.fill_size = XSK_HALF, .comp_size = XSK_HALF, .frame_size = XSK_FRAME_SIZE};
  int rc = xsk_umem__create(&q->umem, q->area, size, &q->fq, &q->cq, &uc);
  if (rc) {
    q->umem = NULL;
    return rc == -EPERM ? fail_perm(err, errlen) : fail(err, errlen, rc, "xdp: UMEM registration failed: %s", strerror(-rc));
  }
  struct xsk_socket_config sc = {.rx_size = XSK_HALF, .tx_size = XSK_HALF,
                                 .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
                                 .bind_flags = XDP_USE_NEED_WAKEUP};
  /* The kernel unbinds a closed socket's queue in deferred work, so a queue just released (by our own
   * close, or by a process that died) can be busy for a moment: retry for up to ~1 s. */
  for (int tries = 0; tries < 100; tries++) {
    rc = xsk_socket__create(&q->xsk, d->ifname, queue, q->umem, &q->rx, &q->tx, &sc);
    if (rc != -EBUSY) break;
    usleep(10000);
  }
  if (rc) {
    q->xsk = NULL;
    if (rc == -EPERM) return fail_perm(err, errlen);
    return fail(err, errlen, rc, "xdp: cannot bind an AF_XDP socket to %s queue %u: %s", d->ifname, queue,
                strerror(-rc));
  }
  q->fd = xsk_socket__fd(q->xsk);
  uint32_t idx = 0;
  if (xsk_ring_prod__reserve(&q->fq, XSK_HALF, &idx) != XSK_HALF)
    return fail(err, errlen, -EIO, "xdp: fill ring refused the initial frames");
  for (uint32_t i = 0; i < XSK_HALF; i++) *xsk_ring_prod__fill_addr(&q->fq, idx + i) = (uint64_t)i * XSK_FRAME_SIZE;
  xsk_ring_prod__submit(&q->fq, XSK_HALF);
  for (uint32_t i = 0; i < XSK_HALF; i++) q->free_addr[i] = (uint64_t)(XSK_HALF + i) * XSK_FRAME_SIZE;
  q->n_free = XSK_HALF;
  rc = xsk_socket__update_xskmap(q->xsk, xsks_fd);
  if (rc) return fail(err, errlen, rc, "xdp: cannot add the socket of queue %u to the XSKMAP: %s", queue, strerror(-rc));
  return 0;
}

static void xsk_close(struct cpb_dev *dev) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  /* Sockets first: closing one removes it from the XSKMAP, so the program passes its queue to the
   * kernel again (and a shared program keeps serving the other devices). */
  for (int i = 0; d->q && i < d->nq; i++) {
    struct xq *q = &d->q[i];
    if (q->xsk) xsk_socket__delete(q->xsk);
    if (q->umem) xsk_umem__delete(q->umem);
    if (q->area) munmap(q->area, (size_t)XSK_FRAMES * XSK_FRAME_SIZE);
  }
  if (d->steer) steer_put(d->steer);
  if (d->epfd >= 0) close(d->epfd);
  free(d->q);
  free(d);
}

static int xsk_open(struct cpb_dev **out, const char *spec, char *err, size_t errlen) {
  static bool quiet;
  if (!quiet) {
    libxdp_set_print(quiet_print);
    libbpf_set_print(quiet_bpf_print);
    quiet = true;
  }
  last_log[0] = 0;
  struct xsk_dev *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;
  d->base.ops = &cpb_dev_xsk_ops;
  d->epfd = -1;
  int queue = -1, rc;
  uint32_t ip = 0, vip = 0;
  if ((rc = parse_spec(d, spec, &queue, &ip, &vip, err, errlen))) goto fail;
  d->ifindex = (int)if_nametoindex(d->ifname);
  if (!d->ifindex) {
    rc = fail(err, errlen, -ENODEV, "xdp: no interface %s", d->ifname);
    goto fail;
  }
  if (!privileged()) {
    rc = fail_perm(err, errlen);
    goto fail;
  }
  if ((rc = read_mac(d->ifname, d->mac))) {
    rc = fail(err, errlen, rc, "xdp: cannot read the MAC address of %s: %s", d->ifname, strerror(-rc));
    goto fail;
  }
  ensure_bpffs();
  int count = queue_count(d->ifname);
  if (queue >= count) {
    rc = fail(err, errlen, -EINVAL, "xdp: %s has %d rx queue(s); queue %d does not exist", d->ifname, count, queue);
    goto fail;
  }
  d->nq = queue >= 0 ? 1 : count;
  d->q = calloc((size_t)d->nq, sizeof(*d->q));
  if (!d->q) {
    rc = -ENOMEM;
    goto fail;
  }
  if ((rc = steer_get(d, ip, vip, err, errlen))) goto fail;
  for (int i = 0; i < d->nq; i++)
    if ((rc = queue_open(d, &d->q[i], queue >= 0 ? (uint32_t)queue : (uint32_t)i, d->steer->xsks_fd, err, errlen)))
      goto fail;
  if (d->nq > 1) {
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; d->epfd >= 0 && i < d->nq; i++) {
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
      if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->q[i].fd, &ev)) {
        close(d->epfd);
        d->epfd = -1;
      }
    }
    if (d->epfd < 0) {
      rc = fail(err, errlen, -errno, "xdp: cannot create the epoll set for %d queues: %s", d->nq, strerror(errno));
      goto fail;
    }
  }
  *out = &d->base;
  return 0;
fail:
  xsk_close(&d->base);
  return rc;
}

/* ---- data path ---------------------------------------------------------------------------------- */

static void kick_rx(struct xsk_dev *d, struct xq *q) {
  if (!xsk_ring_prod__needs_wakeup(&q->fq)) return;
  recvfrom(q->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
  d->st.wakeups++;
}

static int xsk_rx_burst(struct cpb_dev *dev, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  (void)now;
  int got = 0;
  for (int k = 0; k < d->nq && got < max; k++) {
    int qi = (d->rr + k) % d->nq;
    struct xq *q = &d->q[qi];
    uint32_t idx = 0, n = xsk_ring_cons__peek(&q->rx, (uint32_t)(max - got), &idx);
    if (!n) {
      kick_rx(d, q);
      continue;
    }
    for (uint32_t i = 0; i < n; i++) {
      const struct xdp_desc *desc = xsk_ring_cons__rx_desc(&q->rx, idx + i);
      frames[got].data = xsk_umem__get_data(q->area, desc->addr);
      frames[got].len = CPB_MIN(desc->len, XSK_FRAME_SIZE);
      frames[got].cookie = ((uint64_t)qi << 32) | desc->addr;
      d->st.rx_frames++;
      d->st.rx_bytes += desc->len;
      got++;
    }
    xsk_ring_cons__release(&q->rx, n);
  }
  d->rr = d->nq ? (d->rr + 1) % d->nq : 0;
  return got;
}

static void xsk_rx_release(struct cpb_dev *dev, struct cpb_frame *frames, int n) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  /* A burst holds runs of frames from one queue; each run goes back to its own fill ring at once. */
  for (int i = 0; i < n;) {
    uint32_t qi = (uint32_t)(frames[i].cookie >> 32);
    int run = 1;
    while (i + run < n && (uint32_t)(frames[i + run].cookie >> 32) == qi) run++;
    if (qi < (uint32_t)d->nq) {
      struct xq *q = &d->q[qi];
      uint32_t idx = 0;
      /* The fill ring holds all RX frames, so the reservation cannot fall short. */
      if (xsk_ring_prod__reserve(&q->fq, (uint32_t)run, &idx) == (uint32_t)run) {
        for (int k = 0; k < run; k++)
          *xsk_ring_prod__fill_addr(&q->fq, idx + (uint32_t)k) = (uint32_t)frames[i + k].cookie & ~(XSK_FRAME_SIZE - 1);
        xsk_ring_prod__submit(&q->fq, (uint32_t)run);
        kick_rx(d, q);
      }
    }
    i += run;
  }
}

static void reap_completions(struct xq *q) {
  uint32_t idx = 0, n = xsk_ring_cons__peek(&q->cq, XSK_HALF, &idx);
  for (uint32_t i = 0; i < n && q->n_free < XSK_HALF; i++) q->free_addr[q->n_free++] = *xsk_ring_cons__comp_addr(&q->cq, idx + i);
  if (n) xsk_ring_cons__release(&q->cq, n);
}

/* Copy mode sends at most a small batch per syscall and answers EAGAIN while more is queued. */
static void kick_tx(struct xsk_dev *d, struct xq *q, int queued) {
  for (int tries = 0; tries <= queued / 16 + 1 && xsk_ring_prod__needs_wakeup(&q->tx); tries++) {
    d->st.wakeups++;
    if (sendto(q->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0) break;
    if (errno != EAGAIN && errno != EBUSY) break;
    reap_completions(q);
  }
}

static int xsk_tx_burst(struct cpb_dev *dev, const struct cpb_frame *frames, int n, cpb_time_t now) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  struct xq *q = &d->q[0];
  (void)now;
  reap_completions(q);
  int i = 0, queued = 0;
  for (; i < n; i++) {
    const struct cpb_frame *f = &frames[i];
    if (f->len == 0 || f->len > XSK_FRAME_SIZE) {
      d->st.tx_dropped++;
      continue;
    }
    uint32_t idx;
    if (!q->n_free || xsk_ring_prod__reserve(&q->tx, 1, &idx) != 1) break;
    uint64_t addr = q->free_addr[--q->n_free];
    memcpy(xsk_umem__get_data(q->area, addr), f->data, f->len);
    struct xdp_desc *desc = xsk_ring_prod__tx_desc(&q->tx, idx);
    desc->addr = addr;
    desc->len = f->len;
    queued++;
    d->st.tx_frames++;
    d->st.tx_bytes += f->len;
  }
  if (queued) xsk_ring_prod__submit(&q->tx, (uint32_t)queued);
  if (queued || i < n) kick_tx(d, q, queued);
  d->st.tx_dropped += (uint64_t)(n - i);
  return i;
}

static int xsk_wait_fd(struct cpb_dev *dev) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  return d->nq > 1 ? d->epfd : d->q[0].fd;
}

static cpb_time_t xsk_next_deadline(struct cpb_dev *dev) {
  (void)dev;
  return UINT64_MAX;
}

static void xsk_get_mac(struct cpb_dev *dev, uint8_t mac[6]) { memcpy(mac, ((struct xsk_dev *)dev)->mac, 6); }

static void xsk_get_stats(struct cpb_dev *dev, struct cpb_dev_stats *out) {
  struct xsk_dev *d = (struct xsk_dev *)dev;
  *out = d->st;
  for (int i = 0; i < d->nq; i++) { /* the kernel's own drop counters for each socket */
    struct xdp_statistics xs;
    socklen_t len = sizeof(xs);
    if (getsockopt(d->q[i].fd, SOL_XDP, XDP_STATISTICS, &xs, &len)) continue;
    out->rx_dropped += xs.rx_dropped + xs.rx_ring_full + xs.rx_invalid_descs;
    out->tx_dropped += xs.tx_invalid_descs;
  }
}

const struct cpb_dev_ops cpb_dev_xsk_ops = {
    .scheme = "xdp",
    .open = xsk_open,
    .rx_burst = xsk_rx_burst,
    .rx_release = xsk_rx_release,
    .tx_burst = xsk_tx_burst,
    .wait_fd = xsk_wait_fd,
    .next_deadline = xsk_next_deadline,
    .get_mac = xsk_get_mac,
    .get_stats = xsk_get_stats,
    .close = xsk_close,
};
