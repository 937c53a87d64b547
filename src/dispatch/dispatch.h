/* The one dispatch point of a host-memory collective: a validated call, described by its descriptor,
 * goes to the tuner's algorithm, and its result (or failure) lands on the communicator. Direct calls
 * from the API entry and the device path's queue thread both run collectives here. */
#ifndef TALLY_DISPATCH_H
#define TALLY_DISPATCH_H

#include "core/descriptor.h"

/* Runs d on host memory: refuses a communicator in error state or aborted, runs the tuner's
 * algorithm (counting the call, its bytes and time in comm->counters), and on failure records the
 * error on the communicator (which then refuses further calls). Advances the sequence number. */
tally_result_t tally_coll_execute(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm);

/* Runs a batch of point-to-point messages (algorithms/p2p.h) on host memory, as tally_coll_execute
 * runs a collective: refused on a communicator in error state, and a failure puts it in error
 * state; counted as `ncalls` point-to-point calls. *failed_call: the `call` of the message a
 * failure concerns. */
struct tally_p2p_msg;
tally_result_t tally_p2p_execute(const char *fn, tally_comm_t comm, struct tally_p2p_msg *msgs, int n, int ncalls,
                                 int *failed_call);

/* Puts comm in error state after a failure `r` found outside an algorithm (the thread's message
 * says what): records the message, names the blamed rank, tells the peers. Returns r. */
tally_result_t tally_coll_fail(tally_comm_t comm, tally_result_t r);

/* Copies this thread's last message into the communicator, so that tally_comm_last_error finds it.
 * Returns r. */
tally_result_t tally_coll_remember(tally_comm_t comm, tally_result_t r);

/* The bytes this rank reads from sendbuf and writes to recvbuf (0 for a buffer it ignores, such
 * as a non-root's sendbuf in broadcast). */
void tally_coll_buffer_bytes(const struct tally_coll_desc *d, int rank, int nranks, size_t *send, size_t *recv);

#endif
