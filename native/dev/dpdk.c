/* dpdk:DEVARGS[?mbufs=N&rxd=N&txd=N&eal=ARGS] — a DPDK ethdev port (one RX/TX queue pair per engine).
 *
 * Design:
 * - EAL starts once per process, at the first dpdk: open, inside the addon (the JS thread calls open).
 *   With free hugepages and a hugetlbfs mount it runs --in-memory (no files, no multi-process); without
 *   them (or with CAPYBARA_DPDK_NO_HUGE=1) --no-huge -m 256 --no-shconf (--no-huge forces legacy memory, which --in-memory refuses). Always a
 *   per-process --file-prefix, --no-telemetry, and one lcore mapped to the CPUs the process may already use
 *   (no pinning of Node's main thread; its affinity is restored after init anyway). A PCI address adds
 *   itself to the allow list (-a); vdev-only processes skip the PCI scan. EAL output goes to stderr: stdout
 *   is the CLI's JSON. A failed init cannot be retried in DPDK, so its message is kept and repeated.
 * - Every device is hot-plugged with rte_dev_probe(DEVARGS) and removed at close, so one process can open
 *   several ports (and the same vdev name again after a close).
 * - RX hands out pointers into mbufs (one segment each: a 2 KiB data room holds any frame the stack
 *   sends or accepts); rx_release frees them. TX allocates mbufs in bulk from the port's pool and copies.
 *   The pool is sized from the descriptor counts (or ?mbufs=N).
 * - Checksums: the stack computes and verifies them in software. When the port reports RX IPv4/TCP
 *   checksum offload it is enabled and frames the NIC marks bad are dropped here (counted); TX offload
 *   would need the stack to leave the TCP checksum to the NIC, so TX stays in software.
 * - Sleeping: wait_fd is an epoll set of the queue's Rx interrupt (when the PMD has one: memif, tap, PCI
 *   NICs) and a timerfd. Without an interrupt the timer is the wake-up: a nap that doubles from 20 us to
 *   2 ms while the port stays idle and drops back at the first frame (timer slack 1 us on the engine
 *   thread), so an idle engine costs ~500 wake-ups/s (plus the engine's spin after each) instead of a core.
 *   With an interrupt the timer (2 ms) only covers a frame that arrived between the last RX burst and
 *   arming the interrupt. */
/* DPDK's headers inline SSSE3/SSE4.2 code (rte_memcpy) and its libraries are built for corei7 already;
 * GCC needs the target said for this file alone (clang accepts the intrinsics as they are). */
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("sse4.2"))), apply_to = function)
#elif defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("sse4.2")
#endif
#include <rte_config.h>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "dev.h"

#define DPDK_DEVARGS_MAX 512
#define DPDK_EAL_ARGS_MAX 32
#define DPDK_DEFAULT_DESC 1024u
#define DPDK_MBUF_CACHE 256u
#define DPDK_NAP_MIN_US 20u
#define DPDK_NAP_MAX_US 2000u
#define DPDK_TX_RETRIES 8
#define DPDK_RUN_DIR "/var/run/dpdk"

struct dpdk_dev {
  struct cpb_dev base;
  uint16_t port;
  bool started;
  bool rx_csum;          /* RX checksum offload enabled */
  bool intr;             /* the queue has an Rx interrupt fd */
  bool intr_armed;
  bool intr_eventfd;     /* the interrupt is an eventfd we must drain (memif, vfio); tap's is the queue */
  bool counted;          /* holds a reference on the process's EAL run dir */
  int intr_fd, timer_fd, epfd;
  _Atomic uint32_t nap_us;
  struct rte_mempool *pool;
  struct rte_device *rdev; /* for rte_dev_remove at close */
  char name[RTE_ETH_NAME_MAX_LEN];
  uint8_t mac[6];
  struct cpb_dev_stats st;
};

/* ---- errors and EAL logging ---------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* What DPDK logged since the current step began ("; "-joined, truncated), to name the cause in our errors. */
static char g_last_log[320];

static ssize_t log_write(void *cookie, const char *buf, size_t size) {
  (void)cookie;
  size_t n = size;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  size_t used = strlen(g_last_log);
  if (n > 0 && used + 3 < sizeof(g_last_log)) {
    if (used) memcpy(g_last_log + used, "; ", 2), used += 2;
    size_t k = CPB_MIN(n, sizeof(g_last_log) - 1 - used);
    memcpy(g_last_log + used, buf, k);
    g_last_log[used + k] = 0;
  }
  ssize_t w = write(STDERR_FILENO, buf, size);
  (void)w;
  return (ssize_t)size;
}

static void log_to_stderr(void) {
  static FILE *stream;
  if (stream) return;
  cookie_io_functions_t io = {.write = log_write};
  stream = fopencookie(NULL, "w", io);
  if (stream) {
    setvbuf(stream, NULL, _IOLBF, 0);
    rte_openlog_stream(stream);
  }
}

/* ---- EAL (once per process) ---------------------------------------------------------------------- */

static pthread_mutex_t g_eal_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_eal_rc = 1; /* 1: not tried; 0: up; -errno: failed (message in g_eal_err) */
static char g_eal_err[400];
static bool g_eal_huge;
static bool g_eal_pci;
static int g_open_devices;
static char g_prefix[48];

/* Free hugepages and a hugetlbfs mount: what --in-memory needs. */
static bool hugepages_usable(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  long free_pages = 0;
  char line[128];
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "HugePages_Free: %ld", &free_pages) == 1) break;
  if (f) fclose(f);
  if (free_pages <= 0) return false;
  bool mounted = false;
  f = fopen("/proc/mounts", "r");
  char mline[512];
  while (f && !mounted && fgets(mline, sizeof(mline), f)) mounted = strstr(mline, " hugetlbfs ") != NULL;
  if (f) fclose(f);
  return mounted;
}

/* "0-1,3" for the CPUs this process may run on, so EAL's one lcore does not pin the caller. */
static void cpu_list(const cpu_set_t *set, char *out, size_t cap) {
  size_t n = 0;
  out[0] = 0;
  for (int c = 0; c < CPU_SETSIZE && n + 16 < cap; c++) {
    if (!CPU_ISSET(c, set)) continue;
    int e = c;
    while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
    n += (size_t)snprintf(out + n, cap - n, n ? ",%d" : "%d", c);
    if (e > c) n += (size_t)snprintf(out + n, cap - n, "-%d", e);
    c = e;
  }
  if (!n) snprintf(out, cap, "0");
}

/* Runtime dirs of earlier capybara processes that are gone (with --no-shconf they stay empty). */
static void remove_stale_dirs(void) {
  DIR *d = opendir(DPDK_RUN_DIR);
  for (struct dirent *e; d && (e = readdir(d));) {
    int pid;
    if (sscanf(e->d_name, "capybara-%d", &pid) != 1 || pid == getpid() || kill(pid, 0) == 0) continue;
    char path[300];
    snprintf(path, sizeof(path), DPDK_RUN_DIR "/%s", e->d_name);
    rmdir(path);
  }
  if (d) closedir(d);
}

static bool is_pci_address(const char *devargs) {
  unsigned dom, bus, dev, fn;
  char c;
  return sscanf(devargs, "%x:%x:%x.%x%c", &dom, &bus, &dev, &fn, &c) >= 4 ||
         sscanf(devargs, "%x:%x.%x%c", &bus, &dev, &fn, &c) >= 3;
}

/* Splits extra EAL arguments (space separated) into argv; returns the new argc or -E2BIG. */
static int split_args(char *buf, char **argv, int argc, int max) {
  for (char *tok = strtok(buf, " \t"); tok; tok = strtok(NULL, " \t")) {
    if (argc >= max) return -E2BIG;
    argv[argc++] = tok;
  }
  return argc;
}

static int eal_start(const char *devargs, const char *extra, char *err, size_t errlen) {
  if (g_eal_rc <= 0) return g_eal_rc ? fail(err, errlen, g_eal_rc, "%s", g_eal_err) : 0;
  char *argv[DPDK_EAL_ARGS_MAX + 1];
  int argc = 0;
  char lcores[300], cpus[256], pci[DPDK_DEVARGS_MAX + 8], extra_buf[512];
  cpu_set_t saved;
  bool have_affinity = pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0;
  if (have_affinity) cpu_list(&saved, cpus, sizeof(cpus));
  else snprintf(cpus, sizeof(cpus), "0");
  snprintf(lcores, sizeof(lcores), "--lcores=0@(%s)", cpus);
  snprintf(g_prefix, sizeof(g_prefix), "--file-prefix=capybara-%d", (int)getpid());
  const char *no_huge = getenv("CAPYBARA_DPDK_NO_HUGE"); /* leave the hugepages to others (and tests) */
  g_eal_huge = !(no_huge && *no_huge && strcmp(no_huge, "0")) && hugepages_usable();
  g_eal_pci = is_pci_address(devargs);
  argv[argc++] = "capybara";
  argv[argc++] = lcores;
  argv[argc++] = g_prefix;
  argv[argc++] = "--no-telemetry";
  argv[argc++] = "--log-level=*:warning";
  if (g_eal_huge) {
    argv[argc++] = "--in-memory";
  } else {
    argv[argc++] = "--no-huge";
    argv[argc++] = "-m";
    argv[argc++] = "256";
    argv[argc++] = "--no-shconf";
  }
  if (g_eal_pci) {
    snprintf(pci, sizeof(pci), "-a%s", devargs);
    argv[argc++] = pci;
  } else {
    argv[argc++] = "--no-pci";
  }
  const char *env = getenv("CAPYBARA_DPDK_EAL");
  snprintf(extra_buf, sizeof(extra_buf), "%s %s", env ? env : "", extra ? extra : "");
  argc = split_args(extra_buf, argv, argc, DPDK_EAL_ARGS_MAX);
  if (argc < 0) return fail(err, errlen, -E2BIG, "dpdk: too many EAL arguments (at most %d)", DPDK_EAL_ARGS_MAX);
  argv[argc] = NULL;

  remove_stale_dirs();
  log_to_stderr();
  g_last_log[0] = 0;
  /* EAL prints its usage text with printf: keep it off stdout, where the CLI's JSON goes. */
  fflush(stdout);
  int saved_out = dup(STDOUT_FILENO);
  if (saved_out >= 0) dup2(STDERR_FILENO, STDOUT_FILENO);
  int rc = rte_eal_init(argc, argv);
  int eal_errno = rte_errno;
  fflush(stdout);
  if (saved_out >= 0) {
    dup2(saved_out, STDOUT_FILENO);
    close(saved_out);
  }
  if (have_affinity) pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  if (rc < 0) {
    g_eal_rc = eal_errno > 0 ? -eal_errno : -EINVAL;
    snprintf(g_eal_err, sizeof(g_eal_err), "dpdk: EAL initialisation failed (%s)%s%s; the arguments were:",
             rte_strerror(eal_errno), g_last_log[0] ? ": " : "", g_last_log);
    for (int i = 1; i < argc; i++) {
      size_t n = strlen(g_eal_err);
      snprintf(g_eal_err + n, sizeof(g_eal_err) - n, " %s", argv[i]);
    }
    return fail(err, errlen, g_eal_rc, "%s", g_eal_err);
  }
  g_eal_rc = 0;
  return 0;
}

/* ---- URI ----------------------------------------------------------------------------------------- */

struct dpdk_opts {
  char devargs[DPDK_DEVARGS_MAX];
  char eal[256];
  uint32_t mbufs, rxd, txd;
};

static int parse_u32(const char *v, size_t n, uint32_t min, uint32_t max, uint32_t *out) {
  char buf[16];
  if (n == 0 || n >= sizeof(buf)) return -EINVAL;
  memcpy(buf, v, n);
  buf[n] = 0;
  char *end;
  unsigned long x = strtoul(buf, &end, 10);
  if (*end || buf[0] < '0' || buf[0] > '9' || x < min || x > max) return -EINVAL;
  *out = (uint32_t)x;
  return 0;
}

static int parse_spec(const char *spec, struct dpdk_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof(*o));
  size_t n = strcspn(spec, "?");
  if (n == 0)
    return fail(err, errlen, -EINVAL, "dpdk: no device given (dpdk:net_af_packet0,iface=IFACE, dpdk:net_af_xdp0,iface=IFACE, "
                                      "dpdk:net_memif0,role=server,socket=PATH, dpdk:net_tap0 or dpdk:0000:3b:00.0)");
  if (n >= sizeof(o->devargs)) return fail(err, errlen, -EINVAL, "dpdk: device arguments longer than %zu bytes", sizeof(o->devargs) - 1);
  memcpy(o->devargs, spec, n);
  for (const char *p = spec[n] ? spec + n + 1 : NULL; p && *p;) {
    size_t len = strcspn(p, "&");
    const char *eq = memchr(p, '=', len);
    size_t klen = eq ? (size_t)(eq - p) : len;
    const char *v = eq ? eq + 1 : p + len;
    size_t vlen = (size_t)(p + len - v);
    int rc = -EINVAL;
    if (klen == 5 && !memcmp(p, "mbufs", 5)) rc = parse_u32(v, vlen, 512, 1u << 20, &o->mbufs);
    else if (klen == 3 && !memcmp(p, "rxd", 3)) rc = parse_u32(v, vlen, 64, 16384, &o->rxd);
    else if (klen == 3 && !memcmp(p, "txd", 3)) rc = parse_u32(v, vlen, 64, 16384, &o->txd);
    else if (klen == 3 && !memcmp(p, "eal", 3) && vlen < sizeof(o->eal)) {
      memcpy(o->eal, v, vlen);
      o->eal[vlen] = 0;
      rc = 0;
    }
    if (rc)
      return fail(err, errlen, -EINVAL, "dpdk: bad option \"%.*s\" in \"%s\" (mbufs=512..1048576, rxd=/txd=64..16384, eal=ARGS)",
                  (int)len, p, spec);
    p = p[len] ? p + len + 1 : NULL;
  }
  return 0;
}

/* ---- open/close ---------------------------------------------------------------------------------- */

static void dpdk_close(struct cpb_dev *dev) {
  struct dpdk_dev *d = (struct dpdk_dev *)dev;
  pthread_mutex_lock(&g_eal_lock);
  if (d->port != RTE_MAX_ETHPORTS) {
    if (d->started) rte_eth_dev_stop(d->port);
    rte_eth_dev_close(d->port);
  }
  if (d->rdev) rte_dev_remove(d->rdev);
  if (d->pool) rte_mempool_free(d->pool);
  if (d->epfd >= 0) close(d->epfd);
  if (d->timer_fd >= 0) close(d->timer_fd);
  if (d->counted && --g_open_devices == 0) {
    char path[96];
    snprintf(path, sizeof(path), DPDK_RUN_DIR "/capybara-%d", (int)getpid());
    rmdir(path); /* empty with --no-shconf / --in-memory; EAL itself stays up for the next open */
  }
  pthread_mutex_unlock(&g_eal_lock);
  free(d);
}

/* The port a probed DEVARGS became: vdevs are named by their first field, PCI ports by their address. */
static int find_port(const char *devargs, uint16_t *port) {
  char name[RTE_ETH_NAME_MAX_LEN];
  unsigned dom = 0, bus, dv, fn;
  if (sscanf(devargs, "%x:%x:%x.%x", &dom, &bus, &dv, &fn) == 4 || (dom = 0, sscanf(devargs, "%x:%x.%x", &bus, &dv, &fn) == 3)) {
    snprintf(name, sizeof(name), "%04x:%02x:%02x.%x", dom, bus, dv, fn);
    uint16_t p;
    RTE_ETH_FOREACH_DEV(p) {
      struct rte_eth_dev_info di;
      if (rte_eth_dev_info_get(p, &di) == 0 && di.device && !strcmp(rte_dev_name(di.device), name)) {
        *port = p;
        return 0;
      }
    }
    return -ENODEV;
  }
  size_t n = CPB_MIN(strcspn(devargs, ","), sizeof(name) - 1);
  memcpy(name, devargs, n);
  name[n] = 0;
  return rte_eth_dev_get_port_by_name(name, port) == 0 ? 0 : -ENODEV;
}

static bool fd_is_eventfd(int fd) {
  char path[64], target[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n <= 0) return false;
  target[n] = 0;
  return strstr(target, "eventfd") != NULL;
}

static int port_setup(struct dpdk_dev *d, const struct dpdk_opts *o, char *err, size_t errlen) {
  struct rte_eth_dev_info di;
  int rc = rte_eth_dev_info_get(d->port, &di);
  if (rc) return fail(err, errlen, rc, "dpdk: %s: cannot read device info: %s", d->name, rte_strerror(-rc));
  d->rdev = di.device;
  const uint64_t csum = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
  struct rte_eth_conf conf;
  memset(&conf, 0, sizeof(conf));
  d->rx_csum = (di.rx_offload_capa & csum) == csum;
  if (d->rx_csum) conf.rxmode.offloads = csum;
  conf.intr_conf.rxq = 1;
  rc = rte_eth_dev_configure(d->port, 1, 1, &conf);
  if (rc) { /* a PMD may refuse Rx interrupts: then naps only */
    conf.intr_conf.rxq = 0;
    rc = rte_eth_dev_configure(d->port, 1, 1, &conf);
  }
  if (rc) return fail(err, errlen, rc, "dpdk: %s: configure failed: %s (%s)", d->name, rte_strerror(-rc), g_last_log);
  uint16_t rxd = (uint16_t)(o->rxd ? o->rxd : DPDK_DEFAULT_DESC), txd = (uint16_t)(o->txd ? o->txd : DPDK_DEFAULT_DESC);
  rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &rxd, &txd);
  /* Every RX descriptor holds an mbuf, TX holds up to txd in flight, plus per-lcore caches and a burst. */
  uint32_t n = o->mbufs ? o->mbufs : CPB_MAX(4095u, 2u * ((uint32_t)rxd + txd) + 2u * DPDK_MBUF_CACHE + CPB_BURST);
  int socket = rte_eth_dev_socket_id(d->port);
  char pname[RTE_MEMPOOL_NAMESIZE];
  static unsigned pool_seq;
  snprintf(pname, sizeof(pname), "cpb%u_%u", d->port, pool_seq++);
  d->pool = rte_pktmbuf_pool_create(pname, n, DPDK_MBUF_CACHE, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (!d->pool)
    return fail(err, errlen, -ENOMEM, "dpdk: %s: cannot create a pool of %u mbufs: %s%s", d->name, n, rte_strerror(rte_errno),
                g_eal_huge ? "" : " (EAL runs without hugepages: -m 256; lower ?mbufs= or reserve hugepages with capybara dpdk setup)");
  rc = rte_eth_rx_queue_setup(d->port, 0, rxd, (unsigned)socket, NULL, d->pool);
  if (!rc) rc = rte_eth_tx_queue_setup(d->port, 0, txd, (unsigned)socket, NULL);
  if (rc) return fail(err, errlen, rc, "dpdk: %s: queue setup failed: %s (%s)", d->name, rte_strerror(-rc), g_last_log);
  rc = rte_eth_dev_start(d->port);
  if (rc) {
    if (!g_eal_huge && !strncmp(d->name, "net_af_xdp", 10))
      return fail(err, errlen, -ENOMEM, "dpdk: %s needs hugepages for its UMEM and this process started EAL without them "
                                        "(run capybara dpdk setup --hugepages 64, then restart): %s", d->name, g_last_log);
    return fail(err, errlen, rc, "dpdk: %s: start failed: %s (%s)", d->name, rte_strerror(-rc), g_last_log);
  }
  d->started = true;
  struct rte_ether_addr mac;
  if (rte_eth_macaddr_get(d->port, &mac) == 0) memcpy(d->mac, mac.addr_bytes, 6);
  if (conf.intr_conf.rxq) {
    /* PMDs without Rx interrupts make ethdev log an error here: not one for our users. */
    uint32_t level = rte_log_get_global_level();
    rte_log_set_global_level(RTE_LOG_EMERG);
    int fd = rte_eth_dev_rx_intr_ctl_q_get_fd(d->port, 0);
    rte_log_set_global_level(level);
    if (fd >= 0 && rte_eth_dev_rx_intr_disable(d->port, 0) == 0) {
      d->intr = true;
      d->intr_fd = fd;
      d->intr_eventfd = fd_is_eventfd(fd);
    }
  }
  d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  d->epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (d->timer_fd < 0 || d->epfd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->timer_fd, &ev) ||
      (d->intr && epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->intr_fd, &ev)))
    return fail(err, errlen, -errno, "dpdk: %s: cannot set up the wake-up fds: %s", d->name, strerror(errno));
  atomic_store(&d->nap_us, DPDK_NAP_MIN_US);
  return 0;
}

static int dpdk_open(struct cpb_dev **out, const char *spec, char *err, size_t errlen) {
  struct dpdk_opts o;
  int rc = parse_spec(spec, &o, err, errlen);
  if (rc) return rc;
  struct dpdk_dev *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;
  d->base.ops = &cpb_dev_dpdk_ops;
  d->port = RTE_MAX_ETHPORTS;
  d->intr_fd = d->timer_fd = d->epfd = -1;
  pthread_mutex_lock(&g_eal_lock);
  rc = eal_start(o.devargs, o.eal, err, errlen);
  if (!rc) {
    d->counted = true;
    g_open_devices++;
  }
  if (!rc && is_pci_address(o.devargs) && !g_eal_pci)
    rc = fail(err, errlen, -EINVAL, "dpdk: %s is a PCI device but this process started EAL for virtual devices only "
                                    "(open PCI devices first, or in their own process)", o.devargs);
  if (!rc && !g_eal_huge && !strncmp(o.devargs, "net_af_xdp", 10))
    rc = fail(err, errlen, -ENOMEM, "dpdk: net_af_xdp needs hugepages for its UMEM, and there are none free (or hugetlbfs "
                                    "is not mounted): run capybara dpdk setup --hugepages 64; net_af_packet works without");
  if (!rc) {
    g_last_log[0] = 0;
    rc = rte_dev_probe(o.devargs);
    if (rc == -EEXIST)
      rc = fail(err, errlen, -EBUSY, "dpdk: %s is already open in this process", o.devargs);
    else if (rc) /* the bus says -1 (or -EINVAL) for most causes; the log names the real one */
      rc = fail(err, errlen, rc == -EINVAL ? -EINVAL : -ENODEV, "dpdk: cannot attach \"%s\"%s%s", o.devargs,
                g_last_log[0] ? ": " : " (no such device or driver)", g_last_log);
  }
  if (!rc && find_port(o.devargs, &d->port)) {
    d->port = RTE_MAX_ETHPORTS;
    rc = fail(err, errlen, -ENODEV, "dpdk: \"%s\" attached but is not an Ethernet port", o.devargs);
  }
  if (!rc) {
    rte_eth_dev_get_name_by_port(d->port, d->name);
    g_last_log[0] = 0;
    rc = port_setup(d, &o, err, errlen);
  }
  pthread_mutex_unlock(&g_eal_lock);
  if (rc) {
    dpdk_close(&d->base);
    return rc;
  }
  *out = &d->base;
  return 0;
}

/* ---- data path ----------------------------------------------------------------------------------- */

static void drain_intr(struct dpdk_dev *d) {
  rte_eth_dev_rx_intr_disable(d->port, 0);
  d->intr_armed = false;
  if (!d->intr_eventfd) return;
  struct pollfd p = {.fd = d->intr_fd, .events = POLLIN};
  uint64_t v;
  if (poll(&p, 1, 0) == 1) {
    ssize_t r = read(d->intr_fd, &v, sizeof(v));
    (void)r; /* a racing reader (none here) or an empty counter: nothing to do either way */
  }
}

static int dpdk_rx_burst(struct cpb_dev *dev, struct cpb_frame *frames, int max, cpb_time_t now) {
  struct dpdk_dev *d = (struct dpdk_dev *)dev;
  (void)now;
  if (CPB_UNLIKELY(d->intr_armed)) drain_intr(d);
  struct rte_mbuf *m[CPB_BURST];
  uint16_t n = rte_eth_rx_burst(d->port, 0, m, (uint16_t)CPB_MIN(max, CPB_BURST));
  int got = 0;
  for (uint16_t i = 0; i < n; i++) {
    struct rte_mbuf *b = m[i];
    uint64_t fl = b->ol_flags;
    if (b->nb_segs != 1 || b->data_len == 0 || b->data_len > CPB_FRAME_MAX) {
      d->st.rx_dropped++;
      rte_pktmbuf_free(b);
      continue;
    }
    if (d->rx_csum && ((fl & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
                       (fl & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD)) {
      d->st.rx_csum_bad++;
      d->st.rx_dropped++;
      rte_pktmbuf_free(b);
      continue;
    }
    frames[got].data = rte_pktmbuf_mtod(b, uint8_t *);
    frames[got].len = b->data_len;
    frames[got].cookie = (uint64_t)(uintptr_t)b;
    d->st.rx_frames++;
    d->st.rx_bytes += b->data_len;
    got++;
  }
  if (n) atomic_store_explicit(&d->nap_us, DPDK_NAP_MIN_US, memory_order_relaxed);
  return got;
}

static void dpdk_rx_release(struct cpb_dev *dev, struct cpb_frame *frames, int n) {
  (void)dev;
  struct rte_mbuf *m[CPB_BURST];
  int k = 0;
  for (int i = 0; i < n; i++) {
    m[k++] = (struct rte_mbuf *)(uintptr_t)frames[i].cookie;
    if (k == CPB_BURST) {
      rte_pktmbuf_free_bulk(m, (unsigned)k);
      k = 0;
    }
  }
  if (k) rte_pktmbuf_free_bulk(m, (unsigned)k);
}

static int dpdk_tx_burst(struct cpb_dev *dev, const struct cpb_frame *frames, int n, cpb_time_t now) {
  struct dpdk_dev *d = (struct dpdk_dev *)dev;
  (void)now;
  int accepted = 0;
  for (int off = 0; off < n; off += CPB_BURST) {
    int k = CPB_MIN(n - off, CPB_BURST), ok = 0;
    struct rte_mbuf *m[CPB_BURST];
    if (rte_pktmbuf_alloc_bulk(d->pool, m, (unsigned)k)) {
      d->st.tx_dropped += (uint64_t)k; /* pool exhausted: TCP retransmits */
      continue;
    }
    for (int i = 0; i < k; i++) {
      const struct cpb_frame *f = &frames[off + i];
      if (f->len == 0 || f->len > CPB_FRAME_MAX || f->len > rte_pktmbuf_tailroom(m[i])) {
        d->st.tx_dropped++;
        rte_pktmbuf_free(m[i]);
        continue;
      }
      memcpy(rte_pktmbuf_mtod(m[i], void *), f->data, f->len);
      m[i]->data_len = (uint16_t)f->len;
      m[i]->pkt_len = f->len;
      d->st.tx_bytes += f->len;
      m[ok++] = m[i];
    }
    uint16_t sent = 0;
    /* A full ring usually drains within a few calls (the PMD reclaims completions on each). */
    for (int tries = 0; sent < ok && tries < DPDK_TX_RETRIES; tries++)
      sent = (uint16_t)(sent + rte_eth_tx_burst(d->port, 0, m + sent, (uint16_t)(ok - sent)));
    for (int i = sent; i < ok; i++) {
      d->st.tx_bytes -= m[i]->data_len;
      rte_pktmbuf_free(m[i]);
    }
    d->st.tx_dropped += (uint64_t)(ok - sent);
    d->st.tx_frames += sent;
    accepted += sent;
  }
  atomic_store_explicit(&d->nap_us, DPDK_NAP_MIN_US, memory_order_relaxed);
  return accepted;
}

/* Called by the engine right before it sleeps: arm the interrupt (if any) and the nap timer. */
static int dpdk_wait_fd(struct cpb_dev *dev) {
  struct dpdk_dev *d = (struct dpdk_dev *)dev;
  static _Thread_local bool slack_set;
  if (!slack_set) { /* the engine thread: naps of tens of us need a timer slack below Linux's default 50 us */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    slack_set = true;
  }
  uint32_t nap = atomic_load_explicit(&d->nap_us, memory_order_relaxed);
  if (d->intr && !d->intr_armed) {
    if (rte_eth_dev_rx_intr_enable(d->port, 0) == 0) d->intr_armed = true;
  }
  if (d->intr_armed) {
    nap = DPDK_NAP_MAX_US;
  } else {
    atomic_store_explicit(&d->nap_us, CPB_MIN(nap * 2, DPDK_NAP_MAX_US), memory_order_relaxed);
  }
  struct itimerspec ts = {.it_value = {.tv_sec = 0, .tv_nsec = (long)nap * 1000}};
  timerfd_settime(d->timer_fd, 0, &ts, NULL);
  d->st.wakeups++;
  return d->epfd;
}

static cpb_time_t dpdk_next_deadline(struct cpb_dev *dev) {
  (void)dev;
  return UINT64_MAX;
}

static void dpdk_get_mac(struct cpb_dev *dev, uint8_t mac[6]) { memcpy(mac, ((struct dpdk_dev *)dev)->mac, 6); }

static void dpdk_get_stats(struct cpb_dev *dev, struct cpb_dev_stats *out) {
  struct dpdk_dev *d = (struct dpdk_dev *)dev;
  *out = d->st;
  struct rte_eth_link link;
  if (rte_eth_link_get_nowait(d->port, &link) == 0) {
    out->link_up = link.link_status == RTE_ETH_LINK_UP;
    out->link_speed_mbps = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed;
  }
  struct rte_eth_stats es;
  if (rte_eth_stats_get(d->port, &es) == 0) {
    out->port_rx_packets = es.ipackets;
    out->port_tx_packets = es.opackets;
    out->port_rx_missed = es.imissed;
    out->port_rx_errors = es.ierrors;
    out->port_tx_errors = es.oerrors;
    out->port_rx_nombuf = es.rx_nombuf;
    out->rx_dropped += es.imissed + es.rx_nombuf;
  }
  out->rx_csum_offload = d->rx_csum;
}

const struct cpb_dev_ops cpb_dev_dpdk_ops = {
    .scheme = "dpdk",
    .open = dpdk_open,
    .rx_burst = dpdk_rx_burst,
    .rx_release = dpdk_rx_release,
    .tx_burst = dpdk_tx_burst,
    .wait_fd = dpdk_wait_fd,
    .next_deadline = dpdk_next_deadline,
    .get_mac = dpdk_get_mac,
    .get_stats = dpdk_get_stats,
    .close = dpdk_close,
};

#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute pop
#endif
