/* The point-to-point batch (p2p.h): copies between this rank and itself, connections on first use,
 * every message posted at once, then waiting until all are done; the one-step exchange and the
 * block rotation the collectives made of messages use. */
#define _GNU_SOURCE
#include "p2p.h"

#include <stdlib.h>
#include <string.h>

#include "comm/links.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/wire.h"

void tally_p2p_header(struct tally_comm *comm, int peer, int is_send, size_t count, tally_datatype_t datatype,
                      struct tally_msg_header *hdr) {
  memset(hdr, 0, sizeof *hdr);
  hdr->seq = is_send ? comm->p2p_sent[peer]++ : comm->p2p_received[peer]++;
  hdr->coll = TALLY_MSG_SEND;
  hdr->datatype = (uint8_t)datatype;
  hdr->op = TALLY_SUM;
  hdr->count = count;
}

/* Which messages to this rank itself pair up: a tally_send's with tally_recv's, in order; a
 * collective's (its own block) within that call. */
static int self_pairs(const struct tally_p2p_msg *a, const struct tally_p2p_msg *b) {
  if (a->hdr.coll == TALLY_MSG_SEND || b->hdr.coll == TALLY_MSG_SEND)
    return a->hdr.coll == TALLY_MSG_SEND && b->hdr.coll == TALLY_MSG_SEND;
  return a->call == b->call;
}

/* The k-th message of this rank to itself goes to its k-th recv from itself (self_pairs); a send
 * or a recv without its match is refused. */
static tally_result_t copy_to_self(const struct tally_comm *comm, struct tally_p2p_msg *msgs, int n, int *failed_call) {
  for (int i = 0; i < n; i++) {
    struct tally_p2p_msg *send = &msgs[i];
    if (send->peer != comm->rank || !send->is_send) continue;
    struct tally_p2p_msg *recv = NULL;
    for (int j = 0; j < n && !recv; j++)
      if (msgs[j].peer == comm->rank && !msgs[j].is_send && !msgs[j].req.done && self_pairs(send, &msgs[j]))
        recv = &msgs[j];
    if (!recv) {
      *failed_call = send->call;
      return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                         "rank %d: %s #%u to itself has no matching recv from itself in the same group", comm->rank,
                         tally_coll_name(send->hdr.coll), send->hdr.seq);
    }
    unsigned char wire[TALLY_WIRE_HEADER_BYTES];
    struct tally_msg_header sent = send->hdr;
    sent.bytes = send->bytes;
    recv->hdr.bytes = recv->bytes;
    tally_header_encode(&sent, wire);
    tally_result_t r = tally_header_check(wire, &recv->hdr, comm->rank);
    if (r != TALLY_SUCCESS) {
      *failed_call = recv->call;
      return r;
    }
    if (send->bytes) memmove(recv->buf, send->buf, send->bytes);
    send->req.done = recv->req.done = 1;
  }
  for (int i = 0; i < n; i++)
    if (msgs[i].peer == comm->rank && !msgs[i].req.done) {
      *failed_call = msgs[i].call;
      return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                         "rank %d: %s #%u from itself has no matching send to itself in the same group", comm->rank,
                         tally_coll_name(msgs[i].hdr.coll), msgs[i].hdr.seq);
    }
  return TALLY_SUCCESS;
}

static int connected(const struct tally_comm *comm, const struct tally_p2p_msg *m) {
  return m->peer == comm->rank || (m->is_send ? comm->to[m->peer].ops : comm->from[m->peer].ops) != NULL;
}

/* Connects the pairs this batch needs that have no connection yet, in the direction it needs
 * (the common case, every pair connected, allocates nothing). */
static tally_result_t connect_missing(struct tally_comm *comm, const struct tally_p2p_msg *msgs, int n) {
  int missing = 0;
  for (int i = 0; i < n && !missing; i++) missing = !connected(comm, &msgs[i]);
  if (!missing) return TALLY_SUCCESS;
  int *to = malloc((size_t)n * sizeof *to), *from = malloc((size_t)n * sizeof *from);
  if (!to || !from) {
    free(to);
    free(from);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the peers of %d messages", n);
  }
  int nto = 0, nfrom = 0;
  for (int i = 0; i < n; i++) { /* tally_links_connect_peers skips the pairs already connected */
    if (msgs[i].peer == comm->rank) continue;
    if (msgs[i].is_send)
      to[nto++] = msgs[i].peer;
    else
      from[nfrom++] = msgs[i].peer;
  }
  tally_result_t r = tally_links_connect_peers(comm, to, nto, from, nfrom, tally_deadline_after(comm->cfg.timeout_s));
  free(to);
  free(from);
  return r;
}

static tally_result_t post(struct tally_comm *comm, struct tally_p2p_msg *m) {
  struct tally_request *req = &m->req;
  /* field by field: the transport encodes req->wire itself, and zeroing the whole request (a string
   * instruction) would cost more than the rest of posting a small message */
  req->buf = m->buf;
  req->len = m->bytes;
  req->hdr = m->hdr;
  req->done = 0;
  req->peer_waiting = 0;
  req->posted_ns = 0;
  req->progressed = 0;
  req->next = NULL;
  const struct tally_link *link = m->is_send ? &comm->to[m->peer] : &comm->from[m->peer];
  return m->is_send ? tally_link_isend(comm, link, req) : tally_link_irecv(comm, link, req);
}

/* Traces the messages that completed (tally_link_done skips those already traced). */
static void trace_done(struct tally_comm *comm, struct tally_p2p_msg *msgs, int n) {
  for (int i = 0; i < n; i++)
    if (msgs[i].req.done && msgs[i].peer != comm->rank)
      tally_link_done(comm, msgs[i].is_send ? &comm->to[msgs[i].peer] : &comm->from[msgs[i].peer], &msgs[i].req,
                      msgs[i].is_send);
}

/* The message this rank waits for: the first unfinished recv, else the first unfinished send. */
static const struct tally_p2p_msg *holding_up(const struct tally_p2p_msg *msgs, int n) {
  for (int i = 0; i < n; i++)
    if (!msgs[i].is_send && !msgs[i].req.done) return &msgs[i];
  for (int i = 0; i < n; i++)
    if (!msgs[i].req.done) return &msgs[i];
  return NULL;
}

static tally_result_t timed_out(const struct tally_comm *comm, const struct tally_p2p_msg *held) {
  char who[128];
  tally_comm_rank_text(comm, held->peer, who, sizeof who);
  tally_error_blame(held->peer);
  if (held->is_send)
    return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                       "rank %d timed out after %.1f s (TALLY_TIMEOUT) sending %s #%u to %s, which took no data: it is "
                       "stuck, dead, or has not made the matching call",
                       comm->rank, comm->cfg.timeout_s, tally_coll_name(held->hdr.coll), held->hdr.seq, who);
  return TALLY_ERROR(TALLY_ERR_TIMEOUT,
                     "rank %d timed out after %.1f s (TALLY_TIMEOUT) waiting for %s #%u from %s: it is stuck, dead, "
                     "or has not made the matching call",
                     comm->rank, comm->cfg.timeout_s, tally_coll_name(held->hdr.coll), held->hdr.seq, who);
}

static int count_done(const struct tally_p2p_msg *msgs, int n) {
  int done = 0;
  for (int i = 0; i < n; i++) done += msgs[i].req.done != 0;
  return done;
}

tally_result_t tally_p2p_run(struct tally_comm *comm, struct tally_p2p_msg *msgs, int n, int *failed_call) {
  *failed_call = n > 0 ? msgs[0].call : -1;
  for (int i = 0; i < n; i++) msgs[i].req.done = 0;
  TALLY_CHECK(copy_to_self(comm, msgs, n, failed_call));
  tally_result_t r = connect_missing(comm, msgs, n);
  int first_send = -1;
  for (int i = 0; i < n && r == TALLY_SUCCESS; i++) {
    if (msgs[i].peer == comm->rank) continue;
    if (msgs[i].is_send && first_send < 0) first_send = i;
    r = post(comm, &msgs[i]);
  }
  if (r != TALLY_SUCCESS) return r;
  int done = count_done(msgs, n);
  if (done > 0 && comm->trace) trace_done(comm, msgs, n);
  if (done == n) return TALLY_SUCCESS; /* sends the transports took at once need no waiting */
  /* Waiting notices go to the first rank this one sends to (any rank it sends to, where it has none). */
  int notified = first_send >= 0 ? msgs[first_send].peer : comm->world.next_rank;
  struct tally_ring pair = {.size = 2, .next_rank = notified, .prev_rank = notified, .to_next = comm->to[notified]};
  if (!pair.to_next.ops) pair.to_next = comm->world.to_next;
  /* the collective a batch belongs to (an alltoall's steps, say) is compared with the host board's,
   * so that a rank waiting on the board for a different call is a mismatch, not a hang */
  const struct tally_msg_header *call = msgs[0].hdr.coll < TALLY_NUM_COLLS ? &msgs[0].hdr : NULL;
  struct tally_waiter waiter;
  tally_waiter_start(comm, &pair, call, &waiter);
  for (;;) {
    int now_done = count_done(msgs, n);
    int moved = now_done != done;
    if (moved && comm->trace) trace_done(comm, msgs, n);
    if (now_done == n) return TALLY_SUCCESS;
    done = now_done;
    const struct tally_p2p_msg *held = holding_up(msgs, n);
    *failed_call = held->call;
    waiter.waiting_for = held->peer;
    waiter.upstream_waiting = !held->is_send && held->req.peer_waiting;
    r = tally_comm_progress(comm, &waiter, &moved);
    if (waiter.timed_out) return timed_out(comm, held);
    if (r != TALLY_SUCCESS)
      return TALLY_ERROR(r, "rank %d, %s #%u %s rank %d: %s", comm->rank, tally_coll_name(held->hdr.coll),
                         held->hdr.seq, held->is_send ? "to" : "from", held->peer, tally_error_message());
  }
}

tally_result_t tally_p2p_exchange(struct tally_comm *comm, const struct tally_msg_header *hdr, int to, const void *send,
                                  size_t send_bytes, int from, void *recv, size_t recv_bytes) {
  struct tally_p2p_msg msgs[2];
  int n = 0, failed_call;
  if (to >= 0) msgs[n++] = (struct tally_p2p_msg){.peer = to, .is_send = 1, .buf = (void *)send, .bytes = send_bytes};
  if (from >= 0) msgs[n++] = (struct tally_p2p_msg){.peer = from, .is_send = 0, .buf = recv, .bytes = recv_bytes};
  for (int i = 0; i < n; i++) msgs[i].hdr = *hdr;
  return tally_p2p_run(comm, msgs, n, &failed_call);
}

tally_result_t tally_p2p_exchange_all(struct tally_comm *comm, const struct tally_msg_header *hdr, int first,
                                      int stride, int n, const void *send, void *recv, size_t bytes) {
  struct tally_p2p_msg *msgs = malloc(2 * (size_t)n * sizeof *msgs);
  if (!msgs) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the %d messages of an exchange", 2 * n);
  int me = (comm->rank - first) / stride;
  for (int k = 0; k < n; k++) {
    int to = (me + k) % n, from = (me - k + n) % n;
    msgs[2 * k] = (struct tally_p2p_msg){.peer = first + from * stride,
                                         .is_send = 0,
                                         .buf = (char *)recv + (size_t)from * bytes,
                                         .bytes = bytes,
                                         .hdr = *hdr};
    msgs[2 * k + 1] = (struct tally_p2p_msg){.peer = first + to * stride,
                                             .is_send = 1,
                                             .buf = (void *)((const char *)send + (size_t)to * bytes),
                                             .bytes = bytes,
                                             .hdr = *hdr};
  }
  int failed_call;
  tally_result_t r = tally_p2p_run(comm, msgs, 2 * n, &failed_call);
  free(msgs);
  return r;
}

void tally_blocks_rotate(void *dst, const void *src, int n, int first, size_t block) {
  size_t tail = (size_t)(n - first) * block, head = (size_t)first * block;
  memcpy(dst, (const char *)src + head, tail);
  memcpy((char *)dst + tail, src, head);
}
