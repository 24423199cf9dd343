/* The L4 balancer's map layouts, shared by the XDP program (lb.bpf.c), its control helper (lbctl.c)
 * and the runtimes' in-process redirect writer (native/dev/lbsteer.c), so the three cannot drift apart.
 * Fixed-width <linux/types.h> types work in BPF and in user space alike. */
#ifndef CPB_LB_MAPS_H
#define CPB_LB_MAPS_H
#include <linux/types.h>

#define LB_MAX_BACKENDS 64
#define LB_TABLE_SIZE 65537 /* prime, as Maglev needs */
#define LB_MAX_FLOWS 65536

struct lb_cfg {
  __u32 vip;        /* network byte order; 0 = balance nothing (every frame passes) */
  __u32 n_backends; /* informational: the table only holds valid indices */
  __u64 idle_ns;    /* a flow idle this long is new again (0 = never); user space reclaims the entry */
};

struct lb_flow {
  __u32 saddr;      /* network byte order, as on the wire */
  __u32 daddr;
  __u16 sport;
  __u16 dport;
  __u8 proto;
  __u8 pad[3];      /* zeroed, so the key hashes the same from BPF and user space */
};

struct lb_flow_val {
  __u32 backend;
  __u32 pad;        /* 0 in flow entries; in a claim, 32 more bits of its token (native/dev/lbsteer.c) */
  __u64 last_seen_ns; /* bpf_ktime_get_ns, i.e. CLOCK_MONOTONIC */
};

struct lb_backend {
  __u32 ifindex;    /* in the lb namespace; 0 = slot unused */
  __u8 mac[6];      /* the backend's MAC on that link (frame destination) */
  __u8 lb_mac[6];   /* the lb's own MAC on that link (frame source) */
};

struct lb_counter {
  __u64 packets;
  __u64 bytes;
};

/* Indices into lb_stats. */
enum { LB_ST_HIT, LB_ST_NEW, LB_ST_AGED, LB_ST_PASS, LB_ST_NO_BACKEND, LB_ST_N };
#endif
