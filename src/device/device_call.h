/* Where the API entry hands a call over to the device path, once, at the start: a call with a
 * stream, or any call once this process has a device runtime (its buffers may be device memory,
 * and on a communicator with a stream queue even a host-memory call must keep its place behind the
 * stream-ordered ones). The device path then runs the host collectives it needs through the
 * dispatch point (dispatch/dispatch.h). */
#ifndef TALLY_DEVICE_CALL_H
#define TALLY_DEVICE_CALL_H

#include "core/descriptor.h"

/* Whether tally_device_call must route this call: a stream was given or a device runtime exists. */
int tally_device_call_needed(tally_stream_t stream);

/* TALLY_ERR_UNSUPPORTED, saying why, for a stream where there is no device runtime; else
 * TALLY_SUCCESS. */
tally_result_t tally_device_check_stream(const char *fn, tally_stream_t stream);

/* Runs validated d on a communicator this thread has claimed: device memory is enqueued on its
 * stream (stream_queue.h; NULL: the runtime's default stream); host memory waits for the stream's
 * earlier work, then runs blocking, through the stream queue when the communicator has one, in
 * pieces on communicators whose every rank drives a GPU (call_split.h). A stream without a device
 * runtime is TALLY_ERR_UNSUPPORTED. */
tally_result_t tally_device_call(tally_comm_t comm, const char *fn, const struct tally_coll_desc *d,
                                 tally_stream_t stream);

/* Runs point-to-point work (stream_queue.h: a batch of messages api/group.c built) on a
 * communicator this thread has claimed, as tally_device_call runs a collective: when a region is
 * device memory the work is enqueued on stream (NULL: the runtime's default stream) and returns at
 * once; host memory waits for the stream's earlier work, then runs blocking, through the stream
 * queue when the communicator has one. A stream without a device runtime is
 * TALLY_ERR_UNSUPPORTED. Takes ownership of work's ctx and regions, whatever it returns. */
struct tally_stream_work;
tally_result_t tally_device_work(tally_comm_t comm, struct tally_stream_work *work, tally_stream_t stream);

/* At destroy, before the communicator's links close: waits for and stops the stream queue, and
 * closes the CUDA IPC window. */
void tally_device_comm_close(tally_comm_t comm);

#endif
