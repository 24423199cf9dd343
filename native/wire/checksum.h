/* Internet checksum (RFC 1071) with incremental accumulation, and the IPv4 pseudo-header sum. */
#ifndef CPB_WIRE_CHECKSUM_H
#define CPB_WIRE_CHECKSUM_H
#include "../common.h"

/* Adds `len` bytes to a running 32-bit one's-complement accumulator. Odd lengths are padded with a
 * zero byte, so only the last call of a sequence may pass an odd length. */
uint32_t csum_add(uint32_t acc, const void *data, size_t len);
/* Folds the accumulator to 16 bits and complements it: the value to store in a checksum field. */
uint16_t csum_fold(uint32_t acc);
/* Sum of the IPv4 pseudo-header for TCP/UDP (addresses in host order). */
uint32_t csum_pseudo4(cpb_ip4_t src, cpb_ip4_t dst, uint8_t proto, uint16_t l4_len);
#endif
