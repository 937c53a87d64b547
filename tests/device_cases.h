/* What the device-buffer tests share (test_streams.c on the emulated device, test_cuda.c on a
 * GPU): a collective call described as data, its buffer sizes, its issue through the public API,
 * and deterministic inputs that every datatype holds exactly. */
#ifndef TALLY_TEST_DEVICE_CASES_H
#define TALLY_TEST_DEVICE_CASES_H

#include <stddef.h>

#include "tally.h"

struct device_call {
  const char *coll; /* one of device_call_colls */
  tally_datatype_t dt;
  tally_op_t op;
  size_t count;
  int root;
};

/* "allreduce", "allgather", "reduce_scatter", "broadcast", "reduce", "alltoall", "gather", "scatter" */
#define DEVICE_CALL_NCOLLS 8
extern const char *const device_call_colls[DEVICE_CALL_NCOLLS];
/* Whether c has a root / an op (the others ignore theirs). */
int device_call_rooted(const struct device_call *c);
int device_call_has_op(const struct device_call *c);

/* Bytes of this rank's send and receive buffers (the full sizes, used or not). */
void device_call_bytes(const struct device_call *c, int nranks, size_t *send, size_t *recv);
/* Whether this rank reads its send buffer / writes its receive buffer in c. */
int device_call_uses_send(const struct device_call *c, int rank);
int device_call_uses_recv(const struct device_call *c, int rank);
/* NCCL's in-place layout in one buffer `whole`: where this rank's send and receive parts are. */
void device_call_in_place(const struct device_call *c, int rank, char *whole, size_t send_bytes, size_t recv_bytes,
                          char **send, char **recv);
tally_result_t device_call_issue(const struct device_call *c, const void *send, void *recv, tally_comm_t comm,
                                 void *stream);
/* elems elements of rank's input: small integers, exact in every datatype (fp16 and bf16 too). */
void device_call_fill(void *buf, size_t elems, tally_datatype_t dt, int rank);

#endif
