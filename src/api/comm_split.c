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
 * could serve. The root is the lowest rank not excluded, which every survivor computes from its
 * exclude list; connections are authenticated with the parent's secret. Each join carries a digest
 * of (parent id, size, the exclude list), the joining rank's number, its root and its attempt
 * (which of its shrinks of the parent this is). During the shrink every survivor serves on a dup
 * of its recovery listener (tally_bootstrap_shrink_serve, bootstrap.h): the root as the bootstrap
 * root of its list's survivors, every other survivor as a responder. That makes every
 * disagreement end in TALLY_ERR_MISMATCH on every survivor it reaches, promptly:
 *   - same root, another list: the root sees another digest and answers every join with the
 *     mismatch, naming the two lists;
 *   - another lowest survivor: a survivor that takes a rank for the root which is no root in its
 *     own list reaches that rank's responder, which answers with the mismatch and forwards the
 *     join to its own root (which answers the others); and the root probes the survivors of its
 *     list that have not joined after 0.2 s by sending its own join to their recovery listeners,
 *     where their responders (or their own roots) answer with the mismatch. A responder that saw a
 *     mismatch and whose root is not the one that told it ends its own join with the mismatch, as
 *     its root may be no root at all and never answer.
 * Excluded ranks are never contacted, and those that are alive are never waited for. A probe that
 * is refused means a dead survivor: once the living have joined, the root answers them with
 * TALLY_ERR_REMOTE naming it (bootstrap.h). Survivors that reach no root (it died) get
 * TALLY_ERR_REMOTE naming it. A join that reaches a rank still in an earlier shrink of the parent
 * is told to come again. Every wait is bounded by the parent's TALLY_TIMEOUT.
 *
 * Aborts: from the child's creation until it is complete, tally_comm_abort of the parent aborts
 * the child in construction too (communicator.h), so every wait of split, dup, shrink and grow
 * (the parent's allgathers, the bootstrap join, the root's and the responders' service, the
 * child's links and board) ends with TALLY_ERR_ABORTED.
 *
 * Limit: a survivor that every other survivor excludes (a live rank that calls shrink although
 * the others left it out) hears of the disagreement only while the others are still shrinking
 * (the root's probe of them); once they have their communicator it waits for TALLY_TIMEOUT. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "bootstrap/auth_proto.h"
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

/* A test hook, for tests/test_split.c's abort test only: TALLY_TEST_STALL_SPLIT=RANK makes that rank
 * of the parent stop taking part in a split right after the parent's allgathers, as a rank that
 * hangs there would, until its own child is aborted or TALLY_TIMEOUT passes. Not a setting (the
 * README does not list it): nothing but that test sets it. */
static tally_result_t test_stall_after_allgathers(const struct tally_comm *parent, struct tally_comm *child) {
  const char *stall = getenv("TALLY_TEST_STALL_SPLIT");
  if (!stall || !child || atoi(stall) != parent->rank) return TALLY_SUCCESS;
  struct pollfd ready = {.fd = child->abort_fd, .events = POLLIN};
  int aborted = poll(&ready, 1, (int)(parent->cfg.timeout_s * 1000)) > 0;
  return TALLY_ERROR(aborted ? TALLY_ERR_ABORTED : TALLY_ERR_TIMEOUT,
                     "TALLY_TEST_STALL_SPLIT: this rank stalled after the parent's allgathers (a test) until %s",
                     aborted ? "it was aborted (tally_comm_abort)" : "TALLY_TIMEOUT");
}

static tally_result_t split(const char *fn, tally_comm_t parent, int color, int key, tally_comm_t *newcomm) {
  int aborted_before = atomic_load(&parent->aborted);
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
    tally_comm_construction_begin(parent, child, aborted_before);
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
  if (r == TALLY_SUCCESS) r = test_stall_after_allgathers(parent, child);
  r = tally_comm_complete(child, parent, parent, deadline, r, fn);
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

/* This rank's server during the shrink (bootstrap.h): the root when it is the lowest survivor of
 * its list, else a responder, on a dup of its recovery listener. `stop_fd` ends it. */
static tally_result_t start_server(struct tally_comm *parent, const unsigned char *gone, const struct tally_job_id *job,
                                   const struct tally_peer_info *me, int newrank, int nsurvivors, int attempt,
                                   struct tally_shrink_verdict *verdict, int stop_fd, pthread_t *thread) {
  int *survivors = malloc((size_t)nsurvivors * sizeof *survivors);
  struct tally_sockaddr *listeners = calloc((size_t)nsurvivors, sizeof *listeners);
  char excluded[64] = "";
  for (int p = 0, k = 0; survivors && listeners && p < parent->nranks; p++) {
    if (gone[p]) {
      size_t len = strlen(excluded);
      if (len < sizeof excluded - 12) snprintf(excluded + len, sizeof excluded - len, "%s%d", len ? " " : "", p);
      continue;
    }
    survivors[k] = p;
    tally_comm_recovery_address(parent, p, &listeners[k]); /* every rank opens one at init */
    k++;
  }
  if (!excluded[0]) snprintf(excluded, sizeof excluded, "nobody");
  unsigned char join[TALLY_AUTH_PAYLOAD_BYTES];
  struct tally_peer_info mine = *me;
  mine.shrink_digest = job->shrink_digest;
  tally_bootstrap_encode_join(newrank, nsurvivors, &mine, join);
  struct tally_shrink_view view = {parent->rank, nsurvivors, survivors, listeners, join, excluded, attempt, verdict};
  int fd = survivors && listeners ? dup(parent->recovery_fd) : -1;
  tally_result_t r = fd < 0
                         ? TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory or dup of the recovery listener failed")
                         : tally_bootstrap_shrink_serve(job, fd, 0.9 * parent->cfg.timeout_s, &view, stop_fd, thread);
  free(survivors);
  free(listeners);
  return r;
}

/* This rank's root refused the connection: it is dead, or it is alive but has left the shrink (it
 * was no root in its own list, heard of a disagreement and returned). In the second case another
 * root whose list holds this rank probes it within PROBE_WINDOW_MS and this rank's responder hears
 * of the disagreement (struct tally_shrink_verdict): wait that long for it, so that a survivor that
 * came late still gets TALLY_ERR_MISMATCH. Returns ABORTED when it came (or an abort), else `r`. */
static tally_result_t await_verdict(tally_result_t r, int abort_fd) {
  enum { PROBE_WINDOW_MS = 500 }; /* bootstrap.c probes every 200 ms, each for at most 100 */
  char message[1024];
  snprintf(message, sizeof message, "%s", tally_error_message());
  struct pollfd ready = {.fd = abort_fd, .events = POLLIN};
  if (poll(&ready, 1, PROBE_WINDOW_MS) > 0) return TALLY_ERR_ABORTED;
  return TALLY_ERROR(r, "%s", message);
}

/* Builds the child once the arguments are checked and the parent is claimed. */
static tally_result_t shrink(tally_comm_t parent, const unsigned char *gone, tally_comm_t *newcomm) {
  static const char fn[] = "tally_comm_shrink";
  int aborted_before = atomic_load(&parent->aborted), attempt = parent->shrink_attempts++;
  int nsurvivors = 0, newrank = 0, root = -1;
  for (int r = 0; r < parent->nranks; r++) {
    if (gone[r]) continue;
    if (root < 0) root = r;
    if (r == parent->rank) newrank = nsurvivors;
    nsurvivors++;
  }
  /* The recovery listeners are open from the start: a refused connection means a dead rank. */
  struct tally_job_id job = {.authenticated = 1, .listening = 1};
  tally_comm_recovery_address(parent, root, &job.root);
  memcpy(job.secret, parent->secret, sizeof job.secret);
  job.shrink_digest = shrink_digest(parent, gone);
  struct tally_comm *child;
  TALLY_CHECK(tally_comm_new(&child, nsurvivors, newrank, &parent->cfg, parent->secret));
  tally_comm_construction_begin(parent, child, aborted_before);
  struct tally_peer_info me;
  tally_result_t r = tally_comm_open(child, &me);
  me.shrink_rank = parent->rank;
  me.shrink_root = root;
  me.shrink_attempt = attempt;
  /* The root gives up a little before the others do, so that they hear why (and which survivor is
   * missing) and its thread is gone before they try again; it stops early when this rank is aborted.
   * A responder serves until this rank has its answer. */
  int stop_fd = root == parent->rank ? child->abort_fd : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pthread_t server;
  int serving = 0;
  if (r == TALLY_SUCCESS && stop_fd < 0) r = TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: eventfd: %s", fn, strerror(errno));
  struct tally_shrink_verdict verdict = {.lock = PTHREAD_MUTEX_INITIALIZER, .joining = 1, .abort_fd = child->abort_fd};
  if (r == TALLY_SUCCESS) {
    r = start_server(parent, gone, &job, &me, newrank, nsurvivors, attempt, root == parent->rank ? NULL : &verdict,
                     stop_fd, &server);
    serving = r == TALLY_SUCCESS;
  }
  uint64_t deadline = tally_deadline_after(parent->cfg.timeout_s);
  if (r == TALLY_SUCCESS) {
    r = tally_bootstrap_join(&job, newrank, nsurvivors, &me, deadline, child->abort_fd, child->peers, &child->comm_id);
    if (r == TALLY_ERR_REMOTE && root != parent->rank && !strstr(tally_error_message(), "missing:"))
      r = await_verdict(r, child->abort_fd);
    pthread_mutex_lock(&verdict.lock);
    verdict.joining = 0;
    pthread_mutex_unlock(&verdict.lock);
    if (r == TALLY_ERR_ABORTED && verdict.mismatch[0]) /* this rank's responder saw the disagreement */
      r = TALLY_ERROR(TALLY_ERR_MISMATCH, "%s", verdict.mismatch);
    if (r != TALLY_SUCCESS) {
      char who[128];
      int dead =
          r == TALLY_ERR_TIMEOUT || r == TALLY_ERR_REMOTE ? mark_missing(parent, gone, tally_error_message()) : -1;
      if (r == TALLY_ERR_MISMATCH) {
        r = TALLY_ERROR(r, "%s: %s", fn, tally_error_message());
      } else if (r == TALLY_ERR_ABORTED) {
        r = TALLY_ERROR(r, "%s: aborted (tally_comm_abort) while agreeing with the other survivors: %s", fn,
                        tally_error_message());
      } else if (dead >= 0) {
        tally_error_blame(dead);
        r = TALLY_ERROR(r, "%s: %s (the first of them is %s)%s", fn, tally_error_message(),
                        tally_comm_rank_text(parent, dead, who, sizeof who),
                        r == TALLY_ERR_TIMEOUT ? "; tally_comm_failed_ranks now names the missing ones"
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
  if (serving) { /* the root's answers (a mismatch: every survivor's) go out before this rank goes on */
    char message[1024];
    snprintf(message, sizeof message, "%s", tally_error_message());
    if (root != parent->rank) {
      uint64_t one = 1;
      if (write(stop_fd, &one, sizeof one) < 0)
        TLOG_WARN(TALLY_SUBSYS_INIT, "%s: eventfd write: %s", fn, strerror(errno));
    }
    pthread_join(server, NULL);
    if (r != TALLY_SUCCESS) r = TALLY_ERROR(r, "%s", message);
  }
  if (root != parent->rank && stop_fd >= 0) close(stop_fd);
  TALLY_CHECK(tally_comm_complete(child, parent, parent, deadline, r, fn));
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
