/* The host board (see board.h). Layout of the shared pages, created by rank 0 and unlinked once
 * every rank has mapped them:
 *
 *   page header   magic, communicator id, ranks, slot size, each rank's pid, `failed`
 *   arrived[2]    arrival counters, one per set of slots, each on its own cache line (futex words)
 *   slots[2][n]   per rank: the call it has arrived at, the call's fingerprint, its input
 *
 * Call c (counted per communicator on every rank alike) uses set c % 2 and is complete once
 * arrived[c % 2] has reached n * (c / 2 + 1). */
#define _GNU_SOURCE
#include "board.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../src/clock.h"
#include "../src/error.h"
#include "../src/log.h"
#include "../src/reduce.h"
#include "../src/wire.h"

enum { SLOT_BYTES = 16384, WAIT_CAP_MS = 10, OPEN_SECONDS = 5 };
#define BOARD_MAGIC 0x54414c4c59424f44ull /* "TALLYBOD" */
#define SPIN_NS 20000                     /* yield the core this long before sleeping on the futex */

struct board_slot {
  alignas(64) _Atomic uint32_t call; /* 1 + the call this rank has arrived at (its data is in) */
  unsigned char fingerprint[TALLY_WIRE_HEADER_BYTES];
  alignas(64) unsigned char data[SLOT_BYTES];
};

struct board_page {
  uint64_t comm_id;
  uint32_t nranks, slot_bytes;
  int32_t pid[TALLY_BOARD_MAX_RANKS];
  _Atomic uint64_t failed; /* 0, or the first failure reported: code, 1 + reporter, 1 + culprit */
  _Atomic uint64_t magic;  /* BOARD_MAGIC once the fields above are written */
  struct {
    alignas(64) _Atomic uint32_t count;
  } arrived[2];              /* each on its own cache line */
  struct board_slot slots[]; /* [2][nranks] */
};

struct tally_board {
  struct board_page *page;
  size_t bytes;
  char name[64];
  int linked; /* rank 0: the name still exists */
  int pidfd[TALLY_BOARD_MAX_RANKS];
  uint32_t calls;
};

static size_t page_bytes(int nranks) {
  return sizeof(struct board_page) + 2 * (size_t)nranks * sizeof(struct board_slot);
}

static struct board_slot *slot_of(struct board_page *page, int set, int rank) {
  return &page->slots[(size_t)set * page->nranks + (size_t)rank];
}

static void futex_wake_all(_Atomic uint32_t *word) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static void futex_wait(_Atomic uint32_t *word, uint32_t seen, int ms) {
  struct timespec rel = {ms / 1000, (long)(ms % 1000) * 1000000};
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, &rel, NULL, 0);
}

/* --- setting up ------------------------------------------------------------------------------ */

static tally_result_t create_page(struct tally_comm *c, struct tally_board *b) {
  int fd = shm_open(b->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot create %s: %s", b->name, strerror(errno));
  b->linked = 1;
  int err = posix_fallocate(fd, 0, (off_t)b->bytes);
  void *map = err ? MAP_FAILED : mmap(NULL, b->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot reserve %zu bytes for %s: %s", b->bytes, b->name,
                       strerror(err ? err : errno));
  b->page = map;
  b->page->comm_id = c->comm_id;
  b->page->nranks = (uint32_t)c->nranks;
  b->page->slot_bytes = SLOT_BYTES;
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
  void *map = mmap(NULL, b->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot map %s: %s", b->name, strerror(errno));
  b->page = map;
  while (atomic_load_explicit(&b->page->magic, memory_order_acquire) != BOARD_MAGIC) {
    if (tally_now_ns() > deadline) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s was never filled in", b->name);
    usleep(100);
  }
  if (b->page->comm_id != c->comm_id || b->page->nranks != (uint32_t)c->nranks || b->page->slot_bytes != SLOT_BYTES)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s describes another communicator", b->name);
  b->page->pid[c->rank] = (int32_t)getpid();
  return TALLY_SUCCESS;
}

static void board_free(struct tally_board *b) {
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

/* Every rank learns whether every rank has the board, with one small allreduce on the ring. */
static tally_result_t agree(struct tally_comm *c, int mine, int *everyone) {
  int32_t in = mine, out = 0;
  struct tally_coll_desc d = {TALLY_COLL_ALLREDUCE, &in, &out, 1, TALLY_INT32, TALLY_MIN, 0, 0};
  TALLY_CHECK(tally_ring_algorithm.run(c, &d));
  *everyone = out;
  return TALLY_SUCCESS;
}

tally_result_t tally_board_open(struct tally_comm *c, uint64_t deadline) {
  if (c->nranks < 2 || c->nranks > TALLY_BOARD_MAX_RANKS || c->topo.nhosts != 1)
    return TALLY_SUCCESS; /* the same answer on every rank: the ring carries small collectives */
  int over_shm = !strcmp(c->world.to_next.ops->name, "shm") && !strcmp(c->world.from_prev.ops->name, "shm");
  struct tally_board *b = over_shm ? board_new(c) : NULL;
  tally_result_t r = TALLY_ERR_UNSUPPORTED; /* TALLY_TRANSPORT=tcp: the ranks do not share memory */
  if (over_shm) {
    uint64_t open_deadline = tally_deadline_after(OPEN_SECONDS);
    if (open_deadline > deadline) open_deadline = deadline;
    r = !b             ? TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the host board")
        : c->rank == 0 ? create_page(c, b)
                       : open_page(c, b, open_deadline);
    if (r != TALLY_SUCCESS)
      TLOG_INFO(TALLY_SUBSYS_INIT, "no host board (%s): small collectives use the ring", tally_error_message());
  }
  int everyone = 0;
  tally_result_t agreed = agree(c, r == TALLY_SUCCESS, &everyone);
  if (agreed != TALLY_SUCCESS || !everyone) {
    if (b) board_free(b);
    return agreed;
  }
  if (c->rank == 0) { /* every rank mapped it before it agreed: nothing needs the name any more */
    shm_unlink(b->name);
    b->linked = 0;
  }
  for (int peer = 0; peer < c->nranks; peer++)
    if (peer != c->rank) b->pidfd[peer] = (int)syscall(SYS_pidfd_open, (pid_t)b->page->pid[peer], 0);
  c->board = b;
  return TALLY_SUCCESS;
}

void tally_board_close(struct tally_comm *c) {
  if (c->board) board_free(c->board);
  c->board = NULL;
}

int tally_board_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (!comm->board) return 0;
  size_t bytes = desc->count * tally_datatype_size(desc->datatype);
  return desc->coll == TALLY_COLL_BARRIER || (desc->coll == TALLY_COLL_ALLREDUCE && bytes <= SLOT_BYTES);
}

/* --- failures and strays --------------------------------------------------------------------- */

void tally_board_fail(struct tally_comm *c, tally_result_t code, int culprit) {
  struct board_page *page = c->board ? c->board->page : NULL;
  if (!page) return;
  uint64_t none = 0, report = (uint64_t)code << 48 | (uint64_t)(c->rank + 1) << 24 | (uint64_t)(culprit + 1);
  if (atomic_compare_exchange_strong_explicit(&page->failed, &none, report, memory_order_release,
                                              memory_order_relaxed)) {
    futex_wake_all(&page->arrived[0].count); /* whoever sleeps on the board learns it at once */
    futex_wake_all(&page->arrived[1].count);
  }
}

void tally_board_wake(struct tally_comm *c) {
  if (!c->board) return; /* waiters re-check what woke them: a spurious wake-up is harmless */
  futex_wake_all(&c->board->page->arrived[0].count);
  futex_wake_all(&c->board->page->arrived[1].count);
}

/* A failure another rank reported on the board, as this rank's error. */
static tally_result_t reported_failure(struct tally_comm *c) {
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
  TALLY_CHECK(reported_failure(c));
  uint32_t next = c->board->calls;
  for (int peer = 0; peer < c->nranks; peer++) {
    const struct board_slot *s = slot_of(c->board->page, (int)(next & 1), peer);
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

/* --- one call -------------------------------------------------------------------------------- */

/* The ranks that have not arrived at `call` yet, as " 3 5", and how many. */
static int missing_ranks(struct tally_comm *c, int set, uint32_t call, char *buf, size_t len, int *one) {
  int n = 0;
  buf[0] = '\0';
  for (int r = 0; r < c->nranks; r++) {
    if (atomic_load_explicit(&slot_of(c->board->page, set, r)->call, memory_order_acquire) == call + 1) continue;
    size_t used = strlen(buf);
    if (used + 12 < len) snprintf(buf + used, len - used, " %d", r);
    *one = r;
    n++;
  }
  return n;
}

static tally_result_t peer_died(struct tally_comm *c) {
  for (int r = 0; r < c->nranks; r++) {
    struct pollfd p = {.fd = c->board->pidfd[r], .events = POLLIN};
    if (p.fd < 0 || poll(&p, 1, 0) <= 0) continue;
    TALLY_CHECK(reported_failure(c)); /* a rank that failed, said so and left is not the news */
    char who[128];
    tally_error_blame(r);
    return TALLY_ERROR(TALLY_ERR_REMOTE, "%s exited or was killed during a collective on the host board",
                       tally_comm_rank_text(c, r, who, sizeof who));
  }
  return TALLY_SUCCESS;
}

static tally_result_t timed_out(struct tally_comm *c, const struct tally_coll_desc *d, int set, uint32_t call) {
  char missing[256], who[128];
  int one = -1, n = missing_ranks(c, set, call, missing, sizeof missing, &one);
  if (n == 1) {
    tally_error_blame(one);
    return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                       "rank %d timed out in %s #%u on the host board after %.1f s (TALLY_TIMEOUT): it heard nothing "
                       "from %s, which has not arrived: it is stuck, dead, or has not called %s #%u",
                       c->rank, tally_coll_name(d->coll), c->seq, c->cfg.timeout_s,
                       tally_comm_rank_text(c, one, who, sizeof who), tally_coll_name(d->coll), c->seq);
  }
  return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                     "rank %d timed out in %s #%u on the host board after %.1f s (TALLY_TIMEOUT): ranks%s have not "
                     "arrived (stuck, dead, or in another call)",
                     c->rank, tally_coll_name(d->coll), c->seq, c->cfg.timeout_s, missing);
}

/* Waits until every rank has arrived at `call`: yields the core for a while, then sleeps on the
 * futex, checking at least every WAIT_CAP_MS for an abort, a failed or dead rank, and the timeout. */
static tally_result_t wait_for_everyone(struct tally_comm *c, const struct tally_coll_desc *d, int set, uint32_t call,
                                        uint32_t expected) {
  struct board_page *page = c->board->page;
  uint64_t start = tally_now_ns(), timeout_ns = (uint64_t)(c->cfg.timeout_s * 1e9);
  for (;;) {
    uint32_t seen = atomic_load_explicit(&page->arrived[set].count, memory_order_acquire);
    if ((int32_t)(seen - expected) >= 0) return TALLY_SUCCESS;
    TALLY_CHECK(reported_failure(c));
    if (atomic_load(&c->aborted))
      return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
    uint64_t waited = tally_now_ns() - start;
    if (waited < SPIN_NS) {
      sched_yield();
      continue;
    }
    TALLY_CHECK(peer_died(c));
    if (waited >= timeout_ns) return timed_out(c, d, set, call);
    futex_wait(&page->arrived[set].count, seen, WAIT_CAP_MS);
  }
}

static tally_result_t board_run(struct tally_comm *c, const struct tally_coll_desc *d) {
  struct tally_board *b = c->board;
  uint32_t call = b->calls++;
  int set = (int)(call & 1);
  uint32_t expected = (uint32_t)c->nranks * (call / 2 + 1);
  size_t bytes = d->count * tally_datatype_size(d->datatype);
  struct board_slot *mine = slot_of(b->page, set, c->rank);
  struct tally_msg_header call_header;
  tally_header_fill(&call_header, d, c->seq);
  call_header.bytes = bytes;
  tally_header_encode(&call_header, mine->fingerprint);
  if (bytes) memcpy(mine->data, d->sendbuf, bytes);
  atomic_store_explicit(&mine->call, call + 1, memory_order_release);
  if (atomic_fetch_add_explicit(&b->page->arrived[set].count, 1, memory_order_acq_rel) + 1 == expected)
    futex_wake_all(&b->page->arrived[set].count);
  tally_result_t r = wait_for_everyone(c, d, set, call, expected);
  for (int peer = 0; r == TALLY_SUCCESS && peer < c->nranks; peer++)
    if (peer != c->rank) r = tally_header_check(slot_of(b->page, set, peer)->fingerprint, &call_header, peer);
  if (r != TALLY_SUCCESS) return r; /* collectives.c reports it to the others: tally_board_fail */
  if (d->coll == TALLY_COLL_BARRIER || bytes == 0) return TALLY_SUCCESS;
  /* a set's slots lie one after another */
  tally_reduce_in_order(d->recvbuf, slot_of(b->page, set, 0)->data, sizeof(struct board_slot), c->nranks, d->count,
                        d->datatype, d->op);
  return TALLY_SUCCESS;
}

const struct tally_algorithm tally_board_algorithm = {.name = "board", .run = board_run};
