/* Every collective, datatype and op against an exact reference, for 1, 2, 3, 5 and 8 ranks:
 * counts 0, 1 and primes, a multi-MiB buffer, in place and out of place, several roots. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coll_cases.h"
#include "harness.h"
#include "threaded.h"

#define RANKS_TEST(n)                                                                       \
  Test(collectives, ranks_##n) {                                                            \
    cr_assert_eq(harness_run(n, 240, coll_all_cases, NULL), 0, "some rank failed (see stderr)"); \
  }
RANKS_TEST(1)
RANKS_TEST(2)
RANKS_TEST(3)
RANKS_TEST(5)
RANKS_TEST(8)

/* Every collective, datatype and op with the ranks spread over fake hosts (TALLY_HOSTID): even
 * hosts take the hierarchical allreduce, uneven ones fall back to the flat ring. */
#define HOSTS_TEST(n, per_host)                                                                                \
  Test(collectives, ranks_##n##_hosts_of_##per_host) {                                                         \
    cr_assert_eq(harness_run_on_hosts(n, per_host, 240, coll_all_cases, NULL), 0, "some rank failed (see stderr)"); \
  }
HOSTS_TEST(4, 2) /* 2 hosts of 2 */
HOSTS_TEST(6, 2) /* 3 hosts of 2 */
HOSTS_TEST(6, 3) /* 2 hosts of 3 */
HOSTS_TEST(5, 2) /* 2, 2 and 1: uneven */
HOSTS_TEST(7, 3) /* 3, 3 and 1: uneven */

/* `n` ranks run `body` (a harness body, given `arg`) with TALLY_ALGO set to `algo`. */
#define FORCED_TEST(name, algo, n, body, arg)                                                  \
  Test(collectives, name) {                                                                   \
    setenv("TALLY_ALGO", algo, 1);                                                            \
    cr_assert_eq(harness_run(n, 240, body, arg), 0, "some rank failed (see stderr)");         \
    unsetenv("TALLY_ALGO");                                                                   \
  }

/* Recursive halving-doubling allreduce (TALLY_ALGO=allreduce:rhd) on powers of two and not: the fold and
 * unfold of the extra ranks, uneven blocks, every datatype and op. */
#define RHD_TEST(n) FORCED_TEST(rhd_allreduce_##n##_ranks, "allreduce:rhd", n, coll_all_cases, "allreduce")
RHD_TEST(2)
RHD_TEST(3)
RHD_TEST(4)
RHD_TEST(5)
RHD_TEST(6)
RHD_TEST(7)
RHD_TEST(8)
RHD_TEST(9)

/* Small allreduces on recursive doubling of the whole vector: a tuning file with slow messages
 * (50 us each) makes rhd prefer it over Rabenseifner's schedule for every count the cases use
 * (up to 40 KB; the crossover is about 266 KB on 6 ranks). */
#define RHD_WHOLE_VECTOR_TEST(n)                                                                        \
  Test(collectives, rhd_whole_vector_allreduce_##n##_ranks) {                                           \
    char path[] = "/tmp/tally-test-latency-XXXXXX";                                                     \
    int fd = mkstemp(path);                                                                             \
    const char text[] = "alpha_us = 50\nbandwidth_GBps = 2\ngamma_us_per_byte = 1e-4\n";               \
    cr_assert(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));              \
    close(fd);                                                                                          \
    setenv("TALLY_TUNING_FILE", path, 1);                                                               \
    setenv("TALLY_ALGO", "allreduce:rhd", 1);                                                           \
    cr_assert_eq(harness_run(n, 240, coll_all_cases, "allreduce"), 0, "some rank failed (see stderr)"); \
    unsetenv("TALLY_ALGO");                                                                             \
    unsetenv("TALLY_TUNING_FILE");                                                                      \
    unlink(path);                                                                                       \
  }
RHD_WHOLE_VECTOR_TEST(4)
RHD_WHOLE_VECTOR_TEST(6)

/* Allgather by recursive doubling and reduce-scatter by recursive halving (TALLY_ALGO=allgather:rhd,
 * reducescatter:rhd) on powers of two and not: the fold of the extra ranks into their partners, core
 * ids that stand for two ranks' blocks, the unfold, every datatype and op. */
static int rhd_gather_and_scatter(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return coll_all_cases(comm, rank, n, "allgather") + coll_all_cases(comm, rank, n, "reduce_scatter");
}

#define RHD_AG_RS_TEST(n)                                                                                  \
  FORCED_TEST(rhd_allgather_reduce_scatter_##n##_ranks, "allgather:rhd;reducescatter:rhd;ring", n, rhd_gather_and_scatter, \
              NULL)
RHD_AG_RS_TEST(2)
RHD_AG_RS_TEST(3)
RHD_AG_RS_TEST(4)
RHD_AG_RS_TEST(5)
RHD_AG_RS_TEST(6)
RHD_AG_RS_TEST(7)
RHD_AG_RS_TEST(8)
RHD_AG_RS_TEST(9)

/* Halving-doubling across fake hosts of 2 ranks, hosts in rank order (the tuner costs its rounds by
 * what they cross): allreduce, allgather and reduce-scatter, every datatype and op. */
static int rhd_three(tally_comm_t comm, int rank, int n, void *arg) {
  return coll_all_cases(comm, rank, n, "allreduce") + rhd_gather_and_scatter(comm, rank, n, arg);
}

Test(collectives, rhd_across_hosts) {
  setenv("TALLY_ALGO", "allreduce:rhd;allgather:rhd;reducescatter:rhd;ring", 1);
  cr_assert_eq(harness_run_on_hosts(8, 2, 240, rhd_three, NULL), 0, "some rank failed (see stderr)");
  unsetenv("TALLY_ALGO");
}

/* The shared-buffer algorithm (one host, through the board's areas) for allreduce, allgather,
 * reduce-scatter and broadcast: every datatype and op, in place and not, several roots, and the
 * multi-MiB case, which takes many rounds of an area each. */
static int shared_four(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return coll_all_cases(comm, rank, n, "allreduce") + coll_all_cases(comm, rank, n, "allgather") +
         coll_all_cases(comm, rank, n, "reduce_scatter") + coll_all_cases(comm, rank, n, "broadcast");
}

#define SHARED_TEST(n)                                                                                         \
  FORCED_TEST(shared_##n##_ranks, "allreduce:shared;allgather:shared;reducescatter:shared;broadcast:shared;ring", n, \
              shared_four, NULL)
SHARED_TEST(2)
SHARED_TEST(3)
SHARED_TEST(5)
SHARED_TEST(8)

/* The same with every output written by streaming stores (TALLY_STREAM_BYTES=1; core/copy.h): the
 * odd counts and datatypes give destinations that start and end inside a cache line. */
#define SHARED_STREAMING_TEST(n)                                                                  \
  Test(collectives, shared_streaming_##n##_ranks) {                                               \
    setenv("TALLY_STREAM_BYTES", "1", 1);                                                         \
    setenv("TALLY_ALGO", "allreduce:shared;allgather:shared;reducescatter:shared;broadcast:shared;ring", 1); \
    int failed = harness_run(n, 240, shared_four, NULL);                                          \
    unsetenv("TALLY_ALGO");                                                                       \
    unsetenv("TALLY_STREAM_BYTES");                                                               \
    cr_assert_eq(failed, 0, "some rank failed (see stderr)");                                     \
  }
SHARED_STREAMING_TEST(2)
SHARED_STREAMING_TEST(3)

/* Whether two sibling processes, as the harness's ranks are, may read each other's memory with
 * process_vm_readv (ptrace rules), which the board's single-copy forms need (algorithms/board.c):
 * one child publishes a value's address, the other reads it. */
static int siblings_read_each_other(void) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  static volatile unsigned long value = 0x7a11e7;
  pid_t owner = fork();
  if (owner == 0) {
    unsigned long address = (unsigned long)&value;
    if (write(fds[1], &address, sizeof address) != (ssize_t)sizeof address) _exit(1);
    pause();
    _exit(0);
  }
  pid_t reader = fork();
  if (reader == 0) {
    unsigned long address, got = 0;
    if (read(fds[0], &address, sizeof address) != (ssize_t)sizeof address) _exit(1);
    struct iovec local = {&got, sizeof got}, remote = {(void *)address, sizeof got};
    _exit(process_vm_readv(owner, &local, 1, &remote, 1, 0) == (ssize_t)sizeof got && got == value ? 0 : 1);
  }
  int status = 1;
  if (reader > 0) waitpid(reader, &status, 0);
  if (owner > 0) kill(owner, SIGKILL), waitpid(owner, NULL, 0);
  close(fds[0]), close(fds[1]);
  return reader > 0 && owner > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The tuner's measured choices for two ranks on one host (tuning/tuner.c), which scale with the
 * host's last-level cache C (TALLY_CACHE_BYTES here) and follow how far apart the two cores are
 * (TALLY_CORES_APART here), so that the test does not depend on the machine: where each rank has
 * a core of its own, the ring for allreduces up to C/16 where the cores are far apart; for
 * allgathers the areas where they run their single copy (the ranks may read each other's memory
 * and both ranks' outputs together stay below C), else halving-doubling up to C/16; the tree for
 * broadcasts below where the areas start streaming (both ranks' outputs at TALLY_STREAM_BYTES, by
 * default C/2; the tree for all of them where nothing streams); and the shared areas (as the model
 * prices them) beyond. Where the ranks share one CPU, the model's choice even with
 * TALLY_CORES_APART=1, which for a 128 KiB allreduce is not the ring. `arg`: the choices expected,
 * "collective bytes algorithm" per line, "!" before the algorithm for "not". */
static int two_rank_choices(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  char coll[32], want[32];
  unsigned long bytes;
  int bad = 0, used;
  for (const char *line = arg; sscanf(line, "%31s %lu %31s%n", coll, &bytes, want, &used) == 3; line += used) {
    const char *got = NULL, *algo = want[0] == '!' ? want + 1 : want;
    size_t count = bytes / 4 / (strcmp(coll, "allgather") ? 1 : 2); /* allgather: bytes are the whole output */
    if (tally_comm_tuner_choice(comm, coll, count, TALLY_FLOAT32, &got, NULL) != TALLY_SUCCESS)
      bad += harness_fail(rank, "tally_comm_tuner_choice: %s", tally_comm_last_error(comm));
    else if ((strcmp(got, algo) == 0) != (want[0] != '!'))
      bad += harness_fail(rank, "%s of %lu bytes on 2 ranks goes to %s, expected %s", coll, bytes, got, want);
  }
  return bad;
}

/* TALLY_CORES_APART=auto: the two ranks time the board's meets and agree, so that both take the
 * same algorithm for a 256 KiB allreduce, the ring or the areas, whichever their cores' distance
 * gives; the allreduce itself then runs. */
static int two_ranks_agree_on_the_distance(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  const char *got = NULL;
  if (tally_comm_tuner_choice(comm, "allreduce", 65536, TALLY_FLOAT32, &got, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_tuner_choice: %s", tally_comm_last_error(comm));
  int32_t mine = !strcmp(got, "ring") ? 1 : !strcmp(got, "shared") ? 2 : 0, both[2];
  if (!mine) return harness_fail(rank, "a 256 KiB allreduce goes to %s, neither the ring nor the areas", got);
  if (tally_allgather(&mine, both, 1, TALLY_INT32, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allgather: %s", tally_comm_last_error(comm));
  if (both[0] != both[1]) return harness_fail(rank, "the two ranks chose differently (%d, %d)", both[0], both[1]);
  return coll_all_cases(comm, rank, n, "allreduce");
}

Test(collectives, two_rank_choices_follow_the_measurement) {
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2)
    cr_skip_test("SKIPPED: fewer than 2 CPUs here, so 2 ranks cannot each have a core of their own");
  int single_copy = siblings_read_each_other();
  if (!single_copy) fprintf(stderr, "two_rank_choices: process_vm_readv between siblings fails here: no single copy\n");
  cr_assert_eq(harness_run(2, 60, two_ranks_agree_on_the_distance, NULL), 0);
  setenv("TALLY_CACHE_BYTES", "33554432", 1); /* 32 MiB */
  setenv("TALLY_CORES_APART", "0", 1);
  cr_assert_eq(harness_run(2, 60, two_rank_choices,
                           "allreduce 131072 shared  allreduce 1048576 shared  allreduce 2097152 shared "
                           "allreduce 16777216 shared  allgather 16777216 shared  broadcast 4194304 tree "
                           "broadcast 8388608 shared  broadcast 16777216 shared  reduce_scatter 1048576 shared"),
               0);
  setenv("TALLY_CORES_APART", "1", 1);
  cr_assert_eq(harness_run(2, 60, two_rank_choices,
                           "allreduce 131072 ring  allreduce 2097152 ring  allreduce 4194304 !ring "
                           "allreduce 16777216 shared  broadcast 4194304 tree"),
               0);
  cr_assert_eq(harness_run(2, 60, two_rank_choices,
                           single_copy ? "allgather 65536 shared  allgather 2097152 shared  allgather 8388608 shared"
                                       : "allgather 65536 rhd  allgather 2097152 rhd  allgather 4194304 !rhd"),
               0);
  setenv("TALLY_STREAM_BYTES", "0", 1); /* no streaming stores: the tree broadcasts at every size */
  cr_assert_eq(harness_run(2, 60, two_rank_choices, "broadcast 16777216 tree"), 0);
  unsetenv("TALLY_STREAM_BYTES");
  setenv("TALLY_CACHE_BYTES", "8388608", 1); /* 8 MiB: everything moves down by 4 */
  cr_assert_eq(harness_run(2, 60, two_rank_choices,
                           "allreduce 524288 ring  allreduce 1048576 !ring  broadcast 1048576 tree "
                           "broadcast 2097152 shared"),
               0);
  cr_assert_eq(harness_run(2, 60, two_rank_choices,
                           single_copy ? "allgather 524288 shared  allgather 1048576 shared"
                                       : "allgather 524288 rhd  allgather 1048576 !rhd"),
               0);
  unsetenv("TALLY_CACHE_BYTES");
  setenv("TALLY_ALGO", "allreduce:rhd,shared;broadcast:ring,shared", 1); /* neither the ring nor the tree allowed */
  cr_assert_eq(harness_run(2, 60, two_rank_choices, "allreduce 131072 !ring  broadcast 1048576 !tree"), 0);
  unsetenv("TALLY_ALGO");
  if (harness_share_one_cpu(1) != 0)
    cr_skip_test("SKIPPED: cannot bind the ranks to one CPU (sched_setaffinity: %s)", strerror(errno));
  int failed = harness_run(2, 60, two_rank_choices, "allreduce 131072 !ring  broadcast 1048576 !tree");
  harness_share_one_cpu(0);
  unsetenv("TALLY_CORES_APART");
  cr_assert_eq(failed, 0, "2 ranks sharing one CPU");
}

/* Two ring channels (TALLY_RING_CHANNELS=2): allreduce on the forward and the reverse ring at once,
 * every datatype and op, over shared memory and TCP; 2 ranks keep one ring (both would share a
 * connection). */
#define CHANNELS_TEST(n, transport)                                                                      \
  Test(collectives, ring_channels_##n##_ranks_##transport) {                                             \
    setenv("TALLY_RING_CHANNELS", "2", 1);                                                              \
    setenv("TALLY_ALGO", "allreduce:ring", 1);                                                          \
    setenv("TALLY_TRANSPORT", #transport, 1);                                                           \
    cr_assert_eq(harness_run(n, 240, coll_all_cases, "allreduce"), 0, "some rank failed (see stderr)"); \
    unsetenv("TALLY_RING_CHANNELS");                                                                    \
    unsetenv("TALLY_ALGO");                                                                             \
    unsetenv("TALLY_TRANSPORT");                                                                        \
  }
CHANNELS_TEST(2, auto)
CHANNELS_TEST(3, auto)
CHANNELS_TEST(5, auto)
CHANNELS_TEST(8, auto)
CHANNELS_TEST(4, tcp)

/* TALLY_SPIN_US=0 blocks as soon as nothing moves: a collective must still end as soon as its last
 * request does (a lost chance to notice that once cost each call a 100 ms poll). 50 calls in
 * well under the 5 s that bug took. */
static int small_calls_without_spinning(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  double start = harness_now_s();
  for (int i = 0; i < 50; i++) {
    float x = 1;
    if (tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
  }
  double took = harness_now_s() - start;
  return took < 2.5 ? 0 : harness_fail(rank, "50 one-element allreduces took %.2f s", took);
}

Test(collectives, no_spinning_does_not_stall) {
  setenv("TALLY_SPIN_US", "0", 1);
  cr_assert_eq(harness_run(2, 60, small_calls_without_spinning, NULL), 0);
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(2, 60, small_calls_without_spinning, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
  unsetenv("TALLY_SPIN_US");
}

/* Two jobs on this host at once (two sets of shared-memory segments, two bootstrap roots) do not
 * interfere: each checks every result. */
Test(collectives, two_jobs_at_once) {
  pid_t jobs[2];
  for (int j = 0; j < 2; j++) { /* each job in its own process: the harness reaps any child of its caller */
    fflush(NULL);
    jobs[j] = fork();
    if (jobs[j] == 0) _exit(harness_run(3, 240, coll_all_cases, NULL) == 0 ? 0 : 1);
  }
  for (int j = 0; j < 2; j++) {
    int status = 0;
    cr_assert_eq(waitpid(jobs[j], &status, 0), jobs[j]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "job %d failed (see stderr)", j);
  }
}

/* Several communicators, each created and used by its own thread at once (also run under
 * ThreadSanitizer by tests/tsan_runner.c). */
Test(collectives, communicators_in_threads) { cr_assert_eq(harness_run(2, 120, threaded_comms_in_threads, NULL), 0); }
