/* failure-latency: how long a blocked collective takes to return once something went wrong.
 *   kill   RUNS jobs of 8 local ranks streaming 1 MiB allreduces; in each, one rank (a different
 *          one each run) records the time and kills itself with SIGKILL, and every survivor
 *          records when its call returned an error. Reports the time from the kill to the last
 *          survivor's error return.
 *   abort  RUNS jobs of 2 ranks where rank 1 never joins an allreduce; a watchdog thread of rank 0
 *          calls tally_comm_abort 100 ms into it. Reports the time from the abort call to the
 *          allreduce's return.
 *   accept RUNS jobs of 3 ranks over TCP (TALLY_TRANSPORT=tcp, TALLY_ALGO=ring, TALLY_TIMEOUT=20):
 *          rank 1 receives from rank 2, which no ring connected to it, so rank 1 waits for rank 2 to
 *          connect; rank 2 kills itself 100 ms later. Reports the time from the kill to the recv's
 *          TALLY_ERR_REMOTE (the waiting rank probes the dead rank's recovery listener).
 * Prints each run and the median. CLOCK_MONOTONIC is shared by all processes of the machine, so
 * the times compare directly.
 * usage: failure-latency [kill|abort|accept] [RUNS]   (default: kill 10) */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

enum { NRANKS = 8, COUNT = 256 * 1024, MAX_RUNS = 1000 };

struct shared_times {
  double killed; /* or aborted */
  double failed[NRANKS];
};

struct run_plan {
  int victim;                 /* kill: the rank that dies; abort: -1 */
  struct shared_times *times; /* shared memory, written by the ranks */
  tally_comm_t comm;          /* abort: the communicator the watchdog aborts */
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

static void *abort_after_100ms(void *arg) {
  struct run_plan *plan = arg;
  usleep(100 * 1000);
  plan->times->killed = harness_now_s();
  tally_comm_abort(plan->comm);
  return NULL;
}

static int abort_blocked_call(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  struct run_plan *plan = arg;
  if (rank == 1) {
    usleep(400 * 1000); /* never joins; leaves after rank 0 has returned */
    return 0;
  }
  plan->comm = comm;
  pthread_t watchdog;
  pthread_create(&watchdog, NULL, abort_after_100ms, plan);
  float x = 1;
  tally_result_t r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  plan->times->failed[0] = harness_now_s();
  pthread_join(watchdog, NULL);
  return r == TALLY_ERR_ABORTED ? 0 : harness_fail(rank, "expected ABORTED, got %s", tally_result_string(r));
}

static int recv_from_dying_rank(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  struct run_plan *plan = arg;
  if (rank == 2) {
    usleep(100 * 1000);
    plan->times->killed = harness_now_s();
    raise(SIGKILL);
  }
  if (rank != 1) return 0;
  int x;
  tally_result_t r = tally_recv(&x, 1, TALLY_INT32, 2, comm, NULL);
  plan->times->failed[1] = harness_now_s();
  return harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 2");
}

enum mode { KILL, ABORT, ACCEPT };

/* One run of `mode`; returns the latency in ms, or a negative value when the run failed. */
static double one_run(enum mode mode, int run, struct shared_times *times) {
  int abort_mode = mode == ABORT;
  struct run_plan plan = {abort_mode ? -1 : (run * 3) % NRANKS, times, NULL};
  *times = (struct shared_times){0};
  if (mode == ACCEPT) {
    if (harness_run_killing(3, 60, recv_from_dying_rank, &plan, 2) != 0) return -1;
    double ms = (times->failed[1] - times->killed) * 1e3;
    printf("run %2d: the recv waiting for dead rank 2 to connect failed %.1f ms after the kill\n", run, ms);
    return ms;
  }
  if (abort_mode) {
    if (harness_run(2, 60, abort_blocked_call, &plan) != 0) return -1;
    double ms = (times->failed[0] - times->killed) * 1e3;
    printf("run %2d: the blocked allreduce returned %.3f ms after tally_comm_abort\n", run, ms);
    return ms;
  }
  if (harness_run_killing(NRANKS, 60, stream_until_failure, &plan, plan.victim) != 0) return -1;
  double last = 0;
  for (int r = 0; r < NRANKS; r++)
    if (r != plan.victim && times->failed[r] > last) last = times->failed[r];
  double ms = (last - times->killed) * 1e3;
  printf("run %2d: killed rank %d; last survivor returned its error %.2f ms later\n", run, plan.victim, ms);
  return ms;
}

int main(int argc, char **argv) {
  static const char *const names[] = {"kill", "abort", "accept"};
  enum mode mode = KILL;
  int named = 0;
  for (int m = 0; m < 3 && argc > 1; m++)
    if (!strcmp(argv[1], names[m])) mode = (enum mode)m, named = 1;
  int runs = argc > 1 + named ? atoi(argv[1 + named]) : 10;
  if (runs < 1 || runs > MAX_RUNS) {
    fprintf(stderr, "usage: failure-latency [kill|abort|accept] [RUNS]   (RUNS from 1 to %d)\n", MAX_RUNS);
    return 2;
  }
  if (mode == ACCEPT) {
    setenv("TALLY_TRANSPORT", "tcp", 1);
    setenv("TALLY_ALGO", "ring", 1); /* rank 2's ring neighbours only: rank 1 never connected from it */
    setenv("TALLY_TIMEOUT", "20", 1);
  }
  struct shared_times *times = mmap(NULL, sizeof *times, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (times == MAP_FAILED) return 1;
  static double latency_ms[MAX_RUNS];
  if (mode == ACCEPT)
    printf("# 3 ranks over TCP, TALLY_TIMEOUT=20: rank 1 waits for rank 2 to connect; rank 2 is killed\n");
  else if (mode == ABORT)
    printf("# 2 ranks, rank 1 never joins the allreduce; rank 0's watchdog thread aborts after 100 ms\n");
  else
    printf("# %d ranks, 1 MiB float allreduces, one rank killed with SIGKILL per run\n", NRANKS);
  for (int run = 0; run < runs; run++) {
    latency_ms[run] = one_run(mode, run, times);
    if (latency_ms[run] < 0) {
      fprintf(stderr, "run %d failed (see above)\n", run);
      return 1;
    }
  }
  qsort(latency_ms, (size_t)runs, sizeof latency_ms[0], by_value);
  double median = runs % 2 ? latency_ms[runs / 2] : (latency_ms[runs / 2 - 1] + latency_ms[runs / 2]) / 2;
  printf("# median over %d runs: %.3f ms\n", runs, median);
  return 0;
}
