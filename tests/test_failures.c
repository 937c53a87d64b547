/* Error paths of running collectives: mismatched calls, a peer that exits, a peer that never
 * calls (timeout), abort from another thread, and the error state that follows each. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "threaded.h"

/* After a failure the communicator refuses further collectives. */
static int expect_error_state(int rank, tally_comm_t comm) {
  float x = 0;
  return harness_expect(rank, comm, tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL),
                        TALLY_ERR_INVALID_USAGE, "error state");
}

static int mismatched_counts(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float buf[32] = {0};
  tally_result_t r = tally_allreduce(buf, buf, rank == 1 ? 20 : 10, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  /* A rank sees either the peer's header (and says who called what) or the peer's report of it. */
  const char *msg = tally_comm_last_error(comm);
  if (r != TALLY_ERR_MISMATCH) return harness_fail(rank, "expected a mismatch, got %s", tally_result_string(r));
  if (!strstr(msg, "count=") && !strstr(msg, "collective mismatch"))
    return harness_fail(rank, "mismatch message says neither what was called nor that it was a mismatch: %s", msg);
  return expect_error_state(rank, comm);
}

Test(failures, mismatched_counts) { cr_assert_eq(harness_run(2, 60, mismatched_counts, NULL), 0); }

static int mismatched_collectives(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float buf[8] = {0};
  tally_result_t r = rank == 0 ? tally_broadcast(buf, buf, 8, TALLY_FLOAT32, 0, comm, NULL)
                               : tally_allreduce(buf, buf, 8, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  /* Both ranks get MISMATCH in this call: rank 1 from rank 0's broadcast header or, when rank 0
   * noticed first and dropped its queued broadcast, from rank 0's report; rank 0, the root, from
   * what rank 1 sent in place of the chain's acknowledgement. */
  return harness_expect(rank, comm, r, TALLY_ERR_MISMATCH, rank == 1 ? "rank 0" : "rank 1");
}

Test(failures, mismatched_collectives) { cr_assert_eq(harness_run(2, 60, mismatched_collectives, NULL), 0); }

/* Every kind of mismatch, made by rank 2 of 4 at the same position of the sequence: every rank
 * returns MISMATCH (in a broadcast, a rank the chain passed before the odd rank, on its next call),
 * and the rank that read the odd message says what rank 2 called. */
enum mismatch_kind { WRONG_DATATYPE, WRONG_OP, WRONG_ROOT, WRONG_COUNT, NUM_MISMATCH_KINDS };

struct mismatch_run {
  enum mismatch_kind kind;
  char messages[4][1024]; /* each rank's error, in memory shared with the test */
};

static int mismatch_of_kind(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  struct mismatch_run *run = arg;
  int odd = rank == 2;
  float buf[64] = {0};
  tally_result_t r;
  switch (run->kind) {
    case WRONG_DATATYPE: /* same byte count, different type */
      r = tally_allreduce(buf, buf, 16, odd ? TALLY_INT32 : TALLY_FLOAT32, TALLY_SUM, comm, NULL);
      break;
    case WRONG_OP: r = tally_allreduce(buf, buf, 16, TALLY_FLOAT32, odd ? TALLY_MAX : TALLY_SUM, comm, NULL); break;
    case WRONG_ROOT: r = tally_broadcast(buf, buf, 16, TALLY_FLOAT32, odd ? 1 : 0, comm, NULL); break;
    default: r = tally_allreduce(buf, buf, odd ? 32 : 16, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  }
  if (run->kind == WRONG_ROOT && rank == 1 && r == TALLY_SUCCESS) {
    /* The chain from root 0 passed rank 1 before reaching rank 2, so rank 1 got root 0's data, as
     * it asked; it learns of the mismatch on its next call. */
    r = tally_allreduce(buf, buf, 16, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  }
  const char *msg = tally_comm_last_error(comm);
  snprintf(run->messages[rank], sizeof run->messages[rank], "%s", msg);
  if (r != TALLY_ERR_MISMATCH)
    return harness_fail(rank, "kind %d: expected a mismatch, got %s: %s", run->kind, tally_result_string(r), msg);
  return expect_error_state(rank, comm);
}

Test(failures, every_mismatch_kind) {
  static const char *const odd_value[] = {"int32", "max", "root=1", "count=32"};
  struct mismatch_run *run = mmap(NULL, sizeof *run, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(run, MAP_FAILED);
  for (run->kind = 0; run->kind < NUM_MISMATCH_KINDS; run->kind++) {
    memset(run->messages, 0, sizeof run->messages);
    cr_assert_eq(harness_run(4, 60, mismatch_of_kind, run), 0, "mismatch kind %d", run->kind);
    int described = 0;
    for (int r = 0; r < 4; r++) described += strstr(run->messages[r], odd_value[run->kind]) != NULL;
    cr_assert_gt(described, 0, "no rank says rank 2 passed %s; rank 3 said: %s", odd_value[run->kind],
                 run->messages[3]);
  }
  munmap(run, sizeof *run);
}

static int peer_exits(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  if (rank == 1) _exit(0); /* dies without a word */
  float buf[1024] = {0};
  tally_result_t r = tally_allreduce(buf, buf, 1024, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  int bad = harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 1");
  return bad || expect_error_state(rank, comm);
}

Test(failures, peer_exits) { cr_assert_eq(harness_run(2, 60, peer_exits, NULL), 0); }

static int peer_never_calls(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  if (rank == 1) {
    sleep(3); /* longer than TALLY_TIMEOUT */
    return 0;
  }
  float x = 1;
  return harness_expect(rank, comm, tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL), TALLY_ERR_TIMEOUT,
                        "TALLY_TIMEOUT");
}

Test(failures, timeout_names_the_wait) {
  setenv("TALLY_TIMEOUT", "1", 1);
  cr_assert_eq(harness_run(2, 60, peer_never_calls, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}

Test(failures, abort_from_another_thread) { cr_assert_eq(harness_run(2, 60, threaded_abort_from_watchdog, NULL), 0); }

/* kill -9 of one of 8 ranks in the middle of a stream of allreduces: every survivor returns
 * TALLY_ERR_REMOTE naming the dead rank within seconds (TALLY_TIMEOUT is far longer), because
 * each rank that notices passes the news on to both ring neighbours. */
struct kill_plan {
  int victim;
  int after; /* allreduces the victim completes before it dies */
};

static int killed_mid_stream(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  const struct kill_plan *plan = arg;
  enum { COUNT = 256 * 1024 };
  static float buf[COUNT];
  char name[32];
  snprintf(name, sizeof name, "rank %d", plan->victim);
  for (int i = 0;; i++) {
    if (rank == plan->victim && i == plan->after) raise(SIGKILL);
    double start = harness_now_s();
    tally_result_t r = tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    if (r == TALLY_SUCCESS) continue;
    double took = harness_now_s() - start;
    int bad = harness_expect(rank, comm, r, TALLY_ERR_REMOTE, name);
    if (took > 5) bad += harness_fail(rank, "noticing the dead rank took %.1f s", took);
    return bad;
  }
}

static void kill_one_of(int n, int victim) {
  setenv("TALLY_TIMEOUT", "60", 1);
  struct kill_plan plan = {victim, 3 + (int)(harness_now_s() * 1000) % 10};
  cr_assert_eq(harness_run_killing(n, 120, killed_mid_stream, &plan, victim), 0, "victim %d of %d after %d", victim,
               n, plan.after);
  unsetenv("TALLY_TIMEOUT");
}

Test(failures, kill_first_of_eight) { kill_one_of(8, 0); }
Test(failures, kill_middle_of_eight) { kill_one_of(8, 4); }
Test(failures, kill_last_of_eight) { kill_one_of(8, 7); }

/* The same failures on the shared-buffer algorithm, whose waits are the host board's meets: a
 * count mismatch, a peer that exits, one that never calls, an abort, and a kill in mid-stream (of
 * 8 ranks sharing the CPUs, and of 2). */
#define ON_SHARED(name, call)                         \
  Test(failures, shared_##name) {                     \
    setenv("TALLY_ALGO", "allreduce:shared", 1);      \
    call;                                             \
    unsetenv("TALLY_ALGO");                           \
  }
ON_SHARED(mismatched_counts, cr_assert_eq(harness_run(2, 60, mismatched_counts, NULL), 0))
ON_SHARED(peer_exits, cr_assert_eq(harness_run(2, 60, peer_exits, NULL), 0))
ON_SHARED(abort_from_another_thread, cr_assert_eq(harness_run(2, 60, threaded_abort_from_watchdog, NULL), 0))
ON_SHARED(kill_middle_of_eight, kill_one_of(8, 4))
ON_SHARED(kill_second_of_two, kill_one_of(2, 1))
ON_SHARED(timeout_names_the_wait, {
  setenv("TALLY_TIMEOUT", "1", 1);
  cr_assert_eq(harness_run(2, 60, peer_never_calls, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
})

/* The same failures on the host board's many-block collectives (shared.c): the alltoall through
 * the areas (blocks of 4 KB) and in its single-copy form (blocks of 160 KB read from the other
 * ranks with process_vm_readv, the ranks bound to one CPU so that they share it), and the
 * allgather's single copy (2 ranks with a core each). arg points to a struct threaded_blocks; a
 * rank's collective is that one with its count less `less`. */
static tally_result_t blocks_call(tally_comm_t comm, int n, const void *arg, size_t less, float **send, float **recv) {
  struct threaded_blocks b = *(const struct threaded_blocks *)arg;
  b.count -= less;
  return threaded_blocks_call(comm, n, &b, send, recv);
}

/* Rank 1 calls with one element a block less: both get MISMATCH, and rank 0 no byte past its blocks. */
static int blocks_mismatched_counts(tally_comm_t comm, int rank, int n, void *arg) {
  size_t count = ((const struct threaded_blocks *)arg)->count - (rank == 1);
  float *send, *recv;
  tally_result_t r = blocks_call(comm, n, arg, rank == 1, &send, &recv);
  int bad = harness_expect(rank, comm, r, TALLY_ERR_MISMATCH, rank == 1 ? "rank 0" : "rank 1");
  if (recv[count * (size_t)n] != 0) bad += harness_fail(rank, "the failed collective wrote past its blocks");
  free(send), free(recv);
  return bad || expect_error_state(rank, comm);
}

static int blocks_peer_exits(tally_comm_t comm, int rank, int n, void *arg) {
  if (rank == 1) _exit(0);
  float *send, *recv;
  tally_result_t r = blocks_call(comm, n, arg, 0, &send, &recv);
  free(send), free(recv);
  return harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 1") || expect_error_state(rank, comm);
}

static int blocks_peer_never_calls(tally_comm_t comm, int rank, int n, void *arg) {
  if (rank == 1) {
    sleep(3); /* longer than TALLY_TIMEOUT */
    return 0;
  }
  float *send, *recv;
  tally_result_t r = blocks_call(comm, n, arg, 0, &send, &recv);
  free(send), free(recv);
  return harness_expect(rank, comm, r, TALLY_ERR_TIMEOUT, "TALLY_TIMEOUT");
}

/* The ranks run the collective until the last one kills itself after a few: every survivor
 * returns REMOTE naming it, within seconds. */
static int blocks_killed_mid_stream(tally_comm_t comm, int rank, int n, void *arg) {
  char victim[24];
  snprintf(victim, sizeof victim, "rank %d", n - 1);
  for (int i = 0;; i++) {
    if (rank == n - 1 && i == 5) raise(SIGKILL);
    double start = harness_now_s();
    float *send, *recv;
    tally_result_t r = blocks_call(comm, n, arg, 0, &send, &recv);
    free(send), free(recv);
    if (r == TALLY_SUCCESS) continue;
    double took = harness_now_s() - start;
    int bad = harness_expect(rank, comm, r, TALLY_ERR_REMOTE, victim);
    return took > 5 ? bad + harness_fail(rank, "noticing the dead rank took %.1f s", took) : bad;
  }
}

/* Every failure above on the shared areas' `b`, the kill on `kill_ranks` ranks. */
static void blocks_failures(struct threaded_blocks b, int kill_ranks) {
  setenv("TALLY_ALGO", b.allgather ? "allgather:shared" : "alltoall:shared", 1);
  size_t count = b.count;
  cr_assert_eq(harness_run(2, 60, blocks_mismatched_counts, &b), 0, "count %zu: mismatch", count);
  cr_assert_eq(harness_run(3, 60, blocks_mismatched_counts, &b), 0, "count %zu: mismatch on 3", count);
  cr_assert_eq(harness_run(2, 60, blocks_peer_exits, &b), 0, "count %zu: peer exits", count);
  cr_assert_eq(harness_run(2, 60, threaded_blocks_abort_from_watchdog, &b), 0, "count %zu: abort", count);
  setenv("TALLY_TIMEOUT", "1", 1);
  cr_assert_eq(harness_run(2, 60, blocks_peer_never_calls, &b), 0, "count %zu: timeout", count);
  setenv("TALLY_TIMEOUT", "60", 1);
  cr_assert_eq(harness_run_killing(kill_ranks, 60, blocks_killed_mid_stream, &b, kill_ranks - 1), 0,
               "count %zu: kill", count);
  unsetenv("TALLY_TIMEOUT");
  unsetenv("TALLY_ALGO");
}

Test(failures, shared_alltoall_through_the_areas) { blocks_failures((struct threaded_blocks){0, 1000}, 4); }
Test(failures, shared_alltoall_single_copy) {
  if (harness_share_one_cpu(1) != 0)
    cr_skip_test("SKIPPED: cannot bind the ranks to one CPU (sched_setaffinity: %s)", strerror(errno));
  blocks_failures((struct threaded_blocks){0, 40000}, 4);
  harness_share_one_cpu(0);
}
/* 2 ranks with a core each read each other's 40000 floats (outputs of 2 x 320 KB, below any
 * last-level cache of 1 MiB or more); 3 ranks on 2 CPUs go through the areas. */
Test(failures, shared_allgather_single_copy) {
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2)
    cr_skip_test("SKIPPED: fewer than 2 CPUs here, so 2 ranks cannot each have a core of their own");
  blocks_failures((struct threaded_blocks){1, 40000}, 2);
}

/* Counts that take different forms on different ranks (the board's slots, the areas, the single
 * copy) under the tuner: every rank still fails with MISMATCH or the report of one. */
static int alltoall_counts_across_forms(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  static const size_t counts[] = {1, 1000, 40000};
  float *send, *recv;
  tally_result_t r = threaded_blocks_call(comm, n, &(struct threaded_blocks){0, counts[rank % 3]}, &send, &recv);
  free(send), free(recv);
  if (r != TALLY_ERR_MISMATCH && r != TALLY_ERR_REMOTE)
    return harness_fail(rank, "alltoall of another form's count gave %s: %s", tally_result_string(r),
                        tally_comm_last_error(comm));
  return 0;
}
Test(failures, alltoall_counts_across_forms) {
  setenv("TALLY_TIMEOUT", "20", 1);
  cr_assert_eq(harness_run(3, 60, alltoall_counts_across_forms, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}

Test(failures, one_comm_two_threads) { cr_assert_eq(harness_run(2, 60, threaded_one_comm_two_threads, NULL), 0); }

/* tally_comm_init_rank_config: a per-communicator timeout wins over TALLY_TIMEOUT. */
static int config_timeout(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  tally_config_t config = TALLY_CONFIG_INITIALIZER;
  config.timeout_s = 1;
  tally_comm_t comm;
  if (tally_comm_init_rank_config(&comm, nranks, *id, rank, &config) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  int bad = 0;
  if (rank == 1) {
    sleep(3); /* never calls: rank 0 must give up after its 1 s, not TALLY_TIMEOUT's 300 */
  } else {
    double start = harness_now_s();
    float x = 1;
    bad = harness_expect(rank, comm, tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL),
                         TALLY_ERR_TIMEOUT, "TALLY_TIMEOUT");
    double took = harness_now_s() - start;
    if (took > 2.5) bad += harness_fail(rank, "took %.1f s to time out", took);
  }
  tally_comm_destroy(comm);
  return bad;
}

Test(failures, config_timeout_overrides_environment) {
  unsetenv("TALLY_TIMEOUT");
  cr_assert_eq(harness_run_raw(2, 60, config_timeout, NULL), 0);
}

Test(failures, bad_config_refused) {
  tally_unique_id_t id;
  memset(&id, 0, sizeof id);
  tally_comm_t comm;
  tally_config_t config = TALLY_CONFIG_INITIALIZER;
  config.struct_size = 3;
  cr_assert_eq(tally_comm_init_rank_config(&comm, 1, id, 0, &config), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "struct_size"), "%s", tally_comm_last_error(NULL));
  config = (tally_config_t)TALLY_CONFIG_INITIALIZER;
  config.timeout_s = -1;
  cr_assert_eq(tally_comm_init_rank_config(&comm, 1, id, 0, &config), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "timeout_s"), "%s", tally_comm_last_error(NULL));
}
