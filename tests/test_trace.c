/* Traces (TALLY_TRACE, src/comm/trace.h) and tally-trace (tools/tally-trace): jobs traced into a
 * fresh directory, whose files tests/check_trace.py then checks: the JSON parses with the required
 * fields, spans nest and are ordered per rank, clock offsets are 0 within their bound (one machine,
 * one clock), the traffic matrix of a ring, halving-doubling and tree allreduce equals its analytic
 * value and each rank's counters (tally_comm_stats), a merge of 4 ranks on 2 fake hosts keeps every
 * span, the plots are PNGs of the size asked for, a truncated file still loads, and bad input gets
 * a clear error. Each rank writes its counters' change over the job to DIR/counters-RANK.json. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "threaded.h"

enum { MAXR = 8, CALLS = 3 };

struct job {
  const char *dir;
  size_t count; /* floats per allreduce */
};

static int snapshot(tally_comm_t comm, int rank, tally_stats_t *s, uint64_t *sent) {
  memset(s, 0, sizeof *s);
  s->size = sizeof *s;
  if (tally_comm_stats(comm, s, sent, NULL, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_stats: %s", tally_comm_last_error(comm));
  return 0;
}

/* CALLS allreduces of job->count floats (TALLY_ALGO picks the algorithm), then this rank's counters'
 * change: bytes sent to each rank, and the rows of calls. */
static int traced_allreduces(tally_comm_t comm, int rank, int n, void *arg) {
  const struct job *job = arg;
  tally_stats_t before, after;
  uint64_t sent_before[MAXR], sent_after[MAXR];
  if (snapshot(comm, rank, &before, sent_before)) return 1;
  float *x = calloc(job->count, sizeof *x);
  if (!x) return harness_fail(rank, "out of memory");
  for (int i = 0; i < CALLS; i++)
    if (tally_allreduce(x, x, job->count, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS) {
      free(x);
      return harness_fail(rank, "allreduce %d: %s", i, tally_comm_last_error(comm));
    }
  free(x);
  if (snapshot(comm, rank, &after, sent_after)) return 1;
  char path[512];
  snprintf(path, sizeof path, "%s/counters-%d.json", job->dir, rank);
  FILE *f = fopen(path, "w");
  if (!f) return harness_fail(rank, "cannot write %s", path);
  fprintf(f, "{\"rank\": %d, \"nranks\": %d, \"calls\": %d, \"bytes_per_call\": %zu, \"sent\": [", rank, n, CALLS,
          job->count * sizeof(float));
  for (int r = 0; r < n; r++) fprintf(f, "%s%llu", r ? ", " : "", (unsigned long long)(sent_after[r] - sent_before[r]));
  fprintf(f, "], \"rows\": [");
  for (int i = 0; i < after.nrows; i++)
    fprintf(f, "%s{\"collective\": \"%s\", \"algorithm\": \"%s\", \"calls\": %llu, \"bytes\": %llu}", i ? ", " : "",
            after.rows[i].collective, after.rows[i].algorithm, (unsigned long long)after.rows[i].calls,
            (unsigned long long)after.rows[i].bytes);
  fprintf(f, "]}\n");
  return fclose(f) != 0 ? harness_fail(rank, "cannot write %s", path) : 0;
}

/* Runs `check` (a mode of check_trace.py) on the traces of a job of n ranks, ranks_per_host a host,
 * with TALLY_ALGO `algo` (NULL: unset) and allreduces of `count` floats. */
static void traced_job(int n, int ranks_per_host, const char *algo, size_t count, const char *check) {
  char dir[] = "/tmp/tally-trace-test-XXXXXX";
  cr_assert(mkdtemp(dir));
  struct job job = {dir, count};
  setenv("TALLY_TRACE", dir, 1);
  if (algo) setenv("TALLY_ALGO", algo, 1);
  int failed = harness_run_on_hosts(n, ranks_per_host, 120, traced_allreduces, &job);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TRACE");
  cr_assert_eq(failed, 0);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/check_trace.py %s %s %s/tools/tally-trace %s/tally-perf",
           TALLY_SOURCE_DIR, check, dir, TALLY_SOURCE_DIR, TALLY_BINARY_DIR);
  int rc = system(cmd);
  cr_assert_eq(rc, 0, "%s failed (status %d); the traces are left in %s", cmd, rc, dir);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

Test(trace, ring_on_two_hosts_validates_merges_and_matches_counters) { traced_job(4, 2, "ring", 1 << 16, "ring"); }

Test(trace, halving_doubling_traffic_matches_its_analytic_value) { traced_job(4, 4, "allreduce:rhd", 1 << 16, "rhd"); }

Test(trace, tree_traffic_matches_its_analytic_value) { traced_job(4, 4, "allreduce:tree", 1 << 16, "tree"); }

Test(trace, plots_and_bad_input) { traced_job(3, 3, NULL, 1 << 12, "tool"); }

/* Several communicators, each made and used by its own thread, traced at once. */
Test(trace, communicators_in_threads) {
  char dir[] = "/tmp/tally-trace-test-XXXXXX";
  cr_assert(mkdtemp(dir));
  setenv("TALLY_TRACE", dir, 1);
  int failed = harness_run(2, 120, threaded_comms_in_threads, NULL);
  unsetenv("TALLY_TRACE");
  cr_assert_eq(failed, 0);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/check_trace.py threads %s %s/tools/tally-trace",
           TALLY_SOURCE_DIR, dir, TALLY_SOURCE_DIR);
  cr_assert_eq(system(cmd), 0, "%s failed; the traces are left in %s", cmd, dir);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

/* Twenty allreduces, then rank 1 dies by SIGKILL after the writer's flush period: its file, cut
 * short without its closing bracket, still loads with every call (the crash lost no flushed span). */
static int killed_after_twenty(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float x[64] = {0};
  for (int i = 0; i < 20; i++)
    if (tally_allreduce(x, x, 64, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "allreduce %d: %s", i, tally_comm_last_error(comm));
  if (rank == 1) {
    usleep(200 * 1000); /* ten flush periods */
    raise(SIGKILL);
  }
  return 0;
}

Test(trace, a_killed_rank_loses_only_the_unflushed_tail) {
  char dir[] = "/tmp/tally-trace-test-XXXXXX";
  cr_assert(mkdtemp(dir));
  setenv("TALLY_TRACE", dir, 1);
  int failed = harness_run_killing(3, 120, killed_after_twenty, NULL, 1);
  unsetenv("TALLY_TRACE");
  cr_assert_eq(failed, 0);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/check_trace.py killed %s %s/tools/tally-trace", TALLY_SOURCE_DIR,
           dir, TALLY_SOURCE_DIR);
  cr_assert_eq(system(cmd), 0, "%s failed; the traces are left in %s", cmd, dir);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}
