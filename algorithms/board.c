/* The board algorithm (board.h): setting the board up with the ring's agreement (and the test of
 * process_vm_readv between its ranks, and the time of a meet between two), one call on it, and
 * reading a peer's memory for the shared-buffer algorithm's single-copy alltoall and allgather. */
#define _GNU_SOURCE
#include "board.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"
#include "core/wire.h"

enum { WAIT_CAP_MS = 10 };
#define SPIN_NS 20000 /* poll this long before sleeping on the futex */
enum { HOT_POLLS = 64 }; /* polls between two readings of the clock, on a core of its own (as comm.c's) */

/* Every rank learns whether every rank has the board, with one small allreduce on the ring. */
static tally_result_t agree(struct tally_comm *c, int mine, int *everyone) {
  int32_t in = mine, out = 0;
  struct tally_coll_desc d = {
      .coll = TALLY_COLL_ALLREDUCE, .sendbuf = &in, .recvbuf = &out, .count = 1, .datatype = TALLY_INT32, .op = TALLY_MIN};
  TALLY_CHECK(tally_ring_algorithm.run(c, &d));
  *everyone = out;
  return TALLY_SUCCESS;
}

/* Whether this rank can read each peer's probe value with process_vm_readv (ptrace rules: Yama's
 * ptrace_scope, containers without SYS_PTRACE, non-dumpable processes); why not, in `why`. */
static int cma_reads_every_peer(struct tally_comm *c, struct tally_board *b, char *why, size_t whylen) {
  for (int peer = 0; peer < c->nranks; peer++) {
    if (peer == c->rank) continue;
    uint64_t got = 0;
    struct iovec local = {&got, sizeof got};
    struct iovec remote = {(void *)(uintptr_t)b->page->cma_probe_address[peer], sizeof got};
    ssize_t n = process_vm_readv((pid_t)b->page->pid[peer], &local, 1, &remote, 1, 0);
    if (n != (ssize_t)sizeof got || got != b->page->cma_probe_value[peer]) {
      snprintf(why, whylen, "reading rank %d: %s", peer,
               n < 0 ? strerror(errno) : n != (ssize_t)sizeof got ? "short read" : "another process answered");
      return 0;
    }
  }
  return 1;
}

/* Whether every rank can read every other rank's memory with process_vm_readv (b->cma, the same on
 * every rank), for the shared areas' single-copy forms (shared.c says where each runs). Each rank
 * published its probe before the agreement that precedes this and keeps it until the one that
 * ends it. */
static tally_result_t cma_everywhere(struct tally_comm *c, struct tally_board *b) {
  char why[160] = "";
  int mine = cma_reads_every_peer(c, b, why, sizeof why), everyone = 0;
  TALLY_CHECK(agree(c, mine, &everyone));
  if (!mine)
    TLOG_INFO(TALLY_SUBSYS_INIT, "no single-copy collectives on the host board (process_vm_readv, %s)", why);
  b->cma = everyone;
  return TALLY_SUCCESS;
}

/* Two ranks with a core each: whether their cores are far apart, as two cores that share no
 * last-level cache are, or, in a VM, two vCPUs the host happens to run far apart. Each rank times
 * MEET_PROBES meets (after MEET_WARMUP that let both arrive) and they agree on the faster rank's
 * mean; cores whose meets take APART_MEET_NS or more are apart. The two-rank tuner asks
 * (tuning/tuner.c): the shared areas hand every byte from one core's cache to the other's, which
 * costs more than the FIFOs' pipelined copies where the caches are far apart.
 * A meet costs about what a cache line's round trip does: on this 2-core VM (2026-12-06), whose
 * host moves the two vCPUs, 160 ns where core-pingpong measured 165 ns, 471-587 ns where it
 * measured 504-523 ns. */
enum { MEET_WARMUP = 100, MEET_PROBES = 1000, APART_MEET_NS = 300 };
static tally_result_t time_meets(struct tally_comm *c, struct tally_board *b) {
  b->cores_apart = c->cfg.cores_apart == 1;
  if (c->cfg.cores_apart != TALLY_CORES_APART_AUTO || c->nranks != 2 || c->cores_shared) return TALLY_SUCCESS;
  struct tally_coll_desc barrier = {.coll = TALLY_COLL_BARRIER};
  uint64_t start = 0;
  for (int i = 0; i < MEET_WARMUP + MEET_PROBES; i++) {
    if (i == MEET_WARMUP) start = tally_now_ns();
    TALLY_CHECK(tally_board_meet(c, &barrier));
  }
  uint64_t mean = (tally_now_ns() - start) / MEET_PROBES;
  int faster;
  TALLY_CHECK(agree(c, mean > INT32_MAX ? INT32_MAX : (int)mean, &faster));
  b->cores_apart = faster >= APART_MEET_NS;
  TLOG_INFO(TALLY_SUBSYS_INIT, "a meet on the host board takes %d ns: the two ranks' cores are %s", faster,
            b->cores_apart ? "far apart (allreduces up to a sixteenth of the last-level cache take the ring)" : "near");
  return TALLY_SUCCESS;
}

tally_result_t tally_board_open(struct tally_comm *c, uint64_t deadline) {
  if (c->nranks < 2 || c->nranks > TALLY_BOARD_MAX_RANKS || c->topo.nhosts != 1)
    return TALLY_SUCCESS; /* the same answer on every rank: the ring carries small collectives */
  int over_shm = !strcmp(c->world.to_next.ops->name, "shm") && !strcmp(c->world.from_prev.ops->name, "shm");
  struct tally_board *b = NULL;
  tally_result_t r = TALLY_ERR_UNSUPPORTED; /* TALLY_TRANSPORT=tcp: the ranks do not share memory */
  if (over_shm) {
    r = tally_board_map(c, deadline, &b);
    if (r != TALLY_SUCCESS)
      TLOG_INFO(TALLY_SUBSYS_INIT, "no host board (%s): small collectives use the ring", tally_error_message());
  }
  if (r == TALLY_SUCCESS) { /* what the others read in cma_everywhere, once every rank has agreed */
    b->cma_probe = tally_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x5a5a5a5a5a5a5a5aull;
    b->page->cma_probe_address[c->rank] = (uint64_t)(uintptr_t)&b->cma_probe;
    b->page->cma_probe_value[c->rank] = b->cma_probe;
  }
  int everyone = 0;
  tally_result_t agreed = agree(c, r == TALLY_SUCCESS, &everyone);
  if (agreed == TALLY_SUCCESS && everyone) agreed = cma_everywhere(c, b);
  if (agreed != TALLY_SUCCESS || !everyone) {
    if (b) tally_board_free(b);
    return agreed;
  }
  tally_board_install(c, b);
  return time_meets(c, b);
}

/* A rank's input for `desc`: reduce-scatter's and alltoall's p blocks, the others' vector or block
 * (a broadcast's at its root). The same on every rank: it depends on the call's count and datatype only. */
static size_t input_bytes(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t bytes = desc->count * tally_datatype_size(desc->datatype);
  int blocks = desc->coll == TALLY_COLL_REDUCE_SCATTER || desc->coll == TALLY_COLL_ALLTOALL;
  return blocks ? bytes * (size_t)comm->nranks : bytes;
}

/* The bytes a rank puts on the board for `desc`: its input, or nothing (a broadcast's non-root,
 * barrier). */
static size_t posted_bytes(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (desc->coll == TALLY_COLL_BARRIER || (desc->coll == TALLY_COLL_BROADCAST && comm->rank != desc->root)) return 0;
  return input_bytes(comm, desc);
}

int tally_board_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (!comm->board) return 0;
  size_t bytes = input_bytes(comm, desc);
  switch (desc->coll) {
    case TALLY_COLL_BARRIER: return 1;
    case TALLY_COLL_ALLREDUCE:
    case TALLY_COLL_ALLGATHER:
    case TALLY_COLL_REDUCE_SCATTER:
    case TALLY_COLL_BROADCAST:
    case TALLY_COLL_ALLTOALL: return bytes <= TALLY_BOARD_SLOT_BYTES;
    default: return 0;
  }
}

/* --- one call -------------------------------------------------------------------------------- */

/* The ranks that have not arrived at `call` yet, as " 3 5", and how many. */
static int missing_ranks(struct tally_comm *c, int set, uint32_t call, char *buf, size_t len, int *one) {
  int n = 0;
  buf[0] = '\0';
  for (int r = 0; r < c->nranks; r++) {
    if (atomic_load_explicit(&tally_board_slot(c->board->page, set, r)->call, memory_order_acquire) == call + 1)
      continue;
    size_t used = strlen(buf);
    if (used + 12 < len) snprintf(buf + used, len - used, " %d", r);
    *one = r;
    n++;
  }
  return n;
}

/* A rank that has not arrived at `call` and whose process is gone. One that arrived and then exited
 * (it saw everyone arrive before this rank looked) has left its part: not a failure of this call. */
static tally_result_t peer_died(struct tally_comm *c, int set, uint32_t call) {
  for (int r = 0; r < c->nranks; r++) {
    struct pollfd p = {.fd = c->board->pidfd[r], .events = POLLIN};
    if (p.fd < 0 || poll(&p, 1, 0) <= 0) continue;
    if (atomic_load_explicit(&tally_board_slot(c->board->page, set, r)->call, memory_order_acquire) == call + 1)
      continue;
    TALLY_CHECK(tally_board_reported_failure(c)); /* a rank that failed, said so and left is not the news */
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

/* Whether every other rank's slot of `set` says it has arrived at `call`. */
static int everyone_arrived(struct tally_comm *c, int set, uint32_t call) {
  for (int r = 0; r < c->nranks; r++)
    if (r != c->rank && atomic_load_explicit(&tally_board_slot(c->board->page, set, r)->call, memory_order_acquire) !=
                            call + 1)
      return 0;
  return 1;
}

/* Waits until every rank has arrived at `call`: polls for a while (yielding the core between polls
 * where ranks share cores), then sleeps on the futex, checking at least every WAIT_CAP_MS for an
 * abort, a failed or dead rank, and the timeout. */
static tally_result_t wait_for_everyone(struct tally_comm *c, const struct tally_coll_desc *d, int set, uint32_t call) {
  struct board_arrivals *word = &c->board->page->arrived[set];
  uint64_t start = 0, timeout_ns = (uint64_t)(c->cfg.timeout_s * 1e9);
  for (unsigned polls = 0;; polls++) {
    if (everyone_arrived(c, set, call)) return TALLY_SUCCESS;
    if (!c->cores_shared && polls % HOT_POLLS != HOT_POLLS - 1) { /* a core of its own: no clock, no system call */
      tally_cpu_relax();
      continue;
    }
    if (!start) start = tally_now_ns(); /* the wait counts from the end of the first polls */
    TALLY_CHECK(tally_board_reported_failure(c));
    if (atomic_load(&c->aborted))
      return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
    uint64_t waited = tally_now_ns() - start;
    if (waited < SPIN_NS) {
      if (c->cores_shared) sched_yield(); /* let a rank sharing this core run */
      continue;
    }
    TALLY_CHECK(peer_died(c, set, call));
    if (waited >= timeout_ns) return timed_out(c, d, set, call);
    uint32_t seen = tally_board_word(word); /* before the announcement and the second look */
    tally_board_sleep_announce(word);
    if (everyone_arrived(c, set, call))
      tally_board_sleep_cancel(word);
    else
      tally_board_sleep(word, seen, WAIT_CAP_MS);
  }
}

/* Writes this rank's `bytes` of `data` (may be 0) and the call's fingerprint into its slot of the
 * next call's set, counts itself in, waits for every rank and checks their fingerprints; *set is
 * the set used. */
static tally_result_t meet(struct tally_comm *c, const struct tally_coll_desc *d, const void *data, size_t bytes,
                           int *set) {
  struct tally_board *b = c->board;
  uint32_t call = b->calls++;
  *set = (int)(call & 1);
  struct board_slot *mine = tally_board_slot(b->page, *set, c->rank);
  struct tally_msg_header call_header;
  tally_header_fill(&call_header, d, c->seq);
  call_header.bytes = d->count * tally_datatype_size(d->datatype);
  tally_header_encode(&call_header, mine->fingerprint);
  if (bytes) memcpy(mine->data, data, bytes);
  atomic_store_explicit(&mine->call, call + 1, memory_order_release);
  tally_board_arrived(&b->page->arrived[*set]);
  tally_result_t r = wait_for_everyone(c, d, *set, call);
  if (r == TALLY_SUCCESS) b->areas_read_late = 0; /* every rank has left what it did before this meet */
  for (int peer = 0; r == TALLY_SUCCESS && peer < c->nranks; peer++)
    if (peer != c->rank) r = tally_header_check(tally_board_slot(b->page, *set, peer)->fingerprint, &call_header, peer);
  return r; /* a failure: collectives.c reports it to the others (tally_board_fail) */
}

tally_result_t tally_board_meet(struct tally_comm *c, const struct tally_coll_desc *d) {
  int set;
  return meet(c, d, NULL, 0, &set);
}

tally_result_t tally_board_meet_posting(struct tally_comm *c, const struct tally_coll_desc *d, const void *data,
                                        size_t bytes, int *set) {
  return meet(c, d, data, bytes, set);
}

tally_result_t tally_board_read_peer(struct tally_comm *c, int peer, void *local, uint64_t address, size_t bytes) {
  size_t done = 0;
  while (done < bytes) {
    struct iovec to = {(char *)local + done, bytes - done};
    struct iovec from = {(void *)(uintptr_t)(address + done), bytes - done};
    ssize_t got = process_vm_readv((pid_t)c->board->page->pid[peer], &to, 1, &from, 1, 0);
    if (got < 0 && errno == EINTR) continue;
    int err = got < 0 ? errno : 0;
    if (got <= 0) {
      char who[128];
      TALLY_CHECK(tally_board_reported_failure(c)); /* a rank that failed and left took its buffer back */
      tally_comm_rank_text(c, peer, who, sizeof who);
      tally_error_blame(peer);
      if (err == ESRCH)
        return TALLY_ERROR(TALLY_ERR_REMOTE, "%s exited or was killed during an alltoall on the host board", who);
      return TALLY_ERROR(TALLY_ERR_SYSTEM,
                         "reading %zu bytes of %s's buffer at 0x%llx with process_vm_readv failed (%s), although it "
                         "worked when the communicator was made; TALLY_ALGO=alltoall:^shared avoids it",
                         bytes - done, who, (unsigned long long)(address + done), err ? strerror(err) : "nothing read");
    }
    done += (size_t)got;
  }
  /* what was read is the peer's only if it lived all along (its pid was not reused) */
  struct pollfd p = {.fd = c->board->pidfd[peer], .events = POLLIN};
  if (p.fd >= 0 && poll(&p, 1, 0) > 0) {
    char who[128];
    TALLY_CHECK(tally_board_reported_failure(c));
    tally_error_blame(peer);
    return TALLY_ERROR(TALLY_ERR_REMOTE, "%s exited or was killed during an alltoall on the host board",
                       tally_comm_rank_text(c, peer, who, sizeof who));
  }
  return TALLY_SUCCESS;
}

/* One meet with the inputs in the slots, then each rank takes its result from them. */
static tally_result_t board_run(struct tally_comm *c, const struct tally_coll_desc *d) {
  size_t size = tally_datatype_size(d->datatype), bytes = d->count * size;
  int set;
  TALLY_CHECK(meet(c, d, d->sendbuf, posted_bytes(c, d), &set));
  if (bytes == 0) return TALLY_SUCCESS;
  struct board_page *page = c->board->page;
  const unsigned char *first = tally_board_slot(page, set, 0)->data; /* a set's slots lie one after another */
  switch (d->coll) {
    case TALLY_COLL_ALLREDUCE:
      tally_reduce_in_order(d->recvbuf, first, sizeof(struct board_slot), c->nranks, d->count, d->datatype, d->op);
      break;
    case TALLY_COLL_REDUCE_SCATTER:
      tally_reduce_in_order(d->recvbuf, first + (size_t)c->rank * bytes, sizeof(struct board_slot), c->nranks, d->count,
                            d->datatype, d->op);
      break;
    case TALLY_COLL_ALLGATHER:
      for (int r = 0; r < c->nranks; r++)
        memcpy((unsigned char *)d->recvbuf + (size_t)r * bytes, tally_board_slot(page, set, r)->data, bytes);
      break;
    case TALLY_COLL_ALLTOALL: /* block r of rank r's slot is this rank's; the slots hold a copy, so in place works */
      for (int r = 0; r < c->nranks; r++)
        memcpy((unsigned char *)d->recvbuf + (size_t)r * bytes,
               tally_board_slot(page, set, r)->data + (size_t)c->rank * bytes, bytes);
      break;
    case TALLY_COLL_BROADCAST:
      if (d->recvbuf != d->sendbuf || c->rank != d->root)
        memcpy(d->recvbuf, tally_board_slot(page, set, d->root)->data, bytes);
      break;
    default: break; /* barrier */
  }
  return TALLY_SUCCESS;
}

const struct tally_algorithm tally_board_algorithm = {.name = "board", .id = TALLY_ALGO_BOARD, .run = board_run};
