/* The algorithm table: each algorithm turns a collective descriptor into steps on the
 * communicator's connections. The tuner (tuning/tuner.h) picks one per call; TALLY_ALGO forces one.
 * Algorithms use the core, the communicator and the transport vtable below them, never the tuner:
 * what the tuner decided for a call travels in its descriptor (chunk_bytes, rhd_whole_vector). */
#ifndef TALLY_ALGORITHM_H
#define TALLY_ALGORITHM_H

#include "comm/comm.h"
#include "core/algo_spec.h"
#include "core/descriptor.h"

struct tally_algorithm {
  const char *name;
  enum tally_algo_id id;
  /* Runs the collective; nranks >= 2 and count > 0 (the API layer handles the trivial cases). */
  tally_result_t (*run)(struct tally_comm *comm, const struct tally_coll_desc *desc);
};

extern const struct tally_algorithm tally_ring_algorithm;

/* The pipelining chunk of call `d`: the tuner's choice, else TALLY_CHUNK_BYTES. */
static inline size_t tally_chunk_bytes(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  return d->chunk_bytes ? d->chunk_bytes : comm->cfg.chunk_bytes;
}

/* Allreduces whose inputs total at most this many bytes over all ranks gather every input around
 * the ring and reduce locally: n-1 message steps instead of 2(n-1), which is what small messages
 * pay for (measured on 2 and 8 ranks: the gathered form wins up to about this size). */
#define TALLY_SMALL_ALLREDUCE_BYTES 8192
extern const struct tally_algorithm tally_hier_algorithm;
/* Whether host h runs ranks h*L .. h*L+L-1 (what hierarchical allgather and reduce-scatter need). */
int tally_hier_hosts_in_rank_order(const struct tally_comm *comm);

/* The ring schedule, for composing algorithms: `d->count` elements split into ring->size blocks
 * (tally_ring_block), reduce-scatter steps when `reduce` (this rank's block, index ring->index,
 * then holds the reduction over the ring; divided by the communicator's size when `average`),
 * then allgather steps when `gather`. Headers carry d's fingerprint. */
tally_result_t tally_ring_blocks(struct tally_comm *comm, const struct tally_ring *ring, const struct tally_coll_desc *d,
                                 const void *send, void *recv, int reduce, int gather, int average);
/* The same schedule over strided blocks: block k is `length` elements at k * stride (elements)
 * from send and recv, for instance the same piece of every host's region of a buffer. */
tally_result_t tally_ring_strided(struct tally_comm *comm, const struct tally_ring *ring, const struct tally_coll_desc *d,
                                  const void *send, void *recv, size_t stride, size_t length, int reduce, int gather,
                                  int average);
/* Block k of `nblocks` over `count` elements: its first element and its length. */
void tally_ring_block(int nblocks, int k, size_t count, size_t *offset, size_t *length);

extern const struct tally_algorithm tally_rhd_algorithm;
/* Whether halving-doubling runs `d`: allreduce, allgather and reduce-scatter, on any number of
 * ranks (beyond the largest power of two, the extra ranks fold into a partner and sit out). */
int tally_rhd_suits(const struct tally_comm *comm, const struct tally_coll_desc *d);
/* The ranks `rank` exchanges with in recursive halving-doubling on `nranks` ranks (at most 2 + 31 of
 * them, written to `partners`); the communicator connects to each both ways at init. */
int tally_rhd_partners(int rank, int nranks, int *partners);

extern const struct tally_algorithm tally_tree_algorithm;
/* Tree broadcast and reduce need every rank connected to both trees' roots, which have a connection
 * to every rank: only communicators up to this size get them. */
#define TALLY_TREE_ROOTED_MAX_RANKS 32
/* Whether the double binary tree runs `d`: allreduce once the trees are connected, broadcast and
 * reduce once the roots are too. */
int tally_tree_suits(const struct tally_comm *comm, const struct tally_coll_desc *d);
/* The ranks `rank` exchanges with in the two trees on `nranks` ranks, with the trees' roots (and, for
 * a root, every other rank) when `rooted`: at most 6 + 2 (nranks - 1), written to `partners`, maybe
 * with repeats. */
int tally_tree_partners(int rank, int nranks, int rooted, int *partners);

/* Alltoall (alltoall.c): every block straight to its rank, or Bruck's log2 p packed exchanges. */
extern const struct tally_algorithm tally_pairwise_algorithm;
extern const struct tally_algorithm tally_bruck_algorithm;
/* Gather and scatter (gather_scatter.c): every block straight to or from the root, or a binomial tree. */
extern const struct tally_algorithm tally_direct_algorithm;
extern const struct tally_algorithm tally_binomial_algorithm;

#endif
