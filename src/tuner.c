/* Algorithm selection. TALLY_ALGO=ring forces the flat ring. Otherwise (auto, hier), on
 * communicators with hierarchical rings (several hosts with the same number of ranks, more than
 * one each), allreduce runs hierarchically, and so do allgather and reduce-scatter when the hosts'
 * ranks are contiguous in rank order; small calls (inputs totalling at most
 * TALLY_SMALL_ALLREDUCE_BYTES) stay on the ring, which takes fewer steps, or, when every rank is
 * on one host, go to the host board (one round through shared memory). Allreduces of more than
 * that up to RHD_MAX_BYTES on 4 or more ranks of a job that spans several hosts take recursive
 * halving-doubling (TALLY_ALGO=rhd: every allreduce does). This is where the cost model will choose between ring, tree and
 * halving-doubling per collective, size and rank count. */
#include <string.h>

#include "../algorithms/algorithm.h"
#include "../algorithms/board.h"

/* Where recursive halving-doubling beat the ring on 8 ranks of this 2-core machine over TCP (up to
 * 2 MiB) and shared memory (32 KiB, not 128 KiB); a placeholder for the cost model. */
#define RHD_MAX_BYTES (64 * 1024)

static int halving_doubling(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (desc->coll != TALLY_COLL_ALLREDUCE || !comm->rhd_ready) return 0;
  if (strcmp(comm->cfg.algo, "rhd") == 0) return 1;
  size_t bytes = desc->count * tally_datatype_size(desc->datatype);
  return comm->nranks >= 4 && bytes > TALLY_SMALL_ALLREDUCE_BYTES && bytes <= RHD_MAX_BYTES;
}

static int hierarchical(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t bytes = desc->count * tally_datatype_size(desc->datatype) * (size_t)comm->nranks;
  if (strcmp(comm->cfg.algo, "ring") == 0 || comm->local.size == 0 || bytes <= TALLY_SMALL_ALLREDUCE_BYTES) return 0;
  if (desc->coll == TALLY_COLL_ALLREDUCE) return 1;
  return (desc->coll == TALLY_COLL_ALLGATHER || desc->coll == TALLY_COLL_REDUCE_SCATTER) &&
         tally_hier_hosts_in_rank_order(comm);
}

const struct tally_algorithm *tally_tuner_select(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (strcmp(comm->cfg.algo, "ring") != 0 && strcmp(comm->cfg.algo, "rhd") != 0 && tally_board_suits(comm, desc))
    return &tally_board_algorithm;
  if (halving_doubling(comm, desc)) return &tally_rhd_algorithm;
  return hierarchical(comm, desc) ? &tally_hier_algorithm : &tally_ring_algorithm;
}
