/* Point-to-point calls, groups, alltoall, alltoallv, gather and scatter (api/point_to_point.c,
 * api/group.c, algorithms/p2p.c): every call on 1 to 9 ranks over shared memory, TCP and fake hosts, every
 * datatype's element size, odd counts, in place where allowed; groups of 100 messages per rank
 * posted in a random order; mismatched counts, a dead peer, bad arguments. Payloads are byte
 * patterns that name their sender, receiver and message, so a misdelivered byte is caught. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "p2p_cases.h"
#include "threaded.h"

/* --- send and recv ------------------------------------------------------------------------------ */

#define RING_TEST(n)                                                                                \
  Test(p2p, ring_exchange_##n##_ranks) {                                                            \
    cr_assert_eq(harness_run(n, 240, p2p_ring_exchange, NULL), 0, "some rank failed (see stderr)"); \
  }
RING_TEST(2)
RING_TEST(3)
RING_TEST(5)
Test(p2p, ring_exchange_4_ranks_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(4, 240, p2p_ring_exchange, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
}
Test(p2p, ring_exchange_6_ranks_on_3_hosts) {
  cr_assert_eq(harness_run_on_hosts(6, 2, 240, p2p_ring_exchange, NULL), 0);
}

/* 100 messages per rank to random ranks (itself included), posted in a random order in one group
 * (seeded; the seed is printed), with the collectives still lined up around it: every pair's
 * messages keep their order on both sides, everything else is shuffled. */
struct storm {
  unsigned seed;
};

struct planned {
  int src, dst, msg;
  size_t bytes;
};

static unsigned next_random(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 8;
}

static int storm(tally_comm_t comm, int rank, int n, void *arg) {
  const struct storm *st = arg;
  enum { PER_RANK = 100 };
  int total = PER_RANK * n;
  struct planned *plan = malloc((size_t)total * sizeof *plan);
  unsigned s = st->seed;
  for (int i = 0; i < total; i++) { /* the same plan on every rank */
    plan[i].src = i / PER_RANK;
    plan[i].dst = (int)(next_random(&s) % (unsigned)n);
    plan[i].msg = i;
    plan[i].bytes = next_random(&s) % 3 == 0 ? next_random(&s) % 200000 : next_random(&s) % 64;
  }
  /* this rank's operations: its sends and its recvs, in plan order */
  int nops = 0, *ops = malloc(2 * (size_t)total * sizeof *ops); /* plan index * 2 + is_send */
  for (int i = 0; i < total; i++) {
    if (plan[i].src == rank) ops[nops++] = i * 2 + 1;
    if (plan[i].dst == rank) ops[nops++] = i * 2;
  }
  /* shuffle positions, then put each (peer, direction)'s operations back into its positions in order */
  int *order = malloc((size_t)nops * sizeof *order);
  for (int i = 0; i < nops; i++) order[i] = i;
  unsigned mine = st->seed ^ (unsigned)(rank * 7919);
  for (int i = nops - 1; i > 0; i--) {
    int j = (int)(next_random(&mine) % (unsigned)(i + 1)), t = order[i];
    order[i] = order[j], order[j] = t;
  }
  int *posted = malloc((size_t)nops * sizeof *posted);
  for (int slot = 0; slot < nops; slot++) posted[slot] = -1;
  for (int k = 0; k < 2 * n; k++) { /* class k: peer k / 2, direction k % 2 */
    int next_op = 0;
    for (int slot = 0; slot < nops; slot++) {
      int op = ops[order[slot]], i = op / 2, is_send = op % 2;
      int peer = is_send ? plan[i].dst : plan[i].src;
      if (peer * 2 + is_send != k) continue;
      while (1) { /* the class's next operation in plan order */
        int o = ops[next_op++], oi = o / 2, os = o % 2;
        if ((os ? plan[oi].dst : plan[oi].src) * 2 + os == k) {
          posted[slot] = o;
          break;
        }
      }
    }
  }
  unsigned char **bufs = calloc((size_t)nops, sizeof *bufs);
  int bad = 0;
  tally_result_t r = tally_group_start();
  for (int slot = 0; slot < nops && r == TALLY_SUCCESS; slot++) {
    int o = posted[slot], i = o / 2, is_send = o % 2;
    bufs[slot] = malloc(plan[i].bytes + 1);
    if (is_send) {
      p2p_fill(bufs[slot], plan[i].bytes, plan[i].src, plan[i].dst, plan[i].msg);
      r = tally_send(bufs[slot], plan[i].bytes, TALLY_UINT8, plan[i].dst, comm, NULL);
    } else {
      r = tally_recv(bufs[slot], plan[i].bytes, TALLY_UINT8, plan[i].src, comm, NULL);
    }
  }
  tally_result_t end = tally_group_end();
  if (r != TALLY_SUCCESS || end != TALLY_SUCCESS)
    bad = harness_fail(rank, "seed %u: %s", st->seed, tally_comm_last_error(comm));
  for (int slot = 0; slot < nops && !bad; slot++) {
    int o = posted[slot], i = o / 2;
    if (o % 2 == 0) bad = p2p_check(rank, "storm", bufs[slot], plan[i].bytes, plan[i].src, plan[i].dst, plan[i].msg);
  }
  for (int slot = 0; slot < nops; slot++) free(bufs[slot]);
  free(bufs);
  free(posted);
  free(order);
  free(ops);
  free(plan);
  if (!bad && tally_barrier(comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "barrier after the storm: %s", tally_comm_last_error(comm));
  return bad;
}

static void run_storm(int n, int per_host) {
  struct storm st = {(unsigned)time(NULL)};
  fprintf(stderr, "p2p storm on %d ranks: seed %u\n", n, st.seed);
  int failed = per_host ? harness_run_on_hosts(n, per_host, 240, storm, &st) : harness_run(n, 240, storm, &st);
  cr_assert_eq(failed, 0, "seed %u", st.seed);
}
Test(p2p, storm_4_ranks) { run_storm(4, 0); }
Test(p2p, storm_9_ranks) { run_storm(9, 0); }
Test(p2p, storm_6_ranks_on_3_hosts) { run_storm(6, 2); }
Test(p2p, storm_5_ranks_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  run_storm(5, 0);
  unsetenv("TALLY_TRANSPORT");
}

/* --- alltoall, alltoallv, gather, scatter -------------------------------------------------------- */

#define ALLTOALL_TEST(n)                                                                              \
  Test(p2p, alltoall_##n##_ranks) { cr_assert_eq(harness_run(n, 240, p2p_alltoall_cases, NULL), 0); } \
  Test(p2p, gather_scatter_##n##_ranks) { cr_assert_eq(harness_run(n, 240, p2p_rooted_cases, NULL), 0); }
ALLTOALL_TEST(1)
ALLTOALL_TEST(2)
ALLTOALL_TEST(3)
ALLTOALL_TEST(5)
ALLTOALL_TEST(9)
Test(p2p, alltoall_4_ranks_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(4, 240, p2p_alltoall_cases, NULL), 0);
  cr_assert_eq(harness_run(4, 240, p2p_rooted_cases, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
}
Test(p2p, alltoall_6_ranks_on_3_hosts) {
  cr_assert_eq(harness_run_on_hosts(6, 2, 240, p2p_alltoall_cases, NULL), 0);
  cr_assert_eq(harness_run_on_hosts(6, 2, 240, p2p_rooted_cases, NULL), 0);
}

/* Each algorithm forced with TALLY_ALGO runs every case (the tuner alone would pick one per size). */
static void run_forced(const char *algo, int n, int per_host, harness_body_fn body) {
  setenv("TALLY_ALGO", algo, 1);
  int failed = per_host ? harness_run_on_hosts(n, per_host, 240, body, NULL) : harness_run(n, 240, body, NULL);
  unsetenv("TALLY_ALGO");
  cr_assert_eq(failed, 0, "TALLY_ALGO=%s on %d ranks (%d per host)", algo, n, per_host);
}
Test(p2p, alltoall_bruck) {
  run_forced("alltoall:bruck", 5, 0, p2p_alltoall_cases);
  run_forced("alltoall:bruck", 8, 0, p2p_alltoall_cases);
}
Test(p2p, alltoall_pairwise) { run_forced("alltoall:pairwise", 5, 0, p2p_alltoall_cases); }
Test(p2p, alltoall_bruck_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  run_forced("alltoall:bruck", 3, 0, p2p_alltoall_cases);
  unsetenv("TALLY_TRANSPORT");
}
/* The host board's alltoall: in one meet through the slots (small inputs; larger ones fall back to
 * pairwise), and the shared-buffer algorithm through the areas in rounds or, for blocks of 128 KiB
 * and more where ranks share cores, read straight from the other ranks' buffers: the large cases
 * run once as the machine has it and once with every rank on one CPU. */
static void run_sharing_one_cpu(const char *algo, int n, harness_body_fn body) {
  if (harness_share_one_cpu(1) != 0)
    cr_skip_test("SKIPPED: cannot bind the ranks to one CPU (sched_setaffinity: %s)", strerror(errno));
  setenv("TALLY_ALGO", algo, 1);
  int failed = harness_run(n, 240, body, NULL);
  unsetenv("TALLY_ALGO");
  harness_share_one_cpu(0);
  cr_assert_eq(failed, 0, "TALLY_ALGO=%s on %d ranks sharing one CPU", algo, n);
}
#define SHARED_ALLTOALL_TEST(n)                                                 \
  Test(p2p, alltoall_shared_##n##_ranks) {                                      \
    run_forced("alltoall:shared", n, 0, p2p_alltoall_cases);                    \
    run_forced("alltoall:shared", n, 0, p2p_alltoall_large_cases);              \
    run_sharing_one_cpu("alltoall:shared", n, p2p_alltoall_large_cases);        \
  }
SHARED_ALLTOALL_TEST(2)
SHARED_ALLTOALL_TEST(3)
SHARED_ALLTOALL_TEST(5)
SHARED_ALLTOALL_TEST(8)
/* Through the areas with every output written by streaming stores (TALLY_STREAM_BYTES=1). */
Test(p2p, alltoall_shared_streaming) {
  setenv("TALLY_STREAM_BYTES", "1", 1);
  run_forced("alltoall:shared", 3, 0, p2p_alltoall_cases);
  run_forced("alltoall:shared", 3, 0, p2p_alltoall_large_cases);
  unsetenv("TALLY_STREAM_BYTES");
}
/* Large blocks where some ranks run in place and others not: the single-copy form gives way to
 * the areas on every rank at once (shared.c); every block checked. */
static int alltoall_some_in_place(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  const size_t count = 40001, block = count * sizeof(float); /* 160 KB: past the single copy's threshold */
  int in_place = rank % 2, bad = 0;
  unsigned char *send = malloc(block * (size_t)n), *recv = in_place ? send : malloc(block * (size_t)n);
  for (int call = 0; call < 3 && !bad; call++) {
    for (int j = 0; j < n; j++) p2p_fill(send + (size_t)j * block, block, rank, j, 60 + call);
    if (tally_alltoall(send, recv, count, TALLY_FLOAT32, comm, NULL) != TALLY_SUCCESS)
      bad = harness_fail(rank, "alltoall: %s", tally_comm_last_error(comm));
    for (int j = 0; j < n && !bad; j++) bad = p2p_check(rank, "alltoall", recv + (size_t)j * block, block, j, rank, 60 + call);
  }
  if (!in_place) free(recv);
  free(send);
  return bad;
}
Test(p2p, alltoall_shared_some_in_place) {
  run_sharing_one_cpu("alltoall:shared", 3, alltoall_some_in_place);
  run_sharing_one_cpu("alltoall:shared", 4, alltoall_some_in_place);
}

Test(p2p, alltoall_board) {
  run_forced("alltoall:board", 2, 0, p2p_alltoall_cases);
  run_forced("alltoall:board", 8, 0, p2p_alltoall_cases);
}
/* Alltoall rounds through the areas end without a meet (their halves take turns); the next
 * shared-buffer collective of another kind, which writes the areas at once, must first wait until
 * every rank has read the last round. Alltoalls and allgathers alternate, each checked. */
static int alltoall_then_allgather(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  enum { COUNT = 1000, CALLS = 40 };
  int32_t *send = malloc(sizeof(int32_t) * COUNT * (size_t)n), *recv = malloc(sizeof(int32_t) * COUNT * (size_t)n);
  int bad = 0;
  for (int call = 0; call < CALLS && !bad; call++) {
    for (int j = 0; j < n; j++)
      for (int i = 0; i < COUNT; i++) send[j * COUNT + i] = call * 1000000 + rank * 1000 + j;
    tally_result_t r = tally_alltoall(send, recv, COUNT, TALLY_INT32, comm, NULL);
    for (int j = 0; j < n && r == TALLY_SUCCESS && !bad; j++)
      for (int i = 0; i < COUNT && !bad; i++)
        if (recv[j * COUNT + i] != call * 1000000 + j * 1000 + rank)
          bad = harness_fail(rank, "alltoall %d: element %d of block %d is %d", call, i, j, recv[j * COUNT + i]);
    for (int i = 0; i < COUNT && r == TALLY_SUCCESS; i++) send[i] = -(call * 1000 + rank);
    if (r == TALLY_SUCCESS) r = tally_allgather(send, recv, COUNT, TALLY_INT32, comm, NULL);
    for (int j = 0; j < n && r == TALLY_SUCCESS && !bad; j++)
      for (int i = 0; i < COUNT && !bad; i++)
        if (recv[j * COUNT + i] != -(call * 1000 + j))
          bad = harness_fail(rank, "allgather %d: element %d of block %d is %d", call, i, j, recv[j * COUNT + i]);
    if (r != TALLY_SUCCESS) bad = harness_fail(rank, "call %d: %s", call, tally_comm_last_error(comm));
  }
  free(send), free(recv);
  return bad;
}
Test(p2p, shared_alltoall_then_allgather) {
  run_forced("alltoall:shared;allgather:shared;ring", 8, 0, alltoall_then_allgather);
  run_forced("alltoall:shared;allgather:shared;ring", 3, 0, alltoall_then_allgather);
}

/* The tuner's own choice among them on sizes that take each form. */
Test(p2p, alltoall_large_by_the_tuner) { run_forced("alltoall:auto", 5, 0, p2p_alltoall_large_cases); }
Test(p2p, alltoall_hier_on_hosts) {
  run_forced("alltoall:hier", 6, 2, p2p_alltoall_cases);
  run_forced("alltoall:hier", 6, 3, p2p_alltoall_cases);
  run_forced("alltoall:hier", 8, 2, p2p_alltoall_cases);
}
Test(p2p, gather_scatter_binomial) {
  run_forced("gather:binomial;scatter:binomial", 6, 0, p2p_rooted_cases);
  run_forced("gather:binomial;scatter:binomial", 7, 0, p2p_rooted_cases);
}
Test(p2p, gather_scatter_direct) { run_forced("gather:direct;scatter:direct", 5, 0, p2p_rooted_cases); }
Test(p2p, alltoall_gather_scatter_under_algo_ring) { /* a list that names none of theirs leaves them on auto */
  run_forced("ring", 3, 0, p2p_alltoall_cases);
  run_forced("ring", 3, 0, p2p_rooted_cases);
}

/* The tuner's choice follows TALLY_ALGO, and hier, which needs several hosts, gives way to pairwise. */
static int forced_choices(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  const char *want = arg, *got = NULL;
  if (tally_comm_tuner_choice(comm, "alltoall", 1000, TALLY_FLOAT32, &got, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "tuner choice: %s", tally_comm_last_error(comm));
  return strcmp(got, want) ? harness_fail(rank, "alltoall goes to %s, expected %s", got, want) : 0;
}
Test(p2p, tuner_choice_for_alltoall) {
  setenv("TALLY_ALGO", "alltoall:bruck", 1);
  cr_assert_eq(harness_run(3, 60, forced_choices, "bruck"), 0);
  setenv("TALLY_ALGO", "alltoall:hier", 1);
  cr_assert_eq(harness_run(3, 60, forced_choices, "pairwise"), 0);
  cr_assert_eq(harness_run_on_hosts(4, 2, 60, forced_choices, "hier"), 0);
  unsetenv("TALLY_ALGO");
}

/* A group mixing collectives, sends to itself and to the others, and an alltoall, listed in a
 * different order on every rank. */
static int mixed_group(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  float sum = (float)rank, self_out = 42.0f + (float)rank, self_in = 0;
  int *to_all = malloc((size_t)n * sizeof *to_all), *from_all = malloc((size_t)n * sizeof *from_all);
  for (int j = 0; j < n; j++) to_all[j] = rank * 100 + j;
  int bad = 0;
  tally_result_t r = tally_group_start();
  if (rank % 2) {
    if (r == TALLY_SUCCESS) r = tally_alltoall(to_all, from_all, 1, TALLY_INT32, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(&self_in, 1, TALLY_FLOAT32, rank, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_allreduce(&sum, &sum, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_send(&self_out, 1, TALLY_FLOAT32, rank, comm, NULL);
  } else {
    if (r == TALLY_SUCCESS) r = tally_allreduce(&sum, &sum, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_send(&self_out, 1, TALLY_FLOAT32, rank, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_group_start(); /* nested: the outermost end runs it all */
    if (r == TALLY_SUCCESS) r = tally_alltoall(to_all, from_all, 1, TALLY_INT32, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_group_end();
    if (r == TALLY_SUCCESS) r = tally_recv(&self_in, 1, TALLY_FLOAT32, rank, comm, NULL);
  }
  tally_result_t end = tally_group_end();
  if (r != TALLY_SUCCESS || end != TALLY_SUCCESS) bad = harness_fail(rank, "group: %s", tally_comm_last_error(comm));
  if (!bad && sum != (float)(n * (n - 1) / 2)) bad = harness_fail(rank, "allreduce in the group gave %g", sum);
  if (!bad && self_in != self_out) bad = harness_fail(rank, "send to itself delivered %g", self_in);
  for (int j = 0; j < n && !bad; j++)
    if (from_all[j] != j * 100 + rank) bad = harness_fail(rank, "alltoall block %d is %d", j, from_all[j]);
  free(to_all);
  free(from_all);
  return bad;
}
Test(p2p, mixed_group_4_ranks) { cr_assert_eq(harness_run(4, 120, mixed_group, NULL), 0); }
Test(p2p, mixed_group_3_ranks_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(3, 120, mixed_group, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
}

/* Communicators made and used by their own threads, each running groups at the same time. */
Test(p2p, groups_in_threads) { cr_assert_eq(harness_run(3, 120, threaded_groups_in_threads, NULL), 0); }

/* One group spanning two communicators of the same ranks, sends on one and recvs on the other in
 * opposite orders on even and odd ranks. */
static int group_over_two_comms(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_unique_id_t id;
  if (rank == 0 && tally_get_unique_id(&id) != TALLY_SUCCESS) return harness_fail(rank, "unique id");
  if (tally_broadcast(&id, &id, sizeof id, TALLY_UINT8, 0, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "broadcast: %s", tally_comm_last_error(comm));
  tally_comm_t other;
  if (tally_comm_init_rank(&other, n, id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "second communicator: %s", tally_comm_last_error(NULL));
  int next = (rank + 1) % n, prev = (rank + n - 1) % n, a = rank, b = -rank, got_a = -1, got_b = -1, bad = 0;
  tally_result_t r = tally_group_start();
  if (rank % 2) {
    if (r == TALLY_SUCCESS) r = tally_recv(&got_b, 1, TALLY_INT32, prev, other, NULL);
    if (r == TALLY_SUCCESS) r = tally_send(&a, 1, TALLY_INT32, next, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(&got_a, 1, TALLY_INT32, prev, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_send(&b, 1, TALLY_INT32, next, other, NULL);
  } else {
    if (r == TALLY_SUCCESS) r = tally_send(&b, 1, TALLY_INT32, next, other, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(&got_a, 1, TALLY_INT32, prev, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_send(&a, 1, TALLY_INT32, next, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(&got_b, 1, TALLY_INT32, prev, other, NULL);
  }
  tally_result_t end = tally_group_end();
  if (r != TALLY_SUCCESS || end != TALLY_SUCCESS) bad = harness_fail(rank, "group: %s", tally_comm_last_error(comm));
  if (!bad && (got_a != prev || got_b != -prev))
    bad = harness_fail(rank, "got %d and %d from rank %d", got_a, got_b, prev);
  if (tally_comm_destroy(other) != TALLY_SUCCESS) bad = harness_fail(rank, "destroy: %s", tally_comm_last_error(NULL));
  return bad;
}
Test(p2p, group_over_two_communicators) { cr_assert_eq(harness_run(4, 120, group_over_two_comms, NULL), 0); }

/* --- errors ------------------------------------------------------------------------------------- */

/* A recv that takes 12 elements where the send carries 10: MISMATCH naming both calls on the
 * receiver, and the sender's communicator learns it at its next call (its send had already
 * completed: a send does not wait for its recv). Nothing past the 12 elements is written. */
static int mismatched_send_recv(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  int32_t buf[13];
  memset(buf, 0x5a, sizeof buf);
  int bad = 0;
  if (rank == 0) {
    tally_result_t r = tally_send(buf, 10, TALLY_INT32, 1, comm, NULL);
    if (r != TALLY_SUCCESS) bad = harness_fail(rank, "send: %s", tally_comm_last_error(comm));
    r = tally_barrier(comm, NULL);
    if (r == TALLY_SUCCESS) bad = harness_fail(rank, "barrier after the mismatched send succeeded");
    bad += harness_expect(rank, comm, r, TALLY_ERR_MISMATCH, "rank 1");
  } else {
    bad += harness_expect(rank, comm, tally_recv(buf, 12, TALLY_INT32, 0, comm, NULL), TALLY_ERR_MISMATCH,
                          "carries 10 int32 elements, but the matching tally_recv on this rank takes 12 int32");
    if (buf[12] != 0x5a5a5a5a) bad = harness_fail(rank, "the failed recv wrote past its buffer");
    sleep(1); /* stays until rank 0 has heard its report */
  }
  return bad;
}
Test(p2p, mismatched_count) { cr_assert_eq(harness_run(2, 60, mismatched_send_recv, NULL), 0); }
Test(p2p, mismatched_count_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(2, 60, mismatched_send_recv, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
}

/* A connection on first use that comes before the accept that wants it (transports/early_conns.c):
 * rank 0 first waits for rank 3, which sends late, while rank 2 connects and sends at once; rank 0's
 * accept of rank 3 must keep rank 2's connection for its next receive, which takes it. Over TCP,
 * with only the ring connected at init (0's neighbours are 1 and 4), so both pairs connect here. */
static int early_connection(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  (void)arg;
  int value = 100 + rank, got[2] = {-1, -1};
  tally_result_t r = TALLY_SUCCESS;
  if (rank == 2) r = tally_send(&value, 1, TALLY_INT32, 0, comm, NULL);
  if (rank == 3) {
    usleep(500 * 1000); /* rank 2's connection is waiting by then */
    r = tally_send(&value, 1, TALLY_INT32, 0, comm, NULL);
  }
  if (rank == 0) {
    r = tally_recv(&got[0], 1, TALLY_INT32, 3, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(&got[1], 1, TALLY_INT32, 2, comm, NULL);
  }
  if (r != TALLY_SUCCESS) return harness_fail(rank, "%s: %s", tally_result_string(r), tally_comm_last_error(comm));
  if (rank == 0 && (got[0] != 103 || got[1] != 102))
    return harness_fail(rank, "got %d from rank 3 and %d from rank 2, expected 103 and 102", got[0], got[1]);
  return 0;
}
Test(p2p, early_connection_kept_for_a_later_accept_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  setenv("TALLY_ALGO", "ring", 1);
  cr_assert_eq(harness_run(5, 60, early_connection, NULL), 0);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TRANSPORT");
}

/* alltoallv where rank 1 expects 3 elements from rank 0, which sends it 2: both get MISMATCH. */
static int mismatched_alltoallv(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  size_t sc[3] = {1, 1, 1}, sd[3] = {0, 4, 8}, rc[3] = {1, 1, 1}, rd[3] = {0, 4, 8};
  if (rank == 0) sc[1] = 2;
  if (rank == 1) rc[0] = 3;
  float send[12] = {0}, recv[12];
  (void)n;
  int bad = 0;
  tally_result_t r = tally_alltoallv(send, sc, sd, recv, rc, rd, TALLY_FLOAT32, comm, NULL);
  /* each finds the mismatch in what the other sent, unless the other's report arrives first */
  if (rank < 2) bad += harness_expect(rank, comm, r, TALLY_ERR_MISMATCH, rank == 0 ? "rank 1" : "rank 0");
  return bad; /* rank 2's own exchanges matched: it may finish before it hears of the others' failure */
}
Test(p2p, mismatched_alltoallv) { cr_assert_eq(harness_run(3, 60, mismatched_alltoallv, NULL), 0); }

/* An alltoall where rank 0 passes another count than the others, under each algorithm (and the
 * tuner's, where the counts may lead ranks to different algorithms): every rank fails at once with
 * MISMATCH (or the report of one), and nothing is written past the blocks of its own count. */
static int mismatched_block_collectives(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  size_t count = rank == 0 ? 3 : 2, mine = count * (size_t)n;
  unsigned char send[3 * 4 * sizeof(float)] = {0}, recv[4 * 4 * sizeof(float)];
  memset(recv, 0x5a, sizeof recv);
  int bad = 0;
  tally_result_t r = tally_alltoall(send, recv, count, TALLY_FLOAT32, comm, NULL);
  if (r != TALLY_ERR_MISMATCH && r != TALLY_ERR_REMOTE)
    bad = harness_fail(rank, "alltoall with rank 0's other count gave %s: %s", tally_result_string(r),
                       tally_comm_last_error(comm));
  for (size_t i = mine * sizeof(float); i < sizeof recv && !bad; i++)
    if (recv[i] != 0x5a) bad = harness_fail(rank, "the failed alltoall wrote byte %zu, past its blocks", i);
  return bad;
}
Test(p2p, mismatched_alltoall) {
  const char *algos[] = {"alltoall:pairwise", "alltoall:bruck", "alltoall:auto", "alltoall:shared", "alltoall:board"};
  setenv("TALLY_TIMEOUT", "20", 1);
  for (int a = 0; a < 5; a++) {
    setenv("TALLY_ALGO", algos[a], 1);
    cr_assert_eq(harness_run(4, 60, mismatched_block_collectives, NULL), 0, "%s", algos[a]);
  }
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
}

/* A rank dies before an alltoall: every survivor returns an error naming it. */
static int peer_dies_before_alltoall(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  if (rank == 2) raise(SIGKILL);
  int32_t send[4] = {0}, recv[4];
  (void)n;
  tally_result_t r = tally_alltoall(send, recv, 1, TALLY_INT32, comm, NULL);
  if (r == TALLY_SUCCESS) return harness_fail(rank, "alltoall without rank 2 succeeded");
  return strstr(tally_comm_last_error(comm), "rank 2")
             ? 0
             : harness_fail(rank, "the error does not name rank 2: %s", tally_comm_last_error(comm));
}
Test(p2p, dead_peer_alltoall) {
  setenv("TALLY_TIMEOUT", "10", 1);
  const char *algos[] = {"alltoall:pairwise", "alltoall:bruck", "alltoall:shared", "alltoall:board"};
  for (int a = 0; a < 4; a++) {
    setenv("TALLY_ALGO", algos[a], 1);
    cr_assert_eq(harness_run_killing(4, 60, peer_dies_before_alltoall, NULL, 2), 0, "%s", algos[a]);
  }
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
}

/* The same for a gather through the binomial tree, where rank 2's subtree and the root wait on it. */
static int peer_dies_before_gather(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  if (rank == 2) raise(SIGKILL);
  int32_t mine = rank, all[8];
  (void)n;
  tally_result_t r = tally_gather(&mine, all, 1, TALLY_INT32, 0, comm, NULL);
  if (rank == 1 || rank == 3) return 0; /* leaves that sent before the death may finish */
  if (r == TALLY_SUCCESS) return harness_fail(rank, "gather without rank 2 succeeded");
  return strstr(tally_comm_last_error(comm), "rank 2")
             ? 0
             : harness_fail(rank, "the error does not name rank 2: %s", tally_comm_last_error(comm));
}
Test(p2p, dead_peer_binomial_gather) {
  setenv("TALLY_TIMEOUT", "10", 1);
  setenv("TALLY_ALGO", "gather:binomial", 1);
  cr_assert_eq(harness_run_killing(4, 60, peer_dies_before_gather, NULL, 2), 0);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
}

/* A rank dies while the others wait for it in a group: a survivor that receives from it, and one
 * that only sends to it, both return from tally_group_end with an error naming rank 1. */
static int peer_dies_in_group(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg, (void)n;
  if (rank == 1) {
    usleep(200000);
    raise(SIGKILL);
  }
  static unsigned char big[8 << 20];
  tally_result_t r = tally_group_start();
  if (rank == 0 && r == TALLY_SUCCESS) r = tally_recv(big, sizeof big, TALLY_UINT8, 1, comm, NULL);
  if (rank == 2 && r == TALLY_SUCCESS) r = tally_send(big, sizeof big, TALLY_UINT8, 1, comm, NULL);
  tally_result_t end = tally_group_end();
  if (r != TALLY_SUCCESS) return harness_fail(rank, "queueing: %s", tally_comm_last_error(comm));
  if (end == TALLY_SUCCESS) return harness_fail(rank, "the group with dead rank 1 succeeded");
  return strstr(tally_comm_last_error(comm), "rank 1") && strstr(tally_comm_last_error(comm), "tally_group_end")
             ? 0
             : harness_fail(rank, "the error does not name rank 1 and the group: %s", tally_comm_last_error(comm));
}
Test(p2p, dead_peer_group) {
  setenv("TALLY_TIMEOUT", "10", 1);
  cr_assert_eq(harness_run_killing(3, 60, peer_dies_in_group, NULL, 1), 0);
  unsetenv("TALLY_TIMEOUT");
}

/* A recv whose sender never sends times out, naming the sender, within TALLY_TIMEOUT. */
static int sender_never_sends(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  if (rank == 1) {
    sleep(3);
    return 0;
  }
  int x;
  return harness_expect(rank, comm, tally_recv(&x, 1, TALLY_INT32, 1, comm, NULL), TALLY_ERR_TIMEOUT, "rank 1");
}
Test(p2p, recv_times_out) {
  setenv("TALLY_TIMEOUT", "1", 1);
  cr_assert_eq(harness_run(2, 60, sender_never_sends, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}

static int bad_arguments(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int bad = 0, x = 0;
  size_t c[2] = {1, 1};
  bad += harness_expect(rank, comm, tally_send(&x, 1, TALLY_INT32, n, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "peer 2 is outside 0..1");
  bad +=
      harness_expect(rank, comm, tally_recv(&x, 1, TALLY_INT32, -1, comm, NULL), TALLY_ERR_INVALID_ARGUMENT, "peer -1");
  bad += harness_expect(rank, comm, tally_send(NULL, 3, TALLY_INT32, 0, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "sendbuf is NULL");
  bad += harness_expect(rank, comm, tally_recv(&x, 1, (tally_datatype_t)99, 0, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "datatype 99");
  bad += harness_expect(rank, comm, tally_send(&x, SIZE_MAX / 4 + 1, TALLY_INT32, 1 - rank, comm, NULL),
                        TALLY_ERR_INVALID_ARGUMENT, "overflow the address space"); /* 4 bytes each: one too many */
  bad += harness_expect(rank, comm, tally_alltoallv(&x, NULL, c, &x, c, c, TALLY_INT32, comm, NULL),
                        TALLY_ERR_INVALID_ARGUMENT, "must all be arrays");
  bad += harness_expect(rank, comm, tally_gather(&x, &x, 1, TALLY_INT32, 5, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "root 5");
  bad += harness_expect(rank, NULL, tally_send(&x, 1, TALLY_INT32, 0, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "comm is NULL");
  bad += harness_expect(rank, NULL, tally_group_end(), TALLY_ERR_INVALID_USAGE, "no open group");
  bad += harness_expect(rank, comm, tally_send(&x, 1, TALLY_INT32, rank, comm, NULL), TALLY_ERR_INVALID_USAGE,
                        "needs its recv in the same group");
  bad += harness_expect(rank, comm, tally_send(&x, 1, TALLY_INT32, 0, comm, &x), TALLY_ERR_UNSUPPORTED,
                        "stream is not NULL, but"); /* no device runtime here: test_streams.c has one */
  /* an argument error inside a group returns at the call, and the group still runs the rest */
  tally_result_t r = tally_group_start();
  int y = rank;
  if (r == TALLY_SUCCESS)
    bad +=
        harness_expect(rank, comm, tally_recv(&x, 1, TALLY_INT32, 7, comm, NULL), TALLY_ERR_INVALID_ARGUMENT, "peer 7");
  if (r == TALLY_SUCCESS) r = tally_send(&y, 1, TALLY_INT32, 1 - rank, comm, NULL);
  if (r == TALLY_SUCCESS) r = tally_recv(&x, 1, TALLY_INT32, 1 - rank, comm, NULL);
  if (tally_group_end() != TALLY_SUCCESS || r != TALLY_SUCCESS || x != 1 - rank)
    bad += harness_fail(rank, "the group after an argument error: %s", tally_comm_last_error(comm));
  return bad;
}
Test(p2p, bad_arguments) { cr_assert_eq(harness_run(2, 60, bad_arguments, NULL), 0); }

/* A rank dies before a pair it never talked to is connected. The ring 0 -> 1 -> 2 -> 0 leaves rank 0
 * without a connection to rank 2 and rank 1 without one from it: rank 0 sends to rank 2 (a message
 * too large for the transport to buffer: a small one may complete into the buffer, as an eager send
 * does, and the death then shows at the next call that needs rank 2), or rank 1 receives from it.
 * Either fails with TALLY_ERR_REMOTE naming rank 2, well within TALLY_TIMEOUT: shared memory finds
 * rank 2 gone through the connection it has with it the other way; TCP by the refused connection
 * when it connects, and when it waits for rank 2 to connect by probing rank 2's recovery listener,
 * which a dead process no longer has (src/comm/links.c). */
static int peer_dies_before_first_use(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  if (rank == 2) raise(SIGKILL);
  if (rank != (arg ? 1 : 0)) return 0;
  usleep(200000);
  static unsigned char big[32 << 20];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  tally_result_t r = arg ? tally_recv(big, sizeof big, TALLY_UINT8, 2, comm, NULL)
                        : tally_send(big, sizeof big, TALLY_UINT8, 2, comm, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  const char *what = arg ? "recv from" : "send to";
  if (r == TALLY_SUCCESS) return harness_fail(rank, "a %s dead rank 2 succeeded", what);
  if (s > 5) return harness_fail(rank, "the %s dead rank 2 took %.1f s to fail", what, s);
  return harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 2");
}
Test(p2p, dead_peer_before_first_use) {
  setenv("TALLY_TIMEOUT", "20", 1);
  setenv("TALLY_ALGO", "ring", 1); /* rank 1's ring neighbours only: rank 0 and 2 connect one way */
  int failed = 0;
  for (int tcp = 0; tcp < 2; tcp++) {
    if (tcp) setenv("TALLY_TRANSPORT", "tcp", 1);
    failed += harness_run_killing(3, 60, peer_dies_before_first_use, NULL, 2);
    failed += harness_run_killing(3, 60, peer_dies_before_first_use, "recv", 2);
  }
  unsetenv("TALLY_TRANSPORT");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
  cr_assert_eq(failed, 0);
}
