/* Bootstrap: the root (a thread in the process that made the unique id, or rank 0 under a
 * launcher) collects every rank's data address and topology over authenticated connections and
 * sends the full table back, with a fresh communicator id. Ranks then connect to each other
 * directly. */
#ifndef TALLY_BOOTSTRAP_H
#define TALLY_BOOTSTRAP_H

#include <pthread.h>
#include <stdint.h>

#include "bootstrap_wire.h"
#include "net.h"
#include "tally.h"
#include "uid.h"

/* Starts the root thread listening on `listen_fd` (which it takes over); it serves one
 * communicator and exits when every rank has its table, or after timeout_s. */
tally_result_t tally_bootstrap_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s);

/* The same root for tally_comm_shrink (api/comm_split.c), on a dup of a communicator's recovery
 * listener: it takes only joins whose shrink_digest is job->shrink_digest. A join with another
 * digest (a survivor passed a different exclude list) makes it answer every rank that joined, and
 * every rank that joins later until `expect` have been answered or timeout_s passes, with a
 * failure that tally_bootstrap_join returns as TALLY_ERR_MISMATCH. The thread is joinable: the
 * caller joins `thread` before its process may exit, or the answers still due are lost. */
tally_result_t tally_bootstrap_shrink_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                                 int expect, pthread_t *thread);

/* Joins the job: sends this rank's address and topology to the root and receives everyone's.
 * `peers` has nranks entries; `comm_id` is shared by all ranks of this communicator. A root that
 * gave up returns TIMEOUT with its reason, or MISMATCH when the joins disagreed (shrink). */
tally_result_t tally_bootstrap_join(const struct tally_job_id *job, int rank, int nranks,
                                    const struct tally_peer_info *me, uint64_t deadline, int abort_fd,
                                    struct tally_peer_info *peers, uint64_t *comm_id);

#endif
