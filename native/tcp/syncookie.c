/* SYN cookies (RFC 4987 §3.6), used only when a listener's SYN queue is full: instead of a TCB, the
 * SYN-ACK's ISS carries what the handshake must remember, and the final ACK (ack = ISS + 1) brings it back.
 *
 * ISS = H0(tuple) + peer ISN + (period << 24) + ((Hp(tuple, period, peer ISN) + mss_index) & 0xffffff)
 *   - period = now / 64 s; Hp is keyed per period (SipHash of the tuple, the period number and the peer's
 *     ISN under the module's secret: with the ISN only added, an ACK whose ISN is off by one would
 *     decode as a neighbouring MSS index and pass), so the cookie key rotates every period and a cookie is good for at most
 *     SYNCOOKIE_MAX_AGE periods; the top 8 bits say which period's key to try (no key is stored).
 *   - mss_index picks one of four common MSS values (the largest not above the peer's).
 * When the SYN offered timestamps, the options that do not fit the ISS ride in the low 6 bits of our
 * TSval (the peer echoes it in every ACK's TSecr): bits 0-3 the peer's window scale (0xf: none), bit 4
 * SACK-permitted. Without timestamps a cookie connection has no window scaling and no SACK (as on Linux).
 * A forged ACK must guess 24 keyed bits (odds 4 in 2^24 per live period), and a cookie ACK that fails is
 * treated as any ACK to a listener: answered with a RST and counted. */
#include "tcb.h"

#define SYNCOOKIE_PERIOD_US (64ULL * CPB_US_PER_S)
#define SYNCOOKIE_MAX_AGE 2u /* periods */
#define SYNCOOKIE_TS_BITS 0x3fu
#define SYNCOOKIE_TS_NO_WS 0xfu
#define SYNCOOKIE_TS_SACK 0x10u

static const uint16_t cookie_mss[] = {536, 1300, 1440, 1460};

static uint32_t cookie_hash(struct cpb_tcp *t, uint8_t domain, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip,
                            uint16_t rport, uint32_t period, uint32_t isn) {
  uint8_t m[21];
  cpb_put_be32(m, lip);
  cpb_put_be16(m + 4, lport);
  cpb_put_be32(m + 6, rip);
  cpb_put_be16(m + 10, rport);
  m[12] = domain;
  cpb_put_be32(m + 13, period);
  cpb_put_be32(m + 17, isn);
  return (uint32_t)siphash24(t->cfg.iss_secret, m, sizeof(m));
}

static uint32_t cookie_period(cpb_time_t now) { return (uint32_t)(now / SYNCOOKIE_PERIOD_US); }

static uint32_t cookie_ts_now(struct cpb_tcp *t, cpb_ip4_t lip, uint16_t lport, cpb_ip4_t rip, uint16_t rport,
                              cpb_time_t now) {
  return (uint32_t)(now / CPB_US_PER_MS) + ts_offset_generate(t, lip, lport, rip, rport);
}

static uint32_t cookie_make(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r, cpb_time_t now,
                            uint32_t *mss_idx) {
  uint16_t peer = r->opts.has_mss ? r->opts.mss : TCP_DEFAULT_MSS;
  uint32_t idx = 0;
  for (uint32_t i = 0; i < CPB_ARRAY_LEN(cookie_mss); i++)
    if (cookie_mss[i] <= peer) idx = i;
  *mss_idx = idx;
  uint32_t p = cookie_period(now);
  uint32_t h0 = cookie_hash(t, 3, lip, r->dport, rip, r->sport, 0, 0);
  uint32_t hp = cookie_hash(t, 4, lip, r->dport, rip, r->sport, p, r->seq);
  return h0 + r->seq + (p << 24) + ((hp + idx) & 0xffffffu);
}

void syncookie_send(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *in, cpb_time_t now) {
  uint32_t idx;
  struct tcp_repr r;
  memset(&r, 0, sizeof(r));
  r.sport = in->dport;
  r.dport = in->sport;
  r.seq = cookie_make(t, lip, rip, in, now, &idx);
  r.ack = in->seq + 1;
  r.flags = TCP_SYN | TCP_ACK;
  r.window = (uint16_t)CPB_MIN(t->cfg.rcvbuf, 65535u);
  r.opts.has_mss = true;
  r.opts.mss = t->cfg.mss;
  bool ts = t->cfg.timestamps && in->opts.has_ts;
  if (ts) {
    /* Window scaling and SACK can only be remembered in the TSval, so they are offered only with it. */
    uint32_t opt = in->opts.has_wscale ? CPB_MIN(in->opts.wscale, (uint8_t)TCP_MAX_WSCALE) : SYNCOOKIE_TS_NO_WS;
    if (t->cfg.sack && in->opts.sack_permitted) opt |= SYNCOOKIE_TS_SACK;
    uint32_t cur = cookie_ts_now(t, lip, in->dport, rip, in->sport, now);
    uint32_t tsv = (cur & ~SYNCOOKIE_TS_BITS) | opt;
    if (seq_gt(tsv, cur)) tsv -= SYNCOOKIE_TS_BITS + 1; /* never ahead of the flow's clock */
    r.opts.has_ts = true;
    r.opts.ts_val = tsv;
    r.opts.ts_ecr = in->opts.ts_val;
    if (in->opts.has_wscale) {
      r.opts.has_wscale = true;
      r.opts.wscale = (uint8_t)CPB_MIN(t->cfg.wscale, TCP_MAX_WSCALE);
    }
    r.opts.sack_permitted = (opt & SYNCOOKIE_TS_SACK) != 0;
  }
  if (output_bare(t, lip, rip, &r)) t->stats.syncookies_sent++;
}

bool syncookie_check(struct cpb_tcp *t, cpb_ip4_t lip, cpb_ip4_t rip, const struct tcp_repr *r, cpb_time_t now,
                     struct tcp_repr *syn) {
  if ((r->flags & (TCP_SYN | TCP_RST | TCP_ACK)) != TCP_ACK) return false;
  uint32_t cookie = r->ack - 1, isn = r->seq - 1;
  uint32_t h0 = cookie_hash(t, 3, lip, r->dport, rip, r->sport, 0, 0);
  uint32_t diff = cookie - h0 - isn;
  uint32_t cur = cookie_period(now);
  uint32_t age = ((cur & 0xffu) - (diff >> 24)) & 0xffu;
  if (age > SYNCOOKIE_MAX_AGE || age > cur) return false;
  uint32_t p = cur - age;
  uint32_t hp = cookie_hash(t, 4, lip, r->dport, rip, r->sport, p, isn);
  uint32_t idx = (diff - hp) & 0xffffffu;
  if (idx >= CPB_ARRAY_LEN(cookie_mss)) return false;

  memset(syn, 0, sizeof(*syn));
  syn->sport = r->sport;
  syn->dport = r->dport;
  syn->seq = isn;
  syn->flags = TCP_SYN;
  syn->opts.has_mss = true;
  syn->opts.mss = cookie_mss[idx];
  if (t->cfg.timestamps && r->opts.has_ts) {
    uint32_t ecr = r->opts.ts_ecr;
    uint32_t tsnow = cookie_ts_now(t, lip, r->dport, rip, r->sport, now);
    uint32_t max_ms = (uint32_t)((SYNCOOKIE_MAX_AGE + 1) * SYNCOOKIE_PERIOD_US / CPB_US_PER_MS);
    if (seq_gt(ecr, tsnow) || tsnow - ecr > max_ms) return false; /* an echo we never sent */
    uint32_t opt = ecr & SYNCOOKIE_TS_BITS;
    syn->opts.has_ts = true;
    syn->opts.ts_val = r->opts.ts_val;
    if ((opt & SYNCOOKIE_TS_NO_WS) != SYNCOOKIE_TS_NO_WS) {
      syn->opts.has_wscale = true;
      syn->opts.wscale = (uint8_t)(opt & SYNCOOKIE_TS_NO_WS);
    }
    syn->opts.sack_permitted = (opt & SYNCOOKIE_TS_SACK) != 0;
  }
  return true;
}
