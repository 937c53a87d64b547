/* Registration cache keyed by address range, checked against the pages' identity (mr_cache.h). */
#define _GNU_SOURCE
#include "mr_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

enum { PAGE = 4096 };
/* A miss registers the 4 MiB-aligned window around the range, so that the chunks of one large
 * buffer share a registration. */
#define WINDOW ((uintptr_t)4 << 20)
#define PFN_MASK ((UINT64_C(1) << 55) - 1)
#define PAGE_PRESENT (UINT64_C(1) << 63)

struct tally_mr_entry {
  uintptr_t base, end;
  struct ibv_mr *mr;
  int refs;
  uint64_t *frames; /* the page frame of each page of [base, end) when registered */
  struct tally_mr_entry *next;
};

static const int access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

/* Reads the page-frame entries of [start, end) (page aligned); returns 0 on success. */
static int read_frames(const struct tally_mr_cache *cache, uintptr_t start, uintptr_t end, uint64_t *frames) {
  size_t bytes = (end - start) / PAGE * sizeof *frames;
  ssize_t got = pread(cache->pagemap_fd, frames, bytes, (off_t)(start / PAGE * sizeof *frames));
  return got == (ssize_t)bytes ? 0 : -1;
}

void tally_mr_cache_init(struct tally_mr_cache *cache, struct ibv_pd *pd, size_t max_bytes) {
  memset(cache, 0, sizeof *cache);
  cache->pd = pd;
  cache->max_bytes = max_bytes;
  cache->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  static volatile char probe[2 * PAGE];
  probe[PAGE] = 1; /* a present page whose frame number must read nonzero if frames are visible */
  uintptr_t page = ((uintptr_t)&probe[PAGE]) & ~(uintptr_t)(PAGE - 1);
  uint64_t frame = 0;
  cache->verify_pages =
      cache->pagemap_fd >= 0 && read_frames(cache, page, page + PAGE, &frame) == 0 && (frame & PFN_MASK) != 0;
  if (!cache->verify_pages)
    TLOG_INFO(TALLY_SUBSYS_NET,
              "page frame numbers are not readable (no CAP_SYS_ADMIN): user buffers are registered per transfer, "
              "not cached");
}

static void entry_free(struct tally_mr_cache *cache, struct tally_mr_entry *e) {
  cache->bytes -= e->end - e->base;
  ibv_dereg_mr(e->mr);
  free(e->frames);
  free(e);
}

void tally_mr_cache_destroy(struct tally_mr_cache *cache) {
  while (cache->entries) {
    struct tally_mr_entry *e = cache->entries;
    cache->entries = e->next;
    entry_free(cache, e);
  }
  if (cache->pagemap_fd >= 0) close(cache->pagemap_fd);
  TLOG_INFO(TALLY_SUBSYS_NET, "registration cache: %lu hits, %lu misses, %lu stale registrations dropped", cache->hits,
            cache->misses, cache->stale);
}

/* Does every page of [start, end) still map the frame it mapped when `e` was registered? */
static int still_same_pages(const struct tally_mr_cache *cache, const struct tally_mr_entry *e, uintptr_t start,
                            uintptr_t end) {
  size_t npages = (end - start) / PAGE;
  uint64_t stack[128], *now = npages <= 128 ? stack : malloc(npages * sizeof *now);
  int same = now && read_frames(cache, start, end, now) == 0;
  const uint64_t *then = e->frames + (start - e->base) / PAGE;
  for (size_t i = 0; same && i < npages; i++) same = (now[i] & PAGE_PRESENT) && now[i] == then[i];
  if (now != stack) free(now);
  return same;
}

/* Drops unheld registrations, least recently used first, until `incoming` more bytes fit. */
static void make_room(struct tally_mr_cache *cache, size_t incoming) {
  while (cache->bytes + incoming > cache->max_bytes) {
    struct tally_mr_entry **victim = NULL;
    for (struct tally_mr_entry **p = &cache->entries; *p; p = &(*p)->next)
      if ((*p)->refs == 0) victim = p; /* the last unheld one is the least recently used */
    if (!victim) return;
    struct tally_mr_entry *e = *victim;
    *victim = e->next;
    entry_free(cache, e);
  }
}

static struct ibv_mr *register_range(struct tally_mr_cache *cache, uintptr_t start, uintptr_t end) {
  return ibv_reg_mr(cache->pd, (void *)start, end - start, access_flags);
}

/* Registers the window around [start, end), or the range alone when the window reaches memory that
 * cannot be registered (unmapped or read-only pages next to the buffer). */
static tally_result_t add_entry(struct tally_mr_cache *cache, uintptr_t start, uintptr_t end,
                                struct tally_mr_entry **out) {
  struct tally_mr_entry *e = calloc(1, sizeof *e);
  if (!e) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a memory registration");
  e->base = start & ~(WINDOW - 1);
  e->end = (end + WINDOW - 1) & ~(WINDOW - 1);
  make_room(cache, e->end - e->base);
  e->mr = register_range(cache, e->base, e->end);
  if (!e->mr) {
    e->base = start;
    e->end = end;
    e->mr = register_range(cache, start, end);
  }
  if (!e->mr) {
    int err = errno;
    free(e);
    return TALLY_ERROR(err == ENOMEM || err == EPERM ? TALLY_ERR_SYSTEM : TALLY_ERR_INVALID_ARGUMENT,
                       "cannot register %zu bytes at %p with the RDMA device: %s%s", (size_t)(end - start),
                       (void *)start, strerror(err),
                       err == ENOMEM || err == EPERM
                           ? " (the locked-memory limit is too low: raise it with `ulimit -l unlimited` or "
                             "LimitMEMLOCK=infinity, or lower TALLY_IB_REG_CACHE_MB)"
                           : " (is the buffer valid, writable memory?)");
  }
  size_t npages = (e->end - e->base) / PAGE;
  e->frames = cache->verify_pages ? malloc(npages * sizeof *e->frames) : NULL;
  if (e->frames && read_frames(cache, e->base, e->end, e->frames) != 0) {
    free(e->frames);
    e->frames = NULL;
  }
  cache->bytes += e->end - e->base;
  *out = e;
  return TALLY_SUCCESS;
}

tally_result_t tally_mr_get(struct tally_mr_cache *cache, void *buf, size_t len, int read_only,
                            struct tally_mr_hold *hold) {
  uintptr_t start = (uintptr_t)buf & ~(uintptr_t)(PAGE - 1);
  uintptr_t end = ((uintptr_t)buf + (len ? len : 1) + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
  for (struct tally_mr_entry **p = &cache->entries; *p; p = &(*p)->next) {
    struct tally_mr_entry *e = *p;
    if (e->base > start || e->end < end || !e->frames) continue;
    if (!still_same_pages(cache, e, start, end)) {
      cache->stale++;
      if (e->refs == 0) {
        *p = e->next;
        entry_free(cache, e);
      } else {
        e->frames = (free(e->frames), NULL); /* held by a transfer: never handed out again */
      }
      break;
    }
    *p = e->next; /* move to the front: most recently used */
    e->next = cache->entries;
    cache->entries = e;
    e->refs++;
    cache->hits++;
    *hold = (struct tally_mr_hold){e->mr, e};
    return TALLY_SUCCESS;
  }
  cache->misses++;
  struct tally_mr_entry *e = NULL;
  tally_result_t r = add_entry(cache, start, end, &e);
  if (r != TALLY_SUCCESS && read_only) {
    struct ibv_mr *mr = ibv_reg_mr(cache->pd, (void *)start, end - start, 0);
    if (!mr) return r;
    *hold = (struct tally_mr_hold){mr, NULL};
    return TALLY_SUCCESS;
  }
  TALLY_CHECK(r);
  if (!e->frames) { /* cannot be verified later: this transfer's alone */
    cache->bytes -= e->end - e->base;
    *hold = (struct tally_mr_hold){e->mr, NULL};
    free(e);
    return TALLY_SUCCESS;
  }
  e->refs = 1;
  e->next = cache->entries;
  cache->entries = e;
  *hold = (struct tally_mr_hold){e->mr, e};
  return TALLY_SUCCESS;
}

void tally_mr_put(struct tally_mr_cache *cache, struct tally_mr_hold *hold) {
  if (!hold->mr) return;
  if (hold->entry) {
    hold->entry->refs--;
    if (!hold->entry->frames && hold->entry->refs == 0) { /* stale while held: drop it now */
      for (struct tally_mr_entry **p = &cache->entries; *p; p = &(*p)->next)
        if (*p == hold->entry) {
          *p = hold->entry->next;
          break;
        }
      entry_free(cache, hold->entry);
    }
  } else {
    ibv_dereg_mr(hold->mr);
  }
  *hold = (struct tally_mr_hold){0};
}
