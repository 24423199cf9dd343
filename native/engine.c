/* Engine thread. Locking: one mutex per engine guards the stack, TCP and the device's TX side; the
 * engine thread holds it for one burst at a time (microseconds), the application thread for one call.
 * This replaces DESIGN's lock-free command rings for now: with sends executed directly on the caller's
 * thread there is no command to queue, and a single lock is easy to prove correct.
 * Sleeping: after spin_us without work the thread sleeps in ppoll() on the device fd and a wake eventfd
 * until the next timer; `sleeping`/`sleep_until` are set under the lock so leave() can tell whether the
 * engine must be woken to honour a new, earlier deadline. The RX rings are read without the lock (they are
 * the engine thread's alone); the lock is taken only for a round of work. */
#include "engine.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct cpb_engine_trace {
  _Atomic cpb_time_t woke_at, rx_at, notify_at;
};

struct cpb_engine {
  pthread_t thread;
  pthread_mutex_t lock;
  atomic_bool stop;
  bool thread_started;
  atomic_bool sleeping; /* set under the lock; cleared by the engine alone once awake */
  cpb_time_t sleep_until;
  _Atomic cpb_time_t last_app; /* last application call: replies follow requests, keep spinning for them */
  _Atomic cpb_time_t next_due; /* earliest timer, as of the last round */
  atomic_bool kicked;          /* an application call may have armed an earlier timer: run a round */
  struct cpb_engine_trace trace; /* when the last events for the application came in (migration tracing) */
  int wake_fd;
  struct cpb_arena arena;
  struct cpb_dev *dev;
  struct cpb_tcp *tcp;
  cpb_notify_fn notify;
  void *notify_ctx;
  _Atomic uint32_t spin_us;
  uint32_t max_flows;
  struct cpb_native *native; /* NULL until the first native listener: then every event passes through it */
  struct cpb_lane *lane;     /* native flows' migrations (mig/lane.h) */
  struct cpb_lane_js *lane_js; /* JS-served flows on the lane: ports taking them, records waiting for JS */
  uint64_t lane_js_export;     /* the JS flow being offered right now (cpb_engine_lane_migrate_js) */
  struct cpb_stack stack; /* large (TX buffers): last */
};

cpb_time_t cpb_clock_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (cpb_time_t)ts.tv_sec * CPB_US_PER_S + (cpb_time_t)ts.tv_nsec / 1000;
}

void cpb_engine_config_defaults(struct cpb_engine_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  tcp_config_defaults(&cfg->tcp);
  cfg->stack.mtu = 1500;
  cfg->arena.slots = 4096;
  cfg->arena.chunks = 32768; /* 64 MiB of data */
  cfg->arena.try_hugepages = true;
  cfg->spin_us = 50;
}

static void flush_to_dev(void *ctx, struct cpb_frame *frames, int n) {
  struct cpb_engine *e = ctx;
  int sent = e->dev->ops->tx_burst(e->dev, frames, n, e->stack.now);
  if (sent < n) e->stack.stats.frames_dropped_tx += (uint64_t)(n - sent);
}

static void wake(struct cpb_engine *e) {
  uint64_t one = 1;
  ssize_t r = write(e->wake_fd, &one, sizeof(one));
  (void)r; /* EAGAIN means a wake is already pending */
}

static void sleep_until(struct cpb_engine *e, cpb_time_t deadline, cpb_time_t now) {
  struct pollfd fds[2] = {{.fd = e->wake_fd, .events = POLLIN}, {.fd = e->dev->ops->wait_fd(e->dev), .events = POLLIN}};
  int nfds = fds[1].fd >= 0 ? 2 : 1;
  cpb_time_t wait = deadline > now ? deadline - now : 0;
  if (nfds == 1 && wait > 100) wait = 100; /* no fd to sleep on: nap briefly and poll again */
  if (wait > CPB_US_PER_S) wait = CPB_US_PER_S;
  struct timespec ts = {.tv_sec = (time_t)(wait / CPB_US_PER_S), .tv_nsec = (long)(wait % CPB_US_PER_S) * 1000};
  if (ppoll(fds, (nfds_t)nfds, &ts, NULL) > 0 && (fds[0].revents & POLLIN)) {
    uint64_t v;
    ssize_t r = read(e->wake_fd, &v, sizeof(v));
    (void)r;
  }
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Events for the application: with native apps, the ones they left (native/apps/native.h). */
static bool app_has_events(const struct cpb_engine *e) {
  if (cpb_lane_has_events(e->lane)) return true;
  return e->native ? cpb_native_has_events(e->native, e->tcp) : tcp_has_events(e->tcp);
}

/* Takes the lock for one round of work: input, native apps, timers, output. Returns whether events are
 * pending for the application. Native apps answer between input and poll, so a reply leaves in the same
 * TX burst as the ACK of its request. */
static bool run_round(struct cpb_engine *e, struct cpb_frame *rx, int n) {
  pthread_mutex_lock(&e->lock);
  e->sleeping = false;
  cpb_time_t now = cpb_clock_now();
  e->stack.now = now;
  for (int i = 0; i < n; i++) cpb_stack_input(&e->stack, rx[i].data, rx[i].len, now);
  if (n > 0) e->dev->ops->rx_release(e->dev, rx, n);
  atomic_store_explicit(&e->kicked, false, memory_order_relaxed);
  if (e->native) cpb_native_round(e->native, e->tcp, now);
  cpb_time_t next = cpb_stack_poll(&e->stack, now);
  /* Timers may have raised native events (a reset, a timeout): handle them now, not on the JS thread. */
  if (e->native && cpb_native_round(e->native, e->tcp, now) > 0) next = cpb_stack_poll(&e->stack, now);
  atomic_store_explicit(&e->next_due, next, memory_order_relaxed);
  bool events = app_has_events(e);
  pthread_mutex_unlock(&e->lock);
  return events;
}

/* Decides to sleep under the lock, so an application call either sees `sleeping` (and wakes us for an
 * earlier timer) or has set `kicked` before we looked. */
static bool go_to_sleep(struct cpb_engine *e, cpb_time_t dev_next, cpb_time_t *until) {
  pthread_mutex_lock(&e->lock);
  bool ok = !atomic_load_explicit(&e->kicked, memory_order_relaxed);
  if (ok) {
    cpb_time_t next = atomic_load_explicit(&e->next_due, memory_order_relaxed);
    if (dev_next < next) next = dev_next;
    e->sleeping = true;
    e->sleep_until = next;
    *until = next;
  }
  pthread_mutex_unlock(&e->lock);
  return ok;
}

/* The RX rings belong to this thread alone (TX is shared, under the lock), so the engine looks at them
 * without the lock and takes it only when there is work. A spinning engine therefore never keeps the
 * application thread waiting: with a lock held across the spin, an unfair mutex let the engine re-take it
 * for milliseconds while a send from JS waited. */
static void *engine_main(void *arg) {
  struct cpb_engine *e = arg;
  struct cpb_frame rx[CPB_BURST];
  cpb_time_t last_work = cpb_clock_now();
  while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
    cpb_time_t now = cpb_clock_now();
    int n = e->dev->ops->rx_burst(e->dev, rx, CPB_BURST, now);
    cpb_time_t dev_next = e->dev->ops->next_deadline(e->dev);
    bool work = n > 0 || dev_next <= now || atomic_load_explicit(&e->kicked, memory_order_relaxed) ||
                now >= atomic_load_explicit(&e->next_due, memory_order_relaxed);
    if (work) {
      if (run_round(e, rx, n)) {
        atomic_store_explicit(&e->trace.rx_at, now, memory_order_relaxed);
        atomic_store_explicit(&e->trace.notify_at, cpb_clock_now(), memory_order_relaxed);
        e->notify(e->notify_ctx);
        /* The application thread has work now and its answer leaves on its own thread: spinning here
         * would only take the CPU it needs (on 2 cores, p50 ping-pong through JS 182 -> 95 us). */
        last_work = 0;
      } else if (n > 0) {
        last_work = now;
      }
      continue;
    }
    cpb_time_t app = atomic_load_explicit(&e->last_app, memory_order_relaxed);
    if (app > last_work) last_work = app;
    /* Not while a lane migration waits for its answer either: on two cores, an engine spinning for the
     * answer takes the core the target's engine needs to wake up and take the offer (bench, 200 moves:
     * offer at the target p90 1.97 ms spinning, 0.20 ms sleeping). */
    if (now - last_work < atomic_load_explicit(&e->spin_us, memory_order_relaxed)) {
      cpu_relax();
      continue;
    }
    cpb_time_t until;
    if (!go_to_sleep(e, dev_next, &until)) continue;
    sleep_until(e, until, now);
    atomic_store(&e->sleeping, false);
    last_work = cpb_clock_now(); /* spin again briefly after every wake-up: replies tend to follow */
    atomic_store_explicit(&e->trace.woke_at, last_work, memory_order_relaxed);
  }
  return NULL;
}

cpb_time_t cpb_engine_enter(struct cpb_engine *e) {
  pthread_mutex_lock(&e->lock);
  cpb_time_t now = cpb_clock_now();
  e->stack.now = now;
  return now;
}

void cpb_engine_leave(struct cpb_engine *e) {
  /* TCP queues what a call produced (data, window updates); send it from this thread now, without
   * waiting for the engine thread to notice. */
  cpb_time_t next = cpb_stack_poll(&e->stack, e->stack.now);
  atomic_store_explicit(&e->last_app, e->stack.now, memory_order_relaxed);
  bool must_wake = false;
  /* The engine recomputes its deadline in its next round (it keeps next_due only from its own rounds). */
  atomic_store_explicit(&e->kicked, true, memory_order_relaxed);
  if (e->sleeping && next < e->sleep_until) {
    /* The call armed a timer earlier than the engine's wake-up (e.g. the first RTO): wake it now. */
    must_wake = true;
    e->sleep_until = next;
  }
  bool events = app_has_events(e);
  pthread_mutex_unlock(&e->lock);
  if (must_wake) wake(e);
  if (events) e->notify(e->notify_ctx);
}

int cpb_engine_listen_native(struct cpb_engine *e, uint16_t port, uint32_t backlog, const struct cpb_native_app *app,
                             uint64_t *listener_id) {
  if (!app) return -EINVAL;
  if (!e->native && !(e->native = cpb_native_new(e->max_flows))) return -ENOMEM;
  return cpb_native_listen(e->native, e->tcp, port, backlog, app, listener_id);
}

bool cpb_engine_next_event(struct cpb_engine *e, struct tcp_event *ev) {
  if (cpb_lane_next_event(e->lane, ev)) return true;
  return e->native ? cpb_native_next_event(e->native, e->tcp, e->stack.now, ev) : tcp_next_event(e->tcp, ev);
}

void cpb_engine_set_spin_us(struct cpb_engine *e, uint32_t spin_us) {
  atomic_store_explicit(&e->spin_us, spin_us, memory_order_relaxed);
}

void cpb_engine_wake_trace(struct cpb_engine *e, cpb_time_t out[3]) {
  out[0] = atomic_load_explicit(&e->trace.woke_at, memory_order_relaxed);
  out[1] = atomic_load_explicit(&e->trace.rx_at, memory_order_relaxed);
  out[2] = atomic_load_explicit(&e->trace.notify_at, memory_order_relaxed);
}

const struct cpb_native *cpb_engine_native(struct cpb_engine *e) { return e->native; }
struct cpb_lane *cpb_engine_lane(struct cpb_engine *e) { return e->lane; }
struct cpb_lane_js *cpb_engine_lane_js(struct cpb_engine *e) { return e->lane_js; }

int cpb_engine_lane_migrate_js(struct cpb_engine *e, uint64_t flow_id, cpb_ip4_t peer, uint64_t migration_id,
                               uint32_t epoch, uint32_t budget_ms, const uint8_t *record, size_t record_len, cpb_time_t now) {
  if (!record || record_len == 0) return -EINVAL;
  if (e->native && cpb_native_export(e->native, flow_id, NULL, 0, NULL, 0) != -ENOENT) return -EINVAL; /* a native app's */
  e->lane_js_export = flow_id;
  int rc = cpb_lane_migrate(e->lane, flow_id, peer, migration_id, epoch, budget_ms, record, record_len, now);
  e->lane_js_export = 0;
  return rc;
}

/* ---- the lane's view of the stack and of the native apps ---- */

static uint8_t *lane_begin(void *ctx, cpb_ip4_t dst, size_t *cap) { return cpb_stack_dgram_begin(&((struct cpb_engine *)ctx)->stack, dst, cap); }
static void lane_commit(void *ctx, uint8_t proto, size_t len) { cpb_stack_dgram_commit(&((struct cpb_engine *)ctx)->stack, proto, len); }
static void lane_abort(void *ctx) { cpb_stack_dgram_abort(&((struct cpb_engine *)ctx)->stack); }
static void lane_input(void *ctx, cpb_ip4_t src, const uint8_t *p, size_t len, cpb_time_t now) {
  cpb_lane_input(((struct cpb_engine *)ctx)->lane, src, p, len, now);
}
static cpb_time_t lane_poll(void *ctx, cpb_time_t now) { return cpb_lane_poll(((struct cpb_engine *)ctx)->lane, now); }

/* Which flow a flow id names: its remote address and ports; 0 once it is gone (a record stashed for a flow that
 * died before JS came must not be handed out, nor go to a later flow should a slot's generation come round). */
static uint64_t flow_tag(struct cpb_engine *e, uint64_t flow_id) {
  struct tcp_flow_info fi;
  if (tcp_flow_info(e->tcp, flow_id, &fi) != 0) return 0;
  return (uint64_t)fi.remote_ip << 32 | (uint64_t)fi.remote_port << 16 | fi.local_port;
}

long cpb_engine_lane_js_take(struct cpb_engine *e, uint64_t *flow_id, uint8_t **rec) {
  for (;;) {
    uint64_t tag = 0;
    long n = cpb_lane_js_take_next(e->lane_js, flow_id, &tag, rec);
    if (n < 0 || flow_tag(e, *flow_id) == tag) return n;
    cpb_lane_js_free_record(*rec, (size_t)n); /* its flow died before JS came: nobody to give it to */
    *rec = NULL;
  }
}

static int app_export(void *ctx, uint64_t flow_id, char name[CPB_LANE_APP_NAME + 1], uint8_t state[CPB_LANE_APP_STATE]) {
  struct cpb_engine *e = ctx;
  _Static_assert(CPB_LANE_APP_STATE == CPB_NATIVE_STATE, "the lane carries a native app's whole state");
  if (flow_id != 0 && flow_id == e->lane_js_export) { /* its app is in JS: what it needs rides in the record */
    snprintf(name, CPB_LANE_APP_NAME + 1, "%s", CPB_LANE_JS_NAME);
    memset(state, 0, CPB_LANE_APP_STATE);
    return 0;
  }
  return e->native ? cpb_native_export(e->native, flow_id, name, CPB_LANE_APP_NAME + 1, state, CPB_LANE_APP_STATE) : -ENOENT;
}
static bool app_accepts(void *ctx, uint16_t port, const char *name) {
  struct cpb_engine *e = ctx;
  if (strcmp(name, CPB_LANE_JS_NAME) == 0) return cpb_lane_js_accepts(e->lane_js, port);
  return e->native && cpb_native_accepts(e->native, port, name);
}
static int app_adopt(void *ctx, uint64_t flow_id, uint16_t port, const char *name, const uint8_t state[CPB_LANE_APP_STATE],
                     const uint8_t *record, size_t record_len, cpb_time_t now) {
  struct cpb_engine *e = ctx;
  if (strcmp(name, CPB_LANE_JS_NAME) == 0) { /* JS builds the connection from the record (EV_LANE_IN) */
    if (!cpb_lane_js_accepts(e->lane_js, port) || record_len == 0) return -EPROTONOSUPPORT;
    return cpb_lane_js_stash(e->lane_js, flow_id, flow_tag(e, flow_id), record, record_len);
  }
  return e->native ? cpb_native_adopt(e->native, e->tcp, flow_id, port, name, state, now) : -EPROTONOSUPPORT;
}
static void app_forget(void *ctx, uint64_t flow_id) {
  struct cpb_engine *e = ctx;
  if (e->native) cpb_native_forget(e->native, flow_id);
  cpb_lane_js_drop(e->lane_js, flow_id);
}

struct cpb_tcp *cpb_engine_tcp(struct cpb_engine *e) { return e->tcp; }
struct cpb_stack *cpb_engine_stack(struct cpb_engine *e) { return &e->stack; }
struct cpb_arena *cpb_engine_arena(struct cpb_engine *e) { return &e->arena; }
struct cpb_dev *cpb_engine_dev(struct cpb_engine *e) { return e->dev; }

/* The XDP program steers by the stack's addresses, which the user already gave as the stack's config:
 * add them to xdp: URIs here rather than making every caller repeat them. */
static void device_uri(const struct cpb_engine_config *cfg, char *out, size_t len) {
  snprintf(out, len, "%s", cfg->device);
  if (strncmp(cfg->device, "xdp:", 4) != 0 || strstr(cfg->device, "ip=")) return;
  cpb_ip4_t ip = cfg->stack.ip, vip = cfg->stack.vip;
  int n = snprintf(out, len, "%s%c" "ip=%u.%u.%u.%u", cfg->device, strchr(cfg->device, '?') ? '&' : '?', ip >> 24,
                   (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
  if (vip && n > 0 && (size_t)n < len)
    snprintf(out + n, len - (size_t)n, "&vip=%u.%u.%u.%u", vip >> 24, (vip >> 16) & 0xff, (vip >> 8) & 0xff, vip & 0xff);
}

static void teardown(struct cpb_engine *e) {
  cpb_stack_set_proto(&e->stack, NULL);
  cpb_lane_free(e->lane);
  cpb_lane_js_free(e->lane_js);
  cpb_native_free(e->native);
  if (e->tcp) {
    tcp_fini(e->tcp);
    free(e->tcp);
  }
  if (e->dev) e->dev->ops->close(e->dev);
  if (e->arena.base) cpb_arena_destroy(&e->arena);
  if (e->wake_fd >= 0) close(e->wake_fd);
  pthread_mutex_destroy(&e->lock);
  free(e);
}

int cpb_engine_start(struct cpb_engine **out, const struct cpb_engine_config *cfg, cpb_notify_fn notify,
                     void *notify_ctx, char *err, size_t errlen) {
  *out = NULL;
  struct cpb_engine *e = calloc(1, sizeof(*e));
  if (!e) return -ENOMEM;
  pthread_mutex_init(&e->lock, NULL);
  e->notify = notify;
  e->notify_ctx = notify_ctx;
  e->spin_us = cfg->spin_us;
  e->arena.fd = -1;
  e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int rc = e->wake_fd < 0 ? -errno : 0;
  if (rc == 0) {
    char uri[sizeof(cfg->device) + 32];
    device_uri(cfg, uri, sizeof(uri));
    rc = cpb_dev_open(&e->dev, uri, err, errlen);
    if (rc != 0) e->dev = NULL;
  }
  if (rc == 0) {
    rc = cpb_arena_create(&e->arena, &cfg->arena);
    if (rc != 0) {
      e->arena.base = NULL;
      snprintf(err, errlen, "cannot create the arena (%u slots, %u chunks): %s", cfg->arena.slots,
               cfg->arena.chunks, strerror(-rc));
    }
  }
  if (rc == 0) {
    struct cpb_stack_config sc = cfg->stack;
    static const uint8_t zero[6];
    if (memcmp(sc.mac, zero, 6) == 0) e->dev->ops->get_mac(e->dev, sc.mac);
    cpb_stack_init(&e->stack, &sc, flush_to_dev, e);
    struct tcp_config tc = cfg->tcp;
    tc.local_ip = sc.ip;
    if (tc.max_flows > cfg->arena.slots) tc.max_flows = cfg->arena.slots;
    e->max_flows = tc.max_flows;
    e->tcp = calloc(1, tcp_sizeof());
    rc = e->tcp ? tcp_init(e->tcp, &e->arena, &tc, &e->stack.ipout) : -ENOMEM;
    if (rc != 0) {
      free(e->tcp);
      e->tcp = NULL;
      snprintf(err, errlen, "invalid TCP configuration: %s", strerror(-rc));
    }
  }
  if (rc == 0) {
    struct cpb_lane_ipout lo = {.begin = lane_begin, .commit = lane_commit, .abort = lane_abort, .ctx = e};
    struct cpb_lane_apps la = {.export_flow = app_export, .accepts = app_accepts, .adopt = app_adopt, .forget = app_forget, .ctx = e};
    e->lane = cpb_lane_new(e->tcp, &lo, &la);
    e->lane_js = cpb_lane_js_new();
    if (!e->lane || !e->lane_js) {
      rc = -ENOMEM;
      snprintf(err, errlen, "cannot allocate the migration lane");
    } else {
      struct cpb_stack_proto sp = {.proto = CPB_LANE_PROTO, .input = lane_input, .poll = lane_poll, .ctx = e};
      cpb_stack_set_proto(&e->stack, &sp);
    }
  }
  if (rc == 0) {
    cpb_stack_attach_tcp(&e->stack, e->tcp);
    cpb_stack_announce(&e->stack, cpb_clock_now());
    rc = -pthread_create(&e->thread, NULL, engine_main, e);
    if (rc != 0) snprintf(err, errlen, "cannot start the engine thread: %s", strerror(-rc));
    else (void)pthread_setname_np(e->thread, "cpb-engine"); /* for top -H, perf and chrt/taskset by name */
  }
  if (rc != 0) {
    teardown(e);
    return rc;
  }
  e->thread_started = true;
  *out = e;
  return 0;
}

void cpb_engine_stop(struct cpb_engine *e) {
  if (!e) return;
  atomic_store_explicit(&e->stop, true, memory_order_release);
  wake(e);
  if (e->thread_started) pthread_join(e->thread, NULL);
  teardown(e);
}
