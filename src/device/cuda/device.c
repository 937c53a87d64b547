/* The CUDA runtime behind struct tally_device_ops: pointer kinds from cudaPointerGetAttributes,
 * copies with cudaMemcpyAsync, host hand-offs with cudaLaunchHostFunc, the wait and reduction
 * kernels, and cudaIpc handles for src/device/ipc. Only
 * the calling (user's) thread calls CUDA here; Tally's own threads never do. */
#include "device/device.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "reduce_kernels.h"
#include "wait_kernel.h"

#define CUDA_TRY(what, call)                                                                          \
  do {                                                                                                \
    cudaError_t cuda_err_ = (call);                                                                   \
    if (cuda_err_ != cudaSuccess)                                                                     \
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s failed: %s (%s)", what, cudaGetErrorString(cuda_err_), \
                         cudaGetErrorName(cuda_err_));                                                \
  } while (0)

static enum tally_mem_kind cuda_mem_kind(const void *p) {
  struct cudaPointerAttributes attr;
  if (!p || cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError(); /* an unknown pointer is host memory, not a sticky error */
    return TALLY_MEM_HOST;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice: return TALLY_MEM_DEVICE;
    case cudaMemoryTypeManaged: return TALLY_MEM_MANAGED;
    case cudaMemoryTypeHost: return TALLY_MEM_PINNED;
    default: return TALLY_MEM_HOST;
  }
}

static void *cuda_default_stream(void) { return (void *)cudaStreamLegacy; }

static tally_result_t cuda_copy_async(void *dst, const void *src, size_t bytes, void *stream) {
  CUDA_TRY("cudaMemcpyAsync", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, (cudaStream_t)stream));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_host_call_async(void *stream, void (*fn)(void *), void *arg) {
  CUDA_TRY("cudaLaunchHostFunc", cudaLaunchHostFunc((cudaStream_t)stream, fn, arg));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_wait_flag_async(void *stream, volatile uint32_t *flag, void *poison, size_t poison_bytes) {
  void *on_device = NULL;
  CUDA_TRY("cudaHostGetDevicePointer", cudaHostGetDevicePointer(&on_device, (void *)flag, 0));
  CUDA_TRY("launching the wait kernel", tally_cuda_wait_flag(on_device, poison, poison_bytes, (cudaStream_t)stream));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_stream_sync(void *stream) {
  CUDA_TRY("cudaStreamSynchronize", cudaStreamSynchronize((cudaStream_t)stream));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_is_capturing(void *stream, int *capturing) {
  enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_TRY("cudaStreamIsCapturing", cudaStreamIsCapturing((cudaStream_t)stream, &status));
  *capturing = status == cudaStreamCaptureStatusActive;
  return TALLY_SUCCESS;
}

static tally_result_t cuda_alloc_pinned(void **p, size_t bytes) {
  CUDA_TRY("cudaHostAlloc", cudaHostAlloc(p, bytes, cudaHostAllocPortable | cudaHostAllocMapped));
  return TALLY_SUCCESS;
}

static void cuda_free_pinned(void *p) { (void)cudaFreeHost(p); }

static tally_result_t cuda_alloc_device(void **p, size_t bytes) {
  CUDA_TRY("cudaMalloc", cudaMalloc(p, bytes));
  return TALLY_SUCCESS;
}

static void cuda_free_device(void *p) { (void)cudaFree(p); }

static tally_result_t cuda_ipc_export(void *p, void *handle) {
  CUDA_TRY("cudaIpcGetMemHandle", cudaIpcGetMemHandle((cudaIpcMemHandle_t *)handle, p));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_ipc_import(const void *handle, void **p) {
  cudaIpcMemHandle_t h;
  memcpy(&h, handle, sizeof h);
  CUDA_TRY("cudaIpcOpenMemHandle", cudaIpcOpenMemHandle(p, h, cudaIpcMemLazyEnablePeerAccess));
  return TALLY_SUCCESS;
}

static void cuda_ipc_close(void *p) { (void)cudaIpcCloseMemHandle(p); }

static tally_result_t cuda_reduce_async(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt,
                                        tally_op_t op, void *stream) {
  CUDA_TRY("the reduction kernel", tally_cuda_reduce(out, a, b, count, dt, op, (cudaStream_t)stream));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_finish_avg_async(void *buf, size_t count, tally_datatype_t dt, int n, void *stream) {
  CUDA_TRY("the averaging kernel", tally_cuda_finish_avg(buf, count, dt, n, (cudaStream_t)stream));
  return TALLY_SUCCESS;
}

static tally_result_t cuda_pci_bus_id(char *buf, size_t len) {
  int device = 0;
  CUDA_TRY("cudaGetDevice", cudaGetDevice(&device));
  CUDA_TRY("cudaDeviceGetPCIBusId", cudaDeviceGetPCIBusId(buf, (int)len, device));
  return TALLY_SUCCESS;
}

static const struct tally_device_ops cuda_ops = {
    .name = "cuda",
    .mem_kind = cuda_mem_kind,
    .default_stream = cuda_default_stream,
    .copy_async = cuda_copy_async,
    .host_call_async = cuda_host_call_async,
    .wait_flag_async = cuda_wait_flag_async,
    .stream_sync = cuda_stream_sync,
    .is_capturing = cuda_is_capturing,
    .alloc_pinned = cuda_alloc_pinned,
    .free_pinned = cuda_free_pinned,
    .ipc_handle_bytes = sizeof(cudaIpcMemHandle_t),
    .alloc_device = cuda_alloc_device,
    .free_device = cuda_free_device,
    .ipc_export = cuda_ipc_export,
    .ipc_import = cuda_ipc_import,
    .ipc_close = cuda_ipc_close,
    .reduce_async = cuda_reduce_async,
    .finish_avg_async = cuda_finish_avg_async,
    .pci_bus_id = cuda_pci_bus_id,
};

const struct tally_device_ops *tally_cuda_device_open(const char **why) {
  static char reason[256];
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    snprintf(reason, sizeof reason, "no CUDA device (cudaGetDeviceCount: %s)",
             err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    (void)cudaGetLastError();
    *why = reason;
    return NULL;
  }
  return &cuda_ops;
}
