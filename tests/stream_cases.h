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

/* With TALLY_TIMEOUT=1: a host call behind a stream call that never starts times out. */
int stream_host_call_behind_a_stuck_stream(tally_comm_t comm, int rank, int n, void *arg);
/* With TALLY_TIMEOUT=1 (a harness_raw_fn): destroy gives up on a stuck stream call, which later
 * fails with its result poisoned. */
int stream_destroy_with_a_stuck_stream(int rank, int n, const tally_unique_id_t *id, void *arg);
/* With TALLY_CUDAIPC_MB: rank 1 cannot allocate its window, and every rank stages instead. */
int stream_window_refused_on_one_rank(tally_comm_t comm, int rank, int n, void *arg);

/* With the emulated device installed before init and TALLY_STAGING_CHUNK_MB=1: calls in pieces. */
int stream_calls_in_pieces(tally_comm_t comm, int rank, int n, void *arg);

/* Sends, recvs and alltoallv on device memory (stream-ordered batches of messages): */
/* a ping-pong through a kernel, then host-memory messages behind it (2 ranks); */
int stream_send_recv_ping_pong(tally_comm_t comm, int rank, int n, void *arg);
/* a group of sends to and recvs from every rank around an allreduce, on one stream; */
int stream_group_of_sends_and_recvs(tally_comm_t comm, int rank, int n, void *arg);
/* alltoallv with zero counts and gaps, out of place and in place, against the host call; */
int stream_alltoallv_cases(tally_comm_t comm, int rank, int n, void *arg);
/* a mismatched alltoallv: poisoned results, MISMATCH on both ranks (2 ranks); */
int stream_alltoallv_mismatch(tally_comm_t comm, int rank, int n, void *arg);
/* a send and a recv captured into a graph, replayed (2 ranks); */
int stream_graph_of_messages(tally_comm_t comm, int rank, int n, void *arg);
/* a group whose messages name two streams is refused at the call. */
int stream_group_of_two_streams(tally_comm_t comm, int rank, int n, void *arg);

#endif
