/* The multi-threaded test bodies (see threaded.h). */
#define _GNU_SOURCE
#include "threaded.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void *abort_later(void *comm) {
  usleep(200 * 1000);
  tally_comm_abort(comm);
  return NULL;
}

int threaded_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  if (rank == 1) {
    sleep(2); /* never joins the collective */
    return 0;
  }
  pthread_t thread;
  pthread_create(&thread, NULL, abort_later, comm);
  double start = harness_now_s();
  float x = 1;
  tally_result_t r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  double took = harness_now_s() - start;
  pthread_join(thread, NULL);
  int bad = harness_expect(rank, comm, r, TALLY_ERR_ABORTED, "abort");
  if (took > 1.2) bad += harness_fail(rank, "abort took %.2f s to take effect", took);
  float y = 0;
  bad += harness_expect(rank, comm, tally_allreduce(&y, &y, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL),
                        TALLY_ERR_INVALID_USAGE, "aborted");
  return bad;
}

struct busy_arg {
  tally_comm_t comm;
  float value;
  tally_result_t result;
};

static void *allreduce_in_thread(void *p) {
  struct busy_arg *a = p;
  a->result = tally_allreduce(&a->value, &a->value, 1, TALLY_FLOAT32, TALLY_SUM, a->comm, NULL);
  return NULL;
}

tally_result_t threaded_blocks_call(tally_comm_t comm, int n, const struct threaded_blocks *b, float **send,
                                    float **recv) {
  size_t all = b->count * (size_t)n;
  *send = calloc(all, sizeof(float));
  *recv = calloc(all + 1, sizeof(float));
  if (!*send || !*recv) { /* a rank that dies fails its test: the harness names it */
    fprintf(stderr, "threaded_blocks_call: no memory for %zu elements a block\n", b->count);
    abort();
  }
  return b->allgather ? tally_allgather(*send, *recv, b->count, TALLY_FLOAT32, comm, NULL)
                      : tally_alltoall(*send, *recv, b->count, TALLY_FLOAT32, comm, NULL);
}

/* Rank 1 never joins the collective; rank 0's watchdog aborts it: rank 0 gets ABORTED, the other
 * ranks (more than 2) the failure rank 0 reports, naming it. One watchdog only: two ranks aborting
 * at about the same time may each see the other's report first. */
int threaded_blocks_abort_from_watchdog(tally_comm_t comm, int rank, int n, void *arg) {
  if (rank == 1) {
    sleep(2); /* never joins */
    return 0;
  }
  static const struct threaded_blocks alltoall_of_1000 = {0, 1000};
  const struct threaded_blocks *b = arg ? arg : &alltoall_of_1000;
  pthread_t thread;
  if (rank == 0) pthread_create(&thread, NULL, abort_later, comm);
  double start = harness_now_s();
  float *send, *recv;
  tally_result_t r = threaded_blocks_call(comm, n, b, &send, &recv);
  double took = harness_now_s() - start;
  if (rank == 0) pthread_join(thread, NULL);
  free(send), free(recv);
  int bad = rank == 0 ? harness_expect(rank, comm, r, TALLY_ERR_ABORTED, "abort")
                      : harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 0");
  return took > 1.2 ? bad + harness_fail(rank, "abort took %.2f s to take effect", took) : bad;
}

int threaded_one_comm_two_threads(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float x = 1;
  if (rank == 1) {
    usleep(400 * 1000); /* rank 0's first thread waits for this */
    tally_result_t r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    return r == TALLY_SUCCESS && x == 2 ? 0 : harness_fail(rank, "allreduce: %s", tally_comm_last_error(comm));
  }
  struct busy_arg a = {comm, 1, TALLY_ERR_INTERNAL};
  pthread_t thread;
  pthread_create(&thread, NULL, allreduce_in_thread, &a);
  usleep(100 * 1000);
  /* these refusals leave the communicator alone: their message is the calling thread's */
  int bad = harness_expect(rank, NULL, tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL),
                           TALLY_ERR_INVALID_USAGE, "another thread");
  bad += harness_expect(rank, NULL, tally_comm_destroy(comm), TALLY_ERR_INVALID_USAGE, "still running");
  pthread_join(thread, NULL);
  if (a.result != TALLY_SUCCESS || a.value != 2)
    bad += harness_fail(rank, "the first thread's allreduce: %s, %g", tally_result_string(a.result), a.value);
  return bad;
}

enum { THREADS = 3, ROUNDS = 30, COUNT = 1000 };

struct comm_thread {
  tally_unique_id_t id;
  int rank, nranks, index;
  int failed;
  int (*work)(tally_comm_t comm, struct comm_thread *t); /* returns non-zero on failure (printed) */
};

/* Allreduces of a value that names the thread and the round. */
static int allreduce_rounds(tally_comm_t comm, struct comm_thread *t) {
  static __thread float buf[COUNT];
  for (int round = 0; round < ROUNDS; round++) {
    for (int i = 0; i < COUNT; i++) buf[i] = (float)(t->rank + t->index + round);
    if (tally_allreduce(buf, buf, COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL) != TALLY_SUCCESS)
      return harness_fail(t->rank, "thread %d: allreduce: %s", t->index, tally_comm_last_error(comm));
    float want = (float)(t->nranks * (t->nranks - 1) / 2 + t->nranks * (t->index + round));
    for (int i = 0; i < COUNT; i++)
      if (buf[i] != want) return harness_fail(t->rank, "thread %d: %g, expected %g", t->index, buf[i], want);
  }
  return 0;
}

/* Groups (thread-local state) in which every rank sends to every rank, itself included, before it
 * receives from any. */
static int group_rounds(tally_comm_t comm, struct comm_thread *t) {
  int n = t->nranks;
  static __thread int out[16], in[16];
  for (int round = 0; round < ROUNDS; round++) {
    tally_result_t r = tally_group_start();
    for (int peer = 0; peer < n && r == TALLY_SUCCESS; peer++) {
      out[peer] = t->rank * 1000 + peer * 10 + t->index + round;
      r = tally_send(&out[peer], 1, TALLY_INT32, peer, comm, NULL);
    }
    for (int peer = 0; peer < n && r == TALLY_SUCCESS; peer++)
      r = tally_recv(&in[peer], 1, TALLY_INT32, peer, comm, NULL);
    tally_result_t end = tally_group_end();
    if (r != TALLY_SUCCESS || end != TALLY_SUCCESS)
      return harness_fail(t->rank, "thread %d: group: %s", t->index, tally_comm_last_error(comm));
    for (int peer = 0; peer < n; peer++)
      if (in[peer] != peer * 1000 + t->rank * 10 + t->index + round)
        return harness_fail(t->rank, "thread %d: got %d from rank %d", t->index, in[peer], peer);
  }
  return 0;
}

static void *run_comm_thread(void *p) {
  struct comm_thread *t = p;
  tally_comm_t comm;
  if (tally_comm_init_rank(&comm, t->nranks, t->id, t->rank) != TALLY_SUCCESS) {
    t->failed = harness_fail(t->rank, "thread %d: init: %s", t->index, tally_comm_last_error(NULL));
    return NULL;
  }
  t->failed = t->work(comm, t);
  if (tally_comm_destroy(comm) != TALLY_SUCCESS)
    t->failed = harness_fail(t->rank, "destroy: %s", tally_comm_last_error(NULL));
  return NULL;
}

/* Makes THREADS communicators over the ranks of `comm`, each created and used by its own thread. */
static int comms_in_threads(tally_comm_t comm, int rank, int n, int (*work)(tally_comm_t, struct comm_thread *)) {
  struct comm_thread threads[THREADS];
  memset(threads, 0, sizeof threads);
  for (int i = 0; i < THREADS; i++) {
    if (rank == 0 && tally_get_unique_id(&threads[i].id) != TALLY_SUCCESS)
      return harness_fail(rank, "tally_get_unique_id: %s", tally_comm_last_error(NULL));
    if (tally_broadcast(&threads[i].id, &threads[i].id, sizeof threads[i].id, TALLY_UINT8, 0, comm, NULL) !=
        TALLY_SUCCESS)
      return harness_fail(rank, "sending unique id %d: %s", i, tally_comm_last_error(comm));
    threads[i].rank = rank;
    threads[i].nranks = n;
    threads[i].index = i;
    threads[i].work = work;
  }
  pthread_t tid[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&tid[i], NULL, run_comm_thread, &threads[i]);
  int bad = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(tid[i], NULL);
    bad += threads[i].failed;
  }
  return bad;
}

int threaded_comms_in_threads(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  return comms_in_threads(comm, rank, n, allreduce_rounds);
}

int threaded_groups_in_threads(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  if (n > 16) return harness_fail(rank, "threaded_groups_in_threads runs on at most 16 ranks");
  return comms_in_threads(comm, rank, n, group_rounds);
}

/* tally_comm_abort from another thread ends a split or shrink that waits for a rank that stopped
 * taking part, at every phase, with TALLY_ERR_ABORTED within 2 s (TALLY_TIMEOUT is 30 s here). */
struct delayed_abort {
  tally_comm_t comm;
  int delay_ms;
};

static void *abort_after(void *arg) {
  const struct delayed_abort *a = arg;
  usleep((useconds_t)a->delay_ms * 1000);
  tally_comm_abort(a->comm);
  return NULL;
}

int threaded_abort_while_deriving(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n;
  const struct abort_plan *plan = arg;
  if (rank == plan->absent && !plan->stall_split) {
    usleep(2500 * 1000); /* alive, calling nothing, until the others are done */
    return 0;
  }
  struct delayed_abort a = {comm, rank == plan->early_rank ? 300 : 800};
  pthread_t thread;
  pthread_create(&thread, NULL, abort_after, &a);
  tally_comm_t child = NULL;
  double start = harness_now_s();
  tally_result_t r = plan->shrink ? tally_comm_shrink(comm, NULL, 0, &child) : tally_comm_split(comm, 0, rank, &child);
  double took = harness_now_s() - start;
  pthread_join(thread, NULL);
  /* The early rank's call ends with its abort. The others' may first hear of an abort elsewhere
   * (TALLY_ERR_REMOTE: the early rank's failed allgather, the root's abort, a connection to an
   * aborted child refused), which ends their wait as promptly. */
  tally_result_t want = rank != plan->early_rank && r == TALLY_ERR_REMOTE ? TALLY_ERR_REMOTE : TALLY_ERR_ABORTED;
  int bad = harness_expect(rank, comm, r, want, want == TALLY_ERR_ABORTED ? "abort" : "");
  if (child) bad += harness_fail(rank, "*newcomm is set after a failed call");
  if (took > 2) bad += harness_fail(rank, "the aborted call took %.1f s", took);
  return bad;
}
