/* Network layer: one pass per frame, no allocation. ARP follows RFC 826's merge rule (update an entry
 * we already have from any ARP, create one when the packet targets us), so the gateway's address is
 * normally learnt from its own request before we ever need it. A segment for a next hop we cannot
 * resolve yet is dropped (counted) while a rate-limited request goes out: TCP's retransmission is the
 * queue, which keeps this layer stateless beyond the cache. */
#include "stack.h"

#include "wire/arp.h"
#include "wire/eth.h"
#include "wire/icmp.h"
#include "wire/ipv4.h"
#include "wire/tcp.h"

#define ARP_TTL_US (300ULL * CPB_US_PER_S)
#define ARP_STALE_GRACE_US (10ULL * CPB_US_PER_S)
#define ARP_RETRY_US (200ULL * CPB_US_PER_MS)
#define ARP_PARK_US (3ULL * CPB_US_PER_S)
#define L2L3_LEN (ETH_HDR_LEN + IPV4_MIN_HDR_LEN)

static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static struct cpb_frame *tx_slot(struct cpb_stack *s) {
  if (s->tx_count == CPB_BURST) cpb_stack_flush(s);
  return &s->tx[s->tx_count];
}

void cpb_stack_flush(struct cpb_stack *s) {
  if (s->tx_count == 0) return;
  s->flush(s->flush_ctx, s->tx, s->tx_count);
  s->stats.frames_out += (uint64_t)s->tx_count;
  s->tx_count = 0;
}

/* ---- ARP cache ---- */

static struct arp_entry *arp_find(struct cpb_stack *s, cpb_ip4_t ip) {
  for (int i = 0; i < CPB_ARP_ENTRIES; i++)
    if (s->arp[i].ip == ip) return &s->arp[i];
  return NULL;
}

static struct arp_entry *arp_slot(struct cpb_stack *s, cpb_ip4_t ip) {
  struct arp_entry *e = arp_find(s, ip);
  if (e) return e;
  /* Reuse an empty entry, else the one expiring first. */
  struct arp_entry *victim = &s->arp[0];
  for (int i = 0; i < CPB_ARP_ENTRIES; i++) {
    if (s->arp[i].ip == 0) { victim = &s->arp[i]; break; }
    if (s->arp[i].expires < victim->expires) victim = &s->arp[i];
  }
  memset(victim, 0, sizeof(*victim));
  victim->ip = ip;
  return victim;
}

static void release_parked(struct cpb_stack *s, cpb_ip4_t hop, const uint8_t mac[6]);

static void arp_learn(struct cpb_stack *s, struct arp_entry *e, const uint8_t mac[6]) {
  memcpy(e->mac, mac, 6);
  e->resolved = true;
  e->expires = s->now + ARP_TTL_US;
  release_parked(s, e->ip, mac);
}

static void arp_send(struct cpb_stack *s, uint16_t op, const uint8_t *eth_dst, const uint8_t *tha, cpb_ip4_t tpa) {
  struct cpb_frame *f = tx_slot(s);
  uint8_t *buf = s->tx_buf[s->tx_count];
  struct eth_repr eth = {.ethertype = ETHERTYPE_ARP};
  memcpy(eth.dst, eth_dst, 6);
  memcpy(eth.src, s->cfg.mac, 6);
  struct arp_repr arp = {.op = op, .spa = s->cfg.ip, .tpa = tpa};
  memcpy(arp.sha, s->cfg.mac, 6);
  memcpy(arp.tha, tha, 6);
  if (eth_emit(&eth, buf, CPB_FRAME_MAX) < 0 || arp_emit(&arp, buf + ETH_HDR_LEN, CPB_FRAME_MAX - ETH_HDR_LEN) < 0) return;
  /* Pad to the Ethernet minimum: some peers drop runt ARP frames. */
  memset(buf + ETH_HDR_LEN + ARP_LEN, 0, 60 - ETH_HDR_LEN - ARP_LEN);
  f->data = buf;
  f->len = 60;
  s->tx_count++;
  if (op == ARP_OP_REPLY) s->stats.arp_replies_sent++;
  else s->stats.arp_requests_sent++;
}

static void arp_request(struct cpb_stack *s, struct arp_entry *e) {
  static const uint8_t zero[6];
  if (e->last_request && s->now - e->last_request < ARP_RETRY_US) return;
  e->last_request = s->now ? s->now : 1;
  arp_send(s, ARP_OP_REQUEST, e->resolved ? e->mac : BCAST, zero, e->ip);
}

static void arp_input(struct cpb_stack *s, const uint8_t *p, size_t len) {
  struct arp_repr a;
  s->stats.arp_in++;
  if (arp_parse(p, len, &a) != 0) { s->stats.bad_frames++; return; }
  if (a.spa == s->cfg.ip) return; /* our own announcement, or an address conflict: nothing to learn */
  bool for_us = a.tpa == s->cfg.ip;
  struct arp_entry *e = arp_find(s, a.spa);
  if (a.spa != 0) {
    if (e) arp_learn(s, e, a.sha);
    else if (for_us) arp_learn(s, arp_slot(s, a.spa), a.sha);
  }
  if (for_us && a.op == ARP_OP_REQUEST) arp_send(s, ARP_OP_REPLY, a.sha, a.sha, a.spa);
  else if (!for_us) s->stats.not_for_us++;
}

static bool on_link(const struct cpb_stack *s, cpb_ip4_t ip) { return (ip & s->netmask) == (s->cfg.ip & s->netmask); }

/* MAC for a next hop, or NULL (after asking) when not known yet. */
static const uint8_t *resolve(struct cpb_stack *s, cpb_ip4_t hop) {
  struct arp_entry *e = arp_slot(s, hop);
  if (e->resolved && s->now < e->expires) return e->mac;
  arp_request(s, e);
  /* An expired entry keeps working for a short grace while the refresh is answered. */
  if (e->resolved && s->now < e->expires + ARP_STALE_GRACE_US) return e->mac;
  return NULL;
}

static struct arp_pending *park_slot(struct cpb_stack *s) {
  for (int i = 0; i < CPB_ARP_PENDING; i++)
    if (s->pending[i].hop == 0) return &s->pending[i];
  return NULL;
}

/* Called when hop's MAC became known: parked frames for it leave now. */
static void release_parked(struct cpb_stack *s, cpb_ip4_t hop, const uint8_t mac[6]) {
  for (int i = 0; i < CPB_ARP_PENDING; i++) {
    struct arp_pending *p = &s->pending[i];
    if (p->hop != hop) continue;
    struct cpb_frame *f = tx_slot(s);
    uint8_t *buf = s->tx_buf[s->tx_count];
    memcpy(buf, p->frame, p->len);
    memcpy(buf, mac, 6);
    f->data = buf;
    f->len = p->len;
    s->tx_count++;
    p->hop = 0;
  }
}

static void expire_parked(struct cpb_stack *s) {
  for (int i = 0; i < CPB_ARP_PENDING; i++) {
    struct arp_pending *p = &s->pending[i];
    if (p->hop && s->now >= p->expires) {
      p->hop = 0;
      s->stats.arp_unresolved_drops++;
    }
  }
}

/* ---- IPv4 output (also the ipout implementation TCP uses) ---- */

/* Opens a frame to dst and returns where its L4 payload goes. With the next hop unresolved the frame is
 * built in a parking slot instead of the TX batch; NULL only when there is no route or no parking room. */
static uint8_t *ip_begin(struct cpb_stack *s, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  cpb_ip4_t hop = on_link(s, dst) ? dst : s->cfg.gateway;
  if (hop == 0) {
    s->stats.arp_unresolved_drops++;
    return NULL;
  }
  const uint8_t *mac = resolve(s, hop);
  uint8_t *buf;
  if (mac) {
    tx_slot(s); /* after resolve(): it may have queued an ARP request */
    buf = s->tx_buf[s->tx_count];
    memcpy(buf, mac, 6);
    s->tx_open_pending = NULL;
  } else {
    struct arp_pending *p = park_slot(s);
    if (!p) {
      s->stats.arp_unresolved_drops++;
      return NULL;
    }
    buf = p->frame;
    memset(buf, 0, 6);
    s->tx_open_pending = p;
  }
  s->tx_open_buf = buf;
  s->tx_hop = hop;
  s->tx_src = src;
  s->tx_dst = dst;
  *cap = CPB_MIN((size_t)s->cfg.mtu, (size_t)CPB_FRAME_MAX - ETH_HDR_LEN) - IPV4_MIN_HDR_LEN;
  return buf + L2L3_LEN;
}

static void ip_commit(struct cpb_stack *s, uint8_t proto, size_t l4_len) {
  uint8_t *buf = s->tx_open_buf;
  if (!buf) return;
  s->tx_open_buf = NULL;
  struct eth_repr eth = {.ethertype = ETHERTYPE_IPV4};
  memcpy(eth.dst, buf, 6);
  memcpy(eth.src, s->cfg.mac, 6);
  eth_emit(&eth, buf, CPB_FRAME_MAX);
  struct ipv4_repr ip = {.src = s->tx_src, .dst = s->tx_dst, .proto = proto, .ttl = 64, .id = s->ip_id++,
                         .dont_fragment = true, .payload_len = (uint16_t)l4_len};
  ipv4_emit(&ip, buf + ETH_HDR_LEN, CPB_FRAME_MAX - ETH_HDR_LEN);
  if (proto == IPPROTO_TCP_) tcp_fill_checksum(buf + L2L3_LEN, l4_len, s->tx_src, s->tx_dst);
  uint32_t len = (uint32_t)(L2L3_LEN + l4_len);
  struct arp_pending *p = s->tx_open_pending;
  if (p) {
    p->hop = s->tx_hop;
    p->len = len;
    p->expires = s->now + ARP_PARK_US;
    s->stats.arp_parked++;
    return;
  }
  s->tx[s->tx_count].data = buf;
  s->tx[s->tx_count].len = len;
  s->tx_count++;
}

static uint8_t *ipout_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) { return ip_begin(ctx, src, dst, cap); }
static void ipout_commit(void *ctx, size_t l4_len) { ip_commit(ctx, IPPROTO_TCP_, l4_len); }

/* ---- ICMP ---- */

static void icmp_input(struct cpb_stack *s, const struct ipv4_repr *ip, const uint8_t *p, size_t len) {
  struct icmp_repr req;
  s->stats.icmp_in++;
  if (icmp_parse(p, len, &req) != 0) { s->stats.icmp_bad++; return; }
  if (req.type != ICMP_ECHO_REQUEST) return;
  size_t cap;
  uint8_t *out = ip_begin(s, ip->dst, ip->src, &cap); /* answer from the address that was pinged */
  if (!out) return;
  struct icmp_repr rep = req;
  rep.type = ICMP_ECHO_REPLY;
  rep.code = 0;
  int n = icmp_emit(&rep, out, cap);
  if (n < 0) {
    s->tx_open_buf = NULL;
    return;
  }
  ip_commit(s, IPPROTO_ICMP_, (size_t)n);
  s->stats.icmp_echo_replies++;
}

/* ---- input ---- */

static void ipv4_input(struct cpb_stack *s, const uint8_t *p, size_t len) {
  struct ipv4_repr ip;
  const uint8_t *payload;
  s->stats.ipv4_in++;
  int rc = ipv4_parse(p, len, &ip, &payload);
  if (rc == -EBADMSG) { s->stats.ipv4_bad_checksum++; return; }
  if (rc != 0) { s->stats.ipv4_bad++; return; }
  if (ip.dst != s->cfg.ip && (s->cfg.vip == 0 || ip.dst != s->cfg.vip)) { s->stats.not_for_us++; return; }
  if (ip.is_fragment) { s->stats.ipv4_fragments_dropped++; return; }
  switch (ip.proto) {
  case IPPROTO_TCP_: tcp_input(s->tcp, ip.src, ip.dst, payload, ip.payload_len, s->now); break;
  case IPPROTO_ICMP_: icmp_input(s, &ip, payload, ip.payload_len); break;
  default:
    if (s->extra.proto && ip.proto == s->extra.proto && ip.dst == s->cfg.ip) s->extra.input(s->extra.ctx, ip.src, payload, ip.payload_len, s->now);
    else s->stats.ipv4_unknown_proto++;
    break;
  }
}

void cpb_stack_input(struct cpb_stack *s, const uint8_t *frame, size_t len, cpb_time_t now) {
  struct eth_repr eth;
  const uint8_t *payload;
  size_t plen;
  s->now = now;
  s->stats.frames_in++;
  if (eth_parse(frame, len, &eth, &payload, &plen) != 0) { s->stats.bad_frames++; return; }
  if (memcmp(eth.dst, s->cfg.mac, 6) != 0 && !eth_is_broadcast(eth.dst)) { s->stats.not_for_us++; return; }
  switch (eth.ethertype) {
  case ETHERTYPE_ARP: arp_input(s, payload, plen); break;
  case ETHERTYPE_IPV4: ipv4_input(s, payload, plen); break;
  default: s->stats.unknown_ethertype++; break;
  }
}

cpb_time_t cpb_stack_poll(struct cpb_stack *s, cpb_time_t now) {
  s->now = now;
  expire_parked(s);
  cpb_time_t next = s->extra.poll ? s->extra.poll(s->extra.ctx, now) : UINT64_MAX;
  cpb_time_t tnext = tcp_poll(s->tcp, now);
  if (tnext < next) next = tnext;
  cpb_stack_flush(s);
  return next;
}

void cpb_stack_announce(struct cpb_stack *s, cpb_time_t now) {
  static const uint8_t zero[6];
  s->now = now;
  arp_send(s, ARP_OP_REQUEST, BCAST, zero, s->cfg.ip); /* gratuitous: peers update stale caches */
  if (s->cfg.gateway) arp_request(s, arp_slot(s, s->cfg.gateway));
  cpb_stack_flush(s);
}

void cpb_stack_init(struct cpb_stack *s, const struct cpb_stack_config *cfg, cpb_flush_fn flush, void *flush_ctx) {
  memset(s, 0, sizeof(*s));
  s->cfg = *cfg;
  if (s->cfg.mtu == 0 || s->cfg.mtu > CPB_FRAME_MAX - ETH_HDR_LEN) s->cfg.mtu = 1500;
  s->netmask = cfg->prefix_len == 0 ? 0 : (uint32_t)(0xffffffffu << (32 - cfg->prefix_len));
  s->flush = flush;
  s->flush_ctx = flush_ctx;
  s->ipout.ctx = s;
  s->ipout.begin = ipout_begin;
  s->ipout.commit = ipout_commit;
}

void cpb_stack_attach_tcp(struct cpb_stack *s, struct cpb_tcp *tcp) { s->tcp = tcp; }

void cpb_stack_set_proto(struct cpb_stack *s, const struct cpb_stack_proto *p) {
  if (p) s->extra = *p;
  else memset(&s->extra, 0, sizeof(s->extra));
}

uint8_t *cpb_stack_dgram_begin(struct cpb_stack *s, cpb_ip4_t dst, size_t *cap) { return ip_begin(s, s->cfg.ip, dst, cap); }
void cpb_stack_dgram_commit(struct cpb_stack *s, uint8_t proto, size_t len) { ip_commit(s, proto, len); }
void cpb_stack_dgram_abort(struct cpb_stack *s) { s->tx_open_buf = NULL; }
