/* A byte queue stored in a chain of arena chunks, referenced by index so it can live inside a TCB.
 * Send side: append at the tail, peek at any offset (retransmission), consume from the head as data is
 * acknowledged. Receive side: write at any offset beyond the contiguous tail (out-of-order data), extend
 * the contiguous length when holes fill, read into the application's buffer. Chunks are allocated only
 * when bytes need a home and returned the moment the head moves past them. */
#ifndef CPB_TCP_CHUNKQ_H
#define CPB_TCP_CHUNKQ_H
#include "../arena.h"

struct chunkq {
  uint32_t head;     /* first chunk, CPB_NO_CHUNK when the queue owns none */
  uint32_t tail;     /* last chunk of the chain */
  uint32_t head_off; /* where byte 0 sits inside the head chunk */
  uint32_t len;      /* contiguous bytes from byte 0 */
  uint32_t hi;       /* furthest byte offset ever written (>= len): the chain covers at least this */
  uint32_t nchunks;
  uint32_t cur;      /* cursor: a chunk in the chain and its position, so sequential access is O(1) */
  uint32_t cur_k;    /* index of `cur` in the chain (0 = head) */
};

/* Zero-length queue without chunks. A zeroed struct is NOT valid (head must be CPB_NO_CHUNK). */
void chunkq_init(struct chunkq *q);
/* Copies n bytes to offset off (may lie beyond len). Chunks needed are allocated, at most max_chunks
 * in total. Returns 0, or -ENOBUFS (budget or pool exhausted; the queue is unchanged in content). */
int chunkq_write(struct cpb_arena *a, struct chunkq *q, uint32_t off, const void *src, uint32_t n,
                 uint32_t max_chunks);
/* Writes at len and grows len. */
int chunkq_append(struct cpb_arena *a, struct chunkq *q, const void *src, uint32_t n, uint32_t max_chunks);
/* Marks n more bytes beyond len as contiguous (they were written out of order earlier). */
void chunkq_extend(struct chunkq *q, uint32_t n);
/* Copies n bytes at offset off out; off + n must be <= hi. */
void chunkq_peek(const struct cpb_arena *a, struct chunkq *q, uint32_t off, void *dst, uint32_t n);
/* Drops n bytes (n <= len) from the head and frees chunks left behind. */
void chunkq_consume(struct cpb_arena *a, struct chunkq *q, uint32_t n);
/* Forgets bytes beyond max(len, keep) and frees the chunks they no longer need. */
void chunkq_truncate(struct cpb_arena *a, struct chunkq *q, uint32_t keep);
/* Frees every chunk. */
void chunkq_clear(struct cpb_arena *a, struct chunkq *q);
#endif
