/* The staging blocks' free list (pinned_pool.h). Blocks are at least 64 KiB, so small calls share
 * a handful of them. */
#include "pinned_pool.h"

#include <stdlib.h>

#include "core/error.h"

enum { SMALLEST_BLOCK = 64 * 1024 };

struct tally_pinned_block *tally_pinned_take_free(struct tally_pinned_pool *pool, size_t bytes) {
  for (struct tally_pinned_block **link = &pool->free; *link; link = &(*link)->next) {
    if ((*link)->bytes < bytes) continue;
    struct tally_pinned_block *b = *link;
    *link = b->next;
    b->next = NULL;
    return b;
  }
  return NULL;
}

tally_result_t tally_pinned_alloc(struct tally_pinned_pool *pool, size_t bytes, struct tally_pinned_block **block) {
  struct tally_pinned_block *b = calloc(1, sizeof *b);
  if (!b) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a staging block's record");
  b->bytes = bytes < SMALLEST_BLOCK ? SMALLEST_BLOCK : bytes;
  tally_result_t r = pool->dev->alloc_pinned(&b->mem, b->bytes);
  if (r != TALLY_SUCCESS) {
    free(b);
    return r;
  }
  *block = b;
  return TALLY_SUCCESS;
}

void tally_pinned_give_back(struct tally_pinned_pool *pool, struct tally_pinned_block *block) {
  block->next = pool->free;
  pool->free = block;
}

void tally_pinned_release(struct tally_pinned_pool *pool, struct tally_pinned_block *block) {
  pool->dev->free_pinned(block->mem);
  free(block);
}

void tally_pinned_release_all(struct tally_pinned_pool *pool) {
  while (pool->free) {
    struct tally_pinned_block *b = pool->free;
    pool->free = b->next;
    tally_pinned_release(pool, b);
  }
}
