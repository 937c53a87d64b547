/* The host board's shared pages (board_page.h): making and mapping them (MAP_POPULATE, so that no
 * collective pays the page faults of a first touch), and the failures reported on them. */
#define _GNU_SOURCE
#include "board_page.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

enum { OPEN_SECONDS = 5 };
#define BOARD_MAGIC 0x54414c4c59424f44ull /* "TALLYBOD" */

size_t tally_board_big_bytes(int nranks) {
  enum { MOST = 256 * 1024, ALL_AREAS = 4 * 1024 * 1024, PAGE = 4096 };
  size_t each = ALL_AREAS / ((size_t)nranks + 1) / PAGE * PAGE;
  return each < MOST ? each : MOST;
}

static size_t page_bytes(int nranks) {
  /* the slots end on a 64-byte boundary (their alignment), the areas start there */
  return sizeof(struct board_page) + 2 * (size_t)nranks * sizeof(struct board_slot) +
         ((size_t)nranks + 1) * tally_board_big_bytes(nranks);
}

void tally_board_wake_all(struct board_arrivals *set) {
  syscall(SYS_futex, (uint32_t *)&set->count, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

void tally_board_arrived(struct board_arrivals *set) {
  atomic_thread_fence(memory_order_seq_cst); /* the slot's write comes before the look at the sleepers */
  if (!atomic_load(&set->sleepers)) return;
  atomic_fetch_add(&set->count, 1);
  tally_board_wake_all(set);
}

uint32_t tally_board_word(struct board_arrivals *set) { return atomic_load(&set->count); }

void tally_board_sleep_announce(struct board_arrivals *set) { atomic_fetch_add(&set->sleepers, 1); }

void tally_board_sleep(struct board_arrivals *set, uint32_t seen, int ms) {
  struct timespec rel = {ms / 1000, (long)(ms % 1000) * 1000000};
  syscall(SYS_futex, (uint32_t *)&set->count, FUTEX_WAIT, seen, &rel, NULL, 0);
  atomic_fetch_sub(&set->sleepers, 1);
}

void tally_board_sleep_cancel(struct board_arrivals *set) { atomic_fetch_sub(&set->sleepers, 1); }

static tally_result_t create_page(struct tally_comm *c, struct tally_board *b) {
  int fd = shm_open(b->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot create %s: %s", b->name, strerror(errno));
  b->linked = 1;
  int err = posix_fallocate(fd, 0, (off_t)b->bytes);
  void *map = err ? MAP_FAILED : mmap(NULL, b->bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot reserve %zu bytes for %s: %s", b->bytes, b->name,
                       strerror(err ? err : errno));
  b->page = map;
  b->page->comm_id = c->comm_id;
  b->page->nranks = (uint32_t)c->nranks;
  b->page->slot_bytes = TALLY_BOARD_SLOT_BYTES;
  b->page->big_bytes = (uint32_t)tally_board_big_bytes(c->nranks);
  b->page->pid[0] = (int32_t)getpid();
  atomic_store_explicit(&b->page->magic, BOARD_MAGIC, memory_order_release);
  return TALLY_SUCCESS;
}

/* Opens the board once rank 0 has made it its full size (it may still be reserving it). */
static tally_result_t open_fd(struct tally_board *b, uint64_t deadline, int *fd) {
  for (;;) {
    struct stat st;
    *fd = shm_open(b->name, O_RDWR | O_CLOEXEC, 0);
    if (*fd >= 0 && fstat(*fd, &st) == 0 && (size_t)st.st_size == b->bytes) {
      if (st.st_uid == geteuid()) return TALLY_SUCCESS;
      close(*fd);
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s belongs to another user", b->name);
    }
    int err = *fd < 0 ? errno : 0;
    if (*fd >= 0) close(*fd);
    if ((err && err != ENOENT) || tally_now_ns() > deadline)
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot open %s: %s", b->name,
                         err ? strerror(err) : "it never got its size");
    usleep(200);
  }
}

static tally_result_t open_page(struct tally_comm *c, struct tally_board *b, uint64_t deadline) {
  int fd;
  TALLY_CHECK(open_fd(b, deadline, &fd));
  void *map = mmap(NULL, b->bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot map %s: %s", b->name, strerror(errno));
  b->page = map;
  while (atomic_load_explicit(&b->page->magic, memory_order_acquire) != BOARD_MAGIC) {
    if (tally_now_ns() > deadline) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s was never filled in", b->name);
    usleep(100);
  }
  if (b->page->comm_id != c->comm_id || b->page->nranks != (uint32_t)c->nranks ||
      b->page->slot_bytes != TALLY_BOARD_SLOT_BYTES || b->page->big_bytes != tally_board_big_bytes(c->nranks))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s describes another communicator", b->name);
  b->page->pid[c->rank] = (int32_t)getpid();
  return TALLY_SUCCESS;
}

void tally_board_free(struct tally_board *b) {
  for (int r = 0; r < TALLY_BOARD_MAX_RANKS; r++)
    if (b->pidfd[r] >= 0) close(b->pidfd[r]);
  if (b->linked) shm_unlink(b->name);
  if (b->page) munmap(b->page, b->bytes);
  free(b);
}

static struct tally_board *board_new(const struct tally_comm *c) {
  struct tally_board *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  for (int r = 0; r < TALLY_BOARD_MAX_RANKS; r++) b->pidfd[r] = -1;
  b->bytes = page_bytes(c->nranks);
  snprintf(b->name, sizeof b->name, "/tally-%016" PRIx64 "-board", c->comm_id);
  return b;
}

tally_result_t tally_board_map(struct tally_comm *c, uint64_t deadline, struct tally_board **out) {
  struct tally_board *b = *out = board_new(c);
  if (!b) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the host board");
  uint64_t open_deadline = tally_deadline_after(OPEN_SECONDS);
  if (open_deadline > deadline) open_deadline = deadline;
  return c->rank == 0 ? create_page(c, b) : open_page(c, b, open_deadline);
}

void tally_board_install(struct tally_comm *c, struct tally_board *b) {
  if (c->rank == 0) { /* every rank mapped it before it agreed: nothing needs the name any more */
    shm_unlink(b->name);
    b->linked = 0;
  }
  for (int peer = 0; peer < c->nranks; peer++)
    if (peer != c->rank) b->pidfd[peer] = (int)syscall(SYS_pidfd_open, (pid_t)b->page->pid[peer], 0);
  c->board = b;
}

void tally_board_close(struct tally_comm *c) {
  if (c->board) tally_board_free(c->board);
  c->board = NULL;
}

/* --- failures and strays --------------------------------------------------------------------- */

void tally_board_fail(struct tally_comm *c, tally_result_t code, int culprit) {
  struct board_page *page = c->board ? c->board->page : NULL;
  if (!page) return;
  uint64_t none = 0, report = (uint64_t)code << 48 | (uint64_t)(c->rank + 1) << 24 | (uint64_t)(culprit + 1);
  if (atomic_compare_exchange_strong_explicit(&page->failed, &none, report, memory_order_release,
                                              memory_order_relaxed)) {
    tally_board_wake_all(&page->arrived[0]); /* whoever sleeps on the board learns it at once */
    tally_board_wake_all(&page->arrived[1]);
  }
}

void tally_board_wake(struct tally_comm *c) {
  if (!c->board) return; /* waiters re-check what woke them: a spurious wake-up is harmless */
  tally_board_wake_all(&c->board->page->arrived[0]);
  tally_board_wake_all(&c->board->page->arrived[1]);
}

tally_result_t tally_board_reported_failure(struct tally_comm *c) {
  struct board_page *page = c->board->page;
  uint64_t report = atomic_load_explicit(&page->failed, memory_order_acquire);
  if (!report) return TALLY_SUCCESS;
  int reporter = (int)(report >> 24 & 0xffffff) - 1, culprit = (int)(report & 0xffffff) - 1;
  tally_result_t code = (tally_result_t)(report >> 48);
  if (code != TALLY_ERR_MISMATCH && code != TALLY_ERR_TIMEOUT) code = TALLY_ERR_REMOTE; /* shared memory: check */
  if (culprit < 0 || culprit >= c->nranks) culprit = reporter;
  tally_error_blame(culprit);
  return TALLY_ERROR(code, "collective #%u: rank %d reported a failure (%s) on the host board; its error says more",
                     c->seq, reporter, tally_result_string(code));
}

tally_result_t tally_board_check(struct tally_comm *c, const struct tally_msg_header *call) {
  if (!c->board) return TALLY_SUCCESS;
  TALLY_CHECK(tally_board_reported_failure(c));
  if (!call) return TALLY_SUCCESS;
  uint32_t next = c->board->calls;
  for (int peer = 0; peer < c->nranks; peer++) {
    const struct board_slot *s = tally_board_slot(c->board->page, (int)(next & 1), peer);
    if (peer == c->rank || atomic_load_explicit(&s->call, memory_order_acquire) != next + 1 ||
        tally_header_seq(s->fingerprint) != call->seq)
      continue; /* not there, or there for a later collective: ranks may be one call apart */
    /* `peer` has arrived at a board collective where this rank runs the same call on the ring */
    tally_result_t r = tally_header_check(s->fingerprint, call, peer);
    return r != TALLY_SUCCESS ? r
                              : TALLY_ERROR(TALLY_ERR_MISMATCH,
                                            "rank %d is in a collective on the host board while "
                                            "this rank runs the same call on the ring",
                                            peer);
  }
  return TALLY_SUCCESS;
}
