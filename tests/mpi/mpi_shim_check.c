/* An ordinary MPI program for libtally_mpi's test (tests/test_mpi.sh): every intercepted collective,
 * in place and not, on MPI_COMM_WORLD and on communicators from MPI_Comm_split, and each case that
 * must fall through to MPI (user op, derived datatype, MPI_MAXLOC, a bitwise op, alltoall with
 * different send and receive types). Each rank prints one line per result: a hash of the bytes
 * that MPI defines, so that runs with and without the shim can be compared (sorted).
 *   mpi_shim_check            the cases above
 *   mpi_shim_check mismatch   an allreduce whose count differs between ranks, on a communicator
 *                             with MPI_ERRORS_RETURN: each rank prints the error it got
 *   mpi_shim_check mismatch-fatal   the same with MPI_ERRORS_ARE_FATAL: the job must abort
 * CHECK_OUT=PREFIX in the environment: each rank writes PREFIX.RANK instead of stdout. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 24 /* elements per rank and block: small, so that the whole run is quick */

static int world_rank;

static void report(const char *comm_name, const char *what, const void *buf, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; i++) h = (h ^ ((const unsigned char *)buf)[i]) * 1099511628211ull;
  printf("rank %d %s %s %016llx\n", world_rank, comm_name, what, (unsigned long long)h);
}

static void check(int rc, const char *what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len;
    MPI_Error_string(rc, text, &len);
    fprintf(stderr, "rank %d: %s failed: %s\n", world_rank, what, text);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

static void user_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
  (void)type;
  for (int i = 0; i < *len; i++) ((int *)inout)[i] += ((int *)in)[i];
}

/* Small integers in floating point: every summation order gives the same bits. */
static void reductions(MPI_Comm comm, const char *name, int rank, int size) {
  float f[N], fr[N];
  double d[N], dr[N];
  int i32[N], ir[N];
  int64_t i64[N], lr[N];
  uint8_t u8[N], ur[N];
  long lg[N], lgr[N];
  for (int i = 0; i < N; i++) {
    f[i] = (float)(rank + i);
    d[i] = rank * 0.5 + i;
    i32[i] = (rank - 2) * (i + 1);
    i64[i] = (int64_t)(rank % 3 + 1) << (i % 8);
    u8[i] = (uint8_t)(rank + i); /* no wrap: Open MPI 4.1's vectorised uchar sum saturates instead */
    lg[i] = -(long)rank * 1000003L + i;
  }
  check(MPI_Allreduce(f, fr, N, MPI_FLOAT, MPI_SUM, comm), "allreduce float sum");
  report(name, "allreduce-float-sum", fr, sizeof fr);
  check(MPI_Allreduce(d, dr, N, MPI_DOUBLE, MPI_MAX, comm), "allreduce double max");
  report(name, "allreduce-double-max", dr, sizeof dr);
  check(MPI_Allreduce(i32, ir, N, MPI_INT, MPI_MIN, comm), "allreduce int min");
  report(name, "allreduce-int-min", ir, sizeof ir);
  check(MPI_Allreduce(i64, lr, N, MPI_INT64_T, MPI_PROD, comm), "allreduce int64 prod");
  report(name, "allreduce-int64-prod", lr, sizeof lr);
  check(MPI_Allreduce(u8, ur, N, MPI_UNSIGNED_CHAR, MPI_SUM, comm), "allreduce uchar sum");
  report(name, "allreduce-uchar-sum", ur, sizeof ur);
  memcpy(lgr, lg, sizeof lg);
  check(MPI_Allreduce(MPI_IN_PLACE, lgr, N, MPI_LONG, MPI_SUM, comm), "allreduce long sum in place");
  report(name, "allreduce-long-sum-inplace", lgr, sizeof lgr);
  check(MPI_Allreduce(f, fr, 0, MPI_FLOAT, MPI_SUM, comm), "allreduce of zero elements");

  int root = size - 1;
  memset(ir, 0, sizeof ir);
  check(MPI_Reduce(i32, ir, N, MPI_INT, MPI_SUM, root, comm), "reduce int sum");
  if (rank == root) report(name, "reduce-int-sum", ir, sizeof ir);
  memcpy(dr, d, sizeof d);
  check(MPI_Reduce(rank == 0 ? MPI_IN_PLACE : dr, rank == 0 ? dr : NULL, N, MPI_DOUBLE, MPI_SUM, 0, comm),
        "reduce double sum in place");
  if (rank == 0) report(name, "reduce-double-sum-inplace", dr, sizeof dr);

  float rs_in[N * 16], rs_out[N];
  for (int i = 0; i < N * size; i++) rs_in[i] = (float)(rank * 3 + i % 7);
  check(MPI_Reduce_scatter_block(rs_in, rs_out, N, MPI_FLOAT, MPI_SUM, comm), "reduce_scatter_block float sum");
  report(name, "reduce-scatter-float", rs_out, sizeof rs_out);
  check(MPI_Reduce_scatter_block(MPI_IN_PLACE, rs_in, N, MPI_FLOAT, MPI_MAX, comm), "reduce_scatter_block in place");
  report(name, "reduce-scatter-float-max-inplace", rs_in, N * sizeof(float));
}

static void movements(MPI_Comm comm, const char *name, int rank, int size) {
  double b[N];
  short s[N];
  for (int i = 0; i < N; i++) b[i] = rank == size / 2 ? i * 1.25 : -1, s[i] = (short)(rank == 0 ? i * 300 : 0);
  check(MPI_Bcast(b, N, MPI_DOUBLE, size / 2, comm), "bcast double");
  report(name, "bcast-double", b, sizeof b);
  check(MPI_Bcast(s, N, MPI_SHORT, 0, comm), "bcast short");
  report(name, "bcast-short", s, sizeof s);

  int mine[N], all[N * 16];
  for (int i = 0; i < N; i++) mine[i] = rank * 100 + i;
  check(MPI_Allgather(mine, N, MPI_INT, all, N, MPI_INT, comm), "allgather int");
  report(name, "allgather-int", all, N * size * sizeof(int));
  memset(all, 0, sizeof all);
  memcpy(all + rank * N, mine, sizeof mine);
  check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, N, MPI_INT, comm), "allgather in place");
  report(name, "allgather-int-inplace", all, N * size * sizeof(int));

  float out[N * 16], in[N * 16];
  for (int i = 0; i < N * size; i++) out[i] = (float)(rank * 1000 + i);
  check(MPI_Alltoall(out, N, MPI_FLOAT, in, N, MPI_FLOAT, comm), "alltoall float");
  report(name, "alltoall-float", in, N * size * sizeof(float));
  check(MPI_Alltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, N, MPI_FLOAT, comm), "alltoall in place");
  report(name, "alltoall-float-inplace", out, N * size * sizeof(float));

  int root = size - 1, gathered[N * 16];
  memset(gathered, 0, sizeof gathered);
  check(MPI_Gather(mine, N, MPI_INT, gathered, N, MPI_INT, root, comm), "gather int");
  if (rank == root) report(name, "gather-int", gathered, N * size * sizeof(int));
  memset(gathered, 0, sizeof gathered);
  if (rank == 0) memcpy(gathered, mine, sizeof mine);
  check(MPI_Gather(rank == 0 ? MPI_IN_PLACE : mine, N, MPI_INT, gathered, N, MPI_INT, 0, comm), "gather in place");
  if (rank == 0) report(name, "gather-int-inplace", gathered, N * size * sizeof(int));

  int piece[N];
  for (int i = 0; i < N * size; i++) gathered[i] = rank == root ? i * 7 : -1;
  check(MPI_Scatter(gathered, N, MPI_INT, piece, N, MPI_INT, root, comm), "scatter int");
  report(name, "scatter-int", piece, sizeof piece);
  for (int i = 0; i < N * size; i++) gathered[i] = rank == 0 ? i * 5 : -1;
  check(MPI_Scatter(gathered, N, MPI_INT, rank == 0 ? MPI_IN_PLACE : piece, N, MPI_INT, 0, comm), "scatter in place");
  report(name, "scatter-int-inplace", rank == 0 ? gathered : piece, sizeof piece);

  check(MPI_Barrier(comm), "barrier");
}

/* The cases libtally_mpi must leave to MPI: their results must be MPI's own. */
static void fall_throughs(MPI_Comm comm, const char *name, int rank, int size) {
  int v[N], r[N];
  for (int i = 0; i < N; i++) v[i] = rank * 13 + i;
  MPI_Op op;
  check(MPI_Op_create(user_sum, 1, &op), "op create");
  check(MPI_Allreduce(v, r, N, MPI_INT, op, comm), "allreduce user op");
  report(name, "fallthrough-user-op", r, sizeof r);
  MPI_Op_free(&op);

  check(MPI_Allreduce(v, r, N, MPI_INT, MPI_BXOR, comm), "allreduce bxor");
  report(name, "fallthrough-bxor", r, sizeof r);

  struct {
    double value;
    int rank;
  } pair = {(double)((rank * 5) % size), rank}, best;
  check(MPI_Allreduce(&pair, &best, 1, MPI_DOUBLE_INT, MPI_MAXLOC, comm), "allreduce maxloc");
  report(name, "fallthrough-maxloc", &best.value, sizeof best.value);
  report(name, "fallthrough-maxloc-rank", &best.rank, sizeof best.rank);

  MPI_Datatype every_other; /* N/2 ints, a stride of 2: derived and not contiguous */
  MPI_Type_vector(N / 2, 1, 2, MPI_INT, &every_other);
  MPI_Type_commit(&every_other);
  for (int i = 0; i < N; i++) v[i] = rank == 0 ? i + 1 : 0;
  check(MPI_Bcast(v, 1, every_other, 0, comm), "bcast derived");
  report(name, "fallthrough-derived-bcast", v, sizeof v);
  MPI_Type_free(&every_other);

  MPI_Datatype pair_of_ints;
  MPI_Type_contiguous(2, MPI_INT, &pair_of_ints);
  MPI_Type_commit(&pair_of_ints);
  int out[32], in[32];
  for (int i = 0; i < 2 * size; i++) out[i] = rank * 10 + i;
  check(MPI_Alltoall(out, 2, MPI_INT, in, 1, pair_of_ints, comm), "alltoall different types");
  report(name, "fallthrough-alltoall-types", in, 2 * size * sizeof(int));
  MPI_Type_free(&pair_of_ints);
}

/* A root outside the communicator is MPI's own error, MPI_ERR_ROOT, with or without the shim. */
static void bad_root(MPI_Comm comm, const char *name, int size) {
  MPI_Comm dup;
  MPI_Comm_dup(comm, &dup);
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int v[4] = {0}, cls = -1;
  int rc = MPI_Bcast(v, 4, MPI_INT, size, dup);
  MPI_Error_class(rc, &cls);
  printf("rank %d %s bcast-root-outside err_root=%d\n", world_rank, name, cls == MPI_ERR_ROOT);
  MPI_Comm_free(&dup);
}

static void run_all(MPI_Comm comm, const char *name) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (size > 16) {
    fprintf(stderr, "mpi_shim_check: at most 16 ranks per communicator\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  reductions(comm, name, rank, size);
  movements(comm, name, rank, size);
  fall_throughs(comm, name, rank, size);
  bad_root(comm, name, size);
}

/* Between the even and the odd ranks: an intercommunicator, whose collectives stay with MPI. */
static void intercomm(MPI_Comm parity) {
  MPI_Comm inter;
  MPI_Intercomm_create(parity, 0, MPI_COMM_WORLD, world_rank % 2 ? 0 : 1, 7, &inter);
  int v[N], r[N], rank;
  MPI_Comm_rank(parity, &rank);
  for (int i = 0; i < N; i++) v[i] = world_rank * 100 + i;
  check(MPI_Allreduce(v, r, N, MPI_INT, MPI_SUM, inter), "intercommunicator allreduce");
  report("inter", "allreduce-int", r, sizeof r);
  int root = world_rank % 2 ? (rank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0; /* the odd group's rank 0 sends */
  check(MPI_Bcast(v, N, MPI_INT, root, inter), "intercommunicator bcast");
  report("inter", "bcast-int", v, sizeof v);
  MPI_Comm_free(&inter);
}

/* Rank 0 passes 4 floats and the others 8: MPI_ERRORS_RETURN must give every rank an error. */
static int mismatch(int fatal) {
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  MPI_Comm_set_errhandler(comm, fatal ? MPI_ERRORS_ARE_FATAL : MPI_ERRORS_RETURN);
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
  int rc = MPI_Allreduce(x, y, world_rank == 0 ? 4 : 8, MPI_FLOAT, MPI_SUM, comm);
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0, cls = 0;
  if (rc != MPI_SUCCESS) {
    MPI_Error_string(rc, text, &len);
    MPI_Error_class(rc, &cls);
  }
  printf("rank %d mismatch rc=%s class=%d: %s\n", world_rank, rc == MPI_SUCCESS ? "success" : "error", cls, text);
  fflush(stdout);
  MPI_Comm_free(&comm);
  /* The world is still usable. */
  int one = 1, total = 0;
  check(MPI_Allreduce(&one, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD), "allreduce after the mismatch");
  printf("rank %d after-mismatch %d\n", world_rank, total);
  return rc == MPI_SUCCESS;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  /* mpirun may cut the ranks' lines into one another: with CHECK_OUT=PREFIX each rank writes its
   * own file, PREFIX.RANK. */
  const char *out = getenv("CHECK_OUT");
  if (out) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%d", out, world_rank);
    if (!freopen(path, "w", stdout)) {
      perror(path);
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  int failed = 0;
  if (argc > 1 && !strncmp(argv[1], "mismatch", 8)) {
    failed = mismatch(!strcmp(argv[1], "mismatch-fatal"));
  } else {
    MPI_Comm parity, reversed;
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, world_rank, &parity);
    MPI_Comm_split(MPI_COMM_WORLD, 0, size - world_rank, &reversed);
    run_all(MPI_COMM_WORLD, "world");
    run_all(parity, world_rank % 2 ? "odd" : "even");
    if (size >= 2) intercomm(parity);
    run_all(reversed, "reversed");
    MPI_Comm_free(&parity);
    run_all(MPI_COMM_WORLD, "world-again");
    /* reversed is left for MPI_Finalize to release */
    (void)reversed;
  }
  MPI_Finalize();
  return failed;
}
