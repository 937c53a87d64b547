/* The double binary tree (algorithms/tree.c) through the reference checks: allreduce, broadcast and
 * reduce, every datatype and op, in place and out of place, every root, on 2 to 9 ranks (odd and
 * even counts give the trees different shapes), over shared memory and over TCP. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>

#include "coll_cases.h"
#include "harness.h"

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

#define TREE_TEST(n)                                                  \
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
