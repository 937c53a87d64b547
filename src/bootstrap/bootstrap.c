/* Bootstrap root and join: the root's thread and the rank's side of the exchange, with their I/O,
 * and the servers every survivor runs during tally_comm_shrink (a root, or a responder that answers
 * the root's probes and misdirected joins). The messages themselves are encoded and checked in
 * bootstrap_wire.c. */
#define _GNU_SOURCE
#include "bootstrap.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "bootstrap_wire.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

enum { FAIL_TEXT = TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES };

/* A failure text that starts so means the joins disagreed (a shrink's exclude lists): the ranks
 * return TALLY_ERR_MISMATCH rather than TIMEOUT. */
static const char mismatch_prefix[] = "the ranks disagree: ";
/* And so when the root's rank was aborted (a grow's): TALLY_ERR_REMOTE. */
static const char aborted_prefix[] = "the rank serving it was aborted";
/* And so when a shrink's server is still in an earlier shrink than the joining rank: it joins again. */
static const char retry_prefix[] = "retry: ";
/* And so when a shrink's root found a survivor dead before it joined: TALLY_ERR_REMOTE, with the
 * text after the prefix. */
static const char died_prefix[] = "a survivor died: ";

/* A survivor's server during tally_comm_shrink (bootstrap.h): the root of its list's survivors, or
 * a responder that answers probes and misdirected joins. */
enum survivor_state { OPEN, JOINED, ANSWERED, DEAD }; /* at the root: JOINED and ANSWERED were answered */
struct shrink {
  int responder; /* not the root: answers and forwards only */
  int self, nsurvivors;
  int *survivors;                               /* [nsurvivors]: their numbers in the communicator being shrunk */
  struct tally_sockaddr *listeners;             /* [nsurvivors]: their recovery listeners ([0]: the root's) */
  unsigned char join[TALLY_AUTH_PAYLOAD_BYTES]; /* this rank's join: what its probes and nothing else carry */
  char excluded[64];                            /* its exclude list in words */
  int attempt;                                  /* which of this rank's shrinks of the communicator, modulo 128 */
  struct tally_shrink_verdict *verdict;         /* a responder's: its caller's, valid until the thread is joined */
  unsigned char *state;                         /* the root's: [nsurvivors] enum survivor_state */
  int ndead;
  uint64_t next_probe_ns;
};

struct root {
  struct tally_job_id job;
  int listen_fd;
  double timeout_s;
  int nranks; /* set by the first join (a shrink's root: from the start), 0 before */
  int want;   /* connections to accept: 1 until the first join says how many */
  int joined;
  int *fds;                 /* per rank, -1 until it joins */
  unsigned char *entries;   /* per rank: its checked entry, re-encoded (bootstrap_wire.h) */
  int expect;               /* a refusing root: how many joins to answer */
  int kept;                 /* connections admitted (joined, or answered with a failure) */
  char mismatch[FAIL_TEXT]; /* "" until the ranks disagree (a shrink), or a refusing root's answer */
  int refusing;             /* a grow's root that admits nobody: every join is answered with `mismatch` */
  int abort_fd;             /* readable once the communicator it serves from is aborted; else -1 */
  struct shrink *shrink;    /* a shrink's server, else NULL */
};

/* Sends one rank the failure `text` in a reply for its `nranks`, and closes its connection. */
static void refuse(int fd, uint32_t nranks, const char *text, double timeout_s) {
  size_t len = tally_bootstrap_reply_bytes((int)nranks, 1);
  unsigned char *msg = calloc(1, len);
  if (msg) {
    tally_bootstrap_encode_reply(msg, (int)nranks, 0, NULL, text);
    if (tally_net_write_all(fd, msg, len, tally_deadline_after(timeout_s), -1) != TALLY_SUCCESS)
      TLOG_WARN(TALLY_SUBSYS_BOOT, "root: could not tell a rank why it cannot join: %s", tally_error_message());
  }
  free(msg);
  close(fd);
}

static int root_admit(void *ctx, int fd, const unsigned char *payload, const char *from, char *why, size_t whylen) {
  struct root *root = ctx;
  uint32_t rank, nranks;
  struct tally_peer_info info;
  if (tally_bootstrap_parse_join(payload, &rank, &nranks, &info, why, whylen) != 0) return 0;
  if (root->refusing) {
    refuse(fd, nranks, root->mismatch, root->timeout_s);
    root->kept++;
    return 1;
  }
  if (info.shrink_digest) {
    snprintf(why, whylen, "a tally_comm_shrink's join reached a communicator's bootstrap root");
    return 0;
  }
  if (root->nranks == 0) {
    root->fds = malloc(nranks * sizeof *root->fds);
    root->entries = calloc(nranks, TALLY_BOOTSTRAP_ENTRY_BYTES);
    if (!root->fds || !root->entries) {
      snprintf(why, whylen, "the root is out of memory for %u ranks", nranks);
      return 0;
    }
    for (uint32_t i = 0; i < nranks; i++) root->fds[i] = -1;
    root->nranks = (int)nranks;
    root->want = (int)nranks;
  }
  if ((int)nranks != root->nranks) {
    snprintf(why, whylen,
             "rank %u says the job has %u ranks but earlier ranks said %d: pass every rank the same nranks", rank,
             nranks, root->nranks);
    return 0;
  }
  if (root->fds[rank] >= 0) {
    snprintf(why, whylen, "rank %u joined twice: pass every process a different rank", rank);
    return 0;
  }
  root->fds[rank] = fd;
  root->kept++;
  tally_bootstrap_encode_entry(&info, root->entries + (size_t)rank * TALLY_BOOTSTRAP_ENTRY_BYTES);
  root->joined++;
  TLOG_TRACE(TALLY_SUBSYS_BOOT, "root: rank %u of %u joined from %s", rank, nranks, from);
  return 1;
}

/* Sends every joined rank either the table or the reason the job cannot start. */
static void root_reply(struct root *root, const char *failure) {
  size_t len = tally_bootstrap_reply_bytes(root->nranks, failure != NULL);
  unsigned char *msg = calloc(1, len);
  if (!msg) return;
  uint64_t comm_id;
  tally_random_bytes(&comm_id, sizeof comm_id);
  tally_bootstrap_encode_reply(msg, root->nranks, comm_id, root->entries, failure);
  uint64_t deadline = tally_deadline_after(root->timeout_s);
  /* Rank 0 last: the root usually lives in rank 0's process, which may exit as soon as it has its
   * answer (an init error, say), and must not take the others' answers down with it. */
  for (int r = root->nranks - 1; r >= 0; r--) {
    if (root->fds[r] < 0) continue;
    if (tally_net_write_all(root->fds[r], msg, len, deadline, -1) != TALLY_SUCCESS)
      TLOG_WARN(TALLY_SUBSYS_BOOT, "root: could not send the address table to rank %d: %s", r, tally_error_message());
    close(root->fds[r]);
  }
  free(msg);
}

/* --- a shrink's servers ----------------------------------------------------------------------- */

enum { PROBE_EVERY_MS = 200, PROBE_MS = 100, FORWARD_MS = 500 };

/* 1 when attempt `theirs` comes after `mine` (both modulo 128), -1 when before, 0 when the same. */
static int attempt_order(int theirs, int mine) {
  int ahead = (theirs - mine) & TALLY_SHRINK_ATTEMPT_MASK;
  return ahead == 0 ? 0 : ahead < 64 ? 1 : -1;
}

static int survivor_index(const struct shrink *shrink, int rank) {
  for (int i = 0; i < shrink->nsurvivors; i++)
    if (shrink->survivors[i] == rank) return i;
  return -1;
}

/* The mismatch text (with its prefix; the wire keeps FAIL_TEXT of it) for a join from `other` (its
 * list leaves other_n survivors). */
static void describe_disagreement(const struct shrink *shrink, const struct tally_peer_info *other, uint32_t other_n,
                                  const char *from, char text[2 * FAIL_TEXT]) {
  char who[96];
  if (other->shrink_rank >= 0)
    snprintf(who, sizeof who, "rank %d's leaves %u survivors (the lowest %d)", other->shrink_rank, other_n,
             other->shrink_root);
  else
    snprintf(who, sizeof who, "a join from %s is not a shrink's", from);
  snprintf(text, 2 * FAIL_TEXT,
           "%sthe survivors passed different exclude lists: %s, rank %d's leaves %d (the lowest %d; it excludes %s); "
           "every survivor must pass the same list",
           mismatch_prefix, who, shrink->self, shrink->nsurvivors, shrink->survivors[0], shrink->excluded);
}

/* A shrink's root: stops accepting once no survivor is OPEN (tally_auth_accept's *want). */
static void shrink_update_want(struct root *root) {
  struct shrink *shrink = root->shrink;
  if (shrink->responder) {
    root->want = root->kept + 1; /* until stopped */
    return;
  }
  int open = 0;
  for (int i = 0; i < shrink->nsurvivors; i++) open += shrink->state[i] == OPEN;
  root->want = open ? root->kept + 1 : root->kept;
}

/* From now on every join is answered with `text`, those that joined so far at once. */
static void enter_mismatch(struct root *root, const char *text) {
  if (root->mismatch[0]) return;
  size_t len = strnlen(text, sizeof root->mismatch - 1);
  memcpy(root->mismatch, text, len);
  root->mismatch[len] = 0;
  TLOG_WARN(TALLY_SUBSYS_BOOT, "shrink: %s", root->mismatch + strlen(mismatch_prefix));
  for (int i = 0; i < root->nranks; i++)
    if (root->fds[i] >= 0) {
      refuse(root->fds[i], (uint32_t)root->nranks, root->mismatch, root->timeout_s);
      root->fds[i] = -1;
    }
}

/* Sends `payload` as a join to the survivor listening at `to` and reads the first bytes of its answer
 * into `text` (FAIL_TEXT; "" when it closed without one). Returns how the exchange went: REMOTE when
 * the connection was refused (nothing listens: a dead process). */
static tally_result_t send_join(const struct root *root, const struct tally_sockaddr *to, const unsigned char *payload,
                                uint32_t nranks, int ms, char text[FAIL_TEXT]) {
  text[0] = 0;
  uint64_t deadline = tally_deadline_after(ms / 1000.0);
  int fd;
  tally_result_t r = tally_net_connect_listening(to, deadline, -1, &fd);
  if (r != TALLY_SUCCESS) return r;
  r = tally_auth_connect(fd, root->job.secret, TALLY_PURPOSE_BOOTSTRAP, payload, deadline, -1);
  unsigned char header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES];
  if (r == TALLY_SUCCESS && tally_net_read_all(fd, header, sizeof header, deadline, -1) == TALLY_SUCCESS) {
    enum tally_bootstrap_status status;
    uint64_t comm_id;
    if (tally_bootstrap_parse_reply_header(header, (int)nranks, &status, &comm_id) == 0 &&
        status == TALLY_BOOTSTRAP_FAILED && tally_net_read_all(fd, text, FAIL_TEXT, deadline, -1) == TALLY_SUCCESS)
      tally_bootstrap_parse_failure(text);
    else
      text[0] = 0;
  }
  close(fd);
  return r;
}

/* A responder tells its own root of a join with another list, so that the survivors that agree
 * with this rank fail too (the root answers them all with the mismatch); then it ends this rank's
 * own join with `mismatch` (its root may be no root, or gone: the join would wait, or fail naming
 * a rank that is alive). */
static void forward(const struct root *root, const unsigned char *payload, uint32_t nranks, const char *mismatch) {
  struct shrink *shrink = root->shrink;
  char text[FAIL_TEXT];
  tally_result_t r = send_join(root, &shrink->listeners[0], payload, nranks, FORWARD_MS, text);
  if (r != TALLY_SUCCESS)
    TLOG_WARN(TALLY_SUBSYS_BOOT, "shrink: could not tell rank %d of the other list: %s", shrink->survivors[0],
              tally_error_message());
  if (!shrink->verdict) return;
  struct tally_shrink_verdict *verdict = shrink->verdict;
  pthread_mutex_lock(&verdict->lock);
  if (verdict->joining && !verdict->mismatch[0]) {
    size_t len = strnlen(mismatch, sizeof verdict->mismatch - 1);
    memcpy(verdict->mismatch, mismatch, len);
    verdict->mismatch[len] = 0;
    uint64_t one = 1;
    if (write(verdict->abort_fd, &one, sizeof one) < 0)
      TLOG_WARN(TALLY_SUBSYS_BOOT, "shrink: eventfd write: %s", strerror(errno));
  }
  pthread_mutex_unlock(&verdict->lock);
}

static int shrink_admit(void *ctx, int fd, const unsigned char *payload, const char *from, char *why, size_t whylen) {
  struct root *root = ctx;
  struct shrink *shrink = root->shrink;
  uint32_t rank, nranks;
  struct tally_peer_info info;
  if (tally_bootstrap_parse_join(payload, &rank, &nranks, &info, why, whylen) != 0) return 0;
  int order = attempt_order(info.shrink_attempt, shrink->attempt);
  if (order != 0 && info.shrink_rank >= 0) { /* not this shrink's: no disagreement */
    char text[2 * FAIL_TEXT];
    if (order > 0)
      snprintf(text, sizeof text, "%sserves rank %d, which is still in an earlier tally_comm_shrink", retry_prefix,
               shrink->self);
    else
      snprintf(text, sizeof text,
               "%srank %d joined from an earlier tally_comm_shrink of the communicator than rank %d's; shrink again",
               mismatch_prefix, info.shrink_rank, shrink->self);
    refuse(fd, nranks, text, root->timeout_s);
    root->kept++;
    shrink_update_want(root);
    return 1;
  }
  int agrees = info.shrink_digest == root->job.shrink_digest;
  int index = survivor_index(shrink, info.shrink_rank);
  if (shrink->responder) {
    if (agrees) { /* the root's probe: this rank agrees with it, and joins it */
      close(fd);
    } else {
      char text[2 * FAIL_TEXT];
      describe_disagreement(shrink, &info, nranks, from, text);
      TLOG_WARN(TALLY_SUBSYS_BOOT, "shrink: %s", text + strlen(mismatch_prefix));
      refuse(fd, nranks, text, root->timeout_s);
      if (info.shrink_rank != shrink->survivors[0]) forward(root, payload, nranks, text + strlen(mismatch_prefix));
    }
    root->kept++;
    shrink_update_want(root);
    return 1;
  }
  if (agrees && !root->mismatch[0]) {
    if (index < 0 || (int)rank != index || (int)nranks != root->nranks || shrink->state[index] != OPEN) {
      snprintf(why, whylen, "rank %d (%u of %u survivors) joined twice, or out of place", info.shrink_rank, rank,
               nranks);
      return 0;
    }
    root->fds[index] = fd;
    tally_bootstrap_encode_entry(&info, root->entries + (size_t)index * TALLY_BOOTSTRAP_ENTRY_BYTES);
    shrink->state[index] = JOINED;
    root->joined++;
  } else {
    if (!agrees) {
      char text[2 * FAIL_TEXT];
      describe_disagreement(shrink, &info, nranks, from, text);
      enter_mismatch(root, text);
    }
    refuse(fd, nranks, root->mismatch, root->timeout_s);
    if (index >= 0 && shrink->state[index] == OPEN) shrink->state[index] = ANSWERED;
  }
  root->kept++;
  shrink_update_want(root);
  return 1;
}

/* A shrink's root, while it waits (tally_auth_watch_fn): every PROBE_EVERY_MS it sends its own join
 * to the recovery listener of each survivor that has not joined. One that refuses the connection is
 * dead (the kernel closed the socket with its process); one that answers with a mismatch has
 * another list (and joins another root, or did); one that closes after the handshake agrees and is
 * on its way; one that does not answer has not called tally_comm_shrink yet. The dead are answered
 * all at once when the living have joined (root_main), so that no survivor starts its next shrink
 * while this root still accepts joins: those wait in the listener's queue for the next root. */
static void shrink_watch(void *ctx) {
  struct root *root = ctx;
  struct shrink *shrink = root->shrink;
  uint64_t now = tally_now_ns();
  if (shrink->responder || now < shrink->next_probe_ns) return;
  shrink->next_probe_ns = now + PROBE_EVERY_MS * 1000000ull;
  for (int i = 0; i < shrink->nsurvivors; i++) {
    if (shrink->state[i] != OPEN || shrink->survivors[i] == shrink->self) continue;
    char text[FAIL_TEXT];
    tally_result_t r =
        send_join(root, &shrink->listeners[i], shrink->join, (uint32_t)shrink->nsurvivors, PROBE_MS, text);
    if (r == TALLY_ERR_REMOTE && !text[0]) {
      shrink->state[i] = DEAD;
      shrink->ndead++;
      TLOG_WARN(TALLY_SUBSYS_BOOT, "shrink: survivor %d (rank %d) died before joining: %s", i, shrink->survivors[i],
                tally_error_message());
    } else if (!strncmp(text, mismatch_prefix, strlen(mismatch_prefix))) {
      enter_mismatch(root, text);
      shrink->state[i] = ANSWERED;
    }
  }
  shrink_update_want(root);
}

/* The answer to the living survivors of a shrink some of whose survivors died. */
static void reply_died(struct root *root) {
  struct shrink *shrink = root->shrink;
  char text[FAIL_TEXT];
  int len = snprintf(text, sizeof text,
                     "%s%s of the survivors (numbered in order among them) died during tally_comm_shrink: nothing "
                     "listens on %s recovery port any more; shrink again without %s; missing:",
                     died_prefix, shrink->ndead == 1 ? "one" : "some", shrink->ndead == 1 ? "its" : "their",
                     shrink->ndead == 1 ? "it" : "them");
  for (int i = 0; i < shrink->nsurvivors && len < (int)sizeof text - 16; i++)
    if (shrink->state[i] == DEAD) len += snprintf(text + len, sizeof text - (size_t)len, " %d", i);
  TLOG_WARN(TALLY_SUBSYS_BOOT, "root: %s", text + strlen(died_prefix));
  root_reply(root, text);
}
static void root_free(struct root *root) {
  if (root->shrink) {
    free(root->shrink->survivors);
    free(root->shrink->listeners);
    free(root->shrink->state);
    free(root->shrink);
  }
  free(root->fds);
  free(root->entries);
  free(root);
}

static void *root_main(void *arg) {
  struct root *root = arg;
  struct shrink *shrink = root->shrink;
  root->want = root->refusing ? root->expect : 1;
  if (shrink) shrink_update_want(root);
  uint64_t deadline = tally_deadline_after(root->timeout_s);
  tally_result_t r =
      shrink && shrink->responder
          ? tally_auth_serve(root->listen_fd, root->job.secret, TALLY_PURPOSE_BOOTSTRAP, &root->want, deadline,
                             root->abort_fd, shrink_admit, root)
          : tally_auth_accept(root->listen_fd, root->job.secret, TALLY_PURPOSE_BOOTSTRAP, &root->want, deadline,
                              root->abort_fd, shrink ? shrink_admit : root_admit, shrink ? shrink_watch : NULL, root);
  if ((shrink && shrink->responder) || root->mismatch[0]) {
    /* a responder has nobody to answer at the end; a mismatch was answered as the joins came */
  } else if (r == TALLY_SUCCESS && shrink && shrink->ndead > 0) {
    reply_died(root);
  } else if (r == TALLY_SUCCESS) {
    root_reply(root, NULL);
  } else if (root->nranks > 0) {
    char missing[FAIL_TEXT - 80] = "";
    for (int i = 0; i < root->nranks && strlen(missing) < sizeof missing - 16; i++)
      if (root->fds[i] < 0) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %d", i);
    char text[2 * FAIL_TEXT]; /* the reply keeps FAIL_TEXT of it */
    if (r == TALLY_ERR_ABORTED)
      snprintf(text, sizeof text, "%s (tally_comm_abort) with %d of %d ranks joined; missing:%s", aborted_prefix,
               root->joined, root->nranks, missing);
    else
      snprintf(text, sizeof text, "only %d of %d ranks joined the bootstrap before TALLY_TIMEOUT; missing:%s",
               root->joined, root->nranks, missing);
    TLOG_WARN(TALLY_SUBSYS_BOOT, "root: %s", text);
    root_reply(root, text);
  } else {
    TLOG_WARN(TALLY_SUBSYS_BOOT, "root: no rank joined before TALLY_TIMEOUT");
  }
  close(root->listen_fd);
  root_free(root);
  return NULL;
}

/* Starts `root` (filled in but for these) on its thread; on failure closes listen_fd and frees root. */
static tally_result_t root_start(struct root *root, const struct tally_job_id *job, int listen_fd, double timeout_s,
                                 pthread_t *joinable, int abort_fd) {
  root->job = *job;
  root->listen_fd = listen_fd;
  root->timeout_s = timeout_s;
  root->abort_fd = abort_fd;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (!joinable) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int err = pthread_create(joinable ? joinable : &thread, &attr, root_main, root);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    close(listen_fd);
    root_free(root);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot start the bootstrap root thread: %s", strerror(err));
  }
  return TALLY_SUCCESS;
}

static struct root *root_new(int listen_fd) {
  struct root *root = calloc(1, sizeof *root);
  if (!root) close(listen_fd);
  return root;
}

static tally_result_t out_of_memory(void) {
  return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory starting the bootstrap root");
}

tally_result_t tally_bootstrap_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s) {
  struct root *root = root_new(listen_fd);
  return root ? root_start(root, job, listen_fd, timeout_s, NULL, -1) : out_of_memory();
}

tally_result_t tally_bootstrap_shrink_serve(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                            const struct tally_shrink_view *view, int stop_fd, pthread_t *thread) {
  struct root *root = root_new(listen_fd);
  if (!root) return out_of_memory();
  struct shrink *shrink = calloc(1, sizeof *shrink);
  root->shrink = shrink;
  int n = view->nsurvivors;
  if (shrink) {
    shrink->survivors = malloc((size_t)n * sizeof *shrink->survivors);
    shrink->listeners = malloc((size_t)n * sizeof *shrink->listeners);
    shrink->state = calloc((size_t)n, 1);
  }
  root->fds = malloc((size_t)n * sizeof *root->fds);
  root->entries = calloc((size_t)n, TALLY_BOOTSTRAP_ENTRY_BYTES);
  if (!shrink || !shrink->survivors || !shrink->listeners || !shrink->state || !root->fds || !root->entries) {
    close(listen_fd);
    root_free(root);
    return out_of_memory();
  }
  memcpy(shrink->survivors, view->survivors, (size_t)n * sizeof *shrink->survivors);
  memcpy(shrink->listeners, view->listeners, (size_t)n * sizeof *shrink->listeners);
  memcpy(shrink->join, view->join, sizeof shrink->join);
  snprintf(shrink->excluded, sizeof shrink->excluded, "%s", view->excluded);
  if (strlen(view->excluded) >= sizeof shrink->excluded)
    memcpy(shrink->excluded + sizeof shrink->excluded - 5, "...", 4);
  shrink->self = view->self;
  shrink->attempt = view->attempt & TALLY_SHRINK_ATTEMPT_MASK;
  shrink->verdict = view->verdict;
  shrink->nsurvivors = n;
  shrink->responder = view->survivors[0] != view->self;
  shrink->next_probe_ns = tally_now_ns() + PROBE_EVERY_MS * 1000000ull;
  for (int i = 0; i < n; i++) root->fds[i] = -1;
  root->nranks = n;
  return root_start(root, job, listen_fd, timeout_s, thread, stop_fd);
}

tally_result_t tally_bootstrap_grow_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                               int abort_fd, pthread_t *thread) {
  struct root *root = root_new(listen_fd);
  return root ? root_start(root, job, listen_fd, timeout_s, thread, abort_fd) : out_of_memory();
}

tally_result_t tally_bootstrap_refusing_root_start(int listen_fd, const unsigned char secret[TALLY_SECRET_BYTES],
                                                   double timeout_s, int expect, const char *refusal) {
  struct tally_job_id job = {.authenticated = 1};
  memcpy(job.secret, secret, sizeof job.secret);
  struct root *root = root_new(listen_fd);
  if (!root) return out_of_memory();
  root->expect = expect;
  root->refusing = 1;
  snprintf(root->mismatch, sizeof root->mismatch, "%s%s", mismatch_prefix, refusal);
  return root_start(root, &job, listen_fd, timeout_s, NULL, -1);
}

static tally_result_t join_once(const struct tally_job_id *job, int rank, int nranks, const struct tally_peer_info *me,
                                uint64_t deadline, int abort_fd, struct tally_peer_info *peers, uint64_t *comm_id,
                                int *again) {
  *again = 0;
  char root_text[80];
  tally_net_format(&job->root, root_text, sizeof root_text);
  unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES];
  struct tally_peer_info mine = *me; /* a shrink's joins carry its digest (bootstrap.h) */
  mine.shrink_digest = job->shrink_digest;
  tally_bootstrap_encode_join(rank, nranks, &mine, payload);
  int fd;
  tally_result_t r = job->listening ? tally_net_connect_listening(&job->root, deadline, abort_fd, &fd)
                                    : tally_net_connect(&job->root, deadline, abort_fd, &fd);
  if (r != TALLY_SUCCESS)
    return TALLY_ERROR(r, "rank %d cannot reach the bootstrap root at %s: %s", rank, root_text, tally_error_message());
  r = tally_auth_connect(fd, job->secret, TALLY_PURPOSE_BOOTSTRAP, payload, deadline, abort_fd);
  unsigned char header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES];
  if (r == TALLY_SUCCESS) r = tally_net_read_all(fd, header, sizeof header, deadline, abort_fd);
  if (r != TALLY_SUCCESS) {
    close(fd);
    return TALLY_ERROR(r, "rank %d could not join the job at the bootstrap root %s: %s%s", rank, root_text,
                       tally_error_message(),
                       r == TALLY_ERR_REMOTE ? " (the root refused this rank: see its log for why, e.g. a duplicate "
                                               "rank or a different nranks)"
                                             : "");
  }
  enum tally_bootstrap_status status;
  uint64_t reply_comm_id;
  if (tally_bootstrap_parse_reply_header(header, nranks, &status, &reply_comm_id) != 0) {
    close(fd);
    return TALLY_ERROR(TALLY_ERR_REMOTE, "the bootstrap root at %s sent a malformed reply", root_text);
  }
  if (status == TALLY_BOOTSTRAP_FAILED) {
    char text[FAIL_TEXT];
    r = tally_net_read_all(fd, text, sizeof text, deadline, abort_fd);
    close(fd);
    const char *why = r == TALLY_SUCCESS ? tally_bootstrap_parse_failure(text) : "";
    if (!strncmp(why, retry_prefix, strlen(retry_prefix))) {
      *again = 1;
      return TALLY_ERROR(TALLY_ERR_TIMEOUT, "the bootstrap root at %s %s", root_text, why + strlen(retry_prefix));
    }
    if (!strncmp(why, mismatch_prefix, strlen(mismatch_prefix)))
      return TALLY_ERROR(TALLY_ERR_MISMATCH, "%s", why + strlen(mismatch_prefix));
    if (!strncmp(why, died_prefix, strlen(died_prefix)))
      return TALLY_ERROR(TALLY_ERR_REMOTE, "%s", why + strlen(died_prefix));
    if (!strncmp(why, aborted_prefix, strlen(aborted_prefix)))
      return TALLY_ERROR(TALLY_ERR_REMOTE, "the bootstrap root at %s gave up: %s", root_text, why);
    return TALLY_ERROR(TALLY_ERR_TIMEOUT, "the bootstrap root at %s gave up: %s", root_text,
                       r == TALLY_SUCCESS ? tally_bootstrap_parse_failure(text) : "(its reason was lost)");
  }
  *comm_id = reply_comm_id;
  size_t table_bytes = (size_t)nranks * TALLY_BOOTSTRAP_ENTRY_BYTES;
  unsigned char *table = malloc(table_bytes);
  if (!table) {
    close(fd);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory reading the address table of %d ranks", nranks);
  }
  r = tally_net_read_all(fd, table, table_bytes, deadline, abort_fd);
  close(fd);
  if (r == TALLY_SUCCESS) r = tally_bootstrap_parse_table(table, nranks, peers);
  free(table);
  if (r != TALLY_SUCCESS) return TALLY_ERROR(r, "rank %d: reading the address table: %s", rank, tally_error_message());
  return TALLY_SUCCESS;
}

tally_result_t tally_bootstrap_join(const struct tally_job_id *job, int rank, int nranks,
                                    const struct tally_peer_info *me, uint64_t deadline, int abort_fd,
                                    struct tally_peer_info *peers, uint64_t *comm_id) {
  enum { RETRY_MS = 10 };
  for (;;) {
    int again;
    tally_result_t r = join_once(job, rank, nranks, me, deadline, abort_fd, peers, comm_id, &again);
    if (!again || tally_ms_until(deadline, RETRY_MS) < RETRY_MS) return r;
    struct pollfd aborted = {.fd = abort_fd, .events = POLLIN};
    if (poll(&aborted, abort_fd >= 0, RETRY_MS) > 0)
      return TALLY_ERROR(TALLY_ERR_ABORTED, "aborted (tally_comm_abort) while waiting for the bootstrap root");
  }
}
