/* Whether this build counts: the always-on counters (struct tally_counters, comm.h) and flight
 * records (flight.h) count unless CMake's TALLY_COUNTERS=OFF (TALLY_NO_COUNTERS) builds a library
 * without them, only to measure what they cost (bench/trace_figures.sh); tally_comm_stats and the
 * flight log are then empty. And the one way a counter is added to. */
#ifndef TALLY_COUNTING_H
#define TALLY_COUNTING_H

#include <stdatomic.h>
#include <stdint.h>

#ifdef TALLY_NO_COUNTERS
enum { TALLY_COUNTING = 0 };
#else
enum { TALLY_COUNTING = 1 };
#endif

/* Adds to a counter (one writer at a time; readers on other threads see whole values). */
static inline void tally_count(_Atomic uint64_t *counter, uint64_t add) {
  if (!TALLY_COUNTING) return;
  atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + add, memory_order_relaxed);
}

#endif
