/* Making a communicator, for the ways to start one (init.c): the public functions of a
 * communicator's life are in communicator.c. */
#ifndef TALLY_COMMUNICATOR_H
#define TALLY_COMMUNICATOR_H

#include "bootstrap/uid.h"
#include "tally.h"

/* Builds a communicator: configuration (the environment, then `overrides` when not NULL),
 * topology, transport endpoints, bootstrap through the root in `job`, the links the algorithms
 * need, link calibration and the board. Arguments are already validated. */
tally_result_t tally_comm_create(struct tally_comm **comm, int nranks, int rank, const struct tally_job_id *job,
                                 const tally_config_t *overrides);

#endif
