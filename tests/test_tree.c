/* The double binary tree (algorithms/tree.c) through the reference checks: allreduce, broadcast and
 * reduce, every datatype and op, in place and out of place, every root, on 2 to 9 ranks (odd and
 * even counts give the trees different shapes), over shared memory and over TCP; and the tuner's
 * choice of the pipelining chunk for trees and chains. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "coll_cases.h"
#include "comm/comm.h"
#include "harness.h"
#include "tuning/tuner.h"

static int tree_collectives(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return coll_all_cases(comm, rank, n, "allreduce") + coll_all_cases(comm, rank, n, "broadcast") +
         coll_all_cases(comm, rank, n, "reduce");
}

static void run_forced(int n, const char *transport) {
  setenv("TALLY_ALGO", "allreduce:tree;broadcast:tree;reduce:tree;ring", 1);
  setenv("TALLY_TRANSPORT", transport, 1);
  cr_assert_eq(harness_run(n, 240, tree_collectives, NULL), 0, "some rank failed (see stderr)");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TRANSPORT");
}

#define TREE_TEST(n) \
  Test(tree, collectives_on_##n##_ranks) { run_forced(n, "auto"); }
TREE_TEST(2)
TREE_TEST(3)
TREE_TEST(4)
TREE_TEST(5)
TREE_TEST(6)
TREE_TEST(7)
TREE_TEST(8)
TREE_TEST(9)

Test(tree, collectives_over_tcp) { run_forced(5, "tcp"); }

/* Trees across fake hosts (TALLY_HOSTID): edges over TCP between hosts, shared memory within. */
Test(tree, collectives_across_hosts) {
  setenv("TALLY_ALGO", "allreduce:tree;broadcast:tree;reduce:tree;ring", 1);
  cr_assert_eq(harness_run_on_hosts(6, 2, 240, tree_collectives, NULL), 0, "some rank failed (see stderr)");
  unsetenv("TALLY_ALGO");
}

/* With messages of 10 us and 1 GB/s (TALLY_TUNING_FILE), a 1 MiB broadcast on 8 ranks (S beta =
 * 1048.576 us): the chain along the ring costs (7 + k - 1)(10 + S/k beta) for k chunks, least at
 * k = 32 (32 KiB chunks): 38 x 42.768 = 1625.18 us (64 KiB: 22 x 75.536 = 1661.79). The two trees
 * cross 4 levels with chunks of 2C: (4 + k - 1)(10 + S/k beta), least at C = 32 KiB (k = 16):
 * 19 x 75.536 = 1435.18 us (16 KiB: 35 x 42.768 = 1496.88). So the tree wins, in 32 KiB chunks. */
static int chunks_as_the_model_says(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  static float x[1 << 18];
  struct tally_coll_desc d = {TALLY_COLL_BROADCAST, x, x, 1 << 18, TALLY_FLOAT32, TALLY_SUM, 0, 0, 0, 0, 0};
  struct tally_tuner_decision dec;
  tally_tuner_decide(comm, &d, &dec);
  if (dec.algo != TALLY_ALGO_TREE || dec.chunk_bytes != 32 * 1024 ||
      fabs(dec.predicted_us[TALLY_ALGO_TREE] - 1435.184) > 0.01 ||
      fabs(dec.predicted_us[TALLY_ALGO_RING] - 1625.184) > 0.01)
    return harness_fail(rank, "broadcast of 1 MiB: %s in chunks of %zu, predicted tree %.3f ring %.3f us",
                        tally_algo_name(dec.algo), dec.chunk_bytes, dec.predicted_us[TALLY_ALGO_TREE],
                        dec.predicted_us[TALLY_ALGO_RING]);
  return 0;
}

Test(tree, tuner_picks_the_chunk) {
  char path[] = "/tmp/tally-test-chunks-XXXXXX";
  int fd = mkstemp(path);
  const char text[] = "alpha_us = 10\nbandwidth_GBps = 1\ngamma_us_per_byte = 0\n";
  cr_assert(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
  close(fd);
  setenv("TALLY_TUNING_FILE", path, 1);
  setenv("TALLY_ALGO", "broadcast:ring,tree", 1); /* on one host the shared areas would take it */
  cr_assert_eq(harness_run(8, 60, chunks_as_the_model_says, NULL), 0);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TUNING_FILE");
  unlink(path);
}
