/* Clock alignment for traces (TALLY_TRACE): each rank's offset to rank 0's monotonic clock, measured
 * at init by ping-pong with rank 0. A rank sends rank 0 a ping at its time t1, rank 0 answers with
 * its own time t0, and the answer arrives at t2: rank 0's clock read t0 somewhere between t1 and t2,
 * so offset = t0 - (t1 + t2) / 2 is off by at most the round trip's half, (t2 - t1) / 2. Of
 * TALLY_CLOCK_SAMPLES round trips the one with the least round trip wins (queueing only adds). */
#ifndef TALLY_CLOCK_OFFSET_H
#define TALLY_CLOCK_OFFSET_H

#include <stdint.h>

#include "comm/comm.h"

#define TALLY_CLOCK_SAMPLES 8

/* Collective over `comm`: connects rank 0 with every other rank both ways (the first time a
 * communicator is traced: these connections then serve point-to-point calls as well), and writes
 * the offset to add to this rank's tally_now_ns() to get rank 0's, and its error bound (0 and 0 on
 * rank 0). */
tally_result_t tally_clock_offset_measure(struct tally_comm *comm, int64_t *offset_ns, uint64_t *error_ns);

#endif
