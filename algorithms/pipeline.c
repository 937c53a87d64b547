/* The pipelined step machine (see pipeline.h). Receives are processed in order; reducing receives
 * use STAGING_SLOTS chunk-sized slots, direct ones up to WINDOW at a time; sends are posted in
 * order as soon as their input is ready. */
#include "pipeline.h"

#include <stdio.h>

#include "core/error.h"
#include "core/reduce.h"
#include "core/wire.h"

enum { WINDOW = 64, STAGING_SLOTS = 4 };

struct pipeline_state {
  const struct pipeline_plan *plan;
  struct tally_comm *comm;
  const struct tally_ring *ring;
  struct tally_msg_header proto; /* the collective's fingerprint */
  size_t total_recv, total_send;
  size_t recv_posted, recv_done, send_posted, send_done;
  struct tally_request recv_req[WINDOW], send_req[WINDOW];
  struct pipeline_span recv_spans[WINDOW];
  char *staging;
  char *send_slots;                        /* compressed sends: STAGING_SLOTS packed chunks */
  enum tally_wire_format wire_send, wire_recv; /* the call's format on a link across hosts, else exact */
};

static size_t esize(const struct pipeline_plan *p) { return tally_datatype_size(p->desc->datatype); }

static tally_result_t post_recvs(struct pipeline_state *st, int *moved) {
  const struct pipeline_plan *p = st->plan;
  while (st->recv_posted < st->total_recv && st->recv_posted < st->recv_done + WINDOW) {
    size_t m = st->recv_posted;
    struct pipeline_span *span = &st->recv_spans[m % WINDOW];
    *span = (struct pipeline_span){0};
    p->recv_span(p, (int)(m / (size_t)p->nchunks), (int)(m % (size_t)p->nchunks), span);
    int staged = span->contrib || st->wire_recv;
    if (staged && m >= st->recv_done + STAGING_SLOTS) break; /* no free staging slot yet */
    struct tally_request *req = &st->recv_req[m % WINDOW];
    req->buf = staged ? st->staging + (m % STAGING_SLOTS) * p->max_chunk : span->ptr;
    req->len = st->wire_recv ? span->bytes / 2 : span->bytes;
    req->hdr = st->proto;
    req->hdr.index = m;
    TALLY_CHECK(tally_link_irecv(st->comm, &st->ring->from_prev, req));
    st->recv_posted++;
    *moved = 1;
  }
  return TALLY_SUCCESS;
}

static void finish_recvs(struct pipeline_state *st, int *moved) {
  const struct pipeline_plan *p = st->plan;
  const struct tally_coll_desc *d = p->desc;
  while (st->recv_done < st->recv_posted && st->recv_req[st->recv_done % WINDOW].done) {
    struct pipeline_span *span = &st->recv_spans[st->recv_done % WINDOW];
    size_t n = span->bytes / esize(p);
    const void *got = st->recv_req[st->recv_done % WINDOW].buf;
    if (st->wire_recv && span->contrib)
      tally_wire_unpack_add(span->ptr, span->contrib, got, n, st->wire_recv);
    else if (st->wire_recv)
      tally_wire_unpack(span->ptr, got, n, st->wire_recv);
    else if (span->contrib)
      tally_reduce_apply(span->ptr, got, span->contrib, n, d->datatype, d->op);
    if (span->finish_avg) tally_reduce_finish_avg(span->ptr, n, d->datatype, st->comm->nranks);
    if (span->round_result) tally_wire_round(span->ptr, n, d->wire);
    tally_link_done(st->comm, &st->ring->from_prev, &st->recv_req[st->recv_done % WINDOW], 0);
    st->recv_done++;
    *moved = 1;
  }
}

static int send_ready(const struct pipeline_state *st, size_t m) {
  const struct pipeline_plan *p = st->plan;
  int step = (int)(m / (size_t)p->nchunks) - p->dep_lag;
  if (step < 0 || step >= p->recv_steps) return 1;
  return (size_t)step * (size_t)p->nchunks + m % (size_t)p->nchunks < st->recv_done;
}

static tally_result_t post_sends(struct pipeline_state *st, int *moved) {
  const struct pipeline_plan *p = st->plan;
  while (st->send_done < st->send_posted && st->send_req[st->send_done % WINDOW].done) {
    tally_link_done(st->comm, &st->ring->to_next, &st->send_req[st->send_done % WINDOW], 1);
    st->send_done++;
    *moved = 1; /* the loop may now be over: it must not block before it looks */
  }
  size_t in_flight = st->wire_send ? STAGING_SLOTS : WINDOW; /* packed sends wait for a send slot */
  while (st->send_posted < st->total_send && st->send_posted < st->send_done + in_flight &&
         send_ready(st, st->send_posted)) {
    size_t m = st->send_posted;
    struct pipeline_span span = {0};
    p->send_span(p, (int)(m / (size_t)p->nchunks), (int)(m % (size_t)p->nchunks), &span);
    struct tally_request *req = &st->send_req[m % WINDOW];
    req->buf = span.ptr;
    req->len = span.bytes;
    if (st->wire_send) {
      req->buf = st->send_slots + (m % STAGING_SLOTS) * (p->max_chunk / 2);
      req->len = span.bytes / 2;
      size_t n = span.bytes / esize(p);
      tally_wire_pack(req->buf, span.ptr, n, st->wire_send);
    }
    req->hdr = st->proto;
    req->hdr.index = m;
    TALLY_CHECK(tally_link_isend(st->comm, &st->ring->to_next, req));
    st->send_posted++;
    *moved = 1;
  }
  return TALLY_SUCCESS;
}

/* The oldest receive still outstanding: what this rank waits for, or NULL. */
static const struct tally_request *oldest_recv(const struct pipeline_state *st) {
  return st->recv_done < st->recv_posted ? &st->recv_req[st->recv_done % WINDOW] : NULL;
}

/* The flight record of a timed-out rank: where it stood, and whom it had not heard from. Only the
 * rank right after a stalled one blames it; ranks whose own sender said it was waiting too (see
 * wire.h's notices) point further back instead, so a whole ring names the same rank. */
static tally_result_t timed_out(struct tally_comm *comm, const struct pipeline_state *st) {
  const struct pipeline_plan *p = st->plan;
  int prev_rank = st->ring->prev_rank, next_rank = st->ring->next_rank;
  char waited[128], where[256], prev[96], next[96];
  snprintf(waited, sizeof waited, "%s", tally_error_message());
  snprintf(where, sizeof where, "rank %d timed out in %s #%u at step %zu of %d: %s", comm->rank,
           tally_coll_name(p->desc->coll), comm->seq, st->recv_done / (size_t)p->nchunks, p->recv_steps, waited);
  tally_comm_rank_text(comm, prev_rank, prev, sizeof prev);
  tally_comm_rank_text(comm, next_rank, next, sizeof next);
  const struct tally_request *waiting_for = oldest_recv(st);
  if (waiting_for && !waiting_for->peer_waiting) {
    tally_error_blame(prev_rank);
    return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                       "%s; it heard nothing from %s, which did not say it was waiting for anyone itself: rank %d is "
                       "stuck, dead, or has not called %s #%u (received %zu of %zu messages from it)",
                       where, prev, prev_rank, tally_coll_name(p->desc->coll), comm->seq, st->recv_done,
                       st->total_recv);
  }
  tally_error_blame(-1);
  if (waiting_for)
    return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                       "%s; it was waiting for %s, which said it was waiting too: the stalled rank is further back in "
                       "the ring (received %zu of %zu messages from it)",
                       where, prev, st->recv_done, st->total_recv);
  return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                     "%s; %s took no data for that long (sent %zu of %zu messages to it): it, or a rank after it, is "
                     "stuck",
                     where, next, st->send_done, st->total_send);
}

/* Sets up `st` to run `plan` on `ring`, with its staging slots at `staging` (and, for a compressed
 * call, its send slots at `send_slots`). */
static void start(struct pipeline_state *st, struct tally_comm *comm, const struct tally_ring *ring,
                  const struct pipeline_plan *plan, char *staging, char *send_slots) {
  /* fields set one by one: clearing the request arrays would cost more than a small call's messages */
  st->plan = plan, st->comm = comm, st->ring = ring, st->staging = staging, st->send_slots = send_slots;
  enum tally_wire_format wire = (enum tally_wire_format)plan->desc->wire;
  st->wire_send = wire && tally_comm_across_hosts(comm, ring->next_rank) ? wire : TALLY_WIRE_EXACT;
  st->wire_recv = wire && tally_comm_across_hosts(comm, ring->prev_rank) ? wire : TALLY_WIRE_EXACT;
  st->recv_posted = st->recv_done = st->send_posted = st->send_done = 0;
  tally_header_fill(&st->proto, plan->desc, comm->seq);
  st->total_recv = (size_t)plan->recv_steps * (size_t)plan->nchunks;
  st->total_send = (size_t)plan->send_steps * (size_t)plan->nchunks;
}

static int finished(const struct pipeline_state *st) {
  return st->recv_done == st->total_recv && st->send_done == st->total_send;
}

/* The plan this rank is held up by: the first with a receive outstanding, else the first unfinished. */
static const struct pipeline_state *holding_up(const struct pipeline_state *st, int n) {
  for (int i = 0; i < n; i++)
    if (oldest_recv(&st[i])) return &st[i];
  for (int i = 0; i < n; i++)
    if (!finished(&st[i])) return &st[i];
  return &st[0];
}

tally_result_t tally_pipeline_run_many(struct tally_comm *comm, const struct tally_ring *const *rings,
                                       const struct pipeline_plan *const *plans, int n) {
  if (n < 1 || n > TALLY_PIPELINE_MAX_PLANS)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "the pipeline runs 1 to %d plans at once, not %d", TALLY_PIPELINE_MAX_PLANS,
                       n);
  size_t slot_bytes = 0; /* each plan's staging slots, sized for the largest chunk of any */
  for (int i = 0; i < n; i++)
    if (plans[i]->max_chunk > slot_bytes) slot_bytes = plans[i]->max_chunk;
  /* a compressed call's plans also have STAGING_SLOTS send slots of half a chunk each */
  size_t send_bytes = plans[0]->desc->wire ? STAGING_SLOTS * (slot_bytes / 2) : 0;
  size_t plan_bytes = STAGING_SLOTS * slot_bytes + send_bytes;
  TALLY_CHECK(tally_comm_buffer(&comm->staging, &comm->staging_bytes, (size_t)n * plan_bytes));
  struct pipeline_state st[TALLY_PIPELINE_MAX_PLANS];
  for (int i = 0; i < n; i++) {
    char *mine = (char *)comm->staging + (size_t)i * plan_bytes;
    start(&st[i], comm, rings[i], plans[i], mine, mine + STAGING_SLOTS * slot_bytes);
  }
  struct tally_waiter waiter;
  tally_waiter_start(comm, rings[0], &st[0].proto, &waiter);
  for (;;) {
    int moved = 0, done = 1;
    tally_result_t r = TALLY_SUCCESS;
    for (int i = 0; i < n && r == TALLY_SUCCESS; i++) {
      r = post_recvs(&st[i], &moved);
      if (r == TALLY_SUCCESS) r = post_sends(&st[i], &moved);
    }
    for (int i = 0; i < n; i++) done &= finished(&st[i]);
    if (done && r == TALLY_SUCCESS) return TALLY_SUCCESS;
    const struct pipeline_state *held = holding_up(st, n);
    const struct tally_request *waiting_for = oldest_recv(held);
    waiter.upstream_waiting = waiting_for && waiting_for->peer_waiting;
    if (r == TALLY_SUCCESS) r = tally_comm_progress(comm, &waiter, &moved);
    if (r == TALLY_SUCCESS)
      for (int i = 0; i < n; i++) finish_recvs(&st[i], &moved);
    held = holding_up(st, n);
    if (waiter.timed_out) return timed_out(comm, held);
    if (r != TALLY_SUCCESS)
      return TALLY_ERROR(r,
                         "rank %d, %s #%u: %s (received %zu of %zu messages from rank %d, sent %zu of %zu to rank %d)",
                         comm->rank, tally_coll_name(held->plan->desc->coll), comm->seq, tally_error_message(),
                         held->recv_done, held->total_recv, held->ring->prev_rank, held->send_done, held->total_send,
                         held->ring->next_rank);
  }
}

tally_result_t tally_pipeline_run(struct tally_comm *comm, const struct tally_ring *ring,
                                  const struct pipeline_plan *plan) {
  return tally_pipeline_run_many(comm, &ring, &plan, 1);
}
