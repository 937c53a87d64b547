/* The job's topology as the communicator sees it, and the transport chosen for each neighbour:
 * TALLY_HOSTID makes ranks of this machine look like ranks of several hosts. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algorithms/board.h"
#include "comm/comm.h"
#include "harness.h"
#include "tuning/tuner.h"

struct fake_hosts {
  int ranks_per_host; /* rank r claims host r / ranks_per_host */
  const char *transport;
};

static void claim_host(int rank, const struct fake_hosts *plan) {
  char host[32];
  snprintf(host, sizeof host, "fake-host-%d", rank / plan->ranks_per_host);
  setenv("TALLY_HOSTID", host, 1);
  if (plan->transport) setenv("TALLY_TRANSPORT", plan->transport, 1);
}

/* Every rank sees the same hosts and local ranks, and collectives are correct across them. */
static float x_dummy[3];

/* Whether the tuner weighs the hierarchical algorithm for a 4 MiB `coll` (it predicts a time for it). */
static int hier_is_candidate(tally_comm_t comm, enum tally_coll coll) {
  struct tally_coll_desc d = {coll, x_dummy, x_dummy, 1 << 20, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  struct tally_tuner_decision dec;
  tally_tuner_decide(comm, &d, &dec);
  return dec.predicted_us[TALLY_ALGO_HIER] >= 0;
}

static int sees_fake_hosts(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  const struct fake_hosts *plan = arg;
  claim_host(rank, plan);
  tally_comm_t comm;
  if (tally_comm_init_rank(&comm, nranks, *id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  int bad = 0, hosts = (nranks + plan->ranks_per_host - 1) / plan->ranks_per_host;
  if (comm->topo.nhosts != hosts) bad += harness_fail(rank, "%d hosts seen, expected %d", comm->topo.nhosts, hosts);
  for (int r = 0; r < nranks; r++) {
    if (comm->topo.host_index[r] != r / plan->ranks_per_host)
      bad +=
          harness_fail(rank, "rank %d on host %d, expected %d", r, comm->topo.host_index[r], r / plan->ranks_per_host);
    if (comm->topo.local_rank[r] != r % plan->ranks_per_host)
      bad += harness_fail(rank, "rank %d has local rank %d", r, comm->topo.local_rank[r]);
  }
  /* Even hosts of several ranks get hierarchical rings, and the tuner then weighs the hierarchical
   * algorithms for allreduce, allgather and reduce-scatter (hosts here are in rank order); which
   * one wins depends on the measured link costs, so only the candidates are checked. */
  int even = nranks % plan->ranks_per_host == 0 && hosts > 1 && plan->ranks_per_host > 1;
  int hier_allreduce = hier_is_candidate(comm, TALLY_COLL_ALLREDUCE);
  int hier_allgather = hier_is_candidate(comm, TALLY_COLL_ALLGATHER);
  if (even && (comm->local.size != plan->ranks_per_host || comm->cross.size != hosts || !hier_allreduce ||
               !hier_allgather))
    bad += harness_fail(rank, "local ring %d, cross ring %d, hier for allreduce %d, allgather %d: expected %d, %d, 1, 1",
                        comm->local.size, comm->cross.size, hier_allreduce, hier_allgather, plan->ranks_per_host, hosts);
  if (!even && (comm->local.size != 0 || hier_allreduce))
    bad += harness_fail(rank, "uneven or single host: local ring %d, hier for allreduce %d", comm->local.size,
                        hier_allreduce);
  float x[3] = {1, 2, (float)rank};
  if (tally_allreduce(x, x, 3, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad += harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
  else if (x[0] != nranks || x[1] != 2 * nranks || x[2] != nranks * (nranks - 1) / 2)
    bad += harness_fail(rank, "allreduce gave %g %g %g", x[0], x[1], x[2]);
  char who[128];
  tally_comm_rank_text(comm, nranks - 1, who, sizeof who);
  if (!strstr(who, "rank ") || !strchr(who, ','))
    bad += harness_fail(rank, "a rank is described without its host: %s", who);
  tally_comm_destroy(comm);
  return bad;
}

Test(links, two_fake_hosts_of_two) {
  struct fake_hosts plan = {2, NULL};
  cr_assert_eq(harness_run_raw(4, 60, sees_fake_hosts, &plan), 0);
}

Test(links, three_fake_hosts_uneven) {
  struct fake_hosts plan = {3, NULL}; /* 3 + 3 + 1 */
  cr_assert_eq(harness_run_raw(7, 60, sees_fake_hosts, &plan), 0);
}

/* Hosts not in rank order (rank r on host r % 2): hierarchical allreduce still, but allgather and
 * reduce-scatter, whose regions would not be contiguous, on the flat ring; results correct. */
static int interleaved_hosts(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  if (comm->local.size != n / 2 || tally_hier_hosts_in_rank_order(comm) ||
      !hier_is_candidate(comm, TALLY_COLL_ALLREDUCE) || hier_is_candidate(comm, TALLY_COLL_ALLGATHER))
    return harness_fail(rank, "interleaved hosts: local ring %d, in rank order %d", comm->local.size,
                        tally_hier_hosts_in_rank_order(comm));
  enum { COUNT = 4096 };
  static float mine[COUNT], all[4 * COUNT];
  for (int i = 0; i < COUNT; i++) mine[i] = (float)(rank * COUNT + i);
  if (tally_allgather(mine, all, COUNT, TALLY_FLOAT32, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allgather: %s", tally_comm_last_error(comm));
  for (int i = 0; i < n * COUNT; i++)
    if (all[i] != (float)i) return harness_fail(rank, "allgather element %d is %g", i, all[i]);
  return 0;
}

static int on_alternate_host(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  char host[32];
  snprintf(host, sizeof host, "alternate-host-%d", rank % 2);
  setenv("TALLY_HOSTID", host, 1);
  tally_comm_t comm;
  if (tally_comm_init_rank(&comm, nranks, *id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  int bad = interleaved_hosts(comm, rank, nranks, arg);
  tally_comm_destroy(comm);
  return bad;
}

Test(links, interleaved_hosts) { cr_assert_eq(harness_run_raw(4, 60, on_alternate_host, NULL), 0); }

/* On one host over shared memory, small allreduces, broadcasts and barriers go to the host board;
 * large ones, and communicators forced onto TCP, go elsewhere (where, the cost model says). */
static int board_when_one_host(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  int want_board = *(const int *)arg;
  struct tally_coll_desc small = {TALLY_COLL_ALLREDUCE, x_dummy, x_dummy, 3, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  struct tally_coll_desc large = {TALLY_COLL_ALLREDUCE, x_dummy, x_dummy, 1 << 20, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  struct tally_coll_desc bcast = {TALLY_COLL_BROADCAST, x_dummy, x_dummy, 3, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  const char *s = tally_tuner_select(comm, &small)->name, *l = tally_tuner_select(comm, &large)->name,
             *b = tally_tuner_select(comm, &bcast)->name;
  if ((comm->board != NULL) != want_board || (strcmp(s, "board") == 0) != want_board || !strcmp(l, "board") ||
      (strcmp(b, "board") == 0) != want_board)
    return harness_fail(rank, "board %s, small allreduce by %s, large by %s, broadcast by %s",
                        comm->board ? "present" : "absent", s, l, b);
  float x[3] = {1, 2, (float)rank};
  if (tally_allreduce(x, x, 3, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS || tally_barrier(comm, NULL))
    return harness_fail(rank, "small calls: %s", tally_comm_last_error(comm));
  return x[0] == n && x[2] == n * (n - 1) / 2 ? 0 : harness_fail(rank, "allreduce gave %g %g %g", x[0], x[1], x[2]);
}

Test(links, host_board_on_one_host) {
  int want = 1;
  cr_assert_eq(harness_run(4, 60, board_when_one_host, &want), 0);
  want = 0;
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(3, 60, board_when_one_host, &want), 0);
  unsetenv("TALLY_TRANSPORT");
}

Test(links, forced_tcp_on_one_host) {
  struct fake_hosts plan = {8, "tcp"};
  cr_assert_eq(harness_run_raw(3, 60, sees_fake_hosts, &plan), 0);
}

/* TALLY_TRANSPORT=shm cannot reach a rank on another host: init says so. */
static int shm_across_hosts(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  claim_host(rank, arg);
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, *id, rank);
  if (r == TALLY_SUCCESS) {
    tally_comm_destroy(comm);
    return harness_fail(rank, "init across hosts with TALLY_TRANSPORT=shm succeeded");
  }
  /* Each rank's only neighbour is on the other host: each finds out before connecting. */
  return harness_expect(rank, NULL, r, TALLY_ERR_INVALID_ARGUMENT, "runs on another host");
}

Test(links, shm_cannot_cross_hosts) {
  struct fake_hosts plan = {1, "shm"};
  cr_assert_eq(harness_run_raw(2, 60, shm_across_hosts, &plan), 0);
}
