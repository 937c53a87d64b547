/* Device memory and streams behind one vtable: the CUDA runtime in CUDA builds (cuda/device.c),
 * an emulation in the tests (tests/emulated_device.c), none otherwise. The collectives use it to
 * tell device pointers from host ones and to run stream-ordered calls (stream_queue.h). */
#ifndef TALLY_DEVICE_H
#define TALLY_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

enum tally_mem_kind {
  TALLY_MEM_HOST,    /* pageable host memory, or any pointer the device runtime does not know */
  TALLY_MEM_PINNED,  /* host memory registered with the device: host code may use it directly */
  TALLY_MEM_DEVICE,  /* device memory: only the device and its copies may touch it */
  TALLY_MEM_MANAGED, /* migrates on demand; Tally copies it like device memory */
};

/* Every function returning tally_result_t records a sentence with TALLY_ERROR on failure. */
struct tally_device_ops {
  const char *name;
  enum tally_mem_kind (*mem_kind)(const void *p);
  void *(*default_stream)(void); /* what a NULL stream stands for (CUDA's legacy default stream) */
  tally_result_t (*copy_async)(void *dst, const void *src, size_t bytes, void *stream);
  /* fn(arg) runs once the stream reaches this point, on a thread of the device runtime; fn must
   * neither block nor call the device runtime. */
  tally_result_t (*host_call_async)(void *stream, void (*fn)(void *), void *arg);
  /* The stream waits until *flag (in memory from alloc_pinned) is 1 or 2; at 2 (the call failed)
   * it first fills `poison_bytes` at `poison` (device-accessible; NULL: nothing) with 0xff. */
  tally_result_t (*wait_flag_async)(void *stream, volatile uint32_t *flag, void *poison, size_t poison_bytes);
  tally_result_t (*stream_sync)(void *stream);
  /* *capturing = 1 while the stream is being captured into a graph (work is recorded, not run). */
  tally_result_t (*is_capturing)(void *stream, int *capturing);
  tally_result_t (*alloc_pinned)(void **p, size_t bytes);
  void (*free_pinned)(void *p);

  /* Device memory other processes of this host can map (src/device/ipc): export writes an
   * ipc_handle_bytes handle of an allocation made by alloc_device; import maps a peer's.
   * ipc_handle_bytes is 0 where the device cannot. */
  size_t ipc_handle_bytes;
  tally_result_t (*alloc_device)(void **p, size_t bytes);
  void (*free_device)(void *p);
  tally_result_t (*ipc_export)(void *p, void *handle);
  tally_result_t (*ipc_import)(const void *handle, void **p);
  void (*ipc_close)(void *p);
  /* The reduction kernels, enqueued on the stream (device-accessible pointers; as reduce.h). */
  tally_result_t (*reduce_async)(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt,
                                 tally_op_t op, void *stream);
  tally_result_t (*finish_avg_async)(void *buf, size_t count, tally_datatype_t dt, int n, void *stream);
  /* The PCI bus id ("0000:3b:00.0") of the calling thread's current device; NULL where unknown. */
  tally_result_t (*pci_bus_id)(char *buf, size_t len);
};

/* The device runtime in use, or NULL when this build or machine has none; decided on first use. */
const struct tally_device_ops *tally_device(void);

/* Why tally_device() is NULL, for error messages ("this build of Tally has no CUDA support"). */
const char *tally_device_absent_reason(void);

/* Whether `p` is memory only the device may touch directly (device or managed: Tally copies both);
 * 0 where there is no runtime (`dev` NULL) or no pointer. */
int tally_device_memory(const struct tally_device_ops *dev, const void *p);

/* The PCI bus id of the GPU this thread drives, for the topology; "" when there is none or the
 * runtime cannot say. Returns buf. */
const char *tally_device_gpu_bus_id(char *buf, size_t len);

/* Tests: replaces the device runtime for this process (NULL: none). Call before any collective. */
void tally_device_override(const struct tally_device_ops *ops);

/* The CUDA runtime's vtable, or NULL (with *why set) when CUDA cannot be used here. */
const struct tally_device_ops *tally_cuda_device_open(const char **why);

#endif
