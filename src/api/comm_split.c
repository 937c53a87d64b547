/* Communicators made from another one, without a unique id of their own: tally_comm_split,
 * tally_comm_dup, tally_comm_shrink, and tally_comm_failed_ranks, which tells shrink's callers
 * whom to exclude. A child is a full communicator with its own endpoints, connections, board and
 * error state, built by the same steps as any other (communicator.h); it shares nothing with its
 * parent at run time, so either may be destroyed first and both used from different threads. What
 * carries over is what the parent knows: the secret that authenticates every connection, the
 * configuration (TALLY_TIMEOUT and the rest, as the parent was given them) and the link costs the
 * parent's ranks agreed on (no calibration). Only the bootstrap differs:
 *
 * split (collective over the parent, which must be healthy): two allgathers on the parent replace
 * the bootstrap root. The first carries every rank's (color, key, nonce), from which each rank
 * works out its color's members, ordered by (key, parent rank), its own rank among them, and the
 * child's id (the nonce of the child's rank 0; random, so that the shared-memory segments and
 * boards of different children never collide). Each rank then opens the child's endpoints for that
 * rank number and the second allgather carries every rank's bootstrap entry (addresses, topology,
 * recovery port): the table a bootstrap root would have sent. A rank that could not open its
 * endpoints sends an empty entry, so that the others fail at once naming it instead of waiting.
 *
 * shrink (the parent is usually in error state: its connections to the dead ranks, and through
 * the failure its other connections, are unusable): the survivors cannot use the parent's
 * collectives, so they bootstrap the child through the ordinary bootstrap code, with a root that
 * needs no new unique id. Every rank of every communicator holds a recovery listener from the
 * start (communicator.c: a listening socket, nothing accepted on it, its port published in the
 * bootstrap entry next to the TCP address), so every survivor already knows where any other rank
 * could serve as a root. The root is the lowest rank not excluded, which every survivor computes
 * alike from its exclude list, and it serves on a dup of its recovery listener
 * (tally_bootstrap_shrink_root_start) while joining like everyone else; connections are
 * authenticated with the parent's secret. Each join carries a digest of (parent id, size, the
 * exclude list): a root that sees another digest answers every survivor with TALLY_ERR_MISMATCH.
 * Excluded ranks are never contacted, and those that are alive are never waited for. While the
 * root waits it probes the recovery listeners of the survivors that have not joined: one that
 * refuses connections belongs to a dead process, and once the living have joined the root answers
 * them with TALLY_ERR_REMOTE naming it (bootstrap.h). Survivors that reach no root (it died) get
 * TALLY_ERR_REMOTE naming it. Every wait is bounded by the parent's TALLY_TIMEOUT.
 *
 * Limits: survivors whose lists disagree on the lowest survivor pick different roots, and then
 * time out (TALLY_ERR_TIMEOUT, the message saying the lists may differ) instead of reporting the
 * mismatch; a tally_comm_abort of the parent does not interrupt a split or shrink that is past the
 * parent's allgathers (their own waits still end at TALLY_TIMEOUT). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "bootstrap/bootstrap.h"
#include "comm/comm.h"
#include "communicator.h"
#include "core/bytes.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "dispatch/dispatch.h"
#include "group.h"
#include "registry.h"

enum { SPLIT_RECORD = 16 }; /* color, key, nonce */

struct member {
  int rank; /* in the parent */
  int key;
};

static int by_key_then_rank(const void *a, const void *b) {
  const struct member *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return (x->rank > y->rank) - (x->rank < y->rank);
}

/* The second allgather: every parent rank's entry (zeros from ranks without one); the members'
 * entries become the child's peers. */
static tally_result_t exchange_entries(const char *fn, tally_comm_t parent, struct tally_comm *child,
                                       const struct tally_peer_info *me, const struct member *members) {
  unsigned char mine[TALLY_BOOTSTRAP_ENTRY_BYTES];
  memset(mine, 0, sizeof mine);
  if (child && me) tally_bootstrap_encode_entry(me, mine);
  unsigned char *all = malloc((size_t)parent->nranks * TALLY_BOOTSTRAP_ENTRY_BYTES);
  if (!all) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory for %d addresses", fn, parent->nranks);
  tally_result_t r = tally_allgather(mine, all, sizeof mine, TALLY_UINT8, parent, NULL);
  if (r != TALLY_SUCCESS) r = TALLY_ERROR(r, "%s: exchanging addresses over the parent: %s", fn, tally_error_message());
  for (int i = 0; r == TALLY_SUCCESS && child && i < child->nranks; i++) {
    int from = members[i].rank;
    if (tally_bootstrap_parse_entry(all + (size_t)from * TALLY_BOOTSTRAP_ENTRY_BYTES, &child->peers[i]) != 0) {
      char who[128];
      r = TALLY_ERROR(TALLY_ERR_REMOTE,
                      "%s: %s could not open its endpoints for the new communicator (see its log), or sent a "
                      "malformed entry",
                      fn, tally_comm_rank_text(parent, from, who, sizeof who));
      tally_error_blame(from);
    }
  }
  free(all);
  return r;
}

static tally_result_t split(const char *fn, tally_comm_t parent, int color, int key, tally_comm_t *newcomm) {
  uint64_t nonce;
  tally_random_bytes(&nonce, sizeof nonce);
  unsigned char mine[SPLIT_RECORD];
  tally_put_u32(mine, (uint32_t)color);
  tally_put_u32(mine + 4, (uint32_t)key);
  tally_put_u64(mine + 8, nonce);
  int n = parent->nranks;
  unsigned char *all = malloc((size_t)n * SPLIT_RECORD);
  struct member *members = malloc((size_t)n * sizeof *members);
  if (!all || !members) {
    free(all);
    free(members);
    return tally_coll_remember(parent, TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory for %d ranks", fn, n));
  }
  tally_result_t r = tally_allgather(mine, all, SPLIT_RECORD, TALLY_UINT8, parent, NULL);
  if (r != TALLY_SUCCESS) {
    r = TALLY_ERROR(r, "%s: exchanging colors and keys over the parent: %s", fn, tally_error_message());
    free(all);
    free(members);
    return tally_coll_remember(parent, r);
  }
  int nmembers = 0, index = -1;
  for (int p = 0; p < n; p++) {
    const unsigned char *rec = all + (size_t)p * SPLIT_RECORD;
    if ((int)tally_get_u32(rec) != color || color == TALLY_SPLIT_NOCOLOR) continue;
    members[nmembers++] = (struct member){p, (int)tally_get_u32(rec + 4)};
  }
  qsort(members, (size_t)nmembers, sizeof *members, by_key_then_rank);
  for (int i = 0; i < nmembers; i++)
    if (members[i].rank == parent->rank) index = i;
  struct tally_comm *child = NULL;
  struct tally_peer_info me;
  tally_result_t local = TALLY_SUCCESS; /* this rank's own failure, told to the others by an empty entry */
  if (index >= 0) {
    local = tally_comm_new(&child, nmembers, index, &parent->cfg, parent->secret);
    if (local == TALLY_SUCCESS) {
      child->comm_id = tally_get_u64(all + (size_t)members[0].rank * SPLIT_RECORD + 8);
      local = tally_comm_open(child, &me);
    }
  }
  char local_message[1024];
  snprintf(local_message, sizeof local_message, "%s", tally_error_message());
  uint64_t deadline = tally_deadline_after(parent->cfg.timeout_s);
  r = exchange_entries(fn, parent, local == TALLY_SUCCESS ? child : NULL, &me, members);
  if (local != TALLY_SUCCESS) r = TALLY_ERROR(local, "%s: %s", fn, local_message);
  r = tally_comm_complete(child, parent, deadline, r, fn);
  free(all);
  free(members);
  if (r != TALLY_SUCCESS) return tally_coll_remember(parent, r);
  if (child)
    TLOG_INFO(TALLY_SUBSYS_INIT, "%s: rank %d of communicator %016llx is rank %d of %d of %016llx (color %d)", fn,
              parent->rank, (unsigned long long)parent->comm_id, child->rank, child->nranks,
              (unsigned long long)child->comm_id, color);
  *newcomm = child;
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_split(tally_comm_t comm, int color, int key, tally_comm_t *newcomm) {
  TALLY_CHECK(tally_comm_check_derive("tally_comm_split", comm, newcomm));
  if (color < TALLY_SPLIT_NOCOLOR)
    return tally_coll_remember(comm, TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                                                 "tally_comm_split: color %d is negative; pass 0 or more, or "
                                                 "TALLY_SPLIT_NOCOLOR (-1) for no new communicator",
                                                 color));
  return split("tally_comm_split", comm, color, key, newcomm);
}

tally_result_t tally_comm_dup(tally_comm_t comm, tally_comm_t *newcomm) {
  TALLY_CHECK(tally_comm_check_derive("tally_comm_dup", comm, newcomm));
  return split("tally_comm_dup", comm, 0, comm->rank, newcomm);
}

tally_result_t tally_comm_failed_ranks(tally_comm_t comm, int *ranks, int max, int *nfailed) {
  static const char fn[] = "tally_comm_failed_ranks";
  if (!nfailed) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: nfailed is NULL", fn);
  *nfailed = 0;
  TALLY_CHECK(tally_call_check_comm(fn, comm));
  if (max < 0 || (!ranks && max > 0))
    return tally_coll_remember(
        comm, TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                          "%s: ranks is %s with max %d; pass room for max ranks (max 0: count only)", fn,
                          ranks ? "given" : "NULL", max));
  *nfailed = tally_comm_failed_list(comm, ranks, max);
  return TALLY_SUCCESS;
}

/* --- shrink ----------------------------------------------------------------------------------- */

/* FNV-1a over the parent's id, size and the excluded ranks: what every survivor's join carries. */
static uint64_t shrink_digest(const struct tally_comm *parent, const unsigned char *gone) {
  uint64_t h = 0xcbf29ce484222325ull;
  unsigned char bytes[12];
  tally_put_u64(bytes, parent->comm_id);
  tally_put_u32(bytes + 8, (uint32_t)parent->nranks);
  for (size_t i = 0; i < sizeof bytes; i++) h = (h ^ bytes[i]) * 0x100000001b3ull;
  for (int r = 0; r < parent->nranks; r++) h = (h ^ gone[r]) * 0x100000001b3ull;
  return h ? h : 1; /* 0 means "not a shrink" */
}

/* Checks the list and marks the excluded ranks in `gone`. */
static tally_result_t read_exclude(tally_comm_t comm, const int *exclude, int nexclude, unsigned char *gone) {
  static const char fn[] = "tally_comm_shrink";
  if (nexclude < 0 || (!exclude && nexclude > 0))
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: exclude is %s with nexclude %d", fn, exclude ? "given" : "NULL",
                       nexclude);
  for (int i = 0; i < nexclude; i++) {
    if (exclude[i] < 0 || exclude[i] >= comm->nranks)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: exclude[%d] is %d, outside the communicator's ranks 0..%d",
                         fn, i, exclude[i], comm->nranks - 1);
    if (exclude[i] == comm->rank)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "%s: exclude[%d] is this rank (%d): a rank cannot exclude itself; a rank that leaves simply "
                         "does not call tally_comm_shrink",
                         fn, i, comm->rank);
    gone[exclude[i]] = 1;
  }
  return TALLY_SUCCESS;
}

/* After a shrink's root gave up waiting or found survivors dead: the survivors it names as missing
 * ("missing: 3 5", in the numbering of the survivors) are marked failed in the parent, so that
 * tally_comm_failed_ranks offers the list to shrink with next. Returns the first one's parent rank,
 * or -1. */
static int mark_missing(struct tally_comm *parent, const unsigned char *gone, const char *message) {
  const char *p = strstr(message, "missing:");
  int first = -1;
  if (!p) return first;
  p += strlen("missing:");
  for (;;) {
    char *end;
    long k = strtol(p, &end, 10);
    if (end == p) return first;
    p = end;
    for (int r = 0, index = 0; r < parent->nranks; r++) {
      if (gone[r]) continue;
      if (index++ != k || r == parent->rank) continue;
      atomic_store(&parent->failed[r], 1);
      if (first < 0) first = r;
    }
  }
}

/* Builds the child once the arguments are checked and the parent is claimed. */
static tally_result_t shrink(tally_comm_t parent, const unsigned char *gone, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_shrink";
  int nsurvivors = 0, newrank = 0, root = -1;
  for (int r = 0; r < parent->nranks; r++) {
    if (gone[r]) continue;
    if (root < 0) root = r;
    if (r == parent->rank) newrank = nsurvivors;
    nsurvivors++;
  }
  /* The recovery listeners are open from the start: a refused connection means a dead rank. */
  struct tally_job_id job = {.root = parent->peers[root].addr, .authenticated = 1, .listening = 1};
  memcpy(job.secret, parent->secret, sizeof job.secret);
  tally_net_set_port(&job.root, parent->peers[root].recovery_port);
  job.shrink_digest = shrink_digest(parent, gone);
  struct tally_comm *child;
  TALLY_CHECK(tally_comm_new(&child, nsurvivors, newrank, &parent->cfg, parent->secret));
  struct tally_peer_info me;
  tally_result_t r = tally_comm_open(child, &me);
  pthread_t root_thread;
  int serving = 0;
  if (r == TALLY_SUCCESS && parent->rank == root) {
    /* The root gives up a little before the others do, so that they hear why (and which survivor
     * is missing) and its thread is gone before they try again. */
    struct tally_sockaddr *survivors = calloc((size_t)nsurvivors, sizeof *survivors);
    for (int p = 0, k = 0; survivors && p < parent->nranks; p++) {
      if (gone[p]) continue;
      if (p != parent->rank) {
        survivors[k] = parent->peers[p].addr;
        tally_net_set_port(&survivors[k], parent->peers[p].recovery_port);
      }
      k++;
    }
    int fd = survivors ? dup(parent->recovery_fd) : -1;
    r = fd < 0 ? TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory or dup of the recovery listener failed")
               : tally_bootstrap_shrink_root_start(&job, fd, 0.9 * parent->cfg.timeout_s, nsurvivors, survivors,
                                                   &root_thread);
    free(survivors);
    serving = r == TALLY_SUCCESS;
  }
  uint64_t deadline = tally_deadline_after(parent->cfg.timeout_s);
  if (r == TALLY_SUCCESS) {
    r = tally_bootstrap_join(&job, newrank, nsurvivors, &me, deadline, child->abort_fd, child->peers, &child->comm_id);
    if (r != TALLY_SUCCESS) {
      char who[128];
      int dead =
          r == TALLY_ERR_TIMEOUT || r == TALLY_ERR_REMOTE ? mark_missing(parent, gone, tally_error_message()) : -1;
      if (dead >= 0) {
        tally_error_blame(dead);
        r = TALLY_ERROR(r, "%s: %s (the first of them is %s)%s", fn, tally_error_message(),
                        tally_comm_rank_text(parent, dead, who, sizeof who),
                        r == TALLY_ERR_TIMEOUT ? "; tally_comm_failed_ranks now names the missing ones; if every "
                                                 "survivor called, their lists may differ"
                                               : "; tally_comm_failed_ranks now names them");
      } else {
        tally_comm_rank_text(parent, root, who, sizeof who);
        r = TALLY_ERROR(r, "%s: agreeing with the other survivors through %s, the lowest rank not excluded: %s", fn,
                        who, tally_error_message());
        if (r == TALLY_ERR_REMOTE && root != parent->rank) {
          tally_error_blame(root);
          atomic_store(&parent->failed[root], 1);
        }
      }
    }
  }
  if (serving) { /* the others' answers (a mismatch: every survivor's) go out before this rank goes on */
    char message[1024];
    snprintf(message, sizeof message, "%s", tally_error_message());
    pthread_join(root_thread, NULL);
    if (r != TALLY_SUCCESS) r = TALLY_ERROR(r, "%s", message);
  }
  TALLY_CHECK(tally_comm_complete(child, parent, deadline, r, fn));
  TLOG_INFO(TALLY_SUBSYS_INIT, "%s: rank %d of %d of communicator %016llx is rank %d of %d of %016llx", fn,
            parent->rank, parent->nranks, (unsigned long long)parent->comm_id, child->rank, child->nranks,
            (unsigned long long)child->comm_id);
  *newcomm = child;
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_shrink(tally_comm_t comm, const int *exclude, int nexclude, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_shrink";
  TALLY_CHECK(tally_comm_check_derive(fn, comm, newcomm));
  unsigned char *gone = calloc((size_t)comm->nranks, 1);
  if (!gone) return tally_coll_remember(comm, TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: out of memory", fn));
  tally_result_t r = read_exclude(comm, exclude, nexclude, gone);
  if (r == TALLY_SUCCESS && atomic_exchange(&comm->busy, 1))
    r = TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                    "%s: a collective is still running on this communicator in another thread; call tally_comm_abort "
                    "and shrink once it has returned",
                    fn);
  else if (r == TALLY_SUCCESS) {
    r = shrink(comm, gone, newcomm);
    atomic_store(&comm->busy, 0);
  }
  free(gone);
  return r == TALLY_SUCCESS ? r : tally_coll_remember(comm, r);
}
