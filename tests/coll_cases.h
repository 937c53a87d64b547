/* The body every transport's correctness test runs: every collective, datatype and op against an
 * exact reference, counts 0, 1 and primes, a multi-MiB buffer, in place and out of place, several
 * roots. A harness body (harness.h): returns 0 when every result was right. */
#ifndef TALLY_TEST_COLL_CASES_H
#define TALLY_TEST_COLL_CASES_H

#include "tally.h"

/* `arg`: NULL for every collective, or a collective's name ("allreduce", "allgather",
 * "reduce_scatter", "broadcast", "reduce") to run that one's cases only. */
int coll_all_cases(tally_comm_t comm, int rank, int n, void *arg);

#endif
