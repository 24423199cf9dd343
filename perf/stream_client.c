/* The migration benchmark's client in C, on the kernel TCP stack in the testbed's `client` namespace:
 *   stream_client HOST PORT MAX_SECONDS [GAP_US]
 * A ping-pong of 64-byte numbered messages (one in flight), every echo checked byte by byte, as the Node
 * client runtime/demo/stream-client.ts does, without a garbage collector or an event loop between two
 * echoes: the Node client itself pauses a millisecond now and then, which is as long as what is measured.
 *
 * Every echo's arrival (CLOCK_MONOTONIC, µs, the clock the runtimes and the benchmark read too) is kept.
 * The benchmark writes a line "W T0 T1" on stdin for each migration (when it asked for it, when the source
 * answered). On SIGTERM, or when stdin ends, the client stops and prints one JSON line: the counts, the
 * pauses longer than GAP_US ([start, length]) and, per window, the longest interval between two echoes
 * that overlaps it — the client-visible blackout of that migration, to the microsecond. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig, stop = 1; }

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void message(uint32_t i, uint8_t *b) {
  memcpy(b, &i, 4); /* little-endian on every machine this runs on, as the Node client writes it */
  for (int k = 4; k < MSG; k++) b[k] = (uint8_t)((i * 31 + (uint32_t)k) & 0xff);
}

struct vec {
  uint64_t *v;
  size_t n, cap;
};

static int push(struct vec *a, uint64_t x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 1u << 16;
    uint64_t *v = realloc(a->v, cap * sizeof(*v));
    if (!v) return -1;
    a->v = v, a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

/* The longest interval between consecutive echoes that overlaps [t0, t1]; 0 when none does. *at: where it
 * began, relative to t0 (negative: before). */
static uint64_t window_max(const struct vec *echo, uint64_t t0, uint64_t t1, int64_t *at) {
  size_t lo = 0, hi = echo->n;
  while (lo < hi) { /* first echo at or after t0 */
    size_t mid = (lo + hi) / 2;
    if (echo->v[mid] < t0) lo = mid + 1;
    else hi = mid;
  }
  uint64_t worst = 0;
  *at = 0;
  for (size_t i = lo ? lo - 1 : 0; i + 1 < echo->n && echo->v[i] <= t1; i++) {
    uint64_t d = echo->v[i + 1] - echo->v[i];
    if (d > worst) worst = d, *at = (int64_t)echo->v[i] - (int64_t)t0;
  }
  return worst;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: stream_client HOST PORT MAX_SECONDS [GAP_US]\n");
    return 2;
  }
  uint64_t gap_us = argc > 4 ? strtoull(argv[4], NULL, 10) : 500;
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
    fprintf(stderr, "stream_client: bad address %s\n", argv[1]);
    return 2;
  }
  const char *error = NULL;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) error = "connect failed";
  uint64_t start = now_us(), stop_at = start + strtoull(argv[3], NULL, 10) * 1000000u;
  struct vec echo = {0}, gaps = {0}, win = {0};
  uint64_t sent = 0, echoed = 0, bad = 0, last = start;
  uint8_t out[MSG], in[MSG], want[MSG];
  size_t have = 0;
  char line[128];
  size_t line_len = 0;
  bool stdin_open = true;
  if (!error) {
    message((uint32_t)sent++, out);
    if (write(fd, out, MSG) != MSG) error = "write failed";
  }
  while (!error && !stop && now_us() < stop_at) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
    int r = poll(p, 2, 100);
    if (r < 0 && errno != EINTR) error = "poll failed";
    if (r <= 0) continue;
    if (p[1].revents) {
      char buf[512];
      ssize_t n = read(0, buf, sizeof(buf));
      if (n <= 0) {
        stdin_open = false;
        break; /* the benchmark is done */
      }
      for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
          if (line_len < sizeof(line) - 1) line[line_len++] = buf[i];
          continue;
        }
        line[line_len] = 0;
        line_len = 0;
        unsigned long long t0, t1;
        if (sscanf(line, "W %llu %llu", &t0, &t1) == 2 && (push(&win, t0) || push(&win, t1))) error = "out of memory";
      }
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ssize_t n = read(fd, in + have, MSG - have);
    if (n == 0) error = "connection closed by the server";
    if (n < 0 && errno != EINTR && errno != EAGAIN) error = errno == ECONNRESET ? "connection reset" : "read failed";
    if (n <= 0) continue;
    have += (size_t)n;
    if (have < MSG) continue;
    have = 0;
    uint64_t t = now_us();
    message((uint32_t)echoed, want);
    if (memcmp(in, want, MSG) != 0) bad++;
    echoed++;
    if (push(&echo, t)) error = "out of memory";
    if (t - last > gap_us && (push(&gaps, last) || push(&gaps, t - last))) error = "out of memory";
    last = t;
    message((uint32_t)sent++, out);
    if (write(fd, out, MSG) != MSG) error = "write failed";
  }
  close(fd);
  printf("{\"sent\":%llu,\"echoed\":%llu,\"bytes\":%llu,\"bad\":%llu,\"error\":", (unsigned long long)sent,
         (unsigned long long)echoed, (unsigned long long)echoed * MSG, (unsigned long long)bad);
  if (error) printf("\"%s\"", error);
  else printf("null");
  printf(",\"gaps\":[");
  for (size_t i = 0; i + 1 < gaps.n; i += 2) printf("%s[%llu,%llu]", i ? "," : "", (unsigned long long)gaps.v[i], (unsigned long long)gaps.v[i + 1]);
  printf("],\"windows\":[");
  int64_t *at = calloc(win.n / 2 + 1, sizeof(*at));
  for (size_t i = 0; i + 1 < win.n; i += 2)
    printf("%s%llu", i ? "," : "", (unsigned long long)window_max(&echo, win.v[i], win.v[i + 1], at ? &at[i / 2] : &(int64_t){0}));
  printf("],\"windowsAt\":[");
  for (size_t i = 0; at && i + 1 < win.n; i += 2) printf("%s%lld", i ? "," : "", (long long)at[i / 2]);
  printf("]}\n");
  free(at);
  free(echo.v), free(gaps.v), free(win.v);
  return 0;
}
