/* perf_sweep.c: tally-perf COLLECTIVE --sweep. Measures the collective over the size range with
 * each algorithm forced by TALLY_ALGO ("allreduce:tree") and as the tuner chooses with nothing
 * forced, and records per size the tuner's choice and the cost model's predictions, for
 * perf_sweep_report.c to compare.
 *
 * TALLY_ALGO is read when a communicator is created, so each algorithm gets its own. They are
 * all made in this process, bootstrapped over the communicator the run started with (created with
 * TALLY_ALGO unset: the tuner's): rank 0 sets TALLY_ALGO and makes a unique id, broadcasts it on
 * that communicator, and every rank creates the forced communicator under the same TALLY_ALGO.
 * This works alike under every launcher and with -N (one process per rank either way), and keeps
 * every communicator open at once, so that each size's measurements are interleaved, repetition
 * by repetition, one algorithm after the other: a noisy spell on this shared machine slows them
 * all alike instead of whichever ran during it.
 *
 * Which algorithms: sweep_algos_for (the reduction collectives' six, alltoall's five, gather's
 * and scatter's two).
 *
 * The library runs another (the ring, pairwise, direct) instead of a forced algorithm that cannot
 * run a size (too few ranks, one host, a count it does not take); tally_comm_tuner_choice on the
 * forced communicator says so, and then that size is not measured for it, rather than reporting
 * the other's time under its name. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

/* The bandwidth algorithm is the first of each; the latency ones tree and rhd, bruck, binomial. */
static const struct sweep_algos tuned_algos = {
    .n = 6, .names = {"ring", "tree", "rhd", "hier", "board", "shared"}, .bandwidth = 0, .latency = (1u << 1) | (1u << 2)};
static const struct sweep_algos alltoall_algos = {
    .n = 5, .names = {"pairwise", "bruck", "hier", "board", "shared"}, .bandwidth = 0, .latency = 1u << 1};
static const struct sweep_algos rooted_algos = {
    .n = 2, .names = {"direct", "binomial"}, .bandwidth = 0, .latency = 1u << 1};

const struct sweep_algos *sweep_algos_for(coll_t c) {
  switch (c) {
    case COLL_ALLTOALL: return &alltoall_algos;
    case COLL_GATHER:
    case COLL_SCATTER: return &rooted_algos;
    default: return &tuned_algos;
  }
}

/* The index of the tuner's communicator after the forced ones. */
enum { TUNER = SWEEP_ALGOS, SWEEP_COMMS };

/* The collective as tally_comm_tuner_choice and tally_comm_predict name it. */
static const char *query_name(coll_t c) { return c == COLL_REDUCESCATTER ? "reduce_scatter" : coll_name(c); }

static void set_algo_env(const char *value) {
  if ((value != NULL ? setenv("TALLY_ALGO", value, 1) : unsetenv("TALLY_ALGO")) != 0) {
    fprintf(stderr, "tally-perf: cannot set TALLY_ALGO: %s\n", strerror(errno));
    exit(1);
  }
}

/* What rank 0 sends the others for each forced communicator. */
struct forced_id {
  int32_t status; /* tally_get_unique_id's result on rank 0 */
  tally_unique_id_t id;
};

/* The communicator that forces algorithm `a` for the collective; collective over b->comm (the
 * tuner's). NULL where the library refuses to force it (it does not implement it for the
 * collective: tally_get_unique_id reads TALLY_ALGO as every rank's init would); rank 0 then keeps
 * the library's reason in *refused. Exits with status 1 on any other failure. */
static tally_comm_t open_forced(const struct bench *b, const char *algo, char **refused) {
  char spec[64];
  snprintf(spec, sizeof spec, "%s:%s", coll_name(b->o->coll), algo);
  set_algo_env(spec);
  struct forced_id msg;
  memset(&msg, 0, sizeof msg);
  if (b->rank == 0) {
    tally_result_t r = tally_get_unique_id(&msg.id);
    msg.status = (int32_t)r;
    if (r == TALLY_ERR_INVALID_ARGUMENT) {
      *refused = strdup(tally_comm_last_error(NULL));
      if (*refused == NULL) msg.status = TALLY_ERR_SYSTEM;
    }
    if (r != TALLY_SUCCESS && *refused == NULL)
      fprintf(stderr, "tally-perf: rank 0: TALLY_ALGO=%s: %s: %s\n", spec, tally_result_string(r),
              tally_comm_last_error(NULL));
  }
  TRY(b, tally_broadcast(&msg, &msg, sizeof msg, TALLY_UINT8, 0, b->comm, NULL));
  tally_comm_t comm = NULL;
  if (msg.status == TALLY_SUCCESS) {
    tally_result_t r = tally_comm_init_rank(&comm, b->nranks, msg.id, b->rank);
    if (r != TALLY_SUCCESS) {
      fprintf(stderr, "tally-perf: rank %d: creating a communicator with TALLY_ALGO=%s: %s: %s\n", b->rank, spec,
              tally_result_string(r), tally_comm_last_error(NULL));
      exit(1);
    }
  } else if (msg.status != TALLY_ERR_INVALID_ARGUMENT) {
    exit(1); /* rank 0 said why */
  }
  set_algo_env(NULL);
  return comm;
}

/* The algorithm the tuner of `on`'s communicator picks at the current size, and its prediction. */
static const char *tuner_choice(const struct bench *on, double *predicted_us) {
  const char *algo = NULL;
  TRY(on, tally_comm_tuner_choice(on->comm, query_name(on->o->coll), on->count, on->o->type, &algo, predicted_us));
  return algo;
}

/* The tuner's choice and the model's predictions at the current size (on the tuner's communicator). */
static void record_model(const struct bench *tuner, const struct sweep_algos *algos, struct sweep_row *row) {
  double predicted;
  row->choice = tuner_choice(tuner, &predicted);
  row->choice_predicted_us = predicted < 0 ? SWEEP_NONE : predicted;
  for (int a = 0; a < algos->n; a++) {
    TRY(tuner, tally_comm_predict(tuner->comm, query_name(tuner->o->coll), algos->names[a], tuner->count,
                                  tuner->o->type, &predicted));
    row->predicted_us[a] = predicted < 0 ? SWEEP_NONE : predicted;
  }
}

static int compare_doubles(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* The median of t[0..n) (sorts them). */
static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, compare_doubles);
  return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* One size (set_buffer_size done on b): which communicators run it as asked, their times
 * (warm-up once, then --repeat timed loops taken in turn, the median of each), and with -c the
 * check of each. `comms` are the forced ones (NULL: refused) and the tuner's. */
static void measure_size(const struct bench *b, const struct sweep_algos *algos, tally_comm_t comms[SWEEP_COMMS],
                         struct sweep_row *row) {
  const struct options *o = b->o;
  struct bench on[SWEEP_COMMS];
  bool active[SWEEP_COMMS];
  for (int k = 0; k < SWEEP_COMMS; k++) {
    on[k] = *b;
    on[k].comm = comms[k];
    active[k] = comms[k] != NULL && (k == TUNER || strcmp(tuner_choice(&on[k], NULL), algos->names[k]) == 0);
  }
  for (int a = 0; a < SWEEP_ALGOS; a++) row->predicted_us[a] = SWEEP_NONE;
  record_model(&on[TUNER], algos, row);

  double times[SWEEP_COMMS][SWEEP_MAX_REPEAT];
  for (int r = 0; r < o->repeat; r++)
    for (int k = 0; k < SWEEP_COMMS; k++)
      if (active[k]) times[k][r] = time_place(&on[k], 0, r == 0 ? o->warmup : 0);
  for (int a = 0; a < SWEEP_ALGOS; a++) row->measured_us[a] = active[a] ? median(times[a], o->repeat) : SWEEP_NONE;
  row->choice_us = median(times[TUNER], o->repeat);

  if (!o->check) return;
  uint64_t mine = 0;
  for (int k = 0; k < SWEEP_COMMS; k++)
    if (active[k]) mine += check_place(&on[k], 0);
  TRY(b, tally_allreduce(&mine, &row->wrong, 1, TALLY_UINT64, TALLY_SUM, b->comm, NULL));
}

/* A new zeroed row at the end of s->rows. */
static struct sweep_row *add_row(const struct bench *b, struct sweep *s) {
  struct sweep_row *grown = realloc(s->rows, (s->nrows + 1) * sizeof *s->rows);
  if (grown == NULL) {
    fprintf(stderr, "tally-perf: rank %d: out of memory\n", b->rank);
    exit(1);
  }
  s->rows = grown;
  struct sweep_row *row = &s->rows[s->nrows++];
  memset(row, 0, sizeof *row);
  return row;
}

/* Destroys a forced communicator once every rank is done with it. */
static void close_forced(const struct bench *b, tally_comm_t comm) {
  struct bench on = *b;
  on.comm = comm;
  TRY(&on, tally_barrier(comm, NULL));
  TRY(&on, tally_comm_destroy(comm));
}

int run_sweep(tally_comm_t comm, const struct options *o) {
  struct bench b;
  FILE *json = NULL;
  int status = start_bench(&b, comm, o, &json);
  if (status != 0) return status;

  struct sweep s;
  memset(&s, 0, sizeof s);
  s.nranks = b.nranks;
  s.algos = sweep_algos_for(o->coll);
  tally_comm_t comms[SWEEP_COMMS] = {NULL}; /* NULL past the collective's algorithms */
  for (int a = 0; a < s.algos->n; a++) comms[a] = open_forced(&b, s.algos->names[a], &s.refused[a]);
  comms[TUNER] = comm;
  if (b.rank == 0) print_sweep_header(&b, &s);

  size_t size = o->minbytes;
  do {
    if (!set_buffer_size(&b, size)) {
      if (b.rank == 0) print_skipped(&b, size);
      continue;
    }
    struct sweep_row *row = add_row(&b, &s);
    row->bytes = b.bytes;
    row->count = b.count;
    measure_size(&b, s.algos, comms, row);
    s.wrong += row->wrong;
    if (b.rank == 0) print_sweep_row(&s, row);
  } while (next_size(o, &size));

  for (int a = 0; a < SWEEP_ALGOS; a++)
    if (comms[a] != NULL) close_forced(&b, comms[a]);
  bool json_bad = false;
  if (b.rank == 0) {
    print_sweep_end(o, &s);
    if (json != NULL) {
      write_sweep_json(json, &b, &s);
      json_bad = !close_json(json, o);
    }
  }
  for (int a = 0; a < SWEEP_ALGOS; a++) free(s.refused[a]);
  free(s.rows);
  finish_bench(&b);
  if (json_bad) return 1;
  return s.wrong != 0 ? STATUS_WRONG : 0;
}
