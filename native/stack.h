/* The network layer under TCP: Ethernet demux, ARP (answering, resolving, a small cache with expiry),
 * IPv4 in/out, ICMP echo, and the TX batch that frames leave through. Like TCP it is driven with explicit
 * `now` and never touches the device itself: full batches go to a flush callback (the engine's device). */
#ifndef CPB_STACK_H
#define CPB_STACK_H
#include "common.h"
#include "dev/dev.h"
#include "ipout.h"
#include "tcp/tcp.h"

#define CPB_ARP_ENTRIES 64
#define CPB_ARP_PENDING 8 /* frames parked while their next hop is being resolved */

struct cpb_stack_config {
  uint8_t mac[6];
  cpb_ip4_t ip;
  uint8_t prefix_len;
  cpb_ip4_t gateway; /* 0 = none: off-link destinations are unreachable */
  cpb_ip4_t vip;     /* a second local address shared by hosts behind an L4 balancer (no ARP); 0 = none */
  uint16_t mtu;      /* IP MTU, e.g. 1500 */
};

struct cpb_ip_stats {
  uint64_t frames_in, frames_out, frames_dropped_tx;
  uint64_t not_for_us, bad_frames, unknown_ethertype;
  uint64_t arp_in, arp_replies_sent, arp_requests_sent, arp_unresolved_drops, arp_parked;
  uint64_t ipv4_in, ipv4_bad, ipv4_bad_checksum, ipv4_fragments_dropped, ipv4_unknown_proto;
  uint64_t icmp_in, icmp_echo_replies, icmp_bad;
};

struct arp_entry {
  cpb_ip4_t ip;
  uint8_t mac[6];
  bool resolved;
  cpb_time_t expires;      /* resolved entries: when to stop trusting the MAC */
  cpb_time_t last_request; /* unresolved / refreshing entries: rate limit for requests */
};

/* A frame built for a next hop that was not resolved yet: sent as soon as the reply comes (like Linux's
 * arp_queue), so the first SYN of a connection does not wait for a retransmission timeout. */
struct arp_pending {
  cpb_ip4_t hop; /* 0 = free */
  cpb_time_t expires;
  uint32_t len;
  uint8_t frame[CPB_FRAME_MAX];
};

typedef void (*cpb_flush_fn)(void *ctx, struct cpb_frame *frames, int n);

/* One more IP protocol served beside TCP and ICMP (the engine's migration lane): datagrams of proto to
 * the stack's own address (not the VIP) go to input; poll runs with TCP's timers and returns its deadline. */
struct cpb_stack_proto {
  uint8_t proto; /* 0 = none */
  void (*input)(void *ctx, cpb_ip4_t src, const uint8_t *p, size_t len, cpb_time_t now);
  cpb_time_t (*poll)(void *ctx, cpb_time_t now);
  void *ctx;
};

struct cpb_stack {
  struct cpb_stack_config cfg;
  cpb_ip4_t netmask;
  struct cpb_tcp *tcp;
  struct cpb_ipout ipout;
  struct cpb_stack_proto extra;
  cpb_flush_fn flush;
  void *flush_ctx;
  cpb_time_t now; /* time of the current input/poll, for ARP decisions made inside ipout */
  uint16_t ip_id;
  struct arp_entry arp[CPB_ARP_ENTRIES];
  /* TX batch: frames are built in place, flushed when full and at the end of every input/poll round. */
  struct cpb_frame tx[CPB_BURST];
  int tx_count;
  uint8_t *tx_open_buf; /* frame being written: a TX slot or a parked (pending) frame */
  struct arp_pending *tx_open_pending;
  cpb_ip4_t tx_src, tx_dst, tx_hop;
  struct cpb_ip_stats stats;
  uint8_t tx_buf[CPB_BURST][CPB_FRAME_MAX];
  struct arp_pending pending[CPB_ARP_PENDING];
};

/* tcp must already be initialised with s->ipout (call cpb_stack_init first, then tcp_init with &s->ipout). */
void cpb_stack_init(struct cpb_stack *s, const struct cpb_stack_config *cfg, cpb_flush_fn flush, void *flush_ctx);
void cpb_stack_attach_tcp(struct cpb_stack *s, struct cpb_tcp *tcp);
void cpb_stack_input(struct cpb_stack *s, const uint8_t *frame, size_t len, cpb_time_t now);
/* Runs TCP timers and ARP upkeep, flushes; returns the next deadline. */
cpb_time_t cpb_stack_poll(struct cpb_stack *s, cpb_time_t now);
void cpb_stack_flush(struct cpb_stack *s);
/* Announces ourselves (gratuitous ARP) and resolves the gateway early so the first segment is not lost. */
void cpb_stack_announce(struct cpb_stack *s, cpb_time_t now);
void cpb_stack_set_proto(struct cpb_stack *s, const struct cpb_stack_proto *p);
/* A datagram of another protocol from the stack's address to dst: begin returns where its payload goes
 * (*cap bytes at most; NULL: no route or no room now), commit sends len bytes, abort drops it. */
uint8_t *cpb_stack_dgram_begin(struct cpb_stack *s, cpb_ip4_t dst, size_t *cap);
void cpb_stack_dgram_commit(struct cpb_stack *s, uint8_t proto, size_t len);
void cpb_stack_dgram_abort(struct cpb_stack *s);
/* Sets the clock used by ARP decisions for segments emitted outside input/poll (app calls). */
static inline void cpb_stack_set_now(struct cpb_stack *s, cpb_time_t now) { s->now = now; }
#endif
