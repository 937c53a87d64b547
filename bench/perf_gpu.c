/* perf_gpu.c: tally-perf --gpu, the buffers in GPU memory and the calls on a CUDA stream, timed to
 * the stream's completion; and the device-to-device cudaMemcpy bandwidth measured in the same run
 * (the physical limit a one-GPU allreduce is compared with). Built with CUDA when the library is;
 * otherwise --gpu says the build has none. Each rank uses GPU rank % (number of GPUs). */
#include <stdio.h>
#include <stdlib.h>

#include "perf.h"

#ifdef TALLY_PERF_CUDA
#include <cuda_runtime_api.h>

static void check(const struct bench *b, cudaError_t err, const char *what) {
  if (err == cudaSuccess) return;
  fprintf(stderr, "tally-perf: rank %d: %s: %s\n", b->rank, what, cudaGetErrorString(err));
  exit(1);
}

int gpu_open(struct bench *b) {
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    if (b->rank == 0)
      fprintf(stderr, "tally-perf: --gpu: no CUDA device: skipped (%s)\n",
              err != cudaSuccess ? cudaGetErrorString(err) : "zero devices");
    return STATUS_SKIPPED;
  }
  check(b, cudaSetDevice(b->rank % devices), "cudaSetDevice");
  cudaStream_t stream;
  check(b, cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  b->stream = stream;
  return 0;
}

void *gpu_alloc(const struct bench *b, size_t bytes) {
  void *p = NULL;
  check(b, cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  check(b, cudaMemset(p, 0, bytes ? bytes : 1), "cudaMemset");
  return p;
}

void gpu_free(void *p) { cudaFree(p); }

void gpu_sync(const struct bench *b) { check(b, cudaStreamSynchronize(b->stream), "cudaStreamSynchronize"); }

void gpu_copy(const struct bench *b, void *dst, const void *src, size_t bytes) {
  check(b, cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
}

double gpu_copy_bandwidth(const struct bench *b, size_t bytes, int iters) {
  void *src = gpu_alloc(b, bytes), *dst = gpu_alloc(b, bytes);
  cudaEvent_t start, end;
  check(b, cudaEventCreate(&start), "cudaEventCreate");
  check(b, cudaEventCreate(&end), "cudaEventCreate");
  check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b->stream), "cudaMemcpyAsync");
  check(b, cudaEventRecord(start, b->stream), "cudaEventRecord");
  for (int i = 0; i < iters; i++)
    check(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b->stream), "cudaMemcpyAsync");
  check(b, cudaEventRecord(end, b->stream), "cudaEventRecord");
  check(b, cudaEventSynchronize(end), "cudaEventSynchronize");
  float ms = 0;
  check(b, cudaEventElapsedTime(&ms, start, end), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  gpu_free(src);
  gpu_free(dst);
  return ms > 0 ? (double)bytes * iters / 1e9 / (ms * 1e-3) : 0;
}

#else

int gpu_open(struct bench *b) {
  if (b->rank == 0) fprintf(stderr, "tally-perf: --gpu: this build has no CUDA support (build with -DTALLY_CUDA=ON)\n");
  return 2;
}

void *gpu_alloc(const struct bench *b, size_t bytes) {
  (void)b;
  (void)bytes;
  abort(); /* unreachable: gpu_open refused */
}

void gpu_free(void *p) { (void)p; }
void gpu_sync(const struct bench *b) { (void)b; }

void gpu_copy(const struct bench *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  (void)dst;
  (void)src;
  (void)bytes;
  abort();
}

double gpu_copy_bandwidth(const struct bench *b, size_t bytes, int iters) {
  (void)b;
  (void)bytes;
  (void)iters;
  return 0;
}

#endif
