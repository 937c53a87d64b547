/* Running one validated collective on this thread: the step shared by direct calls and by the
 * stream queue's thread (stream_queue.c). */
#ifndef TALLY_COLLECTIVES_H
#define TALLY_COLLECTIVES_H

#include "descriptor.h"

/* Runs d on host memory: refuses a communicator in error state, runs the tuner's algorithm, and on
 * failure records the error on the communicator (which then refuses further calls). Advances the
 * sequence number. */
tally_result_t tally_coll_execute(const char *fn, const struct tally_coll_desc *d, tally_comm_t comm);

/* Puts comm in error state after a failure `r` found outside an algorithm (the thread's message
 * says what): records the message, names the blamed rank, tells the peers. Returns r. */
tally_result_t tally_coll_fail(tally_comm_t comm, tally_result_t r);

/* The bytes this rank reads from sendbuf and writes to recvbuf (0 for a buffer it ignores, such
 * as a non-root's sendbuf in broadcast). */
void tally_coll_buffer_bytes(const struct tally_coll_desc *d, int rank, int nranks, size_t *send, size_t *recv);

#endif
