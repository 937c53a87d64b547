/* The kernel that holds a stream until the host says go: stream-ordered collectives enqueue it
 * between copying the inputs out and copying the result back (stream_queue.c). */
#ifndef TALLY_CUDA_WAIT_KERNEL_H
#define TALLY_CUDA_WAIT_KERNEL_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueues a block whose first thread polls *flag (a device pointer to mapped pinned host memory)
 * until it reads 1 or 2; at 2 the block fills `poison_bytes` at `poison` (NULL: none) with 0xff. */
cudaError_t tally_cuda_wait_flag(const volatile uint32_t *flag, void *poison, size_t poison_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
