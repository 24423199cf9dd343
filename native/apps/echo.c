/* echo: every byte comes back, in order. The engine's output area gives it backpressure for free: the
 * flow is not read while earlier replies wait for send-buffer room. */
#include "native.h"

static long echo_on_data(void *state, const uint8_t *in, size_t n, uint8_t *out) {
  (void)state;
  memcpy(out, in, n);
  return (long)n;
}

const struct cpb_native_app cpb_native_echo = {.name = "echo", .on_data = echo_on_data};
