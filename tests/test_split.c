/* Communicators made from others (api/comm_split.c): tally_comm_split with colors and keys that
 * reverse the order, several colors, TALLY_SPLIT_NOCOLOR, a split of a split, tally_comm_dup; every
 * collective on a child over shared memory, TCP and fake hosts; children used from two threads at
 * once; the parent destroyed before its child; bad arguments; tally_comm_failed_ranks; and
 * tally_comm_shrink after a SIGKILL of the first, a middle and the last of 8 ranks, with lists
 * from tally_comm_failed_ranks or given, with disagreeing lists, and leaving out a live rank that
 * calls nothing; 1,000 splits and destroys without a file descriptor more; tally_comm_grow of 4 ranks
 * by 4 and of 7 by 1 with every collective on the grown communicator, grow after a shrink back to 8
 * ranks, grow's bad arguments (an id of another communicator, a stale one, nnew that differ), and a
 * newcomer that never comes, an aborted grow. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coll_cases.h"
#include "harness.h"
#include "threaded.h"

/* Checks that `child` has `n` ranks, that this rank is `rank` in it, and that an allgather and an
 * allreduce on it see the parent ranks `members` (in child rank order). */
static int check_child(tally_comm_t child, int parent_rank, int rank, int n, const int *members) {
  int got_rank = -1, got_n = -1;
  if (tally_comm_rank(child, &got_rank) != TALLY_SUCCESS || tally_comm_size(child, &got_n) != TALLY_SUCCESS)
    return harness_fail(parent_rank, "rank/size: %s", tally_comm_last_error(child));
  if (got_rank != rank || got_n != n)
    return harness_fail(parent_rank, "child rank %d of %d, expected %d of %d", got_rank, got_n, rank, n);
  int32_t mine = parent_rank, all[64];
  tally_result_t r = tally_allgather(&mine, all, 1, TALLY_INT32, child, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(parent_rank, "allgather on the child: %s", tally_comm_last_error(child));
  int64_t sum = 0, want = 0, one = parent_rank;
  for (int i = 0; i < n; i++) {
    if (all[i] != members[i])
      return harness_fail(parent_rank, "child rank %d is parent rank %d, expected %d", i, all[i], members[i]);
    want += members[i];
  }
  r = tally_allreduce(&one, &sum, 1, TALLY_INT64, TALLY_SUM, child, NULL);
  if (r != TALLY_SUCCESS || sum != want)
    return harness_fail(parent_rank, "allreduce on the child: %s, sum %lld, expected %lld", tally_result_string(r),
                        (long long)sum, (long long)want);
  return 0;
}

/* --- split ------------------------------------------------------------------------------------ */

/* color = rank % 2, key = -rank: two children, each in reverse order of the parent's ranks. */
static int reverse_keys(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_comm_t child;
  tally_result_t r = tally_comm_split(comm, rank % 2, -rank, &child);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "split: %s", tally_comm_last_error(comm));
  int members[64], m = 0;
  for (int p = n - 1; p >= 0; p--)
    if (p % 2 == rank % 2) members[m++] = p;
  int index = 0;
  while (members[index] != rank) index++;
  int bad = check_child(child, rank, index, m, members);
  bad += check_child(comm, rank, rank, n, (int[]){0, 1, 2, 3, 4, 5, 6, 7}); /* the parent still works */
  tally_comm_destroy(child);
  return bad;
}

Test(split, reverse_keys_two_colors) { cr_assert_eq(harness_run(5, 120, reverse_keys, NULL), 0); }

/* color = rank % 3, the last rank TALLY_SPLIT_NOCOLOR; equal keys keep the parent's order. */
static int three_colors_and_nocolor(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int color = rank == n - 1 ? TALLY_SPLIT_NOCOLOR : rank % 3;
  tally_comm_t child = (tally_comm_t)&color; /* must become NULL */
  tally_result_t r = tally_comm_split(comm, color, 7, &child);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "split: %s", tally_comm_last_error(comm));
  if (color == TALLY_SPLIT_NOCOLOR) return child ? harness_fail(rank, "NOCOLOR gave a communicator") : 0;
  int members[64], m = 0, index = 0;
  for (int p = 0; p < n - 1; p++)
    if (p % 3 == color) {
      if (p == rank) index = m;
      members[m++] = p;
    }
  int bad = check_child(child, rank, index, m, members);
  tally_comm_destroy(child);
  return bad;
}

Test(split, three_colors_and_nocolor) { cr_assert_eq(harness_run(7, 120, three_colors_and_nocolor, NULL), 0); }

/* 8 -> 2 x 4 (halves) -> 2 x 2 (even and odd ranks of each half), then a dup of the grandchild. */
static int nested(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg, (void)n;
  tally_comm_t half, quarter, copy;
  if (tally_comm_split(comm, rank / 4, rank, &half) != TALLY_SUCCESS)
    return harness_fail(rank, "first split: %s", tally_comm_last_error(comm));
  int hr = rank % 4;
  if (tally_comm_split(half, hr % 2, hr, &quarter) != TALLY_SUCCESS)
    return harness_fail(rank, "second split: %s", tally_comm_last_error(half));
  int base = rank / 4 * 4 + hr % 2, members[2] = {base, base + 2};
  int bad = check_child(quarter, rank, hr / 2, 2, members);
  if (tally_comm_dup(quarter, &copy) != TALLY_SUCCESS)
    return harness_fail(rank, "dup: %s", tally_comm_last_error(quarter));
  bad += check_child(copy, rank, hr / 2, 2, members);
  int halves[4] = {rank / 4 * 4, rank / 4 * 4 + 1, rank / 4 * 4 + 2, rank / 4 * 4 + 3};
  bad += check_child(half, rank, hr, 4, halves);
  tally_comm_destroy(copy);
  tally_comm_destroy(quarter);
  tally_comm_destroy(half);
  return bad;
}

Test(split, nested_and_dup) { cr_assert_eq(harness_run(8, 180, nested, NULL), 0); }

/* Every collective's cases (coll_cases.c) on a child of the first 3 ranks, keys reversed. */
static int all_collectives_on_child(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg, (void)n;
  tally_comm_t child;
  if (tally_comm_split(comm, rank < 3 ? 0 : TALLY_SPLIT_NOCOLOR, 3 - rank, &child) != TALLY_SUCCESS)
    return harness_fail(rank, "split: %s", tally_comm_last_error(comm));
  if (rank >= 3) return child ? harness_fail(rank, "NOCOLOR gave a communicator") : 0;
  int bad = coll_all_cases(child, 2 - rank, 3, NULL);
  tally_comm_destroy(child);
  return bad;
}

Test(split, every_collective_on_child_shm) { cr_assert_eq(harness_run(4, 600, all_collectives_on_child, NULL), 0); }
Test(split, every_collective_on_child_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  cr_assert_eq(harness_run(4, 600, all_collectives_on_child, NULL), 0);
  unsetenv("TALLY_TRANSPORT");
}
Test(split, every_collective_on_child_fake_hosts) {
  cr_assert_eq(harness_run_on_hosts(4, 2, 600, all_collectives_on_child, NULL), 0);
}

/* Two children of one parent, each used by its own thread at the same time. */
struct child_job {
  tally_comm_t comm;
  int rank, n, bad;
};

static void *hammer(void *arg) {
  struct child_job *job = arg;
  for (int i = 0; i < 200 && !job->bad; i++) {
    float x[1000], want = (float)(job->n * (job->n + 1) / 2 + job->n * i);
    for (int j = 0; j < 1000; j++) x[j] = (float)(job->rank + 1 + i);
    tally_result_t r = tally_allreduce(x, x, 1000, TALLY_FLOAT32, TALLY_SUM, job->comm, NULL);
    if (r != TALLY_SUCCESS || x[999] != want)
      job->bad = harness_fail(job->rank, "allreduce %d in a thread: %s (%g, expected %g)", i,
                              tally_comm_last_error(job->comm), x[999], want);
  }
  return NULL;
}

static int children_in_threads(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_comm_t a, b;
  if (tally_comm_dup(comm, &a) != TALLY_SUCCESS) return harness_fail(rank, "dup: %s", tally_comm_last_error(comm));
  if (tally_comm_split(comm, 5, -rank, &b) != TALLY_SUCCESS)
    return harness_fail(rank, "split: %s", tally_comm_last_error(comm));
  struct child_job ja = {a, rank, n, 0}, jb = {b, n - 1 - rank, n, 0};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, hammer, &ja);
  pthread_create(&tb, NULL, hammer, &jb);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  tally_comm_destroy(a);
  tally_comm_destroy(b);
  return ja.bad + jb.bad;
}

Test(split, children_from_two_threads) { cr_assert_eq(harness_run(4, 180, children_in_threads, NULL), 0); }

/* The parent destroyed first: the child goes on alone. */
static int parent_first(int rank, int n, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  tally_comm_t parent, child;
  if (tally_comm_init_rank(&parent, n, *id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  if (tally_comm_split(parent, 0, rank, &child) != TALLY_SUCCESS)
    return harness_fail(rank, "split: %s", tally_comm_last_error(parent));
  if (tally_comm_destroy(parent) != TALLY_SUCCESS) return harness_fail(rank, "destroy of the parent failed");
  int members[3] = {0, 1, 2};
  int bad = check_child(child, rank, rank, n, members);
  if (tally_comm_destroy(child) != TALLY_SUCCESS) bad += harness_fail(rank, "destroy of the child failed");
  return bad;
}

Test(split, parent_destroyed_before_child) { cr_assert_eq(harness_run_raw(3, 120, parent_first, NULL), 0); }

/* Refused at once, the same on every rank, with a message; the parent stays usable. */
static int bad_arguments(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_comm_t child = NULL;
  int bad = harness_expect(rank, comm, tally_comm_split(comm, -2, 0, &child), TALLY_ERR_INVALID_ARGUMENT, "color -2");
  bad += harness_expect(rank, NULL, tally_comm_split(comm, 0, 0, NULL), TALLY_ERR_INVALID_ARGUMENT, "newcomm is NULL");
  bad += harness_expect(rank, NULL, tally_comm_dup(comm, NULL), TALLY_ERR_INVALID_ARGUMENT, "newcomm is NULL");
  bad += harness_expect(rank, NULL, tally_comm_split(NULL, 0, 0, &child), TALLY_ERR_INVALID_ARGUMENT, "comm is NULL");
  int out_of_range[1] = {n}, self[2] = {(rank + 1) % n, rank}, negative[1] = {-1};
  bad += harness_expect(rank, comm, tally_comm_shrink(comm, out_of_range, 1, &child), TALLY_ERR_INVALID_ARGUMENT,
                        "outside the communicator's ranks");
  bad += harness_expect(rank, comm, tally_comm_shrink(comm, negative, 1, &child), TALLY_ERR_INVALID_ARGUMENT,
                        "exclude[0] is -1");
  bad += harness_expect(rank, comm, tally_comm_shrink(comm, self, 2, &child), TALLY_ERR_INVALID_ARGUMENT,
                        "cannot exclude itself");
  bad += harness_expect(rank, comm, tally_comm_shrink(comm, NULL, 1, &child), TALLY_ERR_INVALID_ARGUMENT,
                        "exclude is NULL");
  bad +=
      harness_expect(rank, NULL, tally_comm_shrink(comm, NULL, 0, NULL), TALLY_ERR_INVALID_ARGUMENT, "newcomm is NULL");
  int nfailed = -1, ranks[4];
  bad += harness_expect(rank, NULL, tally_comm_failed_ranks(comm, ranks, 4, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "nfailed is NULL");
  bad += harness_expect(rank, comm, tally_comm_failed_ranks(comm, NULL, 4, &nfailed), TALLY_ERR_INVALID_ARGUMENT,
                        "ranks is NULL");
  if (tally_comm_failed_ranks(comm, ranks, 4, &nfailed) != TALLY_SUCCESS || nfailed != 0)
    bad += harness_fail(rank, "a healthy communicator has %d failed ranks", nfailed);
  if (child) bad += harness_fail(rank, "a refused call made a communicator");
  tally_group_start();
  bad += harness_expect(rank, comm, tally_comm_dup(comm, &child), TALLY_ERR_INVALID_USAGE, "tally_group_start");
  tally_group_end();
  int members[4] = {0, 1, 2, 3};
  return bad + check_child(comm, rank, rank, n, members);
}

Test(split, bad_arguments) { cr_assert_eq(harness_run(4, 120, bad_arguments, NULL), 0); }

/* 1,000 splits and destroys (dups and halves in turn): no file descriptor more at the end. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static int split_loop(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int before = count_fds();
  for (int i = 0; i < 1000; i++) {
    tally_comm_t child;
    tally_result_t r = i % 2 ? tally_comm_dup(comm, &child) : tally_comm_split(comm, rank % 2, rank, &child);
    if (r != TALLY_SUCCESS) return harness_fail(rank, "split %d: %s", i, tally_comm_last_error(comm));
    if (i % 100 == 0) {
      float x = 1;
      r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, child, NULL);
      if (r != TALLY_SUCCESS || x != (float)(i % 2 ? n : n / 2))
        return harness_fail(rank, "allreduce on split %d: %s (%g)", i, tally_comm_last_error(child), x);
    }
    if (tally_comm_destroy(child) != TALLY_SUCCESS) return harness_fail(rank, "destroy %d failed", i);
  }
  int after = count_fds();
  if (after > before) return harness_fail(rank, "%d file descriptors before 1,000 splits, %d after", before, after);
  return 0;
}

Test(split, thousand_splits_no_fd_growth) { cr_assert_eq(harness_run(4, 600, split_loop, NULL), 0); }

/* --- shrink ----------------------------------------------------------------------------------- */

struct shrink_plan {
  int victim;        /* dies by SIGKILL in the middle of the allreduces */
  int given_list;    /* 1: the survivors pass {victim} without asking tally_comm_failed_ranks */
  int disagree_with; /* > 0: the odd survivors also exclude this rank (not themselves): a mismatch */
};

/* Allreduces until the victim dies; then the survivors shrink and check the new communicator. */
static int shrink_after_kill(tally_comm_t comm, int rank, int n, void *arg) {
  const struct shrink_plan *plan = arg;
  enum { COUNT = 64 * 1024 };
  static float buf[COUNT];
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; r == TALLY_SUCCESS; i++) {
    if (rank == plan->victim && i == 3) raise(SIGKILL);
    r = tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  }
  int failed[8], nfailed = -1;
  if (tally_comm_failed_ranks(comm, failed, 8, &nfailed) != TALLY_SUCCESS)
    return harness_fail(rank, "failed_ranks: %s", tally_comm_last_error(comm));
  if (nfailed != 1 || failed[0] != plan->victim)
    return harness_fail(rank, "failed_ranks says %d ranks (first %d), expected rank %d (the error: %s)", nfailed,
                        nfailed > 0 ? failed[0] : -1, plan->victim, tally_comm_last_error(comm));
  int exclude[2] = {plan->victim, plan->disagree_with}, nexclude = 1;
  if (plan->given_list) nfailed = 1;
  if (plan->disagree_with > 0 && rank % 2 && rank != plan->disagree_with) nexclude = 2;
  tally_comm_t shrunk = NULL;
  double start = harness_now_s();
  r = tally_comm_shrink(comm, plan->given_list ? exclude : failed, plan->given_list ? nexclude : nfailed, &shrunk);
  if (plan->disagree_with > 0) { /* TALLY_TIMEOUT is 20 s here */
    int bad = harness_expect(rank, comm, r, TALLY_ERR_MISMATCH, "different exclude lists");
    if (harness_now_s() - start > 3) bad += harness_fail(rank, "the mismatch took %.1f s", harness_now_s() - start);
    return bad;
  }
  if (r != TALLY_SUCCESS) return harness_fail(rank, "shrink: %s", tally_comm_last_error(comm));
  int members[8], m = 0;
  for (int p = 0; p < n; p++)
    if (p != plan->victim) members[m++] = p;
  int bad = check_child(shrunk, rank, rank - (rank > plan->victim), n - 1, members);
  float x[4096];
  for (int j = 0; j < 4096; j++) x[j] = 1;
  r = tally_allreduce(x, x, 4096, TALLY_FLOAT32, TALLY_SUM, shrunk, NULL);
  if (r != TALLY_SUCCESS || x[4095] != (float)(n - 1))
    bad += harness_fail(rank, "allreduce on the shrunk communicator: %s", tally_comm_last_error(shrunk));
  tally_comm_destroy(shrunk);
  return bad;
}

static void shrink_one_of(int n, int victim, int given_list, int disagree_with) {
  setenv("TALLY_TIMEOUT", "20", 1);
  struct shrink_plan plan = {victim, given_list, disagree_with};
  cr_assert_eq(harness_run_killing(n, 120, shrink_after_kill, &plan, victim), 0, "victim %d of %d", victim, n);
  unsetenv("TALLY_TIMEOUT");
}

static void shrink_one_of_eight(int victim, int given_list, int disagree_with) {
  shrink_one_of(8, victim, given_list, disagree_with);
}

Test(shrink, kill_first_of_eight) { shrink_one_of_eight(0, 0, 0); }
Test(shrink, kill_middle_of_eight) { shrink_one_of_eight(4, 0, 0); }
Test(shrink, kill_last_of_eight) { shrink_one_of_eight(7, 0, 0); }
Test(shrink, kill_middle_of_eight_given_list) { shrink_one_of_eight(3, 1, 0); }
Test(shrink, kill_middle_of_eight_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  shrink_one_of_eight(5, 0, 0);
  unsetenv("TALLY_TRANSPORT");
}
/* Lists that disagree: every survivor gets TALLY_ERR_MISMATCH within 3 s (TALLY_TIMEOUT is 20). On a
 * middle rank, the survivors agree on the shrink's root (rank 0), which sees the other list. On the
 * lowest survivor: rank 0 dies, the odd survivors also exclude rank 1 and so take rank 2 for the
 * root, while rank 1 and the even survivors take rank 1; rank 2 (not a root in its own list) answers
 * the joins it gets with the mismatch and tells rank 1, which tells the others. */
Test(shrink, disagreeing_lists_mismatch) { shrink_one_of_eight(3, 1, 5); }
Test(shrink, disagreeing_on_a_middle_rank_of_four) { shrink_one_of(4, 3, 1, 2); }
Test(shrink, disagreeing_on_the_lowest_survivor_of_eight) { shrink_one_of_eight(0, 1, 1); }
Test(shrink, disagreeing_on_the_lowest_survivor_of_four) { shrink_one_of(4, 0, 1, 1); }

/* A communicator shrunk without its last rank, which is alive and calls nothing; with `arg`, the
 * others abort the communicator first (shrink does not use its connections). */
static int leave_one_out(tally_comm_t comm, int rank, int n, void *arg) {
  if (rank == n - 1) return 0; /* destroys its communicator and exits without a word */
  if (arg) tally_comm_abort(comm);
  int exclude[1] = {n - 1}, members[8];
  for (int p = 0; p < n - 1; p++) members[p] = p;
  tally_comm_t shrunk;
  if (tally_comm_shrink(comm, exclude, 1, &shrunk) != TALLY_SUCCESS)
    return harness_fail(rank, "shrink: %s", tally_comm_last_error(comm));
  int bad = check_child(shrunk, rank, rank, n - 1, members);
  tally_comm_destroy(shrunk);
  return bad;
}

Test(shrink, live_excluded_rank_calls_nothing) { cr_assert_eq(harness_run(4, 120, leave_one_out, NULL), 0); }

/* A second rank dies after the first failure, while the others shrink: their shrink fails naming
 * it with TALLY_ERR_REMOTE well before TALLY_TIMEOUT (a survivor's death is seen by the shrink's
 * root, which finds its recovery listener gone; the root's own death by the others, whose
 * connections to it are refused or reset), tally_comm_failed_ranks then names both, and the
 * second shrink succeeds. */
struct second_death_plan {
  int second;         /* the rank that dies before shrinking */
  const char *needle; /* what the survivors' message says */
};

static int second_death(tally_comm_t comm, int rank, int n, void *arg) {
  const struct second_death_plan *plan = arg;
  enum { FIRST = 2 };
  float buf[1024] = {0};
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; r == TALLY_SUCCESS; i++) {
    if (rank == FIRST && i == 2) raise(SIGKILL);
    r = tally_allreduce(buf, buf, 1024, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  }
  if (rank == plan->second) _exit(0); /* gone without a word, before shrinking */
  int failed[8], nfailed = 0;
  tally_comm_failed_ranks(comm, failed, 8, &nfailed);
  tally_comm_t shrunk = NULL;
  double start = harness_now_s();
  r = tally_comm_shrink(comm, failed, nfailed, &shrunk);
  int bad = harness_expect(rank, comm, r, TALLY_ERR_REMOTE, plan->needle);
  if (harness_now_s() - start > 2.0) /* TALLY_TIMEOUT is 10 s here */
    bad += harness_fail(rank, "the shrink took %.1f s to see the death", harness_now_s() - start);
  int lower = plan->second < FIRST ? plan->second : FIRST, higher = plan->second ^ FIRST ^ lower;
  if (tally_comm_failed_ranks(comm, failed, 8, &nfailed) != TALLY_SUCCESS || nfailed != 2 || failed[0] != lower ||
      failed[1] != higher)
    return bad + harness_fail(rank, "after the failed shrink failed_ranks says %d ranks", nfailed);
  r = tally_comm_shrink(comm, failed, nfailed, &shrunk);
  if (r != TALLY_SUCCESS) return bad + harness_fail(rank, "second shrink: %s", tally_comm_last_error(comm));
  int members[8], nmembers = 0, index = -1;
  for (int p = 0; p < n; p++) {
    if (p == FIRST || p == plan->second) continue;
    if (p == rank) index = nmembers;
    members[nmembers++] = p;
  }
  bad += check_child(shrunk, rank, index, n - 2, members);
  tally_comm_destroy(shrunk);
  return bad;
}

Test(shrink, survivor_dies_during_shrink_then_shrink_again) {
  struct second_death_plan plan = {6, "died during tally_comm_shrink"};
  setenv("TALLY_TIMEOUT", "10", 1);
  cr_assert_eq(harness_run_killing(8, 120, second_death, &plan, 2), 0);
  unsetenv("TALLY_TIMEOUT");
}

Test(shrink, root_dies_during_shrink_then_shrink_again) {
  struct second_death_plan plan = {0, "through rank 0"};
  setenv("TALLY_TIMEOUT", "10", 1);
  cr_assert_eq(harness_run_killing(8, 120, second_death, &plan, 2), 0);
  unsetenv("TALLY_TIMEOUT");
}

Test(shrink, aborted_communicator) { cr_assert_eq(harness_run(4, 120, leave_one_out, "abort"), 0); }

/* --- grow ------------------------------------------------------------------------------------- */

struct grow_plan {
  int nnew;
  int victim; /* -1, or the rank killed before a shrink; the grow then brings the size back */
};

/* Checks that `grown` has `n` ranks with this one `rank`, then runs every collective's cases on it. */
static int check_grown(tally_comm_t grown, int rank, int n) {
  int got_rank = -1, got_n = -1;
  tally_comm_rank(grown, &got_rank);
  tally_comm_size(grown, &got_n);
  if (got_rank != rank || got_n != n)
    return harness_fail(rank, "grown communicator: rank %d of %d, expected %d of %d", got_rank, got_n, rank, n);
  int members[64];
  for (int i = 0; i < n; i++) members[i] = i;
  int bad = check_child(grown, rank, rank, n, members);
  return bad ? bad : coll_all_cases(grown, rank, n, NULL);
}

/* A rank of the communicator being grown: rank 0 makes the id and hands it to the newcomers. */
static int grow_existing(tally_comm_t comm, int rank, int n, void *arg) {
  const struct grow_plan *plan = arg;
  tally_comm_t base = comm, shrunk = NULL;
  if (plan->victim >= 0) { /* a worker dies; the others drop it */
    float x = 1;
    tally_result_t r = TALLY_SUCCESS;
    for (int i = 0; r == TALLY_SUCCESS; i++) {
      if (rank == plan->victim && i == 2) raise(SIGKILL);
      r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    }
    int failed[8], nfailed = 0;
    tally_comm_failed_ranks(comm, failed, 8, &nfailed);
    if (tally_comm_shrink(comm, failed, nfailed, &shrunk) != TALLY_SUCCESS)
      return harness_fail(rank, "shrink: %s", tally_comm_last_error(comm));
    base = shrunk;
    tally_comm_rank(base, &rank);
    tally_comm_size(base, &n);
  }
  tally_unique_id_t id;
  if (rank == 0) {
    if (tally_comm_grow_id(base, plan->nnew, &id) != TALLY_SUCCESS)
      return harness_fail(rank, "grow_id: %s", tally_comm_last_error(base));
    if (harness_send_id(&id) != 0) return harness_fail(rank, "could not hand the id out");
  }
  tally_comm_t grown;
  tally_result_t r = tally_comm_grow(base, plan->nnew, rank == 0 ? &id : NULL, &grown);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "grow: %s", tally_comm_last_error(base));
  int bad = check_grown(grown, rank, n + plan->nnew);
  int members[64];
  for (int i = 0; i < n; i++) members[i] = i;
  bad += check_child(base, rank, rank, n, members); /* the old communicator still works */
  if (tally_comm_destroy(grown) != TALLY_SUCCESS) bad += harness_fail(rank, "destroy of the grown communicator");
  bad += check_child(base, rank, rank, n, members); /* and outlives the grown one */
  if (shrunk) tally_comm_destroy(shrunk);
  return bad;
}

static int grow_newcomer(int index, int nnew, const tally_unique_id_t *id, void *arg) {
  (void)arg, (void)nnew;
  tally_comm_t grown;
  tally_result_t r = tally_comm_join(id, index, &grown);
  if (r != TALLY_SUCCESS)
    return harness_fail(100 + index, "join as newcomer %d: %s", index, tally_comm_last_error(NULL));
  int rank = -1, n = -1;
  tally_comm_rank(grown, &rank);
  tally_comm_size(grown, &n);
  int bad = check_grown(grown, rank, n);
  tally_comm_destroy(grown);
  return bad;
}

/* A newcomer on another (fake) host: the grown communicator spans two hosts. */
static int grow_newcomer_elsewhere(int index, int nnew, const tally_unique_id_t *id, void *arg) {
  setenv("TALLY_HOSTID", "harness-new-host", 1);
  return grow_newcomer(index, nnew, id, arg);
}

static void grow_run(int nranks, int nnew, int victim) {
  struct grow_plan plan = {nnew, victim};
  cr_assert_eq(harness_run_growing(nranks, nnew, 600, grow_existing, grow_newcomer, &plan, victim), 0);
}

Test(grow, four_by_four_every_collective) { grow_run(4, 4, -1); }
Test(grow, seven_by_one_every_collective) { grow_run(7, 1, -1); }
Test(grow, four_by_four_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  grow_run(4, 4, -1);
  unsetenv("TALLY_TRANSPORT");
}
Test(grow, two_by_two_newcomers_on_another_host) {
  struct grow_plan plan = {2, -1};
  cr_assert_eq(harness_run_growing(2, 2, 600, grow_existing, grow_newcomer_elsewhere, &plan, -1), 0);
}
Test(grow, after_shrink_back_to_eight) {
  setenv("TALLY_TIMEOUT", "30", 1);
  grow_run(8, 1, 3);
  unsetenv("TALLY_TIMEOUT");
}

/* Refused with a message, on every rank alike, and the communicator stays usable. The one newcomer
 * is told of the disagreeing nnew. */
static int grow_bad_arguments(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_unique_id_t id, other, stale;
  tally_comm_t grown = NULL, dup;
  memset(&id, 0, sizeof id);
  int bad = harness_expect(rank, comm, tally_comm_grow_id(comm, 0, &id), TALLY_ERR_INVALID_ARGUMENT, "nnew is 0");
  bad += harness_expect(rank, NULL, tally_comm_grow_id(comm, 1, NULL), TALLY_ERR_INVALID_ARGUMENT, "id is NULL");
  bad += harness_expect(rank, NULL, tally_comm_grow_id(NULL, 1, &id), TALLY_ERR_INVALID_ARGUMENT, "comm is NULL");
  bad += harness_expect(rank, comm, tally_comm_grow(comm, -1, NULL, &grown), TALLY_ERR_INVALID_ARGUMENT, "nnew is -1");
  bad +=
      harness_expect(rank, NULL, tally_comm_grow(comm, 1, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT, "newcomm is NULL");
  bad += harness_expect(rank, NULL, tally_comm_grow(NULL, 1, NULL, &grown), TALLY_ERR_INVALID_ARGUMENT, "comm is NULL");
  bad += harness_expect(rank, NULL, tally_comm_join(NULL, 0, &grown), TALLY_ERR_INVALID_ARGUMENT, "id is NULL");
  bad += harness_expect(rank, NULL, tally_comm_join(&id, 0, &grown), TALLY_ERR_INVALID_ARGUMENT, "bad magic");
  /* every rank makes an id: a newcomer's index is checked against it, and the grow finds 4 owners */
  if (tally_comm_grow_id(comm, 1, &id) != TALLY_SUCCESS) return harness_fail(rank, "grow_id failed");
  bad += harness_expect(rank, NULL, tally_comm_join(&id, 1, &grown), TALLY_ERR_INVALID_ARGUMENT, "index 1 is outside");
  bad += harness_expect(rank, NULL, tally_comm_join(&id, -1, &grown), TALLY_ERR_INVALID_ARGUMENT, "index -1");
  bad += harness_expect(rank, NULL, tally_comm_join(&id, 0, NULL), TALLY_ERR_INVALID_ARGUMENT, "newcomm is NULL");
  bad += harness_expect(rank, comm, tally_comm_grow(comm, 1, NULL, &grown), TALLY_ERR_INVALID_USAGE,
                        "both called tally_comm_grow_id");
  /* that grow used every id up: now nobody holds one */
  bad += harness_expect(rank, comm, tally_comm_grow(comm, 1, NULL, &grown), TALLY_ERR_INVALID_USAGE,
                        "no rank of this communicator holds an id");
  /* an id of another communicator */
  if (tally_comm_dup(comm, &dup) != TALLY_SUCCESS) return harness_fail(rank, "dup: %s", tally_comm_last_error(comm));
  if (rank == 0 && (tally_comm_grow_id(dup, 1, &other) != TALLY_SUCCESS || tally_comm_grow_id(comm, 1, &id)))
    return harness_fail(rank, "grow_id failed");
  bad += harness_expect(rank, comm, tally_comm_grow(comm, 1, rank == 0 ? &other : NULL, &grown),
                        TALLY_ERR_INVALID_ARGUMENT, "another communicator");
  tally_comm_destroy(dup);
  /* a stale id: replaced by a later one on the same rank, passed by another rank */
  if (rank == 0 && (tally_comm_grow_id(comm, 1, &stale) != TALLY_SUCCESS || tally_comm_grow_id(comm, 1, &id)))
    return harness_fail(rank, "grow_id failed");
  if (tally_broadcast(&stale, &stale, sizeof stale, TALLY_UINT8, 0, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "broadcast: %s", tally_comm_last_error(comm));
  bad += harness_expect(rank, comm, tally_comm_grow(comm, 1, rank == n - 1 ? &stale : NULL, &grown),
                        TALLY_ERR_INVALID_ARGUMENT, "stale id");
  if (rank == 0) { /* a newcomer with either id hears at once that the grow is over */
    double start = harness_now_s();
    bad += harness_expect(rank, NULL, tally_comm_join(&stale, 0, &grown), TALLY_ERR_REMOTE, "stale");
    bad += harness_expect(rank, NULL, tally_comm_join(&id, 0, &grown), TALLY_ERR_MISMATCH, "stale id");
    if (harness_now_s() - start > 5) bad += harness_fail(rank, "stale ids took %.1f s", harness_now_s() - start);
  }
  /* nnew that differ: every rank and the newcomer get TALLY_ERR_MISMATCH */
  if (rank == 0 && (tally_comm_grow_id(comm, 1, &id) != TALLY_SUCCESS || harness_send_id(&id) != 0))
    return harness_fail(rank, "grow_id failed");
  bad += harness_expect(rank, comm, tally_comm_grow(comm, rank == 2 ? 2 : 1, NULL, &grown), TALLY_ERR_MISMATCH,
                        "passes nnew 2");
  /* one rank's nnew is refused: it still takes the allgather, so the others fail at once too */
  double start = harness_now_s();
  tally_result_t refused = tally_comm_grow(comm, rank == 1 ? 0 : 1, NULL, &grown);
  if (rank == 1) bad += harness_expect(rank, comm, refused, TALLY_ERR_INVALID_ARGUMENT, "nnew is 0");
  if (rank != 1 && refused == TALLY_SUCCESS) bad += harness_fail(rank, "a grow with rank 1's nnew 0 succeeded");
  if (harness_now_s() - start > 5)
    bad += harness_fail(rank, "rank 1's refused nnew took %.1f s", harness_now_s() - start);
  tally_group_start();
  bad +=
      harness_expect(rank, comm, tally_comm_grow(comm, 1, NULL, &grown), TALLY_ERR_INVALID_USAGE, "tally_group_start");
  tally_group_end();
  if (grown) bad += harness_fail(rank, "a refused call made a communicator");
  int members[4] = {0, 1, 2, 3};
  bad += check_child(comm, rank, rank, n, members);
  if (rank == 0) sleep(2); /* the newcomer's answer comes from a thread of this process: let it go out */
  return bad;
}

static int newcomer_told_mismatch(int index, int nnew, const tally_unique_id_t *id, void *arg) {
  (void)nnew, (void)arg;
  tally_comm_t grown = NULL;
  return harness_expect(4 + index, NULL, tally_comm_join(id, index, &grown), TALLY_ERR_MISMATCH, "passes nnew 2");
}

Test(grow, bad_arguments) {
  setenv("TALLY_TIMEOUT", "20", 1);
  cr_assert_eq(harness_run_growing(4, 1, 120, grow_bad_arguments, newcomer_told_mismatch, NULL, -1), 0);
  unsetenv("TALLY_TIMEOUT");
}

/* The id is never handed out: the grow fails with TALLY_ERR_TIMEOUT within TALLY_TIMEOUT, naming
 * the newcomer's rank; the communicator stays usable. */
static int newcomer_never_comes(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_unique_id_t id;
  if (rank == 1 && tally_comm_grow_id(comm, 1, &id) != TALLY_SUCCESS)
    return harness_fail(rank, "grow_id: %s", tally_comm_last_error(comm));
  tally_comm_t grown = NULL;
  double start = harness_now_s();
  int bad = harness_expect(rank, comm, tally_comm_grow(comm, 1, NULL, &grown), TALLY_ERR_TIMEOUT, "missing: 4");
  double took = harness_now_s() - start;
  if (took > 3.5) bad += harness_fail(rank, "the grow took %.1f s with TALLY_TIMEOUT=3", took);
  int members[4] = {0, 1, 2, 3};
  return bad + check_child(comm, rank, rank, n, members);
}

Test(grow, newcomer_never_comes) {
  setenv("TALLY_TIMEOUT", "3", 1);
  cr_assert_eq(harness_run(4, 60, newcomer_never_comes, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}

/* tally_comm_abort of the communicator being grown ends the grow's waits at once, here with the
 * newcomer never coming and TALLY_TIMEOUT at 30 s. */
static void *abort_soon(void *arg) {
  usleep(500 * 1000);
  tally_comm_abort(arg);
  return NULL;
}

static int grow_aborted(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg, (void)n;
  tally_unique_id_t id;
  if (rank == 0 && tally_comm_grow_id(comm, 1, &id) != TALLY_SUCCESS)
    return harness_fail(rank, "grow_id: %s", tally_comm_last_error(comm));
  pthread_t thread;
  pthread_create(&thread, NULL, abort_soon, comm);
  tally_comm_t grown = NULL;
  double start = harness_now_s();
  /* its own abort, or the root's rank's abort reported first (TALLY_ERR_REMOTE) */
  tally_result_t r = tally_comm_grow(comm, 1, NULL, &grown);
  int bad = harness_expect(rank, comm, r, r == TALLY_ERR_REMOTE ? TALLY_ERR_REMOTE : TALLY_ERR_ABORTED, "abort");
  double took = harness_now_s() - start;
  pthread_join(thread, NULL);
  if (took > 5) bad += harness_fail(rank, "the aborted grow took %.1f s", took);
  return bad;
}

Test(grow, aborted) {
  setenv("TALLY_TIMEOUT", "30", 1);
  cr_assert_eq(harness_run(4, 60, grow_aborted, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}

/* --- tally_comm_abort during split and shrink -------------------------------------------------- */

/* tally_comm_abort from another thread ends a split or shrink that waits for a rank that stopped
 * taking part, at every phase (threaded.h). */
static void abort_run(struct abort_plan plan) {
  setenv("TALLY_TIMEOUT", "30", 1);
  if (plan.stall_split) {
    char absent[16];
    snprintf(absent, sizeof absent, "%d", plan.absent);
    setenv("TALLY_TEST_STALL_SPLIT", absent, 1);
  }
  cr_assert_eq(harness_run(4, 60, threaded_abort_while_deriving, &plan), 0);
  unsetenv("TALLY_TEST_STALL_SPLIT");
  unsetenv("TALLY_TIMEOUT");
}

/* Rank 3 never calls: the others wait in the parent's first allgather. */
Test(abort, split_waiting_in_the_parents_allgather) { abort_run(THREADED_ABORT_IN_ALLGATHER); }
/* Rank 1 stops after the allgathers: the others wait building the child (its links and board). */
Test(abort, split_waiting_for_the_child) { abort_run(THREADED_ABORT_BUILDING_CHILD); }
/* Rank 3 never calls: the survivors wait in the bootstrap through rank 0, the root; rank 1 aborts
 * first (its join ends), then rank 0 (its root stops and tells rank 2). */
Test(abort, shrink_waiting_for_a_survivor) { abort_run(THREADED_ABORT_IN_SHRINK); }
