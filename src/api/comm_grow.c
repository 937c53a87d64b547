/* Growing a communicator by processes that were not in it: tally_comm_grow_id, tally_comm_grow and
 * tally_comm_join. The grown communicator is a new one (its own endpoints, connections, board and
 * error state, built by the steps of communicator.h), bootstrapped like one made from a unique id,
 * through a root that one existing rank serves:
 *
 * tally_comm_grow_id opens a listening socket on the caller's TCP address and returns a grow id
 * (bootstrap/uid.h) carrying its address, a fresh secret for the grown communicator (the newcomers
 * never learn the secret of `comm`), the comm id and size of `comm` and nnew. The communicator keeps
 * the socket and the id as its pending grow (grow_fd, grow_id); a second tally_comm_grow_id replaces
 * them, which makes the first id stale.
 *
 * tally_comm_grow: one allgather over `comm` carries every rank's nnew, its pending id if it has one
 * and the id it was passed (if any). From that table every rank works out the same verdict: exactly
 * one rank must hold a pending id (the owner), every nnew must agree with each other and with the
 * owner's id (else TALLY_ERR_MISMATCH), every id passed must be the owner's (else
 * TALLY_ERR_INVALID_ARGUMENT naming the rank, and whether the id is of another communicator or
 * stale). So a bad argument on one rank fails every rank at once rather than leaving them to time
 * out. When the verdict is good, the owner starts the bootstrap root on its pending socket and every
 * existing rank joins it with its own rank number in a communicator of size + nnew, while the
 * newcomers join it from tally_comm_join with the id's secret as rank size + index. The root's
 * table gives every rank every address; tally_comm_finish then connects the links, calibrates the
 * link costs (the newcomers have no parent to copy them from, and may be on new hosts) and opens
 * the board. When the verdict is bad, the owner turns its socket into a root that refuses every
 * newcomer with the reason (TALLY_ERR_MISMATCH on their side), so that they do not wait either. A
 * grow that failed, for whatever reason, used its id up.
 *
 * Waits: the existing ranks' bootstrap wait is bounded by the TALLY_TIMEOUT of `comm` and cut
 * short by tally_comm_abort of `comm` (TALLY_ERR_ABORTED; the root, watching the owner's `comm`,
 * then tells the others, TALLY_ERR_REMOTE); the root gives up a little earlier than the TIMEOUT,
 * naming the ranks missing (the newcomers' numbers are size .. size + nnew - 1). A newcomer's
 * waits are bounded by its own TALLY_TIMEOUT; since the root listened before the id existed, a
 * refused connection means the grow is over (a stale id) and fails at once. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "bootstrap/bootstrap.h"
#include "bootstrap/uid.h"
#include "comm/comm.h"
#include "communicator.h"
#include "config_env.h"
#include "core/bytes.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "dispatch/dispatch.h"
#include "group.h"

/* One rank's part of the allgather: nnew, flags, the pending id (zeros: none), the id passed (zeros: NULL). */
enum {
  RECORD_ID = 8,
  RECORD_PASSED = RECORD_ID + TALLY_UNIQUE_ID_BYTES,
  GROW_RECORD = RECORD_PASSED + TALLY_UNIQUE_ID_BYTES
};
enum { FLAG_OWNER = 1, FLAG_PASSED = 2 };

static tally_result_t check_nnew(const char *fn, tally_comm_t comm, int nnew) {
  if (nnew < 1 || nnew > TALLY_BOOTSTRAP_MAX_RANKS - comm->nranks)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: nnew is %d; it must be 1 to %d (the ranks that join)", fn, nnew,
                       TALLY_BOOTSTRAP_MAX_RANKS - comm->nranks);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_grow_id(tally_comm_t comm, int nnew, tally_unique_id_t *id) {
  static const char fn[] = "tally_comm_grow_id";
  if (!id) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: id is NULL", fn);
  TALLY_CHECK(tally_call_check_comm(fn, comm));
  TALLY_CHECK(tally_coll_remember(comm, check_nnew(fn, comm, nnew)));
  struct tally_grow_id grow = {.parent_id = comm->comm_id, .old_size = comm->nranks, .nnew = nnew};
  grow.job.authenticated = 1;
  tally_random_bytes(grow.job.secret, sizeof grow.job.secret);
  grow.job.root = comm->peers[comm->rank].addr;
  tally_net_set_port(&grow.job.root, 0);
  int fd;
  tally_result_t r = tally_net_listen(&grow.job.root, &fd);
  if (r != TALLY_SUCCESS)
    return tally_coll_remember(comm,
                               TALLY_ERROR(r, "%s: cannot listen for the newcomers: %s", fn, tally_error_message()));
  tally_uid_encode_grow(&grow, id);
  if (comm->grow_fd >= 0) close(comm->grow_fd); /* the earlier id is stale from now on */
  comm->grow_fd = fd;
  comm->grow_id = *id;
  char text[80];
  TLOG_INFO(TALLY_SUBSYS_INIT, "%s: rank %d of communicator %016llx serves the grow by %d at %s", fn, comm->rank,
            (unsigned long long)comm->comm_id, nnew, tally_net_format(&grow.job.root, text, sizeof text));
  return TALLY_SUCCESS;
}

/* The verdict every rank reaches alike from the allgathered records; the owner's decoded id in `grow`. */
static tally_result_t verdict(tally_comm_t comm, const unsigned char *all, int *owner, struct tally_grow_id *grow) {
  static const char fn[] = "tally_comm_grow";
  char who[128], who2[128];
  *owner = -1;
  for (int p = 0; p < comm->nranks; p++) {
    if (!(all[(size_t)p * GROW_RECORD + 4] & FLAG_OWNER)) continue;
    if (*owner >= 0)
      return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                         "%s: %s and %s both called tally_comm_grow_id on this communicator; call it on one rank only",
                         fn, tally_comm_rank_text(comm, *owner, who, sizeof who),
                         tally_comm_rank_text(comm, p, who2, sizeof who2));
    *owner = p;
  }
  if (*owner < 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "%s: no rank of this communicator holds an id from tally_comm_grow_id (none was made, or an "
                       "earlier tally_comm_grow used it up): call it on one rank, pass the id to the newcomers, then "
                       "grow",
                       fn);
  const unsigned char *mine = all + (size_t)*owner * GROW_RECORD;
  int nnew = (int)tally_get_u32(mine);
  for (int p = 0; p < comm->nranks; p++) {
    int other = (int)tally_get_u32(all + (size_t)p * GROW_RECORD);
    if (other != nnew)
      return TALLY_ERROR(TALLY_ERR_MISMATCH, "%s: %s passes nnew %d but %s passes %d; every rank must pass the same",
                         fn, tally_comm_rank_text(comm, p, who, sizeof who), other,
                         tally_comm_rank_text(comm, *owner, who2, sizeof who2), nnew);
  }
  tally_unique_id_t id;
  memcpy(&id, mine + RECORD_ID, sizeof id);
  if (tally_uid_decode_grow(&id, grow) != TALLY_SUCCESS)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "%s: the id %s made is unreadable: %s", fn,
                       tally_comm_rank_text(comm, *owner, who, sizeof who), tally_error_message());
  if (grow->nnew != nnew)
    return TALLY_ERROR(TALLY_ERR_MISMATCH,
                       "%s: the id was made (on %s) for growing by %d ranks, but every rank passes nnew %d", fn,
                       tally_comm_rank_text(comm, *owner, who, sizeof who), grow->nnew, nnew);
  for (int p = 0; p < comm->nranks; p++) {
    const unsigned char *rec = all + (size_t)p * GROW_RECORD;
    if (!(rec[4] & FLAG_PASSED) || !memcmp(rec + RECORD_PASSED, mine + RECORD_ID, TALLY_UNIQUE_ID_BYTES)) continue;
    struct tally_grow_id passed;
    tally_unique_id_t bytes;
    memcpy(&bytes, rec + RECORD_PASSED, sizeof bytes);
    tally_comm_rank_text(comm, p, who, sizeof who);
    if (tally_uid_decode_grow(&bytes, &passed) != TALLY_SUCCESS)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: %s passed an id that is no grow id: %s", fn, who,
                         tally_error_message());
    if (passed.parent_id != comm->comm_id)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "%s: %s passed an id made by tally_comm_grow_id on another communicator (%016llx, not "
                         "%016llx)",
                         fn, who, (unsigned long long)passed.parent_id, (unsigned long long)comm->comm_id);
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "%s: %s passed a stale id (an earlier tally_comm_grow_id's, or one a grow used up); the id to "
                       "pass is the latest one %s made, or NULL",
                       fn, who, tally_comm_rank_text(comm, *owner, who2, sizeof who2));
  }
  return TALLY_SUCCESS;
}

/* The owner gives its pending grow up after failure `r`: the newcomers that come hear why instead
 * of waiting. Returns `r` with its message. */
static tally_result_t abandon(tally_comm_t comm, tally_result_t r) {
  if (comm->grow_fd < 0) return r;
  char why[1024];
  snprintf(why, sizeof why, "%s", tally_error_message());
  struct tally_grow_id grow;
  if (tally_uid_decode_grow(&comm->grow_id, &grow) != TALLY_SUCCESS ||
      tally_bootstrap_refusing_root_start(comm->grow_fd, grow.job.secret, 0.9 * comm->cfg.timeout_s, grow.nnew, why) !=
          TALLY_SUCCESS)
    close(comm->grow_fd); /* then their connections are refused, which tells them too */
  comm->grow_fd = -1;
  return TALLY_ERROR(r, "%s", why);
}

/* `refused`: this rank's own argument error (its message in `refusal`), which it still takes the
 * allgather with, so that the others learn at once that the grow is off instead of waiting. */
static tally_result_t grow(tally_comm_t comm, int nnew, const tally_unique_id_t *id, tally_result_t refused,
                           const char *refusal, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_grow";
  int aborted_before = atomic_load(&comm->aborted);
  int n = comm->nranks;
  unsigned char mine[GROW_RECORD];
  memset(mine, 0, sizeof mine);
  tally_put_u32(mine, (uint32_t)nnew);
  if (comm->grow_fd >= 0) {
    mine[4] |= FLAG_OWNER;
    memcpy(mine + RECORD_ID, &comm->grow_id, TALLY_UNIQUE_ID_BYTES);
  }
  if (id) {
    mine[4] |= FLAG_PASSED;
    memcpy(mine + RECORD_PASSED, id, TALLY_UNIQUE_ID_BYTES);
  }
  unsigned char *all = malloc((size_t)n * GROW_RECORD);
  if (!all) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory for %d ranks", fn, n);
  tally_result_t r = tally_allgather(mine, all, GROW_RECORD, TALLY_UINT8, comm, NULL);
  if (r != TALLY_SUCCESS)
    r = TALLY_ERROR(r, "%s: agreeing on the grow over the communicator: %s", fn, tally_error_message());
  int owner = -1;
  struct tally_grow_id grown;
  if (r == TALLY_SUCCESS) r = verdict(comm, all, &owner, &grown);
  free(all);
  if (refused != TALLY_SUCCESS) r = TALLY_ERROR(refused, "%s", refusal);
  if (r != TALLY_SUCCESS) return abandon(comm, r);

  int size = n + nnew;
  struct tally_job_id job = grown.job;
  job.listening = 1;
  struct tally_comm *child;
  r = tally_comm_new(&child, size, comm->rank, &comm->cfg, job.secret);
  if (r != TALLY_SUCCESS) return abandon(comm, r);
  tally_comm_construction_begin(comm, child, aborted_before);
  struct tally_peer_info me;
  r = tally_comm_open(child, &me);
  pthread_t root_thread;
  int serving = 0;
  if (comm->rank == owner) {
    if (r == TALLY_SUCCESS) {
      /* The root gives up a little before the others, so that they hear why (and who is missing). */
      r = tally_bootstrap_grow_root_start(&job, comm->grow_fd, 0.9 * comm->cfg.timeout_s, comm->abort_fd, &root_thread);
      serving = r == TALLY_SUCCESS;
      comm->grow_fd = -1; /* the root took it over, or closed it */
    } else {
      close(comm->grow_fd); /* everyone's connection is refused: nobody waits for this rank */
      comm->grow_fd = -1;
    }
  }
  uint64_t deadline = tally_deadline_after(comm->cfg.timeout_s);
  if (r == TALLY_SUCCESS) {
    r = tally_bootstrap_join(&job, comm->rank, size, &me, deadline, comm->abort_fd, child->peers, &child->comm_id);
    if (r != TALLY_SUCCESS) {
      char who[128];
      r = TALLY_ERROR(r, "%s: joining the grown communicator of %d ranks through %s: %s%s", fn, size,
                      tally_comm_rank_text(comm, owner, who, sizeof who), tally_error_message(),
                      r == TALLY_ERR_TIMEOUT ? " (ranks numbered in the grown communicator: the newcomers are "
                                               "the ranks from the old size on, joining with tally_comm_join)"
                                             : "");
    }
  }
  if (serving) { /* the newcomers' answers go out before this rank goes on */
    char message[1024];
    snprintf(message, sizeof message, "%s", tally_error_message());
    pthread_join(root_thread, NULL);
    if (r != TALLY_SUCCESS) r = TALLY_ERROR(r, "%s", message);
  }
  TALLY_CHECK(tally_comm_complete(child, NULL, comm, deadline, r, fn)); /* newcomers may be on new hosts: calibrated */
  TLOG_INFO(TALLY_SUBSYS_INIT, "%s: rank %d of %d of communicator %016llx is rank %d of %d of %016llx", fn, comm->rank,
            n, (unsigned long long)comm->comm_id, child->rank, child->nranks, (unsigned long long)child->comm_id);
  *newcomm = child;
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_grow(tally_comm_t comm, int nnew, const tally_unique_id_t *id, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_grow";
  TALLY_CHECK(tally_comm_check_derive(fn, comm, newcomm));
  char refusal[1024] = "";
  tally_result_t refused = check_nnew(fn, comm, nnew);
  if (refused != TALLY_SUCCESS) snprintf(refusal, sizeof refusal, "%s", tally_error_message());
  tally_result_t r = grow(comm, nnew, id, refused, refusal, newcomm);
  return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
}

tally_result_t tally_comm_join(const tally_unique_id_t *id, int index, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_join";
  if (!newcomm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: newcomm is NULL", fn);
  *newcomm = NULL;
  if (!id) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: id is NULL", fn);
  struct tally_grow_id grow;
  tally_result_t r = tally_uid_decode_grow(id, &grow);
  if (r != TALLY_SUCCESS) return TALLY_ERROR(r, "%s: %s", fn, tally_error_message());
  if (index < 0 || index >= grow.nnew)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "%s: index %d is outside 0..%d (the id grows a communicator of %d ranks by %d)", fn, index,
                       grow.nnew - 1, grow.old_size, grow.nnew);
  struct tally_config cfg;
  TALLY_CHECK(tally_config_load(&cfg));
  int size = grow.old_size + grow.nnew, rank = grow.old_size + index;
  tally_log_set_rank(rank);
  struct tally_job_id job = grow.job;
  job.listening = 1;
  struct tally_comm *c;
  TALLY_CHECK(tally_comm_new(&c, size, rank, &cfg, job.secret));
  struct tally_peer_info me;
  r = tally_comm_open(c, &me);
  uint64_t deadline = tally_deadline_after(cfg.timeout_s);
  if (r == TALLY_SUCCESS) {
    r = tally_bootstrap_join(&job, rank, size, &me, deadline, c->abort_fd, c->peers, &c->comm_id);
    if (r != TALLY_SUCCESS)
      r = TALLY_ERROR(r, "%s: joining as rank %d of %d: %s%s", fn, rank, size, tally_error_message(),
                      r == TALLY_ERR_REMOTE ? " (the id is stale: its grow is over or failed, or the rank that made "
                                              "it is gone)"
                                            : "");
  }
  TALLY_CHECK(tally_comm_complete(c, NULL, NULL, deadline, r, fn));
  *newcomm = c;
  return TALLY_SUCCESS;
}
