/* JS-served flows on the lane (see lanejs.h): the ports that take them and the records waiting for JS. */
#include "lanejs.h"

#include <openssl/crypto.h>
#include <stdlib.h>

struct stashed {
  uint64_t flow_id; /* 0 = free */
  uint64_t order;   /* when it came, for taking the oldest first */
  uint64_t tag;     /* the caller's: which flow of that id it is */
  uint8_t *rec;
  size_t len;
};

struct cpb_lane_js {
  uint16_t ports[CPB_LANE_JS_PORTS]; /* 0 = free */
  struct stashed stash[CPB_LANE_JS_STASH];
  size_t waiting, bytes;
  uint64_t stashed; /* records stashed so far: their order */
};

struct cpb_lane_js *cpb_lane_js_new(void) { return calloc(1, sizeof(struct cpb_lane_js)); }

void cpb_lane_js_free_record(uint8_t *rec, size_t len) {
  if (!rec) return;
  OPENSSL_cleanse(rec, len); /* a TLS session's keys travel in it */
  free(rec);
}

static void unstash(struct cpb_lane_js *j, struct stashed *s) {
  cpb_lane_js_free_record(s->rec, s->len);
  j->bytes -= s->len;
  j->waiting--;
  *s = (struct stashed){0};
}

void cpb_lane_js_free(struct cpb_lane_js *j) {
  if (!j) return;
  for (int i = 0; i < CPB_LANE_JS_STASH; i++)
    if (j->stash[i].flow_id) unstash(j, &j->stash[i]);
  free(j);
}

int cpb_lane_js_listen(struct cpb_lane_js *j, uint16_t port, bool on) {
  if (port == 0) return -EINVAL;
  int free_at = -1;
  for (int i = 0; i < CPB_LANE_JS_PORTS; i++) {
    if (j->ports[i] == port) {
      if (!on) j->ports[i] = 0;
      return 0;
    }
    if (j->ports[i] == 0 && free_at < 0) free_at = i;
  }
  if (!on) return 0;
  if (free_at < 0) return -ENOSPC;
  j->ports[free_at] = port;
  return 0;
}

bool cpb_lane_js_accepts(const struct cpb_lane_js *j, uint16_t port) {
  for (int i = 0; j && port && i < CPB_LANE_JS_PORTS; i++)
    if (j->ports[i] == port) return true;
  return false;
}

static struct stashed *find(struct cpb_lane_js *j, uint64_t flow_id) {
  for (int i = 0; i < CPB_LANE_JS_STASH; i++)
    if (j->stash[i].flow_id == flow_id) return &j->stash[i];
  return NULL;
}

int cpb_lane_js_stash(struct cpb_lane_js *j, uint64_t flow_id, uint64_t tag, const uint8_t *rec, size_t len) {
  if (flow_id == 0) return -EINVAL;
  /* A flow id is reused only after its flow is gone; a record still here for it is that flow's, untaken. */
  struct stashed *s = find(j, flow_id);
  if (s) unstash(j, s);
  if (len > CPB_LANE_JS_BYTES - j->bytes || !(s = find(j, 0))) return -ENOSPC;
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return -ENOMEM;
  if (len) memcpy(copy, rec, len);
  *s = (struct stashed){.flow_id = flow_id, .order = ++j->stashed, .tag = tag, .rec = copy, .len = len};
  j->bytes += len;
  j->waiting++;
  return 0;
}

static long take(struct cpb_lane_js *j, struct stashed *s, uint64_t *tag, uint8_t **rec) {
  if (!s) return -ENOENT;
  *rec = s->rec;
  *tag = s->tag;
  long len = (long)s->len;
  j->bytes -= s->len;
  j->waiting--;
  *s = (struct stashed){0};
  return len;
}

long cpb_lane_js_take(struct cpb_lane_js *j, uint64_t flow_id, uint64_t *tag, uint8_t **rec) {
  return take(j, flow_id ? find(j, flow_id) : NULL, tag, rec);
}

long cpb_lane_js_take_next(struct cpb_lane_js *j, uint64_t *flow_id, uint64_t *tag, uint8_t **rec) {
  struct stashed *oldest = NULL;
  for (int i = 0; i < CPB_LANE_JS_STASH; i++)
    if (j->stash[i].flow_id && (!oldest || j->stash[i].order < oldest->order)) oldest = &j->stash[i];
  if (oldest) *flow_id = oldest->flow_id;
  return take(j, oldest, tag, rec);
}

void cpb_lane_js_drop(struct cpb_lane_js *j, uint64_t flow_id) {
  struct stashed *s = flow_id ? find(j, flow_id) : NULL;
  if (s) unstash(j, s);
}

size_t cpb_lane_js_waiting(const struct cpb_lane_js *j) { return j ? j->waiting : 0; }
