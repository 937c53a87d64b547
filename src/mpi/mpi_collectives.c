/* libtally_mpi's entry points: the MPI collectives it intercepts (each runs on Tally when
 * mpi_policy.c maps its datatype and op and TALLY_MPI_COLLS selects it, else PMPI_* unchanged),
 * and MPI_Init, MPI_Init_thread, MPI_Comm_free and MPI_Finalize for its bookkeeping. MPI's in-place
 * forms become Tally's (README: in place); data-moving collectives move bytes (TALLY_UINT8). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mpi_shim.h"

#define SHIM_API __attribute__((visibility("default")))

static int comm_size(MPI_Comm comm) {
  int size = 0;
  PMPI_Comm_size(comm, &size);
  return size;
}

static int comm_rank(MPI_Comm comm) {
  int rank = 0;
  PMPI_Comm_rank(comm, &rank);
  return rank;
}

/* A root MPI reports itself, with its own error class (MPI_ERR_ROOT), and the intercommunicators'
 * MPI_ROOT and MPI_PROC_NULL: for PMPI_*. */
static int root_outside(MPI_Comm comm, int root) {
  return comm == MPI_COMM_NULL || root < 0 || root >= comm_size(comm);
}

/* The Tally communicator the call runs on, or NULL for PMPI_*. `reason` is SHIM_TO_TALLY when the
 * datatype and op map onto Tally's, else why not; `bytes` is the whole buffer (as the figures size
 * it). A negative count or MPI_COMM_NULL goes to MPI, which reports it. */
static tally_comm_t route(enum shim_coll coll, MPI_Comm comm, enum shim_reason reason, size_t bytes, int count,
                          MPI_Datatype type) {
  if (comm == MPI_COMM_NULL || count < 0) return NULL;
  enum shim_reason not_selected;
  if (!shim_policy_selects(coll, &not_selected)) reason = not_selected;
  tally_comm_t tally = NULL;
  int own_cores = 0;
  if (reason == SHIM_TO_TALLY) tally = shim_comm_get(comm, &own_cores, &reason);
  if (tally && !shim_policy_allows(coll, bytes, own_cores, &reason)) tally = NULL;
  if (shim_log_wanted(coll, reason)) {
    char detail[256], name[MPI_MAX_OBJECT_NAME] = "";
    int len = 0;
    if (type != MPI_DATATYPE_NULL) PMPI_Type_get_name(type, name, &len);
    snprintf(detail, sizeof detail, "count %d of %s, %zu bytes, on a communicator of %d ranks", count,
             name[0] ? name : "an unnamed datatype", bytes, comm_size(comm));
    shim_log_decision(coll, reason, detail);
  }
  return tally;
}

/* A data-moving collective's block of bytes per rank, or why it stays with MPI. A side passed as
 * MPI_DATATYPE_NULL (MPI_IN_PLACE's, or a non-root's insignificant one) is not looked at. */
static enum shim_reason movable(MPI_Datatype send_type, int send_count, MPI_Datatype recv_type, int recv_count,
                                size_t *block) {
  int has_send = send_type != MPI_DATATYPE_NULL;
  MPI_Datatype type = has_send ? send_type : recv_type;
  *block = 0;
  if (has_send && recv_type != MPI_DATATYPE_NULL && (send_type != recv_type || send_count != recv_count))
    return SHIM_TYPES_DIFFER;
  size_t element = shim_movable_size(type);
  if (!element) return SHIM_DATATYPE;
  *block = (size_t)(has_send ? send_count : recv_count) * element;
  return SHIM_TO_TALLY;
}

/* A reduction's Tally datatype, op and bytes, or why it stays with MPI. */
static enum shim_reason reducible(MPI_Datatype datatype, MPI_Op op, int count, tally_datatype_t *type, tally_op_t *top,
                                  size_t *bytes) {
  enum shim_reason reason = SHIM_TO_TALLY;
  *bytes = 0;
  if (!shim_map_reduction(datatype, op, type, top, &reason)) return reason;
  *bytes = (size_t)(count > 0 ? count : 0) * tally_datatype_size(*type);
  return SHIM_TO_TALLY;
}

SHIM_API int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op,
                           MPI_Comm comm) {
  tally_datatype_t type;
  tally_op_t top;
  size_t bytes;
  enum shim_reason reason = reducible(datatype, op, count, &type, &top, &bytes);
  tally_comm_t tally = route(SHIM_ALLREDUCE, comm, reason, bytes, count, datatype);
  if (!tally) return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
  const void *src = sendbuf == MPI_IN_PLACE ? recvbuf : sendbuf;
  return shim_result(comm, SHIM_ALLREDUCE, tally_allreduce(src, recvbuf, (size_t)count, type, top, tally, NULL), tally);
}

SHIM_API int MPI_Reduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op, int root,
                        MPI_Comm comm) {
  tally_datatype_t type;
  tally_op_t top;
  size_t bytes;
  enum shim_reason reason = reducible(datatype, op, count, &type, &top, &bytes);
  tally_comm_t tally = root_outside(comm, root) ? NULL : route(SHIM_REDUCE, comm, reason, bytes, count, datatype);
  if (!tally) return PMPI_Reduce(sendbuf, recvbuf, count, datatype, op, root, comm);
  int at_root = comm_rank(comm) == root;
  const void *src = sendbuf == MPI_IN_PLACE ? recvbuf : sendbuf;
  tally_result_t r = tally_reduce(src, at_root ? recvbuf : NULL, (size_t)count, type, top, root, tally, NULL);
  return shim_result(comm, SHIM_REDUCE, r, tally);
}

SHIM_API int MPI_Reduce_scatter_block(const void *sendbuf, void *recvbuf, int recvcount, MPI_Datatype datatype,
                                      MPI_Op op, MPI_Comm comm) {
  tally_datatype_t type;
  tally_op_t top;
  size_t block;
  enum shim_reason reason = reducible(datatype, op, recvcount, &type, &top, &block);
  int nranks = comm == MPI_COMM_NULL ? 0 : comm_size(comm);
  tally_comm_t tally = route(SHIM_REDUCE_SCATTER_BLOCK, comm, reason, block * (size_t)nranks, recvcount, datatype);
  if (!tally) return PMPI_Reduce_scatter_block(sendbuf, recvbuf, recvcount, datatype, op, comm);
  if (sendbuf != MPI_IN_PLACE)
    return shim_result(comm, SHIM_REDUCE_SCATTER_BLOCK,
                       tally_reduce_scatter(sendbuf, recvbuf, (size_t)recvcount, type, top, tally, NULL), tally);
  /* MPI in place: the input fills recvbuf and the result goes to its first block; Tally's puts it
   * in this rank's block, moved to the front after. */
  char *own = (char *)recvbuf + (size_t)comm_rank(comm) * block;
  tally_result_t r = tally_reduce_scatter(recvbuf, own, (size_t)recvcount, type, top, tally, NULL);
  if (r == TALLY_SUCCESS && own != recvbuf) memmove(recvbuf, own, block);
  return shim_result(comm, SHIM_REDUCE_SCATTER_BLOCK, r, tally);
}

SHIM_API int MPI_Bcast(void *buffer, int count, MPI_Datatype datatype, int root, MPI_Comm comm) {
  size_t bytes;
  enum shim_reason reason = movable(datatype, count, MPI_DATATYPE_NULL, 0, &bytes);
  tally_comm_t tally = root_outside(comm, root) ? NULL : route(SHIM_BCAST, comm, reason, bytes, count, datatype);
  if (!tally) return PMPI_Bcast(buffer, count, datatype, root, comm);
  return shim_result(comm, SHIM_BCAST, tally_broadcast(buffer, buffer, bytes, TALLY_UINT8, root, tally, NULL), tally);
}

SHIM_API int MPI_Allgather(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount,
                           MPI_Datatype recvtype, MPI_Comm comm) {
  int in_place = sendbuf == MPI_IN_PLACE;
  size_t block;
  enum shim_reason reason = movable(in_place ? MPI_DATATYPE_NULL : sendtype, sendcount, recvtype, recvcount, &block);
  int nranks = comm == MPI_COMM_NULL ? 0 : comm_size(comm);
  tally_comm_t tally = route(SHIM_ALLGATHER, comm, reason, block * (size_t)nranks, recvcount, recvtype);
  if (!tally) return PMPI_Allgather(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm);
  const void *src = in_place ? (const char *)recvbuf + (size_t)comm_rank(comm) * block : sendbuf;
  return shim_result(comm, SHIM_ALLGATHER, tally_allgather(src, recvbuf, block, TALLY_UINT8, tally, NULL), tally);
}

SHIM_API int MPI_Alltoall(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount,
                          MPI_Datatype recvtype, MPI_Comm comm) {
  int in_place = sendbuf == MPI_IN_PLACE;
  size_t block;
  enum shim_reason reason = movable(in_place ? MPI_DATATYPE_NULL : sendtype, sendcount, recvtype, recvcount, &block);
  int nranks = comm == MPI_COMM_NULL ? 0 : comm_size(comm);
  tally_comm_t tally = route(SHIM_ALLTOALL, comm, reason, block * (size_t)nranks, recvcount, recvtype);
  if (!tally) return PMPI_Alltoall(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm);
  const void *src = in_place ? recvbuf : sendbuf;
  return shim_result(comm, SHIM_ALLTOALL, tally_alltoall(src, recvbuf, block, TALLY_UINT8, tally, NULL), tally);
}

/* Gather and scatter: the root's buffer of every rank's block is significant at the root only, and
 * MPI_IN_PLACE leaves the root's own block where it is (gather: the sendbuf, scatter: the recvbuf). */
SHIM_API int MPI_Gather(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount,
                        MPI_Datatype recvtype, int root, MPI_Comm comm) {
  int at_root = comm != MPI_COMM_NULL && comm_rank(comm) == root, in_place = at_root && sendbuf == MPI_IN_PLACE;
  size_t block;
  enum shim_reason reason = movable(in_place ? MPI_DATATYPE_NULL : sendtype, sendcount,
                                    at_root ? recvtype : MPI_DATATYPE_NULL, recvcount, &block);
  int nranks = comm == MPI_COMM_NULL ? 0 : comm_size(comm);
  tally_comm_t tally = NULL;
  if (!root_outside(comm, root))
    tally = route(SHIM_GATHER, comm, reason, block * (size_t)nranks, in_place ? recvcount : sendcount,
                  in_place ? recvtype : sendtype);
  if (!tally) return PMPI_Gather(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, root, comm);
  const void *src = in_place ? (const char *)recvbuf + (size_t)root * block : sendbuf;
  tally_result_t r = tally_gather(src, at_root ? recvbuf : NULL, block, TALLY_UINT8, root, tally, NULL);
  return shim_result(comm, SHIM_GATHER, r, tally);
}

SHIM_API int MPI_Scatter(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount,
                         MPI_Datatype recvtype, int root, MPI_Comm comm) {
  int at_root = comm != MPI_COMM_NULL && comm_rank(comm) == root, in_place = at_root && recvbuf == MPI_IN_PLACE;
  size_t block;
  enum shim_reason reason = movable(at_root ? sendtype : MPI_DATATYPE_NULL, sendcount,
                                    in_place ? MPI_DATATYPE_NULL : recvtype, recvcount, &block);
  int nranks = comm == MPI_COMM_NULL ? 0 : comm_size(comm);
  tally_comm_t tally = NULL;
  if (!root_outside(comm, root))
    tally = route(SHIM_SCATTER, comm, reason, block * (size_t)nranks, at_root ? sendcount : recvcount,
                  at_root ? sendtype : recvtype);
  if (!tally) return PMPI_Scatter(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, root, comm);
  void *dst = in_place ? (char *)sendbuf + (size_t)root * block : recvbuf;
  tally_result_t r = tally_scatter(at_root ? sendbuf : NULL, dst, block, TALLY_UINT8, root, tally, NULL);
  return shim_result(comm, SHIM_SCATTER, r, tally);
}

SHIM_API int MPI_Barrier(MPI_Comm comm) {
  tally_comm_t tally = route(SHIM_BARRIER, comm, SHIM_TO_TALLY, 0, 0, MPI_DATATYPE_NULL);
  if (!tally) return PMPI_Barrier(comm);
  return shim_result(comm, SHIM_BARRIER, tally_barrier(tally, NULL), tally);
}

/* --- bookkeeping ------------------------------------------------------------------------------ */

SHIM_API int MPI_Init(int *argc, char ***argv) {
  shim_check_mpi_library();
  int rc = PMPI_Init(argc, argv);
  if (rc == MPI_SUCCESS) shim_policy_load();
  return rc;
}

SHIM_API int MPI_Init_thread(int *argc, char ***argv, int required, int *provided) {
  shim_check_mpi_library();
  int rc = PMPI_Init_thread(argc, argv, required, provided);
  if (rc == MPI_SUCCESS) shim_policy_load();
  return rc;
}

/* The ranks leave a communicator's Tally half together: none closes its connections while another
 * may still be finishing its last collective on it. The attribute's delete callback destroys it. */
SHIM_API int MPI_Comm_free(MPI_Comm *comm) {
  if (comm && *comm != MPI_COMM_NULL && shim_comm_has_tally(*comm)) PMPI_Barrier(*comm);
  return PMPI_Comm_free(comm);
}

SHIM_API int MPI_Finalize(void) {
  PMPI_Barrier(MPI_COMM_WORLD);
  shim_comms_release_all();
  return PMPI_Finalize();
}
