/* One thread that spins, gently, on a flag in mapped host memory: the device side of a
 * stream-ordered collective's hand-off. The host's release store of 1 (done) or 2 (failed) comes
 * after it wrote the result, and copies enqueued after this kernel start only once it has
 * returned. On failure the block poisons the caller's result, so that bad data is loud. */
#include "wait_kernel.h"

enum { WAIT_THREADS = 256 };

static __global__ void wait_flag_kernel(const volatile uint32_t *flag, unsigned char *poison, size_t poison_bytes) {
  __shared__ uint32_t seen;
  if (threadIdx.x == 0) {
    uint32_t v;
    while ((v = *flag) != 1 && v != 2) __nanosleep(1000);
    __threadfence_system();
    seen = v;
  }
  __syncthreads();
  if (seen != 2 || !poison) return;
  for (size_t i = threadIdx.x; i < poison_bytes; i += WAIT_THREADS) poison[i] = 0xff;
}

extern "C" cudaError_t tally_cuda_wait_flag(const volatile uint32_t *flag, void *poison, size_t poison_bytes,
                                            cudaStream_t stream) {
  wait_flag_kernel<<<1, WAIT_THREADS, 0, stream>>>(flag, (unsigned char *)poison, poison_bytes);
  return cudaGetLastError();
}
