/* The algorithm table: each algorithm turns a collective descriptor into steps on the
 * communicator's connections. The tuner picks one per call; TALLY_ALGO forces one. */
#ifndef TALLY_ALGORITHM_H
#define TALLY_ALGORITHM_H

#include "../src/comm.h"
#include "../src/descriptor.h"

struct tally_algorithm {
  const char *name;
  /* Runs the collective; nranks >= 2 and count > 0 (the API layer handles the trivial cases). */
  tally_result_t (*run)(struct tally_comm *comm, const struct tally_coll_desc *desc);
};

extern const struct tally_algorithm tally_ring_algorithm;

/* The algorithm to run `desc` on `comm` (so far: the ring, whatever TALLY_ALGO says it may be). */
const struct tally_algorithm *tally_tuner_select(const struct tally_comm *comm, const struct tally_coll_desc *desc);

#endif
