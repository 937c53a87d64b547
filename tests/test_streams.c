/* Stream-ordered collectives (src/device/stream_queue.c) on the emulated device (emulated_device.h): every
 * collective with device, managed, pinned and host buffers in place and out of place, checked
 * byte for byte against the same call on host memory; the call returning before its stream runs;
 * inputs read and results written in stream order; host-memory calls keeping their place behind
 * stream calls; graph capture and replay; failures that release the stream, poison the result and
 * report the error; and all of it again through the CUDA IPC window (src/device/ipc); sends, recvs
 * and alltoallv on device memory (stream-ordered batches of messages, api/group.c). The
 * bodies are in stream_cases.c (the ThreadSanitizer runner runs them too); the same checks on a
 * real GPU are in test_cuda.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "emulated_device.h"
#include "harness.h"
#include "stream_cases.h"

Test(streams, every_collective_and_placement_on_2_to_4_ranks) {
  for (int n = 2; n <= 4; n++) cr_assert_eq(harness_run(n, 120, stream_every_collective, NULL), 0, "%d ranks", n);
}

Test(streams, every_collective_through_the_cuda_ipc_window) {
  cr_assert_eq(emu_ipc_arena_create((size_t)256 << 20), 0);
  setenv("TALLY_CUDAIPC_MB", "1", 1);
  for (int n = 2; n <= 4; n++) cr_assert_eq(harness_run(n, 120, stream_every_collective, "ipc"), 0, "%d ranks", n);
  unsetenv("TALLY_CUDAIPC_MB");
}

Test(streams, host_memory_with_a_stream_blocks_after_the_stream) {
  cr_assert_eq(harness_run(2, 60, stream_host_memory_with_stream, NULL), 0);
}

Test(streams, failed_call_releases_the_stream_poisons_and_reports) {
  cr_assert_eq(harness_run(2, 60, stream_mismatch, NULL), 0);
}

Test(streams, mixed_kinds_through_the_window_are_refused) {
  cr_assert_eq(emu_ipc_arena_create((size_t)16 << 20), 0);
  setenv("TALLY_CUDAIPC_MB", "1", 1);
  cr_assert_eq(harness_run(2, 60, stream_mixed_kinds_through_window, NULL), 0);
  unsetenv("TALLY_CUDAIPC_MB");
}

Test(streams, mismatch_through_the_cuda_ipc_window_is_caught) {
  cr_assert_eq(emu_ipc_arena_create((size_t)16 << 20), 0);
  setenv("TALLY_CUDAIPC_MB", "1", 1);
  cr_assert_eq(harness_run(2, 60, stream_mismatch, NULL), 0);
  unsetenv("TALLY_CUDAIPC_MB");
}

/* The same with every enqueue slow: the call's agreement fails on the stream while its caller still
 * enqueues the later steps, which must still be enqueued, so that the call fails on the stream
 * (result poisoned), not half enqueued at the call. */
Test(streams, mismatch_found_while_the_call_is_still_enqueued) {
  cr_assert_eq(emu_ipc_arena_create((size_t)16 << 20), 0);
  setenv("TALLY_CUDAIPC_MB", "1", 1);
  emu_slow_enqueues(20000);
  int rc = harness_run(2, 60, stream_mismatch, NULL);
  emu_slow_enqueues(0);
  unsetenv("TALLY_CUDAIPC_MB");
  cr_assert_eq(rc, 0);
}

Test(streams, argument_errors_are_reported_at_the_call) {
  cr_assert_eq(harness_run(2, 60, stream_bad_arguments, NULL), 0);
}

Test(streams, async_error_of_a_destroyed_comm_is_refused) {
  tally_result_t async;
  cr_assert_eq(tally_comm_get_async_error(NULL, &async), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "tally_comm_get_async_error"));
}

Test(streams, one_rank) { cr_assert_eq(harness_run(1, 60, stream_every_collective, NULL), 0); }

Test(streams, host_call_waits_for_earlier_stream_call) {
  cr_assert_eq(harness_run(3, 60, stream_host_call_waits, NULL), 0);
}

Test(streams, captured_allreduce_runs_at_every_replay) {
  cr_assert_eq(harness_run(3, 60, stream_graph_replay, NULL), 0);
}

Test(streams, host_call_behind_a_stuck_stream_times_out) {
  setenv("TALLY_TIMEOUT", "1", 1);
  int rc = harness_run(2, 60, stream_host_call_behind_a_stuck_stream, NULL);
  unsetenv("TALLY_TIMEOUT");
  cr_assert_eq(rc, 0);
}

Test(streams, destroy_gives_up_on_a_stuck_stream) {
  setenv("TALLY_TIMEOUT", "1", 1);
  int rc = harness_run_raw(2, 60, stream_destroy_with_a_stuck_stream, NULL);
  unsetenv("TALLY_TIMEOUT");
  cr_assert_eq(rc, 0);
}

Test(streams, window_refused_on_one_rank_means_staging_on_all) {
  cr_assert_eq(emu_ipc_arena_create((size_t)16 << 20), 0);
  setenv("TALLY_CUDAIPC_MB", "1", 1);
  int rc = harness_run(3, 60, stream_window_refused_on_one_rank, NULL);
  unsetenv("TALLY_CUDAIPC_MB");
  cr_assert_eq(rc, 0);
}

/* Installed before the ranks fork, the emulated device names a GPU in every rank's topology. */
Test(streams, large_calls_run_in_pieces_on_gpu_communicators) {
  tally_device_override(emu_device());
  setenv("TALLY_STAGING_CHUNK_MB", "1", 1);
  int rc = harness_run(3, 120, stream_calls_in_pieces, NULL);
  unsetenv("TALLY_STAGING_CHUNK_MB");
  cr_assert_eq(rc, 0);
}

/* Sends, recvs and alltoallv with device buffers: stream-ordered batches of messages (api/group.c,
 * src/device/stream_queue.c). */
Test(streams, send_recv_ping_pong_on_device) { cr_assert_eq(harness_run(2, 60, stream_send_recv_ping_pong, NULL), 0); }

Test(streams, group_of_sends_and_recvs_on_one_stream) {
  for (int n = 2; n <= 4; n += 2) cr_assert_eq(harness_run(n, 60, stream_group_of_sends_and_recvs, NULL), 0);
}

Test(streams, alltoallv_with_zero_counts_and_gaps_on_device) {
  for (int n = 2; n <= 3; n++) cr_assert_eq(harness_run(n, 60, stream_alltoallv_cases, NULL), 0, "%d ranks", n);
}

Test(streams, mismatched_alltoallv_on_device_is_reported) {
  cr_assert_eq(harness_run(2, 60, stream_alltoallv_mismatch, NULL), 0);
}

Test(streams, group_of_messages_on_two_streams_is_refused) {
  cr_assert_eq(harness_run(2, 60, stream_group_of_two_streams, NULL), 0);
}

Test(streams, captured_send_and_recv_run_at_every_replay) {
  cr_assert_eq(harness_run(2, 60, stream_graph_of_messages, NULL), 0);
}
