/* The xdp: backend against real kernels: two network namespaces joined by a veth pair (two queues
 * each). This process moves into namespace A and opens xdp:va?ip=10.77.0.10; a child in namespace B
 * pings 10.77.0.10 (answered here, from frames the steering program sent to our sockets, including
 * the kernel's ARP request) and 10.77.0.2, the kernel's own address on va, which must keep working
 * through XDP_PASS without a single frame of it reaching us. Also: every rx queue gets a socket, a
 * program left by a crashed run is detached, and open errors are clear sentences.
 * Skips (and passes) only when not root or built without libxdp. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>

#include "dev/dev.h"
#include "t.h"

#define NS_A "cpbt_xsk_a"
#define NS_B "cpbt_xsk_b"
#define STACK_IP "10.77.0.10"
#define KERNEL_A_IP "10.77.0.2"
#define PEER_IP "10.77.0.1"

static int home_ns = -1;

static int sh(const char *cmd) {
  int rc = system(cmd);
  if (rc) fprintf(stderr, "  command failed (%d): %s\n", rc, cmd);
  return rc;
}

static void teardown(void) {
  if (home_ns >= 0) {
    setns(home_ns, CLONE_NEWNET);
    close(home_ns);
    home_ns = -1;
  }
  int rc = system("ip netns del " NS_A " 2>/dev/null; ip netns del " NS_B " 2>/dev/null");
  (void)rc;
}

static bool setup(void) {
  teardown(); /* leftovers of a crashed run */
  const char *cmds[] = {
      "ip netns add " NS_A,
      "ip netns add " NS_B,
      "ip -n " NS_A " link add va numtxqueues 2 numrxqueues 2 type veth peer name vb numtxqueues 2 "
      "numrxqueues 2 netns " NS_B,
      "ip -n " NS_A " addr add " KERNEL_A_IP "/24 dev va",
      "ip -n " NS_B " addr add " PEER_IP "/24 dev vb",
      "ip -n " NS_A " link set va up",
      "ip -n " NS_B " link set vb up",
      "ip netns exec " NS_B " sh -c 'echo 1 > /sys/class/net/vb/queues/tx-0/xps_cpus && "
      "echo 2 > /sys/class/net/vb/queues/tx-1/xps_cpus'",
  };
  for (size_t i = 0; i < CPB_ARRAY_LEN(cmds); i++)
    if (sh(cmds[i])) return false;
  /* Full checksums in what the kernel sends, no aggregation: the frames we see are the frames on the wire. */
  int rc = system("ip netns exec " NS_A " ethtool -K va tx off rxvlan off txvlan off gro off gso off tso off >/dev/null 2>&1;"
                  "ip netns exec " NS_B " ethtool -K vb tx off rxvlan off txvlan off gro off gso off tso off >/dev/null 2>&1");
  (void)rc;
  home_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  int a = open("/var/run/netns/" NS_A, O_RDONLY | O_CLOEXEC);
  bool ok = home_ns >= 0 && a >= 0 && setns(a, CLONE_NEWNET) == 0;
  if (a >= 0) close(a);
  return ok;
}

/* Points CAPYBARA_BPF_DIR at <repo>/build (this binary is <repo>/test/c/bin/...) and builds the
 * program there when it is missing. */
static void find_bpf_dir(void) {
  if (getenv("CAPYBARA_BPF_DIR")) return;
  char exe[PATH_MAX], dir[PATH_MAX + 64], cmd[PATH_MAX + 128];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return;
  exe[n] = 0;
  *strrchr(exe, '/') = 0;
  snprintf(dir, sizeof(dir), "%s/../../../build", exe);
  setenv("CAPYBARA_BPF_DIR", dir, 1);
  snprintf(cmd, sizeof(cmd), "%s/steer.bpf.o", dir);
  if (access(cmd, R_OK)) {
    snprintf(cmd, sizeof(cmd), "make -s -C %s/../../../native/bpf", exe);
    sh(cmd);
  }
}

/* ---- a tiny responder: ARP replies and ICMP echo replies, built here by hand ------------------- */

static uint16_t t_csum(const uint8_t *p, size_t len) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < len; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (len & 1) s += (uint32_t)p[len - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

static uint32_t ip_of(const char *s) {
  struct in_addr a;
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

struct seen {
  int arp_answered, echo_answered, leaked, other;
};

/* Builds the answer to `in` into out; returns its length, or 0 when the frame needs none. */
static uint32_t answer(const uint8_t *in, uint32_t len, const uint8_t mac[6], uint8_t *out, struct seen *s) {
  const uint32_t me = ip_of(STACK_IP), kernel = ip_of(KERNEL_A_IP);
  if (len < 14) return s->other++, 0;
  uint16_t type = cpb_get_be16(in + 12);
  if (type == 0x0806 && len >= 42) {
    uint32_t tpa = cpb_get_be32(in + 38);
    if (tpa == kernel) return s->leaked++, 0;
    if (tpa != me || cpb_get_be16(in + 20) != 1) return s->other++, 0;
    memcpy(out, in + 6, 6);
    memcpy(out + 6, mac, 6);
    memcpy(out + 12, in + 12, 8); /* ethertype, htype, ptype, hlen, plen */
    cpb_put_be16(out + 20, 2);
    memcpy(out + 22, mac, 6);
    cpb_put_be32(out + 28, me);
    memcpy(out + 32, in + 22, 10); /* requester's sha + spa become tha + tpa */
    s->arp_answered++;
    return 42;
  }
  if (type != 0x0800 || len < 34) return s->other++, 0;
  const uint8_t *ip = in + 14;
  uint32_t ihl = (ip[0] & 15u) * 4, tot = cpb_get_be16(ip + 2), dst = cpb_get_be32(ip + 16);
  if (dst == kernel) return s->leaked++, 0;
  if (dst != me || ip[9] != 1 || ihl < 20 || tot < ihl + 8 || 14 + tot > len || ip[ihl] != 8) return s->other++, 0;
  memcpy(out, in + 6, 6);
  memcpy(out + 6, mac, 6);
  memcpy(out + 12, in + 12, 2 + tot);
  uint8_t *oip = out + 14, *icmp = oip + ihl;
  memcpy(oip + 12, ip + 16, 4);
  memcpy(oip + 16, ip + 12, 4);
  oip[8] = 64;
  oip[10] = oip[11] = 0;
  cpb_put_be16(oip + 10, t_csum(oip, ihl));
  icmp[0] = 0;
  icmp[2] = icmp[3] = 0;
  cpb_put_be16(icmp + 2, t_csum(icmp, tot - ihl));
  s->echo_answered++;
  return 14 + tot;
}

/* ---- the kernel side: a pinger in namespace B ------------------------------------------------- */

static int ping_n(const char *dst, int count) {
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (s < 0) return 0;
  struct sockaddr_in to = {.sin_family = AF_INET};
  inet_pton(AF_INET, dst, &to.sin_addr);
  uint16_t id = (uint16_t)getpid();
  int replies = 0;
  for (int seq = 1; seq <= count; seq++) {
    uint8_t req[40] = {8, 0, 0, 0};
    cpb_put_be16(req + 4, id);
    cpb_put_be16(req + 6, (uint16_t)seq);
    for (int i = 8; i < 40; i++) req[i] = (uint8_t)i;
    cpb_put_be16(req + 2, t_csum(req, sizeof(req)));
    if (sendto(s, req, sizeof(req), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(req)) continue;
    for (int waits = 0; waits < 30; waits++) { /* up to 3 s per echo: ARP may come first */
      struct pollfd p = {s, POLLIN, 0};
      if (poll(&p, 1, 100) != 1) continue;
      uint8_t buf[256];
      ssize_t n = recv(s, buf, sizeof(buf), 0);
      if (n < 28) continue;
      uint32_t ihl = (buf[0] & 15u) * 4;
      if ((size_t)n < ihl + 8 || memcmp(buf + 12, &to.sin_addr, 4)) continue;
      const uint8_t *icmp = buf + ihl;
      if (icmp[0] == 0 && cpb_get_be16(icmp + 4) == id && cpb_get_be16(icmp + 6) == seq &&
          t_csum(icmp, (size_t)n - ihl) == 0) {
        replies++;
        break;
      }
    }
  }
  close(s);
  return replies;
}

/* One round of pings from a given CPU. XPS on vb maps CPU i to tx queue i, and veth hands a frame
 * sent on vb's tx queue i to va's rx queue i: so the CPU picks the rx queue the frame arrives on. */
struct round {
  int cpu; /* -1: any */
  const char *dst;
  int count;
};

/* Forks a child in namespace B that runs the rounds; its exit status has bit i set when round i got
 * every reply. */
static pid_t spawn_pinger(const struct round *r, int n) {
  pid_t pid = fork();
  if (pid) return pid;
  int b = open("/var/run/netns/" NS_B, O_RDONLY);
  if (b < 0 || setns(b, CLONE_NEWNET)) _exit(100);
  int bits = 0;
  for (int i = 0; i < n; i++) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (r[i].cpu >= 0) CPU_SET(r[i].cpu, &set);
    else for (int c = 0; c < 2; c++) CPU_SET(c, &set);
    if (sched_setaffinity(0, sizeof(set), &set)) continue;
    if (ping_n(r[i].dst, r[i].count) == r[i].count) bits |= 1 << i;
  }
  _exit(bits);
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Serves ARP and echo requests on the devices until the pinger exits; returns its exit status. */
static int serve_until_done(struct cpb_dev **devs, int ndev, pid_t child, struct seen *s) {
  static uint8_t out[CPB_BURST][CPB_FRAME_MAX];
  uint8_t mac[6];
  struct cpb_frame in[CPB_BURST], replies[CPB_BURST];
  double give_up = mono_s() + 60; /* a liveness bound only; the child has its own timeouts */
  int status = -1;
  for (int turn = 0; mono_s() < give_up; turn++) {
    struct cpb_dev *d = devs[turn % ndev];
    d->ops->get_mac(d, mac);
    int n = d->ops->rx_burst(d, in, CPB_BURST, 0), k = 0;
    for (int i = 0; i < n; i++) {
      uint32_t len = answer(in[i].data, in[i].len, mac, out[k], s);
      if (len) replies[k] = (struct cpb_frame){out[k], len, 0}, k++;
    }
    d->ops->rx_release(d, in, n);
    if (k) CHECK_EQ(d->ops->tx_burst(d, replies, k, 0), k);
    if (n == 0) {
      if (waitpid(child, &status, WNOHANG) == child) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      struct pollfd p[4];
      for (int i = 0; i < ndev && i < 4; i++) p[i] = (struct pollfd){devs[i]->ops->wait_fd(devs[i]), POLLIN, 0};
      poll(p, (nfds_t)CPB_MIN(ndev, 4), 20);
    }
  }
  kill(child, SIGKILL);
  waitpid(child, &status, 0);
  return -1;
}

static int count_lines(const char *cmd) {
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  int n = 0;
  char line[512];
  while (fgets(line, sizeof(line), f)) n++;
  pclose(f);
  return n;
}

static int xdp_attached(void) { return count_lines("ip link show dev va | grep prog/xdp"); }

static struct cpb_dev *open_xdp(const char *uri, int *rc, char *err, size_t errlen) {
  struct cpb_dev *d = NULL;
  err[0] = 0;
  *rc = cpb_dev_open(&d, uri, err, errlen);
  return *rc ? NULL : d;
}

static void ping_through_xdp(void) {
  char err[512];
  int rc;
  struct cpb_dev *d = open_xdp("xdp:va?ip=" STACK_IP, &rc, err, sizeof(err));
  if (rc) fprintf(stderr, "  open: %d %s\n", rc, err);
  REQUIRE(d);
  CHECK_EQ(xdp_attached(), 1);
  uint8_t mac[6];
  d->ops->get_mac(d, mac);
  CHECK((mac[0] & 1) == 0 && memcmp(mac, "\0\0\0\0\0\0", 6));

  struct seen s = {0};
  const struct round rounds[] = {{0, STACK_IP, 2}, {1, STACK_IP, 2}, {-1, KERNEL_A_IP, 3}};
  int result = serve_until_done(&d, 1, spawn_pinger(rounds, 3), &s);
  CHECK(result >= 0 && (result & 1)); /* pings arriving on rx queue 0 answered */
  CHECK(result >= 0 && (result & 2)); /* and on rx queue 1: every queue has a socket */
  CHECK(result >= 0 && (result & 4)); /* the kernel's own address on va still answers */
  CHECK(s.arp_answered >= 1);
  CHECK(s.echo_answered >= 4);
  CHECK_EQ(s.leaked, 0); /* not one frame for the kernel's address came to us */
  CHECK_EQ(s.other, 0);
  struct cpb_dev_stats st;
  d->ops->get_stats(d, &st);
  CHECK(st.rx_frames >= 4 && st.tx_frames >= 4);
  CHECK(st.wakeups >= 1); /* copy mode: TX needs a kick */
  printf("  xdp: %d ARP + %d echo answered, rx %llu tx %llu wakeups %llu\n", s.arp_answered, s.echo_answered,
         (unsigned long long)st.rx_frames, (unsigned long long)st.tx_frames, (unsigned long long)st.wakeups);
  d->ops->close(d);
  CHECK_EQ(xdp_attached(), 0); /* detached on close */
}

static void single_queue_and_stale_program(void) {
  char err[512];
  int rc;
  struct cpb_dev *d = open_xdp("xdp:va@1?ip=" STACK_IP, &rc, err, sizeof(err));
  if (rc) fprintf(stderr, "  open @1: %d %s\n", rc, err);
  REQUIRE(d);
  /* Only queue 1 is ours now: what arrives on queue 0 goes to the kernel, which does not answer. */
  struct seen s = {0};
  const struct round rounds[] = {{1, STACK_IP, 2}, {0, STACK_IP, 1}};
  int result = serve_until_done(&d, 1, spawn_pinger(rounds, 2), &s);
  CHECK_EQ(result, 1);

  /* A second device on queue 0 shares the attached program; each answers its own queue. */
  struct cpb_dev *d0 = open_xdp("xdp:va@0?ip=" STACK_IP, &rc, err, sizeof(err));
  if (rc) fprintf(stderr, "  open @0: %d %s\n", rc, err);
  REQUIRE(d0);
  CHECK_EQ(xdp_attached(), 1);
  CHECK(open_xdp("xdp:va@0?ip=10.77.0.11", &rc, err, sizeof(err)) == NULL);
  CHECK_EQ(rc, -EBUSY); /* one stack address per interface */
  struct cpb_dev *both[2] = {d, d0};
  const struct round two[] = {{1, STACK_IP, 2}, {0, STACK_IP, 2}};
  result = serve_until_done(both, 2, spawn_pinger(two, 2), &s);
  CHECK_EQ(result, 3);
  struct cpb_dev_stats st0, st1;
  d0->ops->get_stats(d0, &st0);
  d->ops->get_stats(d, &st1);
  CHECK(st0.rx_frames >= 2 && st1.rx_frames >= 2);
  d->ops->close(d);
  CHECK_EQ(xdp_attached(), 1); /* still in use by d0 */
  d0->ops->close(d0);
  CHECK_EQ(xdp_attached(), 0);
  CHECK_EQ(open_xdp("xdp:va@5?ip=" STACK_IP, &rc, err, sizeof(err)) == NULL, 1);
  CHECK_EQ(rc, -EINVAL);

  /* A run that dies with its device open leaves the program attached... */
  pid_t pid = fork();
  if (pid == 0) {
    struct cpb_dev *x = NULL;
    _exit(cpb_dev_open(&x, "xdp:va?ip=" STACK_IP, err, sizeof(err)) == 0 ? 0 : 1);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(xdp_attached(), 1);
  /* ...and the next open recognises it as ours and abandoned, and takes its place. */
  d = open_xdp("xdp:va?ip=" STACK_IP, &rc, err, sizeof(err));
  if (rc) fprintf(stderr, "  reopen: %d %s\n", rc, err);
  REQUIRE(d);
  d->ops->close(d);
  CHECK_EQ(xdp_attached(), 0);
}

/* ---- TX under load: more frames than the UMEM has TX buffers, counted by a packet socket on vb -- */

#define TX_MANY 5000u
#define TX_LEN 200u

static pid_t spawn_counter(int pipe_w) {
  pid_t pid = fork();
  if (pid) return pid;
  int b = open("/var/run/netns/" NS_B, O_RDONLY);
  if (b < 0 || setns(b, CLONE_NEWNET)) _exit(100);
  int s = socket(AF_PACKET, SOCK_RAW, htons(0x88b5));
  int big = 8 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(0x88b5), .sll_ifindex = (int)if_nametoindex("vb")};
  uint32_t res[2] = {0, 0}; /* frames intact, frames damaged or out of order */
  if (s < 0 || bind(s, (struct sockaddr *)&sll, sizeof(sll))) _exit(101);
  if (write(pipe_w, res, 1) != 1) _exit(102); /* ready */
  uint8_t buf[2048];
  while (res[0] + res[1] < TX_MANY) {
    struct pollfd p = {s, POLLIN, 0};
    if (poll(&p, 1, 2000) != 1) break; /* the sender is done */
    ssize_t n = recv(s, buf, sizeof(buf), 0);
    bool ok = n == TX_LEN && cpb_get_be32(buf + 14) == res[0] + res[1];
    for (ssize_t i = 18; ok && i < n; i++) ok = buf[i] == (uint8_t)(i + buf[17]);
    res[ok ? 0 : 1]++;
  }
  _exit(write(pipe_w, res, sizeof(res)) == sizeof(res) ? 0 : 103);
}

static void tx_under_load(void) {
  char err[512];
  int rc, fds[2];
  struct cpb_dev *d = open_xdp("xdp:va?ip=" STACK_IP, &rc, err, sizeof(err));
  if (rc) fprintf(stderr, "  open: %d %s\n", rc, err);
  REQUIRE(d);
  REQUIRE(pipe(fds) == 0);
  pid_t child = spawn_counter(fds[1]);
  uint8_t ready = 0;
  REQUIRE(read(fds[0], &ready, 1) == 1);
  static uint8_t bufs[CPB_BURST][TX_LEN];
  struct cpb_frame out[CPB_BURST];
  uint32_t sent = 0, short_bursts = 0;
  double give_up = mono_s() + 30;
  while (sent < TX_MANY && mono_s() < give_up) {
    int k = 0;
    for (; k < CPB_BURST && sent + (uint32_t)k < TX_MANY; k++) {
      uint8_t *b = bufs[k];
      memset(b, 0xff, 6);
      d->ops->get_mac(d, b + 6);
      b[12] = 0x88, b[13] = 0xb5;
      cpb_put_be32(b + 14, sent + (uint32_t)k);
      for (uint32_t i = 18; i < TX_LEN; i++) b[i] = (uint8_t)(i + b[17]);
      out[k] = (struct cpb_frame){b, TX_LEN, 0};
    }
    int n = d->ops->tx_burst(d, out, k, 0);
    CHECK(n >= 0 && n <= k);
    if (n < k) short_bursts++, usleep(100);
    sent += (uint32_t)(n > 0 ? n : 0);
  }
  uint32_t res[2] = {0, 0};
  CHECK(read(fds[0], res, sizeof(res)) == sizeof(res));
  int status;
  waitpid(child, &status, 0);
  close(fds[0]);
  close(fds[1]);
  struct cpb_dev_stats st;
  d->ops->get_stats(d, &st);
  printf("  xdp tx: %u sent, %u arrived intact, %u damaged, %u short bursts, %llu wakeups\n", sent, res[0], res[1],
         short_bursts, (unsigned long long)st.wakeups);
  CHECK_EQ(sent, TX_MANY);
  CHECK_EQ(res[0], TX_MANY); /* every frame, in order, byte for byte */
  CHECK_EQ(res[1], 0);
  CHECK_EQ(st.tx_frames, TX_MANY);
  d->ops->close(d);
}

static void errors_are_sentences(void) {
  char err[512];
  int rc;
  CHECK(open_xdp("xdp:eth9?ip=" STACK_IP, &rc, err, sizeof(err)) == NULL);
  CHECK_EQ(rc, -ENODEV);
  CHECK(strstr(err, "no interface eth9") != NULL);
  CHECK(open_xdp("xdp:va", &rc, err, sizeof(err)) == NULL);
  CHECK_EQ(rc, -EINVAL);
  CHECK(strstr(err, "ip=") != NULL);
  char *saved = strdup(getenv("CAPYBARA_BPF_DIR") ? getenv("CAPYBARA_BPF_DIR") : "");
  setenv("CAPYBARA_BPF_DIR", "/nonexistent/cpb", 1);
  CHECK(open_xdp("xdp:va?ip=" STACK_IP, &rc, err, sizeof(err)) == NULL);
  CHECK_EQ(rc, -ENOENT);
  CHECK(strstr(err, "/nonexistent/cpb/steer.bpf.o") != NULL);
  setenv("CAPYBARA_BPF_DIR", saved, 1);
  free(saved);
  /* Without privileges: a child that gives up root. */
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(65534) || setuid(65534)) _exit(2);
    struct cpb_dev *x = NULL;
    char e[512] = "";
    int r = cpb_dev_open(&x, "xdp:va?ip=" STACK_IP, e, sizeof(e));
    _exit(r == -EPERM && strstr(e, "needs root") ? 0 : 1);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(xdp_attached(), 0);
}

TEST(xdp_steers_stack_frames_and_passes_the_rest) {
#ifndef CPB_HAVE_XDP
  printf("  skip: built without libxdp\n");
  return;
#else
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    printf("  skip: needs two CPUs to steer pings onto both rx queues\n");
    return;
  }
  if (geteuid() != 0) {
    printf("  skip: not root (AF_XDP and netns need CAP_NET_ADMIN, CAP_BPF)\n");
    return;
  }
  find_bpf_dir();
  if (!setup()) {
    teardown();
    REQUIRE(!"netns/veth setup failed");
  }
  ping_through_xdp();
  single_queue_and_stale_program();
  tx_under_load();
  errors_are_sentences();
  teardown();
#endif
}
