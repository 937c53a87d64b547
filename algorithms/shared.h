/* The shared-buffer algorithm: allreduce, reduce-scatter, allgather and broadcast for a
 * communicator whose ranks all live on one host, through the host board's big areas in rounds
 * separated by board meets (shared.c says how, and what it costs in memory traffic). */
#ifndef TALLY_SHARED_H
#define TALLY_SHARED_H

#include "algorithm.h"

/* Whether `desc` can run on this communicator's board (it has one, and an area holds what a
 * round needs). */
int tally_shared_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc);

extern const struct tally_algorithm tally_shared_algorithm;

#endif
