/* The TCP layer's snapshot: one connection's protocol state plus its buffered bytes, as the "tcp"
 * record inside the runtime's CPBY container (which adds the CRC and the AEAD of the migration channel).
 * A view+repr pair in the smoltcp manner: tcp_snap_parse checks the framing and every field that can be
 * judged without a host (ranges, sequence-space consistency, data lengths) and fills a plain struct
 * whose data pointers are views into the input; tcp_snap_encode writes one. What depends on the host
 * that adopts it (free slot and chunks, MSS, 4-tuple collisions) is checked by tcp_adopt (migrate.c).
 *
 * Version 1, all integers little-endian, doubles IEEE 754 binary64 little-endian:
 *   header (16)    "CTCP" | u16 version = 1 | u16 flags = 0 | u32 total length | u32 state length = 504
 *   state (504)    fixed layout, see snapshot.c (tcp_snap_encode lists the fields in order); times are
 *                  relative to the freeze instant (ages back, deadlines forward, microseconds);
 *                  ts_val is the sender's TS.Val clock at the freeze; reserved bytes are zero
 *   data           snd_len bytes from SND.UNA's byte on (unacknowledged, then unsent)
 *                  | rcv_len unread in-order bytes | ooo_len out-of-order bytes, the ranges of `ooo`
 *                  concatenated in order
 * total length = 16 + 504 + snd_len + rcv_len + ooo_len exactly. */
#ifndef CPB_TCP_SNAPSHOT_H
#define CPB_TCP_SNAPSHOT_H
#include "assembler.h"

#define TCP_SNAP_MAGIC "CTCP"
#define TCP_SNAP_VERSION 1
#define TCP_SNAP_HDR_LEN 16
#define TCP_SNAP_STATE_LEN 504
#define TCP_SNAP_FIXED_LEN (TCP_SNAP_HDR_LEN + TCP_SNAP_STATE_LEN)
#define TCP_SNAP_MAX_DATA (1u << 30)          /* per data part */
#define TCP_SNAP_MAX_AGE (1ULL << 48)         /* us; any age or deadline beyond this is corrupt */
#define TCP_SNAP_MAX_WND (65535u << 14)       /* largest window RFC 7323 can express */
#define TCP_SNAP_MAX_CWND (1u << 30)

/* Timer order in the format (independent of the engine's enum). */
enum { TCP_SNAP_T_RTO, TCP_SNAP_T_DELACK, TCP_SNAP_T_PERSIST, TCP_SNAP_T_KEEPALIVE, TCP_SNAP_T_LINGER,
       TCP_SNAP_TIMERS };

/* Flag bits in the format (independent of the TCB's TF_ bits). */
enum {
  TCP_SNAP_F_FIN_QUEUED = 1u << 0,   /* our FIN follows the send data */
  TCP_SNAP_F_FIN_RCVD = 1u << 1,     /* the peer's FIN is in rcv_nxt */
  TCP_SNAP_F_OOO_FIN = 1u << 2,      /* a FIN beyond a hole, at ooo_fin_seq */
  TCP_SNAP_F_TS = 1u << 3,           /* RFC 7323 timestamps negotiated */
  TCP_SNAP_F_SACK = 1u << 4,         /* SACK permitted */
  TCP_SNAP_F_WSCALE = 1u << 5,       /* window scaling negotiated */
  TCP_SNAP_F_NODELAY = 1u << 6,
  TCP_SNAP_F_KEEPALIVE = 1u << 7,
  TCP_SNAP_F_RECOVERY = 1u << 8,     /* in fast recovery (NewReno or SACK) */
  TCP_SNAP_F_SACK_RECOVERY = 1u << 9,
  TCP_SNAP_F_FIRST_PARTIAL = 1u << 10,
  TCP_SNAP_F_RTT_TIMING = 1u << 11,  /* rtt_seq is being timed, started rtt_age ago */
  TCP_SNAP_F_ACK_NOW = 1u << 12,     /* an ACK was owed */
  TCP_SNAP_F_PASSIVE = 1u << 13,     /* opened by a listener */
  TCP_SNAP_F_CUBIC_EPOCH = 1u << 14, /* a CUBIC epoch started cubic_age ago */
  TCP_SNAP_F_ALL = (1u << 15) - 1,
};

struct tcp_snap {
  cpb_ip4_t lip, rip;
  uint16_t lport, rport;
  uint8_t state; /* enum tcp_state */
  uint8_t snd_wscale, rcv_wscale, backoff, dupacks, retries, probes, limited_tx;
  uint32_t flags; /* TCP_SNAP_F_* */
  uint16_t peer_mss, smss, rcv_mss;
  uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd, snd_sml, sndq_seq;
  uint32_t irs, rcv_nxt, rcv_adv, last_ack_sent, ooo_fin_seq;
  uint32_t ts_val, ts_recent;
  uint64_t ts_recent_age;
  uint32_t srtt, rttvar, rto, rtt_seq;
  uint64_t rtt_age;
  uint32_t cwnd, ssthresh, recover, bytes_acked, high_rxt, rescue_rxt;
  struct seqranges sacked, ooo;
  double w_max, w_last_max, k, w_est, acc;
  uint64_t cubic_age;
  uint64_t last_rcv_age;
  uint32_t keepidle_us;
  uint8_t timer_mask; /* bit per TCP_SNAP_T_* */
  uint64_t timer_left[TCP_SNAP_TIMERS];
  uint64_t bytes_in, bytes_out, retransmits;
  uint32_t snd_len, rcv_len, ooo_len;
  const uint8_t *snd_data, *rcv_data, *ooo_data; /* parse: views into the input; encode: sources */
};

/* Parses and validates. Returns 0, -EBADMSG (framing: short, magic, version, flags, lengths) or
 * -EINVAL (a field out of range or inconsistent with the others). */
int tcp_snap_parse(const uint8_t *buf, size_t len, struct tcp_snap *out);
/* Total encoded size of s (header, state and its three data parts). */
size_t tcp_snap_len(const struct tcp_snap *s);
/* Writes header and state (TCP_SNAP_FIXED_LEN bytes); no validation, so tests can forge. */
void tcp_snap_encode_fixed(const struct tcp_snap *s, uint8_t *buf);
/* Writes everything, the data from s's pointers. Returns bytes written or -ENOSPC. */
long tcp_snap_encode(const struct tcp_snap *s, uint8_t *buf, size_t cap);
#endif
