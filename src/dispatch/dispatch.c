/* The one dispatch point of a host-memory collective (dispatch.h): the tuner's algorithm runs the
 * call, and a failure puts the communicator in error state with the rank at fault named. */
#define _GNU_SOURCE
#include "dispatch.h"

#include <stdio.h>
#include <string.h>

#include "algorithms/algorithm.h"
#include "algorithms/p2p.h"
#include "comm/comm.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"
#include "tuning/tuner.h"

tally_result_t tally_coll_remember(tally_comm_t comm, tally_result_t r) {
  snprintf(comm->last_error, sizeof comm->last_error, "%s", tally_error_message());
  return r;
}

/* Ends the remembered message with the rank at fault and its host, when another rank is. */
static void name_culprit(tally_comm_t comm) {
  int culprit = tally_comm_blamed(comm);
  if (culprit < 0 || culprit == comm->rank) return;
  char who[128];
  size_t used = strlen(comm->last_error);
  /* In a mismatch the rank named is one of two that disagree, not necessarily the odd one out. */
  snprintf(comm->last_error + used, sizeof comm->last_error - used, " [%s: %s]",
           comm->error == TALLY_ERR_MISMATCH ? "mismatched rank" : "rank at fault",
           tally_comm_rank_text(comm, culprit, who, sizeof who));
}

void tally_coll_buffer_bytes(const struct tally_coll_desc *d, int rank, int nranks, size_t *send, size_t *recv) {
  size_t bytes = d->count * tally_datatype_size(d->datatype);
  *send = *recv = bytes;
  switch (d->coll) {
    case TALLY_COLL_ALLGATHER: *recv = bytes * (size_t)nranks; break;
    case TALLY_COLL_REDUCE_SCATTER: *send = bytes * (size_t)nranks; break;
    case TALLY_COLL_BROADCAST:
      if (rank != d->root) *send = 0;
      break;
    case TALLY_COLL_REDUCE:
      if (rank != d->root) *recv = 0;
      break;
    case TALLY_COLL_BARRIER: *send = *recv = 0; break;
    case TALLY_COLL_ALLTOALL: *send = *recv = bytes * (size_t)nranks; break;
    case TALLY_COLL_GATHER: *recv = rank == d->root ? bytes * (size_t)nranks : 0; break;
    case TALLY_COLL_SCATTER: *send = rank == d->root ? bytes * (size_t)nranks : 0; break;
    default: break;
  }
}

/* One rank: the result is this rank's own data (every collective's buffers hold `count` elements). */
static void run_alone(const struct tally_coll_desc *d) {
  if (d->coll != TALLY_COLL_BARRIER && d->sendbuf != d->recvbuf)
    memmove(d->recvbuf, d->sendbuf, d->count * tally_datatype_size(d->datatype));
}

/* A compressed allgather or broadcast spreads 16-bit values: the data's owner rounds its own copy
 * first (the allgather's block in recvbuf, the root's recvbuf), and the algorithm sends from there,
 * so every rank, the owner included, ends with the same bits whichever links cross hosts. */
static void round_spread_data(const struct tally_comm *comm, struct tally_coll_desc *d) {
  size_t bytes = d->count * tally_datatype_size(d->datatype);
  char *own = NULL;
  if (d->coll == TALLY_COLL_ALLGATHER)
    own = (char *)d->recvbuf + (size_t)comm->rank * bytes;
  else if (d->coll == TALLY_COLL_BROADCAST && comm->rank == d->root)
    own = d->recvbuf;
  if (!own) return;
  if (d->sendbuf != own) memcpy(own, d->sendbuf, bytes);
  d->sendbuf = own; /* the call is now in place */
  tally_wire_round((float *)own, d->count, d->wire);
}

/* A communicator in error state or aborted runs nothing more. */
static tally_result_t refuse_broken(const char *fn, tally_comm_t comm) {
  if (comm->error != TALLY_SUCCESS)
    return tally_coll_remember(comm,
                               TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                                           "%s: the communicator is in error state since an earlier failure (%s: %s); "
                                           "destroy it and create a new one",
                                           fn, tally_result_string(comm->error), comm->failure));
  if (atomic_load(&comm->aborted))
    return tally_coll_remember(
        comm,
        TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "%s: the communicator was aborted (tally_comm_abort); destroy it", fn));
  return TALLY_SUCCESS;
}

/* The counters' clock. Reading it costs about 10 ns, a few percent of an 8-byte call that takes a
 * quarter of a microsecond, twice per call; so every call of TIMED_MIN_BYTES or more is timed, and of
 * the smaller ones one in TIMED_EVERY, whose time then counts TIMED_EVERY times (in a loop of like
 * calls the total comes out right; one slow call among many fast ones may be missed or counted many
 * times). A call that is not timed starts its flight record at 0; a wait fills that in (flight.h). */
enum { TIMED_MIN_BYTES = 64 * 1024, TIMED_EVERY = 16 };

struct call_clock {
  uint64_t start;  /* ticks (clock.h); 0 when not timed */
  uint64_t weight; /* the calls its time stands for; 0: not timed */
};

static struct call_clock clock_start(tally_comm_t comm, uint64_t bytes) {
  struct tally_counters *k = &comm->counters;
  if (!TALLY_COUNTING) return (struct call_clock){0, 0};
  if (bytes >= TIMED_MIN_BYTES) return (struct call_clock){tally_ticks(), 1};
  if (k->untimed_left > 0) {
    k->untimed_left--;
    return (struct call_clock){0, 0};
  }
  k->untimed_left = TIMED_EVERY - 1;
  return (struct call_clock){tally_ticks(), TIMED_EVERY};
}

static uint64_t clock_end(struct call_clock clock) { return clock.weight ? tally_ticks() : 0; }

/* Counts `calls` calls of `kind` (a collective, or TALLY_NUM_COLLS for point-to-point) that `algo`
 * (TALLY_NUM_ALGOS: none) ran from `clock` to tick `end`. */
static void count_call(tally_comm_t comm, int kind, int algo, uint64_t calls, uint64_t bytes, struct call_clock clock,
                       uint64_t end) {
  struct tally_counters *k = &comm->counters;
  tally_count(&k->calls[kind][algo], calls);
  tally_count(&k->bytes[kind][algo], bytes);
  if (clock.weight) tally_count(&k->ticks[kind][algo], (end - clock.start) * clock.weight);
}

tally_result_t tally_coll_execute(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm) {
  TALLY_CHECK(refuse_broken(fn, comm));
  tally_result_t r = TALLY_SUCCESS;
  size_t send_bytes, recv_bytes;
  tally_coll_buffer_bytes(d, comm->rank, comm->nranks, &send_bytes, &recv_bytes);
  struct call_clock clock = clock_start(comm, send_bytes > recv_bytes ? send_bytes : recv_bytes);
  if (comm->nranks == 1) {
    uint64_t traced_from = comm->trace ? tally_now_ns() : 0;
    run_alone(d);
    if (comm->trace)
      tally_trace_call(comm, d->coll, TALLY_NUM_ALGOS, d, d->count, send_bytes, traced_from, tally_now_ns(), 0);
    count_call(comm, d->coll, TALLY_NUM_ALGOS, 1, send_bytes, clock, clock_end(clock));
  } else {
    tally_error_clear();
    struct tally_coll_desc call = *d; /* the tuner adds its chunk */
    const struct tally_algorithm *algo = tally_tuner_select(comm, &call);
    if (call.wire) round_spread_data(comm, &call);
    TLOG_TRACE(TALLY_SUBSYS_COLL, "%s #%u count %zu via %s", fn, comm->seq, d->count, algo->name);
    tally_flight_begin(&comm->flight, comm->seq, d->coll, algo->id, d->datatype, d->count, clock.start);
    uint64_t traced_from = comm->trace ? tally_now_ns() : 0;
    r = algo->run(comm, &call);
    uint64_t end = clock_end(clock);
    if (comm->trace)
      tally_trace_call(comm, d->coll, algo->id, &call, d->count, send_bytes, traced_from, tally_now_ns(),
                       r != TALLY_SUCCESS);
    tally_flight_end(&comm->flight, r != TALLY_SUCCESS, end);
    count_call(comm, d->coll, algo->id, 1, send_bytes, clock, end);
  }
  if (r != TALLY_SUCCESS) tally_coll_fail(comm, r);
  comm->seq++;
  return r;
}

tally_result_t tally_p2p_execute(const char *fn, tally_comm_t comm, struct tally_p2p_msg *msgs, int n, int ncalls,
                                 int *failed_call) {
  *failed_call = n > 0 ? msgs[0].call : -1;
  TALLY_CHECK(refuse_broken(fn, comm));
  tally_error_clear();
  uint64_t bytes = 0, received = 0;
  for (int i = 0; i < n; i++) *(msgs[i].is_send ? &bytes : &received) += msgs[i].bytes;
  struct call_clock clock = clock_start(comm, bytes > received ? bytes : received);
  tally_flight_begin(&comm->flight, comm->seq, TALLY_NUM_COLLS, TALLY_NUM_ALGOS, n > 0 ? msgs[0].hdr.datatype : 0,
                     (uint64_t)n, clock.start);
  uint64_t traced_from = comm->trace ? tally_now_ns() : 0;
  tally_result_t r = tally_p2p_run(comm, msgs, n, failed_call);
  uint64_t end = clock_end(clock);
  if (comm->trace)
    tally_trace_call(comm, TALLY_NUM_COLLS, TALLY_NUM_ALGOS, NULL, (uint64_t)n, bytes, traced_from, tally_now_ns(),
                     r != TALLY_SUCCESS);
  tally_flight_end(&comm->flight, r != TALLY_SUCCESS, end);
  count_call(comm, TALLY_NUM_COLLS, TALLY_NUM_ALGOS, (uint64_t)ncalls, bytes, clock, end);
  if (r != TALLY_SUCCESS) tally_coll_fail(comm, r);
  return r;
}

tally_result_t tally_coll_fail(tally_comm_t comm, tally_result_t r) {
  comm->error = r;
  tally_coll_remember(comm, r);
  name_culprit(comm);
  snprintf(comm->failure, sizeof comm->failure, "%s", comm->last_error);
  tally_comm_fail(comm, r);
  tally_flight_dump(comm, comm->failure);
  return r;
}
