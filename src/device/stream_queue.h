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
 * graph keeps its staging memory until the communicator is destroyed and runs at every replay.
 * A batch of point-to-point messages with device buffers takes the same road as work
 * (tally_stream_enqueue_work): staged regions instead of a descriptor's two buffers, and messages
 * built when the queue thread runs it. */
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
/* A stream-ordered barrier, and below the agreement: the steps of a call tally_stream_enqueue
 * admitted (the IPC collectives'), enqueued even when an earlier step has failed on the stream
 * since, so that the call is enqueued whole and its last op poisons its result, rather than it
 * returning an error half enqueued. */
tally_result_t tally_stream_enqueue_barrier(struct tally_comm *comm, const struct tally_device_ops *dev, const char *fn,
                                            void *stream);

/* A step every rank must take together before a call made of several steps: it fails (as a
 * collective mismatch) unless every rank is making the same call d. */
tally_result_t tally_stream_enqueue_agreement(struct tally_comm *comm, const struct tally_device_ops *dev,
                                              const char *fn, const struct tally_coll_desc *d, void *stream);

/* Stream-ordered work other than one collective: a batch of point-to-point messages (api/group.c
 * builds them when the work runs, so that their sequence numbers follow every earlier call's).
 * Its buffers are regions: those in device memory are staged as a collective's are (regions that
 * overlap share one staged copy, keeping their layout), the others are used where they are. */
struct tally_stream_region {
  const void *user; /* the caller's buffer */
  size_t bytes;
  int copy_in;  /* the work needs its contents: it reads it, or writes only part of it */
  int copy_out; /* the work writes it (a failure fills it with 0xff) */
  void *at;     /* where the work finds it while it runs: its staging, or user itself */
};
struct tally_stream_work {
  const char *fn;
  /* runs on the queue thread (or the caller's, for host memory) with every region's `at` set */
  tally_result_t (*run)(struct tally_comm *comm, void *ctx, const struct tally_stream_region *regions);
  void (*release)(void *ctx); /* once the work will not run again */
  void *ctx;
  struct tally_stream_region *regions; /* malloc'd; released with ctx */
  int nregions;
};
/* Releases work's ctx and regions. */
void tally_stream_work_release(struct tally_stream_work *work);

/* Enqueues work, at least one of whose regions is device memory, on stream (never NULL), staged
 * and handed to the queue thread as a collective is; takes ownership of work's ctx and regions,
 * whatever it returns. */
tally_result_t tally_stream_enqueue_work(struct tally_comm *comm, const struct tally_device_ops *dev,
                                         struct tally_stream_work *work, void *stream);

/* Runs host-memory work (every region's `at` is its user pointer) through the queue when comm has
 * one, blocking, as tally_stream_run_host; returns -1 (and runs nothing) when it has none. The work
 * stays the caller's. */
int tally_stream_run_host_work(struct tally_comm *comm, struct tally_stream_work *work, tally_result_t *result);

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
