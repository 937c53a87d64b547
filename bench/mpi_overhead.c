/* libtally_mpi's own cost per call: on one rank, where the collective itself is a copy, an 8-byte
 * MPI_Allreduce through the shim (run with LD_PRELOAD=libtally_mpi.so) against tally_allreduce
 * called directly; the difference is the interposition (routing, the attribute lookup).
 *   mpirun -np 1 -x LD_PRELOAD=.../libtally_mpi.so mpi_overhead [CALLS]   (bench/mpi_figures.sh) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <tally.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int calls = argc > 1 ? atoi(argv[1]) : 1000000;
  float x[2] = {1, 2}, y[2];
  tally_unique_id_t id;
  tally_comm_t comm;
  if (calls <= 0 || tally_get_unique_id(&id) != TALLY_SUCCESS ||
      tally_comm_init_rank(&comm, 1, id, 0) != TALLY_SUCCESS) {
    fprintf(stderr, "mpi_overhead: %s\n", calls <= 0 ? "CALLS must be positive" : tally_comm_last_error(NULL));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (int i = 0; i < 1000; i++) MPI_Allreduce(x, y, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < calls; i++) MPI_Allreduce(x, y, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  double t1 = MPI_Wtime();
  for (int i = 0; i < 1000; i++) tally_allreduce(x, y, 2, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  double t2 = MPI_Wtime();
  for (int i = 0; i < calls; i++) tally_allreduce(x, y, 2, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  double t3 = MPI_Wtime();
  double shim_us = (t1 - t0) * 1e6 / calls, direct_us = (t3 - t2) * 1e6 / calls;
  printf("mpi_overhead %.4f %.4f %.4f\n", shim_us, direct_us, shim_us - direct_us);
  tally_comm_destroy(comm);
  MPI_Finalize();
  return 0;
}
