/* Traces (TALLY_TRACE=DIR): every call of a communicator as a span, and inside it every message it
 * posted as a span on a track per peer and direction, written as Chrome trace-event JSON (the "JSON
 * array format" Perfetto and chrome://tracing load) to DIR/tally-RANK.json.
 *
 * Cost: with TALLY_TRACE unset comm->trace is NULL and each hook is one predictable branch. With it
 * set, a hook reads the clock and stores a fixed-size record in the communicator's ring; it never
 * takes a lock, never allocates and never writes a file, and when the ring is full the record is
 * dropped and counted (the file says how many). A writer thread per traced communicator formats the
 * records and flushes the file every TRACE_FLUSH_MS and when the ring fills halfway, so a crash
 * loses at most that tail; the file is an open JSON array (one event per line, each followed by a
 * comma) that trace viewers and tally-trace load even without its closing bracket.
 *
 * Timestamps are CLOCK_MONOTONIC moved into rank 0's timebase by the offset measured at init
 * (tuning/clock_offset.h), whose error bound the file's metadata records. */
#ifndef TALLY_TRACE_H
#define TALLY_TRACE_H

#include <stdint.h>

#include "core/descriptor.h"
#include "transports/transport.h"

struct tally_comm;
struct tally_link;
struct tally_trace;

/* Opens DIR/tally-RANK.json (or, when another communicator of this process already wrote that name,
 * DIR/tally-RANK-COMMID.json) for `comm` and starts its writer; `offset_ns` (add it to this process's
 * monotonic clock to get rank 0's) and `error_ns` are the clock alignment's result. On failure logs a
 * WARN naming the path and traces nothing: a trace is never a reason for a job to fail. */
void tally_trace_open(struct tally_comm *comm, int64_t offset_ns, uint64_t error_ns);

/* Stops the writer, writes what is left and the closing bracket, and frees comm->trace. */
void tally_trace_close(struct tally_comm *comm);

/* One call that ran from `start_ns` to `end_ns` (tally_now_ns): a collective described by `desc`
 * (kind its enum tally_coll) run by `algo`, or (desc NULL, kind TALLY_NUM_COLLS) a batch of
 * `count` point-to-point messages; `bytes` is this rank's input. */
void tally_trace_call(struct tally_comm *comm, int kind, int algo, const struct tally_coll_desc *desc, uint64_t count,
                      uint64_t bytes, uint64_t start_ns, uint64_t end_ns, int failed);

/* Notes that `req` is being posted now (its span starts here, or when the one before it ends). */
void tally_trace_posted(struct tally_request *req);

/* A message on `link` whose completion the caller has just seen: its span runs from when it was
 * posted (or when the previous one on its track ended, whichever is later) until now. */
void tally_trace_message(struct tally_comm *comm, const struct tally_link *link, struct tally_request *req,
                         int is_send);

#endif
