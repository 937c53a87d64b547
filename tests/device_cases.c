/* The device tests' shared call descriptions (device_cases.h). */
#include "device_cases.h"

#include <string.h>

#include "typed.h"

const char *const device_call_colls[5] = {"allreduce", "allgather", "reduce_scatter", "broadcast", "reduce"};

void device_call_bytes(const struct device_call *c, int nranks, size_t *send, size_t *recv) {
  size_t bytes = c->count * tally_datatype_size(c->dt);
  *send = *recv = bytes;
  if (!strcmp(c->coll, "allgather")) *recv = bytes * (size_t)nranks;
  if (!strcmp(c->coll, "reduce_scatter")) *send = bytes * (size_t)nranks;
}

int device_call_uses_send(const struct device_call *c, int rank) {
  return strcmp(c->coll, "broadcast") != 0 || rank == c->root;
}

int device_call_uses_recv(const struct device_call *c, int rank) {
  return strcmp(c->coll, "reduce") != 0 || rank == c->root;
}

void device_call_in_place(const struct device_call *c, int rank, char *whole, size_t send_bytes, size_t recv_bytes,
                          char **send, char **recv) {
  *send = *recv = whole;
  if (!strcmp(c->coll, "allgather")) *send = whole + (size_t)rank * send_bytes;
  if (!strcmp(c->coll, "reduce_scatter")) *recv = whole + (size_t)rank * recv_bytes;
}

tally_result_t device_call_issue(const struct device_call *c, const void *send, void *recv, tally_comm_t comm,
                                 void *stream) {
  if (!strcmp(c->coll, "allreduce")) return tally_allreduce(send, recv, c->count, c->dt, c->op, comm, stream);
  if (!strcmp(c->coll, "allgather")) return tally_allgather(send, recv, c->count, c->dt, comm, stream);
  if (!strcmp(c->coll, "reduce_scatter")) return tally_reduce_scatter(send, recv, c->count, c->dt, c->op, comm, stream);
  if (!strcmp(c->coll, "broadcast")) return tally_broadcast(send, recv, c->count, c->dt, c->root, comm, stream);
  return tally_reduce(send, recv, c->count, c->dt, c->op, c->root, comm, stream);
}

void device_call_fill(void *buf, size_t elems, tally_datatype_t dt, int rank) {
  for (size_t i = 0; i < elems; i++) typed_set(buf, i, dt, (double)((int)((rank + 1) * (i % 5 + 1)) % 23));
}
