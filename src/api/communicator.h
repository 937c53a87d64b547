/* Making a communicator, for the ways to start one (init.c): the public functions of a
 * communicator's life are in communicator.c. */
#ifndef TALLY_COMMUNICATOR_H
#define TALLY_COMMUNICATOR_H

#include <stdint.h>

#include "bootstrap/bootstrap_wire.h"
#include "bootstrap/uid.h"
#include "core/config.h"
#include "tally.h"

struct tally_comm;

/* Builds a communicator: configuration (the environment, then `overrides` when not NULL),
 * topology, transport endpoints, bootstrap through the root in `job`, the links the algorithms
 * need, link calibration and the board. Arguments are already validated. */
tally_result_t tally_comm_create(struct tally_comm **comm, int nranks, int rank, const struct tally_job_id *job,
                                 const tally_config_t *overrides);

/* The steps of tally_comm_create, which comm_split.c also uses to build a communicator from another:
 * tally_comm_new allocates one of `nranks` with this configuration and secret (not yet usable);
 * tally_comm_open discovers this process's topology and opens the network endpoints and the
 * recovery listener, filling `me` (what the other ranks must learn: the bootstrap's entry);
 * once c->peers and c->comm_id are known, tally_comm_finish computes the job's topology, connects
 * the links, takes the link costs from `parent` (NULL: calibrates), opens the board and registers
 * the communicator. On failure the caller frees it with tally_comm_discard. */
tally_result_t tally_comm_new(struct tally_comm **comm, int nranks, int rank, const struct tally_config *cfg,
                              const unsigned char secret[TALLY_SECRET_BYTES]);
tally_result_t tally_comm_open(struct tally_comm *comm, struct tally_peer_info *me);
tally_result_t tally_comm_finish(struct tally_comm *comm, const struct tally_comm *parent, uint64_t deadline);
void tally_comm_discard(struct tally_comm *comm);
/* The first checks of split, dup, shrink and grow (named `fn` in messages): newcomm not NULL (and
 * set to NULL), comm live, and no group open on this thread. */
tally_result_t tally_comm_check_derive(const char *fn, tally_comm_t comm, tally_comm_t *newcomm);
/* A communicator built from another (comm_split.c, comm_grow.c): from tally_comm_construction_begin
 * (right after tally_comm_new; `child` NULL: none) until tally_comm_complete, tally_comm_abort of
 * `origin` aborts `child` too, and so does an abort that came since the call began (unless
 * `aborted_before`: `origin` was aborted before the call, as a shrink's parent may be). Every wait
 * of the construction (the bootstrap's, the links', the board's) then ends with TALLY_ERR_ABORTED.
 * tally_comm_complete is the last step: when `r`, how the steps before went, is success,
 * tally_comm_finish (link costs from `parent`, NULL: calibrated); then `comm` leaves `origin`
 * (NULL: none), and on any failure, an abort included, it (NULL: none) is discarded. Returns the
 * result, messages led by `fn`. */
void tally_comm_construction_begin(struct tally_comm *origin, struct tally_comm *child, int aborted_before);
tally_result_t tally_comm_complete(struct tally_comm *comm, const struct tally_comm *parent, struct tally_comm *origin,
                                   uint64_t deadline, tally_result_t r, const char *fn);

#endif
