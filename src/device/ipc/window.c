/* Opening and closing the CUDA IPC window (window.h). */
#include "window.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/error.h"
#include "core/log.h"
#include "device/stream_queue.h"

void tally_ipc_window_close(struct tally_ipc_window *w) {
  if (!w) return;
  for (int r = 0; r < w->nranks; r++)
    if (w->peer[r] && r != w->rank) w->dev->ipc_close(w->peer[r]);
  if (w->mine) w->dev->free_device(w->mine);
  free(w->peer);
  free(w);
}

/* This rank's part: allocate and export. Returns 0, or -1 after logging why not. */
static int export_mine(struct tally_ipc_window *w, void *handle) {
  if (w->dev->alloc_device(&w->mine, 2 * w->half) != TALLY_SUCCESS) {
    w->mine = NULL;
    TLOG_WARN(TALLY_SUBSYS_INIT, "CUDA IPC window: %s", tally_error_message());
    return -1;
  }
  if (w->dev->ipc_export(w->mine, handle) != TALLY_SUCCESS) {
    TLOG_WARN(TALLY_SUBSYS_INIT, "CUDA IPC window: %s", tally_error_message());
    return -1;
  }
  return 0;
}

static int import_peers(struct tally_ipc_window *w, const char *handles) {
  size_t hb = w->dev->ipc_handle_bytes;
  for (int r = 0; r < w->nranks; r++) {
    if (r == w->rank) continue;
    if (w->dev->ipc_import(handles + (size_t)r * hb, &w->peer[r]) != TALLY_SUCCESS) {
      w->peer[r] = NULL;
      TLOG_WARN(TALLY_SUBSYS_INIT, "CUDA IPC window: mapping rank %d's buffer: %s", r, tally_error_message());
      return -1;
    }
  }
  return 0;
}

static tally_result_t run_host(struct tally_comm *comm, const struct tally_coll_desc *d) {
  tally_result_t r = TALLY_SUCCESS;
  if (tally_stream_run_host(comm, "opening the CUDA IPC window", d, &r) != 0)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "the CUDA IPC window was opened before the stream queue");
  return r;
}

tally_result_t tally_ipc_window_open(struct tally_comm *comm, const struct tally_device_ops *dev, size_t half_bytes,
                                     struct tally_ipc_window **window) {
  *window = NULL;
  size_t hb = dev->ipc_handle_bytes;
  struct tally_ipc_window *w = calloc(1, sizeof *w);
  char *handles = calloc((size_t)comm->nranks, hb);
  if (w) w->peer = calloc((size_t)comm->nranks, sizeof *w->peer);
  if (!w || !handles || !w->peer) {
    if (w) free(w->peer);
    free(w);
    free(handles);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the CUDA IPC window's handles");
  }
  w->dev = dev;
  w->half = half_bytes;
  w->nranks = comm->nranks;
  w->rank = comm->rank;
  int32_t ok = export_mine(w, handles + (size_t)comm->rank * hb) == 0, all_ok = 0;
  w->peer[comm->rank] = w->mine;

  struct tally_coll_desc share = {
      TALLY_COLL_ALLGATHER, handles + (size_t)comm->rank * hb, handles, hb, TALLY_UINT8, TALLY_SUM, 0, 0, 0, 0, 0};
  tally_result_t r = run_host(comm, &share);
  if (r == TALLY_SUCCESS && ok) ok = import_peers(w, handles) == 0;
  struct tally_coll_desc agree = {TALLY_COLL_ALLREDUCE, &ok, &all_ok, 1, TALLY_INT32, TALLY_MIN, 0, 0, 0, 0, 0};
  if (r == TALLY_SUCCESS) r = run_host(comm, &agree);
  free(handles);
  if (r != TALLY_SUCCESS || !all_ok) {
    if (r == TALLY_SUCCESS)
      TLOG_INFO(TALLY_SUBSYS_INIT,
                "CUDA IPC window: not every rank could open it (see the warnings); device "
                "collectives stage through host memory instead");
    tally_ipc_window_close(w);
    return r;
  }
  *window = w;
  return TALLY_SUCCESS;
}
