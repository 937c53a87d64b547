/* Every collective, datatype and op against an exact reference (see coll_cases.h). */
#define _GNU_SOURCE
#include "coll_cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "typed.h"

enum coll { ALLREDUCE, ALLGATHER, REDUCE_SCATTER, BROADCAST, REDUCE };
static const char *coll_names[] = {"allreduce", "allgather", "reduce_scatter", "broadcast", "reduce"};

struct case_ {
  enum coll coll;
  tally_datatype_t type;
  tally_op_t op;
  size_t count;
  int in_place;
  int root;
};

static int describe_failure(int rank, const struct case_ *c, const char *what) {
  return harness_fail(rank, "%s count=%zu %s %s root=%d %s: %s", coll_names[c->coll], c->count,
                      tally_datatype_name(c->type), tally_op_name(c->op), c->root,
                      c->in_place ? "in-place" : "out-of-place", what);
}

/* Runs one case and checks every element this rank can see. */
static int run_case(tally_comm_t comm, int rank, int n, const struct case_ *c) {
  size_t es = tally_datatype_size(c->type), cnt = c->count;
  size_t send_elems = c->coll == REDUCE_SCATTER ? cnt * (size_t)n : cnt;
  size_t recv_elems = c->coll == ALLGATHER ? cnt * (size_t)n : cnt;
  size_t big = send_elems > recv_elems ? send_elems : recv_elems;
  char *sendbuf = malloc(big * es + 1), *recvbuf = malloc(big * es + 1);
  tally_op_t fill_op = c->coll == ALLGATHER || c->coll == BROADCAST ? TALLY_SUM : c->op;
  for (size_t i = 0; i < send_elems; i++) typed_set(sendbuf, i, c->type, input_value(rank, i, c->type, fill_op));
  memset(recvbuf, 0x5a, big * es);
  const char *s = sendbuf;
  char *r = recvbuf;
  if (c->in_place) {
    switch (c->coll) {
      case ALLGATHER: /* send from this rank's block of the output */
        memcpy(recvbuf + (size_t)rank * cnt * es, sendbuf, cnt * es);
        s = recvbuf + (size_t)rank * cnt * es;
        break;
      case REDUCE_SCATTER: /* output is this rank's block of the input */ r = sendbuf + (size_t)rank * cnt * es; break;
      default: memcpy(recvbuf, sendbuf, send_elems * es); s = recvbuf;
    }
  }
  tally_result_t res = TALLY_SUCCESS;
  switch (c->coll) {
    case ALLREDUCE: res = tally_allreduce(s, r, cnt, c->type, c->op, comm, NULL); break;
    case ALLGATHER: res = tally_allgather(s, r, cnt, c->type, comm, NULL); break;
    case REDUCE_SCATTER: res = tally_reduce_scatter(s, r, cnt, c->type, c->op, comm, NULL); break;
    case BROADCAST: res = tally_broadcast(s, r, cnt, c->type, c->root, comm, NULL); break;
    case REDUCE:
      /* recvbuf matters on the root only: non-roots pass NULL out of place */
      res = tally_reduce(s, rank == c->root || c->in_place ? r : NULL, cnt, c->type, c->op, c->root, comm, NULL);
      break;
  }
  int rc = 0;
  if (res != TALLY_SUCCESS) {
    char what[1200];
    snprintf(what, sizeof what, "returned %s: %s", tally_result_string(res), tally_comm_last_error(comm));
    rc = describe_failure(rank, c, what);
  }
  int check = !(c->coll == REDUCE && rank != c->root);
  for (size_t i = 0; rc == 0 && check && i < recv_elems; i++) {
    double want;
    switch (c->coll) {
      case ALLGATHER: want = input_value((int)(i / cnt), i % cnt, c->type, TALLY_SUM); break;
      case BROADCAST: want = input_value(c->root, i, c->type, TALLY_SUM); break;
      case REDUCE_SCATTER: want = expected_value(n, (size_t)rank * cnt + i, c->type, c->op); break;
      default: want = expected_value(n, i, c->type, c->op);
    }
    double got = typed_get(r, i, c->type);
    if (got != want) {
      char what[200];
      snprintf(what, sizeof what, "element %zu is %g, expected %g", i, got, want);
      rc = describe_failure(rank, c, what);
    }
  }
  free(sendbuf);
  free(recvbuf);
  return rc;
}

static int has_op(enum coll c) { return c == ALLREDUCE || c == REDUCE_SCATTER || c == REDUCE; }
static int has_root(enum coll c) { return c == BROADCAST || c == REDUCE; }

int coll_all_cases(tally_comm_t comm, int rank, int n, void *arg) {
  const char *only = arg; /* NULL: every collective */
  static const size_t counts[] = {0, 1, 7, 1031, 5003}; /* 5003: mid-sized (halving-doubling across hosts) */
  int roots[3] = {0, n - 1, n / 2};
  int failures = 0;
  for (int coll = ALLREDUCE; coll <= REDUCE; coll++) {
    if (only && strcmp(only, coll_names[coll]) != 0) continue;
    for (int t = 0; t < TALLY_NUM_DATATYPES; t++)
      for (int op = 0; op < (has_op(coll) ? TALLY_NUM_OPS : 1); op++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
          for (int in_place = 0; in_place < 2; in_place++)
            for (int ri = 0; ri < (has_root(coll) ? 3 : 1); ri++) {
              struct case_ c = {coll, t, op, counts[k], in_place, roots[ri]};
              failures += run_case(comm, rank, n, &c);
              if (failures > 5) return 1;
            }
  }
  /* Several MiB, so that blocks span many pipelined chunks; and 160 KiB, which the shared-buffer
   * algorithm runs in several short rounds where ranks have cores of their own (shared.c). */
  static const size_t large_counts[] = {(160u << 10) / 4 + 13, (3u << 20) / 4 + 13};
  for (int coll = ALLREDUCE; coll <= REDUCE; coll++)
    for (size_t k = 0; k < sizeof large_counts / sizeof large_counts[0]; k++)
      for (int in_place = 0; in_place < 2 && (!only || !strcmp(only, coll_names[coll])); in_place++) {
        struct case_ c = {coll, TALLY_FLOAT32, TALLY_SUM, large_counts[k], in_place, n - 1};
        failures += run_case(comm, rank, n, &c);
      }
  tally_result_t r = tally_barrier(comm, NULL);
  if (r != TALLY_SUCCESS) failures += harness_fail(rank, "barrier: %s", tally_comm_last_error(comm));
  return failures != 0;
}

