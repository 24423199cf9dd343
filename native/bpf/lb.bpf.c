/* L4 load balancer for the VIP (attached on the lb namespace's client-facing veth, lb-cl).
 *
 * IPv4 TCP to the VIP is forwarded at layer 2 to one backend: the Ethernet addresses are rewritten and
 * the frame is XDP_REDIRECTed through a devmap to that backend's interface. The IP header is left alone
 * (destination stays the VIP): the backends own the VIP too and answer the client directly through the
 * lb's ordinary kernel routing (direct server return), so only client->VIP packets pass through here.
 *
 * Which backend:
 *   1. lb_redirect (LRU hash, 5-tuple -> backend + last-seen time). Written here for every new flow so
 *      it sticks, and written by the runtimes from user space when they migrate a connection: the next
 *      packet of that flow goes to the new host. An entry idle longer than lb_cfg.idle_ns counts as
 *      absent here, so ageing is exact however rarely user space sweeps; the sweep (native/bpf/lbctl.c
 *      expire) only reclaims the space, and LRU eviction is the backstop when the table is full.
 *   2. on a miss, consistent hashing: hash(5-tuple) indexes lb_table, a Maglev lookup table filled by
 *      user space (dataplane/lb-maglev.ts), so a change of the backend set moves few new flows.
 * Anything else (other destinations, non-TCP, IP options we cannot see past, fragments) is XDP_PASS,
 * and so is a frame whose backend has no interface configured yet: the lb keeps routing normally.
 *
 * Machine fact: a frame redirected into a veth is delivered only when the peer end (a0/b0) runs NAPI,
 * which it does with an XDP program attached or GRO enabled; otherwise it is dropped silently.
 * Build: make -C native/bpf (clang -O2 -g -target bpf). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lb_maps.h" /* layouts shared with lbctl.c and native/dev/lbsteer.c; sizes also in dataplane/lb.ts */

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct lb_cfg);
} lb_cfg SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, LB_MAX_FLOWS);
  __type(key, struct lb_flow);
  __type(value, struct lb_flow_val);
} lb_redirect SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, LB_TABLE_SIZE);
  __type(key, __u32);
  __type(value, __u32);
} lb_table SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, LB_MAX_BACKENDS);
  __type(key, __u32);
  __type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_DEVMAP);
  __uint(max_entries, LB_MAX_BACKENDS);
  __type(key, __u32);
  __type(value, __u32);
} lb_devs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, LB_MAX_BACKENDS);
  __type(key, __u32);
  __type(value, struct lb_counter);
} lb_backend_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, LB_ST_N);
  __type(key, __u32);
  __type(value, __u64);
} lb_stats SEC(".maps");

/* Rewriting last_seen on every packet would bounce its cache line between CPUs for nothing: ageing
 * works in seconds, so a refresh every millisecond is plenty. */
#define LB_TOUCH_NS 1000000ULL

static __always_inline void count(__u32 idx) {
  __u64 *c = bpf_map_lookup_elem(&lb_stats, &idx);
  if (c) *c += 1;
}

static __always_inline __u32 mix32(__u32 h) {
  /* murmur3's finaliser: every input bit reaches every output bit. */
  h ^= h >> 16;
  h *= 0x85ebca6bU;
  h ^= h >> 13;
  h *= 0xc2b2ae35U;
  h ^= h >> 16;
  return h;
}

static __always_inline __u32 flow_hash(const struct lb_flow *f) {
  __u32 h = 0x9e3779b9U;
  h = mix32(h ^ f->saddr);
  h = mix32(h ^ f->daddr);
  h = mix32(h ^ (((__u32)f->sport << 16) | f->dport));
  h = mix32(h ^ f->proto);
  return h;
}

SEC("xdp")
int cpb_lb(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *end = (void *)(long)ctx->data_end;
  __u32 zero = 0;

  struct lb_cfg *cfg = bpf_map_lookup_elem(&lb_cfg, &zero);
  if (!cfg || !cfg->vip) return XDP_PASS;

  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) goto pass;
  if (eth->h_proto != bpf_htons(ETH_P_IP)) goto pass;
  struct iphdr *iph = (struct iphdr *)(eth + 1);
  if ((void *)(iph + 1) > end) goto pass;
  if (iph->version != 4 || iph->daddr != cfg->vip || iph->protocol != IPPROTO_TCP) goto pass;
  /* Fragments carry no ports (later ones) or would be split from their followers: leave them to the
   * kernel, which drops them for lack of a route rather than sending half a datagram somewhere. */
  if (iph->frag_off & bpf_htons(0x3fff)) goto pass;
  __u32 ihl = (__u32)iph->ihl * 4;
  if (ihl < sizeof(*iph)) goto pass;
  struct tcphdr *th = (struct tcphdr *)((__u8 *)iph + ihl);
  if ((void *)(th + 1) > end) goto pass;

  struct lb_flow key = {
    .saddr = iph->saddr, .daddr = iph->daddr, .sport = th->source, .dport = th->dest, .proto = IPPROTO_TCP,
  };
  __u64 now = bpf_ktime_get_ns();
  __u32 backend;
  int fresh = 0, aged = 0;
  struct lb_flow_val *v = bpf_map_lookup_elem(&lb_redirect, &key);
  /* Signed: user space may have stamped the entry a moment after this CPU read its clock. */
  __s64 idle = v ? (__s64)(now - v->last_seen_ns) : 0;
  if (v && cfg->idle_ns && idle > (__s64)cfg->idle_ns) aged = 1;
  if (v && !aged) {
    backend = v->backend;
    if (idle > (__s64)LB_TOUCH_NS) v->last_seen_ns = now;
  } else {
    __u32 slot = flow_hash(&key) % LB_TABLE_SIZE;
    __u32 *b = bpf_map_lookup_elem(&lb_table, &slot);
    if (!b) goto no_backend;
    backend = *b;
    fresh = 1;
  }

  struct lb_backend *be = bpf_map_lookup_elem(&lb_backends, &backend);
  if (!be || !be->ifindex) goto no_backend;
  if (fresh) {
    /* Only flows that really go somewhere are remembered: a frame passed while the backends are not
     * configured yet must not pin its flow to an empty slot. NOEXIST: if a runtime wrote this flow in
     * the meantime, its choice wins from the next packet on (an aged entry is simply replaced). */
    struct lb_flow_val nv = { .backend = backend, .last_seen_ns = now };
    bpf_map_update_elem(&lb_redirect, &key, &nv, aged ? BPF_ANY : BPF_NOEXIST);
    count(aged ? LB_ST_AGED : LB_ST_NEW);
  } else {
    count(LB_ST_HIT);
  }
  __builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
  __builtin_memcpy(eth->h_source, be->lb_mac, ETH_ALEN);
  struct lb_counter *c = bpf_map_lookup_elem(&lb_backend_stats, &backend);
  if (c) {
    c->packets += 1;
    c->bytes += (__u64)(end - data);
  }
  /* A missing devmap slot aborts (visible in the xdp:xdp_exception tracepoint) rather than passing a
   * frame whose MAC addresses were already rewritten. */
  return bpf_redirect_map(&lb_devs, backend, 0);

no_backend:
  count(LB_ST_NO_BACKEND);
  return XDP_PASS;
pass:
  count(LB_ST_PASS);
  return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
