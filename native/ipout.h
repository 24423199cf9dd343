/* How the transport layer hands segments to the network layer. The stack implements it for real
 * devices; scenario tests implement it to capture segments. The segment is written in place into the
 * frame that will be sent, so there is one copy of payload bytes on the way out. */
#ifndef CPB_IPOUT_H
#define CPB_IPOUT_H
#include "common.h"

struct cpb_ipout {
  void *ctx;
  /* Returns where to write an L4 segment of up to *cap bytes for src->dst, or NULL when the segment
   * cannot go out now (TX batch full, next hop unresolved): the caller treats it as lost on the wire. */
  uint8_t *(*begin)(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap);
  /* Sends the l4_len bytes written after begin(); fills the TCP checksum. */
  void (*commit)(void *ctx, size_t l4_len);
};
#endif
