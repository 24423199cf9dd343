/* lbctl: the user-space side of the XDP load balancer (native/bpf/lb.bpf.c), driven by dataplane/lb.ts.
 *
 * One invocation does one thing and exits. The program is attached through a bpf_link pinned in bpffs
 * next to its maps (PINDIR/link, PINDIR/lb_*), so the pins are the whole state: any process on the
 * machine (a runtime migrating a connection, the CLI) reaches the maps by path, and removing the link
 * pin detaches the program.
 *
 * Two namespace facts shape it:
 *  - the interface lives in another network namespace: attach enters it with setns(), which a C
 *    process can do and Node cannot;
 *  - `ip netns exec` gives its children a private /sys without the bpffs mounted on /sys/fs/bpf, so a
 *    runtime started that way would not see pins there. The pins therefore live in a bpffs mounted
 *    outside /sys (dataplane/lb.ts mounts one on /run/capybara/bpf), which such children inherit as
 *    long as it was mounted before they started.
 *
 * Output is plain lines for lb.ts to parse; on failure one line on stderr and the errno as exit status.
 *
 *   lbctl attach PINDIR NETNS IFACE OBJ native|skb
 *   lbctl detach PINDIR
 *   lbctl status PINDIR                       -> "attached IFINDEX PROG_ID" | "stale"
 *   lbctl config PINDIR VIP IDLE_NS
 *   lbctl set PINDIR NETNS < "backend IDX IFINDEX MAC LB_MAC" lines, "table", LB_TABLE_SIZE indices
 *   lbctl redirect PINDIR SADDR SPORT DADDR DPORT BACKEND
 *   lbctl lookup PINDIR SADDR SPORT DADDR DPORT  -> "BACKEND IDLE_NS"
 *   lbctl forget PINDIR SADDR SPORT DADDR DPORT
 *   lbctl flows PINDIR                        -> "SADDR SPORT DADDR DPORT BACKEND IDLE_NS" lines
 *   lbctl expire PINDIR IDLE_NS               -> number of entries removed
 *   lbctl stats PINDIR                        -> "backend IDX PACKETS BYTES" lines, then "NAME N" lines */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "lb_maps.h"

static const char *const STAT_NAMES[] = {"hit", "new", "aged", "pass", "no_backend"};

#define MAP_NAMES_N 7
static const char *const MAP_NAMES[MAP_NAMES_N] = {
  "lb_cfg", "lb_redirect", "lb_table", "lb_backends", "lb_devs", "lb_backend_stats", "lb_stats",
};

static const char *pindir;

/* Reports and returns -err (err positive), so callers can `return fail(...)`. */
static int fail(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lbctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s\n", strerror(err));
  return -err;
}

static int pin_path(char *buf, size_t len, const char *name) {
  int n = snprintf(buf, len, "%s/%s", pindir, name);
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* The pin directory's parent must be a bpffs: pins anywhere else fail with a less helpful EPERM. */
static int check_bpffs(void) {
  char parent[PATH_MAX];
  snprintf(parent, sizeof(parent), "%s", pindir);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return fail(EINVAL, "pin directory %s must be an absolute path below a bpffs", pindir);
  *slash = 0;
  struct statfs st;
  if (statfs(parent, &st)) return fail(errno, "%s", parent);
  if (st.f_type != BPF_FS_MAGIC) return fail(ENODEV, "%s is not a bpffs (mount -t bpf bpf %s)", parent, parent);
  return 0;
}

static int map_fd(const char *name) {
  char path[PATH_MAX];
  if (pin_path(path, sizeof(path), name)) return fail(ENAMETOOLONG, "%s/%s", pindir, name);
  int fd = bpf_obj_get(path);
  if (fd < 0) return fail(errno, "open pinned map %s", path);
  return fd;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock bpf_ktime_get_ns reads */
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (!s || !*s) return -EINVAL;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || s[0] == '-' || v > max) return -EINVAL;
  *out = v;
  return 0;
}

static int parse_mac(const char *s, uint8_t mac[6]) {
  unsigned int b[6];
  char tail;
  if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6) return -EINVAL;
  for (int i = 0; i < 6; i++) mac[i] = (uint8_t)b[i];
  return 0;
}

/* argv: SADDR SPORT DADDR DPORT (TCP). */
static int parse_flow(char **argv, struct lb_flow *f) {
  uint64_t sport, dport;
  memset(f, 0, sizeof(*f));
  if (inet_pton(AF_INET, argv[0], &f->saddr) != 1) return fail(EINVAL, "bad source address '%s'", argv[0]);
  if (inet_pton(AF_INET, argv[2], &f->daddr) != 1) return fail(EINVAL, "bad destination address '%s'", argv[2]);
  if (parse_u64(argv[1], 65535, &sport) || parse_u64(argv[3], 65535, &dport)) return fail(EINVAL, "bad port");
  f->sport = htons((uint16_t)sport);
  f->dport = htons((uint16_t)dport);
  f->proto = 6;
  return 0;
}

static void print_flow(const struct lb_flow *f, const struct lb_flow_val *v, uint64_t now) {
  char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &f->saddr, s, sizeof(s));
  inet_ntop(AF_INET, &f->daddr, d, sizeof(d));
  int64_t idle = (int64_t)(now - v->last_seen_ns);
  printf("%s %u %s %u %u %" PRId64 "\n", s, ntohs(f->sport), d, ntohs(f->dport), v->backend, idle < 0 ? 0 : idle);
}

/* Interface indices mean something only inside their namespace: the kernel resolves a devmap entry,
 * like an attach, in the namespace of the process that writes it. */
static int enter_netns(const char *netns) {
  char nspath[PATH_MAX];
  int n = snprintf(nspath, sizeof(nspath), "/var/run/netns/%s", netns);
  if (n < 0 || (size_t)n >= sizeof(nspath) || !*netns || strchr(netns, '/')) return fail(EINVAL, "bad namespace name '%s'", netns);
  int fd = open(nspath, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno, "open namespace %s", nspath);
  int rc = setns(fd, CLONE_NEWNET) ? fail(errno, "enter network namespace %s", netns) : 0;
  close(fd);
  return rc;
}

/* ---- attach / detach ---- */

static int unpin_all(void) {
  char path[PATH_MAX];
  for (int i = 0; i < MAP_NAMES_N; i++) {
    if (pin_path(path, sizeof(path), MAP_NAMES[i])) return -ENAMETOOLONG;
    if (unlink(path) && errno != ENOENT) return fail(errno, "unlink %s", path);
  }
  if (pin_path(path, sizeof(path), "link")) return -ENAMETOOLONG;
  if (unlink(path) && errno != ENOENT) return fail(errno, "unlink %s", path);
  if (rmdir(pindir) && errno != ENOENT) return fail(errno, "rmdir %s", pindir);
  return 0;
}

/* 1 attached (ifindex/prog id filled in), 0 pinned but its interface is gone, -ENOENT nothing pinned. */
static int link_state(uint32_t *ifindex, uint32_t *prog_id) {
  char path[PATH_MAX];
  if (pin_path(path, sizeof(path), "link")) return -ENAMETOOLONG;
  int fd = bpf_obj_get(path);
  if (fd < 0) return -errno;
  struct bpf_link_info info;
  uint32_t len = sizeof(info);
  memset(&info, 0, sizeof(info));
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  int err = errno;
  close(fd);
  if (rc) return -err;
  *ifindex = info.xdp.ifindex;
  *prog_id = info.prog_id;
  return info.xdp.ifindex ? 1 : 0;
}

static int cmd_attach(char **argv) {
  const char *netns = argv[0], *iface = argv[1], *obj_path = argv[2], *mode = argv[3];
  uint32_t xdp_flags;
  if (!strcmp(mode, "native")) xdp_flags = XDP_FLAGS_DRV_MODE;
  else if (!strcmp(mode, "skb")) xdp_flags = XDP_FLAGS_SKB_MODE;
  else return fail(EINVAL, "mode must be native or skb, not '%s'", mode);

  uint32_t ifindex = 0, prog_id = 0;
  int st = link_state(&ifindex, &prog_id);
  if (st == 1) return fail(EBUSY, "%s already holds an attached load balancer (ifindex %u)", pindir, ifindex);
  if (st == 0 || st == -ENOENT) {
    int rc = unpin_all(); /* leftovers of a load balancer whose namespace was deleted */
    if (rc) return rc;
  }

  int rc = 0;
  struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
  if (!obj) return fail(errno, "open %s", obj_path);
  rc = enter_netns(netns);
  if (rc) goto out_obj;
  ifindex = if_nametoindex(iface);
  if (!ifindex) {
    rc = fail(errno, "interface %s in namespace %s", iface, netns);
    goto out_obj;
  }
  if (bpf_object__load(obj)) {
    rc = fail(errno, "load %s", obj_path);
    goto out_obj;
  }
  struct bpf_program *prog = bpf_object__find_program_by_name(obj, "cpb_lb");
  if (!prog) {
    rc = fail(ENOENT, "program cpb_lb in %s", obj_path);
    goto out_obj;
  }
  if (mkdir(pindir, 0700) && errno != EEXIST) {
    rc = fail(errno, "mkdir %s", pindir);
    goto out_obj;
  }
  if (bpf_object__pin_maps(obj, pindir)) {
    rc = fail(errno, "pin maps in %s", pindir);
    goto out_unpin;
  }
  LIBBPF_OPTS(bpf_link_create_opts, lopts, .flags = xdp_flags);
  int lfd = bpf_link_create(bpf_program__fd(prog), (int)ifindex, BPF_XDP, &lopts);
  if (lfd < 0) {
    rc = fail(errno, "attach to %s (%s mode)", iface, mode);
    goto out_unpin;
  }
  char path[PATH_MAX];
  int prc = pin_path(path, sizeof(path), "link");
  if (prc || bpf_obj_pin(lfd, path)) {
    rc = fail(prc ? -prc : errno, "pin link in %s", pindir);
    close(lfd); /* the last reference: this detaches again */
    goto out_unpin;
  }
  close(lfd);
  printf("attached %u\n", ifindex);
  goto out_obj;
out_unpin:
  unpin_all();
out_obj:
  bpf_object__close(obj);
  return rc;
}

static int cmd_detach(void) {
  char path[PATH_MAX];
  if (pin_path(path, sizeof(path), "link")) return -ENAMETOOLONG;
  int fd = bpf_obj_get(path);
  if (fd >= 0) {
    /* Detach explicitly: a process still holding the link open would otherwise keep it attached. */
    if (bpf_link_detach(fd) && errno != EINVAL && errno != ENOLINK) {
      int err = errno;
      close(fd);
      return fail(err, "detach %s", path);
    }
    close(fd);
  } else if (errno != ENOENT) {
    return fail(errno, "open %s", path);
  }
  return unpin_all();
}

static int cmd_status(void) {
  uint32_t ifindex = 0, prog_id = 0;
  int st = link_state(&ifindex, &prog_id);
  if (st < 0) return fail(-st, "%s/link", pindir);
  if (st == 0) printf("stale\n");
  else printf("attached %u %u\n", ifindex, prog_id);
  return 0;
}

/* ---- configuration ---- */

static int cmd_config(char **argv) {
  struct lb_cfg cfg;
  uint32_t key = 0;
  memset(&cfg, 0, sizeof(cfg));
  if (inet_pton(AF_INET, argv[0], &cfg.vip) != 1) return fail(EINVAL, "bad VIP '%s'", argv[0]);
  uint64_t idle;
  if (parse_u64(argv[1], UINT64_MAX, &idle)) return fail(EINVAL, "bad idle time '%s'", argv[1]);
  cfg.idle_ns = idle;
  int fd = map_fd("lb_cfg");
  if (fd < 0) return fd;
  struct lb_cfg old;
  /* Keep the backend count that `set` wrote. */
  if (bpf_map_lookup_elem(fd, &key, &old) == 0) cfg.n_backends = old.n_backends;
  int rc = bpf_map_update_elem(fd, &key, &cfg, BPF_ANY) ? fail(errno, "update lb_cfg") : 0;
  close(fd);
  return rc;
}

static int read_backends_and_table(struct lb_backend *be, uint32_t *table) {
  char line[256];
  uint32_t filled = 0;
  int in_table = 0;
  while (fgets(line, sizeof(line), stdin)) {
    if (!in_table) {
      char mac[32], lbmac[32];
      unsigned int idx, ifindex;
      if (!strcmp(line, "table\n")) {
        in_table = 1;
        continue;
      }
      if (sscanf(line, "backend %u %u %31s %31s", &idx, &ifindex, mac, lbmac) != 4 || idx >= LB_MAX_BACKENDS || !ifindex)
        return fail(EINVAL, "bad backend line '%.60s'", line);
      be[idx].ifindex = ifindex;
      if (parse_mac(mac, be[idx].mac) || parse_mac(lbmac, be[idx].lb_mac)) return fail(EINVAL, "bad MAC in '%.60s'", line);
      continue;
    }
    /* The table: whitespace-separated indices, any number per line. */
    char *p = line;
    for (;;) {
      while (*p == ' ' || *p == '\t' || *p == '\n') p++;
      if (!*p) break;
      char *end;
      errno = 0;
      unsigned long v = strtoul(p, &end, 10);
      if (end == p || errno || v >= LB_MAX_BACKENDS || !be[v].ifindex) return fail(EINVAL, "bad table entry near '%.20s'", p);
      if (filled >= LB_TABLE_SIZE) return fail(EINVAL, "more than %u table entries", LB_TABLE_SIZE);
      table[filled++] = (uint32_t)v;
      p = end;
    }
  }
  if (filled != LB_TABLE_SIZE) return fail(EINVAL, "table has %u entries, needs %u", filled, LB_TABLE_SIZE);
  return 0;
}

/* Order matters while traffic flows: new backends first, then the table that points at them, then the
 * removal of backends nothing new points at any more. */
static int cmd_set(const char *netns) {
  static struct lb_backend be[LB_MAX_BACKENDS];
  static uint32_t table[LB_TABLE_SIZE];
  int rc = read_backends_and_table(be, table);
  if (rc) return rc;
  rc = enter_netns(netns);
  if (rc) return rc;
  int fds[4] = {map_fd("lb_backends"), map_fd("lb_devs"), map_fd("lb_table"), map_fd("lb_cfg")};
  for (int i = 0; i < 4; i++) {
    if (fds[i] < 0) {
      rc = fds[i];
      goto out;
    }
  }
  uint32_t n = 0;
  for (uint32_t i = 0; i < LB_MAX_BACKENDS; i++) {
    if (!be[i].ifindex) continue;
    n++;
    if (bpf_map_update_elem(fds[1], &i, &be[i].ifindex, BPF_ANY)) {
      rc = fail(errno, "devmap slot %u -> ifindex %u", i, be[i].ifindex);
      goto out;
    }
    if (bpf_map_update_elem(fds[0], &i, &be[i], BPF_ANY)) {
      rc = fail(errno, "backend slot %u", i);
      goto out;
    }
  }
  for (uint32_t i = 0; i < LB_TABLE_SIZE; i++) {
    if (bpf_map_update_elem(fds[2], &i, &table[i], BPF_ANY)) {
      rc = fail(errno, "table slot %u", i);
      goto out;
    }
  }
  for (uint32_t i = 0; i < LB_MAX_BACKENDS; i++) {
    if (be[i].ifindex) continue;
    struct lb_backend none;
    memset(&none, 0, sizeof(none));
    if (bpf_map_update_elem(fds[0], &i, &none, BPF_ANY)) {
      rc = fail(errno, "clear backend slot %u", i);
      goto out;
    }
    if (bpf_map_delete_elem(fds[1], &i) && errno != ENOENT) {
      rc = fail(errno, "clear devmap slot %u", i);
      goto out;
    }
  }
  uint32_t key = 0;
  struct lb_cfg cfg;
  if (bpf_map_lookup_elem(fds[3], &key, &cfg)) {
    rc = fail(errno, "read lb_cfg");
    goto out;
  }
  cfg.n_backends = n;
  if (bpf_map_update_elem(fds[3], &key, &cfg, BPF_ANY)) rc = fail(errno, "update lb_cfg");
out:
  for (int i = 0; i < 4; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  return rc;
}

/* ---- the redirect table ---- */

static int cmd_redirect(char **argv) {
  struct lb_flow f;
  int rc = parse_flow(argv, &f);
  if (rc) return rc;
  uint64_t b;
  if (parse_u64(argv[4], LB_MAX_BACKENDS - 1, &b)) return fail(EINVAL, "bad backend index '%s'", argv[4]);
  int bfd = map_fd("lb_backends");
  if (bfd < 0) return bfd;
  uint32_t idx = (uint32_t)b;
  struct lb_backend be;
  rc = bpf_map_lookup_elem(bfd, &idx, &be) ? fail(errno, "backend slot %u", idx) : 0;
  close(bfd);
  if (rc) return rc;
  if (!be.ifindex) return fail(ENXIO, "backend %u is not configured", idx);
  int fd = map_fd("lb_redirect");
  if (fd < 0) return fd;
  struct lb_flow_val v = {.backend = idx, .last_seen_ns = now_ns()};
  rc = bpf_map_update_elem(fd, &f, &v, BPF_ANY) ? fail(errno, "update lb_redirect") : 0;
  close(fd);
  return rc;
}

static int cmd_lookup(char **argv, int forget) {
  struct lb_flow f;
  int rc = parse_flow(argv, &f);
  if (rc) return rc;
  int fd = map_fd("lb_redirect");
  if (fd < 0) return fd;
  struct lb_flow_val v;
  if (forget) rc = bpf_map_delete_elem(fd, &f) ? -errno : 0;
  else rc = bpf_map_lookup_elem(fd, &f, &v) ? -errno : 0;
  close(fd);
  /* "no such flow" is an answer, not an error worth a message: exit status ENOENT says it. */
  if (rc) return rc == -ENOENT ? rc : fail(-rc, "lb_redirect");
  if (!forget) {
    int64_t idle = (int64_t)(now_ns() - v.last_seen_ns);
    printf("%u %" PRId64 "\n", v.backend, idle < 0 ? 0 : idle);
  }
  return 0;
}

/* Walks the table; for expire (idle_ns > 0) deletes entries idle longer than that and prints the count. */
static int walk_flows(uint64_t idle_ns) {
  int fd = map_fd("lb_redirect");
  if (fd < 0) return fd;
  struct lb_flow key, next;
  struct lb_flow_val v;
  size_t cap = 1024, n = 0;
  struct lb_flow *doomed = idle_ns ? malloc(cap * sizeof(*doomed)) : NULL;
  if (idle_ns && !doomed) {
    close(fd);
    return fail(ENOMEM, "expire");
  }
  uint64_t now = now_ns();
  int rc = 0;
  const struct lb_flow *prev = NULL;
  /* Deleting while walking would restart the walk (get_next_key of a missing key starts over), so
   * expire collects first and deletes after. */
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (bpf_map_lookup_elem(fd, &key, &v)) continue; /* evicted meanwhile */
    if (!idle_ns) {
      print_flow(&key, &v, now);
      continue;
    }
    int64_t idle = (int64_t)(now - v.last_seen_ns);
    if (idle <= (int64_t)idle_ns) continue;
    if (n == cap) {
      struct lb_flow *bigger = realloc(doomed, 2 * cap * sizeof(*doomed));
      if (!bigger) {
        rc = fail(ENOMEM, "expire");
        goto out;
      }
      doomed = bigger;
      cap *= 2;
    }
    doomed[n++] = key;
  }
  if (idle_ns) {
    size_t removed = 0;
    for (size_t i = 0; i < n; i++) {
      /* Look again just before deleting: a packet or a runtime's redirect may have refreshed it. */
      if (bpf_map_lookup_elem(fd, &doomed[i], &v)) continue;
      if ((int64_t)(now_ns() - v.last_seen_ns) <= (int64_t)idle_ns) continue;
      if (bpf_map_delete_elem(fd, &doomed[i]) == 0) removed++;
    }
    printf("%zu\n", removed);
  }
out:
  free(doomed);
  close(fd);
  return rc;
}

static int cmd_stats(void) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return fail(ncpu ? -ncpu : EINVAL, "number of CPUs");
  int rc = 0;
  struct lb_counter *pc = calloc((size_t)ncpu, sizeof(*pc));
  uint64_t *sc = calloc((size_t)ncpu, sizeof(*sc));
  int bfd = map_fd("lb_backend_stats"), sfd = map_fd("lb_stats"), cfd = map_fd("lb_backends");
  if (!pc || !sc) rc = fail(ENOMEM, "stats");
  else if (bfd < 0) rc = bfd;
  else if (sfd < 0) rc = sfd;
  else if (cfd < 0) rc = cfd;
  for (uint32_t i = 0; !rc && i < LB_MAX_BACKENDS; i++) {
    struct lb_backend be;
    if (bpf_map_lookup_elem(bfd, &i, pc) || bpf_map_lookup_elem(cfd, &i, &be)) {
      rc = fail(errno, "backend counters %u", i);
      break;
    }
    uint64_t p = 0, b = 0;
    for (int c = 0; c < ncpu; c++) {
      p += pc[c].packets;
      b += pc[c].bytes;
    }
    if (be.ifindex || p) printf("backend %u %" PRIu64 " %" PRIu64 "\n", i, p, b);
  }
  for (uint32_t i = 0; !rc && i < sizeof(STAT_NAMES) / sizeof(STAT_NAMES[0]); i++) {
    if (bpf_map_lookup_elem(sfd, &i, sc)) {
      rc = fail(errno, "counter %s", STAT_NAMES[i]);
      break;
    }
    uint64_t t = 0;
    for (int c = 0; c < ncpu; c++) t += sc[c];
    printf("%s %" PRIu64 "\n", STAT_NAMES[i], t);
  }
  if (bfd >= 0) close(bfd);
  if (sfd >= 0) close(sfd);
  if (cfd >= 0) close(cfd);
  free(pc);
  free(sc);
  return rc;
}

static int usage(void) {
  fputs("usage: lbctl attach|detach|status|config|set|redirect|lookup|forget|flows|expire|stats PINDIR ...\n"
        "  (see the comment at the top of native/bpf/lbctl.c)\n", stderr);
  return -EINVAL;
}

static int dispatch(int argc, char **argv) {
  if (argc < 3) return usage();
  const char *cmd = argv[1];
  pindir = argv[2];
  if (!*pindir || strlen(pindir) >= PATH_MAX - 32) return fail(EINVAL, "bad pin directory");
  int rc = check_bpffs();
  if (rc) return rc;
  char **a = argv + 3;
  int n = argc - 3;
  if (!strcmp(cmd, "attach") && n == 4) return cmd_attach(a);
  if (!strcmp(cmd, "detach") && n == 0) return cmd_detach();
  if (!strcmp(cmd, "status") && n == 0) return cmd_status();
  if (!strcmp(cmd, "config") && n == 2) return cmd_config(a);
  if (!strcmp(cmd, "set") && n == 1) return cmd_set(a[0]);
  if (!strcmp(cmd, "redirect") && n == 5) return cmd_redirect(a);
  if (!strcmp(cmd, "lookup") && n == 4) return cmd_lookup(a, 0);
  if (!strcmp(cmd, "forget") && n == 4) return cmd_lookup(a, 1);
  if (!strcmp(cmd, "flows") && n == 0) return walk_flows(0);
  if (!strcmp(cmd, "stats") && n == 0) return cmd_stats();
  if (!strcmp(cmd, "expire") && n == 1) {
    uint64_t idle;
    if (parse_u64(a[0], UINT64_MAX, &idle) || !idle) return fail(EINVAL, "idle time must be a positive number of ns");
    return walk_flows(idle);
  }
  return usage();
}

static int warnings_only(enum libbpf_print_level level, const char *fmt, va_list args) {
  return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

int main(int argc, char **argv) {
  libbpf_set_print(warnings_only);
  int rc = dispatch(argc, argv);
  fflush(stdout);
  /* The errno is the exit status, so lb.ts can name it (ENOENT, EBUSY, ...). */
  return rc < 0 ? (-rc > 255 ? 1 : -rc) : 0;
}
