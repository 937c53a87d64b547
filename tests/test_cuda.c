/* Collectives on a real GPU (the emulated twin is test_streams.c): every collective, datatype and op
 * on 2, 3 and 4 ranks sharing the machine's GPUs (all on one when there is one), with device,
 * pinned and managed buffers, in place and out, checked against the same call on host memory.
 * Stream order: a kernel writes the send buffer on the same stream just before the collective and
 * another reads the result just after, with no host synchronization between. Then an allreduce
 * captured into a CUDA graph and replayed, and sends, recvs and an alltoallv in a group on device
 * memory. Without a GPU it prints "no CUDA device: skipped" and exits 77. CUDA is initialised only
 * in the rank processes (a forked process cannot use it). */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "device/cuda/reduce_kernels.h"
#include "device_cases.h"
#include "harness.h"

#define EXIT_SKIPPED 77

#define CUDA_OK(rank, call)                                                                          \
  do {                                                                                               \
    cudaError_t e_ = (call);                                                                         \
    if (e_ != cudaSuccess)                                                                           \
      return harness_fail(rank, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
  } while (0)

/* Counts the devices in a child process, so that this one never initialises CUDA before forking. */
static int count_devices(char *why, size_t len) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    char msg[200];
    snprintf(msg, sizeof msg, "%d %s", err == cudaSuccess ? n : 0,
             err == cudaSuccess ? (n ? "" : "zero devices") : cudaGetErrorString(err));
    if (write(fds[1], msg, strlen(msg) + 1) < 0) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  char msg[200] = "";
  ssize_t got = read(fds[0], msg, sizeof msg - 1);
  close(fds[0]);
  waitpid(pid, NULL, 0);
  if (got <= 0) return snprintf(why, len, "the probe process died"), 0;
  int n = atoi(msg);
  const char *space = strchr(msg, ' ');
  snprintf(why, len, "%s", space ? space + 1 : "");
  return n;
}

enum placement { DEVICE_TO_DEVICE, DEVICE_IN_PLACE, PINNED_TO_DEVICE, DEVICE_TO_PINNED, MANAGED_IN_PLACE, PLACEMENTS };
static const char *placement_name[] = {"device->device", "device in place", "pinned->device", "device->pinned",
                                       "managed in place"};

static void *gpu_alloc(int pinned, size_t bytes) {
  void *p = NULL;
  if (pinned ? cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped) : cudaMalloc(&p, bytes))
    return NULL;
  return p;
}

static void gpu_free(int pinned, void *p) {
  if (pinned)
    cudaFreeHost(p);
  else
    cudaFree(p);
}

struct scratch {
  cudaStream_t stream;
  void *zeros, *input, *check; /* device: all zero bytes; the input; where the after-kernel copies the result */
  size_t bytes;
};

/* One call, stream ordered, against the host-memory reference. */
static int check_call(tally_comm_t comm, int rank, int n, const struct device_call *c, enum placement where,
                      struct scratch *s) {
  size_t send_bytes, recv_bytes, es = tally_datatype_size(c->dt);
  device_call_bytes(c, n, &send_bytes, &recv_bytes);
  char *input = malloc(send_bytes), *want = calloc(1, recv_bytes), *got = malloc(recv_bytes);
  device_call_fill(input, send_bytes / es, c->dt, rank);
  if (device_call_issue(c, input, want, comm, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "host reference: %s", tally_comm_last_error(comm));
  CUDA_OK(rank, cudaMemcpy(s->input, input, send_bytes, cudaMemcpyHostToDevice));

  char *send, *recv, *whole = NULL;
  int send_pinned = where == PINNED_TO_DEVICE, recv_pinned = where == DEVICE_TO_PINNED;
  if (where == DEVICE_IN_PLACE || where == MANAGED_IN_PLACE) {
    size_t bytes = send_bytes > recv_bytes ? send_bytes : recv_bytes;
    CUDA_OK(rank, where == MANAGED_IN_PLACE ? cudaMallocManaged((void **)&whole, bytes, cudaMemAttachGlobal)
                                            : cudaMalloc((void **)&whole, bytes));
    device_call_in_place(c, rank, whole, send_bytes, recv_bytes, &send, &recv);
  } else {
    send = gpu_alloc(send_pinned, send_bytes);
    recv = gpu_alloc(recv_pinned, recv_bytes);
    if (!send || !recv) return harness_fail(rank, "out of GPU or pinned memory");
  }
  CUDA_OK(rank, cudaDeviceSynchronize());
  /* The kernels around the call: send = input + 0 before it, check = recv + 0 after it. */
  CUDA_OK(rank, tally_cuda_reduce(send, s->input, s->zeros, send_bytes / es, c->dt, TALLY_SUM, s->stream));
  tally_result_t r = device_call_issue(c, send, recv, comm, s->stream);
  CUDA_OK(rank, tally_cuda_reduce(s->check, recv, s->zeros, recv_bytes / es, c->dt, TALLY_SUM, s->stream));
  CUDA_OK(rank, cudaMemcpyAsync(got, s->check, recv_bytes, cudaMemcpyDeviceToHost, s->stream));
  CUDA_OK(rank, cudaStreamSynchronize(s->stream));
  int bad = 0;
  if (r != TALLY_SUCCESS)
    bad = harness_fail(rank, "%s %s: %s", c->coll, placement_name[where], tally_comm_last_error(comm));
  else if (device_call_uses_recv(c, rank) && memcmp(got, want, recv_bytes) != 0)
    bad = harness_fail(rank, "%s %s %s %s count %zu: differs from the host-memory call", c->coll, placement_name[where],
                       tally_datatype_name(c->dt), tally_op_name(c->op), c->count);
  if (whole) {
    cudaFree(whole);
  } else {
    gpu_free(send_pinned, send);
    gpu_free(recv_pinned, recv);
  }
  free(input);
  free(want);
  free(got);
  return bad;
}

/* An allreduce captured into a graph, replayed three times with inputs input + k. */
static int check_graph(tally_comm_t comm, int rank, int n, struct scratch *s) {
  enum { COUNT = 4096 };
  float host[COUNT], got[COUNT];
  float *dev, *step;
  CUDA_OK(rank, cudaMalloc((void **)&dev, sizeof host));
  CUDA_OK(rank, cudaMalloc((void **)&step, sizeof host));
  for (int i = 0; i < COUNT; i++) host[i] = (float)(rank + 1);
  CUDA_OK(rank, cudaMemcpy(s->input, host, sizeof host, cudaMemcpyHostToDevice));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  /* Relaxed: Tally may allocate pinned staging memory while the graph is being captured. */
  CUDA_OK(rank, cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeRelaxed));
  CUDA_OK(rank, tally_cuda_reduce(dev, s->input, step, COUNT, TALLY_FLOAT32, TALLY_SUM, s->stream));
  tally_result_t r = tally_allreduce(dev, dev, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, s->stream);
  CUDA_OK(rank, cudaMemcpyAsync(got, dev, sizeof got, cudaMemcpyDeviceToHost, s->stream));
  CUDA_OK(rank, cudaStreamEndCapture(s->stream, &graph));
  if (r != TALLY_SUCCESS) return harness_fail(rank, "captured allreduce: %s", tally_comm_last_error(comm));
  CUDA_OK(rank, cudaGraphInstantiate(&exec, graph, 0));
  int bad = 0;
  for (int k = 1; k <= 3 && !bad; k++) {
    for (int i = 0; i < COUNT; i++) host[i] = (float)k;
    CUDA_OK(rank, cudaMemcpy(step, host, sizeof host, cudaMemcpyHostToDevice));
    CUDA_OK(rank, cudaGraphLaunch(exec, s->stream));
    CUDA_OK(rank, cudaStreamSynchronize(s->stream));
    float want = (float)(n * (n + 1) / 2 + n * k);
    for (int i = 0; i < COUNT && !bad; i++)
      if (got[i] != want) bad = harness_fail(rank, "graph replay %d: element %d is %g, want %g", k, i, got[i], want);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(dev);
  cudaFree(step);
  return bad;
}

/* One group: a send of block 0 to the next rank, a recv from the previous one into the block
 * after the alltoallv's, and an alltoallv whose counts include zeros (rank i sends rank j
 * msg_count(i + j) elements, its receive blocks leaving gaps). */
enum { MSG_BLOCK = 100000 }; /* floats */
static size_t msg_count(int k) { return k % 3 == 0 ? 0 : MSG_BLOCK / (size_t)(1 + k % 3); }

static tally_result_t exchange_messages(tally_comm_t comm, int rank, int n, const float *send, float *recv,
                                        cudaStream_t stream) {
  size_t sc[16], sd[16], rc[16], rd[16];
  for (int j = 0; j < n; j++) {
    sc[j] = rc[j] = msg_count(rank + j);
    sd[j] = rd[j] = (size_t)j * MSG_BLOCK;
  }
  tally_result_t r = tally_group_start();
  if (r == TALLY_SUCCESS) r = tally_send(send, MSG_BLOCK, TALLY_FLOAT32, (rank + 1) % n, comm, stream);
  if (r == TALLY_SUCCESS)
    r = tally_recv(recv + (size_t)n * MSG_BLOCK, MSG_BLOCK, TALLY_FLOAT32, (rank + n - 1) % n, comm, stream);
  if (r == TALLY_SUCCESS) r = tally_alltoallv(send, sc, sd, recv, rc, rd, TALLY_FLOAT32, comm, stream);
  tally_result_t end = tally_group_end();
  return r != TALLY_SUCCESS ? r : end;
}

/* The group on device memory, stream-ordered between a kernel that writes the input and one that
 * reads the result, against the same group on host memory (gaps included). */
static int check_messages(tally_comm_t comm, int rank, int n, struct scratch *s) {
  size_t send_elems = (size_t)n * MSG_BLOCK, recv_elems = send_elems + MSG_BLOCK;
  float *input = malloc(send_elems * sizeof *input), *want = calloc(recv_elems, sizeof *want),
        *got = malloc(recv_elems * sizeof *got), *send, *recv;
  device_call_fill(input, send_elems, TALLY_FLOAT32, rank);
  if (exchange_messages(comm, rank, n, input, want, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "host messages: %s", tally_comm_last_error(comm));
  CUDA_OK(rank, cudaMalloc((void **)&send, send_elems * sizeof *send));
  CUDA_OK(rank, cudaMalloc((void **)&recv, recv_elems * sizeof *recv));
  CUDA_OK(rank, cudaMemset(recv, 0, recv_elems * sizeof *recv));
  CUDA_OK(rank, cudaMemcpy(s->input, input, send_elems * sizeof *input, cudaMemcpyHostToDevice));
  CUDA_OK(rank, cudaDeviceSynchronize());
  CUDA_OK(rank, tally_cuda_reduce(send, s->input, s->zeros, send_elems, TALLY_FLOAT32, TALLY_SUM, s->stream));
  tally_result_t r = exchange_messages(comm, rank, n, send, recv, s->stream);
  CUDA_OK(rank, tally_cuda_reduce(s->check, recv, s->zeros, recv_elems, TALLY_FLOAT32, TALLY_SUM, s->stream));
  CUDA_OK(rank, cudaMemcpyAsync(got, s->check, recv_elems * sizeof *got, cudaMemcpyDeviceToHost, s->stream));
  CUDA_OK(rank, cudaStreamSynchronize(s->stream));
  int bad = 0;
  if (r != TALLY_SUCCESS)
    bad = harness_fail(rank, "device messages: %s", tally_comm_last_error(comm));
  else if (memcmp(got, want, recv_elems * sizeof *got) != 0)
    bad = harness_fail(rank, "sends, recvs and alltoallv on device memory differ from host memory");
  cudaFree(send);
  cudaFree(recv);
  free(input);
  free(want);
  free(got);
  return bad;
}

static int gpu_body(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  int devices = 0;
  CUDA_OK(rank, cudaGetDeviceCount(&devices));
  CUDA_OK(rank, cudaSetDevice(rank % devices));
  struct scratch s = {.bytes = 4u << 20};
  CUDA_OK(rank, cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CUDA_OK(rank, cudaMalloc(&s.zeros, s.bytes));
  CUDA_OK(rank, cudaMalloc(&s.input, s.bytes));
  CUDA_OK(rank, cudaMalloc(&s.check, s.bytes));
  CUDA_OK(rank, cudaMemset(s.zeros, 0, s.bytes));
  int bad = 0;
  for (int k = 0; k < DEVICE_CALL_NCOLLS; k++)
    for (int dt = 0; dt < TALLY_NUM_DATATYPES; dt++)
      for (int op = 0; op < TALLY_NUM_OPS; op++) {
        struct device_call c = {device_call_colls[k], dt, op, 1000, n - 1};
        if (op > 0 && !device_call_has_op(&c)) continue;
        bad += check_call(comm, rank, n, &c, DEVICE_TO_DEVICE, &s);
      }
  for (int k = 0; k < DEVICE_CALL_NCOLLS; k++)
    for (int where = 0; where < PLACEMENTS; where++) {
      bad += check_call(comm, rank, n, &(struct device_call){device_call_colls[k], TALLY_FLOAT32, TALLY_SUM, 1, 0},
                        where, &s);
      bad +=
          check_call(comm, rank, n,
                     &(struct device_call){device_call_colls[k], TALLY_BFLOAT16, TALLY_MAX, 300000, n / 2}, where, &s);
    }
  bad += check_graph(comm, rank, n, &s);
  bad += check_messages(comm, rank, n, &s);
  tally_result_t async;
  if (tally_comm_get_async_error(comm, &async) != TALLY_SUCCESS || async != TALLY_SUCCESS)
    bad += harness_fail(rank, "asynchronous error: %s", tally_comm_last_error(comm));
  cudaFree(s.zeros);
  cudaFree(s.input);
  cudaFree(s.check);
  cudaStreamDestroy(s.stream);
  return bad;
}

int main(void) {
  char why[200];
  int devices = count_devices(why, sizeof why);
  if (devices <= 0) {
    printf("test_cuda: no CUDA device: skipped (%s)\n", why);
    return EXIT_SKIPPED;
  }
  int failed = 0;
  for (int n = 2; n <= 4; n++) {
    int rc = harness_run(n, 600, gpu_body, NULL);
    printf("test_cuda: %d ranks on %d GPU(s): %s\n", n, devices < n ? devices : n, rc ? "FAILED" : "ok");
    failed |= rc;
  }
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
