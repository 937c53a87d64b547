/* The shared-buffer algorithm (shared.h): allreduce, reduce-scatter, allgather and broadcast for
 * ranks that all live on one host, through the big areas of the host board (comm/board_page.h),
 * in rounds of at most one area per rank. Each round has two phases separated by a board meet
 * (tally_board_meet, a barrier that also checks every rank runs the same call):
 *
 *   allreduce       1: copy the others' slices of this round's piece of the input into my area
 *                   2: reduce my 1/p slice from the others' areas and my sendbuf, in rank order,
 *                      into the results' area
 *                   3: copy the whole piece out of the results' area
 *   reduce-scatter  1: copy this round's piece of each of the others' blocks into my area
 *                   2: reduce my block's pieces from the others' areas and my sendbuf straight
 *                      into recvbuf
 *   allgather       1: copy this round's piece of my block into my area
 *                   2: copy every rank's piece out to its block of recvbuf
 *                   or, where every rank has a core of its own and may read the others' memory
 *                   (comm->board->cma) and all the ranks' outputs stay below the last-level
 *                   cache, in one round:
 *                   1: post my sendbuf's address on the board
 *                   2: read every other rank's block with process_vm_readv, copy mine
 *   broadcast       1: the root copies this round's piece into one of two areas
 *                   2: the others copy it out, while the root copies the next piece into the other
 *   alltoall        1: copy this round's piece of each of the p blocks into one half of my area
 *                   2: copy my block's piece out of every rank's area into recvbuf, while the
 *                      next round's phase 1 fills the other halves
 *                   or, where ranks share cores and every rank may read the others' memory
 *                   (comm->board->cma) and the blocks are large (TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES),
 *                   in one round unless a rank runs in place (then through the areas, as above):
 *                   1: post my sendbuf's address on the board
 *                   2: read my block of every rank's sendbuf with process_vm_readv
 *
 * A meet follows phases 1 and 2 (allreduce: 1 and 2, as its phase 3 only reads the results' area,
 * which nobody writes before the next round's first meet; broadcast: 1, and once at the end;
 * alltoall: 1, its halves taking turns across rounds and calls, so a half is written again only
 * after the meet of the round in between; the next collective of another kind meets first). So
 * nobody overwrites an area another rank still reads: one round's writes start only after every
 * rank has left the previous round's reads. Each slice is reduced once, in rank order, by one rank, so every rank gets the same bits.
 *
 * Memory traffic per rank, S the vector (allreduce): (p-1)/p S copied in, S read and S/p written
 * to reduce, S copied out: about (3 - 1/p) S read and (2 - 1/p) S written, however many ranks
 * (tally_reduce_in_order_own goes through the p inputs a tile at a time, so the slice it writes
 * stays in cache meanwhile); the ring moves
 * 2(p-1)/p S through FIFOs, each byte copied in by one rank and out by another. An alltoall
 * through the areas copies S in and S out with one meet a round where pairwise exchange posts p-1
 * messages; the single-copy form moves each byte once, with 2 meets in all. The single-copy
 * allgather reads (p-1)/p of its output from the other ranks and copies its own block, where the
 * areas copy its block in and the whole output out. */
#include "shared.h"

#include <string.h>

#include "board.h"
#include "core/bytes.h"
#include "core/copy.h"
#include "core/error.h"
#include "core/reduce.h"

/* Elements [first, first + n) of a piece of `count` split in p near-equal slices: slice `i`. */
static void slice_of(size_t count, int p, int i, size_t *first, size_t *n) {
  *first = count * (size_t)i / (size_t)p;
  *n = count * (size_t)(i + 1) / (size_t)p - *first;
}

/* Streaming stores where the ranks' outputs together come to TALLY_STREAM_BYTES, by default half the
 * host's last-level cache (comm->cache_bytes): then the buffers of the host's ranks outgrow it.
 * Measured on this 2-core VM, busbw with against without, medians of 5 pairs taking turns on 2
 * ranks, 3 on 4 and 8:
 *   32 MiB of L3 (2026-12-05; the rule then: 16 MiB)
 *     2 ranks  allreduce 0.97-0.98 at 2 and 4 MiB, 1.24 at 8, 1.15 at 16, 1.33 at 64;
 *              allgather 0.93-0.97 at 2 and 4 MiB, 1.27 at 8, 1.28 at 16, 1.74 at 64
 *     4 ranks  at 2 and 4 MiB 1.07-1.31, at 8 and 64 MiB 1.35-1.91 (allreduce, allgather, broadcast)
 *     8 ranks  at 512 KiB and 1 MiB 0.96-1.39, at 2 and 4 MiB 1.07-1.60
 *   8 MiB of L3 (2026-12-05, a later session on another host; the rule: 4 MiB)
 *     2 ranks  at 512 KiB and 1 MiB 0.70-1.01, at 2 and 4 MiB 1.32-1.66 (allreduce, allgather, broadcast)
 * Ranks sharing cores thrash the caches sooner, so the rule is on the outputs of all of them. Only
 * the copies into the user's buffer stream: the areas are reused every round and stay in cache. */
int tally_shared_streams(const struct tally_comm *comm, size_t output_bytes) {
  size_t all = output_bytes * (size_t)comm->nranks; /* every rank of the communicator is on this host */
  size_t from = comm->cfg.stream_bytes == TALLY_STREAM_BYTES_AUTO ? comm->cache_bytes / 2 : comm->cfg.stream_bytes;
  return from && all >= from;
}

/* A round's bytes: the whole area, or SHORT_ROUND where rounds that short measured faster. That is
 * where every rank has a core of its own, so that a meet is a spin rather than a wake-up, and the
 * call is small enough that its buffers and the areas a round reads can share the caches: 64 KiB
 * against 256 KiB rounds on 2 ranks (2026-12-05, this 2-core VM, busbw medians of 3 taking turns)
 * made allreduces of 128 KiB to 1 MiB 7-42% faster (3-12% slower from 2 MiB), allgathers of
 * 128 KiB to 4 MiB 10-33% faster and broadcasts of 128 and 256 KiB 11% and 22% (4-14% slower from
 * 512 KiB). Where ranks share cores, they lost at most sizes (8 ranks: broadcast 4-48% slower,
 * allreduce on 4 ranks 11-23%), but for broadcasts on 4 ranks (22-78% faster up to 4 MiB). */
enum { SHORT_ROUND = 64 * 1024 };
static size_t round_bytes(const struct tally_comm *c, enum tally_coll coll, size_t call_bytes) {
  size_t area = c->board->page->big_bytes, short_until = 0;
  if (!c->cores_shared) {
    if (coll == TALLY_COLL_ALLREDUCE) short_until = 1 << 20;
    if (coll == TALLY_COLL_ALLGATHER) short_until = 4 << 20;
    if (coll == TALLY_COLL_BROADCAST) short_until = 256 << 10;
  }
  return call_bytes <= short_until && SHORT_ROUND < area ? SHORT_ROUND : area;
}

static tally_result_t shared_allreduce(struct tally_comm *c, const struct tally_coll_desc *d) {
  struct board_page *page = c->board->page;
  size_t size = tally_datatype_size(d->datatype);
  size_t per_round = round_bytes(c, d->coll, d->count * size) / size;
  int p = c->nranks;
  unsigned char *mine = tally_board_big(page, c->rank), *results = tally_board_big(page, p);
  size_t stride = (size_t)page->big_bytes;
  int stream = tally_shared_streams(c, d->count * size);
  for (size_t done = 0; done < d->count; done += per_round) {
    size_t n = d->count - done < per_round ? d->count - done : per_round, first, len;
    const unsigned char *in = (const unsigned char *)d->sendbuf + done * size;
    slice_of(n, p, c->rank, &first, &len);
    memcpy(mine, in, first * size); /* the others' slices only: mine is reduced from sendbuf */
    memcpy(mine + (first + len) * size, in + (first + len) * size, (n - first - len) * size);
    TALLY_CHECK(tally_board_meet(c, d));
    if (len)
      tally_reduce_in_order_own(results + first * size, tally_board_big(page, 0) + first * size, stride, p, c->rank,
                                in + first * size, len, d->datatype, d->op);
    TALLY_CHECK(tally_board_meet(c, d));
    tally_copy((unsigned char *)d->recvbuf + done * size, results, n * size, stream);
  }
  return TALLY_SUCCESS;
}

/* count is the block each rank ends with; sendbuf holds p blocks. */
static tally_result_t shared_reduce_scatter(struct tally_comm *c, const struct tally_coll_desc *d) {
  struct board_page *page = c->board->page;
  int p = c->nranks;
  size_t size = tally_datatype_size(d->datatype), block = d->count * size;
  size_t per_round = page->big_bytes / (size * (size_t)p); /* elements of each block per round */
  unsigned char *mine = tally_board_big(page, c->rank);
  const unsigned char *in = d->sendbuf;
  for (size_t done = 0; done < d->count; done += per_round) {
    size_t n = d->count - done < per_round ? d->count - done : per_round;
    for (int j = 0; j < p; j++) /* the others' blocks only: mine is reduced from sendbuf */
      if (j != c->rank) memcpy(mine + (size_t)j * n * size, in + (size_t)j * block + done * size, n * size);
    TALLY_CHECK(tally_board_meet(c, d));
    tally_reduce_in_order_own((unsigned char *)d->recvbuf + done * size,
                              tally_board_big(page, 0) + (size_t)c->rank * n * size, page->big_bytes, p, c->rank,
                              in + (size_t)c->rank * block + done * size, n, d->datatype, d->op);
    TALLY_CHECK(tally_board_meet(c, d));
  }
  return TALLY_SUCCESS;
}

/* The address rank j posted in board set `set` for a single copy of `bytes` (posted beside it: the
 * meet compared the calls' fingerprints, sizes included, so a difference is Tally's own error). */
static tally_result_t posted_by(const struct tally_comm *c, int set, int j, size_t bytes,
                                const struct tally_coll_desc *d, uint64_t *address) {
  const unsigned char *posted = tally_board_slot(c->board->page, set, j)->data;
  if (tally_get_u64(posted + 8) != bytes)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "rank %d posted %llu bytes for a single-copy %s of %zu", j,
                       (unsigned long long)tally_get_u64(posted + 8), tally_coll_name(d->coll), bytes);
  *address = tally_get_u64(posted);
  return TALLY_SUCCESS;
}

/* Where every rank may read the others' memory (comm->board->cma): every rank posts where its
 * block is, reads every other rank's straight into its recvbuf with process_vm_readv, copies its
 * own, and meets again, so that nobody returns (and reuses its sendbuf) while others still read
 * it. In place a rank's block is already in its recvbuf, which it reads from there and does not
 * write, so in place and out of place mix freely. */
static tally_result_t shared_allgather_single_copy(struct tally_comm *c, const struct tally_coll_desc *d) {
  int p = c->nranks;
  size_t block = d->count * tally_datatype_size(d->datatype);
  unsigned char posted[16], *out = d->recvbuf;
  tally_put_u64(posted, (uint64_t)(uintptr_t)d->sendbuf);
  tally_put_u64(posted + 8, (uint64_t)block);
  int set;
  TALLY_CHECK(tally_board_meet_posting(c, d, posted, sizeof posted, &set));
  for (int k = 1; k < p; k++) {
    int j = (c->rank + k) % p;
    uint64_t theirs;
    TALLY_CHECK(posted_by(c, set, j, block, d, &theirs));
    TALLY_CHECK(tally_board_read_peer(c, j, out + (size_t)j * block, theirs, block));
  }
  if (d->sendbuf != out + (size_t)c->rank * block) memcpy(out + (size_t)c->rank * block, d->sendbuf, block);
  return tally_board_meet(c, d);
}

/* count is the block each rank contributes; recvbuf holds p blocks. */
static tally_result_t shared_allgather(struct tally_comm *c, const struct tally_coll_desc *d) {
  if (tally_shared_allgather_single_copy(c, d)) return shared_allgather_single_copy(c, d);
  struct board_page *page = c->board->page;
  int p = c->nranks;
  size_t size = tally_datatype_size(d->datatype), block = d->count * size;
  size_t per_round = round_bytes(c, d->coll, block * (size_t)p) / size;
  unsigned char *out = d->recvbuf;
  int stream = tally_shared_streams(c, block * (size_t)p);
  for (size_t done = 0; done < d->count; done += per_round) {
    size_t n = d->count - done < per_round ? d->count - done : per_round;
    memcpy(tally_board_big(page, c->rank), (const unsigned char *)d->sendbuf + done * size, n * size);
    TALLY_CHECK(tally_board_meet(c, d));
    for (int j = 0; j < p; j++)
      tally_copy(out + (size_t)j * block + done * size, tally_board_big(page, j), n * size, stream);
    TALLY_CHECK(tally_board_meet(c, d));
  }
  return TALLY_SUCCESS;
}

/* Two areas take turns, the root's and the results', so that the root copies round k+1 in while
 * the others copy round k out: one meet a round, and one at the end before anybody may write an
 * area again. The root writes round k's area once every rank has met after round k-1, so after
 * every rank has read round k-2 from it. */
static tally_result_t shared_broadcast(struct tally_comm *c, const struct tally_coll_desc *d) {
  struct board_page *page = c->board->page;
  size_t size = tally_datatype_size(d->datatype), per_round = round_bytes(c, d->coll, d->count * size) / size;
  unsigned char *areas[2] = {tally_board_big(page, d->root), tally_board_big(page, c->nranks)};
  int root = c->rank == d->root, stream = tally_shared_streams(c, d->count * size);
  if (root && d->sendbuf != d->recvbuf) tally_copy(d->recvbuf, d->sendbuf, d->count * size, stream);
  for (size_t done = 0, round = 0; done < d->count; done += per_round, round++) {
    size_t n = d->count - done < per_round ? d->count - done : per_round;
    unsigned char *area = areas[round & 1];
    if (root) memcpy(area, (const unsigned char *)d->sendbuf + done * size, n * size);
    TALLY_CHECK(tally_board_meet(c, d));
    if (!root) tally_copy((unsigned char *)d->recvbuf + done * size, area, n * size, stream);
  }
  return tally_board_meet(c, d);
}

/* The half of an area one alltoall round uses (a multiple of 64 bytes). */
static size_t shared_alltoall_half(const struct board_page *page) { return page->big_bytes / 2 / 64 * 64; }

/* count is each block; sendbuf and recvbuf hold p blocks. Each round reads the same piece of every
 * block of sendbuf before its meet and writes that piece of recvbuf after it, so in place works. */
static tally_result_t shared_alltoall_areas(struct tally_comm *c, const struct tally_coll_desc *d) {
  struct tally_board *board = c->board;
  struct board_page *page = board->page;
  int p = c->nranks;
  size_t size = tally_datatype_size(d->datatype), block = d->count * size, half = shared_alltoall_half(page);
  size_t per_round = half / (size * (size_t)p); /* elements of each block per round */
  unsigned char *out = d->recvbuf;
  const unsigned char *in = d->sendbuf;
  int stream = tally_shared_streams(c, block * (size_t)p);
  for (size_t done = 0; done < d->count; done += per_round) {
    size_t n = d->count - done < per_round ? d->count - done : per_round, piece = n * size;
    size_t turn = (board->alltoall_rounds++ & 1) * half;
    unsigned char *mine = tally_board_big(page, c->rank) + turn;
    for (int j = 0; j < p; j++) memcpy(mine + (size_t)j * piece, in + (size_t)j * block + done * size, piece);
    TALLY_CHECK(tally_board_meet(c, d));
    board->areas_read_late = 1;
    for (int k = 0; k < p; k++) { /* from the next rank on, so that not everyone reads rank 0's area first */
      int j = (c->rank + k) % p;
      tally_copy(out + (size_t)j * block + done * size, tally_board_big(page, j) + turn + (size_t)c->rank * piece,
                 piece, stream);
    }
  }
  return TALLY_SUCCESS;
}

/* Large blocks where the board allows process_vm_readv: every rank posts where its p blocks are
 * and whether it runs in place. Where none does, each reads its block of every other rank's
 * sendbuf with process_vm_readv and meets again, so that nobody returns (and reuses its sendbuf)
 * while others still read it. Where any rank runs in place (its buffer is overwritten as it is
 * read: a copy for the others to read would cost more than the areas' second copy), all of them
 * go through the areas instead; every rank sees every post, so all choose alike. */
static tally_result_t shared_alltoall_single_copy(struct tally_comm *c, const struct tally_coll_desc *d) {
  int p = c->nranks;
  size_t block = d->count * tally_datatype_size(d->datatype), all = block * (size_t)p;
  unsigned char posted[24];
  tally_put_u64(posted, (uint64_t)(uintptr_t)d->sendbuf);
  tally_put_u64(posted + 8, (uint64_t)all);
  tally_put_u64(posted + 16, d->sendbuf == d->recvbuf);
  int set;
  TALLY_CHECK(tally_board_meet_posting(c, d, posted, sizeof posted, &set));
  uint64_t theirs;
  for (int j = 0; j < p; j++) {
    TALLY_CHECK(posted_by(c, set, j, all, d, &theirs));
    if (tally_get_u64(tally_board_slot(c->board->page, set, j)->data + 16)) return shared_alltoall_areas(c, d);
  }
  unsigned char *out = d->recvbuf;
  for (int k = 1; k < p; k++) {
    int j = (c->rank + k) % p;
    TALLY_CHECK(posted_by(c, set, j, all, d, &theirs));
    TALLY_CHECK(tally_board_read_peer(c, j, out + (size_t)j * block, theirs + (size_t)c->rank * block, block));
  }
  memcpy(out + (size_t)c->rank * block, (const unsigned char *)d->sendbuf + (size_t)c->rank * block, block);
  return tally_board_meet(c, d);
}

/* Where reading the other ranks' blocks straight from their sendbufs beats the areas: every rank
 * may read the others' memory and has a core of its own, and all the ranks' outputs together stay
 * below the last-level cache. Measured on 2 ranks, 8 MiB of L3, busbw against the areas
 * (streaming from 2 MiB a rank), pairs taking turns: 1.04 at 64 KiB, 1.31 at 256 KiB, 1.09 at
 * 1 MiB, 1.00 at 2 MiB (medians of 5); at 4 MiB about 0.6 and at 8 MiB 0.54. The host moves this
 * VM's two vCPUs nearer each other or further apart from one minute to the next (core-pingpong:
 * 70-170 ns or 460-500 ns a round trip); 14 rounds at 1 MiB, one pair each, gave 1.00-2.46
 * (median 1.22) in the 9 when they were near and 1.38-2.46 (median 1.88) in the 5 when far (the
 * areas pass every byte through lines another core just wrote), and 1.9 at 2 MiB when far.
 * Where ranks share cores it lost at every size (4 ranks 0.43-0.79, 8 ranks 0.36-0.52, 256 KiB to
 * 16 MiB, medians of 3; why was not looked into), hence the areas there. An allreduce in one copy
 * each way (each rank reducing its slice from the others' sendbufs, then reading the others'
 * slices of the result) was tried too: in the same rounds 1.18-1.81 the areas when the vCPUs were
 * far apart, but 0.50-1.53 (median 0.82) when near, so not kept. */
int tally_shared_allgather_single_copy(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  size_t output = desc->count * tally_datatype_size(desc->datatype) * (size_t)comm->nranks;
  return comm->board && comm->board->cma && !comm->cores_shared && output * (size_t)comm->nranks < comm->cache_bytes;
}

int tally_shared_alltoall_single_copy(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  return comm->board && comm->board->cma && comm->cores_shared &&
         desc->count * tally_datatype_size(desc->datatype) >= TALLY_SHARED_ALLTOALL_SINGLE_COPY_BYTES;
}

static tally_result_t shared_run(struct tally_comm *c, const struct tally_coll_desc *d) {
  if (c->board->areas_read_late && d->coll != TALLY_COLL_ALLTOALL)
    /* the areas' first writes below must wait until every rank has read the last alltoall round */
    TALLY_CHECK(tally_board_meet(c, d));
  switch (d->coll) {
    case TALLY_COLL_ALLREDUCE: return shared_allreduce(c, d);
    case TALLY_COLL_REDUCE_SCATTER: return shared_reduce_scatter(c, d);
    case TALLY_COLL_ALLGATHER: return shared_allgather(c, d);
    case TALLY_COLL_BROADCAST: return shared_broadcast(c, d);
    case TALLY_COLL_ALLTOALL:
      return tally_shared_alltoall_single_copy(c, d) ? shared_alltoall_single_copy(c, d) : shared_alltoall_areas(c, d);
    default:
      return TALLY_ERROR(TALLY_ERR_UNSUPPORTED, "the shared-buffer algorithm does not run %s",
                         tally_coll_name(d->coll));
  }
}

int tally_shared_suits(const struct tally_comm *comm, const struct tally_coll_desc *desc) {
  if (!comm->board) return 0;
  size_t size = tally_datatype_size(desc->datatype);
  /* reduce-scatter and alltoall put a piece of every block in an area: each piece must hold an element */
  size_t need = desc->coll == TALLY_COLL_REDUCE_SCATTER ? size * (size_t)comm->nranks : size;
  if (desc->coll == TALLY_COLL_ALLTOALL) /* a round fills half an area */
    return size * (size_t)comm->nranks <= shared_alltoall_half(comm->board->page);
  return need <= comm->board->page->big_bytes;
}

const struct tally_algorithm tally_shared_algorithm = {.name = "shared", .id = TALLY_ALGO_SHARED, .run = shared_run};
