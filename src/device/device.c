/* Chooses the device runtime once per process: CUDA when this build has it and the machine has a
 * device, or whatever a test installed with tally_device_override. */
#include "device.h"

#include <pthread.h>

#include "core/log.h"

static pthread_once_t device_once = PTHREAD_ONCE_INIT;
static const struct tally_device_ops *device_ops;
static const char *device_absent_reason = "this build of Tally has no CUDA support (rebuild with -DTALLY_CUDA=ON)";
static int device_overridden;

static void open_device(void) {
  if (device_overridden) return;
#ifdef TALLY_HAVE_CUDA
  device_ops = tally_cuda_device_open(&device_absent_reason);
  if (device_ops)
    TLOG_INFO(TALLY_SUBSYS_INIT, "device runtime: %s", device_ops->name);
  else
    TLOG_INFO(TALLY_SUBSYS_INIT, "no device runtime: %s", device_absent_reason);
#endif
}

const struct tally_device_ops *tally_device(void) {
  pthread_once(&device_once, open_device);
  return device_ops;
}

const char *tally_device_absent_reason(void) {
  pthread_once(&device_once, open_device);
  return device_absent_reason;
}

void tally_device_override(const struct tally_device_ops *ops) {
  device_overridden = 1;
  device_ops = ops;
  if (!ops) device_absent_reason = "the device runtime was switched off (tally_device_override)";
}

int tally_device_memory(const struct tally_device_ops *dev, const void *p) {
  if (!dev || !p) return 0;
  enum tally_mem_kind kind = dev->mem_kind(p);
  return kind == TALLY_MEM_DEVICE || kind == TALLY_MEM_MANAGED;
}

const char *tally_device_gpu_bus_id(char *buf, size_t len) {
  const struct tally_device_ops *dev = tally_device();
  buf[0] = '\0';
  if (dev && dev->pci_bus_id && dev->pci_bus_id(buf, len) != TALLY_SUCCESS) buf[0] = '\0';
  return buf;
}
