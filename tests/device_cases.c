/* The device tests' shared call descriptions (device_cases.h). */
#include "device_cases.h"

#include <string.h>

#include "typed.h"

const char *const device_call_colls[DEVICE_CALL_NCOLLS] = {"allreduce", "allgather", "reduce_scatter", "broadcast",
                                                            "reduce",    "alltoall",  "gather",         "scatter"};

static int is(const struct device_call *c, const char *coll) { return !strcmp(c->coll, coll); }

int device_call_rooted(const struct device_call *c) {
  return is(c, "broadcast") || is(c, "reduce") || is(c, "gather") || is(c, "scatter");
}

int device_call_has_op(const struct device_call *c) {
  return is(c, "allreduce") || is(c, "reduce_scatter") || is(c, "reduce");
}

void device_call_bytes(const struct device_call *c, int nranks, size_t *send, size_t *recv) {
  size_t bytes = c->count * tally_datatype_size(c->dt);
  *send = *recv = bytes;
  if (is(c, "allgather") || is(c, "gather")) *recv = bytes * (size_t)nranks;
  if (is(c, "reduce_scatter") || is(c, "scatter")) *send = bytes * (size_t)nranks;
  if (is(c, "alltoall")) *send = *recv = bytes * (size_t)nranks;
}

int device_call_uses_send(const struct device_call *c, int rank) {
  return !(is(c, "broadcast") || is(c, "scatter")) || rank == c->root;
}

int device_call_uses_recv(const struct device_call *c, int rank) {
  return !(is(c, "reduce") || is(c, "gather")) || rank == c->root;
}

void device_call_in_place(const struct device_call *c, int rank, char *whole, size_t send_bytes, size_t recv_bytes,
                          char **send, char **recv) {
  *send = *recv = whole;
  if (is(c, "allgather") || is(c, "gather")) *send = whole + (size_t)rank * send_bytes;
  if (is(c, "reduce_scatter") || is(c, "scatter")) *recv = whole + (size_t)rank * recv_bytes;
}

tally_result_t device_call_issue(const struct device_call *c, const void *send, void *recv, tally_comm_t comm,
                                 void *stream) {
  if (!strcmp(c->coll, "allreduce")) return tally_allreduce(send, recv, c->count, c->dt, c->op, comm, stream);
  if (!strcmp(c->coll, "allgather")) return tally_allgather(send, recv, c->count, c->dt, comm, stream);
  if (!strcmp(c->coll, "reduce_scatter")) return tally_reduce_scatter(send, recv, c->count, c->dt, c->op, comm, stream);
  if (!strcmp(c->coll, "broadcast")) return tally_broadcast(send, recv, c->count, c->dt, c->root, comm, stream);
  if (is(c, "alltoall")) return tally_alltoall(send, recv, c->count, c->dt, comm, stream);
  if (is(c, "gather")) return tally_gather(send, recv, c->count, c->dt, c->root, comm, stream);
  if (is(c, "scatter")) return tally_scatter(send, recv, c->count, c->dt, c->root, comm, stream);
  return tally_reduce(send, recv, c->count, c->dt, c->op, c->root, comm, stream);
}

void device_call_fill(void *buf, size_t elems, tally_datatype_t dt, int rank) {
  for (size_t i = 0; i < elems; i++) typed_set(buf, i, dt, (double)((int)((rank + 1) * (i % 5 + 1)) % 23));
}
