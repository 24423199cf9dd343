/* Ethernet II frames: a checked view for parsing and a plain repr for emitting. */
#ifndef CPB_WIRE_ETH_H
#define CPB_WIRE_ETH_H
#include "../common.h"

#define ETH_HDR_LEN 14
#define ETH_ADDR_LEN 6
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN 0x8100

struct eth_repr {
  uint8_t dst[ETH_ADDR_LEN];
  uint8_t src[ETH_ADDR_LEN];
  uint16_t ethertype;
};

/* Parses the header; payload and payload_len describe the rest. -EINVAL when too short. */
int eth_parse(const uint8_t *buf, size_t len, struct eth_repr *out, const uint8_t **payload, size_t *payload_len);
/* Writes the 14-byte header; returns ETH_HDR_LEN, or -ENOSPC when cap is too small. */
int eth_emit(const struct eth_repr *r, uint8_t *buf, size_t cap);
bool eth_is_broadcast(const uint8_t addr[ETH_ADDR_LEN]);
#endif
