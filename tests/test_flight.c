/* The flight recorder (src/comm/flight.h): a job in which one rank stalls times out, and the
 * records the waiting ranks write to TALLY_FLIGHT_DIR name the calls that completed, the one that
 * failed and the rank it was waiting for; TALLY_FLIGHT_RECORDS bounds them, 0 turns them off;
 * TALLY_FLIGHT_SIGNAL=1 makes SIGUSR1 write them, and without it SIGUSR1 is left alone. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Ten small allreduces, then rank 2 sleeps past the others' TALLY_TIMEOUT instead of calling the
 * eleventh. */
static int stall_on_rank_2(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float x[1024] = {0};
  for (int i = 0; i < 10; i++)
    if (tally_allreduce(x, x, 1024, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "allreduce %d: %s", i, tally_comm_last_error(comm));
  if (rank == 2) {
    sleep(4);
    return 0;
  }
  if (tally_allreduce(x, x, 1024, TALLY_FLOAT32, TALLY_SUM, comm, NULL) == TALLY_SUCCESS)
    return harness_fail(rank, "the allreduce without rank 2 succeeded");
  return 0;
}

/* The text of the one file in `dir` whose name ends with "-RANK.txt", or "" (static buffer). */
static const char *flight_file(const char *dir, int rank) {
  static char text[16384];
  char suffix[32], path[512];
  snprintf(suffix, sizeof suffix, "-%d.txt", rank);
  text[0] = '\0';
  DIR *d = opendir(dir);
  if (!d) return text;
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name), slen = strlen(suffix);
    if (len < slen || strcmp(e->d_name + len - slen, suffix) || strncmp(e->d_name, "tally-flight-", 13)) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(text, 1, sizeof text - 1, f);
    text[got] = '\0';
    fclose(f);
  }
  closedir(d);
  return text;
}

static void run_stalled_job(const char *dir, const char *records) {
  setenv("TALLY_FLIGHT_DIR", dir, 1);
  setenv("TALLY_FLIGHT_RECORDS", records, 1);
  setenv("TALLY_TIMEOUT", "1.5", 1);
  setenv("TALLY_ALGO", "ring", 1);
  int failed = harness_run(3, 60, stall_on_rank_2, NULL);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
  unsetenv("TALLY_FLIGHT_RECORDS");
  unsetenv("TALLY_FLIGHT_DIR");
  cr_assert_eq(failed, 0);
}

Test(flight, records_of_a_timeout_point_at_the_stalled_rank) {
  char dir[] = "/tmp/tally-flight-XXXXXX";
  cr_assert(mkdtemp(dir));
  run_stalled_job(dir, "64");
  const char *rank0 = flight_file(dir, 0);
  /* the ring's rank 0 waits on rank 2, its previous rank */
  cr_assert(strstr(rank0, "rank 0 of 3"), "rank 0's records: %s", rank0);
  /* a 4 KiB call's duration is in the records one call in 16 (dispatch.c); one that waited has it */
  cr_assert(strstr(rank0, "#9 allreduce ring count 1024 float: done"), "%s", rank0);
  cr_assert(strstr(rank0, "#10 allreduce ring count 1024 float: failed after"), "%s", rank0);
  cr_assert(strstr(rank0, "last waiting for rank 2"), "%s", rank0);
  cr_assert(strstr(rank0, "timed out"), "the failure's message is missing: %s", rank0);
  cr_assert(strlen(flight_file(dir, 1)) > 0, "rank 1 wrote no records");
  cr_assert_eq(strlen(flight_file(dir, 2)), 0, "rank 2 did not fail, yet wrote records");
  /* merged, the records of all ranks point at rank 2 */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "%s/tools/tally-trace flight '%s' | grep -q -- '-> rank 2 wrote no records, and ranks 0, 1'",
           TALLY_SOURCE_DIR, dir);
  cr_assert_eq(system(cmd), 0, "tally-trace flight does not point at rank 2");
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

Test(flight, records_are_bounded_and_can_be_turned_off) {
  char dir[] = "/tmp/tally-flight-XXXXXX";
  cr_assert(mkdtemp(dir));
  run_stalled_job(dir, "3"); /* the calls #8, #9 and the failed #10 */
  const char *rank0 = flight_file(dir, 0);
  cr_assert(strstr(rank0, "#8 allreduce") && !strstr(rank0, "#7 allreduce"), "%s", rank0);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -f '%s'/*", dir);
  cr_assert_eq(system(cmd), 0);
  run_stalled_job(dir, "0");
  cr_assert_eq(strlen(flight_file(dir, 0)), 0, "TALLY_FLIGHT_RECORDS=0 still wrote records");
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

/* TALLY_FLIGHT_SIGNAL=1: rank 2 sleeps instead of joining allreduce #5; meanwhile a thread of
 * rank 0 sends its own process SIGUSR1, and the records it writes show #5 running, waiting for
 * rank 2. The job then completes: the signal disturbs nothing. */
struct signal_job {
  const char *dir;
};

static void *signal_later(void *arg) {
  (void)arg;
  usleep(1500 * 1000);
  kill(getpid(), SIGUSR1);
  return NULL;
}

static int stuck_rank_2_and_a_signal(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  const struct signal_job *job = arg;
  float x[256] = {0};
  for (int i = 0; i < 5; i++)
    if (tally_allreduce(x, x, 256, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(rank, "allreduce %d: %s", i, tally_comm_last_error(comm));
  pthread_t signaller;
  if (rank == 0 && pthread_create(&signaller, NULL, signal_later, NULL) != 0) return harness_fail(rank, "thread");
  if (rank == 2) sleep(3);
  if (tally_allreduce(x, x, 256, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "allreduce #5: %s", tally_comm_last_error(comm));
  if (rank != 0) return 0;
  pthread_join(signaller, NULL);
  const char *text = flight_file(job->dir, 0);
  if (!strstr(text, "SIGUSR1")) return harness_fail(rank, "no records after SIGUSR1: '%s'", text);
  if (!strstr(text, "#4 allreduce ring count 256 float: done"))
    return harness_fail(rank, "call #4 is not recorded done: %s", text);
  if (!strstr(text, "#5 allreduce ring count 256 float: running for") || !strstr(text, "last waiting for rank 2"))
    return harness_fail(rank, "call #5 is not recorded running, waiting for rank 2: %s", text);
  return 0;
}

Test(flight, sigusr1_writes_the_records_of_a_stuck_job) {
  char dir[] = "/tmp/tally-flight-XXXXXX";
  cr_assert(mkdtemp(dir));
  struct signal_job job = {dir};
  setenv("TALLY_FLIGHT_DIR", dir, 1);
  setenv("TALLY_FLIGHT_SIGNAL", "1", 1);
  setenv("TALLY_ALGO", "ring", 1);
  int failed = harness_run(3, 60, stuck_rank_2_and_a_signal, &job);
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_FLIGHT_SIGNAL");
  unsetenv("TALLY_FLIGHT_DIR");
  cr_assert_eq(failed, 0);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

/* Without TALLY_FLIGHT_SIGNAL the library leaves SIGUSR1 alone. */
static int sigusr1_untouched(tally_comm_t comm, int rank, int n, void *arg) {
  (void)comm, (void)n, (void)arg;
  struct sigaction now;
  if (sigaction(SIGUSR1, NULL, &now) != 0) return harness_fail(rank, "sigaction");
  if (now.sa_handler != SIG_DFL) return harness_fail(rank, "SIGUSR1 has a handler without TALLY_FLIGHT_SIGNAL");
  return 0;
}

Test(flight, sigusr1_is_left_alone_by_default) { cr_assert_eq(harness_run(2, 60, sigusr1_untouched, NULL), 0); }
