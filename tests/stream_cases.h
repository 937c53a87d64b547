/* Test bodies for stream-ordered collectives on the emulated device (harness_body_fn), shared by
 * test_streams.c and the ThreadSanitizer runner. Each installs the emulated device itself. */
#ifndef TALLY_TEST_STREAM_CASES_H
#define TALLY_TEST_STREAM_CASES_H

#include "tally.h"

/* Every collective and buffer placement against the host-memory result; arg "ipc" (with
 * TALLY_CUDAIPC_MB set and the IPC arena made) also checks that the window was used. */
int stream_every_collective(tally_comm_t comm, int rank, int n, void *arg);
/* A host-memory call waits for an earlier stream call to reach its turn (3 ranks). */
int stream_host_call_waits(tally_comm_t comm, int rank, int n, void *arg);
/* Host buffers with a stream: blocking, after the stream's earlier work. */
int stream_host_memory_with_stream(tally_comm_t comm, int rank, int n, void *arg);
/* An allreduce captured into a graph gives the right result at every replay. */
int stream_graph_replay(tally_comm_t comm, int rank, int n, void *arg);
/* A mismatched stream call releases the stream, poisons its result and reports (2 ranks). */
int stream_mismatch(tally_comm_t comm, int rank, int n, void *arg);
/* Argument errors are returned at the call. */
int stream_bad_arguments(tally_comm_t comm, int rank, int n, void *arg);
/* Through the window, buffer kinds that differ across ranks fail as a mismatch (2 ranks). */
int stream_mixed_kinds_through_window(tally_comm_t comm, int rank, int n, void *arg);

#endif
