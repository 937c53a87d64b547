/* The shared-buffer algorithm: allreduce, reduce-scatter, allgather, broadcast and alltoall for a
 * communicator whose ranks all live on one host, through the host board's big areas in rounds
 * separated by board meets (shared.c says how, and what it costs in memory traffic). */
#ifndef TALLY_SHARED_H
#define TALLY_SHARED_H

#include "algorithm.h"

/* Whether `desc` can run on this communicator's board (it has one, and an area holds what a
 * round needs). */
int tally_shared_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc);

/* Alltoall blocks of at least this many bytes are read straight from the other ranks' sendbufs
 * (process_vm_readv) where the board allows it, in place of two copies through the areas. */
#define TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES (128 * 1024)

/* Whether the shared-buffer alltoall `desc` takes the single-copy form (shared.c). */
int tally_shared_alltoall_single_copy(const struct tally_comm *comm, const struct tally_coll_desc *desc);

extern const struct tally_algorithm tally_shared_algorithm;

#endif
