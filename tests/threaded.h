/* Test bodies that use threads, shared by the Criterion suite and by the ThreadSanitizer runner
 * (Criterion itself does not run under ThreadSanitizer). Each is a harness_body_fn for 2+ ranks. */
#ifndef TALLY_TEST_THREADED_H
#define TALLY_TEST_THREADED_H

#include "tally.h"

/* A watchdog thread aborts a collective that can never finish: it returns TALLY_ERR_ABORTED
 * promptly, and the communicator then refuses collectives. */
int threaded_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg);

/* The same in an alltoall of `*(size_t *)arg` elements a block (NULL: 1000), which rank 1 never
 * joins: on one host the board's (slots, areas or single copy, by size) or pairwise exchange. */
int threaded_alltoall_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg);

/* One communicator used from two threads at once: the second call and a destroy during the first
 * are refused with a message, and the first completes correctly. */
int threaded_one_comm_two_threads(tally_comm_t comm, int rank, int n, void *arg);

/* Several communicators, each created and used by its own thread at the same time, all correct. */
int threaded_comms_in_threads(tally_comm_t comm, int rank, int n, void *arg);

/* The same with groups of sends and recvs (each thread's own group state), every rank sending to every
 * rank, itself included, before it receives. */
int threaded_groups_in_threads(tally_comm_t comm, int rank, int n, void *arg);

#endif
