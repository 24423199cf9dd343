/* See lanesteer.h. */
#include "lanesteer.h"

#include <stdio.h>

#include "../dev/dev.h"
#include "../dev/lbsteer.h"

static int lb_steer(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int32_t backend) {
  const struct lane_steer_ctx *c = ctx;
  return backend < 0 ? -EINVAL : cpb_lb_redirect(c->fd, src, sport, dst, dport, (uint32_t)backend);
}
static int lb_owner(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  const struct lane_steer_ctx *c = ctx;
  return cpb_lb_lookup(c->fd, src, sport, dst, dport);
}
static int lb_claim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
                    int32_t *owner) {
  const struct lane_steer_ctx *c = ctx;
  return backend < 0 ? -EINVAL : cpb_lb_claim(c->fd, src, sport, dst, dport, token, (uint32_t)backend, owner);
}
static int lb_unclaim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  const struct lane_steer_ctx *c = ctx;
  return cpb_lb_unclaim(c->fd, src, sport, dst, dport, token);
}

static int mem_steer(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, int32_t backend) {
  const struct lane_steer_ctx *c = ctx;
  int rc = cpb_mem_steer(c->wire, src, sport, dst, dport, backend);
  return rc < 0 ? rc : 0;
}
static int mem_owner(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport) {
  const struct lane_steer_ctx *c = ctx;
  return cpb_mem_steer_lookup(c->wire, src, sport, dst, dport);
}
static int mem_claim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token, int32_t backend,
                     int32_t *owner) {
  const struct lane_steer_ctx *c = ctx;
  int who = -1;
  int rc = cpb_mem_claim(c->wire, src, sport, dst, dport, token, backend, &who);
  *owner = who;
  return rc;
}
static int mem_unclaim(void *ctx, cpb_ip4_t src, uint16_t sport, cpb_ip4_t dst, uint16_t dport, uint64_t token) {
  const struct lane_steer_ctx *c = ctx;
  return cpb_mem_unclaim(c->wire, src, sport, dst, dport, token);
}

void lane_steer_ctx_clear(struct lane_steer_ctx *ctx) {
  if (ctx->kind == 1) cpb_lb_close(ctx->fd);
  memset(ctx, 0, sizeof(*ctx));
  ctx->fd = -1;
}

int lane_steering_lb(struct cpb_lane_steering *st, struct lane_steer_ctx *ctx, int fd, int32_t self) {
  if (fd < 0 || self < 0) return -EINVAL;
  lane_steer_ctx_clear(ctx);
  ctx->kind = 1;
  ctx->fd = fd;
  *st = (struct cpb_lane_steering){.steer = lb_steer, .owner = lb_owner, .claim = lb_claim, .unclaim = lb_unclaim, .ctx = ctx, .self = self};
  return 0;
}

int lane_steering_mem(struct cpb_lane_steering *st, struct lane_steer_ctx *ctx, const char *wire, int32_t self) {
  if (!wire || !*wire || strlen(wire) >= sizeof(ctx->wire) || self < 0) return -EINVAL;
  lane_steer_ctx_clear(ctx);
  ctx->kind = 2;
  snprintf(ctx->wire, sizeof(ctx->wire), "%s", wire);
  *st = (struct cpb_lane_steering){.steer = mem_steer, .owner = mem_owner, .claim = mem_claim, .unclaim = mem_unclaim, .ctx = ctx, .self = self};
  return 0;
}
