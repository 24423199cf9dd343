/* A device is a queue pair of raw Ethernet frames behind a tiny ops table (DPDK-example style):
 * open / rx_burst / rx_release / tx_burst / close, plus what the engine needs to sleep (a pollable fd
 * and the next time the device itself has something due, e.g. a delayed frame on the mem: wire).
 * One file per backend; the engine never knows which one it drives. */
#ifndef CPB_DEV_H
#define CPB_DEV_H
#include "../common.h"

#define CPB_BURST 64
#define CPB_FRAME_MAX 2048

struct cpb_frame {
  uint8_t *data;
  uint32_t len;
  uint64_t cookie; /* backend's own handle (e.g. UMEM address) for rx_release */
};

struct cpb_dev_stats {
  uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes;
  uint64_t rx_dropped, tx_dropped; /* ring full, oversize, injected loss */
  uint64_t injected_loss, injected_dup, injected_reorder, injected_corrupt, injected_delay;
  uint64_t wakeups; /* syscalls made because the ring asked (need_wakeup) */
  /* The port as the NIC/PMD sees it (dpdk: only; zero elsewhere): link, hardware counters, offloads. */
  uint64_t link_up, link_speed_mbps;
  uint64_t port_rx_packets, port_tx_packets, port_rx_missed, port_rx_errors, port_tx_errors, port_rx_nombuf;
  uint64_t rx_csum_offload, rx_csum_bad; /* the NIC verifies checksums; frames it flagged bad (dropped) */
};

struct cpb_dev;

struct cpb_dev_ops {
  const char *scheme; /* "mem", "xdp", "dpdk" */
  /* spec is the URI without "scheme:". Returns 0 or -errno; *err gets a human sentence on failure. */
  int (*open)(struct cpb_dev **out, const char *spec, char *err, size_t errlen);
  /* Fills up to max frames; they stay valid until rx_release. Returns the count (0 = none). */
  int (*rx_burst)(struct cpb_dev *d, struct cpb_frame *frames, int max, cpb_time_t now);
  void (*rx_release)(struct cpb_dev *d, struct cpb_frame *frames, int n);
  /* Copies n frames out; returns how many were accepted (the rest are the caller's to drop/count). */
  int (*tx_burst)(struct cpb_dev *d, const struct cpb_frame *frames, int n, cpb_time_t now);
  /* fd that becomes readable when RX has frames (-1: none, the engine then naps briefly). */
  int (*wait_fd)(struct cpb_dev *d);
  /* Earliest time the device has work due by itself (delayed frames); UINT64_MAX when none. */
  cpb_time_t (*next_deadline)(struct cpb_dev *d);
  void (*get_mac)(struct cpb_dev *d, uint8_t mac[6]);
  void (*get_stats)(struct cpb_dev *d, struct cpb_dev_stats *out);
  void (*close)(struct cpb_dev *d);
};

/* Every device starts with this so generic code can reach its ops. */
struct cpb_dev {
  const struct cpb_dev_ops *ops;
};

extern const struct cpb_dev_ops cpb_dev_mem_ops;
extern const struct cpb_dev_ops cpb_dev_xsk_ops; /* only when built with libxdp */
extern const struct cpb_dev_ops cpb_dev_dpdk_ops; /* only when built with DPDK (CPB_HAVE_DPDK) */

/* Opens a device by scheme. -ENODEV for an unknown scheme, with *err set.
 *
 * mem:NAME[?loss=P&dup=P&reorder=P&corrupt=P&delay_us=N&jitter_us=N&seed=N&mac=02:..&slots=N&ports=N&port=K]
 *   An in-memory wire of `ports` ports (2..CPB_MEM_MAX_PORTS, default 2; the first open decides, as for
 *   slots). With 2 it is a cable: first open = end 0, second = end 1, a third -EBUSY. With more it is a
 *   switch: an open takes the first free port, or port=K (-EBUSY when taken); frames go by the steering
 *   table (cpb_mem_steer), else by MACs learned from senders, else are flooded. Faults are applied to
 *   what this port transmits (P in 0..1), seeded with seed+port (default seed 1). slots: ring size per
 *   ordered pair of ports, a power of two (default 4096). rx_release frees the oldest frames handed out,
 *   so release frames in the order rx_burst returned them (with their cookies, which name the ring).
 * xdp:IFACE[@queue]?ip=A.B.C.D
 *   AF_XDP on every rx queue of IFACE (or only @queue). ip= is required: the stack's IPv4 address,
 *   written into the steering program's map (TCP/ICMP to it and ARP for it come to the stack, the rest
 *   goes to the kernel). The program native/bpf/steer.bpf.o (make -C native/bpf) is looked for in
 *   $CAPYBARA_BPF_DIR, else beside the binary/addon containing the engine or one folder up, else in
 *   ./build. Needs root (CAP_NET_ADMIN + CAP_BPF); -ENOTSUP when built without libxdp.
 * dpdk:DEVARGS[?mbufs=N&rxd=N&txd=N&eal=ARGS]
 *   A DPDK port (native/dev/dpdk.c): a vdev (net_af_packet0,iface=eth0 / net_af_xdp0,iface=eth0 /
 *   net_memif0,role=server,socket=PATH / net_tap0) or a PCI address. EAL starts at the first open in
 *   the process (eal= / $CAPYBARA_DPDK_EAL add arguments then); -ENOTSUP when built without DPDK. */
int cpb_dev_open(struct cpb_dev **out, const char *uri, char *err, size_t errlen);

#define CPB_MEM_MAX_PORTS 16
/* Steers the flow src:sport -> dst:dport (IPv4/TCP, as the frames from the client carry it) on mem switch
 * NAME to `port`, its destination MAC rewritten to that port's: the mem wire's analogue of the L4
 * balancer's redirect table, written when a flow migrates. port < 0 removes the entry. Returns the number
 * of entries the table holds afterwards, or -ENOENT (no such wire), -EINVAL (a cable, or port out of
 * range), -ENOSPC (table full). Takes the registry lock; the data path reads the table lock-free. */
int cpb_mem_steer(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int port);
/* The port mem switch NAME steers the flow src:sport -> dst:dport to (the entry cpb_mem_steer wrote), or
 * -ENOENT (the flow is not in the steering table), -ENODEV (no such wire, or a cable: no table). Takes
 * the registry lock and reads the table as the data path does. */
int cpb_mem_steer_lookup(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport);
/* Migration claims, as the XDP balancer keeps them (native/dev/lbsteer.h cpb_lb_claim): the first claim of
 * (flow, token) wins; 0, -EEXIST with *owner the port that holds it, -ENODEV. unclaim: 0 or -ENOENT. */
int cpb_mem_claim(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int port,
                  int *owner);
int cpb_mem_unclaim(const char *name, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token);
#endif
