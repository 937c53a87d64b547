/* The counters (api/stats.c, comm.h's struct tally_counters): the traffic matrix of a ring and a
 * halving-doubling allreduce against the analytic 2(n-1)/n x S per rank, every rank's row against
 * the others' columns for the tree, pairwise and Bruck alltoall, binomial gather and point-to-point,
 * the rows of calls per collective and algorithm, the transports' totals, bad arguments, and the
 * summary TALLY_STATS=1 prints. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

enum { MAXR = 8 };

/* This rank's row and column of the traffic matrix, now. */
struct traffic {
  uint64_t sent[MAXR], received[MAXR], waited[MAXR];
};

static int snapshot(tally_comm_t comm, int rank, tally_stats_t *s, struct traffic *t) {
  memset(s, 0, sizeof *s);
  s->size = sizeof *s;
  if (tally_comm_stats(comm, s, t->sent, t->received, t->waited) != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_stats: %s", tally_comm_last_error(comm));
  return 0;
}

static const tally_stats_row_t *find_row(const tally_stats_t *s, const char *coll, const char *algo) {
  for (int i = 0; i < s->nrows; i++)
    if (!strcmp(s->rows[i].collective, coll) && !strcmp(s->rows[i].algorithm, algo)) return &s->rows[i];
  return NULL;
}

/* One allreduce of S bytes (TALLY_ALGO chooses the algorithm): what this rank sent to and received
 * from each rank. The ring sends 2(n-1)/n S to the next rank only; halving-doubling on 4 ranks
 * sends S/2 twice to the partner two away and S/4 twice to the one next to it (1.5 S in all). */
static int allreduce_traffic(tally_comm_t comm, int rank, int n, void *arg) {
  const char *algo = arg;
  enum { FLOATS = 3 << 16 }; /* blocks of equal size on 2, 3 and 4 ranks */
  const uint64_t S = FLOATS * sizeof(float);
  float *buf = calloc(FLOATS, sizeof *buf);
  tally_stats_t before, after;
  struct traffic t0, t1;
  int bad = snapshot(comm, rank, &before, &t0);
  if (tally_allreduce(buf, buf, FLOATS, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
  bad += snapshot(comm, rank, &after, &t1);
  free(buf);
  for (int r = 0; r < n && !bad; r++) {
    uint64_t sent = t1.sent[r] - t0.sent[r], received = t1.received[r] - t0.received[r], want_out = 0, want_in = 0;
    if (!strcmp(algo, "ring")) {
      want_out = r == (rank + 1) % n ? 2 * (uint64_t)(n - 1) * S / (uint64_t)n : 0;
      want_in = r == (rank + n - 1) % n ? 2 * (uint64_t)(n - 1) * S / (uint64_t)n : 0;
    } else { /* rhd on 4 ranks */
      want_out = want_in = r == (rank ^ 2) ? S : r == (rank ^ 1) ? S / 2 : 0;
    }
    if (sent != want_out || received != want_in)
      bad = harness_fail(rank,
                         "%s allreduce of %llu bytes: sent %llu to rank %d and received %llu, expected %llu and %llu",
                         algo, (unsigned long long)S, (unsigned long long)sent, r, (unsigned long long)received,
                         (unsigned long long)want_out, (unsigned long long)want_in);
  }
  const tally_stats_row_t *row = find_row(&after, "allreduce", algo), *was = find_row(&before, "allreduce", algo);
  uint64_t calls = row ? row->calls - (was ? was->calls : 0) : 0, bytes = row ? row->bytes - (was ? was->bytes : 0) : 0;
  if (!bad && (calls != 1 || bytes != S))
    bad = harness_fail(rank, "the allreduce %s row counts %llu calls of %llu bytes, expected 1 of %llu", algo,
                       (unsigned long long)calls, (unsigned long long)bytes, (unsigned long long)S);
  uint64_t by_transport = 0, by_peer = 0;
  for (int i = 0; i < after.ntransports; i++) by_transport += after.transports[i].bytes_sent;
  for (int r = 0; r < n; r++) by_peer += t1.sent[r];
  if (!bad && by_transport != by_peer)
    bad = harness_fail(rank, "the transports sent %llu bytes but the peers' counters add up to %llu",
                       (unsigned long long)by_transport, (unsigned long long)by_peer);
  return bad;
}

static void run_with_algo(const char *algo, int n, harness_body_fn body, void *arg) {
  setenv("TALLY_ALGO", algo, 1);
  int failed = harness_run(n, 120, body, arg);
  unsetenv("TALLY_ALGO");
  cr_assert_eq(failed, 0, "TALLY_ALGO=%s on %d ranks", algo, n);
}

Test(stats, ring_allreduce_traffic_is_2_n_minus_1_over_n) {
  run_with_algo("ring", 4, allreduce_traffic, "ring");
  run_with_algo("ring", 3, allreduce_traffic, "ring");
}
Test(stats, halving_doubling_traffic) { run_with_algo("allreduce:rhd", 4, allreduce_traffic, "rhd"); }
Test(stats, ring_allreduce_traffic_over_tcp) {
  setenv("TALLY_TRANSPORT", "tcp", 1);
  run_with_algo("ring", 3, allreduce_traffic, "ring");
  unsetenv("TALLY_TRANSPORT");
}

/* What each rank sent to each other rank in `run`, checked against what that rank says it received
 * from this one (every rank's row of the matrix against the others' columns), and in total against
 * `expected_total` (0: not checked). */
static int matrix_consistent(tally_comm_t comm, int rank, int n, int (*run)(tally_comm_t, int, int),
                             uint64_t expected_total) {
  tally_stats_t s;
  struct traffic t0, t1;
  int bad = snapshot(comm, rank, &s, &t0);
  if (!bad && run(comm, rank, n) != 0) bad = harness_fail(rank, "the call failed: %s", tally_comm_last_error(comm));
  bad += snapshot(comm, rank, &s, &t1);
  uint64_t mine[2 * MAXR], all[2 * MAXR * MAXR], total = 0;
  for (int r = 0; r < n; r++) {
    mine[r] = t1.sent[r] - t0.sent[r];
    mine[MAXR + r] = t1.received[r] - t0.received[r];
    total += mine[r];
  }
  if (tally_allgather(mine, all, 2 * MAXR, TALLY_UINT64, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allgather of the counters: %s", tally_comm_last_error(comm));
  for (int r = 0; r < n && !bad; r++) {
    uint64_t sent_to_r = mine[r], r_received_from_me = all[(size_t)r * 2 * MAXR + MAXR + rank];
    if (sent_to_r != r_received_from_me)
      bad = harness_fail(rank, "sent %llu bytes to rank %d, which received %llu from this rank",
                         (unsigned long long)sent_to_r, r, (unsigned long long)r_received_from_me);
  }
  if (!bad && expected_total && total != expected_total)
    bad = harness_fail(rank, "sent %llu bytes in all, expected %llu", (unsigned long long)total,
                       (unsigned long long)expected_total);
  return bad;
}

enum { BLOCK = 1000 }; /* floats per peer */
static float send_area[MAXR * BLOCK], recv_area[MAXR * BLOCK];

static int one_tree_allreduce(tally_comm_t comm, int rank, int n) {
  (void)rank;
  return tally_allreduce(send_area, recv_area, (size_t)n * BLOCK, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != 0;
}
static int one_alltoall(tally_comm_t comm, int rank, int n) {
  (void)rank, (void)n;
  return tally_alltoall(send_area, recv_area, BLOCK, TALLY_FLOAT32, comm, NULL) != 0;
}
static int one_gather(tally_comm_t comm, int rank, int n) {
  (void)rank, (void)n;
  return tally_gather(send_area, recv_area, BLOCK, TALLY_FLOAT32, 1, comm, NULL) != 0;
}
static int ring_of_sends(tally_comm_t comm, int rank, int n) {
  int r = tally_group_start();
  r |= tally_send(send_area, BLOCK, TALLY_FLOAT32, (rank + 1) % n, comm, NULL);
  r |= tally_recv(recv_area, BLOCK, TALLY_FLOAT32, (rank + n - 1) % n, comm, NULL);
  return r | tally_group_end();
}

static int tree_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return matrix_consistent(comm, rank, n, one_tree_allreduce, 0);
}
static int alltoall_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg; /* every block but this rank's own crosses a link once (pairwise), or more (Bruck) */
  const char *algo = getenv("TALLY_ALGO");
  uint64_t direct = (uint64_t)(n - 1) * BLOCK * sizeof(float);
  return matrix_consistent(comm, rank, n, one_alltoall, strstr(algo, "pairwise") ? direct : 0);
}
static int gather_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return matrix_consistent(comm, rank, n, one_gather, 0);
}
static int sends_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int bad = matrix_consistent(comm, rank, n, ring_of_sends, BLOCK * sizeof(float));
  tally_stats_t s = {.size = sizeof s};
  tally_comm_stats(comm, &s, NULL, NULL, NULL);
  const tally_stats_row_t *row = find_row(&s, "point-to-point", "none");
  if (!bad && (!row || row->calls != 2))
    bad = harness_fail(rank, "the point-to-point row counts %llu calls, expected 2 (a send and a recv)",
                       row ? (unsigned long long)row->calls : 0ull);
  return bad;
}

Test(stats, every_row_matches_the_peers_columns) {
  run_with_algo("allreduce:tree", 5, tree_body, NULL);
  run_with_algo("alltoall:pairwise", 4, alltoall_body, NULL);
  run_with_algo("alltoall:bruck", 5, alltoall_body, NULL);
  run_with_algo("gather:binomial", 6, gather_body, NULL);
  run_with_algo("auto", 3, sends_body, NULL);
}

/* Calls under 64 KiB are timed one in 16, each such time counting 16 times (dispatch.c): 48 small
 * allreduces on which rank 0 waits about a millisecond each (rank 1 sleeps before each) add up to
 * about the time rank 0 spent in them; a 256 KiB one is timed on its own. */
static int sampled_time(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  enum { CALLS = 48, BIG_FLOATS = 64 * 1024 };
  float x[2] = {0}, *big = calloc(BIG_FLOATS, sizeof *big);
  tally_stats_t s0, s1, s2;
  struct traffic t;
  int bad = snapshot(comm, rank, &s0, &t);
  double start = harness_now_s();
  for (int i = 0; i < CALLS && !bad; i++) {
    if (rank == 1) usleep(1000);
    if (tally_allreduce(x, x, 2, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      bad = harness_fail(rank, "allreduce %d: %s", i, tally_comm_last_error(comm));
  }
  double wall_ns = (harness_now_s() - start) * 1e9;
  bad += snapshot(comm, rank, &s1, &t);
  if (!bad && tally_allreduce(big, big, BIG_FLOATS, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad = harness_fail(rank, "the 256 KiB allreduce: %s", tally_comm_last_error(comm));
  bad += snapshot(comm, rank, &s2, &t);
  free(big);
  if (bad || rank != 0) return bad;
  const tally_stats_row_t *before = find_row(&s0, "allreduce", "ring"), *small = find_row(&s1, "allreduce", "ring"),
                          *after = find_row(&s2, "allreduce", "ring");
  uint64_t calls0 = before ? before->calls : 0, ns0 = before ? before->ns : 0;
  if (!small || !after) return harness_fail(rank, "no allreduce row for the ring");
  double ns = (double)(small->ns - ns0);
  if (small->calls - calls0 != CALLS) bad += harness_fail(rank, "%llu calls counted, not %d",
                                                          (unsigned long long)(small->calls - calls0), CALLS);
  if (ns < wall_ns / 4 || ns > wall_ns * 4)
    bad += harness_fail(rank, "the small calls' time is %.0f us, where rank 0 spent %.0f us in them", ns / 1e3,
                        wall_ns / 1e3);
  if (after->ns <= small->ns) bad += harness_fail(rank, "the 256 KiB call was not timed");
  return bad;
}
Test(stats, small_calls_are_timed_by_sampling) { run_with_algo("allreduce:ring", 2, sampled_time, NULL); }

/* The tuner remembers its choice per shape of call in a small table (tuning/tuner.c): 24 sizes, more
 * than the table holds, each run twice in two passes, must run exactly as tally_comm_tuner_choice
 * (which prices every time) says, and give the right sums. */
static int remembered_choices(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  enum { SIZES = 24, MAX_FLOATS = 1 << 18, MAX_ROWS = 8 };
  float *x = malloc(MAX_FLOATS * sizeof *x);
  const char *algo_of[SIZES], *names[MAX_ROWS];
  size_t count_of[SIZES];
  int expected[MAX_ROWS] = {0}, nnames = 0, bad = 0;
  for (int i = 0; i < SIZES; i++) {
    count_of[i] = ((size_t)1 << (i % 18)) + (size_t)(i / 18) * 3; /* powers of two, then a few odd counts */
    if (tally_comm_tuner_choice(comm, "allreduce", count_of[i], TALLY_FLOAT32, &algo_of[i], NULL) != TALLY_SUCCESS)
      bad = harness_fail(rank, "tally_comm_tuner_choice: %s", tally_comm_last_error(comm));
    int k = 0;
    while (k < nnames && strcmp(names[k], algo_of[i])) k++;
    if (k == nnames && nnames < MAX_ROWS) names[nnames++] = algo_of[i];
    if (k < MAX_ROWS) expected[k] += 2;
  }
  tally_stats_t before, after;
  struct traffic t;
  bad += snapshot(comm, rank, &before, &t);
  for (int pass = 0; pass < 2 && !bad; pass++)
    for (int i = 0; i < SIZES && !bad; i++) {
      for (size_t e = 0; e < count_of[i]; e++) x[e] = (float)(rank + 1);
      if (tally_allreduce(x, x, count_of[i], TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
        bad = harness_fail(rank, "allreduce of %zu: %s", count_of[i], tally_comm_last_error(comm));
      else if (x[0] != (float)(n * (n + 1) / 2) || x[count_of[i] - 1] != (float)(n * (n + 1) / 2))
        bad = harness_fail(rank, "allreduce of %zu floats summed to %g", count_of[i], (double)x[0]);
    }
  bad += snapshot(comm, rank, &after, &t);
  free(x);
  for (int k = 0; k < nnames && !bad; k++) {
    const tally_stats_row_t *b = find_row(&before, "allreduce", names[k]), *a = find_row(&after, "allreduce", names[k]);
    uint64_t ran = (a ? a->calls : 0) - (b ? b->calls : 0);
    if (ran != (uint64_t)expected[k])
      bad = harness_fail(rank, "%s ran %llu calls where the tuner chooses it for %d", names[k],
                         (unsigned long long)ran, expected[k]);
  }
  if (nnames < 2 && !bad) bad = harness_fail(rank, "the sizes chose only %s: the test shows nothing", names[0]);
  return bad;
}
Test(stats, remembered_tuner_choices_are_the_tuners) { cr_assert_eq(harness_run(3, 120, remembered_choices, NULL), 0); }

/* stats->size smaller than the first version's fixed part is refused; a size that leaves room for
 * two rows gets at most two; NULL arguments are refused with a message. */
static int bad_arguments(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  int bad = 0;
  float x[4] = {0};
  tally_allreduce(x, x, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  tally_broadcast(x, x, 4, TALLY_FLOAT32, 0, comm, NULL);
  tally_barrier(comm, NULL);
  tally_stats_t s = {.size = 8};
  bad += harness_expect(rank, comm, tally_comm_stats(comm, &s, NULL, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "sizeof(tally_stats_t)");
  bad += harness_expect(rank, comm, tally_comm_stats(comm, NULL, NULL, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "stats is NULL");
  bad += harness_expect(rank, NULL, tally_comm_stats(NULL, &s, NULL, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT,
                        "comm is NULL");
  size_t two_rows = offsetof(tally_stats_t, rows) + 2 * sizeof(tally_stats_row_t);
  s.size = two_rows;
  if (tally_comm_stats(comm, &s, NULL, NULL, NULL) != TALLY_SUCCESS || s.nrows != 2 || s.size != two_rows)
    bad += harness_fail(rank, "a struct with room for 2 rows got %d rows", s.nrows);
  return bad;
}
Test(stats, bad_arguments) { cr_assert_eq(harness_run(2, 60, bad_arguments, NULL), 0); }

/* TALLY_STATS=1: each rank prints its lines when it destroys the communicator. */
Test(stats, summary_at_destroy) {
  char path[] = "/tmp/tally-stats-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  int saved = dup(2);
  dup2(fd, 2);
  setenv("TALLY_STATS", "1", 1);
  setenv("TALLY_ALGO", "ring", 1);
  int failed = harness_run(2, 60, allreduce_traffic, "ring");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_STATS");
  dup2(saved, 2);
  close(saved);
  cr_assert_eq(failed, 0);
  char text[8192] = "";
  ssize_t got = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  unlink(path);
  cr_assert(got > 0);
  text[got] = '\0';
  cr_assert(strstr(text, "tally stats: rank 0 of 2"), "%s", text);
  cr_assert(strstr(text, "tally stats: rank 1 of 2"), "%s", text);
  cr_assert(strstr(text, "allreduce      ring"), "%s", text);
  cr_assert(strstr(text, "shm   sent 768.0 KiB"), "%s", text);
}
