#define _GNU_SOURCE
/* Bad input: every mistake a caller can make returns INVALID_ARGUMENT, INVALID_USAGE or
 * UNSUPPORTED with a message, and nothing crashes. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

static int expect(int rank, tally_result_t got, tally_result_t want, const char *what, tally_comm_t comm,
                  const char *needle) {
  const char *msg = tally_comm_last_error(comm);
  if (got != want)
    return harness_fail(rank, "%s: returned %s, expected %s (%s)", what, tally_result_string(got),
                        tally_result_string(want), msg);
  if (!msg[0] || (needle && !strstr(msg, needle)))
    return harness_fail(rank, "%s: message '%s' does not mention '%s'", what, msg, needle ? needle : "anything");
  return 0;
}

static int bad_calls(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  float buf[64] = {0}, out[64 * 4];
  int bad = 0;
  bad += expect(rank, tally_allreduce(NULL, out, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "NULL sendbuf", comm, "sendbuf");
  bad += expect(rank, tally_allreduce(buf, NULL, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "NULL recvbuf", comm, "recvbuf");
  bad += expect(rank, tally_allreduce(buf, out, 4, (tally_datatype_t)42, TALLY_SUM, comm, NULL),
                TALLY_ERR_INVALID_ARGUMENT, "unknown datatype", comm, "datatype");
  bad += expect(rank, tally_allreduce(buf, out, 4, TALLY_FLOAT32, (tally_op_t)-1, comm, NULL),
                TALLY_ERR_INVALID_ARGUMENT, "unknown op", comm, "op");
  bad += expect(rank, tally_allreduce(buf, out, SIZE_MAX / 2, TALLY_FLOAT32, TALLY_SUM, comm, NULL),
                TALLY_ERR_INVALID_ARGUMENT, "count overflow", comm, "overflows");
  bad += expect(rank, tally_allgather(buf, out, SIZE_MAX / 4 / (size_t)n + 1, TALLY_FLOAT32, comm, NULL),
                TALLY_ERR_INVALID_ARGUMENT, "allgather count overflow", comm, "overflows");
  bad += expect(rank, tally_broadcast(buf, out, 4, TALLY_FLOAT32, n, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "root too large", comm, "root");
  bad += expect(rank, tally_reduce(buf, out, 4, TALLY_FLOAT32, TALLY_SUM, -1, comm, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "negative root", comm, "root");
  bad += expect(rank, tally_allreduce(buf, out, 4, TALLY_FLOAT32, TALLY_SUM, comm, (tally_stream_t)buf),
                TALLY_ERR_UNSUPPORTED, "stream without CUDA", comm, "CUDA");
  bad += expect(rank, tally_allreduce(buf, out, 4, TALLY_FLOAT32, TALLY_SUM, NULL, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "NULL comm", NULL, "comm");
  bad += expect(rank, tally_barrier(NULL, NULL), TALLY_ERR_INVALID_ARGUMENT, "barrier NULL comm", NULL, "comm");
  int value;
  bad += expect(rank, tally_comm_rank(comm, NULL), TALLY_ERR_INVALID_ARGUMENT, "rank NULL out", NULL, "rank");
  bad += expect(rank, tally_comm_size(NULL, &value), TALLY_ERR_INVALID_USAGE, "size NULL comm", NULL, "comm");
  /* Count 0 is a no-op, even with NULL buffers. */
  if (tally_allreduce(NULL, NULL, 0, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
    bad += harness_fail(rank, "count 0 with NULL buffers: %s", tally_comm_last_error(comm));
  /* After all these refusals the communicator still works. */
  for (int i = 0; i < 4; i++) buf[i] = (float)rank;
  tally_result_t r = tally_allreduce(buf, out, 4, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS || out[3] != (float)(n * (n - 1) / 2))
    bad += harness_fail(rank, "allreduce after refusals: %s %g", tally_comm_last_error(comm), out[3]);
  return bad != 0;
}

Test(bad_input, collective_arguments) { cr_assert_eq(harness_run(3, 60, bad_calls, NULL), 0); }

/* The tuner's questions (tally_comm_tuner_choice, tally_comm_predict): mistakes are refused with a
 * message naming the valid choices; good questions get answers that agree with each other. */
static int tuner_questions(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  const char *algo = NULL;
  double us = 0;
  int bad = 0;
  bad += expect(rank, tally_comm_tuner_choice(NULL, "allreduce", 4, TALLY_FLOAT32, &algo, &us), TALLY_ERR_INVALID_USAGE,
                "choice, NULL comm", NULL, "comm");
  bad += expect(rank, tally_comm_tuner_choice(comm, "allreduc", 4, TALLY_FLOAT32, &algo, &us),
                TALLY_ERR_INVALID_ARGUMENT, "choice, unknown collective", NULL, "allreduce, allgather, reduce_scatter");
  bad += expect(rank, tally_comm_tuner_choice(comm, NULL, 4, TALLY_FLOAT32, &algo, &us), TALLY_ERR_INVALID_ARGUMENT,
                "choice, NULL collective", NULL, "(null)");
  bad += expect(rank, tally_comm_tuner_choice(comm, "allreduce", 4, (tally_datatype_t)42, &algo, &us),
                TALLY_ERR_INVALID_ARGUMENT, "choice, unknown datatype", NULL, "datatype");
  bad += expect(rank, tally_comm_predict(comm, "allreduce", "trees", 4, TALLY_FLOAT32, &us), TALLY_ERR_INVALID_ARGUMENT,
                "predict, unknown algorithm", NULL, "ring, tree, rhd, hier, board");
  bad += expect(rank, tally_comm_predict(comm, "allreduce", "ring", 4, TALLY_FLOAT32, NULL), TALLY_ERR_INVALID_ARGUMENT,
                "predict, NULL result", NULL, "predicted_us");
  if (tally_comm_tuner_choice(comm, "allreduce", 1 << 20, TALLY_FLOAT32, &algo, &us) != TALLY_SUCCESS || !algo)
    return bad + harness_fail(rank, "a good question was refused: %s", tally_comm_last_error(NULL));
  double again = -2;
  if (tally_comm_predict(comm, "allreduce", algo, 1 << 20, TALLY_FLOAT32, &again) != TALLY_SUCCESS || again != us)
    bad += harness_fail(rank, "the choice %s was predicted at %g us, but predicting it gives %g", algo, us, again);
  if (tally_comm_predict(comm, "broadcast", "rhd", 4, TALLY_FLOAT32, &again) != TALLY_SUCCESS || again != -1)
    bad += harness_fail(rank, "rhd broadcast, which the model does not cover, predicted at %g us", again);
  return bad;
}

Test(bad_input, tuner_questions) { cr_assert_eq(harness_run(3, 60, tuner_questions, NULL), 0); }

Test(bad_input, init_arguments) {
  tally_comm_t comm;
  tally_unique_id_t id;
  memset(&id, 0, sizeof id);
  cr_assert_eq(tally_comm_init_rank(NULL, 2, id, 0), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert_eq(tally_comm_init_rank(&comm, 0, id, 0), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "nranks"), "%s", tally_comm_last_error(NULL));
  cr_assert_eq(tally_comm_init_rank(&comm, -3, id, 0), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert_eq(tally_comm_init_rank(&comm, 2, id, 2), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "rank 2"), "%s", tally_comm_last_error(NULL));
  cr_assert_eq(tally_comm_init_rank(&comm, 2, id, -1), TALLY_ERR_INVALID_ARGUMENT);
  /* an id that tally_get_unique_id did not make */
  cr_assert_eq(tally_comm_init_rank(&comm, 2, id, 0), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(tally_comm_last_error(NULL), "unique id"), "%s", tally_comm_last_error(NULL));
  cr_assert_eq(tally_get_unique_id(NULL), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert_eq(tally_get_version(NULL), TALLY_ERR_INVALID_ARGUMENT);
  int v;
  cr_assert_eq(tally_get_version(&v), TALLY_SUCCESS);
  cr_assert_eq(v, TALLY_VERSION_CODE);
  cr_assert_str_eq(tally_result_string(TALLY_ERR_MISMATCH), "collective mismatch");
  cr_assert_str_eq(tally_result_string((tally_result_t)99), "unknown result code");
}

Test(bad_input, destroyed_comm_refused) {
  tally_unique_id_t id;
  cr_assert_eq(tally_get_unique_id(&id), TALLY_SUCCESS);
  tally_comm_t comm;
  cr_assert_eq(tally_comm_init_rank(&comm, 1, id, 0), TALLY_SUCCESS, "%s", tally_comm_last_error(NULL));
  float x = 1, y = 0;
  cr_assert_eq(tally_allreduce(&x, &y, 1, TALLY_FLOAT32, TALLY_AVG, comm, NULL), TALLY_SUCCESS);
  cr_assert_eq(y, 1.0f);
  cr_assert_eq(tally_comm_destroy(comm), TALLY_SUCCESS);
  cr_assert_eq(tally_allreduce(&x, &y, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL), TALLY_ERR_INVALID_USAGE);
  cr_assert(strstr(tally_comm_last_error(comm), "destroyed"), "%s", tally_comm_last_error(comm));
  cr_assert_eq(tally_comm_destroy(comm), TALLY_ERR_INVALID_USAGE);
  cr_assert_eq(tally_comm_destroy(NULL), TALLY_ERR_INVALID_ARGUMENT);
  cr_assert_eq(tally_comm_abort(comm), TALLY_ERR_INVALID_USAGE);
}

/* Ranks given ids from different tally_get_unique_id calls cannot form a job: the second id's
 * root never hears from the others, and its rank times out with a message instead of hanging. */
static int mismatched_ids(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  tally_unique_id_t mine = *id;
  if (rank == 1 && tally_get_unique_id(&mine) != TALLY_SUCCESS) return harness_fail(rank, "get_unique_id failed");
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, mine, rank);
  if (r == TALLY_SUCCESS) {
    tally_comm_destroy(comm);
    return harness_fail(rank, "init with mismatched ids succeeded");
  }
  if (r != TALLY_ERR_TIMEOUT) return harness_fail(rank, "expected a timeout, got %s", tally_result_string(r));
  return 0;
}

Test(bad_input, mismatched_ids_time_out) {
  setenv("TALLY_TIMEOUT", "2", 1);
  cr_assert_eq(harness_run_raw(2, 60, mismatched_ids, NULL), 0);
  unsetenv("TALLY_TIMEOUT");
}
