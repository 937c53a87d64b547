/* Multi-process test harness: forks N rank processes that build one communicator (rank 0 makes the
 * unique id and hands it to the others through a pipe), run a body, and report through their exit
 * status. Every run has a deadline: ranks still alive after it are killed and the run fails. */
#ifndef TALLY_TEST_HARNESS_H
#define TALLY_TEST_HARNESS_H

#include "tally.h"

/* Returns 0 on success; a non-zero value is a failure message already printed to stderr. */
typedef int (*harness_body_fn)(tally_comm_t comm, int rank, int nranks, void *arg);

/* Runs body on nranks ranks; returns 0 when every rank exited 0 before deadline_s. */
int harness_run(int nranks, double deadline_s, harness_body_fn body, void *arg);

/* Like harness_run, but the ranks claim to live on several hosts (TALLY_HOSTID): rank r on host
 * r / ranks_per_host. */
int harness_run_on_hosts(int nranks, int ranks_per_host, double deadline_s, harness_body_fn body, void *arg);

/* Like harness_run, but rank `victim` is expected to kill itself with SIGKILL. */
int harness_run_killing(int nranks, double deadline_s, harness_body_fn body, void *arg, int victim);

/* Like harness_run, but rank r runs bodies[r] with no communicator made for it (for tests of init). */
typedef int (*harness_raw_fn)(int rank, int nranks, const tally_unique_id_t *id, void *arg);
int harness_run_raw(int nranks, double deadline_s, harness_raw_fn body, void *arg);

/* Like harness_run_killing (victim -1: none), with `nnew` more processes, newcomers, that wait until
 * a rank hands them an id with harness_send_id and then run newcomer(index, nnew, &id, arg), index
 * 0..nnew-1 (for tally_comm_join). A newcomer that never gets an id fails once the ranks exit. */
int harness_run_growing(int nranks, int nnew, double deadline_s, harness_body_fn body, harness_raw_fn newcomer,
                        void *arg, int victim);
/* In a rank of harness_run_growing: sends `id` to every newcomer; 0, or -1 when it could not. */
int harness_send_id(const tally_unique_id_t *id);

/* With `on`, binds this process, and so the ranks it starts from then on, to the one CPU it runs on,
 * so that ranks share a core (the library's cores_shared) on any machine; without, restores the
 * binding it had. 0, or -1 (errno set) when the binding cannot be changed. */
int harness_share_one_cpu(int on);

/* CLOCK_MONOTONIC in seconds: one clock for every process of the machine. */
double harness_now_s(void);

/* Prints "rank R: what" to stderr and returns 1, for use in bodies: `return fail(rank, ...)`. */
int harness_fail(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks that `got` is `want` and that the communicator's last error (the thread's when comm is
 * NULL) contains `needle`; returns 0, or 1 after printing what differs. */
int harness_expect(int rank, tally_comm_t comm, tally_result_t got, tally_result_t want, const char *needle);

#endif
