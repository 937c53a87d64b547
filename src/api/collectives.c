/* The collective entry points. A call reads straight down: check the communicator and the
 * arguments, describe the call (core/descriptor.h), then (group.h: at once, or at the end of the
 * thread's group) claim the communicator and branch once: to the device path when a stream or a
 * device runtime is present (device/device_call.h), else to the dispatch point, which runs the
 * tuner's algorithm (dispatch/dispatch.h). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "comm/comm.h"
#include "core/error.h"
#include "device/device_call.h"
#include "device/stream_queue.h"
#include "dispatch/dispatch.h"
#include "group.h"
#include "registry.h"

static tally_result_t validate(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  if ((unsigned)d->datatype >= TALLY_NUM_DATATYPES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: datatype %d is not a tally_datatype_t", fn, (int)d->datatype);
  if ((unsigned)d->op >= TALLY_NUM_OPS)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: op %d is not a tally_op_t", fn, (int)d->op);
  if (d->root < 0 || d->root >= comm->nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: root %d is outside 0..%d", fn, d->root, comm->nranks - 1);
  size_t es = tally_datatype_size(d->datatype), all_ranks_bytes; /* multiplied: a division costs tens of cycles */
  if (__builtin_mul_overflow(d->count, es, &all_ranks_bytes) ||
      __builtin_mul_overflow(all_ranks_bytes, (size_t)comm->nranks, &all_ranks_bytes))
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

/* One checked call on a communicator this thread has claimed: the one branch into the device path. */
tally_result_t tally_collective_run_claimed(const struct tally_call *call) {
  const char *fn = call->fn;
  const struct tally_coll_desc *d = &call->desc;
  if (tally_device_call_needed(call->stream)) return tally_device_call(call->comm, fn, d, call->stream);
  if (d->count == 0 && d->coll != TALLY_COLL_BARRIER) return TALLY_SUCCESS;
  return tally_coll_execute(fn, d, call->comm);
}

/* Checks the call, then runs it (group.h: now, or at the end of this thread's group). */
static tally_result_t run(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm, tally_stream_t stream) {
  TALLY_CHECK(tally_call_check_comm(fn, comm));
  tally_result_t r = validate(fn, d, comm);
  if (r != TALLY_SUCCESS) return tally_coll_remember(comm, r);
  struct tally_call call = {.kind = TALLY_CALL_COLLECTIVE, .fn = fn, .comm = comm, .stream = stream, .desc = *d};
  return tally_call_submit(&call);
}

tally_result_t tally_comm_get_async_error(tally_comm_t comm, tally_result_t *async_error) {
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "tally_comm_get_async_error: comm is NULL, destroyed or never created");
  if (!async_error) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_get_async_error: async_error is NULL");
  *async_error = tally_stream_async_error(comm);
  return TALLY_SUCCESS;
}

tally_result_t tally_allreduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                               tally_op_t op, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_ALLREDUCE, sendbuf, recvbuf, count, datatype, op, 0, 0, 0, 0, 0};
  return run("tally_allreduce", &d, comm, stream);
}

tally_result_t tally_allgather(const void *sendbuf, void *recvbuf, size_t sendcount, tally_datatype_t datatype,
                               tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_ALLGATHER, sendbuf, recvbuf, sendcount, datatype, TALLY_SUM, 0, 0, 0, 0, 0};
  return run("tally_allgather", &d, comm, stream);
}

tally_result_t tally_reduce_scatter(const void *sendbuf, void *recvbuf, size_t recvcount, tally_datatype_t datatype,
                                    tally_op_t op, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_REDUCE_SCATTER, sendbuf, recvbuf, recvcount, datatype, op, 0, 0, 0, 0, 0};
  return run("tally_reduce_scatter", &d, comm, stream);
}

tally_result_t tally_broadcast(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype, int root,
                               tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_BROADCAST, sendbuf, recvbuf, count, datatype, TALLY_SUM, root, 0, 0, 0, 0};
  return run("tally_broadcast", &d, comm, stream);
}

tally_result_t tally_reduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype, tally_op_t op,
                            int root, tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_REDUCE, sendbuf, recvbuf, count, datatype, op, root, 0, 0, 0, 0};
  return run("tally_reduce", &d, comm, stream);
}

tally_result_t tally_barrier(tally_comm_t comm, tally_stream_t stream) {
  struct tally_coll_desc d = {TALLY_COLL_BARRIER, NULL, NULL, 0, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  return run("tally_barrier", &d, comm, stream);
}
