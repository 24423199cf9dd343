/* The engine: one thread per device that runs RX burst → stack → TCP → TX burst to completion, runs
 * timers, and sleeps on the device's fd when there is nothing to do. The application thread (JS) calls
 * into TCP directly under the engine lock (cpb_engine_enter/leave): a send goes out on the caller's
 * thread with no hand-off, and leave() wakes the engine only when a timer it armed is earlier than the
 * engine's planned wake-up. Events for the application are announced through the notify callback
 * (uv_async_send in the addon), which coalesces. */
#ifndef CPB_ENGINE_H
#define CPB_ENGINE_H
#include "apps/native.h"
#include "arena.h"
#include "dev/dev.h"
#include "mig/lane.h"
#include "mig/lanejs.h"
#include "stack.h"
#include "tcp/tcp.h"

struct cpb_engine_config {
  char device[256];
  struct cpb_stack_config stack; /* mac all-zero: take the device's */
  struct tcp_config tcp;         /* local_ip is set from stack.ip */
  struct cpb_arena_config arena;
  uint32_t spin_us;              /* busy-poll this long after the last activity before sleeping */
};

typedef void (*cpb_notify_fn)(void *ctx);
struct cpb_engine;

cpb_time_t cpb_clock_now(void);
void cpb_engine_config_defaults(struct cpb_engine_config *cfg);
/* Opens the device, builds arena + stack + TCP and starts the thread. On failure returns -errno and a
 * sentence in err. */
int cpb_engine_start(struct cpb_engine **out, const struct cpb_engine_config *cfg, cpb_notify_fn notify,
                     void *notify_ctx, char *err, size_t errlen);
/* Stops and joins the thread, closes the device, frees everything. */
void cpb_engine_stop(struct cpb_engine *e);

/* Application-side access: enter() locks and returns `now`; leave() flushes TX, reschedules the engine
 * when needed and announces pending events. */
cpb_time_t cpb_engine_enter(struct cpb_engine *e);
void cpb_engine_leave(struct cpb_engine *e);
struct cpb_tcp *cpb_engine_tcp(struct cpb_engine *e);

/* Native apps (apps/native.h), between enter and leave. listen_native binds a new listener to app: its
 * flows are accepted and served on the engine thread and never reach the application. Returns 0 or
 * -errno (-EADDRINUSE, -ENOSPC, -ENOMEM). Once one exists, the application must take events through
 * cpb_engine_next_event (the engine moves the application's events to a ring of its own). */
int cpb_engine_listen_native(struct cpb_engine *e, uint16_t port, uint32_t backlog, const struct cpb_native_app *app,
                             uint64_t *listener_id);
/* The next event for the application (tcp_next_event when there are no native apps); false when none. */
bool cpb_engine_next_event(struct cpb_engine *e, struct tcp_event *ev);
/* NULL until the first native listener. */
const struct cpb_native *cpb_engine_native(struct cpb_engine *e);
/* The migration lane of native flows (mig/lane.h); its calls go between enter and leave. */
struct cpb_lane *cpb_engine_lane(struct cpb_engine *e);
/* JS-served flows on the lane (mig/lanejs.h), and moving one: cpb_lane_migrate with the record of its
 * layers above TCP (non-empty), for a flow no native app serves; -EINVAL otherwise. */
struct cpb_lane_js *cpb_engine_lane_js(struct cpb_engine *e);
int cpb_engine_lane_migrate_js(struct cpb_engine *e, uint64_t flow_id, cpb_ip4_t peer, uint64_t migration_id,
                               uint32_t epoch, uint32_t budget_ms, const uint8_t *record, size_t record_len, cpb_time_t now);
/* The oldest record of a JS flow adopted here (cpb_lane_js_take_next) whose flow still lives; records of
 * flows that died meanwhile are dropped on the way. Length or -ENOENT; free *rec with cpb_lane_js_free_record. */
long cpb_engine_lane_js_take(struct cpb_engine *e, uint64_t *flow_id, uint8_t **rec);
/* Busy-poll time after the last activity; takes effect at once (any thread, no lock needed). */
void cpb_engine_set_spin_us(struct cpb_engine *e, uint32_t spin_us);
/* Monotonic µs of the engine's last wake-up from sleep, of the round that last raised events for the
 * application, and of the notify that announced them (migration tracing). */
void cpb_engine_wake_trace(struct cpb_engine *e, cpb_time_t out[3]);
struct cpb_stack *cpb_engine_stack(struct cpb_engine *e);
struct cpb_arena *cpb_engine_arena(struct cpb_engine *e);
struct cpb_dev *cpb_engine_dev(struct cpb_engine *e);
#endif
