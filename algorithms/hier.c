/* Hierarchical allreduce, for jobs whose hosts run the same number L > 1 of ranks each (the
 * communicator then has a local ring per host and a cross-host ring per local rank, see links.c):
 *
 *   1. reduce-scatter within the host: local rank k ends with block k of the host's sum
 *   2. allreduce of block k across the hosts, on the ring of local rank k: every rank's network
 *      link works at once, each on 1/L of the data
 *   3. allgather within the host
 *
 * What leaves each host over its network link: 2(p-1)/p x S on a flat ring of p ranks (hosts in
 * rank order, one ring edge out of each host), 2(m-1)/m x S here for m hosts, in L streams of
 * S/L each. Only allreduce has a hierarchical form so far; the tuner sends the rest to the ring. */
#include "../src/error.h"
#include "algorithm.h"

static tally_result_t hier_allreduce(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t es = tally_datatype_size(d->datatype), offset, length;
  TALLY_CHECK(tally_ring_blocks(comm, &comm->local, d, d->sendbuf, d->recvbuf, 1, 0, 0));
  tally_ring_block(comm->local.size, comm->local.index, d->count, &offset, &length);
  struct tally_coll_desc shard = *d;
  shard.count = length;
  char *block = (char *)d->recvbuf + offset * es;
  TALLY_CHECK(tally_ring_blocks(comm, &comm->cross, &shard, block, block, 1, 1, d->op == TALLY_AVG));
  return tally_ring_blocks(comm, &comm->local, d, d->recvbuf, d->recvbuf, 0, 1, 0);
}

static tally_result_t hier_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (d->coll != TALLY_COLL_ALLREDUCE || comm->local.size == 0)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "hier: %s on a communicator without hierarchical rings",
                       tally_coll_name(d->coll));
  return hier_allreduce(comm, d);
}

const struct tally_algorithm tally_hier_algorithm = {.name = "hier", .run = hier_run};
