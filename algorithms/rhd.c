/* Recursive halving-doubling allreduce (Rabenseifner): about 2 log2(p) message steps instead of
 * the ring's 2(p-1), each rank still moving about 2S bytes, which is what mid-sized messages on
 * many ranks want. Its halves serve on their own for a power-of-two number of ranks: step 2 is
 * reduce-scatter by recursive halving, step 3 allgather by recursive doubling.
 *
 *   p' = the largest power of two <= p, r = p - p'.
 *   1. fold:   among ranks 0 .. 2r-1, each even rank sends its whole vector to the odd rank above
 *              it, which reduces it into its own; the even ranks then sit out. The p' ranks left
 *              take ids 0 .. p'-1 (odd rank 2i+1 of the first 2r becomes i, rank j >= 2r becomes
 *              j - r).
 *   2. reduce-scatter by recursive halving: at distances d = p'/2, p'/4, .., 1, a rank exchanges
 *              half of the blocks it is responsible for with id ^ d and reduces the half it keeps
 *              (the lower half when id's bit d is clear); after log2 p' steps rank id holds block
 *              id of p' fully reduced.
 *   3. allgather by recursive doubling: at distances d = 1, 2, .., p'/2, partners swap the blocks
 *              they hold, doubling them each step.
 *   4. unfold: each odd rank of 0 .. 2r-1 sends the result to the even rank below it.
 * Every exchange runs on the pipeline (pipeline.h) over the pair's connections, so large blocks
 * are chunked and their reduction overlaps the transfer. Each block is reduced by one rank only,
 * so every rank ends with the same bits. */
#include <string.h>

#include "../src/error.h"
#include "../src/reduce.h"
#include "algorithm.h"
#include "pipeline.h"

struct shape {
  int pow2;  /* p' */
  int extra; /* r = p - p' */
};

static struct shape shape_of(int nranks) {
  int pow2 = 1;
  while (pow2 * 2 <= nranks) pow2 *= 2;
  return (struct shape){pow2, nranks - pow2};
}

/* The id of `rank` among the p' ranks of steps 2 and 3, or -1 for a rank that sits them out. */
static int core_id(struct shape s, int rank) {
  if (rank < 2 * s.extra) return rank % 2 ? rank / 2 : -1;
  return rank - s.extra;
}

static int core_rank(struct shape s, int id) { return id < s.extra ? 2 * id + 1 : id + s.extra; }

int tally_rhd_partners(int rank, int nranks, int *partners) {
  struct shape s = shape_of(nranks);
  int n = 0, id = core_id(s, rank);
  if (rank < 2 * s.extra) partners[n++] = rank ^ 1;
  for (int d = 1; id >= 0 && d < s.pow2; d *= 2) partners[n++] = core_rank(s, id ^ d);
  return n;
}

/* One exchange with a partner, in elements of the receive buffer: send [send_off, +send_len),
 * receive into [recv_off, +recv_len), reducing into what is there when `reduce`. A zero length
 * means that direction is idle. Both partners split their halves into the same number of chunks. */
struct exchange {
  struct pipeline_plan plan;
  char *base;
  size_t esize;
  size_t send_off, send_len, recv_off, recv_len;
  int reduce;
};

static void exchange_span(const struct exchange *x, size_t off, size_t len, int chunk, struct pipeline_span *span) {
  size_t o, l;
  tally_ring_block(x->plan.nchunks, chunk, len, &o, &l);
  span->ptr = x->base + (off + o) * x->esize;
  span->bytes = l * x->esize;
}

static void send_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct exchange *x = plan->ctx;
  (void)step;
  exchange_span(x, x->send_off, x->send_len, chunk, span);
}

static void recv_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct exchange *x = plan->ctx;
  (void)step;
  exchange_span(x, x->recv_off, x->recv_len, chunk, span);
  if (x->reduce) span->contrib = span->ptr;
}

static tally_result_t exchange(struct tally_comm *comm, const struct tally_coll_desc *d, int partner,
                               struct exchange *x) {
  size_t longest = x->send_len > x->recv_len ? x->send_len : x->recv_len;
  size_t chunk_elems = comm->cfg.chunk_bytes / x->esize;
  size_t nchunks = (longest + chunk_elems - 1) / chunk_elems;
  if (nchunks == 0) nchunks = 1;
  x->plan = (struct pipeline_plan){.desc = d,
                                   .nchunks = (int)nchunks,
                                   .send_steps = x->send_len > 0,
                                   .recv_steps = x->recv_len > 0,
                                   .dep_lag = 1, /* the two directions are independent */
                                   .max_chunk = (longest + nchunks - 1) / nchunks * x->esize,
                                   .send_span = send_span,
                                   .recv_span = recv_span,
                                   .ctx = x};
  struct tally_ring pair = {.index = 0,
                            .size = 2,
                            .next_rank = partner,
                            .prev_rank = partner,
                            .to_next = comm->to[partner],
                            .from_prev = comm->from[partner]};
  return tally_pipeline_run(comm, &pair, &x->plan);
}

/* Elements [*off, *off + *len) of blocks [lo, hi) of p' blocks over `count` elements. */
static void block_range(int pow2, int lo, int hi, size_t count, size_t *off, size_t *len) {
  size_t first, first_len, last, last_len;
  tally_ring_block(pow2, lo, count, &first, &first_len);
  tally_ring_block(pow2, hi - 1, count, &last, &last_len);
  *off = first;
  *len = last + last_len - first;
}

/* Step 2 on `buf` (count elements in p' blocks): on return rank id holds [*lo, *hi) = block id,
 * reduced over the p' ranks (and divided by the communicator's size for AVG). */
static tally_result_t halving(struct tally_comm *comm, const struct tally_coll_desc *d, struct shape s, int id,
                              const struct exchange *whole, size_t count, int *lo, int *hi) {
  *lo = 0, *hi = s.pow2;
  for (int dist = s.pow2 / 2; dist >= 1; dist /= 2) {
    int mid = *lo + (*hi - *lo) / 2, keep_low = !(id & dist);
    struct exchange x = *whole;
    x.reduce = 1;
    block_range(s.pow2, keep_low ? mid : *lo, keep_low ? *hi : mid, count, &x.send_off, &x.send_len);
    block_range(s.pow2, keep_low ? *lo : mid, keep_low ? mid : *hi, count, &x.recv_off, &x.recv_len);
    TALLY_CHECK(exchange(comm, d, core_rank(s, id ^ dist), &x));
    if (keep_low)
      *hi = mid;
    else
      *lo = mid;
  }
  if (d->op == TALLY_AVG) {
    size_t off, len;
    block_range(s.pow2, *lo, *hi, count, &off, &len);
    tally_reduce_finish_avg(whole->base + off * whole->esize, len, d->datatype, comm->nranks);
  }
  return TALLY_SUCCESS;
}

/* Step 3: rank id holds blocks [lo, hi) of `buf`, one block; on return it holds them all. */
static tally_result_t doubling(struct tally_comm *comm, const struct tally_coll_desc *d, struct shape s, int id,
                               const struct exchange *whole, size_t count, int lo, int hi) {
  for (int dist = 1; dist < s.pow2; dist *= 2) {
    int theirs_lo = id & dist ? lo - dist : hi;
    struct exchange x = *whole;
    block_range(s.pow2, lo, hi, count, &x.send_off, &x.send_len);
    block_range(s.pow2, theirs_lo, theirs_lo + dist, count, &x.recv_off, &x.recv_len);
    TALLY_CHECK(exchange(comm, d, core_rank(s, id ^ dist), &x));
    if (id & dist)
      lo = theirs_lo;
    else
      hi = theirs_lo + dist;
  }
  return TALLY_SUCCESS;
}

/* Steps 1 and 4: the whole vector between an extra rank and its partner, one way. */
static tally_result_t fold(struct tally_comm *comm, const struct tally_coll_desc *d, const struct exchange *whole,
                           size_t count, int receive, int reduce) {
  struct exchange x = *whole;
  if (receive)
    x.recv_len = count, x.reduce = reduce;
  else
    x.send_len = count;
  return exchange(comm, d, comm->rank ^ 1, &x);
}

static tally_result_t rhd_allreduce(struct tally_comm *comm, const struct tally_coll_desc *d) {
  struct shape s = shape_of(comm->nranks);
  size_t es = tally_datatype_size(d->datatype), count = d->count;
  if (d->sendbuf != d->recvbuf) memcpy(d->recvbuf, d->sendbuf, count * es);
  struct exchange whole = {.base = d->recvbuf, .esize = es};
  int rank = comm->rank, id = core_id(s, rank), extra = rank < 2 * s.extra;
  if (extra) TALLY_CHECK(fold(comm, d, &whole, count, id >= 0, 1));
  if (id >= 0) {
    int lo, hi;
    TALLY_CHECK(halving(comm, d, s, id, &whole, count, &lo, &hi));
    TALLY_CHECK(doubling(comm, d, s, id, &whole, count, lo, hi));
  }
  if (extra) TALLY_CHECK(fold(comm, d, &whole, count, id < 0, 0));
  return TALLY_SUCCESS;
}

/* Allgather by recursive doubling (a power-of-two number of ranks: rank r's block is block r). */
static tally_result_t rhd_allgather(struct tally_comm *comm, const struct tally_coll_desc *d) {
  struct shape s = shape_of(comm->nranks);
  size_t es = tally_datatype_size(d->datatype), total = d->count * (size_t)comm->nranks;
  char *mine = (char *)d->recvbuf + (size_t)comm->rank * d->count * es;
  if (d->sendbuf != mine) memcpy(mine, d->sendbuf, d->count * es);
  struct exchange whole = {.base = d->recvbuf, .esize = es};
  return doubling(comm, d, s, comm->rank, &whole, total, comm->rank, comm->rank + 1);
}

/* Reduce-scatter by recursive halving (a power-of-two number of ranks), in the scratch buffer. */
static tally_result_t rhd_reduce_scatter(struct tally_comm *comm, const struct tally_coll_desc *d) {
  struct shape s = shape_of(comm->nranks);
  size_t es = tally_datatype_size(d->datatype), total = d->count * (size_t)comm->nranks;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, total * es));
  memcpy(comm->scratch, d->sendbuf, total * es);
  struct exchange whole = {.base = comm->scratch, .esize = es};
  int lo, hi;
  TALLY_CHECK(halving(comm, d, s, comm->rank, &whole, total, &lo, &hi));
  memcpy(d->recvbuf, (char *)comm->scratch + (size_t)comm->rank * d->count * es, d->count * es);
  return TALLY_SUCCESS;
}

int tally_rhd_suits(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (d->coll == TALLY_COLL_ALLREDUCE) return 1;
  int pow2 = (comm->nranks & (comm->nranks - 1)) == 0;
  return pow2 && (d->coll == TALLY_COLL_ALLGATHER || d->coll == TALLY_COLL_REDUCE_SCATTER);
}

static tally_result_t rhd_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (!tally_rhd_suits(comm, d))
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "recursive halving-doubling cannot run %s on %d ranks",
                       tally_coll_name(d->coll), comm->nranks);
  if (d->coll == TALLY_COLL_ALLGATHER) return rhd_allgather(comm, d);
  if (d->coll == TALLY_COLL_REDUCE_SCATTER) return rhd_reduce_scatter(comm, d);
  return rhd_allreduce(comm, d);
}

const struct tally_algorithm tally_rhd_algorithm = {.name = "rhd", .run = rhd_run};
