/* Gather (every rank's block to the root, in rank order) and scatter (the reverse), two ways:
 *   direct    every block goes straight to or from the root, all messages posted at once: each
 *             byte crosses one link, the root pays one message per rank;
 *   binomial  a binomial tree over the ranks numbered from the root (v = rank - root mod p): in
 *             gather, at level k (k = 1, 2, 4, ...) rank v with bit k set sends the blocks it has
 *             collected (v .. v+k-1) to rank v-k and is done, the others receive from v+k; scatter
 *             runs the levels in reverse. log2 p messages on the root's path instead of p-1, but
 *             blocks are forwarded by the ranks between: the choice for small blocks.
 * The root's own block is a message to itself (direct) or a copy (binomial), so in place works. */
#include <stdlib.h>
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/wire.h"
#include "p2p.h"

static tally_result_t direct_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks, root = d->root, gather = d->coll == TALLY_COLL_GATHER;
  if (!gather && d->coll != TALLY_COLL_SCATTER)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "direct runs gather and scatter, not %s", tally_coll_name(d->coll));
  size_t block = d->count * tally_datatype_size(d->datatype);
  struct tally_msg_header h;
  tally_header_fill(&h, d, comm->seq);
  if (comm->rank != root) {
    int failed_call;
    struct tally_p2p_msg m = {.peer = root, .is_send = gather, .bytes = block, .hdr = h};
    m.buf = gather ? (void *)d->sendbuf : d->recvbuf;
    return tally_p2p_run(comm, &m, 1, &failed_call);
  }
  struct tally_p2p_msg *msgs = malloc(((size_t)n + 1) * sizeof *msgs);
  if (!msgs)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the %d messages of a %s", n + 1, tally_coll_name(d->coll));
  /* the root's own block first, both ways, then the others from the root's neighbour on */
  msgs[0] = (struct tally_p2p_msg){.peer = root, .is_send = gather, .bytes = block, .hdr = h};
  msgs[0].buf = gather ? (void *)d->sendbuf : d->recvbuf;
  for (int k = 0; k < n; k++) {
    int peer = (root + k) % n;
    char *at = (char *)(gather ? d->recvbuf : (void *)d->sendbuf) + (size_t)peer * block;
    msgs[k + 1] = (struct tally_p2p_msg){.peer = peer, .is_send = !gather, .buf = at, .bytes = block, .hdr = h};
  }
  int failed_call;
  tally_result_t r = tally_p2p_run(comm, msgs, n + 1, &failed_call);
  free(msgs);
  return r;
}

const struct tally_algorithm tally_direct_algorithm = {.name = "direct", .id = TALLY_ALGO_DIRECT, .run = direct_run};

static int min_int(int a, int b) { return a < b ? a : b; }

static tally_result_t binomial_gather(struct tally_comm *comm, const struct tally_coll_desc *d,
                                      struct tally_msg_header *h, size_t block, char *tree) {
  int n = comm->nranks, v = (comm->rank - d->root + n) % n;
  memcpy(tree, d->sendbuf, block);
  for (int k = 1; k < n; k *= 2) {
    h->index = (uint64_t)k;
    int parent = (comm->rank - k + n) % n, child = (comm->rank + k) % n;
    if (v & k) /* send what this subtree gathered (blocks v .. v+k-1 that exist) to v-k, and stop */
      return tally_p2p_exchange(comm, h, parent, tree, (size_t)min_int(k, n - v) * block, -1, NULL, 0);
    if (v + k < n)
      TALLY_CHECK(tally_p2p_exchange(comm, h, -1, NULL, 0, child, tree + (size_t)k * block,
                                     (size_t)min_int(k, n - v - k) * block));
  }
  return TALLY_SUCCESS;
}

static tally_result_t binomial_scatter(struct tally_comm *comm, const struct tally_coll_desc *d,
                                       struct tally_msg_header *h, size_t block, char *tree) {
  int n = comm->nranks, v = (comm->rank - d->root + n) % n;
  int k = 1; /* the root starts at the top level; rank v receives at its lowest set bit */
  while (k < n && !(v & k)) k *= 2;
  if (v != 0) {
    h->index = (uint64_t)k;
    TALLY_CHECK(
        tally_p2p_exchange(comm, h, -1, NULL, 0, (comm->rank - k + n) % n, tree, (size_t)min_int(k, n - v) * block));
  }
  for (k /= 2; k >= 1; k /= 2) {
    if (v + k >= n) continue;
    h->index = (uint64_t)k;
    TALLY_CHECK(tally_p2p_exchange(comm, h, (comm->rank + k) % n, tree + (size_t)k * block,
                                   (size_t)min_int(k, n - v - k) * block, -1, NULL, 0));
  }
  memcpy(d->recvbuf, tree, block);
  return TALLY_SUCCESS;
}

/* The blocks in tree order live in scratch memory (the root's n, another rank's subtree). */
static tally_result_t binomial_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks, root = comm->rank == d->root, gather = d->coll == TALLY_COLL_GATHER;
  if (!gather && d->coll != TALLY_COLL_SCATTER)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "binomial runs gather and scatter, not %s", tally_coll_name(d->coll));
  size_t block = d->count * tally_datatype_size(d->datatype);
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, block * (size_t)n));
  char *tree = comm->scratch;
  struct tally_msg_header h;
  tally_header_fill(&h, d, comm->seq);
  if (!gather && root) tally_blocks_rotate(tree, d->sendbuf, n, d->root, block); /* tree[i]: rank root+i's */
  TALLY_CHECK(gather ? binomial_gather(comm, d, &h, block, tree) : binomial_scatter(comm, d, &h, block, tree));
  if (gather && root) tally_blocks_rotate(d->recvbuf, tree, n, n - d->root, block);
  return TALLY_SUCCESS;
}

const struct tally_algorithm tally_binomial_algorithm = {
    .name = "binomial", .id = TALLY_ALGO_BINOMIAL, .run = binomial_run};
