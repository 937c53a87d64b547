/* Device collectives through the CUDA IPC window, for communicators on one host: every step is
 * device work on the caller's stream (copies, and the reduction kernels reading the other ranks'
 * window halves directly), separated by stream-ordered barriers, so no byte crosses host memory.
 * A call starts with every rank checking that all make the same call (a mismatch fails, as on the
 * host path), then, per chunk of at most one window half:
 *   allreduce       copy the input into my input half; barrier; reduce my 1/p slice of every
 *                   rank's input half into my result half; barrier; copy every rank's slice of
 *                   its result half into recvbuf.
 *   reduce_scatter  copy the p input blocks into my input half; barrier; reduce my block of every
 *                   rank's input half into recvbuf; barrier.
 *   allgather       copy the input into my input half; barrier; copy every rank's input half into
 *                   its place in recvbuf; barrier.
 *   broadcast       the root copies the input into its input half; barrier; everyone copies it out;
 *                   barrier.
 *   reduce          copy the input into my input half; barrier; the root reduces every rank's input
 *                   half into recvbuf; barrier.
 * Why these barriers suffice: input halves are written only before a chunk's first barrier and read
 * only between its first and last; result halves are written only after a first barrier and read
 * only after the last, and the next chunk's first barrier comes after those reads on every rank.
 * Reductions run in rank order, so every rank's result has the same bits. A failed step fills the
 * call's result with 0xff once the stream has done the rest (stream_queue.c's check). */
#ifndef TALLY_CUDAIPC_COLLECTIVES_H
#define TALLY_CUDAIPC_COLLECTIVES_H

#include "core/descriptor.h"
#include "device/device.h"
#include "device/stream_queue.h"

struct tally_comm;

/* Whether d should take this path: TALLY_CUDAIPC_MB > 0, the device can do IPC, 2+ ranks on one
 * host, a collective the window has kernels for (not barrier, alltoall, gather or scatter), every
 * buffer this rank uses in device or managed memory, and the window did not fail. */
int tally_ipc_wanted(const struct tally_comm *comm, const struct tally_device_ops *dev, const struct tally_coll_desc *d,
                     const struct tally_call_memory *m);

/* Enqueues d on stream through the window (opening it on first use). Returns TALLY_SUCCESS with
 * *taken 0 when the window could not be opened: the caller stages instead. */
tally_result_t tally_ipc_enqueue(struct tally_comm *comm, const struct tally_device_ops *dev,
                                 const struct tally_coll_desc *d, void *stream, int *taken);

#endif
