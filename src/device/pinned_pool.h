/* A free list of pinned host blocks for staging device data: allocating happens on the user's
 * thread (it calls the device runtime), taking and giving back on any thread (they do not). Blocks
 * are kept until the owner is destroyed. */
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

/* A block of at least `bytes` off the free list, or NULL; no device call, so the caller may hold
 * the owner's lock. */
struct tally_pinned_block *tally_pinned_take_free(struct tally_pinned_pool *pool, size_t bytes);
/* A new block of at least `bytes` (a device call: never under a lock a device runtime's host
 * function takes, since allocating may wait for the device). */
tally_result_t tally_pinned_alloc(struct tally_pinned_pool *pool, size_t bytes, struct tally_pinned_block **block);

/* Back to the free list (no device call: safe in a device runtime's host function). */
void tally_pinned_give_back(struct tally_pinned_pool *pool, struct tally_pinned_block *block);

/* Frees one block, or every block on the free list (device calls; at destroy). */
void tally_pinned_release(struct tally_pinned_pool *pool, struct tally_pinned_block *block);
void tally_pinned_release_all(struct tally_pinned_pool *pool);

#endif
