/* The collective entry points: validate the arguments, build a descriptor, send device memory to
 * its stream (stream_queue.h), let the tuner pick an algorithm, run it, and keep the
 * communicator's error state. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../algorithms/algorithm.h"
#include "call_split.h"
#include "collectives.h"
#include "comm.h"
#include "device.h"
#include "error.h"
#include "log.h"
#include "registry.h"
#include "stream_queue.h"

/* Copies this thread's last message into the communicator, so tally_comm_last_error finds it. */
static tally_result_t remember(tally_comm_t comm, tally_result_t r) {
  snprintf(comm->last_error, sizeof comm->last_error, "%s", tally_error_message());
  return r;
}

/* Ends the remembered message with the rank at fault and its host, when another rank is. */
static void name_culprit(tally_comm_t comm) {
  int culprit = tally_comm_blamed(comm);
  if (culprit < 0 || culprit == comm->rank) return;
  char who[128];
  size_t used = strlen(comm->last_error);
  /* In a mismatch the rank named is one of two that disagree, not necessarily the odd one out. */
  snprintf(comm->last_error + used, sizeof comm->last_error - used, " [%s: %s]",
           comm->error == TALLY_ERR_MISMATCH ? "mismatched rank" : "rank at fault",
           tally_comm_rank_text(comm, culprit, who, sizeof who));
}

static tally_result_t validate(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  if ((unsigned)d->datatype >= TALLY_NUM_DATATYPES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: datatype %d is not a tally_datatype_t", fn, (int)d->datatype);
  if ((unsigned)d->op >= TALLY_NUM_OPS)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: op %d is not a tally_op_t", fn, (int)d->op);
  if (d->root < 0 || d->root >= comm->nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: root %d is outside 0..%d", fn, d->root, comm->nranks - 1);
  size_t es = tally_datatype_size(d->datatype);
  if (d->count > SIZE_MAX / es / (size_t)comm->nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: count %zu of %zu-byte elements overflows the address space", fn,
                       d->count, es);
  if (d->count == 0) return TALLY_SUCCESS;
  int root_only_send = d->coll == TALLY_COLL_BROADCAST, root_only_recv = d->coll == TALLY_COLL_REDUCE;
  if (!d->sendbuf && (!root_only_send || comm->rank == d->root))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: sendbuf is NULL but count is %zu", fn, d->count);
  if (!d->recvbuf && (!root_only_recv || comm->rank == d->root))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: recvbuf is NULL but count is %zu", fn, d->count);
  return TALLY_SUCCESS;
}

void tally_coll_buffer_bytes(const struct tally_coll_desc *d, int rank, int nranks, size_t *send, size_t *recv) {
  size_t bytes = d->count * tally_datatype_size(d->datatype);
  *send = *recv = bytes;
  switch (d->coll) {
  case TALLY_COLL_ALLGATHER: *recv = bytes * (size_t)nranks; break;
  case TALLY_COLL_REDUCE_SCATTER: *send = bytes * (size_t)nranks; break;
  case TALLY_COLL_BROADCAST:
    if (rank != d->root) *send = 0;
    break;
  case TALLY_COLL_REDUCE:
    if (rank != d->root) *recv = 0;
    break;
  case TALLY_COLL_BARRIER: *send = *recv = 0; break;
  default: break;
  }
}

/* One rank: the result is this rank's own data (every collective's buffers hold `count` elements). */
static void run_alone(const struct tally_coll_desc *d) {
  if (d->coll != TALLY_COLL_BARRIER && d->sendbuf != d->recvbuf)
    memmove(d->recvbuf, d->sendbuf, d->count * tally_datatype_size(d->datatype));
}

tally_result_t tally_coll_execute(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  tally_result_t r = TALLY_SUCCESS;
  if (comm->error != TALLY_SUCCESS)
    return remember(comm, TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                                      "%s: the communicator is in error state since an earlier failure (%s: %s); "
                                      "destroy it and create a new one",
                                      fn, tally_result_string(comm->error), comm->failure));
  if (atomic_load(&comm->aborted))
    return remember(comm, TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                                      "%s: the communicator was aborted (tally_comm_abort); destroy it", fn));
  if (comm->nranks == 1) {
    run_alone(d);
  } else {
    tally_error_clear();
    struct tally_coll_desc call = *d; /* the tuner adds its chunk */
    const struct tally_algorithm *algo = tally_tuner_select(comm, &call);
    TLOG_TRACE(TALLY_SUBSYS_COLL, "%s #%u count %zu via %s", fn, comm->seq, d->count, algo->name);
    r = algo->run(comm, &call);
  }
  if (r != TALLY_SUCCESS) tally_coll_fail(comm, r);
  comm->seq++;
  return r;
}

tally_result_t tally_coll_fail(tally_comm_t comm, tally_result_t r) {
  comm->error = r;
  remember(comm, r);
  name_culprit(comm);
  snprintf(comm->failure, sizeof comm->failure, "%s", comm->last_error);
  tally_comm_fail(comm, r);
  return r;
}

/* A host-memory call: through the stream queue when the communicator has one, else here. */
static tally_result_t run_host_call(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  tally_result_t r;
  if (tally_stream_run_host(comm, fn, d, &r) == 0) return r == TALLY_SUCCESS ? r : remember(comm, r);
  return tally_coll_execute(fn, d, comm);
}

/* Routes one call on a communicator this thread has claimed: device memory goes on its stream
 * (stream_queue.h); host memory runs here, or through the stream queue when the communicator has
 * one, so that it keeps its place behind earlier stream-ordered calls. */
static tally_result_t run_claimed(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm,
                                  tally_stream_t stream) {
  tally_result_t r = validate(fn, d, comm);
  if (r != TALLY_SUCCESS) return remember(comm, r);
  const struct tally_device_ops *dev = tally_device();
  if (stream && !dev)
    return remember(comm, TALLY_ERROR(TALLY_ERR_UNSUPPORTED,
                                      "%s: stream is not NULL, but %s; pass NULL with host memory", fn,
                                      tally_device_absent_reason()));
  if (d->count == 0 && d->coll != TALLY_COLL_BARRIER) return TALLY_SUCCESS;
  struct tally_call_memory memory;
  if (dev) tally_call_memory_find(dev, d, comm->rank, comm->nranks, &memory);
  if (dev && tally_call_memory_on_device(&memory)) {
    /* On success the message stays the queue thread's: it may be writing it right now. */
    r = tally_stream_enqueue(comm, dev, fn, d, &memory, stream ? stream : dev->default_stream());
    return r == TALLY_SUCCESS ? r : remember(comm, r);
  }
  if (stream) {
    r = dev->stream_sync(stream); /* host memory stays blocking: after the stream's earlier work */
    if (r != TALLY_SUCCESS) return remember(comm, r);
  }
  size_t piece = tally_call_piece_elems(comm, d);
  if (piece == 0) return run_host_call(fn, d, comm);
  for (size_t first = 0; first < d->count; first += piece) { /* as the stream path does (call_split.h) */
    struct tally_coll_desc part = tally_call_piece(d, first, d->count - first < piece ? d->count - first : piece);
    r = run_host_call(fn, &part, comm);
    if (r != TALLY_SUCCESS) return r;
  }
  return TALLY_SUCCESS;
}

static tally_result_t run(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm, tally_stream_t stream) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: comm is NULL", fn);
  if (!tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "%s: the communicator was destroyed or never created", fn);
  /* Claimed before anything else: the call reads and writes the communicator's state. */
  if (atomic_exchange(&comm->busy, 1))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "%s: another thread is running a collective on this communicator; use one communicator per "
                       "thread or serialise the calls",
                       fn);
  tally_result_t r = run_claimed(fn, d, comm, stream);
  atomic_store(&comm->busy, 0);
  return r;
}

tally_result_t tally_comm_get_async_error(tally_comm_t comm, tally_result_t *async_error) {
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_get_async_error: comm is NULL, destroyed or never created");
  if (!async_error) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_get_async_error: async_error is NULL");
  *async_error = tally_stream_async_error(comm);
  return TALLY_SUCCESS;
}

tally_result_t tally_allreduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                               tally_op_t op, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_ALLREDUCE, sendbuf, recvbuf, count, datatype, op, 0, 0};
  return run("tally_allreduce", &d, comm, stream);
}

tally_result_t tally_allgather(const void *sendbuf, void *recvbuf, size_t sendcount, tally_datatype_t datatype,
                               tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_ALLGATHER, sendbuf, recvbuf, sendcount, datatype, TALLY_SUM, 0, 0};
  return run("tally_allgather", &d, comm, stream);
}

tally_result_t tally_reduce_scatter(const void *sendbuf, void *recvbuf, size_t recvcount, tally_datatype_t datatype,
                                    tally_op_t op, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_REDUCE_SCATTER, sendbuf, recvbuf, recvcount, datatype, op, 0, 0};
  return run("tally_reduce_scatter", &d, comm, stream);
}

tally_result_t tally_broadcast(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype, int root,
                               tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_BROADCAST, sendbuf, recvbuf, count, datatype, TALLY_SUM, root, 0};
  return run("tally_broadcast", &d, comm, stream);
}

tally_result_t tally_reduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype, tally_op_t op,
                            int root, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_REDUCE, sendbuf, recvbuf, count, datatype, op, root, 0};
  return run("tally_reduce", &d, comm, stream);
}

tally_result_t tally_barrier(tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_BARRIER, NULL, NULL, 0, TALLY_UINT8, TALLY_SUM, 0, 0};
  return run("tally_barrier", &d, comm, stream);
}
