/* Raw packet rate of the dpdk: backend with no TCP: one thread, the engine's own ops table
 * (native/dev/dpdk.c), bursts of 64 minimum-size frames — what `dpdk-testpmd --forward-mode=txonly` /
 * `rxonly` do on the same device, so the two rates compare the backend's per-packet cost with DPDK's.
 *
 *   dpdk_raw tx|rx SECONDS DEVARGS    prints {"mode","pps","packets","seconds"} on stdout
 *
 * tx: allocate + copy + rte_eth_tx_burst per burst (as the engine sends). rx: rx_burst + rx_release. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dev/dev.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "tx") && strcmp(argv[1], "rx"))) {
    fprintf(stderr, "usage: %s tx|rx SECONDS DEVARGS\n", argv[0]);
    return 2;
  }
  bool tx = !strcmp(argv[1], "tx");
  double secs = atof(argv[2]);
  struct cpb_dev *d;
  char err[600];
  int rc = cpb_dev_dpdk_ops.open(&d, argv[3], err, sizeof(err));
  if (rc) {
    fprintf(stderr, "dpdk_raw: %s\n", err);
    return 1;
  }
  static uint8_t frame[60];
  memset(frame, 0xff, 6); /* broadcast, so the peer end accepts it */
  d->ops->get_mac(d, frame + 6);
  frame[12] = 0x88, frame[13] = 0xb5; /* local experimental ethertype: nobody answers */
  struct cpb_frame burst[CPB_BURST];
  for (int i = 0; i < CPB_BURST; i++) burst[i] = (struct cpb_frame){.data = frame, .len = sizeof(frame)};
  uint64_t packets = 0;
  double t0 = now_s(), end = t0 + secs, t = t0;
  for (uint32_t iter = 0; t < end; iter++) {
    if (tx) {
      packets += (uint64_t)d->ops->tx_burst(d, burst, CPB_BURST, 0);
    } else {
      int n = d->ops->rx_burst(d, burst, CPB_BURST, 0);
      if (n > 0) d->ops->rx_release(d, burst, n);
      packets += (uint64_t)(n > 0 ? n : 0);
    }
    if ((iter & 255) == 0) t = now_s();
  }
  t = now_s();
  struct cpb_dev_stats st;
  d->ops->get_stats(d, &st);
  printf("{\"mode\":\"%s\",\"pps\":%.0f,\"packets\":%llu,\"seconds\":%.3f,\"portTx\":%llu,\"portRx\":%llu}\n", argv[1],
         (double)packets / (t - t0), (unsigned long long)packets, t - t0, (unsigned long long)st.port_tx_packets,
         (unsigned long long)st.port_rx_packets);
  d->ops->close(d);
  return 0;
}
