/* Recursive halving-doubling (Rabenseifner): about 2 log2(p) message steps instead of the ring's
 * 2(p-1), each rank still moving about 2S bytes, which is what mid-sized messages on many ranks
 * want. Allreduce runs the whole schedule; reduce-scatter runs steps 1, 2 and 4, allgather steps
 * 1, 3 and 4; all three on any number of ranks.
 *
 *   p' = the largest power of two <= p, r = p - p'.
 *   1. fold:   among ranks 0 .. 2r-1, each even rank hands its data to the odd rank above it and
 *              sits out steps 2 and 3: allreduce and reduce-scatter send the whole vector, which
 *              the odd rank reduces into its own; allgather sends the even rank's block. The p'
 *              ranks left take core ids 0 .. p'-1: core id i stands for ranks 2i and 2i+1 when
 *              i < r (odd rank 2i+1 runs it), for rank i + r otherwise.
 *   2. reduce-scatter by recursive halving: at distances d = p'/2, p'/4, .., 1, a core rank
 *              exchanges half of the blocks it is responsible for with id ^ d and reduces the half
 *              it keeps (the lower half when id's bit d is clear); after log2 p' steps core id i
 *              holds its block fully reduced.
 *   3. allgather by recursive doubling: at distances d = 1, 2, .., p'/2, partners swap the blocks
 *              they hold, doubling them each step.
 *   4. unfold: each odd rank of 0 .. 2r-1 sends the even rank below it the result: the whole
 *              vector for allreduce and allgather, the even rank's block for reduce-scatter.
 * The blocks of steps 2 and 3 are, for allreduce, p' even parts of the vector; for allgather and
 * reduce-scatter, core id i's block is the blocks of the ranks it stands for, contiguous in rank
 * order. Every exchange runs on the pipeline (pipeline.h) over the pair's connections, so large
 * blocks are chunked and their reduction overlaps the transfer. Each block is reduced by one rank
 * only, so every rank ends with the same bits.
 *
 * Compressed calls (desc->wire): the pipeline sends 16-bit values to partners on other hosts. For
 * allreduce each block's owner rounds it once after the halving (so what the doubling and the
 * unfold spread is exact in 16 bits); recursive doubling of the whole vector rounds each rank's
 * vector before every exchange, so both partners add the same two values, and once at the end. */
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/reduce.h"
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

/* The core id of `rank` (steps 2 and 3), or -1 for a rank that sits them out. */
static int core_id(struct shape s, int rank) {
  if (rank < 2 * s.extra) return rank % 2 ? rank / 2 : -1;
  return rank - s.extra;
}

/* Core id i stands for ranks [first_rank(i), first_rank(i + 1)), the last of which runs it;
 * first_rank(p') = p. */
static int first_rank(struct shape s, int id) { return id < s.extra ? 2 * id : id + s.extra; }

static int core_rank(struct shape s, int id) { return first_rank(s, id + 1) - 1; }

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
  const char *input; /* when not NULL, this rank's own data: sends read it, reductions add it */
  size_t esize;
  size_t send_off, send_len, recv_off, recv_len;
  int reduce;
};

static void exchange_span(const struct exchange *x, char *base, size_t off, size_t len, int chunk,
                          struct pipeline_span *span) {
  size_t o, l;
  tally_ring_block(x->plan.nchunks, chunk, len, &o, &l);
  span->ptr = base + (off + o) * x->esize;
  span->bytes = l * x->esize;
}

static void send_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct exchange *x = plan->ctx;
  (void)step;
  exchange_span(x, (char *)(x->input ? x->input : x->base), x->send_off, x->send_len, chunk, span);
}

static void recv_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct exchange *x = plan->ctx;
  (void)step;
  exchange_span(x, x->base, x->recv_off, x->recv_len, chunk, span);
  if (x->reduce) span->contrib = x->input ? x->input + ((char *)span->ptr - x->base) : span->ptr;
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

/* Steps 1 and 4: elements [off, off + len) of `base`, one way between an extra rank and its
 * partner (rank ^ 1), reduced into what is there when `reduce`; `input` as in struct exchange. */
static tally_result_t fold(struct tally_comm *comm, const struct tally_coll_desc *d, void *base, const void *input,
                           size_t off, size_t len, int receive, int reduce) {
  struct exchange x = {.base = base, .input = input, .esize = tally_datatype_size(d->datatype)};
  if (receive)
    x.recv_off = off, x.recv_len = len, x.reduce = reduce;
  else
    x.send_off = off, x.send_len = len;
  return exchange(comm, d, comm->rank ^ 1, &x);
}

/* The vector of steps 2 and 3, `count` elements at whole.base, and this rank's core id. By rank
 * (allgather, reduce-scatter), the vector is p blocks, one per rank, and core id i owns those of
 * the ranks it stands for; otherwise (allreduce) it is p' blocks, core id i owning block i. Where
 * the rank's own data is still in the caller's send buffer, whole.input points at it and the first
 * exchange reads it there (so nothing is copied into the vector beforehand). */
struct core {
  struct shape s;
  int id;
  int by_rank;
  size_t count;
  struct exchange whole; /* base, input and esize */
};

static struct core core_of(const struct tally_comm *comm, const struct tally_coll_desc *d, void *base, size_t count,
                           int by_rank) {
  struct shape s = shape_of(comm->nranks);
  return (struct core){.s = s,
                       .id = core_id(s, comm->rank),
                       .by_rank = by_rank,
                       .count = count,
                       .whole = {.base = base, .esize = tally_datatype_size(d->datatype)}};
}

/* Elements [*off, *off + *len) that core ids [lo, hi) own. */
static void block_range(const struct core *c, int lo, int hi, size_t *off, size_t *len) {
  int nblocks = c->s.pow2;
  if (c->by_rank) nblocks += c->s.extra, lo = first_rank(c->s, lo), hi = first_rank(c->s, hi);
  size_t first_len, last, last_len;
  tally_ring_block(nblocks, lo, c->count, off, &first_len);
  tally_ring_block(nblocks, hi - 1, c->count, &last, &last_len);
  *len = last + last_len - *off;
}

/* Step 2: on return core id c->id holds core ids [*lo, *hi) = its own, reduced over the core
 * ranks (and divided by the communicator's size for AVG). */
static tally_result_t halving(struct tally_comm *comm, const struct tally_coll_desc *d, const struct core *c, int *lo,
                              int *hi, int round_owned) {
  *lo = 0, *hi = c->s.pow2;
  for (int dist = c->s.pow2 / 2; dist >= 1; dist /= 2) {
    int mid = *lo + (*hi - *lo) / 2, keep_low = !(c->id & dist);
    struct exchange x = c->whole;
    x.reduce = 1;
    if (dist != c->s.pow2 / 2) x.input = NULL; /* after the first exchange the vector holds it */
    block_range(c, keep_low ? mid : *lo, keep_low ? *hi : mid, &x.send_off, &x.send_len);
    block_range(c, keep_low ? *lo : mid, keep_low ? mid : *hi, &x.recv_off, &x.recv_len);
    TALLY_CHECK(exchange(comm, d, core_rank(c->s, c->id ^ dist), &x));
    if (keep_low)
      *hi = mid;
    else
      *lo = mid;
  }
  if (d->op == TALLY_AVG) {
    size_t off, len;
    block_range(c, *lo, *hi, &off, &len);
    tally_reduce_finish_avg(c->whole.base + off * c->whole.esize, len, d->datatype, comm->nranks);
  }
  if (round_owned && d->wire) {
    size_t off, len;
    block_range(c, *lo, *hi, &off, &len);
    tally_wire_round((float *)(c->whole.base + off * c->whole.esize), len, d->wire);
  }
  return TALLY_SUCCESS;
}

/* Step 3: core id c->id holds core ids [lo, hi), its own; on return it holds them all. */
static tally_result_t doubling(struct tally_comm *comm, const struct tally_coll_desc *d, const struct core *c, int lo,
                               int hi) {
  for (int dist = 1; dist < c->s.pow2; dist *= 2) {
    int theirs_lo = (c->id & dist) ? lo - dist : hi;
    struct exchange x = c->whole;
    x.input = NULL;
    block_range(c, lo, hi, &x.send_off, &x.send_len);
    block_range(c, theirs_lo, theirs_lo + dist, &x.recv_off, &x.recv_len);
    TALLY_CHECK(exchange(comm, d, core_rank(c->s, c->id ^ dist), &x));
    if (c->id & dist)
      lo = theirs_lo;
    else
      hi = theirs_lo + dist;
  }
  return TALLY_SUCCESS;
}

/* Steps 2 and 3 for small vectors: at distances d = 1, 2, .., p'/2 partners swap their whole
 * vectors and both reduce (log2 p' messages instead of 2 log2 p'). Each sends its input, then a
 * copy, since its vector changes while the send may still be reading it; both partners compute the
 * same commutative op of the same two values, so every rank keeps the same bits. */
static tally_result_t doubling_whole_vector(struct tally_comm *comm, const struct tally_coll_desc *d,
                                           const struct core *c) {
  size_t bytes = c->count * c->whole.esize;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, bytes));
  for (int dist = 1; dist < c->s.pow2; dist *= 2) {
    struct exchange x = c->whole;
    const void *mine = dist == 1 && x.input ? x.input : c->whole.base; /* the first round reads the input */
    if (dist > 1 || !x.input || d->wire) x.input = memcpy(comm->scratch, mine, bytes);
    if (d->wire) tally_wire_round(comm->scratch, c->count, d->wire);
    x.send_len = c->count, x.recv_len = c->count, x.reduce = 1;
    TALLY_CHECK(exchange(comm, d, core_rank(c->s, c->id ^ dist), &x));
  }
  if (d->op == TALLY_AVG) tally_reduce_finish_avg(c->whole.base, c->count, d->datatype, comm->nranks);
  if (d->wire) tally_wire_round((float *)c->whole.base, c->count, d->wire);
  return TALLY_SUCCESS;
}

static tally_result_t rhd_allreduce(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t count = d->count;
  struct core c = core_of(comm, d, d->recvbuf, count, 0);
  int extra = comm->rank < 2 * c.s.extra;
  if (extra) TALLY_CHECK(fold(comm, d, d->recvbuf, d->sendbuf, 0, count, c.id >= 0, 1));
  if (!extra && d->sendbuf != d->recvbuf) c.whole.input = d->sendbuf; /* else recvbuf holds it */
  if (c.id >= 0 && d->rhd_whole_vector) {
    TALLY_CHECK(doubling_whole_vector(comm, d, &c));
  } else if (c.id >= 0) {
    int lo, hi;
    TALLY_CHECK(halving(comm, d, &c, &lo, &hi, 1));
    TALLY_CHECK(doubling(comm, d, &c, lo, hi));
  }
  if (extra) TALLY_CHECK(fold(comm, d, d->recvbuf, NULL, 0, count, c.id < 0, 0));
  return TALLY_SUCCESS;
}

static tally_result_t rhd_allgather(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int rank = comm->rank;
  size_t block = d->count, total = block * (size_t)comm->nranks;
  struct core c = core_of(comm, d, d->recvbuf, total, 1);
  char *mine = c.whole.base + (size_t)rank * block * c.whole.esize;
  if (d->sendbuf != mine) memcpy(mine, d->sendbuf, block * c.whole.esize);
  int extra = rank < 2 * c.s.extra;
  if (extra) TALLY_CHECK(fold(comm, d, d->recvbuf, NULL, (size_t)(rank & ~1) * block, block, c.id >= 0, 0));
  if (c.id >= 0) TALLY_CHECK(doubling(comm, d, &c, c.id, c.id + 1));
  if (extra) TALLY_CHECK(fold(comm, d, d->recvbuf, NULL, 0, total, c.id < 0, 0));
  return TALLY_SUCCESS;
}

/* The core ranks reduce in the scratch buffer, the first exchange reading the input where it is; an
 * extra rank only sends its input (read, never written) and receives its block. */
static tally_result_t rhd_reduce_scatter(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int rank = comm->rank;
  size_t block = d->count, total = block * (size_t)comm->nranks;
  struct core c = core_of(comm, d, NULL, total, 1);
  size_t es = c.whole.esize;
  if (c.id < 0) {
    TALLY_CHECK(fold(comm, d, NULL, d->sendbuf, 0, total, 0, 0));
    return fold(comm, d, d->recvbuf, NULL, 0, block, 1, 0);
  }
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, total * es));
  c.whole.base = comm->scratch;
  int extra = rank < 2 * c.s.extra, lo, hi;
  if (extra)
    TALLY_CHECK(fold(comm, d, c.whole.base, d->sendbuf, 0, total, 1, 1));
  else
    c.whole.input = d->sendbuf;
  TALLY_CHECK(halving(comm, d, &c, &lo, &hi, 0));
  if (extra) TALLY_CHECK(fold(comm, d, c.whole.base, NULL, (size_t)(rank - 1) * block, block, 0, 0));
  memcpy(d->recvbuf, c.whole.base + (size_t)rank * block * es, block * es);
  return TALLY_SUCCESS;
}

int tally_rhd_suits(const struct tally_comm *comm, const struct tally_coll_desc *d) {
  (void)comm;
  return d->coll == TALLY_COLL_ALLREDUCE || d->coll == TALLY_COLL_ALLGATHER || d->coll == TALLY_COLL_REDUCE_SCATTER;
}

static tally_result_t rhd_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (!tally_rhd_suits(comm, d))
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "recursive halving-doubling cannot run %s", tally_coll_name(d->coll));
  if (d->coll == TALLY_COLL_ALLGATHER) return rhd_allgather(comm, d);
  if (d->coll == TALLY_COLL_REDUCE_SCATTER) return rhd_reduce_scatter(comm, d);
  return rhd_allreduce(comm, d);
}

const struct tally_algorithm tally_rhd_algorithm = {.name = "rhd", .id = TALLY_ALGO_RHD, .run = rhd_run};
