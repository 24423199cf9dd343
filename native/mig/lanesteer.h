/* The migration lane's balancer hooks (struct cpb_lane_steering) over the XDP balancer's pinned redirect
 * map (native/dev/lbsteer.h) and over the mem: switch (native/dev/dev.h): steering, the owner lookup and
 * the claims that arbitrate a migration. */
#ifndef CPB_LANE_STEER_H
#define CPB_LANE_STEER_H
#include "lane.h"

struct lane_steer_ctx {
  int kind; /* 0 none, 1 lb, 2 mem */
  int fd;   /* lb: the pinned map, owned (closed by lane_steer_ctx_clear) */
  char wire[64];
};

/* Fills st to steer through the map fd (taking it over) / the switch called wire; 0 or -EINVAL. */
int lane_steering_lb(struct cpb_lane_steering *st, struct lane_steer_ctx *ctx, int fd, int32_t self);
int lane_steering_mem(struct cpb_lane_steering *st, struct lane_steer_ctx *ctx, const char *wire, int32_t self);
/* Closes what ctx holds and makes it empty. */
void lane_steer_ctx_clear(struct lane_steer_ctx *ctx);
#endif
