/* GPU versions of reduce.h's element-wise reductions, for buffers in device memory.
 * Every result is bit for bit what tally_reduce_apply / tally_reduce_finish_avg compute on the host.
 * Both calls only enqueue work on `stream`; they return without waiting for it. */
#ifndef TALLY_CUDA_REDUCE_KERNELS_H
#define TALLY_CUDA_REDUCE_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = a[i] OP b[i] for i < count, like tally_reduce_apply: AVG reduces as SUM, integer SUM/PROD
 * wrap, float MIN/MAX propagate NaN, fp16/bf16 compute in float and round to nearest even. All three
 * pointers must be device-accessible; out may alias a or b exactly (not partially).
 * count 0 enqueues nothing; an out-of-range dt or op returns cudaErrorInvalidValue. Otherwise returns
 * cudaGetLastError() after the launch. */
cudaError_t tally_cuda_reduce(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt, tally_op_t op,
                              cudaStream_t stream);

/* AVG's last step, like tally_reduce_finish_avg: buf[i] /= n; integers truncate toward zero (C
 * division), fp16/bf16 go through float and round to nearest even. n <= 1 or count 0 enqueues
 * nothing; an out-of-range dt returns cudaErrorInvalidValue. */
cudaError_t tally_cuda_finish_avg(void *buf, size_t count, tally_datatype_t dt, int n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* TALLY_CUDA_REDUCE_KERNELS_H */
