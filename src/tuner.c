/* Algorithm selection. TALLY_ALGO=ring forces the flat ring; otherwise (auto, hier) allreduce runs
 * hierarchically on communicators that have hierarchical rings (several hosts with the same number
 * of ranks, more than one each), and everything else on the ring. This is where the cost model
 * will choose between ring, tree and halving-doubling per collective, size and rank count. */
#include <string.h>

#include "../algorithms/algorithm.h"

const struct tally_algorithm *tally_tuner_select(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t bytes = desc->count * tally_datatype_size(desc->datatype) * (size_t)comm->nranks;
  if (strcmp(comm->cfg.algo, "ring") != 0 && comm->local.size > 0 && desc->coll == TALLY_COLL_ALLREDUCE &&
      bytes > TALLY_SMALL_ALLREDUCE_BYTES) /* small ones take fewer steps on the ring */
    return &tally_hier_algorithm;
  return &tally_ring_algorithm;
}
