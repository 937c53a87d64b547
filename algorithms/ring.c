/* Ring algorithms: every rank sends to rank+1 and receives from rank-1.
 *
 *   allreduce       reduce-scatter then allgather, 2(n-1) steps of 1/n of the data each; with
 *                   TALLY_RING_CHANNELS=2, half the vector on this ring and half at the same time on
 *                   the reverse ring (r sends to r-1), each over its own connections
 *   reduce_scatter  n-1 steps: at step s rank r sends block r-s-1 and receives block r-s-2,
 *                   adding its own contribution, so that it ends owning block r
 *   allgather       n-1 steps: at step t rank r forwards block r-t and receives block r-t-1
 *   broadcast       chain root -> root+1 -> ... -> root-1, forwarded chunk by chunk
 *   reduce          chain root+1 -> ... -> root, each rank adding its contribution
 *                   (both chains close the ring with an empty acknowledgement per chunk from
 *                   the last rank to the first, so the first rank, which otherwise only sends,
 *                   also learns of a mismatch or a failure down the chain in the same call)
 *   barrier         n-1 steps of empty messages: nobody leaves before everyone arrived
 *
 * Compressed calls (desc->wire): the pipeline sends 16-bit values on links between hosts; when a
 * reduce-scatter is followed by an allgather, each block's owner rounds its reduced block once
 * before spreading it, so the values in flight are exact in 16 bits and every rank ends with the
 * same bits whichever of its links cross hosts. The small gathered allreduce rounds each rank's
 * own input the same way.
 *
 *        r-1 ----> r ----> r+1        each block is split into chunks so that the next chunk is on
 *         ^                  |         the wire while this one is being reduced
 *         +------- ... <-----+
 */
#include <string.h>

#include "algorithm.h"
#include "core/error.h"
#include "core/reduce.h"
#include "pipeline.h"

/* The n blocks a ring schedule moves, in elements. Split layout (stride 0): `count` elements cut
 * into n blocks that differ by at most one element. Strided layout: block k is `length` elements
 * at k * stride (the same piece of n equal regions). */
struct blocks {
  size_t count, esize, chunk_elems;
  int n;
  size_t stride, length; /* the strided layout when stride > 0 */
};

static size_t block_offset(const struct blocks *b, int k) {
  if (b->stride) return (size_t)k * b->stride;
  size_t base = b->count / (size_t)b->n, rem = b->count % (size_t)b->n;
  return (size_t)k * base + ((size_t)k < rem ? (size_t)k : rem);
}

static size_t block_end(const struct blocks *b, int k) {
  return b->stride ? block_offset(b, k) + b->length : block_offset(b, k + 1);
}

static size_t largest_block(const struct blocks *b) {
  return b->stride ? b->length : b->count / (size_t)b->n + (b->count % (size_t)b->n != 0);
}

/* Bytes offset and length of chunk j of block k. */
static void block_chunk(const struct blocks *b, int k, int j, size_t *offset, size_t *bytes) {
  size_t begin = block_offset(b, k), end = block_end(b, k);
  size_t lo = begin + (size_t)j * b->chunk_elems;
  size_t hi = lo + b->chunk_elems;
  if (lo > end) lo = end;
  if (hi > end) hi = end;
  *offset = lo * b->esize;
  *bytes = (hi - lo) * b->esize;
}

static int mod(int a, int n) { return ((a % n) + n) % n; }

struct ring_ctx {
  const struct tally_ring *ring;
  struct blocks blocks;
  const char *send;  /* this rank's contribution */
  char *recv;        /* where results go */
  char *partial;     /* reduce_scatter/reduce: partial results that are only forwarded */
  int rs_steps;      /* reduce-scatter steps (n-1, or 0 for a pure allgather) */
  int final_average; /* the last reduce-scatter step divides by n */
  int round_owned;   /* compressed, with an allgather after: the owner rounds its reduced block */
};

/* --- allreduce, reduce_scatter, allgather: one schedule, phases chosen by rs_steps ---------- */

static void ring_send_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct ring_ctx *c = plan->ctx;
  int r = c->ring->index, n = c->ring->size;
  size_t off, bytes;
  if (step < c->rs_steps) {
    int k = mod(r - step - 1, n);
    block_chunk(&c->blocks, k, chunk, &off, &bytes);
    const char *base = step == 0 ? c->send : (c->partial ? c->partial : c->recv);
    span->ptr = (void *)(base + off);
  } else {
    int k = mod(r - (step - c->rs_steps), n);
    block_chunk(&c->blocks, k, chunk, &off, &bytes);
    span->ptr = c->recv + off;
  }
  span->bytes = bytes;
}

static void ring_recv_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  const struct ring_ctx *c = plan->ctx;
  int r = c->ring->index, n = c->ring->size;
  size_t off, bytes;
  if (step < c->rs_steps) {
    int k = mod(r - step - 2, n);
    block_chunk(&c->blocks, k, chunk, &off, &bytes);
    int last = step == c->rs_steps - 1;
    /* reduce_scatter's output holds only this rank's block: partial sums go to scratch */
    char *dst_base = last || !c->partial ? c->recv : c->partial;
    size_t dst_off = last && c->partial ? off - block_offset(&c->blocks, k) * c->blocks.esize : off;
    span->ptr = dst_base + dst_off;
    span->contrib = c->send + off;
    span->finish_avg = last && c->final_average;
    span->round_result = last && c->round_owned;
  } else {
    int k = mod(r - (step - c->rs_steps) - 1, n);
    block_chunk(&c->blocks, k, chunk, &off, &bytes);
    span->ptr = c->recv + off;
  }
  span->bytes = bytes;
}

static int chunks_per_block(const struct blocks *b, size_t block_elems) {
  size_t n = (block_elems + b->chunk_elems - 1) / b->chunk_elems;
  return n ? (int)n : 1;
}

/* The pipeline plan of ring schedule `c`: its reduce-scatter steps, then `ag_steps` allgather steps. */
static struct pipeline_plan ring_plan(const struct tally_coll_desc *d, struct ring_ctx *c, int ag_steps) {
  c->round_owned = d->wire != TALLY_WIRE_EXACT && c->rs_steps > 0 && ag_steps > 0;
  return (struct pipeline_plan){
      .desc = d,
      .nchunks = chunks_per_block(&c->blocks, largest_block(&c->blocks)),
      .send_steps = c->rs_steps + ag_steps,
      .recv_steps = c->rs_steps + ag_steps,
      .dep_lag = 1,
      .max_chunk = c->blocks.chunk_elems * c->blocks.esize,
      .send_span = ring_send_span,
      .recv_span = ring_recv_span,
      .ctx = c,
  };
}

static tally_result_t run_ring(struct tally_comm *comm, const struct tally_coll_desc *d, struct ring_ctx *c,
                               int ag_steps) {
  if (c->ring->size < 2) return TALLY_SUCCESS; /* alone in the ring: the data is where it belongs */
  struct pipeline_plan plan = ring_plan(d, c, ag_steps);
  return tally_pipeline_run(comm, c->ring, &plan);
}

static struct blocks make_blocks(const struct tally_comm *comm, const struct tally_coll_desc *d, size_t count,
                                 size_t esize, int nblocks) {
  size_t chunk_elems = tally_chunk_bytes(comm, d) / esize;
  return (struct blocks){.count = count, .esize = esize, .chunk_elems = chunk_elems ? chunk_elems : 1, .n = nblocks};
}

void tally_ring_block(int nblocks, int k, size_t count, size_t *offset, size_t *length) {
  struct blocks b = {.count = count, .n = nblocks};
  *offset = block_offset(&b, k);
  *length = block_offset(&b, k + 1) - *offset;
}

static tally_result_t run_blocks(struct tally_comm *comm, const struct tally_ring *ring,
                                 const struct tally_coll_desc *d, struct blocks blocks, const void *send, void *recv,
                                 int reduce, int gather, int average) {
  struct ring_ctx c = {.ring = ring,
                       .blocks = blocks,
                       .send = send,
                       .recv = recv,
                       .rs_steps = reduce ? ring->size - 1 : 0,
                       .final_average = average};
  return run_ring(comm, d, &c, gather ? ring->size - 1 : 0);
}

tally_result_t tally_ring_blocks(struct tally_comm *comm, const struct tally_ring *ring,
                                 const struct tally_coll_desc *d, const void *send, void *recv, int reduce, int gather,
                                 int average) {
  struct blocks b = make_blocks(comm, d, d->count, tally_datatype_size(d->datatype), ring->size);
  return run_blocks(comm, ring, d, b, send, recv, reduce, gather, average);
}

tally_result_t tally_ring_strided(struct tally_comm *comm, const struct tally_ring *ring,
                                  const struct tally_coll_desc *d, const void *send, void *recv, size_t stride,
                                  size_t length, int reduce, int gather, int average) {
  struct blocks b = make_blocks(comm, d, stride * (size_t)ring->size, tally_datatype_size(d->datatype), ring->size);
  b.stride = stride;
  b.length = length;
  return run_blocks(comm, ring, d, b, send, recv, reduce, gather, average);
}

/* Small allreduce: every rank's input goes around the ring (n-1 steps instead of 2(n-1)), then
 * each rank reduces the n inputs itself, in rank order, so that every rank gets the same bits. */
static tally_result_t ring_allreduce_gathered(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t bytes = d->count * tally_datatype_size(d->datatype), n = (size_t)comm->nranks;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, n * bytes));
  char *inputs = comm->scratch;
  memcpy(inputs + (size_t)comm->rank * bytes, d->sendbuf, bytes);
  if (d->wire) /* what the others get of it: every rank then reduces the same values */
    tally_wire_round((float *)(inputs + (size_t)comm->rank * bytes), d->count, d->wire);
  struct ring_ctx c = {.ring = &comm->world,
                       .blocks = make_blocks(comm, d, d->count * n, tally_datatype_size(d->datatype), comm->nranks),
                       .send = inputs,
                       .recv = inputs,
                       .rs_steps = 0};
  TALLY_CHECK(run_ring(comm, d, &c, comm->nranks - 1));
  tally_reduce_in_order(d->recvbuf, inputs, bytes, comm->nranks, d->count, d->datatype, d->op);
  return TALLY_SUCCESS;
}

/* Two ring channels (TALLY_RING_CHANNELS=2): the forward ring reduces the first half of the vector
 * while the reverse ring (rank r sends to r-1, over the other connection of each pair) reduces the
 * second, both at once, so every connection carries half of what one ring would put on it. */
static tally_result_t ring_allreduce_channels(struct tally_comm *comm, const struct tally_coll_desc *d) {
  const struct tally_ring *rings[2] = {&comm->world, &comm->world_reverse};
  size_t es = tally_datatype_size(d->datatype);
  struct ring_ctx ctx[2];
  struct pipeline_plan plans[2];
  const struct pipeline_plan *run[2] = {&plans[0], &plans[1]};
  for (int c = 0; c < 2; c++) {
    size_t off, len;
    tally_ring_block(2, c, d->count, &off, &len);
    ctx[c] = (struct ring_ctx){.ring = rings[c],
                               .blocks = make_blocks(comm, d, len, es, comm->nranks),
                               .send = (const char *)d->sendbuf + off * es,
                               .recv = (char *)d->recvbuf + off * es,
                               .rs_steps = comm->nranks - 1,
                               .final_average = d->op == TALLY_AVG};
    plans[c] = ring_plan(d, &ctx[c], comm->nranks - 1);
  }
  return tally_pipeline_run_many(comm, rings, run, 2);
}

static tally_result_t ring_allreduce(struct tally_comm *comm, const struct tally_coll_desc *d) {
  if (d->count * tally_datatype_size(d->datatype) * (size_t)comm->nranks <= TALLY_SMALL_ALLREDUCE_BYTES)
    return ring_allreduce_gathered(comm, d);
  if (comm->world_reverse.size) return ring_allreduce_channels(comm, d);
  return tally_ring_blocks(comm, &comm->world, d, d->sendbuf, d->recvbuf, 1, 1, d->op == TALLY_AVG);
}

static tally_result_t ring_reduce_scatter(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t es = tally_datatype_size(d->datatype);
  size_t total = d->count * (size_t)comm->nranks;
  TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, total * es));
  /* The output is this rank's block; shift the pointer so block r lands at recvbuf. */
  struct ring_ctx c = {.ring = &comm->world,
                       .blocks = make_blocks(comm, d, total, es, comm->nranks),
                       .send = d->sendbuf,
                       .recv = (char *)d->recvbuf,
                       .partial = comm->scratch,
                       .rs_steps = comm->nranks - 1,
                       .final_average = d->op == TALLY_AVG};
  return run_ring(comm, d, &c, 0);
}

static tally_result_t ring_allgather(struct tally_comm *comm, const struct tally_coll_desc *d) {
  size_t es = tally_datatype_size(d->datatype);
  size_t bytes = d->count * es;
  char *mine = (char *)d->recvbuf + (size_t)comm->rank * bytes;
  if (d->sendbuf != mine) memcpy(mine, d->sendbuf, bytes);
  struct ring_ctx c = {.ring = &comm->world,
                       .blocks = make_blocks(comm, d, d->count * (size_t)comm->nranks, es, comm->nranks),
                       .send = d->recvbuf,
                       .recv = d->recvbuf,
                       .rs_steps = 0};
  return run_ring(comm, d, &c, comm->nranks - 1);
}

static tally_result_t ring_barrier(struct tally_comm *comm, const struct tally_coll_desc *d) {
  static char nothing; /* empty messages still need a valid address */
  struct ring_ctx c = {.ring = &comm->world,
                       .blocks = make_blocks(comm, d, 0, 1, comm->nranks),
                       .send = &nothing,
                       .recv = &nothing,
                       .rs_steps = 0};
  return run_ring(comm, d, &c, comm->nranks - 1);
}

/* --- broadcast and reduce: a pipelined chain along the ring ---------------------------------- */

struct chain_ctx {
  int first, last;     /* this rank starts the chain (receives acknowledgements) or ends it (sends them) */
  struct blocks whole; /* one block: the whole buffer */
  const char *send_from;
  char *recv_into;
  const char *contrib; /* reduce: this rank's contribution */
  int finish_avg;
};

static char acknowledgement; /* the empty messages still need a valid address */

static void chain_send_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  (void)step;
  const struct chain_ctx *c = plan->ctx;
  size_t off;
  if (c->last) {
    *span = (struct pipeline_span){.ptr = &acknowledgement};
    return;
  }
  block_chunk(&c->whole, 0, chunk, &off, &span->bytes);
  span->ptr = (void *)(c->send_from + off);
}

static void chain_recv_span(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span) {
  (void)step;
  const struct chain_ctx *c = plan->ctx;
  size_t off;
  if (c->first) {
    *span = (struct pipeline_span){.ptr = &acknowledgement};
    return;
  }
  block_chunk(&c->whole, 0, chunk, &off, &span->bytes);
  span->ptr = c->recv_into + off;
  span->contrib = c->contrib ? c->contrib + off : NULL;
  span->finish_avg = c->finish_avg;
}

/* `pos` is this rank's place in the chain, 0 = first. Every rank sends and receives one step: the
 * first sends data and receives acknowledgements (its sends wait for nothing), the others receive
 * data and send on what they received (data, or the last rank's acknowledgement). */
static tally_result_t run_chain(struct tally_comm *comm, const struct tally_coll_desc *d, struct chain_ctx *c,
                                int pos) {
  c->first = pos == 0;
  c->last = pos == comm->nranks - 1;
  c->whole = make_blocks(comm, d, d->count, tally_datatype_size(d->datatype), 1);
  struct pipeline_plan plan = {
      .desc = d,
      .nchunks = chunks_per_block(&c->whole, d->count),
      .send_steps = 1,
      .recv_steps = 1,
      .dep_lag = c->first ? 1 : 0,
      .max_chunk = c->whole.chunk_elems * c->whole.esize,
      .send_span = chain_send_span,
      .recv_span = chain_recv_span,
      .ctx = c,
  };
  return tally_pipeline_run(comm, &comm->world, &plan);
}

static tally_result_t ring_broadcast(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks, pos = mod(comm->rank - d->root, n);
  struct chain_ctx c = {.recv_into = d->recvbuf};
  if (pos == 0) {
    size_t bytes = d->count * tally_datatype_size(d->datatype);
    if (d->sendbuf != d->recvbuf) memcpy(d->recvbuf, d->sendbuf, bytes);
    c.send_from = d->sendbuf;
  } else {
    c.send_from = d->recvbuf;
  }
  return run_chain(comm, d, &c, pos);
}

static tally_result_t ring_reduce(struct tally_comm *comm, const struct tally_coll_desc *d) {
  int n = comm->nranks, pos = mod(comm->rank - d->root - 1, n); /* root+1 starts, root ends */
  struct chain_ctx c = {.contrib = d->sendbuf};
  if (pos == 0) {
    c.send_from = d->sendbuf;
  } else if (pos == n - 1) {
    c.recv_into = d->recvbuf;
    c.finish_avg = d->op == TALLY_AVG;
  } else {
    TALLY_CHECK(tally_comm_buffer(&comm->scratch, &comm->scratch_bytes, d->count * tally_datatype_size(d->datatype)));
    c.recv_into = comm->scratch;
    c.send_from = comm->scratch;
  }
  return run_chain(comm, d, &c, pos);
}

static tally_result_t ring_run(struct tally_comm *comm, const struct tally_coll_desc *d) {
  switch (d->coll) {
    case TALLY_COLL_ALLREDUCE: return ring_allreduce(comm, d);
    case TALLY_COLL_REDUCE_SCATTER: return ring_reduce_scatter(comm, d);
    case TALLY_COLL_ALLGATHER: return ring_allgather(comm, d);
    case TALLY_COLL_BROADCAST: return ring_broadcast(comm, d);
    case TALLY_COLL_REDUCE: return ring_reduce(comm, d);
    case TALLY_COLL_BARRIER: return ring_barrier(comm, d);
    default: break; /* alltoall, gather and scatter have algorithms of their own */
  }
  return TALLY_ERROR(TALLY_ERR_INTERNAL, "ring: unknown collective %d", (int)d->coll);
}

const struct tally_algorithm tally_ring_algorithm = {.name = "ring", .id = TALLY_ALGO_RING, .run = ring_run};
