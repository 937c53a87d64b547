/* Runs the multi-threaded test bodies (threaded.h, stream_cases.h) without Criterion, for the ThreadSanitizer build:
 * Criterion 2.4 crashes at start under -fsanitize=thread. With TSAN_OPTIONS=halt_on_error=1 (set
 * by ctest) the first data race aborts its rank, and the run fails. Exit status 0 when every body
 * passed on every rank. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "emulated_device.h"
#include "harness.h"
#include "stream_cases.h"
#include "threaded.h"

int main(void) {
  static const struct {
    const char *name;
    harness_body_fn body;
    int nranks;
    const char *cudaipc_mb; /* TALLY_CUDAIPC_MB for the case; NULL: unset */
    int traced;             /* TALLY_TRACE set: the trace writers' threads beside the callers' */
  } cases[] = {
      {"abort from a watchdog thread", threaded_abort_from_watchdog, 2, NULL, 0},
      {"alltoall abort from a watchdog thread", threaded_blocks_abort_from_watchdog, 3, NULL, 0},
      {"one communicator, two threads", threaded_one_comm_two_threads, 2, NULL, 0},
      {"communicators in threads", threaded_comms_in_threads, 2, NULL, 0},
      {"groups of sends and recvs in threads", threaded_groups_in_threads, 3, NULL, 0},
      /* the stream queue's thread, the emulated streams' threads and the callers' */
      {"stream-ordered calls", stream_every_collective, 3, NULL, 0},
      {"stream-ordered calls through the CUDA IPC window", stream_every_collective, 3, "1", 0},
      {"a host call behind a stream call", stream_host_call_waits, 3, NULL, 0},
      {"graph replay", stream_graph_replay, 2, NULL, 0},
      {"a failed stream call", stream_mismatch, 2, NULL, 0},
      {"stream-ordered sends and recvs", stream_send_recv_ping_pong, 2, NULL, 0},
      {"a group of sends and recvs on a stream", stream_group_of_sends_and_recvs, 3, NULL, 0},
      {"communicators in threads, traced", threaded_comms_in_threads, 2, NULL, 1},
      {"stream-ordered calls, traced", stream_every_collective, 3, NULL, 1},
  };
  char trace_dir[] = "/tmp/tally-tsan-trace-XXXXXX";
  if (!mkdtemp(trace_dir)) {
    printf("FAIL cannot make a directory for the traces\n");
    return 1;
  }
  if (emu_ipc_arena_create((size_t)256 << 20) != 0) {
    printf("FAIL cannot map the emulated device's IPC arena\n");
    return 1;
  }
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].cudaipc_mb)
      setenv("TALLY_CUDAIPC_MB", cases[i].cudaipc_mb, 1);
    else
      unsetenv("TALLY_CUDAIPC_MB");
    if (cases[i].traced)
      setenv("TALLY_TRACE", trace_dir, 1);
    else
      unsetenv("TALLY_TRACE");
    int rc = harness_run(cases[i].nranks, 300, cases[i].body, cases[i].cudaipc_mb ? "ipc" : NULL);
    printf("%s %s\n", rc ? "FAIL" : "ok  ", cases[i].name);
    fflush(stdout);
    failed += rc != 0;
  }
  unsetenv("TALLY_TRACE");
  /* tally_comm_abort from a second thread while split and shrink build a communicator */
  static const struct {
    const char *name;
    struct abort_plan plan;
  } aborts[] = {
      {"abort during a split, in the parent's allgather", THREADED_ABORT_IN_ALLGATHER},
      {"abort during a split, building the child", THREADED_ABORT_BUILDING_CHILD},
      {"abort during a shrink", THREADED_ABORT_IN_SHRINK},
  };
  setenv("TALLY_TIMEOUT", "30", 1);
  for (size_t i = 0; i < sizeof aborts / sizeof aborts[0]; i++) {
    struct abort_plan plan = aborts[i].plan;
    char absent[16];
    snprintf(absent, sizeof absent, "%d", plan.absent);
    if (plan.stall_split) setenv("TALLY_TEST_STALL_SPLIT", absent, 1);
    int rc = harness_run(4, 300, threaded_abort_while_deriving, &plan);
    unsetenv("TALLY_TEST_STALL_SPLIT");
    printf("%s %s\n", rc ? "FAIL" : "ok  ", aborts[i].name);
    fflush(stdout);
    failed += rc != 0;
  }
  unsetenv("TALLY_TIMEOUT");
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", trace_dir);
  if (system(cmd) != 0) printf("note: could not remove %s\n", trace_dir);
  return failed != 0;
}
