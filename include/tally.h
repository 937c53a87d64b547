/* Tally: collective communication for distributed deep learning.
 *
 * The only public header. The API mirrors NCCL's argument order so that porting is mechanical:
 * every call returns a tally_result_t, tally_result_string() names the code, and
 * tally_comm_last_error() says in a sentence what went wrong on a communicator and what to do.
 *
 * Buffers and streams, as in NCCL:
 * - Host memory (pageable or pinned) in every buffer: the call blocks until the result is in
 *   recvbuf. With a non-NULL stream it first waits for the stream's earlier work.
 * - Device or managed memory in a buffer (CUDA builds on a machine with a GPU): the call is
 *   enqueued on `stream`, a cudaStream_t (NULL: the legacy default stream), and returns at once;
 *   the result is there once the stream reaches that point (cudaStreamSynchronize, an event, or a
 *   CUDA graph that captured the call). Buffers may differ in kind. Calls on one communicator run
 *   in the order their streams reach them, which is call order when one stream is used.
 *   A stream-ordered call that fails fills its device result with 0xff bytes (NaN for floats) and
 *   puts the communicator in error state: tally_comm_get_async_error() reports it, and the next
 *   call returns it.
 * - A non-NULL stream where there is no CUDA (build or device) returns TALLY_ERR_UNSUPPORTED.
 */
#ifndef TALLY_H
#define TALLY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TALLY_API __attribute__((visibility("default")))
#else
#define TALLY_API
#endif

#define TALLY_VERSION_MAJOR 0
#define TALLY_VERSION_MINOR 1
#define TALLY_VERSION_PATCH 0
/* tally_get_version() returns MAJOR * 10000 + MINOR * 100 + PATCH. */
#define TALLY_VERSION_CODE (TALLY_VERSION_MAJOR * 10000 + TALLY_VERSION_MINOR * 100 + TALLY_VERSION_PATCH)

#define TALLY_UNIQUE_ID_BYTES 128
/* Opaque: the bootstrap root's address and the job's secret. Pass it out of band to all ranks. */
typedef struct {
  char internal[TALLY_UNIQUE_ID_BYTES];
} tally_unique_id_t;

typedef struct tally_comm *tally_comm_t;
typedef void *tally_stream_t; /* a cudaStream_t in CUDA builds; NULL with host memory (see above) */

typedef enum {
  TALLY_SUCCESS = 0,
  TALLY_ERR_INVALID_ARGUMENT, /* a bad value passed by the caller */
  TALLY_ERR_INVALID_USAGE,    /* a call made in the wrong state (destroyed comm, comm in error) */
  TALLY_ERR_SYSTEM,           /* the operating system refused something (socket, memory) */
  TALLY_ERR_REMOTE,           /* a peer closed its connection or misbehaved */
  TALLY_ERR_TIMEOUT,          /* a wait passed TALLY_TIMEOUT */
  TALLY_ERR_MISMATCH,         /* ranks called different collectives, counts, types, ops or roots */
  TALLY_ERR_UNSUPPORTED,      /* a feature this build lacks */
  TALLY_ERR_ABORTED,          /* tally_comm_abort() was called */
  TALLY_ERR_AUTH,             /* a connection did not prove knowledge of the job secret */
  TALLY_ERR_INTERNAL          /* a bug in Tally: please report it */
} tally_result_t;

typedef enum {
  TALLY_INT8,
  TALLY_UINT8,
  TALLY_INT32,
  TALLY_UINT32,
  TALLY_INT64,
  TALLY_UINT64,
  TALLY_FLOAT16,
  TALLY_BFLOAT16,
  TALLY_FLOAT32,
  TALLY_FLOAT64,
  TALLY_NUM_DATATYPES
} tally_datatype_t;

typedef enum { TALLY_SUM, TALLY_PROD, TALLY_MIN, TALLY_MAX, TALLY_AVG, TALLY_NUM_OPS } tally_op_t;

TALLY_API const char *tally_result_string(tally_result_t r);
/* A sentence about the last error on `comm`: what failed, which peer, what to do. Never NULL.
 * With NULL (or a destroyed comm): the calling thread's last message, e.g. why init failed. */
TALLY_API const char *tally_comm_last_error(tally_comm_t comm);
TALLY_API tally_result_t tally_get_version(int *version);

/* Starts the bootstrap root in this process (a background thread that lives until the
 * communicator's ranks have all joined) and returns an id that carries its address and a fresh
 * 128-bit secret. Call it once, on one process, per communicator. */
TALLY_API tally_result_t tally_get_unique_id(tally_unique_id_t *id);
TALLY_API tally_result_t tally_comm_init_rank(tally_comm_t *comm, int nranks, tally_unique_id_t id, int rank);
/* How FLOAT32 data crosses the network between hosts (TALLY_COMPRESS): as it is, or rounded to
 * 16 bits by the sender and reduced in fp32 (see the README for the error bound). */
typedef enum {
  TALLY_COMPRESS_DEFAULT, /* TALLY_COMPRESS, or none */
  TALLY_COMPRESS_NONE,
  TALLY_COMPRESS_BF16,
  TALLY_COMPRESS_FP16
} tally_compress_t;
/* Per-communicator settings that override the environment. Start from TALLY_CONFIG_INITIALIZER
 * so that fields added later keep their defaults; a program built against an older tally.h
 * (a smaller struct_size, fewer fields) keeps working. */
typedef struct {
  size_t struct_size; /* sizeof(tally_config_t) */
  double timeout_s;   /* every wait's limit, like TALLY_TIMEOUT; 0 = TALLY_TIMEOUT or its default */
  /* added in version 2 of this struct: */
  tally_compress_t compress;    /* like TALLY_COMPRESS; TALLY_COMPRESS_DEFAULT = the environment's */
  long long compress_min_bytes; /* like TALLY_COMPRESS_MIN_BYTES; -1 = the environment's or its default */
} tally_config_t;
#define TALLY_CONFIG_INITIALIZER {sizeof(tally_config_t), 0.0, TALLY_COMPRESS_DEFAULT, -1}
/* struct_size of the first version (struct_size and timeout_s only), still accepted. */
#define TALLY_CONFIG_V1_SIZE (sizeof(size_t) + sizeof(double))
TALLY_API tally_result_t tally_comm_init_rank_config(tally_comm_t *comm, int nranks, tally_unique_id_t id, int rank,
                                                     const tally_config_t *config);
/* Rank, size, root address and secret from the environment (TALLY_RANK/TALLY_SIZE, Open MPI,
 * PMI, Slurm or torchrun variables; TALLY_ROOT or MASTER_ADDR/MASTER_PORT; TALLY_SECRET). */
TALLY_API tally_result_t tally_comm_init_env(tally_comm_t *comm);
TALLY_API tally_result_t tally_comm_destroy(tally_comm_t comm);
/* Makes a collective blocked on `comm` in another thread return TALLY_ERR_ABORTED; the comm
 * then refuses further collectives and must be destroyed. */
TALLY_API tally_result_t tally_comm_abort(tally_comm_t comm);
TALLY_API tally_result_t tally_comm_rank(tally_comm_t comm, int *rank);
TALLY_API tally_result_t tally_comm_size(tally_comm_t comm, int *nranks);

/* Communicators made from another, with no unique id (as MPI_Comm_split and NCCL's ncclCommSplit).
 * tally_comm_split is collective over `comm`, which must not be in error state: the ranks passing
 * one color form one new communicator, ranked by key, then by rank in `comm`;
 * TALLY_SPLIT_NOCOLOR makes *newcomm NULL. The new communicator has its own connections and
 * error state, and the configuration of `comm`: it may outlive `comm`, and the two may be used
 * from different threads. tally_comm_dup is a split with one color and key = rank. */
#define TALLY_SPLIT_NOCOLOR (-1)
TALLY_API tally_result_t tally_comm_split(tally_comm_t comm, int color, int key, tally_comm_t *newcomm);
TALLY_API tally_result_t tally_comm_dup(tally_comm_t comm, tally_comm_t *newcomm);
/* Recovery after a rank died or was cut off, as NCCL's ncclCommShrink and MPI's
 * MPIX_Comm_shrink. tally_comm_failed_ranks: the ranks of `comm` that this rank knows failed
 * (blamed by a failed call: a lost connection, a stall, a peer's report), sorted; at most `max`
 * written to `ranks`, their number in *nfailed. tally_comm_shrink, typically on a communicator in
 * error state: every surviving rank calls it with the same `exclude` list (the failed ranks, and
 * any rank to leave out) and gets a new communicator of the ranks not excluded, renumbered in
 * order. Dead and excluded ranks are not contacted and need not call. Lists that differ return
 * TALLY_ERR_MISMATCH on every survivor, naming two of the lists; a survivor that dies meanwhile
 * makes the others fail, and they may shrink again. tally_comm_abort of `comm` from another thread
 * ends a split, dup or shrink at any point (TALLY_ERR_ABORTED). `comm` stays as it was: destroy
 * it. */
TALLY_API tally_result_t tally_comm_failed_ranks(tally_comm_t comm, int *ranks, int max, int *nfailed);
TALLY_API tally_result_t tally_comm_shrink(tally_comm_t comm, const int *exclude, int nexclude, tally_comm_t *newcomm);
/* Growing a communicator by processes that were not in it, as NCCL's ncclCommGrow: with
 * tally_comm_shrink, a failed rank's replacement joins without restarting the others.
 * tally_comm_grow_id, on exactly one rank of `comm` (any; it serves the grow's bootstrap root):
 * an id for growing `comm` by `nnew` ranks, to pass to the newcomers out of band as
 * tally_get_unique_id's id is. It carries a fresh secret for the grown communicator (not that of
 * `comm`), and serves one grow: a later tally_comm_grow_id on `comm` makes it stale.
 * tally_comm_grow is collective over every rank of `comm` (which must be healthy) while the
 * newcomers call tally_comm_join: every rank passes the same nnew, and NULL or the id (the rank
 * that made it may pass NULL too: the ranks learn it through `comm`). *newcomm gets the grown
 * communicator of size + nnew ranks, in which the ranks of `comm` keep their numbers.
 * tally_comm_join, on a newcomer: joins it as rank (size of `comm` + index), index in 0..nnew-1.
 * Different nnew return TALLY_ERR_MISMATCH everywhere (the newcomers too); an id of another
 * communicator, a stale one or none made return TALLY_ERR_INVALID_ARGUMENT or _INVALID_USAGE
 * on every rank of `comm`; a newcomer that does not come makes every other rank return
 * TALLY_ERR_TIMEOUT naming it; tally_comm_abort of `comm` ends the grow's waits. After a failed
 * grow, make a new id. `comm` stays as it was. */
TALLY_API tally_result_t tally_comm_grow_id(tally_comm_t comm, int nnew, tally_unique_id_t *id);
TALLY_API tally_result_t tally_comm_grow(tally_comm_t comm, int nnew, const tally_unique_id_t *id, tally_comm_t *newcomm);
TALLY_API tally_result_t tally_comm_join(const tally_unique_id_t *id, int index, tally_comm_t *newcomm);

TALLY_API tally_result_t tally_allreduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                               tally_op_t op, tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_allgather(const void *sendbuf, void *recvbuf, size_t sendcount, tally_datatype_t datatype,
                               tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_reduce_scatter(const void *sendbuf, void *recvbuf, size_t recvcount,
                                    tally_datatype_t datatype, tally_op_t op, tally_comm_t comm,
                                    tally_stream_t stream);
TALLY_API tally_result_t tally_broadcast(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype, int root,
                               tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_reduce(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                            tally_op_t op, int root, tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_barrier(tally_comm_t comm, tally_stream_t stream);
/* Point-to-point, as NCCL's ncclSend/ncclRecv: messages between two ranks match in call order,
 * and a recv's count and datatype must equal the matching send's: else the recv returns
 * TALLY_ERR_MISMATCH naming both calls (never a truncated or overrun buffer), and the sender, whose
 * send may already have returned, gets it from its next call on the communicator. Host memory
 * (stream NULL): outside a group a send returns once its buffer may be reused and a recv once the
 * data is there. Device memory makes the call stream-ordered, as a collective (see the top of this
 * file): it returns at once, the message moves when the stream gets there (staged through pinned
 * host memory), and a failure poisons the recv's buffer and is reported asynchronously. A pair of
 * ranks no algorithm connected at init is connected on first use. */
TALLY_API tally_result_t tally_send(const void *sendbuf, size_t count, tally_datatype_t datatype, int peer,
                                    tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_recv(void *recvbuf, size_t count, tally_datatype_t datatype, int peer,
                                    tally_comm_t comm, tally_stream_t stream);
/* Groups, as NCCL's (per thread, nestable): the calls between start and the outermost end are
 * queued and run together by that end, which returns (host memory) once all are complete; sends
 * and recvs in any order, collectives, on one or several communicators. On each communicator the
 * end runs the collectives other than alltoall, gather and scatter in call order, then those in
 * call order, then every send, recv and alltoallv at once: ranks must agree on the order within
 * each of the first two kinds, not on how the kinds interleave. Argument errors return at the
 * call; failures while running are returned by tally_group_end, naming the call. A group's sends,
 * recvs and alltoallvs on one communicator must all pass the same stream (a call with another
 * returns TALLY_ERR_INVALID_USAGE): when any of their buffers is device memory they run as one
 * stream-ordered unit on that stream, and tally_group_end returns at once (host buffers among
 * them are then read and written when the stream gets there, too). */
TALLY_API tally_result_t tally_group_start(void);
TALLY_API tally_result_t tally_group_end(void);
/* Block j (`count` elements) of this rank's sendbuf lands in block `rank` of rank j's recvbuf;
 * sendbuf == recvbuf works. Alltoall, gather and scatter are collectives: device buffers and
 * streams work as for allreduce, and on a communicator they must be called in the same order on
 * every rank (in a group: after the group's other collectives, see tally_group_start). Sends, recvs
 * and alltoallv take device buffers and streams too (see tally_send and tally_group_start). */
TALLY_API tally_result_t tally_alltoall(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                                        tally_comm_t comm, tally_stream_t stream);
/* As alltoall with per-rank counts and displacements, in elements (zero counts allowed); rank i's
 * sendcounts[j] must equal rank j's recvcounts[i] (else TALLY_ERR_MISMATCH on both). Elements of
 * recvbuf between the blocks are left as they were, in device memory too. */
TALLY_API tally_result_t tally_alltoallv(const void *sendbuf, const size_t *sendcounts, const size_t *sdispls,
                                         void *recvbuf, const size_t *recvcounts, const size_t *rdispls,
                                         tally_datatype_t datatype, tally_comm_t comm, tally_stream_t stream);
/* As MPI_Gather and MPI_Scatter: the root's recvbuf (gather) or sendbuf (scatter) holds one block
 * of `sendcount` / `recvcount` elements per rank, in rank order; the others' are ignored. */
TALLY_API tally_result_t tally_gather(const void *sendbuf, void *recvbuf, size_t sendcount, tally_datatype_t datatype,
                                      int root, tally_comm_t comm, tally_stream_t stream);
TALLY_API tally_result_t tally_scatter(const void *sendbuf, void *recvbuf, size_t recvcount, tally_datatype_t datatype,
                                       int root, tally_comm_t comm, tally_stream_t stream);
/* *async_error: the failure that put comm in error state (a stream-ordered call's, reported once
 * its stream got there), or TALLY_SUCCESS. Poll it after synchronizing a stream, as with NCCL's
 * ncclCommGetAsyncError. */
TALLY_API tally_result_t tally_comm_get_async_error(tally_comm_t comm, tally_result_t *async_error);

/* What a communicator has done since it was made, counted always (a few additions per call
 * and per message). One row per collective and algorithm that ran. */
typedef struct {
  const char *collective; /* as tally_comm_tuner_choice names them, or "point-to-point" (sends, recvs, alltoallv) */
  const char *algorithm;  /* "ring", "tree", ...; "none" on one rank and for point-to-point */
  uint64_t calls;
  uint64_t bytes; /* this rank's input: its send buffer's bytes as the calls sized them */
  uint64_t ns;    /* time inside the calls, from the dispatch to the end (a group's messages: the batch's);
                     calls under 64 KiB are timed one in 16, each such time counting 16 times */
} tally_stats_row_t;

#define TALLY_STATS_MAX_ROWS 128
#define TALLY_STATS_MAX_TRANSPORTS 4
typedef struct {
  size_t size; /* set by the caller to sizeof(tally_stats_t): a library with more fields fills only these */
  int nranks;
  int ntransports; /* the transports this communicator has endpoints on */
  struct {
    const char *name; /* "tcp", "shm", "verbs" */
    uint64_t bytes_sent, bytes_received, messages_sent; /* payload posted, headers not included */
  } transports[TALLY_STATS_MAX_TRANSPORTS];
  int nrows;
  tally_stats_row_t rows[TALLY_STATS_MAX_ROWS];
} tally_stats_t;

/* This rank's counters of comm (any thread, at any time; the numbers are consistent once the calls
 * have returned). sent_to, received_from and waited_ns are NULL or have room for the
 * communicator's size: the payload bytes posted to and from each rank (the traffic matrix's row
 * and column of this rank), and the time this rank waited, with nothing moving for more than a few
 * microseconds, on each rank. TALLY_STATS=1 prints them when the communicator is destroyed. */
TALLY_API tally_result_t tally_comm_stats(tally_comm_t comm, tally_stats_t *stats, uint64_t *sent_to,
                                          uint64_t *received_from, uint64_t *waited_ns);

/* Why the tuner runs what it runs, for tools (tally-perf --sweep) and for users; communicates nothing.
 * `collective` is named as in the log: "allreduce", "allgather", "reduce_scatter", "broadcast",
 * "reduce", "barrier", "alltoall", "gather" or "scatter"; `count` and `datatype` are the
 * collective's own arguments (alltoall: per peer; gather, scatter: per rank).
 * tally_comm_tuner_choice: the algorithm the tuner would run for that call ("ring", "tree", "rhd",
 * "hier", "board", "shared"; for alltoall "pairwise", "bruck", "hier", "board" or "shared"; for
 * gather and scatter "direct" or "binomial"; a static string) and the cost model's predicted time for it in microseconds
 * (-1 where the model does not cover it). Either output may be NULL.
 * tally_comm_predict: the cost model's predicted time of `algorithm` (a name as above) for that
 * call, whether or not the tuner or TALLY_ALGO would let it run; -1 where the model does not
 * cover the pair. */
TALLY_API tally_result_t tally_comm_tuner_choice(tally_comm_t comm, const char *collective, size_t count,
                                                 tally_datatype_t datatype, const char **algorithm,
                                                 double *predicted_us);
TALLY_API tally_result_t tally_comm_predict(tally_comm_t comm, const char *collective, const char *algorithm,
                                            size_t count, tally_datatype_t datatype, double *predicted_us);

/* Helpers for tools and bindings. */
TALLY_API const char *tally_datatype_name(tally_datatype_t datatype); /* "float", "int32", ...; NULL if unknown */
TALLY_API size_t tally_datatype_size(tally_datatype_t datatype);      /* bytes per element; 0 if unknown */
TALLY_API const char *tally_op_name(tally_op_t op);                   /* "sum", "prod", ...; NULL if unknown */

#ifdef __cplusplus
}
#endif
#endif /* TALLY_H */
