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
 * failure that tally_bootstrap_join returns as TALLY_ERR_MISMATCH. `survivors` holds the `expect`
 * survivors' recovery listeners (len 0: not watched, the root's own): one that refuses connections
 * before its survivor joined means that survivor died, and every join is answered with a failure
 * that tally_bootstrap_join returns as TALLY_ERR_REMOTE ("missing:" and the dead survivors'
 * numbers). The thread is joinable: the caller joins `thread` before its process may exit, or the
 * answers still due are lost. */
tally_result_t tally_bootstrap_shrink_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                                 int expect, const struct tally_sockaddr *survivors,
                                                 pthread_t *thread);

/* The root of a grown communicator (tally_comm_grow, api/comm_grow.c) on the listener
 * tally_comm_grow_id opened: an ordinary root, but joinable as the shrink's, and it gives up when
 * `abort_fd` (the abort eventfd of the communicator being grown, valid until the thread is joined) becomes
 * readable, telling the ranks that joined. */
tally_result_t tally_bootstrap_grow_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                               int abort_fd, pthread_t *thread);

/* A root that admits nobody, for a grow that failed among the existing ranks: it answers each join
 * (authenticated with `secret`) with `refusal`, which tally_bootstrap_join returns as
 * TALLY_ERR_MISMATCH, until `expect` have been answered or timeout_s passes. Detached. */
tally_result_t tally_bootstrap_refusing_root_start(int listen_fd, const unsigned char secret[TALLY_SECRET_BYTES],
                                                   double timeout_s, int expect, const char *refusal);

/* Joins the job: sends this rank's address and topology to the root and receives everyone's.
 * `peers` has nranks entries; `comm_id` is shared by all ranks of this communicator. A root that
 * gave up returns TIMEOUT with its reason, MISMATCH when the joins disagreed (shrink), or REMOTE
 * when a survivor died (shrink) or the root's rank was aborted (grow). */
tally_result_t tally_bootstrap_join(const struct tally_job_id *job, int rank, int nranks,
                                    const struct tally_peer_info *me, uint64_t deadline, int abort_fd,
                                    struct tally_peer_info *peers, uint64_t *comm_id);

#endif
