/* The collectives through the CUDA IPC window (ipc_collectives.h). */
#include "ipc_collectives.h"

#include "comm/comm.h"
#include "core/error.h"
#include "device/stream_queue.h"
#include "window.h"

int tally_ipc_wanted(const struct tally_comm *comm, const struct tally_device_ops *dev, const struct tally_coll_desc *d,
                     const struct tally_call_memory *m) {
  if (comm->cfg.cudaipc_bytes == 0 || dev->ipc_handle_bytes == 0 || comm->ipc_refused) return 0;
  if (comm->nranks < 2 || comm->topo.nhosts != 1) return 0;
  if (d->coll == TALLY_COLL_BARRIER || d->coll == TALLY_COLL_ALLTOALL || d->coll == TALLY_COLL_GATHER ||
      d->coll == TALLY_COLL_SCATTER)
    return 0; /* no kernels for them through the window: they are staged through host memory */
  return (!m->send_used || m->send_on_device) && (!m->recv_used || m->recv_on_device);
}

/* One call's state while its steps are enqueued. */
struct ipc_call {
  struct tally_comm *comm;
  const struct tally_device_ops *dev;
  const struct tally_ipc_window *w;
  const struct tally_coll_desc *d;
  void *stream;
  size_t es;
};

static tally_result_t barrier(const struct ipc_call *c) {
  return tally_stream_enqueue_barrier(c->comm, c->dev, "a CUDA IPC step", c->stream);
}

static tally_result_t copy(const struct ipc_call *c, void *dst, const void *src, size_t elems) {
  if (elems == 0) return TALLY_SUCCESS;
  return c->dev->copy_async(dst, src, elems * c->es, c->stream);
}

/* out = the elements at byte offset `at` of every rank's input half, reduced in rank order. */
static tally_result_t reduce_inputs(const struct ipc_call *c, void *out, size_t at, size_t elems) {
  if (elems == 0) return TALLY_SUCCESS;
  const struct tally_ipc_window *w = c->w;
  TALLY_CHECK(c->dev->reduce_async(out, tally_ipc_input(w, 0) + at, tally_ipc_input(w, 1) + at, elems, c->d->datatype,
                                   c->d->op, c->stream));
  for (int r = 2; r < w->nranks; r++)
    TALLY_CHECK(c->dev->reduce_async(out, out, tally_ipc_input(w, r) + at, elems, c->d->datatype, c->d->op, c->stream));
  if (c->d->op == TALLY_AVG) TALLY_CHECK(c->dev->finish_avg_async(out, elems, c->d->datatype, w->nranks, c->stream));
  return TALLY_SUCCESS;
}

static size_t slice_start(size_t elems, int r, int p) { return elems * (size_t)r / (size_t)p; }

static tally_result_t allreduce_chunk(const struct ipc_call *c, size_t first, size_t elems) {
  const struct tally_ipc_window *w = c->w;
  int p = w->nranks, me = w->rank;
  const char *send = (const char *)c->d->sendbuf + first * c->es;
  char *recv = (char *)c->d->recvbuf + first * c->es;
  TALLY_CHECK(copy(c, tally_ipc_input(w, me), send, elems));
  TALLY_CHECK(barrier(c));
  size_t lo = slice_start(elems, me, p), hi = slice_start(elems, me + 1, p);
  TALLY_CHECK(reduce_inputs(c, tally_ipc_result(w, me) + lo * c->es, lo * c->es, hi - lo));
  TALLY_CHECK(barrier(c));
  for (int r = 0; r < p; r++) {
    size_t from = slice_start(elems, r, p), to = slice_start(elems, r + 1, p);
    TALLY_CHECK(copy(c, recv + from * c->es, tally_ipc_result(w, r) + from * c->es, to - from));
  }
  return TALLY_SUCCESS;
}

static tally_result_t reduce_scatter_chunk(const struct ipc_call *c, size_t first, size_t elems) {
  const struct tally_ipc_window *w = c->w;
  int p = w->nranks, me = w->rank;
  for (int r = 0; r < p; r++)
    TALLY_CHECK(copy(c, tally_ipc_input(w, me) + (size_t)r * elems * c->es,
                     (const char *)c->d->sendbuf + ((size_t)r * c->d->count + first) * c->es, elems));
  TALLY_CHECK(barrier(c));
  TALLY_CHECK(reduce_inputs(c, (char *)c->d->recvbuf + first * c->es, (size_t)me * elems * c->es, elems));
  return barrier(c);
}

static tally_result_t allgather_chunk(const struct ipc_call *c, size_t first, size_t elems) {
  const struct tally_ipc_window *w = c->w;
  TALLY_CHECK(copy(c, tally_ipc_input(w, w->rank), (const char *)c->d->sendbuf + first * c->es, elems));
  TALLY_CHECK(barrier(c));
  for (int r = 0; r < w->nranks; r++)
    TALLY_CHECK(
        copy(c, (char *)c->d->recvbuf + ((size_t)r * c->d->count + first) * c->es, tally_ipc_input(w, r), elems));
  return barrier(c);
}

static tally_result_t broadcast_chunk(const struct ipc_call *c, size_t first, size_t elems) {
  const struct tally_ipc_window *w = c->w;
  int root = c->d->root;
  if (w->rank == root)
    TALLY_CHECK(copy(c, tally_ipc_input(w, root), (const char *)c->d->sendbuf + first * c->es, elems));
  TALLY_CHECK(barrier(c));
  TALLY_CHECK(copy(c, (char *)c->d->recvbuf + first * c->es, tally_ipc_input(w, root), elems));
  return barrier(c);
}

static tally_result_t reduce_chunk(const struct ipc_call *c, size_t first, size_t elems) {
  const struct tally_ipc_window *w = c->w;
  TALLY_CHECK(copy(c, tally_ipc_input(w, w->rank), (const char *)c->d->sendbuf + first * c->es, elems));
  TALLY_CHECK(barrier(c));
  if (w->rank == c->d->root) TALLY_CHECK(reduce_inputs(c, (char *)c->d->recvbuf + first * c->es, 0, elems));
  return barrier(c);
}

tally_result_t tally_ipc_enqueue(struct tally_comm *comm, const struct tally_device_ops *dev,
                                 const struct tally_coll_desc *d, void *stream, int *taken) {
  *taken = 0;
  if (!comm->ipc_window) {
    TALLY_CHECK(tally_ipc_window_open(comm, dev, comm->cfg.cudaipc_bytes, &comm->ipc_window));
    if (!comm->ipc_window) {
      comm->ipc_refused = 1;
      return TALLY_SUCCESS;
    }
  }
  *taken = 1;
  struct ipc_call c = {comm, dev, comm->ipc_window, d, stream, tally_datatype_size(d->datatype)};
  tally_result_t (*chunk)(const struct ipc_call *, size_t, size_t) = allreduce_chunk;
  size_t per_chunk = c.w->half / c.es; /* elements of one rank's input per chunk */
  switch (d->coll) {
    case TALLY_COLL_REDUCE_SCATTER:
      chunk = reduce_scatter_chunk;
      per_chunk /= (size_t)comm->nranks;
      break;
    case TALLY_COLL_ALLGATHER: chunk = allgather_chunk; break;
    case TALLY_COLL_BROADCAST: chunk = broadcast_chunk; break;
    case TALLY_COLL_REDUCE: chunk = reduce_chunk; break;
    default: break;
  }
  if (per_chunk == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "TALLY_CUDAIPC_MB is too small for a %d-rank reduce_scatter of %zu-byte elements", comm->nranks,
                       c.es);
  TALLY_CHECK(tally_stream_enqueue_agreement(comm, dev, "a CUDA IPC call", d, stream));
  for (size_t first = 0; first < d->count; first += per_chunk) {
    size_t elems = d->count - first < per_chunk ? d->count - first : per_chunk;
    TALLY_CHECK(chunk(&c, first, elems));
  }
  return TALLY_SUCCESS;
}
