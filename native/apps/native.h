/* Native apps: responders that run to completion on the engine thread, with no JavaScript in the loop,
 * so a request can be answered within the same engine round that received it.
 *
 * An app is a bytes-in/bytes-out transform (picotls style): it never calls TCP. The engine (native.c)
 * accepts the flows of a listener bound to an app, reads what arrives, hands it to the app, sends what
 * the app produced and closes the flow once the peer has closed and every reply is out. Replies that do
 * not fit in the send buffer wait in the flow's fixed output area and the flow is not read meanwhile, so
 * a peer that does not read its replies is held back by TCP flow control, never by memory.
 *
 * Events: the engine pops every TCP event each round (cpb_native_round). Those of native listeners and
 * flows are handled on the spot; the others go to a bounded ring that the application side drains
 * through cpb_native_next_event before anything still in TCP, so JS sees them in the original order.
 * When the ring is full the engine stops popping and the rest wait in TCP, where they already were. */
#ifndef CPB_NATIVE_H
#define CPB_NATIVE_H
#include "../common.h"
#include "../tcp/tcp.h"

/* Room an app may use beyond the input length in one call (bytes it carried over from earlier calls). */
#define CPB_NATIVE_CARRY 64
/* Per-flow output area: one recv is at most this minus CPB_NATIVE_CARRY. */
#define CPB_NATIVE_OUT 4096
/* Per-flow state an app may keep (zeroed when the flow is accepted). */
#define CPB_NATIVE_STATE 32
#define CPB_NATIVE_MAX_LISTENERS 8
#define CPB_NATIVE_MAX_FLOWS 1024
#define CPB_NATIVE_RING 512 /* events held for the application side */

struct cpb_native_app {
  const char *name;
  /* Turns n received bytes into the bytes to send back, written to out (room for n + CPB_NATIVE_CARRY).
   * Returns the count written (0: nothing to answer yet), or -errno to reset the flow (bad framing). */
  long (*on_data)(void *state, const uint8_t *in, size_t n, uint8_t *out);
};

extern const struct cpb_native_app cpb_native_echo;
extern const struct cpb_native_app cpb_native_sockperf;
/* The app called name ("echo", "sockperf"), or NULL. */
const struct cpb_native_app *cpb_native_app_find(const char *name);

struct cpb_native; /* listeners, flows and the event ring of one engine */

/* Allocates the tables (the only allocation); max_flows bounds the native flows (more are reset). */
struct cpb_native *cpb_native_new(uint32_t max_flows);
void cpb_native_free(struct cpb_native *n);

/* Listens on port and binds the listener to app. Returns 0, -ENOSPC (listener table full) or what
 * tcp_listen returns (-EADDRINUSE). */
int cpb_native_listen(struct cpb_native *n, struct cpb_tcp *t, uint16_t port, uint32_t backlog,
                      const struct cpb_native_app *app, uint64_t *listener_id);

/* Engine side, once per round: handles the events of native listeners and flows, moves the others to
 * the ring. Returns how many native events were handled (their replies wait for tcp_poll's output). */
int cpb_native_round(struct cpb_native *n, struct cpb_tcp *t, cpb_time_t now);
/* Application side: the next event for the application (ring first, then TCP, handling native events met
 * on the way); false when none. */
bool cpb_native_next_event(struct cpb_native *n, struct cpb_tcp *t, cpb_time_t now, struct tcp_event *ev);
/* True when the application side may have events (ring or TCP). */
bool cpb_native_has_events(const struct cpb_native *n, const struct cpb_tcp *t);

struct cpb_native_stats {
  uint64_t accepted, closed, resets, bytes_in, bytes_out, table_full, migrated_in, migrated_out;
  uint32_t flows;
};
void cpb_native_get_stats(const struct cpb_native *n, struct cpb_native_stats *out);

/* Live migration of native flows (the engine's migration lane, native/mig/lane.h). */
/* The app (name) and state of a native flow; -ENOENT (not native), -EBUSY (replies pending or closing). */
int cpb_native_export(struct cpb_native *n, uint64_t flow_id, char *name, size_t name_cap, uint8_t *state, size_t state_len);
/* A native listener on port runs app name and there is room for a flow. */
bool cpb_native_accepts(const struct cpb_native *n, uint16_t port, const char *name);
/* Serves adopted flow_id with that listener's app, from state on; 0, -EPROTONOSUPPORT, -ENOSPC. */
int cpb_native_adopt(struct cpb_native *n, struct cpb_tcp *t, uint64_t flow_id, uint16_t port, const char *name,
                     const uint8_t *state, cpb_time_t now);
/* The flow moved away: forget it (TCP releases it). */
void cpb_native_forget(struct cpb_native *n, uint64_t flow_id);
#endif
