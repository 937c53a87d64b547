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

/* Between a survivor's responder (below) and its own join (api/comm_split.c): while `joining`, a
 * responder that saw a disagreement and could not leave it to this rank's root writes the mismatch
 * into `mismatch` and makes `abort_fd` readable, which ends the join (TALLY_ERR_ABORTED); the
 * caller then returns TALLY_ERR_MISMATCH with that text. Under `lock`. */
struct tally_shrink_verdict {
  pthread_mutex_t lock;
  int joining;
  int abort_fd;
  char mismatch[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES];
};

/* What a survivor of tally_comm_shrink (api/comm_split.c) knows when it serves during the shrink. */
struct tally_shrink_view {
  int self;                               /* this rank's number in the communicator being shrunk */
  int nsurvivors;                         /* the ranks its exclude list leaves, this one among them */
  const int *survivors;                   /* [nsurvivors]: their numbers, ascending; [0] is the shrink's root */
  const struct tally_sockaddr *listeners; /* [nsurvivors]: their recovery listeners */
  const unsigned char *join;              /* [TALLY_AUTH_PAYLOAD_BYTES]: this rank's join, which its probes carry */
  const char *excluded;                   /* its exclude list in words ("0 3"), for messages */
  int attempt;                            /* which of its shrinks of the communicator this is (from 0) */
  struct tally_shrink_verdict *verdict;   /* a responder's way to end this rank's join; the root's: NULL */
};

/* Every survivor of a shrink serves on a dup of its recovery listener (`listen_fd`, taken over)
 * while it shrinks, so that every disagreement between the survivors' exclude lists ends in
 * TALLY_ERR_MISMATCH on each of them rather than in a wait. Joins carry their sender's digest of
 * (communicator, exclude list), its number and its root (the lowest rank its list leaves).
 *
 * The root (view->survivors[0] is this rank) is a bootstrap root for the survivors of its list. It
 * probes those that have not joined after a moment: it sends its own join to their recovery
 * listeners. A listener that refuses the connection belongs to a dead process; one that answers with
 * a mismatch belongs to a survivor with another list (it joins another root). Any join or answer
 * with another digest makes the root answer every survivor that joined, and every one that joins
 * later, with a failure that tally_bootstrap_join returns as TALLY_ERR_MISMATCH, naming the two
 * lists. It stops once each survivor of its list joined, answered a probe with a mismatch or died
 * (the living then get TALLY_ERR_REMOTE, "missing:" and the dead survivors' numbers), when
 * `stop_fd` becomes readable (the joins get TALLY_ERR_REMOTE: the root was aborted), or after
 * timeout_s.
 *
 * Any other survivor answers: a probe with its own digest (its root's) with a bare close; a join or
 * probe with another digest (a survivor whose list makes this rank the root, or a root whose list
 * holds this one) with the mismatch, which it also forwards to its own root, so that the survivors
 * that agree with it hear of the disagreement too; then, unless its root sent that probe (it will
 * answer this rank's join), it ends this rank's join through view->verdict (its root may be no
 * root at all, and never answer, or gone). It serves until `stop_fd` becomes readable (then it
 * still answers what already came) or timeout_s passes.
 *
 * A join from a rank in a later shrink of the same communicator (this rank's shrink failed, the
 * others' too, and they shrink again) is answered "join again", which tally_bootstrap_join does
 * until its deadline; one from an earlier shrink gets TALLY_ERR_MISMATCH.
 *
 * The thread is joinable: the caller joins `thread` before its process may exit, or the answers
 * still due are lost. */
tally_result_t tally_bootstrap_shrink_serve(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                            const struct tally_shrink_view *view, int stop_fd, pthread_t *thread);

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
