/* Calls and groups: every communicating call of the API is described by a struct tally_call,
 * checked when it is made, and then run at once or, inside tally_group_start/tally_group_end
 * (per thread, nestable, as NCCL's), queued and run together by the outermost end.
 *
 * How a list of calls runs, the same on every rank so that no order of calls can deadlock:
 * the communicators in order of their id; on each, first its collectives other than alltoall,
 * gather and scatter in call order (each as it runs outside a group), then its alltoalls, gathers
 * and scatters in call order, then one batch of every point-to-point message of its sends, recvs
 * and alltoallvs, all posted at once (algorithms/p2p.h). So the ranks must agree on the order of
 * their collectives of each of the first two kinds, but not on how the kinds interleave. The
 * batch is stream-ordered when a buffer of it is device memory (device/device_call.h), which is
 * why a group's sends, recvs and alltoallvs on one communicator must share one stream. */
#ifndef TALLY_GROUP_H
#define TALLY_GROUP_H

#include "core/descriptor.h"

enum tally_call_kind {
  TALLY_CALL_COLLECTIVE, /* through the tuner: desc */
  TALLY_CALL_SEND,
  TALLY_CALL_RECV,
  TALLY_CALL_ALLTOALLV,
};

struct tally_call {
  enum tally_call_kind kind;
  const char *fn; /* "tally_send", ... for messages */
  tally_comm_t comm;
  tally_stream_t stream;
  struct tally_coll_desc desc; /* collectives */
  const void *sendbuf;
  void *recvbuf;
  size_t count; /* send, recv: elements */
  tally_datatype_t datatype;
  int peer;       /* send, recv: the other rank */
  size_t *counts; /* alltoallv: sendcounts, sdispls, recvcounts, rdispls, nranks each (owned) */
};

/* The first check of every call: comm is a live communicator. */
tally_result_t tally_call_check_comm(const char *fn, tally_comm_t comm);

/* Whether this thread is between tally_group_start and its outermost tally_group_end. */
int tally_group_open(void);

/* Runs a checked call: now, as a group of one, or at the outermost tally_group_end when this
 * thread is in a group. Takes ownership of call->counts either way. */
tally_result_t tally_call_submit(struct tally_call *call);

/* Runs a collective call on a communicator this thread has claimed (collectives.c). */
tally_result_t tally_collective_run_claimed(const struct tally_call *call);

/* The bytes a point-to-point call reads at sendbuf (*send) and writes at recvbuf (*recv), from each
 * buffer's start (point_to_point.c); *recv_whole is 0 where it leaves some of those bytes alone
 * (gaps between an alltoallv's blocks). */
void tally_call_extent(const struct tally_call *call, size_t *send, size_t *recv, int *recv_whole);

/* The bytes of scratch memory a point-to-point call needs while it runs (point_to_point.c): a copy of the send
 * data of an alltoallv in place, whose receives overwrite what its sends read. */
size_t tally_call_copy_bytes(const struct tally_call *call);

/* Appends the messages of a point-to-point call on its communicator to `msgs` (point_to_point.c), with `copy`
 * pointing to tally_call_copy_bytes of scratch memory (NULL where that is 0). */
struct tally_p2p_msg;
tally_result_t tally_call_messages(const struct tally_call *call, int index, struct tally_p2p_msg **msgs, int *n,
                                   int *cap, void *copy);

#endif
