/* The CUDA IPC window of a communicator whose ranks share one host: each rank allocates one device
 * buffer in two halves (input, result), exports its IPC handle, and maps every other rank's, once,
 * so that kernels and copies on one rank's stream read the others' buffers directly. */
#ifndef TALLY_CUDAIPC_WINDOW_H
#define TALLY_CUDAIPC_WINDOW_H

#include <stddef.h>

#include "device/device.h"

struct tally_comm;

struct tally_ipc_window {
  const struct tally_device_ops *dev;
  size_t half; /* bytes in each half */
  int nranks, rank;
  void *mine;  /* this rank's allocation */
  void **peer; /* [nranks]: each rank's allocation as mapped here (peer[rank] == mine) */
};

/* The input and result halves of rank r's buffer. */
static inline char *tally_ipc_input(const struct tally_ipc_window *w, int r) { return (char *)w->peer[r]; }
static inline char *tally_ipc_result(const struct tally_ipc_window *w, int r) { return (char *)w->peer[r] + w->half; }

/* Collective (two host-memory collectives through the communicator's stream queue): allocates,
 * exports and maps. When any rank cannot (no IPC on its device, out of memory), every rank gets
 * *window NULL and a log line saying why, and the caller stages through host memory instead;
 * an error is returned only when the exchange itself failed. */
tally_result_t tally_ipc_window_open(struct tally_comm *comm, const struct tally_device_ops *dev, size_t half_bytes,
                                     struct tally_ipc_window **window);
void tally_ipc_window_close(struct tally_ipc_window *w);

#endif
