/* libtally_mpi's internal interface: what its four files share. The shim sits above the library and
 * uses only the public tally.h and the MPI library's mpi.h (PMPI_* for everything it passes on).
 *   mpi_policy.c       which calls go to Tally: TALLY_MPI_COLLS, datatype and op mapping, the log
 *   mpi_comms.c        a Tally communicator per MPI communicator, kept as an MPI attribute
 *   mpi_errors.c       Tally failures through the communicator's error handler; the MPI_Init check
 *   mpi_collectives.c  the MPI_* entry points */
#ifndef TALLY_MPI_SHIM_H
#define TALLY_MPI_SHIM_H

#include <mpi.h>
#include <stddef.h>

#include "tally.h"

enum shim_coll {
  SHIM_ALLREDUCE,
  SHIM_REDUCE,
  SHIM_BCAST,
  SHIM_ALLGATHER,
  SHIM_REDUCE_SCATTER_BLOCK,
  SHIM_ALLTOALL,
  SHIM_GATHER,
  SHIM_SCATTER,
  SHIM_BARRIER,
  SHIM_NUM_COLLS
};

/* Why a call went where it went; each (collective, reason) is logged once under TALLY_DEBUG=INFO. */
enum shim_reason {
  SHIM_TO_TALLY,
  SHIM_NOT_SELECTED,      /* TALLY_MPI_COLLS leaves this collective to MPI */
  SHIM_BELOW_THRESHOLD,   /* smaller than the collective's threshold */
  SHIM_DATATYPE,          /* derived, non-contiguous or unmapped datatype */
  SHIM_OP,                /* user-defined, MAXLOC/MINLOC, logical or bitwise op */
  SHIM_TYPES_DIFFER,      /* send and receive types or counts differ */
  SHIM_INTERCOMM,         /* an intercommunicator */
  SHIM_TALLY_UNAVAILABLE, /* making the Tally communicator failed on some rank */
  SHIM_NUM_REASONS
};

/* mpi_policy.c */
const char *shim_coll_name(enum shim_coll coll); /* "MPI_Allreduce", ... */
/* Reads TALLY_MPI_COLLS once; a malformed value prints why and ends the job. */
void shim_policy_load(void);
/* Whether `coll` is selected by TALLY_MPI_COLLS at all; else *reason says why not. */
int shim_policy_selects(enum shim_coll coll, enum shim_reason *reason);
/* Whether `coll` of `bytes` (the whole buffer, as the figures size it) is at least its threshold:
 * TALLY_MPI_COLLS's, else the measured default for communicators whose ranks each have a core of
 * their own (`own_cores`; 0 otherwise); else *reason says why not. */
int shim_policy_allows(enum shim_coll coll, size_t bytes, int own_cores, enum shim_reason *reason);
/* A reduction's datatype and op as Tally's, or 0 with *reason. */
int shim_map_reduction(MPI_Datatype type, MPI_Op op, tally_datatype_t *ttype, tally_op_t *top,
                       enum shim_reason *reason);
/* The bytes per element of a datatype that data-moving collectives may copy as bytes (a named,
 * contiguous datatype), or 0. */
size_t shim_movable_size(MPI_Datatype type);
/* Whether the decision (coll, reason) is to be logged now: under TALLY_DEBUG=INFO, the first time
 * only. Then shim_log_decision writes it, `detail` naming the call. */
int shim_log_wanted(enum shim_coll coll, enum shim_reason reason);
void shim_log_decision(enum shim_coll coll, enum shim_reason reason, const char *detail);
/* One line in the library's log format (host:pid:rank [tally LEVEL] file:line text) when
 * TALLY_DEBUG allows `level` ("WARN" or "INFO"). */
void shim_log(const char *level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* mpi_comms.c */
/* The Tally communicator of `comm`, made collectively on first use; NULL with *reason when the
 * call must go to MPI (intercommunicator, or Tally could not be set up on every rank). *own_cores:
 * whether every rank of `comm` has a core of its own (no host runs more of its ranks than it has
 * cores online), the same on every rank. */
tally_comm_t shim_comm_get(MPI_Comm comm, int *own_cores, enum shim_reason *reason);
int shim_comm_has_tally(MPI_Comm comm);
/* Destroys every Tally communicator still alive (MPI_Finalize). */
void shim_comms_release_all(void);

/* mpi_errors.c */
/* Refuses (prints why and exits) a program whose MPI library is not the one this shim was built
 * against. Called before PMPI_Init. */
void shim_check_mpi_library(void);
/* The MPI return of a Tally call: MPI_SUCCESS, or the failure handed to `comm`'s error handler
 * (MPI_ERRORS_ARE_FATAL: print Tally's message and abort; otherwise an error code whose
 * MPI_Error_string is Tally's message). */
int shim_result(MPI_Comm comm, enum shim_coll coll, tally_result_t r, tally_comm_t tally);

#endif
