/* The split of large calls on GPU communicators (call_split.h). */
#include "call_split.h"

#include "comm/comm.h"

size_t tally_call_piece_elems(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (!comm->every_rank_has_gpu || comm->cfg.staging_chunk_bytes == 0) return 0;
  if (d->coll != TALLY_COLL_ALLREDUCE && d->coll != TALLY_COLL_BROADCAST && d->coll != TALLY_COLL_REDUCE) return 0;
  size_t es = tally_datatype_size(d->datatype), piece = comm->cfg.staging_chunk_bytes / es;
  return piece > 0 && d->count > 2 * piece ? piece : 0;
}

struct tally_coll_desc tally_call_piece(const struct tally_coll_desc *d, size_t first, size_t elems) {
  size_t offset = first * tally_datatype_size(d->datatype);
  struct tally_coll_desc piece = *d;
  piece.count = elems;
  if (d->sendbuf) piece.sendbuf = (const char *)d->sendbuf + offset;
  if (d->recvbuf) piece.recvbuf = (char *)d->recvbuf + offset;
  return piece;
}
