/* Stream-ordered collectives, as NCCL's: a call with device buffers is enqueued on the user's
 * stream and returns at once; the stream then
 *   1. copies device inputs into pinned staging memory,
 *   2. hands the call to the communicator's queue thread (a host function that only enqueues),
 *   3. waits on a flag in pinned memory (a one-thread kernel) while that thread runs the
 *      collective on the staging memory with the host algorithms,
 *   4. copies the result back into the device buffer, and
 *   5. returns the staging memory to the pool.
 * The queue thread runs collectives in the order their streams reach step 2, which is call order
 * for one stream; once a communicator has a queue, host-memory calls go through it too, after
 * every earlier stream call has reached step 2, so calls never overtake each other. A failed
 * collective fills its device result with 0xff bytes (NaN for floats), releases the stream, and
 * puts the communicator in error state (tally_comm_get_async_error). Work captured into a CUDA
 * graph keeps its staging memory until the communicator is destroyed and runs at every replay. */
#ifndef TALLY_STREAM_QUEUE_H
#define TALLY_STREAM_QUEUE_H

#include "core/descriptor.h"
#include "device.h"

struct tally_comm;

/* Where this rank's buffers of a call live, asked of the device runtime once per call: on the
 * device means device or managed memory; a buffer this rank does not use (a non-root's in
 * broadcast or reduce) is neither used nor on the device. A split call's pieces share it. */
struct tally_call_memory {
  int send_used, recv_used;
  int send_on_device, recv_on_device;
};
void tally_call_memory_find(const struct tally_device_ops *dev, const struct tally_coll_desc *d, int rank, int nranks,
                            struct tally_call_memory *m);
/* A call that touches device memory on this rank is stream-ordered. */
static inline int tally_call_memory_on_device(const struct tally_call_memory *m) {
  return m->send_on_device || m->recv_on_device;
}

/* Enqueues validated d, whose buffers are as `m` says, on stream (never NULL: the caller maps NULL
 * to the default stream): through the CUDA IPC window when src/device/ipc takes it, else
 * staged as above. */
tally_result_t tally_stream_enqueue(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn,
                                    const struct tally_coll_desc *d, const struct tally_call_memory *m, void *stream);
/* A stream-ordered barrier (the IPC collectives' steps). */
tally_result_t tally_stream_enqueue_barrier(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn,
                                            void *stream);

/* A step every rank must take together before a call made of several steps: it fails (as a
 * collective mismatch) unless every rank is making the same call d. */
tally_result_t tally_stream_enqueue_agreement(struct tally_comm *comm, const struct tally_device_ops *dev,
                                              const char *fn, const struct tally_coll_desc *d, void *stream);

/* Runs a host-memory collective through the queue when comm has one, blocking; returns
 * -1 (and runs nothing) when it has none. */
int tally_stream_run_host(struct tally_comm *comm, const char *fn, const struct tally_coll_desc *d,
                          tally_result_t *result);

/* The failure that put comm in error state, stream-ordered or not; TALLY_SUCCESS when none. */
tally_result_t tally_stream_async_error(struct tally_comm *comm);

/* At destroy: waits (up to the communicator's timeout) for the enqueued calls to finish, then
 * stops the thread and frees the staging memory. */
void tally_stream_queue_close(struct tally_comm *comm);

#endif
