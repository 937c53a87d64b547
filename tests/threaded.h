/* Test bodies that use threads, shared by the Criterion suite and by the ThreadSanitizer runner
 * (Criterion itself does not run under ThreadSanitizer). Each is a harness_body_fn for 2+ ranks. */
#ifndef TALLY_TEST_THREADED_H
#define TALLY_TEST_THREADED_H

#include "tally.h"

/* A watchdog thread aborts a collective that can never finish: it returns TALLY_ERR_ABORTED
 * promptly, and the communicator then refuses collectives. */
int threaded_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg);

/* A collective of blocks, one a rank: an alltoall or an allgather of `count` elements a block. */
struct threaded_blocks {
  int allgather; /* 0: alltoall */
  size_t count;
};
/* Runs `b` on FLOAT32 buffers of n blocks (and one element more past recvbuf's, zeroed) that it
 * allocates; the caller frees them. Without the memory, the rank aborts (its test fails). */
tally_result_t threaded_blocks_call(tally_comm_t comm, int n, const struct threaded_blocks *b, float **send,
                                    float **recv);

/* The same as threaded_abort_from_watchdog in the collective `*(struct threaded_blocks *)arg` (NULL:
 * an alltoall of 1000 elements a block), which rank 1 never joins: on one host the board's (slots,
 * areas or single copy, by size) or pairwise exchange and the ring. */
int threaded_blocks_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg);

/* One communicator used from two threads at once: the second call and a destroy during the first
 * are refused with a message, and the first completes correctly. */
int threaded_one_comm_two_threads(tally_comm_t comm, int rank, int n, void *arg);

/* Several communicators, each created and used by its own thread at the same time, all correct. */
int threaded_comms_in_threads(tally_comm_t comm, int rank, int n, void *arg);

/* The same with groups of sends and recvs (each thread's own group state), every rank sending to every
 * rank, itself included, before it receives. */
int threaded_groups_in_threads(tally_comm_t comm, int rank, int n, void *arg);

/* tally_comm_abort from another thread ends a split or shrink of `comm` (4 ranks) that waits for a
 * rank that stopped taking part, at every phase, with TALLY_ERR_ABORTED within 2 s (TALLY_TIMEOUT
 * being 30 s); `arg` is a struct abort_plan. The caller sets TALLY_TEST_STALL_SPLIT to `absent`
 * when `stall_split` (api/comm_split.c's test hook). */
struct abort_plan {
  int absent;      /* the rank that never calls (or, with stall_split, stops after the parent's allgathers) */
  int stall_split; /* 1: the absent rank calls the split and stalls after its allgathers (the test hook) */
  int shrink;      /* 1: a shrink with nobody excluded instead of a split */
  int early_rank;  /* this rank aborts after 0.3 s, the others after 0.8 s */
};
/* Rank 3 never calls a split: the others wait in the parent's first allgather. */
#define THREADED_ABORT_IN_ALLGATHER ((struct abort_plan){3, 0, 0, 1})
/* Rank 1 stops after the split's allgathers: the others wait building the child. */
#define THREADED_ABORT_BUILDING_CHILD ((struct abort_plan){1, 1, 0, 2})
/* Rank 3 never calls a shrink: the others wait in the bootstrap through rank 0, the root. */
#define THREADED_ABORT_IN_SHRINK ((struct abort_plan){3, 0, 1, 1})
int threaded_abort_while_deriving(tally_comm_t comm, int rank, int n, void *arg);

#endif
