/* The stream-ordered test bodies (stream_cases.h) on the emulated device (emulated_device.h). */
#define _GNU_SOURCE
#include "stream_cases.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "device_cases.h"
#include "emulated_device.h"
#include "harness.h"
#include "p2p_cases.h"

/* --- kernels: stream-ordered host work ----------------------------------------------------------- */

struct copy_job {
  void *dst;
  const void *src;
  size_t bytes;
};

static void run_copy_job(void *arg) {
  const struct copy_job *job = arg;
  memcpy(job->dst, job->src, job->bytes);
}

/* --- one collective, device against host -------------------------------------------------------- */

enum placement { DEVICE_TO_DEVICE, DEVICE_IN_PLACE, HOST_TO_DEVICE, DEVICE_TO_PINNED, MANAGED_TO_MANAGED, PLACEMENTS };
static const char *placement_name[] = {"device->device", "device in place", "host->device", "device->pinned",
                                       "managed->managed"};

static void *alloc_kind(enum tally_mem_kind kind, size_t bytes) {
  switch (kind) {
    case TALLY_MEM_DEVICE: return emu_malloc(bytes);
    case TALLY_MEM_MANAGED: return emu_malloc_managed(bytes);
    case TALLY_MEM_PINNED: return emu_malloc_pinned(bytes);
    default: return malloc(bytes);
  }
}

static void free_kind(enum tally_mem_kind kind, void *p) {
  if (kind == TALLY_MEM_HOST)
    free(p);
  else
    emu_free(p);
}

/* Runs c on host memory for the reference, then on the placement's buffers through a stream that
 * is held at a gate until the call has returned: the input is written by a kernel just before the
 * collective and the result read by one just after, with no host synchronization between. */
static int check_call(tally_comm_t comm, int rank, int n, const struct device_call *c, enum placement where,
                      struct emu_stream *s) {
  size_t send_bytes, recv_bytes;
  device_call_bytes(c, n, &send_bytes, &recv_bytes);
  size_t es = tally_datatype_size(c->dt);
  char *input = malloc(send_bytes), *want = malloc(recv_bytes), *got = malloc(recv_bytes);
  device_call_fill(input, send_bytes / es, c->dt, rank);
  memset(want, 0, recv_bytes);
  tally_result_t r = device_call_issue(c, input, want, comm, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "host reference %s: %s", c->coll, tally_comm_last_error(comm));

  enum tally_mem_kind send_kind = where == HOST_TO_DEVICE       ? TALLY_MEM_HOST
                                  : where == MANAGED_TO_MANAGED ? TALLY_MEM_MANAGED
                                                                : TALLY_MEM_DEVICE;
  enum tally_mem_kind recv_kind = where == DEVICE_TO_PINNED     ? TALLY_MEM_PINNED
                                  : where == MANAGED_TO_MANAGED ? TALLY_MEM_MANAGED
                                                                : TALLY_MEM_DEVICE;
  char *send, *recv, *whole = NULL;
  if (where == DEVICE_IN_PLACE) { /* NCCL's in-place layouts */
    whole = emu_malloc(send_bytes > recv_bytes ? send_bytes : recv_bytes);
    device_call_in_place(c, rank, whole, send_bytes, recv_bytes, &send, &recv);
  } else {
    send = alloc_kind(send_kind, send_bytes);
    recv = alloc_kind(recv_kind, recv_bytes);
  }
  if (send_kind == TALLY_MEM_HOST) memset(send, 0xa5, send_bytes); /* garbage until the kernel runs */

  /* A rank whose used buffers are all host memory blocks until its stream is done: no gate then. */
  int uses_send = device_call_uses_send(c, rank), uses_recv = device_call_uses_recv(c, rank);
  int on_stream = (uses_send && send_kind != TALLY_MEM_HOST) || (uses_recv && recv_kind != TALLY_MEM_PINNED);
  struct emu_gate *gate = emu_gate_create();
  struct copy_job write_input = {send, input, send_bytes}, read_result = {got, recv, recv_bytes};
  if (on_stream) emu_gate_wait_on(s, gate);
  emu_launch(s, run_copy_job, &write_input);
  r = device_call_issue(c, send, recv, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  emu_gate_open(gate); /* only now can the stream run: the call did not wait for it */
  emu_stream_synchronize(s);
  emu_gate_destroy(gate);

  int bad = 0;
  if (r != TALLY_SUCCESS)
    bad = harness_fail(rank, "%s %s: %s", c->coll, placement_name[where], tally_comm_last_error(comm));
  else if (uses_recv && memcmp(got, want, recv_bytes) != 0)
    bad = harness_fail(rank, "%s %s %s %s count %zu: the result differs from the host-memory call", c->coll,
                       placement_name[where], tally_datatype_name(c->dt), tally_op_name(c->op), c->count);
  if (whole) {
    emu_free(whole);
  } else {
    free_kind(send_kind, send);
    free_kind(recv_kind, recv);
  }
  free(input);
  free(want);
  free(got);
  return bad;
}

/* arg: NULL, or "ipc" for TALLY_CUDAIPC_MB=1 (then also 300000 floats, over a window half, and the
 * window must have been used). */
int stream_every_collective(tally_comm_t comm, int rank, int n, void *arg) {
  int ipc = arg != NULL;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  int bad = 0;
  for (int dt = 0; dt < TALLY_NUM_DATATYPES; dt++)
    for (int op = 0; op < TALLY_NUM_OPS; op++)
      bad += check_call(comm, rank, n, &(struct device_call){"allreduce", dt, op, 37, 0}, DEVICE_TO_DEVICE, s);
  /* 40000 floats: larger than a staging block's minimum; 300000: two chunks of a 1 MiB window */
  const size_t counts[] = {1, 40000, 300000};
  for (int k = 0; k < DEVICE_CALL_NCOLLS; k++)
    for (int where = 0; where < PLACEMENTS; where++)
      for (int ci = 0; ci < (ipc ? 3 : 2); ci++) {
        struct device_call c = {device_call_colls[k], TALLY_FLOAT32, TALLY_SUM, counts[ci], n - 1};
        /* Through the window, a root's host buffer where the others have device ones is refused
         * (mixed_kinds_through_the_window_are_refused). */
        int mixed = where == HOST_TO_DEVICE || where == DEVICE_TO_PINNED;
        if (ipc && device_call_rooted(&c) && mixed) continue;
        bad += check_call(comm, rank, n, &c, where, s);
      }
  if (ipc && n > 1 && !comm->ipc_window) bad += harness_fail(rank, "the CUDA IPC window was never opened");
  emu_stream_destroy(s);
  return bad;
}

/* The same through src/device/ipc: device-to-device, in-place and managed calls take the window
 * (kernels reading the other ranks' buffers), the host and pinned ones are staged, on one comm. */

/* --- order: a host-memory call waits for earlier stream calls ---------------------------------- */

struct delayed_open {
  struct emu_gate *gate;
  long delay_ms;
};

static void *open_later(void *arg) {
  struct delayed_open *d = arg;
  struct timespec ts = {d->delay_ms / 1000, d->delay_ms % 1000 * 1000000};
  nanosleep(&ts, NULL);
  emu_gate_open(d->gate);
  return NULL;
}

/* Rank 0's stream is released at once and its stream call starts before its host call; the others'
 * streams are released 200 ms later. Were the host call to overtake the stream call on the slow
 * ranks, it would meet rank 0's stream call and both results would be wrong. */
int stream_host_call_waits(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  enum { COUNT = 64 };
  float on_host_in[COUNT], on_host_out[COUNT], got[COUNT], input[COUNT];
  for (int i = 0; i < COUNT; i++) {
    input[i] = (float)(rank + 1);
    on_host_in[i] = (float)(100 * (rank + 1));
  }
  float *dev = emu_malloc(sizeof input);
  struct emu_gate *gate = emu_gate_create();
  struct delayed_open later = {gate, rank == 0 ? 0 : 200};
  struct copy_job write_input = {dev, input, sizeof input}, read_result = {got, dev, sizeof got};
  emu_gate_wait_on(s, gate);
  emu_launch(s, run_copy_job, &write_input);
  tally_result_t r1 = tally_allreduce(dev, dev, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  pthread_t opener;
  pthread_create(&opener, NULL, open_later, &later);
  if (rank == 0) { /* let its stream call start (it then waits for the others' inside the collective) */
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  }
  tally_result_t r2 = tally_allreduce(on_host_in, on_host_out, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  pthread_join(opener, NULL);
  emu_stream_synchronize(s);
  int bad = 0;
  float want_stream = (float)(n * (n + 1) / 2), want_host = 100 * want_stream;
  if (r1 != TALLY_SUCCESS || r2 != TALLY_SUCCESS) bad = harness_fail(rank, "%s", tally_comm_last_error(comm));
  for (int i = 0; i < COUNT && !bad; i++)
    if (got[i] != want_stream || on_host_out[i] != want_host)
      bad = harness_fail(rank, "element %d: stream call %g (want %g), host call %g (want %g)", i, got[i], want_stream,
                         on_host_out[i], want_host);
  emu_gate_destroy(gate);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* Host buffers with a stream: the call blocks, after the stream's earlier work (which writes the input). */
int stream_host_memory_with_stream(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  int input[8], out[8], fresh[8];
  for (int i = 0; i < 8; i++) {
    input[i] = -1;
    fresh[i] = rank + 1;
  }
  struct copy_job write_input = {input, fresh, sizeof fresh};
  emu_launch(s, run_copy_job, &write_input);
  tally_result_t r = tally_allreduce(input, out, 8, TALLY_INT32, TALLY_SUM, comm, s);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "%s", tally_comm_last_error(comm)) : 0;
  for (int i = 0; i < 8 && !bad; i++)
    if (out[i] != n * (n + 1) / 2)
      bad = harness_fail(rank, "out[%d] = %d: the input was read before the stream wrote it", i, out[i]);
  emu_stream_destroy(s);
  return bad;
}

/* --- graphs ---------------------------------------------------------------------------------------- */

struct replay_input {
  int *iteration; /* read when the kernel runs, not when it was captured */
  int rank;
  float *dev;
};

static void write_replay_input(void *arg) {
  const struct replay_input *in = arg;
  for (int i = 0; i < 16; i++) in->dev[i] = (float)((in->rank + 1) * *in->iteration);
}

int stream_graph_replay(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  float *dev = emu_malloc(16 * sizeof(float)), got[16];
  int iteration = 0;
  struct replay_input in = {&iteration, rank, dev};
  struct copy_job read_result = {got, dev, sizeof got};
  emu_capture_begin(s);
  emu_launch(s, write_replay_input, &in);
  tally_result_t r = tally_allreduce(dev, dev, 16, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  struct emu_graph *g = emu_capture_end(s);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "capture: %s", tally_comm_last_error(comm)) : 0;
  for (iteration = 1; iteration <= 3 && !bad; iteration++) {
    emu_graph_launch(g, s);
    emu_stream_synchronize(s);
    float want = (float)(iteration * n * (n + 1) / 2);
    for (int i = 0; i < 16 && !bad; i++)
      if (got[i] != want) bad = harness_fail(rank, "replay %d: element %d is %g, want %g", iteration, i, got[i], want);
  }
  emu_graph_destroy(g);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* --- failures ---------------------------------------------------------------------------------------- */

/* Rank 1 asks for one element more: the stream must still finish, the device result must be
 * poisoned, and the error must be reported asynchronously and by the next call. */
int stream_mismatch(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  float input[5] = {1, 2, 3, 4, 5}, got[5];
  float *dev = emu_malloc(sizeof input);
  struct copy_job write_input = {dev, input, sizeof input}, read_result = {got, dev, sizeof got};
  emu_launch(s, run_copy_job, &write_input);
  size_t count = rank == 1 ? 5 : 4;
  tally_result_t r = tally_allreduce(dev, dev, count, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  emu_stream_synchronize(s);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "the enqueue itself failed: %s", tally_comm_last_error(comm)) : 0;
  tally_result_t async = TALLY_SUCCESS;
  if (tally_comm_get_async_error(comm, &async) != TALLY_SUCCESS || async != TALLY_ERR_MISMATCH)
    bad += harness_fail(rank, "async error %s, want %s", tally_result_string(async),
                        tally_result_string(TALLY_ERR_MISMATCH));
  uint32_t poisoned;
  memcpy(&poisoned, &got[0], sizeof poisoned);
  if (poisoned != 0xffffffffu) bad += harness_fail(rank, "the failed call's result is %g, not poisoned", got[0]);
  r = tally_allreduce(dev, dev, count, TALLY_FLOAT32, TALLY_SUM, comm, s);
  bad += harness_expect(rank, comm, r, TALLY_ERR_INVALID_USAGE, "error state");
  r = tally_allreduce(input, got, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  bad += harness_expect(rank, comm, r, TALLY_ERR_INVALID_USAGE, "error state");
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* With the window, a broadcast whose root sends from host memory while the others receive into
 * device memory is staged on the root and windowed elsewhere: it must fail as a mismatch on every
 * rank, not hang or deliver garbage. */
int stream_mixed_kinds_through_window(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  float host[4] = {1, 2, 3, 4}, got[4];
  float *dev = emu_malloc(sizeof host);
  /* A consistent call first opens the window, so the mixed one meets the per-call agreement. */
  tally_result_t r = tally_allreduce(dev, dev, 4, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_stream_synchronize(s);
  if (r != TALLY_SUCCESS || !comm->ipc_window) return harness_fail(rank, "no window: %s", tally_comm_last_error(comm));
  r = rank == 0 ? tally_broadcast(host, dev, 4, TALLY_FLOAT32, 0, comm, s)
                : tally_broadcast(NULL, dev, 4, TALLY_FLOAT32, 0, comm, s);
  struct copy_job read_result = {got, dev, sizeof got};
  emu_launch(s, run_copy_job, &read_result);
  emu_stream_synchronize(s);
  tally_result_t async = TALLY_SUCCESS;
  tally_comm_get_async_error(comm, &async);
  int bad = 0;
  if (r != TALLY_SUCCESS) bad = harness_fail(rank, "the enqueue failed: %s", tally_comm_last_error(comm));
  if (async != TALLY_ERR_MISMATCH)
    bad += harness_fail(rank, "async error %s, want a mismatch: %s", tally_result_string(async),
                        tally_comm_last_error(comm));
  uint32_t bits;
  memcpy(&bits, &got[0], sizeof bits);
  if (bits != 0xffffffffu) bad += harness_fail(rank, "the result is %g, not poisoned", got[0]);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* Through the window the ranks would otherwise read each other's buffers with different counts. */

/* Argument errors are found at the call, before anything is enqueued. */
int stream_bad_arguments(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  float *dev = emu_malloc(16);
  int bad = harness_expect(rank, comm, tally_allreduce(dev, dev, 4, (tally_datatype_t)99, TALLY_SUM, comm, s),
                           TALLY_ERR_INVALID_ARGUMENT, "datatype 99");
  bad += harness_expect(rank, comm, tally_allreduce(dev, NULL, 4, TALLY_FLOAT32, TALLY_SUM, comm, s),
                        TALLY_ERR_INVALID_ARGUMENT, "recvbuf is NULL");
  tally_result_t async;
  bad += harness_expect(rank, comm, tally_comm_get_async_error(comm, NULL), TALLY_ERR_INVALID_ARGUMENT, "NULL");
  if (tally_comm_get_async_error(comm, &async) != TALLY_SUCCESS || async != TALLY_SUCCESS)
    bad += harness_fail(rank, "argument errors must not put the communicator in error state");
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* With TALLY_TIMEOUT=1: a host call behind a stream call whose stream never gets there (a gate the
 * test opens only afterwards) times out, saying why, and leaves the communicator usable. */
int stream_host_call_behind_a_stuck_stream(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  float input[4] = {1, 1, 1, 1}, got[4], out[4];
  float *dev = emu_malloc(sizeof input);
  struct emu_gate *gate = emu_gate_create();
  struct copy_job write_input = {dev, input, sizeof input}, read_result = {got, dev, sizeof got};
  emu_gate_wait_on(s, gate);
  emu_launch(s, run_copy_job, &write_input);
  tally_result_t r = tally_allreduce(dev, dev, 4, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "enqueue: %s", tally_comm_last_error(comm)) : 0;
  r = tally_allreduce(input, out, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  bad += harness_expect(rank, comm, r, TALLY_ERR_TIMEOUT, "earlier stream-ordered call");
  emu_gate_open(gate);
  emu_stream_synchronize(s);
  if (got[0] != (float)n) bad += harness_fail(rank, "the stream call gave %g, want %d", got[0], n);
  r = tally_allreduce(input, out, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS || out[0] != (float)n)
    bad += harness_fail(rank, "the communicator is not usable after the timeout: %s", tally_comm_last_error(comm));
  emu_gate_destroy(gate);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* With TALLY_TIMEOUT=1: destroying a communicator whose stream call never started gives up after
 * the timeout; when the stream gets there later, the call fails at once (its result poisoned) and
 * the stream goes on. */
int stream_destroy_with_a_stuck_stream(int rank, int n, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  tally_comm_t comm;
  if (tally_comm_init_rank(&comm, n, *id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  struct emu_stream *s = emu_stream_create();
  float input[4] = {1, 2, 3, 4}, got[4];
  float *dev = emu_malloc(sizeof input);
  struct emu_gate *gate = emu_gate_create();
  struct copy_job write_input = {dev, input, sizeof input}, read_result = {got, dev, sizeof got};
  emu_gate_wait_on(s, gate);
  emu_launch(s, run_copy_job, &write_input);
  int bad = 0;
  if (tally_allreduce(dev, dev, 4, TALLY_FLOAT32, TALLY_SUM, comm, s) != TALLY_SUCCESS)
    bad = harness_fail(rank, "enqueue: %s", tally_comm_last_error(comm));
  emu_launch(s, run_copy_job, &read_result);
  if (tally_comm_destroy(comm) != TALLY_SUCCESS) bad += harness_fail(rank, "destroy: %s", tally_comm_last_error(NULL));
  emu_gate_open(gate);
  emu_stream_synchronize(s); /* must not hang */
  uint32_t bits;
  memcpy(&bits, &got[0], sizeof bits);
  if (bits != 0xffffffffu) bad += harness_fail(rank, "the abandoned call's result is %g, not poisoned", got[0]);
  emu_gate_destroy(gate);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}

/* Rank 1 cannot allocate its window: every rank stages instead, and the results are right. */
int stream_window_refused_on_one_rank(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  emu_fail_device_allocations(rank == 1);
  struct emu_stream *s = emu_stream_create();
  int bad = check_call(comm, rank, n, &(struct device_call){"allreduce", TALLY_FLOAT32, TALLY_SUM, 1000, 0},
                       DEVICE_TO_DEVICE, s);
  if (comm->ipc_window || !comm->ipc_refused)
    bad += harness_fail(rank, "the window should have been refused on every rank");
  bad += check_call(comm, rank, n, &(struct device_call){"reduce_scatter", TALLY_INT32, TALLY_MAX, 1000, 0},
                    DEVICE_IN_PLACE, s);
  emu_stream_destroy(s);
  return bad;
}

/* On a GPU communicator (the emulated device installed before init) with TALLY_STAGING_CHUNK_MB=1:
 * large allreduce, broadcast and reduce calls run in 1 MiB pieces, stream-ordered or not, and
 * give the right result. */
int stream_calls_in_pieces(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  if (!comm->every_rank_has_gpu) return harness_fail(rank, "the communicator does not know every rank has a GPU");
  struct emu_stream *s = emu_stream_create();
  enum { COUNT = 1000000 }; /* 4 MB of floats: 4 pieces */
  int bad = 0;
  for (int k = 0; k < 5; k++)
    for (int where = 0; where < PLACEMENTS && !bad; where++)
      bad += check_call(comm, rank, n, &(struct device_call){device_call_colls[k], TALLY_FLOAT32, TALLY_SUM, COUNT, 1},
                        where, s);
  /* Four collectives for one call, and the sum itself (host and device could share a wrong split). */
  float *input = malloc(COUNT * sizeof *input), *got = malloc(COUNT * sizeof *got);
  float *dev = emu_malloc(COUNT * sizeof *input);
  device_call_fill(input, COUNT, TALLY_FLOAT32, rank);
  struct copy_job write_input = {dev, input, COUNT * sizeof *input}, read_result = {got, dev, COUNT * sizeof *got};
  uint32_t seq_before = comm->seq;
  emu_launch(s, run_copy_job, &write_input);
  tally_result_t r = tally_allreduce(dev, dev, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  emu_stream_synchronize(s);
  if (r != TALLY_SUCCESS) bad += harness_fail(rank, "%s", tally_comm_last_error(comm));
  if (comm->seq - seq_before != 4)
    bad += harness_fail(rank, "%u collectives for one call, want 4", comm->seq - seq_before);
  for (size_t i = 0; i < COUNT && !bad; i++) {
    float want = 0;
    for (int q = 0; q < n; q++) want += (float)((int)((q + 1) * (i % 5 + 1)) % 23);
    if (got[i] != want) bad += harness_fail(rank, "element %zu is %g, want %g", i, got[i], want);
  }
  free(input);
  free(got);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}
/* --- sends, recvs and alltoallv on device memory ------------------------------------------------- */

struct add_one_job {
  int32_t *p;
  size_t count;
};

static void run_add_one(void *arg) {
  const struct add_one_job *job = arg;
  for (size_t i = 0; i < job->count; i++) job->p[i] += 1;
}

/* Rank 0 sends a device buffer to rank 1, which adds one in a kernel and sends it back, ROUNDS
 * times, every call stream-ordered: the stream is held at a gate until all the calls have returned.
 * Then a host-memory send and recv keep their place behind the stream calls (2 ranks). */
int stream_send_recv_ping_pong(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  enum { COUNT = 5001, ROUNDS = 3 };
  size_t bytes = COUNT * sizeof(int32_t);
  int32_t *input = malloc(bytes), *got = malloc(bytes), *dev = emu_malloc(bytes);
  for (int i = 0; i < COUNT; i++) input[i] = i;
  struct emu_gate *gate = emu_gate_create();
  struct copy_job write_input = {dev, input, bytes}, read_result = {got, dev, bytes};
  struct add_one_job add_one = {dev, COUNT};
  emu_gate_wait_on(s, gate);
  if (rank == 0) emu_launch(s, run_copy_job, &write_input);
  tally_result_t r = TALLY_SUCCESS;
  for (int round = 0; round < ROUNDS && r == TALLY_SUCCESS; round++) {
    if (rank == 0) {
      r = tally_send(dev, COUNT, TALLY_INT32, 1, comm, s);
      if (r == TALLY_SUCCESS) r = tally_recv(dev, COUNT, TALLY_INT32, 1, comm, s);
    } else {
      r = tally_recv(dev, COUNT, TALLY_INT32, 0, comm, s);
      emu_launch(s, run_add_one, &add_one);
      if (r == TALLY_SUCCESS) r = tally_send(dev, COUNT, TALLY_INT32, 0, comm, s);
    }
  }
  if (rank == 0) emu_launch(s, run_copy_job, &read_result);
  emu_gate_open(gate); /* only now can the stream run: no call waited for it */
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "enqueue: %s", tally_comm_last_error(comm)) : 0;
  int32_t host = rank == 1 ? 4242 : 0;
  tally_result_t h =
      rank == 1 ? tally_send(&host, 1, TALLY_INT32, 0, comm, NULL) : tally_recv(&host, 1, TALLY_INT32, 1, comm, NULL);
  emu_stream_synchronize(s);
  if (h != TALLY_SUCCESS || host != 4242)
    bad +=
        harness_fail(rank, "the host-memory message after the stream calls: %d, %s", host, tally_comm_last_error(comm));
  tally_result_t async = TALLY_SUCCESS;
  tally_comm_get_async_error(comm, &async);
  if (async != TALLY_SUCCESS) bad += harness_fail(rank, "async error: %s", tally_comm_last_error(comm));
  for (int i = 0; i < COUNT && rank == 0 && !bad; i++)
    if (got[i] != i + ROUNDS) bad = harness_fail(rank, "element %d came back as %d, want %d", i, got[i], i + ROUNDS);
  emu_gate_destroy(gate);
  emu_free(dev);
  free(input);
  free(got);
  emu_stream_destroy(s);
  return bad;
}

/* In one group on one stream, every rank first sends a block to every rank (itself included), then
 * receives one from each, around an allreduce, all in device memory except the block from rank 0,
 * which lands in pinned host memory: the group is one stream-ordered unit and returns at once. */
int stream_group_of_sends_and_recvs(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  enum { BLOCK = 1001 }; /* bytes */
  size_t all = (size_t)n * BLOCK;
  unsigned char *input = malloc(all), *got = malloc(all);
  for (int p = 0; p < n; p++) p2p_fill(input + (size_t)p * BLOCK, BLOCK, rank, p, 0);
  unsigned char *send = emu_malloc(all), *recv = emu_malloc(all), *pinned = emu_malloc_pinned(BLOCK);
  float one = 1, sum = 0, *dev_sum = emu_malloc(sizeof(float));
  struct emu_gate *gate = emu_gate_create();
  struct copy_job write_input = {send, input, all}, write_one = {dev_sum, &one, sizeof one},
                  read_result = {got, recv, all}, read_pinned = {got, pinned, BLOCK},
                  read_sum = {&sum, dev_sum, sizeof sum};
  emu_gate_wait_on(s, gate);
  emu_launch(s, run_copy_job, &write_input);
  emu_launch(s, run_copy_job, &write_one);
  tally_result_t r = tally_group_start();
  for (int k = 0; k < n && r == TALLY_SUCCESS; k++) {
    int to = (rank + k) % n;
    r = tally_send(send + (size_t)to * BLOCK, BLOCK, TALLY_UINT8, to, comm, s);
  }
  if (r == TALLY_SUCCESS) r = tally_allreduce(dev_sum, dev_sum, 1, TALLY_FLOAT32, TALLY_SUM, comm, s);
  for (int p = 0; p < n && r == TALLY_SUCCESS; p++)
    r = tally_recv(p == 0 ? pinned : recv + (size_t)p * BLOCK, BLOCK, TALLY_UINT8, p, comm, s);
  tally_result_t end = tally_group_end();
  emu_launch(s, run_copy_job, &read_result);
  emu_launch(s, run_copy_job, &read_pinned); /* block 0 of got: the one from rank 0 */
  emu_launch(s, run_copy_job, &read_sum);
  emu_gate_open(gate);
  emu_stream_synchronize(s);
  int bad =
      r != TALLY_SUCCESS || end != TALLY_SUCCESS ? harness_fail(rank, "group: %s", tally_comm_last_error(comm)) : 0;
  for (int p = 0; p < n && !bad; p++) bad += p2p_check(rank, "block", got + (size_t)p * BLOCK, BLOCK, p, rank, 0);
  if (!bad && sum != (float)n) bad = harness_fail(rank, "the allreduce in the group gave %g, want %d", sum, n);
  emu_gate_destroy(gate);
  emu_free(send);
  emu_free(recv);
  emu_free(pinned);
  emu_free(dev_sum);
  free(input);
  free(got);
  emu_stream_destroy(s);
  return bad;
}

/* An alltoallv whose counts include zeros and whose receive blocks leave gaps: on device memory,
 * out of place and in place, the whole receive buffer (gaps included) must equal the host-memory
 * call's. Block j of a buffer has room for ROOM elements at j * ROOM + 1. */
enum { ROOM = 4 };

static void alltoallv_layout(int rank, int n, size_t *sc, size_t *sd, size_t *rc, size_t *rd) {
  for (int j = 0; j < n; j++) {
    sc[j] = (size_t)((rank + 2 * j + 1) % 3); /* 0, 1 or 2 elements: some pairs send nothing */
    rc[j] = (size_t)((j + 2 * rank + 1) % 3); /* what rank j sends this rank */
    sd[j] = rd[j] = (size_t)j * ROOM + 1;
  }
}

static int check_alltoallv_on_device(tally_comm_t comm, int rank, int n, struct emu_stream *s, int in_place) {
  size_t sc[16], sd[16], rc[16], rd[16], elems = (size_t)n * ROOM + 1, bytes = elems * sizeof(int32_t);
  alltoallv_layout(rank, n, sc, sd, rc, rd);
  int32_t *input = malloc(bytes), *want = malloc(bytes), *got = malloc(bytes), *before = malloc(bytes);
  for (size_t i = 0; i < elems; i++) {
    input[i] = (int32_t)(1000 * rank + (int)i);
    before[i] = -7 - (int32_t)i; /* what the gaps hold */
  }
  memcpy(want, in_place ? input : before, bytes);
  tally_result_t r = tally_alltoallv(in_place ? want : input, sc, sd, want, rc, rd, TALLY_INT32, comm, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "host alltoallv: %s", tally_comm_last_error(comm));
  int32_t *send = emu_malloc(bytes), *recv = in_place ? send : emu_malloc(bytes);
  struct copy_job write_input = {send, input, bytes}, write_before = {recv, before, bytes},
                  read_result = {got, recv, bytes};
  struct emu_gate *gate = emu_gate_create();
  emu_gate_wait_on(s, gate);
  if (!in_place) emu_launch(s, run_copy_job, &write_before);
  emu_launch(s, run_copy_job, &write_input);
  r = tally_alltoallv(send, sc, sd, recv, rc, rd, TALLY_INT32, comm, s);
  emu_launch(s, run_copy_job, &read_result);
  emu_gate_open(gate);
  emu_stream_synchronize(s);
  emu_gate_destroy(gate);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "device alltoallv: %s", tally_comm_last_error(comm)) : 0;
  for (size_t i = 0; i < elems && !bad; i++)
    if (got[i] != want[i])
      bad = harness_fail(rank, "alltoallv %s: element %zu is %d, the host call's %d", in_place ? "in place" : "", i,
                         got[i], want[i]);
  emu_free(send);
  if (!in_place) emu_free(recv);
  free(input);
  free(want);
  free(got);
  free(before);
  return bad;
}

int stream_alltoallv_cases(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  int bad = check_alltoallv_on_device(comm, rank, n, s, 0);
  if (!bad) bad = check_alltoallv_on_device(comm, rank, n, s, 1);
  emu_stream_destroy(s);
  return bad;
}

/* A stream-ordered alltoallv where rank 1 expects 3 elements from rank 0, which sends it 2: the
 * stream goes on, both ranks' results are poisoned and both report TALLY_ERR_MISMATCH
 * asynchronously, and the next call is refused (2 ranks). */
int stream_alltoallv_mismatch(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  size_t sc[2] = {1, 2}, sd[2] = {0, 4}, rc[2] = {rank == 1 ? 3 : 1, 2}, rd[2] = {0, 4};
  int32_t got[8], *dev = emu_malloc(8 * sizeof(int32_t)), *out = emu_malloc(8 * sizeof(int32_t));
  tally_result_t r = tally_alltoallv(dev, sc, sd, out, rc, rd, TALLY_INT32, comm, s);
  struct copy_job read_result = {got, out, sizeof got};
  emu_launch(s, run_copy_job, &read_result);
  emu_stream_synchronize(s);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "the enqueue itself failed: %s", tally_comm_last_error(comm)) : 0;
  tally_result_t async = TALLY_SUCCESS;
  if (tally_comm_get_async_error(comm, &async) != TALLY_SUCCESS || async != TALLY_ERR_MISMATCH)
    bad += harness_fail(rank, "async error %s, want a mismatch: %s", tally_result_string(async),
                        tally_comm_last_error(comm));
  if ((uint32_t)got[0] != 0xffffffffu)
    bad += harness_fail(rank, "the failed call's result is %d, not poisoned", got[0]);
  r = tally_send(dev, 1, TALLY_INT32, 1 - rank, comm, s);
  bad += harness_expect(rank, comm, r, TALLY_ERR_INVALID_USAGE, "error state");
  emu_free(dev);
  emu_free(out);
  emu_stream_destroy(s);
  return bad;
}

/* A group whose sends and recvs on one communicator name two streams is refused at the call that
 * brings the second; the rest of the group runs. */
int stream_group_of_two_streams(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create(), *other = emu_stream_create();
  int32_t mine = 100 + rank, got = 0, *dev = emu_malloc(sizeof mine), *back = emu_malloc(sizeof mine);
  struct copy_job write_input = {dev, &mine, sizeof mine}, read_result = {&got, back, sizeof got};
  emu_launch(s, run_copy_job, &write_input);
  tally_result_t r = tally_group_start();
  if (r == TALLY_SUCCESS) r = tally_send(dev, 1, TALLY_INT32, rank, comm, s);
  int bad = harness_expect(rank, comm, tally_recv(back, 1, TALLY_INT32, rank, comm, other), TALLY_ERR_INVALID_USAGE,
                           "pass them all the same stream");
  if (r == TALLY_SUCCESS) r = tally_recv(back, 1, TALLY_INT32, rank, comm, s);
  tally_result_t end = tally_group_end();
  emu_launch(s, run_copy_job, &read_result);
  emu_stream_synchronize(s);
  if (r != TALLY_SUCCESS || end != TALLY_SUCCESS || got != mine)
    bad += harness_fail(rank, "the group after the refused call: got %d, want %d: %s", got, mine,
                        tally_comm_last_error(comm));
  emu_free(dev);
  emu_free(back);
  emu_stream_destroy(other);
  emu_stream_destroy(s);
  return bad;
}

/* A send and a recv captured into a graph (rank 1 adding one in a kernel between them) run at every
 * replay, their messages numbered afresh each time (2 ranks). */
int stream_graph_of_messages(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  tally_device_override(emu_device());
  struct emu_stream *s = emu_stream_create();
  enum { COUNT = 64 };
  int32_t input[COUNT], got[COUNT], *dev = emu_malloc(sizeof input);
  for (int i = 0; i < COUNT; i++) input[i] = 10 * i;
  struct copy_job write_input = {dev, input, sizeof input}, read_result = {got, dev, sizeof got};
  struct add_one_job add_one = {dev, COUNT};
  emu_capture_begin(s);
  tally_result_t r;
  if (rank == 0) {
    emu_launch(s, run_copy_job, &write_input);
    r = tally_send(dev, COUNT, TALLY_INT32, 1, comm, s);
    if (r == TALLY_SUCCESS) r = tally_recv(dev, COUNT, TALLY_INT32, 1, comm, s);
    emu_launch(s, run_copy_job, &read_result);
  } else {
    r = tally_recv(dev, COUNT, TALLY_INT32, 0, comm, s);
    emu_launch(s, run_add_one, &add_one);
    if (r == TALLY_SUCCESS) r = tally_send(dev, COUNT, TALLY_INT32, 0, comm, s);
  }
  struct emu_graph *g = emu_capture_end(s);
  int bad = r != TALLY_SUCCESS ? harness_fail(rank, "capture: %s", tally_comm_last_error(comm)) : 0;
  for (int replay = 1; replay <= 3 && !bad; replay++) {
    for (int i = 0; i < COUNT; i++) input[i] = 10 * i + replay;
    emu_graph_launch(g, s);
    emu_stream_synchronize(s);
    for (int i = 0; i < COUNT && rank == 0 && !bad; i++)
      if (got[i] != 10 * i + replay + 1)
        bad = harness_fail(rank, "replay %d: element %d is %d, want %d", replay, i, got[i], 10 * i + replay + 1);
  }
  tally_result_t async = TALLY_SUCCESS;
  tally_comm_get_async_error(comm, &async);
  if (async != TALLY_SUCCESS) bad += harness_fail(rank, "async error: %s", tally_comm_last_error(comm));
  emu_graph_destroy(g);
  emu_free(dev);
  emu_stream_destroy(s);
  return bad;
}
