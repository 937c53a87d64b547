/* The pipelined step machine that ring and chain algorithms run on.
 *
 * A plan describes, for one rank, a sequence of messages received from `from_prev` and a sequence
 * sent on `to_next`, each numbered (step, chunk). Receive (s, j) lands either straight in its
 * destination, or in a staging slot that is then reduced with a local contribution into the
 * destination. Send (s, j) waits for receive (s - dep_lag, j) when this rank has such a receive.
 * Many chunks are in flight at once, so the reduction of chunk k overlaps the transfer of chunk
 * k+1, and the transport batches whatever is queued.
 *
 * Compressed calls (desc->wire, TALLY_COMPRESS): on a connection to or from another host, every
 * message travels as 16-bit values. A send is packed into a send slot first; a receive lands in a
 * staging slot and is widened into its destination, or added to its contribution in fp32 there.
 * Connections within a host carry fp32 as they are. The algorithm sees none of it: spans stay in
 * fp32 bytes. */
#ifndef TALLY_PIPELINE_H
#define TALLY_PIPELINE_H

#include <stddef.h>

#include "comm/comm.h"
#include "core/descriptor.h"

struct pipeline_span {
  void *ptr;           /* send: data to send; receive: destination */
  size_t bytes;        /* the same for the matching send and receive */
  const void *contrib; /* receive only: NULL = land directly, else dst = received OP contrib */
  int finish_avg;      /* receive only: divide dst by nranks afterwards (the last step of AVG) */
  int round_result;    /* receive only, compressed calls: round dst to the call's wire format afterwards (a
                          reduced block's owner, before the block is spread, so every rank gets its bits) */
};

struct pipeline_plan {
  const struct tally_coll_desc *desc;
  int nchunks;       /* chunks per step */
  int send_steps;    /* this rank sends at steps [0, send_steps) */
  int recv_steps;    /* and receives at steps [0, recv_steps) */
  int dep_lag;       /* send (s, j) waits for receive (s - dep_lag, j) */
  size_t max_chunk;  /* largest span, in bytes (sizes the staging slots) */
  void (*send_span)(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span);
  void (*recv_span)(const struct pipeline_plan *plan, int step, int chunk, struct pipeline_span *span);
  void *ctx;
};

/* Runs `plan` on `ring`: receives from ring->from_prev, sends on ring->to_next. */
tally_result_t tally_pipeline_run(struct tally_comm *comm, const struct tally_ring *ring,
                                  const struct pipeline_plan *plan);

/* Runs plans[i] on rings[i] for i < n, all at once (ring channels): the rings must use distinct
 * connections, since each plan numbers the messages of its own. */
#define TALLY_PIPELINE_MAX_PLANS 2
tally_result_t tally_pipeline_run_many(struct tally_comm *comm, const struct tally_ring *const *rings,
                                       const struct pipeline_plan *const *plans, int n);

#endif
