/* Hierarchical collectives, for jobs whose hosts run the same number L > 1 of ranks each (the
 * communicator then has a local ring per host and a cross-host ring per local rank, see src/comm/links.c).
 *
 * allreduce (any rank placement):
 *   1. reduce-scatter within the host: local rank l ends with block l of the host's sum
 *   2. allreduce of block l across the hosts, on the ring of local rank l: every rank's network
 *      link works at once, each on 1/L of the data
 *   3. allgather within the host
 *
 * allgather and reduce-scatter (hosts in rank order: host h runs ranks hL .. hL+L-1, so host h's
 * part of the buffer, its region, is contiguous; piece l of a region is rank hL+l's block):
 *   allgather       1. allgather of this host's region within the host
 *                   2. allgather of piece l of every region across the hosts, on ring l
 *                   3. allgather of every other host's region within the host
 *   reduce-scatter  the same steps backwards, reducing: each region's pieces summed within the
 *                   host, then piece l of every region summed across the hosts on ring l
 *
 * What leaves each host over its network link drops from 2(p-1)/p x S (allreduce on a flat ring
 * of p ranks, hosts in rank order) to 2(m-1)/m x S for m hosts, in L streams; for allgather and
 * reduce-scatter from (p-1) to (m-1) x L blocks. Broadcast and reduce use the flat chain, which
 * with hosts in rank order already crosses each host boundary once.
 *
 * alltoall (hosts in rank order; rank (h, l) is rank hL+l):
 *   1. within the host, rank (h, l) sends local rank l' the m blocks it has for ranks (*, l'), one
 *      message per local pair; local rank l' then holds, for every host h', the L blocks that host
 *      h's ranks send to rank (h', l')
 *   2. across the hosts, between ranks of the same local index: rank (h, l') sends those L blocks to
 *      rank (h', l') in one message, which lands as is in recvbuf's blocks h'L .. h'L+L-1
 * Each host pair carries L messages of L blocks (one per local index, every rank's link busy)
 * where the flat pairwise exchange sends L x L messages of one block; every block crosses the
 * network once, and the host's own memory copies it twice more. */
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/wire.h"
#include "p2p.h"

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

int tally_hier_hosts_in_rank_order(const struct tally_comm *comm) {
  int per_host = comm->local.size;
  for (int r = 0; per_host > 0 && r < comm->nranks; r++)
    if (comm->topo.host_index[r] != r / per_host || comm->topo.local_rank[r] != r % per_host) return 0;
  return per_host > 0;
}

/* A descriptor for one host's region (L blocks of d->count elements): same fingerprint, so a rank
 * that called with another count still disagrees in the headers. */
static struct tally_coll_desc region_desc(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  struct tally_coll_desc region = *d;
  region.count = d->count * (size_t)comm->local.size;
  return region;
}

static tally_result_t hier_allgather(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t block = d->count * tally_datatype_size(d->datatype), region = block * (size_t)comm->local.size;
  char *all = d->recvbuf;
  char *mine = all + (size_t)comm->rank * block;
  if (d->sendbuf != mine) memcpy(mine, d->sendbuf, block);
  struct tally_coll_desc in_host = region_desc(comm, d);
  int host = comm->cross.index, hosts = comm->cross.size;
  char *my_region = all + (size_t)host * region;
  TALLY_CHECK(tally_ring_blocks(comm, &comm->local, &in_host, my_region, my_region, 0, 1, 0));
  char *my_pieces = all + (size_t)comm->local.index * block;
  TALLY_CHECK(tally_ring_strided(comm, &comm->cross, d, my_pieces, my_pieces, in_host.count, d->count, 0, 1, 0));
  for (int h = 0; h < hosts; h++) {
    char *other = all + (size_t)h * region;
    if (h != host) TALLY_CHECK(tally_ring_blocks(comm, &comm->local, &in_host, other, other, 0, 1, 0));
  }
  return TALLY_SUCCESS;
}

static tally_result_t hier_reduce_scatter(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t block = d->count * tally_datatype_size(d->datatype), region = block * (size_t)comm->local.size;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, region * (size_t)comm->cross.size));
  char *sums = comm->scratch;
  const char *inputs = d->sendbuf;
  struct tally_coll_desc in_host = region_desc(comm, d);
  for (int h = 0; h < comm->cross.size; h++) /* piece l of each region: its host's sum */
    TALLY_CHECK(tally_ring_blocks(comm, &comm->local, &in_host, inputs + (size_t)h * region, sums + (size_t)h * region,
                                  1, 0, 0));
  char *my_pieces = sums + (size_t)comm->local.index * block;
  TALLY_CHECK(tally_ring_strided(comm, &comm->cross, d, my_pieces, my_pieces, in_host.count, d->count, 1, 0,
                                 d->op == TALLY_AVG));
  memcpy(d->recvbuf, sums + (size_t)comm->rank * block, block);
  return TALLY_SUCCESS;
}

/* Scratch: [out: L messages of m blocks][in: the same][by host: m messages of L blocks]. */
static tally_result_t hier_alltoall(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int L = comm->local.size, m = comm->nranks / L, l = comm->rank % L, host = comm->rank / L;
  size_t block = d->count * tally_datatype_size(d->datatype), all = block * (size_t)comm->nranks;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, 3 * all));
  char *out = comm->scratch, *in = out + all, *by_host = in + all;
  const char *send = d->sendbuf;
  for (int to = 0; to < L; to++) /* out[to][h'] = the block for rank (h', to) */
    for (int h = 0; h < m; h++) memcpy(out + ((size_t)to * m + h) * block, send + ((size_t)h * L + to) * block, block);
  struct tally_msg_header hdr;
  tally_header_fill(&hdr, d, comm->seq);
  hdr.index = 1;
  TALLY_CHECK(tally_p2p_exchange_all(comm, &hdr, host * L, 1, L, out, in, (size_t)m * block));
  for (int from = 0; from < L; from++) /* by_host[h'][from] = in[from][h'] */
    for (int h = 0; h < m; h++)
      memcpy(by_host + ((size_t)h * L + from) * block, in + ((size_t)from * m + h) * block, block);
  hdr.index = 2;
  return tally_p2p_exchange_all(comm, &hdr, l, L, m, by_host, d->recvbuf, (size_t)L * block);
}

static tally_result_t hier_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (comm->local.size == 0)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "hier: %s on a communicator without hierarchical rings",
                       tally_coll_name(d->coll));
  switch (d->coll) {
    case TALLY_COLL_ALLREDUCE: return hier_allreduce(comm, d);
    case TALLY_COLL_ALLGATHER: return hier_allgather(comm, d);
    case TALLY_COLL_REDUCE_SCATTER: return hier_reduce_scatter(comm, d);
    case TALLY_COLL_ALLTOALL: return hier_alltoall(comm, d);
    default: break;
  }
  return TALLY_ERROR(TALLY_ERR_INTERNAL, "hier: no hierarchical %s", tally_coll_name(d->coll));
}

const struct tally_algorithm tally_hier_algorithm = {.name = "hier", .id = TALLY_ALGO_HIER, .run = hier_run};
