/* Point-to-point test bodies shared by the suites of every transport (test_p2p.c, test_verbs.c):
 * harness bodies (harness.h) that return 0 when every byte arrived where it should. Payloads are
 * byte patterns naming their sender, receiver and message, so a misdelivered byte is caught. */
#ifndef TALLY_TEST_P2P_CASES_H
#define TALLY_TEST_P2P_CASES_H

#include <stddef.h>

#include "tally.h"

/* Fills `bytes` with the pattern of message `msg` from `src` to `dst`; checks it (0, or 1 after
 * printing where it differs). */
void p2p_fill(void *buf, size_t bytes, int src, int dst, int msg);
int p2p_check(int rank, const char *what, const void *buf, size_t bytes, int src, int dst, int msg);

/* Every rank sends to the next and receives from the previous: in groups for every datatype and
 * count, then blocking 4 MiB exchanges; then an allreduce still lines up. */
int p2p_ring_exchange(tally_comm_t comm, int rank, int n, void *arg);

/* alltoall for every datatype and count, in and out of place, and alltoallv with zero counts and
 * displacements that matter. */
int p2p_alltoall_cases(tally_comm_t comm, int rank, int n, void *arg);

/* alltoall of every datatype, in and out of place, with blocks of 20 KB to 560 KB (two counts). */
int p2p_alltoall_large_cases(tally_comm_t comm, int rank, int n, void *arg);

/* gather and scatter from every root, every count, in place at the root and not. */
int p2p_rooted_cases(tally_comm_t comm, int rank, int n, void *arg);

#endif
