/* Flows served by JavaScript on the migration lane. The lane moves a flow engine to engine; for a flow
 * whose application lives in JS, the layers above TCP (the TLS session, the app's record: unread and
 * unwritten bytes, userData) are serialized by the source's JS into an opaque record that rides in the
 * offer (lane.h). The target's engine adopts the TCP flow, steers and answers in the round that received
 * the offer, as for a native app, and keeps the record here until its JS takes it (on EV_LANE_IN) and
 * builds the connection; meanwhile TCP acknowledges and buffers what the client sends. So no JavaScript
 * runs between the source's call and the target's answer.
 *
 * An engine accepts a JS flow on a port only while a JS server there takes migrated connections
 * (cpb_lane_js_listen); an offer for any other port is refused and the flow stays at its source.
 * Records are copied once, at adoption (one allocation per adopted flow, not per packet); they may hold
 * key material and are wiped when taken or dropped. Calls run under the engine lock. */
#ifndef CPB_LANE_JS_H
#define CPB_LANE_JS_H
#include "../common.h"

#define CPB_LANE_JS_NAME "js"      /* the app name a JS flow travels under */
#define CPB_LANE_JS_PORTS 64       /* ports with a JS server taking migrated connections */
#define CPB_LANE_JS_STASH 256      /* adopted flows whose record JS has not taken yet */
#define CPB_LANE_JS_BYTES (64u << 20) /* and their records' bytes in all */

struct cpb_lane_js;

struct cpb_lane_js *cpb_lane_js_new(void);
void cpb_lane_js_free(struct cpb_lane_js *j);
/* Whether JS takes migrated connections on port; 0, -ENOSPC (port table full), -EINVAL (port 0). */
int cpb_lane_js_listen(struct cpb_lane_js *j, uint16_t port, bool on);
bool cpb_lane_js_accepts(const struct cpb_lane_js *j, uint16_t port);
/* Keeps a copy of flow_id's record for JS, with the caller's tag for the flow (its 4-tuple, checked again when
 * JS takes it: a flow that died meanwhile gets nothing); 0, -ENOSPC (too many waiting), -ENOMEM. */
int cpb_lane_js_stash(struct cpb_lane_js *j, uint64_t flow_id, uint64_t tag, const uint8_t *rec, size_t len);
/* Hands flow_id's record to the caller, who owns it (*rec; free with cpb_lane_js_free_record), and its tag.
 * Returns its length, or -ENOENT when there is none (a native flow, or taken already). */
long cpb_lane_js_take(struct cpb_lane_js *j, uint64_t flow_id, uint64_t *tag, uint8_t **rec);
/* Likewise for whichever record waits longest (*flow_id names its flow). JS drains them all on any EV_LANE_IN:
 * an event lost to a full event ring (the oldest go) must not leave a flow without its connection. */
long cpb_lane_js_take_next(struct cpb_lane_js *j, uint64_t *flow_id, uint64_t *tag, uint8_t **rec);
void cpb_lane_js_free_record(uint8_t *rec, size_t len);
/* Forgets flow_id's record (the flow is gone before JS took it). */
void cpb_lane_js_drop(struct cpb_lane_js *j, uint64_t flow_id);
size_t cpb_lane_js_waiting(const struct cpb_lane_js *j);
#endif
