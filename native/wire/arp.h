/* ARP for IPv4 over Ethernet (RFC 826). Only the htype=1/ptype=0x0800/hlen=6/plen=4 form is accepted. */
#ifndef CPB_WIRE_ARP_H
#define CPB_WIRE_ARP_H
#include "../common.h"
#include "eth.h"

#define ARP_LEN 28
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

struct arp_repr {
  uint16_t op;
  uint8_t sha[ETH_ADDR_LEN];
  cpb_ip4_t spa;
  uint8_t tha[ETH_ADDR_LEN];
  cpb_ip4_t tpa;
};

/* -EINVAL when short, -EPROTONOSUPPORT for other hardware/protocol types or unknown ops. */
int arp_parse(const uint8_t *buf, size_t len, struct arp_repr *out);
/* Writes ARP_LEN bytes; returns ARP_LEN or -ENOSPC. */
int arp_emit(const struct arp_repr *r, uint8_t *buf, size_t cap);
#endif
