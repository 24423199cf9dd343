/* Hooks for deterministic tests (scenario scripts name sequence numbers relative to a known ISS and
 * expect exact timestamp values). Not for production use. */
#ifndef CPB_TCP_DEBUG_H
#define CPB_TCP_DEBUG_H
#include "tcp.h"

/* Every new flow gets ISS = iss and timestamp offset = ts_offset (instead of RFC 6528 / random). */
void tcp_debug_fix_iss(struct cpb_tcp *t, uint32_t iss, uint32_t ts_offset);
/* Arena slots and chunks currently held by flows (for leak checks). */
uint32_t tcp_debug_flows_live(const struct cpb_tcp *t);
#endif
