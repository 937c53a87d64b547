/* Registration cache for the verbs transport: user buffers are registered with the device once and
 * found again by address range on later collectives.
 *
 * A cached registration pins the pages it was made for. When the user frees a buffer and gets the
 * same addresses back, the range maps other pages and the old registration is stale: using its key
 * would move the wrong memory. So a hit is only a hit when every page of the asked range still maps
 * the page frame recorded at registration (read from /proc/self/pagemap, which shows frame numbers
 * only to CAP_SYS_ADMIN). A process that cannot read frame numbers gets no caching of user memory:
 * each transfer registers its range and drops it when done.
 *
 * The cache is bounded (TALLY_IB_REG_CACHE_MB): least recently used registrations that no transfer
 * holds are dropped first. */
#ifndef TALLY_VERBS_MR_CACHE_H
#define TALLY_VERBS_MR_CACHE_H

#include <infiniband/verbs.h>
#include <stddef.h>

#include "tally.h"

struct tally_mr_entry;

struct tally_mr_cache {
  struct ibv_pd *pd;
  int verify_pages; /* 1: page frames are readable, so registrations can be cached */
  int pagemap_fd;
  size_t max_bytes, bytes;
  struct tally_mr_entry *entries; /* most recently used first */
  unsigned long hits, misses, stale;
};

/* A registration held by one transfer. */
struct tally_mr_hold {
  struct ibv_mr *mr;
  struct tally_mr_entry *entry; /* NULL: registered for this transfer only */
};

void tally_mr_cache_init(struct tally_mr_cache *cache, struct ibv_pd *pd, size_t max_bytes);
/* Deregisters everything (nothing may be held). */
void tally_mr_cache_destroy(struct tally_mr_cache *cache);

/* A registration covering [buf, buf+len) with local write and remote write access; or, for a
 * source that is only read (`read_only`), one without write access when the memory cannot be
 * written (a const buffer), registered for this transfer alone. */
tally_result_t tally_mr_get(struct tally_mr_cache *cache, void *buf, size_t len, int read_only,
                            struct tally_mr_hold *hold);
void tally_mr_put(struct tally_mr_cache *cache, struct tally_mr_hold *hold);

#endif
