/* The collective descriptor: what the user asked for, after validation. Everything below the API
 * layer (tuner, algorithms, wire fingerprints) sees a collective only through this. */
#ifndef TALLY_DESCRIPTOR_H
#define TALLY_DESCRIPTOR_H

#include <stddef.h>

#include "tally.h"

enum tally_coll {
  TALLY_COLL_ALLREDUCE,
  TALLY_COLL_ALLGATHER,
  TALLY_COLL_REDUCE_SCATTER,
  TALLY_COLL_BROADCAST,
  TALLY_COLL_REDUCE,
  TALLY_COLL_BARRIER,
  TALLY_COLL_ALLTOALL, /* count: elements per peer */
  TALLY_COLL_GATHER,   /* count: each rank's block */
  TALLY_COLL_SCATTER,  /* count: each rank's block */
  TALLY_NUM_COLLS
};

/* Calls that run as batches of point-to-point messages (algorithms/p2p.h) rather than through the
 * tuner: their messages' headers carry these codes where a collective's carry enum tally_coll.
 * Sends number their messages per pair of ranks; alltoallv is a collective and carries the
 * communicator's sequence number. */
enum tally_msg_kind {
  TALLY_MSG_SEND = 32,
  TALLY_MSG_ALLTOALLV,
  TALLY_MSG_KIND_END
};

struct tally_coll_desc {
  enum tally_coll coll;
  const void *sendbuf;
  void *recvbuf;
  size_t count; /* allreduce/broadcast/reduce: elements; allgather: sendcount; reduce_scatter: recvcount;
                   alltoall, gather, scatter: elements per block (one block per rank) */
  tally_datatype_t datatype;
  tally_op_t op;        /* TALLY_SUM where the collective has no op */
  int root;             /* 0 where the collective has no root */
  size_t chunk_bytes;   /* the pipelining chunk the tuner chose for this call; 0: TALLY_CHUNK_BYTES */
  double predicted_us;  /* the cost model's time for the algorithm the tuner chose; negative: not modelled */
  int rhd_whole_vector; /* halving-doubling allreduce: the tuner chose recursive doubling of the whole
                           vector over Rabenseifner's schedule (the same choice on every rank) */
  int wire;             /* enum tally_wire_format (core/reduce.h): TALLY_WIRE_EXACT, or the 16-bit format the
                           tuner chose for this FLOAT32 call's data on links between hosts (TALLY_COMPRESS) */
};

/* "allreduce", ... for enum tally_coll, "send", "alltoall", ... for enum tally_msg_kind; "unknown"
 * for anything else. */
const char *tally_coll_name(int coll);

#endif
