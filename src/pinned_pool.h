/* A free list of pinned host blocks for staging device data: taking and allocating happen on the
 * user's thread (allocation calls the device runtime), giving back on any thread (it does not). */
#ifndef TALLY_PINNED_POOL_H
#define TALLY_PINNED_POOL_H

#include <stddef.h>

#include "device.h"

struct tally_pinned_block {
  void *mem;
  size_t bytes;
  struct tally_pinned_block *next;
};

struct tally_pinned_pool {
  const struct tally_device_ops *dev;
  struct tally_pinned_block *free; /* guarded by the owner's lock */
};

/* A block of at least `bytes` from the free list, else a new one; a free block too small for the
 * request is released to keep the pool from growing. The caller holds the owner's lock. */
tally_result_t tally_pinned_take(struct tally_pinned_pool *pool, size_t bytes, struct tally_pinned_block **block);

/* Back to the free list (no device call: safe in a device runtime's host function). */
void tally_pinned_give_back(struct tally_pinned_pool *pool, struct tally_pinned_block *block);

/* Frees one block, or every block on the free list. */
void tally_pinned_release(struct tally_pinned_pool *pool, struct tally_pinned_block *block);
void tally_pinned_release_all(struct tally_pinned_pool *pool);

#endif
