/* Alltoall (block j of rank i's sendbuf lands in block i of rank j's recvbuf), two ways:
 *   pairwise  every block goes straight to its rank: the p-1 exchanges of the pairwise schedule
 *             (rank r sends to r+k and receives from r-k at step k) are all posted at once, in
 *             that order, so that no step waits for a slow peer and not every rank starts with
 *             rank 0; one message per pair, the bytes cross the link once;
 *   bruck     Bruck's algorithm: log2 p exchanges, at step k (k = 1, 2, 4, ...) the blocks whose
 *             index has bit k go to rank r+k in one packed message. Each block travels up to
 *             log2 p times, but a rank sends log2 p messages instead of p-1: the choice for small
 *             blocks, where a message's fixed cost dominates.
 * The hierarchical form is in hier.c. Every message carries the call's fingerprint, its index the
 * step, so a rank that called a different alltoall (or chose differently) gets TALLY_ERR_MISMATCH. */
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/wire.h"
#include "p2p.h"

static tally_result_t pairwise_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks;
  size_t block = d->count * tally_datatype_size(d->datatype);
  const char *send = d->sendbuf;
  if (d->sendbuf == d->recvbuf) { /* in place: the sends read a copy that the receives cannot overwrite */
    TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, block * (size_t)n));
    memcpy(comm->scratch, d->sendbuf, block * (size_t)n);
    send = comm->scratch;
  }
  struct tally_msg_header h;
  tally_header_fill(&h, d, comm->seq);
  return tally_p2p_exchange_all(comm, &h, 0, 1, n, send, d->recvbuf, block);
}

const struct tally_algorithm tally_pairwise_algorithm = {
    .name = "pairwise", .id = TALLY_ALGO_PAIRWISE, .run = pairwise_run};

/* Bruck's schedule on scratch memory laid out as [rotated: n blocks][packed out][packed in]. */
static tally_result_t bruck_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks, rank = comm->rank;
  size_t block = d->count * tally_datatype_size(d->datatype), half = (size_t)(n + 1) / 2;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, block * ((size_t)n + 2 * half)));
  char *rotated = comm->scratch, *out = rotated + block * (size_t)n, *in = out + block * half;
  tally_blocks_rotate(rotated, d->sendbuf, n, rank, block); /* rotated[i]: the block for rank + i */
  struct tally_msg_header h;
  tally_header_fill(&h, d, comm->seq);
  for (int k = 1; k < n; k *= 2) {
    size_t packed = 0;
    for (int i = k; i < n; i++)
      if (i & k) memcpy(out + packed++ * block, rotated + (size_t)i * block, block);
    h.index = (uint64_t)k;
    TALLY_CHECK(
        tally_p2p_exchange(comm, &h, (rank + k) % n, out, packed * block, (rank - k + n) % n, in, packed * block));
    packed = 0;
    for (int i = k; i < n; i++)
      if (i & k) memcpy(rotated + (size_t)i * block, in + packed++ * block, block);
  }
  /* rotated[i] now holds what rank (rank - i) sent to this rank */
  for (int i = 0; i < n; i++)
    memcpy((char *)d->recvbuf + (size_t)((rank - i + n) % n) * block, rotated + (size_t)i * block, block);
  return TALLY_SUCCESS;
}

const struct tally_algorithm tally_bruck_algorithm = {.name = "bruck", .id = TALLY_ALGO_BRUCK, .run = bruck_run};
