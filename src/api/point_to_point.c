/* The point-to-point entry points (tally_send, tally_recv) and the collectives made of point-to-point
 * messages (tally_alltoall, tally_alltoallv, tally_gather, tally_scatter): their argument checks, and
 * the messages sends, recvs and alltoallvs are made of (group.h runs them). Alltoall, gather and
 * scatter run as collectives, through the tuner (algorithms/alltoall.c, gather_scatter.c), with
 * device memory and streams as the other collectives; sends, recvs and alltoallvs run as a batch of
 * messages (group.c), which device memory makes stream-ordered (device/device_call.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "algorithms/p2p.h"
#include "comm/comm.h"
#include "core/error.h"
#include "device/device_call.h"
#include "dispatch/dispatch.h"
#include "group.h"

/* --- checks ------------------------------------------------------------------------------------ */

/* `elements` of `datatype` at `buf` (of which `what` says what it is): a real datatype, a size that
 * fits the address space, memory where they are. */
static tally_result_t check_buffer(const char *fn, const char *what, const void *buf, size_t elements,
                                   tally_datatype_t datatype) {
  if ((unsigned)datatype >= TALLY_NUM_DATATYPES)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: datatype %d is not a tally_datatype_t", fn, (int)datatype);
  size_t bytes; /* multiplied: a division costs tens of cycles, a sizeable part of a small send */
  if (__builtin_mul_overflow(elements, tally_datatype_size(datatype), &bytes))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: %zu elements of %s overflow the address space", fn, elements,
                       tally_datatype_name(datatype));
  if (elements > 0 && !buf)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: %s is NULL but holds %zu elements", fn, what, elements);
  return TALLY_SUCCESS;
}

static tally_result_t check_rank(const char *fn, const char *what, int rank, tally_comm_t comm) {
  if (rank < 0 || rank >= comm->nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: %s %d is outside 0..%d (the communicator's ranks)", fn, what,
                       rank, comm->nranks - 1);
  return TALLY_SUCCESS;
}

/* The elements `counts` and `displs` (nranks each) reach: max(displs[j] + counts[j]). */
static tally_result_t extent(const char *fn, const char *which, const size_t *counts, const size_t *displs, int n,
                             size_t *elements) {
  *elements = 0;
  for (int j = 0; j < n; j++) {
    if (displs[j] > SIZE_MAX - counts[j])
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: block %d of %s (displacement %zu, count %zu) overflows", fn,
                         j, which, displs[j], counts[j]);
    if (counts[j] > 0 && displs[j] + counts[j] > *elements) *elements = displs[j] + counts[j];
  }
  return TALLY_SUCCESS;
}

/* Alltoall, gather and scatter: collectives, described as the tuner sees them. */
static struct tally_call collective_call(const char *fn, tally_comm_t comm, tally_stream_t stream, enum tally_coll coll,
                                         const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                                         int root) {
  struct tally_coll_desc d = {coll, sendbuf, recvbuf, count, datatype, TALLY_SUM, root, 0, 0, 0, 0};
  return (struct tally_call){.kind = TALLY_CALL_COLLECTIVE, .fn = fn, .comm = comm, .stream = stream, .desc = d};
}

/* Checked at the call; on failure the communicator's last error says why. */
static tally_result_t submit_checked(struct tally_call *call, tally_result_t checked) {
  if (checked != TALLY_SUCCESS) {
    free(call->counts);
    return tally_coll_remember(call->comm, checked);
  }
  return tally_call_submit(call);
}

/* --- entry points ------------------------------------------------------------------------------ */

/* A send (is_send) or a recv of `count` elements at buf with `peer`: checked, then submitted. */
static tally_result_t one_message(int is_send, void *buf, size_t count, tally_datatype_t datatype, int peer,
                                  tally_comm_t comm, tally_stream_t stream) {
  const char *fn = is_send ? "tally_send" : "tally_recv";
  TALLY_CHECK(tally_call_check_comm(fn, comm));
  struct tally_call call = {.kind = is_send ? TALLY_CALL_SEND : TALLY_CALL_RECV,
                            .fn = fn,
                            .comm = comm,
                            .stream = stream,
                            .sendbuf = is_send ? buf : NULL,
                            .recvbuf = is_send ? NULL : buf,
                            .count = count,
                            .datatype = datatype,
                            .peer = peer};
  tally_result_t r = check_rank(fn, "peer", peer, comm);
  if (r == TALLY_SUCCESS) r = check_buffer(fn, is_send ? "sendbuf" : "recvbuf", buf, count, datatype);
  if (r == TALLY_SUCCESS) r = tally_device_check_stream(fn, stream); /* at the call: a batch is never half run */
  if (r == TALLY_SUCCESS && peer == comm->rank && !tally_group_open())
    r = TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                    "%s: a %s this rank itself (peer %d) needs its %s in the same group: call tally_group_start first",
                    fn, is_send ? "send to" : "recv from", peer, is_send ? "recv" : "send");
  return submit_checked(&call, r);
}

tally_result_t tally_send(const void *sendbuf, size_t count, tally_datatype_t datatype, int peer, tally_comm_t comm,
                          tally_stream_t stream) {
  return one_message(1, (void *)sendbuf, count, datatype, peer, comm, stream);
}

tally_result_t tally_recv(void *recvbuf, size_t count, tally_datatype_t datatype, int peer, tally_comm_t comm,
                          tally_stream_t stream) {
  return one_message(0, recvbuf, count, datatype, peer, comm, stream);
}

tally_result_t tally_alltoall(const void *sendbuf, void *recvbuf, size_t count, tally_datatype_t datatype,
                              tally_comm_t comm, tally_stream_t stream) {
  TALLY_CHECK(tally_call_check_comm("tally_alltoall", comm));
  struct tally_call call =
      collective_call("tally_alltoall", comm, stream, TALLY_COLL_ALLTOALL, sendbuf, recvbuf, count, datatype, 0);
  size_t n = (size_t)comm->nranks;
  tally_result_t r = count > SIZE_MAX / n
                         ? TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: count %zu per rank times %zu ranks overflows",
                                       call.fn, count, n)
                         : check_buffer(call.fn, "sendbuf", sendbuf, count * n, datatype);
  if (r == TALLY_SUCCESS) r = check_buffer(call.fn, "recvbuf", recvbuf, count * n, datatype);
  return submit_checked(&call, r);
}

tally_result_t tally_alltoallv(const void *sendbuf, const size_t *sendcounts, const size_t *sdispls, void *recvbuf,
                               const size_t *recvcounts, const size_t *rdispls, tally_datatype_t datatype,
                               tally_comm_t comm, tally_stream_t stream) {
  TALLY_CHECK(tally_call_check_comm("tally_alltoallv", comm));
  struct tally_call call = {.kind = TALLY_CALL_ALLTOALLV,
                            .fn = "tally_alltoallv",
                            .comm = comm,
                            .stream = stream,
                            .sendbuf = sendbuf,
                            .recvbuf = recvbuf,
                            .datatype = datatype};
  int n = comm->nranks;
  if (!sendcounts || !sdispls || !recvcounts || !rdispls)
    return submit_checked(&call, TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                                             "%s: sendcounts, sdispls, recvcounts and rdispls must all be arrays of "
                                             "%d elements (one per rank), not NULL",
                                             call.fn, n));
  call.counts = malloc(4 * (size_t)n * sizeof *call.counts); /* the caller may reuse its arrays inside a group */
  if (!call.counts) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory copying the counts", call.fn);
  const size_t *arrays[4] = {sendcounts, sdispls, recvcounts, rdispls};
  for (int a = 0; a < 4; a++) memcpy(call.counts + (size_t)a * (size_t)n, arrays[a], (size_t)n * sizeof(size_t));
  size_t send_elements, recv_elements;
  tally_result_t r = extent(call.fn, "sendcounts/sdispls", sendcounts, sdispls, n, &send_elements);
  if (r == TALLY_SUCCESS) r = extent(call.fn, "recvcounts/rdispls", recvcounts, rdispls, n, &recv_elements);
  if (r == TALLY_SUCCESS) r = check_buffer(call.fn, "sendbuf", sendbuf, send_elements, datatype);
  if (r == TALLY_SUCCESS) r = check_buffer(call.fn, "recvbuf", recvbuf, recv_elements, datatype);
  if (r == TALLY_SUCCESS) r = tally_device_check_stream(call.fn, stream);
  return submit_checked(&call, r);
}

tally_result_t tally_gather(const void *sendbuf, void *recvbuf, size_t sendcount, tally_datatype_t datatype, int root,
                            tally_comm_t comm, tally_stream_t stream) {
  TALLY_CHECK(tally_call_check_comm("tally_gather", comm));
  struct tally_call call =
      collective_call("tally_gather", comm, stream, TALLY_COLL_GATHER, sendbuf, recvbuf, sendcount, datatype, root);
  size_t n = (size_t)comm->nranks;
  tally_result_t r = check_rank(call.fn, "root", root, comm);
  if (r == TALLY_SUCCESS) r = check_buffer(call.fn, "sendbuf", sendbuf, sendcount, datatype);
  if (r == TALLY_SUCCESS && sendcount > SIZE_MAX / n)
    r = TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: sendcount %zu times %zu ranks overflows", call.fn, sendcount, n);
  if (r == TALLY_SUCCESS && comm->rank == root)
    r = check_buffer(call.fn, "recvbuf (at the root)", recvbuf, sendcount * n, datatype);
  return submit_checked(&call, r);
}

tally_result_t tally_scatter(const void *sendbuf, void *recvbuf, size_t recvcount, tally_datatype_t datatype, int root,
                             tally_comm_t comm, tally_stream_t stream) {
  TALLY_CHECK(tally_call_check_comm("tally_scatter", comm));
  struct tally_call call =
      collective_call("tally_scatter", comm, stream, TALLY_COLL_SCATTER, sendbuf, recvbuf, recvcount, datatype, root);
  size_t n = (size_t)comm->nranks;
  tally_result_t r = check_rank(call.fn, "root", root, comm);
  if (r == TALLY_SUCCESS) r = check_buffer(call.fn, "recvbuf", recvbuf, recvcount, datatype);
  if (r == TALLY_SUCCESS && recvcount > SIZE_MAX / n)
    r = TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: recvcount %zu times %zu ranks overflows", call.fn, recvcount, n);
  if (r == TALLY_SUCCESS && comm->rank == root)
    r = check_buffer(call.fn, "sendbuf (at the root)", sendbuf, recvcount * n, datatype);
  return submit_checked(&call, r);
}

/* --- the messages of a call -------------------------------------------------------------------- */

struct batch {
  struct tally_p2p_msg **msgs;
  int *n, *cap;
  int call;
};

static tally_result_t add(struct batch *b, int peer, int is_send, const void *buf, size_t bytes,
                          const struct tally_msg_header *hdr) {
  if (*b->n == *b->cap) {
    int cap = *b->cap ? 2 * *b->cap : 64;
    struct tally_p2p_msg *grown = realloc(*b->msgs, (size_t)cap * sizeof *grown);
    if (!grown) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for %d point-to-point messages", cap);
    *b->msgs = grown;
    *b->cap = cap;
  }
  struct tally_p2p_msg *m = &(*b->msgs)[(*b->n)++];
  m->peer = peer; /* m->req is the executor's to fill */
  m->is_send = is_send;
  m->buf = (void *)buf;
  m->bytes = bytes;
  m->hdr = *hdr;
  m->call = b->call;
  return TALLY_SUCCESS;
}

void tally_call_extent(const struct tally_call *call, size_t *send, size_t *recv, int *recv_whole) {
  size_t es = tally_datatype_size(call->datatype);
  *recv_whole = 1;
  switch (call->kind) {
    case TALLY_CALL_SEND: *send = call->count * es, *recv = 0; return;
    case TALLY_CALL_RECV: *send = 0, *recv = call->count * es; return;
    case TALLY_CALL_ALLTOALLV: break;
    default: *send = *recv = 0; return;
  }
  int n = call->comm->nranks;
  const size_t *recvcounts = call->counts + 2 * n;
  size_t send_elements, recv_elements, received = 0; /* checked at the call: no overflow */
  extent(call->fn, "sendcounts/sdispls", call->counts, call->counts + n, n, &send_elements);
  extent(call->fn, "recvcounts/rdispls", recvcounts, recvcounts + n, n, &recv_elements);
  for (int j = 0; j < n; j++) received += recvcounts[j];
  *send = send_elements * es;
  *recv = recv_elements * es;
  *recv_whole = received >= recv_elements; /* blocks that leave no gap (or overlap, which is the caller's error) */
}

size_t tally_call_copy_bytes(const struct tally_call *call) {
  if (call->kind != TALLY_CALL_ALLTOALLV || call->sendbuf != call->recvbuf) return 0;
  int n = call->comm->nranks;
  size_t elements;
  extent(call->fn, "sendcounts/sdispls", call->counts, call->counts + n, n, &elements); /* checked at the call */
  return elements * tally_datatype_size(call->datatype);
}

/* In place, sends would read blocks that receives overwrite: they read a copy instead. */
static const void *send_data(const struct tally_call *call, void *copy) {
  if (!copy) return call->sendbuf;
  memcpy(copy, call->sendbuf, tally_call_copy_bytes(call));
  return copy;
}

/* Each pair's messages carry what the sender sends (count) and what it expects back (index), so
 * that a count that differs either way fails on both ranks. */
static tally_result_t alltoallv_messages(const struct tally_call *call, struct batch *b, void *copy) {
  tally_comm_t comm = call->comm;
  int n = comm->nranks;
  size_t es = tally_datatype_size(call->datatype);
  const size_t *sendcounts = call->counts, *sdispls = sendcounts + n, *recvcounts = sdispls + n,
               *rdispls = recvcounts + n;
  const void *send = send_data(call, copy);
  /* the collective's fingerprint: the communicator's next sequence number */
  struct tally_msg_header h = {
      .seq = comm->seq++, .coll = TALLY_MSG_ALLTOALLV, .datatype = (uint8_t)call->datatype, .op = TALLY_SUM};
  for (int k = 0; k < n; k++) {
    int peer = (comm->rank + k) % n;
    struct tally_msg_header in = h, out = h;
    in.count = recvcounts[peer], in.index = sendcounts[peer];
    out.count = sendcounts[peer], out.index = recvcounts[peer];
    TALLY_CHECK(add(b, peer, 0, (char *)call->recvbuf + rdispls[peer] * es, recvcounts[peer] * es, &in));
    TALLY_CHECK(add(b, peer, 1, (const char *)send + sdispls[peer] * es, sendcounts[peer] * es, &out));
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_call_messages(const struct tally_call *call, int index, struct tally_p2p_msg **msgs, int *n,
                                   int *cap, void *copy) {
  struct batch b = {msgs, n, cap, index};
  size_t bytes = call->count * tally_datatype_size(call->datatype);
  struct tally_msg_header h;
  switch (call->kind) {
    case TALLY_CALL_SEND:
      tally_p2p_header(call->comm, call->peer, 1, call->count, call->datatype, &h);
      return add(&b, call->peer, 1, call->sendbuf, bytes, &h);
    case TALLY_CALL_RECV:
      tally_p2p_header(call->comm, call->peer, 0, call->count, call->datatype, &h);
      return add(&b, call->peer, 0, call->recvbuf, bytes, &h);
    case TALLY_CALL_ALLTOALLV: return alltoallv_messages(call, &b, copy);
    default: return TALLY_ERROR(TALLY_ERR_INTERNAL, "%s is not a point-to-point call", call->fn);
  }
}
