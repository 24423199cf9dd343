/* Chunk-chain byte queue. Positions are counted from the start of the head chunk (pos = head_off +
 * offset), so chunk k of the chain holds positions [k*CHUNK, (k+1)*CHUNK). A cursor remembers the last
 * chunk visited: senders and readers walk forward almost always, so a lookup is usually one or two
 * hops instead of a walk from the head. New chunks are linked on only after all of them were
 * obtained, which keeps a failed write from changing the queue. */
#include "chunkq.h"

#define CQ CPB_CHUNK_SIZE

void chunkq_init(struct chunkq *q) {
  memset(q, 0, sizeof(*q));
  q->head = q->tail = q->cur = CPB_NO_CHUNK;
}

static uint32_t cq_find(const struct cpb_arena *a, struct chunkq *q, uint32_t k) {
  uint32_t c, i;
  if (q->cur != CPB_NO_CHUNK && q->cur_k <= k) {
    c = q->cur;
    i = q->cur_k;
  } else {
    c = q->head;
    i = 0;
  }
  while (i < k && c != CPB_NO_CHUNK) {
    c = *cpb_arena_chunk_link(a, c);
    i++;
  }
  q->cur = c;
  q->cur_k = i;
  return c;
}

static int cq_grow(struct cpb_arena *a, struct chunkq *q, uint32_t need, uint32_t max_chunks) {
  if (need <= q->nchunks) return 0;
  if (need > max_chunks) return -ENOBUFS;
  uint32_t first = CPB_NO_CHUNK, last = CPB_NO_CHUNK;
  for (uint32_t i = q->nchunks; i < need; i++) {
    uint32_t c = cpb_arena_chunk_alloc(a);
    if (c == CPB_NO_CHUNK) {
      while (first != CPB_NO_CHUNK) {
        uint32_t nx = *cpb_arena_chunk_link(a, first);
        cpb_arena_chunk_free(a, first);
        first = nx;
      }
      return -ENOBUFS;
    }
    *cpb_arena_chunk_link(a, c) = CPB_NO_CHUNK;
    if (last == CPB_NO_CHUNK) first = c;
    else *cpb_arena_chunk_link(a, last) = c;
    last = c;
  }
  if (q->head == CPB_NO_CHUNK) q->head = first;
  else *cpb_arena_chunk_link(a, q->tail) = first;
  q->tail = last;
  q->nchunks = need;
  return 0;
}

int chunkq_write(struct cpb_arena *a, struct chunkq *q, uint32_t off, const void *src, uint32_t n,
                 uint32_t max_chunks) {
  if (n == 0) return 0;
  if (q->head == CPB_NO_CHUNK) q->head_off = 0;
  uint64_t end = (uint64_t)q->head_off + off + n;
  if (end > (uint64_t)UINT32_MAX - CQ) return -ENOBUFS;
  uint32_t need = (uint32_t)((end + CQ - 1) / CQ);
  int rc = cq_grow(a, q, need, max_chunks);
  if (rc) return rc;
  uint32_t pos = q->head_off + off;
  const uint8_t *s = src;
  uint32_t c = cq_find(a, q, pos / CQ);
  uint32_t in = pos % CQ;
  while (n) {
    uint32_t take = CPB_MIN(n, CQ - in);
    memcpy(cpb_arena_chunk(a, c) + in, s, take);
    s += take;
    n -= take;
    in = 0;
    if (n) {
      c = *cpb_arena_chunk_link(a, c);
      q->cur = c;
      q->cur_k++;
    }
  }
  uint32_t wend = (uint32_t)(end - q->head_off);
  if (wend > q->hi) q->hi = wend;
  return 0;
}

int chunkq_append(struct cpb_arena *a, struct chunkq *q, const void *src, uint32_t n, uint32_t max_chunks) {
  int rc = chunkq_write(a, q, q->len, src, n, max_chunks);
  if (rc == 0) q->len += n;
  return rc;
}

void chunkq_extend(struct chunkq *q, uint32_t n) {
  q->len += n;
  if (q->len > q->hi) q->len = q->hi; /* defensive: never claim bytes that were not written */
}

void chunkq_peek(const struct cpb_arena *a, struct chunkq *q, uint32_t off, void *dst, uint32_t n) {
  if (n == 0 || q->head == CPB_NO_CHUNK) return;
  uint32_t pos = q->head_off + off;
  uint8_t *d = dst;
  uint32_t c = cq_find(a, q, pos / CQ);
  uint32_t in = pos % CQ;
  while (n && c != CPB_NO_CHUNK) {
    uint32_t take = CPB_MIN(n, CQ - in);
    memcpy(d, cpb_arena_chunk(a, c) + in, take);
    d += take;
    n -= take;
    in = 0;
    if (n) {
      c = *cpb_arena_chunk_link(a, c);
      q->cur = c;
      q->cur_k++;
    }
  }
}

void chunkq_clear(struct cpb_arena *a, struct chunkq *q) {
  uint32_t c = q->head;
  while (c != CPB_NO_CHUNK) {
    uint32_t nx = *cpb_arena_chunk_link(a, c);
    cpb_arena_chunk_free(a, c);
    c = nx;
  }
  chunkq_init(q);
}

void chunkq_consume(struct cpb_arena *a, struct chunkq *q, uint32_t n) {
  if (n > q->len) n = q->len;
  if (n == 0) return;
  q->len -= n;
  q->hi -= n;
  if (q->hi == 0) {
    chunkq_clear(a, q);
    return;
  }
  q->head_off += n;
  while (q->head_off >= CQ && q->head != CPB_NO_CHUNK) {
    uint32_t nx = *cpb_arena_chunk_link(a, q->head);
    if (q->cur == q->head) q->cur = CPB_NO_CHUNK;
    cpb_arena_chunk_free(a, q->head);
    q->head = nx;
    q->head_off -= CQ;
    q->nchunks--;
    if (q->cur != CPB_NO_CHUNK) q->cur_k--;
  }
  if (q->head == CPB_NO_CHUNK) chunkq_init(q);
}

void chunkq_truncate(struct cpb_arena *a, struct chunkq *q, uint32_t keep) {
  uint32_t nhi = CPB_MAX(q->len, keep);
  if (nhi >= q->hi) return;
  q->hi = nhi;
  if (nhi == 0) {
    chunkq_clear(a, q);
    return;
  }
  uint32_t need = (q->head_off + nhi + CQ - 1) / CQ;
  if (need >= q->nchunks) return;
  uint32_t last = cq_find(a, q, need - 1);
  uint32_t c = *cpb_arena_chunk_link(a, last);
  *cpb_arena_chunk_link(a, last) = CPB_NO_CHUNK;
  while (c != CPB_NO_CHUNK) {
    uint32_t nx = *cpb_arena_chunk_link(a, c);
    cpb_arena_chunk_free(a, c);
    c = nx;
  }
  q->tail = last;
  q->nchunks = need;
}
