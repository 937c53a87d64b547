/* The device path's entry (device_call.h): where a call's buffers live, then the stream queue, the
 * IPC window or blocking host collectives. */
#include "device_call.h"

#include "call_split.h"
#include "comm/comm.h"
#include "core/error.h"
#include "device.h"
#include "dispatch/dispatch.h"
#include "ipc/window.h"
#include "stream_queue.h"

int tally_device_call_needed(tally_stream_t stream) { return stream != NULL || tally_device() != NULL; }

tally_result_t tally_device_check_stream(const char *fn, tally_stream_t stream) {
  if (!stream || tally_device()) return TALLY_SUCCESS;
  return TALLY_ERROR(TALLY_ERR_UNSUPPORTED, "%s: stream is not NULL, but %s; pass NULL with host memory", fn,
                     tally_device_absent_reason());
}

/* A host-memory call: through the stream queue when the communicator has one, else directly. */
static tally_result_t run_host_call(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  tally_result_t r;
  if (tally_stream_run_host(comm, fn, d, &r) == 0) return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
  return tally_coll_execute(fn, d, comm);
}

tally_result_t tally_device_call(tally_comm_t comm, const char *fn, const struct tally_coll_desc *d,
                                 tally_stream_t stream) {
  const struct tally_device_ops *dev = tally_device();
  if (!dev) return tally_coll_remember(comm, tally_device_check_stream(fn, stream));
  if (d->count == 0 && d->coll != TALLY_COLL_BARRIER) return TALLY_SUCCESS;
  struct tally_call_memory memory;
  tally_call_memory_find(dev, d, comm->rank, comm->nranks, &memory);
  tally_result_t r;
  if (tally_call_memory_on_device(&memory)) {
    /* On success the message stays the queue thread's: it may be writing it right now. */
    r = tally_stream_enqueue(comm, dev, fn, d, &memory, stream ? stream : dev->default_stream());
    return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
  }
  if (stream) {
    r = dev->stream_sync(stream); /* host memory stays blocking: after the stream's earlier work */
    if (r != TALLY_SUCCESS) return tally_coll_remember(comm, r);
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

tally_result_t tally_device_work(tally_comm_t comm, struct tally_stream_work *work, tally_stream_t stream) {
  const struct tally_device_ops *dev = tally_device();
  tally_result_t r = dev ? TALLY_SUCCESS : tally_device_check_stream(work->fn, stream);
  int on_device = 0;
  for (int i = 0; i < work->nregions && r == TALLY_SUCCESS; i++) {
    struct tally_stream_region *region = &work->regions[i];
    region->at = (void *)region->user;
    on_device |= region->bytes > 0 && tally_device_memory(dev, region->user);
  }
  if (r == TALLY_SUCCESS && on_device) {
    /* On success the message stays the queue thread's: it may be writing it right now. */
    r = tally_stream_enqueue_work(comm, dev, work, stream ? stream : dev->default_stream());
    return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
  }
  if (r == TALLY_SUCCESS && stream) r = dev->stream_sync(stream); /* host memory: after the stream's earlier work */
  if (r != TALLY_SUCCESS) {
    tally_stream_work_release(work);
    return tally_coll_remember(comm, r);
  }
  if (tally_stream_run_host_work(comm, work, &r) != 0) r = work->run(comm, work->ctx, work->regions);
  tally_stream_work_release(work);
  return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
}

void tally_device_comm_close(tally_comm_t comm) {
  tally_stream_queue_close(comm);
  tally_ipc_window_close(comm->ipc_window);
}
