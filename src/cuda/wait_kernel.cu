/* One thread that spins, gently, on a flag in mapped host memory: the device side of a
 * stream-ordered collective's hand-off. The host's release store of 1 comes after it wrote the
 * result, and copies enqueued after this kernel start only once it has returned. */
#include "wait_kernel.h"

static __global__ void wait_flag_kernel(const volatile uint32_t *flag) {
  while (*flag != 1) __nanosleep(1000);
  __threadfence_system();
}

extern "C" cudaError_t tally_cuda_wait_flag(const volatile uint32_t *flag, cudaStream_t stream) {
  wait_flag_kernel<<<1, 1, 0, stream>>>(flag);
  return cudaGetLastError();
}
