/* Host steering for the AF_XDP backend (native/dev/xsk.c).
 *
 * Only frames meant for the stack go to its AF_XDP sockets: IPv4 TCP and ICMP whose destination is the
 * stack's address (or VIP), IPv4 protocol 253 (the migration lane) to the stack's own address only, and
 * ARP whose target protocol address is the stack's address. Everything else
 * (other addresses, UDP, IPv6, VLAN-tagged frames) is XDP_PASS, so the host keeps its own traffic.
 *
 * Maps, filled by xsk.c at open:
 *   cpb_xsks  XSKMAP keyed by rx queue index -> the socket bound to that queue. A queue without a
 *             socket falls back to XDP_PASS (the flags argument of bpf_redirect_map).
 *   cpb_cfg   one entry: the stack's IPv4 address and optional VIP (network order) and the owner's pid, which lets a
 *             later run recognise a program left behind by a crashed process and detach it.
 * Build: make -C native/bpf (clang -O2 -g -target bpf); -g keeps BTF, which libxdp's dispatcher needs. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct cpb_steer_cfg {
  __u32 ip;        /* network byte order; 0 = steer nothing yet */
  __u32 owner_pid;
  __u32 vip;       /* a virtual address shared with other hosts behind the L4 balancer; 0 = none */
};

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, __u32);
} cpb_xsks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct cpb_steer_cfg);
} cpb_cfg SEC(".maps");

/* IPv4 protocol 253 (RFC 3692: for experimentation): the engines' migration lane (native/mig/). */
#define CPB_IPPROTO_MIG 253
#define ARP_HDR_LEN 28
#define ARP_TPA_OFF 24

static __always_inline int for_stack(void *data, void *end, __u32 ip, __u32 vip) {
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > end) return 0;
  if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
    __u8 *arp = (__u8 *)(eth + 1);
    if ((void *)(arp + ARP_HDR_LEN) > end) return 0;
    /* Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4. */
    if (arp[0] != 0 || arp[1] != 1 || arp[2] != 0x08 || arp[3] != 0x00 || arp[4] != 6 || arp[5] != 4) return 0;
    __u32 tpa;
    __builtin_memcpy(&tpa, arp + ARP_TPA_OFF, sizeof(tpa));
    return tpa == ip;
  }
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr *iph = (struct iphdr *)(eth + 1);
    if ((void *)(iph + 1) > end) return 0;
    if (iph->version != 4 || iph->ihl < 5) return 0;
    /* ARP is answered for the own address only: the VIP's frames arrive by MAC from the balancer. */
    if (iph->daddr != ip && (!vip || iph->daddr != vip)) return 0;
    /* The migration lane talks host to host, so only to the own address: the VIP is every host's. */
    if (iph->protocol == CPB_IPPROTO_MIG) return iph->daddr == ip;
    return iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_ICMP;
  }
  return 0;
}

SEC("xdp")
int cpb_steer(struct xdp_md *ctx) {
  __u32 key = 0;
  struct cpb_steer_cfg *cfg = bpf_map_lookup_elem(&cpb_cfg, &key);
  if (!cfg || !cfg->ip) return XDP_PASS;
  if (!for_stack((void *)(long)ctx->data, (void *)(long)ctx->data_end, cfg->ip, cfg->vip)) return XDP_PASS;
  return bpf_redirect_map(&cpb_xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
