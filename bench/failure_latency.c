/* failure-latency: how long survivors take to learn that a rank died. Runs RUNS jobs of 8 local
 * ranks streaming 1 MiB allreduces; in each, one rank (a different one each run) records the
 * time and kills itself with SIGKILL, and every survivor records when its call returned an error.
 * Prints, per run and as a median, the time from the kill to the last survivor's error return.
 * CLOCK_MONOTONIC is shared by all processes of the machine, so the times compare directly.
 * usage: failure-latency [RUNS]   (default 10) */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "harness.h"

enum { NRANKS = 8, COUNT = 256 * 1024, MAX_RUNS = 1000 };

struct shared_times {
  double killed;
  double failed[NRANKS];
};

struct run_plan {
  int victim;
  struct shared_times *times; /* shared memory, written by the ranks */
};

static int stream_until_failure(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  struct run_plan *plan = arg;
  static float buf[COUNT];
  for (int i = 0;; i++) {
    if (rank == plan->victim && i == 7) {
      plan->times->killed = harness_now_s();
      raise(SIGKILL);
    }
    if (tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS) {
      plan->times->failed[rank] = harness_now_s();
      return 0;
    }
  }
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 10;
  if (runs < 1 || runs > MAX_RUNS) {
    fprintf(stderr, "usage: failure-latency [RUNS]   (1 to %d)\n", MAX_RUNS);
    return 2;
  }
  struct shared_times *times =
      mmap(NULL, sizeof *times, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (times == MAP_FAILED) return 1;
  static double latency_ms[MAX_RUNS];
  printf("# %d ranks, 1 MiB float allreduces, one rank killed with SIGKILL per run\n", NRANKS);
  for (int run = 0; run < runs; run++) {
    struct run_plan plan = {(run * 3) % NRANKS, times};
    *times = (struct shared_times){0};
    if (harness_run_killing(NRANKS, 60, stream_until_failure, &plan, plan.victim) != 0) {
      fprintf(stderr, "run %d: a survivor did not return an error (see above)\n", run);
      return 1;
    }
    double last = 0;
    for (int r = 0; r < NRANKS; r++)
      if (r != plan.victim && times->failed[r] > last) last = times->failed[r];
    latency_ms[run] = (last - times->killed) * 1e3;
    printf("run %2d: killed rank %d; last survivor returned its error %.2f ms later\n", run, plan.victim,
           latency_ms[run]);
  }
  qsort(latency_ms, (size_t)runs, sizeof latency_ms[0], by_value);
  double median = runs % 2 ? latency_ms[runs / 2] : (latency_ms[runs / 2 - 1] + latency_ms[runs / 2]) / 2;
  printf("# median over %d runs: %.2f ms\n", runs, median);
  return 0;
}
