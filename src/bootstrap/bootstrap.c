/* Bootstrap root and join: the root's thread and the rank's side of the exchange, with their I/O.
 * The messages themselves are encoded and checked in bootstrap_wire.c. */
#define _GNU_SOURCE
#include "bootstrap.h"

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
/* And so when a shrink's root found a survivor dead before it joined: TALLY_ERR_REMOTE, with the
 * text after the prefix. */
static const char died_prefix[] = "a survivor died: ";

struct root {
  struct tally_job_id job;
  int listen_fd;
  double timeout_s;
  int nranks; /* set by the first join, 0 before */
  int want;   /* connections to accept: 1 until the first join says how many */
  int joined;
  int *fds;                     /* per rank, -1 until it joins */
  unsigned char *entries;       /* per rank: its checked entry, re-encoded (bootstrap_wire.h) */
  int expect;                   /* a shrink's root: how many joins to answer after a mismatch; 0 otherwise */
  int kept;                     /* connections admitted (joined, or answered with the mismatch) */
  char mismatch[FAIL_TEXT];     /* "" until a join carried another shrink digest */
  int refusing;                 /* a grow's root that admits nobody: every join is answered with `mismatch` */
  int abort_fd;                 /* a grow's root: readable once the communicator it serves from is aborted; else -1 */
  struct tally_sockaddr *watch; /* a shrink's root: each survivor's recovery listener (len 0: not watched) */
  unsigned char *dead;          /* a shrink's root: per survivor, 1 once its listener refused before it joined */
  int ndead;
  uint64_t next_watch_ns;
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

/* A shrink's join with another digest: from now on every join is answered with the mismatch, those
 * kept so far at once, and the root stops once `expect` (or more, if the joins said so) are. */
static int root_mismatch(struct root *root, int fd, uint32_t nranks, const char *from) {
  if (!root->mismatch[0]) {
    snprintf(root->mismatch, sizeof root->mismatch,
             "%sthe survivors passed different exclude lists to tally_comm_shrink: a rank at %s (%u survivors in "
             "its list) disagrees with the shrink's root (%d in its list); every survivor must pass the same list",
             mismatch_prefix, from, nranks, root->expect);
    TLOG_WARN(TALLY_SUBSYS_BOOT, "root: %s", root->mismatch + strlen(mismatch_prefix));
    for (int r = 0; r < root->nranks; r++)
      if (root->fds[r] >= 0) {
        refuse(root->fds[r], (uint32_t)root->nranks, root->mismatch, root->timeout_s);
        root->fds[r] = -1;
      }
  }
  refuse(fd, nranks, root->mismatch, root->timeout_s);
  root->kept++;
  int want = root->expect > root->nranks ? root->expect : root->nranks;
  if ((int)nranks > want) want = (int)nranks;
  root->want = want > root->kept ? want : root->kept;
  return 1;
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
  if (root->mismatch[0] || info.shrink_digest != root->job.shrink_digest) return root_mismatch(root, fd, nranks, from);
  if (root->nranks == 0) {
    root->fds = malloc(nranks * sizeof *root->fds);
    root->entries = calloc(nranks, TALLY_BOOTSTRAP_ENTRY_BYTES);
    if (!root->fds || !root->entries) {
      snprintf(why, whylen, "the root is out of memory for %u ranks", nranks);
      return 0;
    }
    for (uint32_t i = 0; i < nranks; i++) root->fds[i] = -1;
    root->nranks = (int)nranks;
    root->want = (int)nranks - root->ndead;
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

/* A shrink's root, while it waits (tally_auth_watch_fn): a survivor that has not joined and whose
 * recovery listener refuses connections is dead (the kernel closed the socket with its process), so
 * waiting for it would only end at TALLY_TIMEOUT. The root then waits only for the living, and
 * answers them all at once with a failure naming the dead (root_main). All at once, so that no
 * survivor starts its next shrink while this root still accepts joins: those joins wait in the
 * listener's queue for the next root. A survivor that is alive but slow answers the probe (its
 * listener is open) and is waited for as before. */
static void root_watch(void *ctx) {
  enum { WATCH_EVERY_MS = 200, PROBE_MS = 100 };
  struct root *root = ctx;
  uint64_t now = tally_now_ns();
  if (!root->watch || root->mismatch[0] || now < root->next_watch_ns) return;
  root->next_watch_ns = now + WATCH_EVERY_MS * 1000000ull;
  for (int i = 0; i < root->expect; i++) {
    if (root->watch[i].len == 0 || root->dead[i] || (root->nranks > i && root->fds[i] >= 0)) continue;
    int fd;
    tally_result_t r = tally_net_connect_listening(&root->watch[i], tally_deadline_after(PROBE_MS / 1000.0), -1, &fd);
    if (r == TALLY_SUCCESS) close(fd);
    if (r != TALLY_ERR_REMOTE) continue; /* alive, or unknown (a slow network): waited for */
    root->dead[i] = 1;
    root->ndead++;
    TLOG_WARN(TALLY_SUBSYS_BOOT, "root: survivor %d of the shrink died before joining: %s", i, tally_error_message());
  }
  if (root->nranks > 0) root->want = root->nranks - root->ndead;
}

/* The answer to the living survivors of a shrink some of whose survivors died. */
static void reply_died(struct root *root) {
  char text[FAIL_TEXT];
  int len = snprintf(text, sizeof text,
                     "%s%s of the survivors (numbered in order among them) died during tally_comm_shrink: nothing "
                     "listens on %s recovery port any more; shrink again without %s; missing:",
                     died_prefix, root->ndead == 1 ? "one" : "some", root->ndead == 1 ? "its" : "their",
                     root->ndead == 1 ? "it" : "them");
  for (int i = 0; i < root->expect && len < (int)sizeof text - 16; i++)
    if (root->dead[i]) len += snprintf(text + len, sizeof text - (size_t)len, " %d", i);
  TLOG_WARN(TALLY_SUBSYS_BOOT, "root: %s", text + strlen(died_prefix));
  root_reply(root, text);
}

static void *root_main(void *arg) {
  struct root *root = arg;
  root->want = root->refusing ? root->expect : 1;
  uint64_t deadline = tally_deadline_after(root->timeout_s);
  tally_result_t r = tally_auth_accept(root->listen_fd, root->job.secret, TALLY_PURPOSE_BOOTSTRAP, &root->want,
                                       deadline, root->abort_fd, root_admit, root_watch, root);
  if (root->mismatch[0]) {
    /* every join was answered as it came */
  } else if (r == TALLY_SUCCESS && root->ndead > 0) {
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
  free(root->fds);
  free(root->entries);
  free(root->watch);
  free(root->dead);
  free(root);
  return NULL;
}

static tally_result_t root_start(const struct tally_job_id *job, int listen_fd, double timeout_s, int expect,
                                 const char *refusal, pthread_t *joinable, int abort_fd,
                                 const struct tally_sockaddr *watch) {
  struct root *root = calloc(1, sizeof *root);
  if (root && watch) {
    root->watch = malloc((size_t)expect * sizeof *watch);
    root->dead = calloc((size_t)expect, 1);
    if (root->watch) memcpy(root->watch, watch, (size_t)expect * sizeof *watch);
  }
  if (!root || (watch && (!root->watch || !root->dead))) {
    if (root) free(root->watch);
    if (root) free(root->dead);
    free(root);
    close(listen_fd);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory starting the bootstrap root");
  }
  root->job = *job;
  root->listen_fd = listen_fd;
  root->timeout_s = timeout_s;
  root->expect = expect;
  root->abort_fd = abort_fd;
  if (refusal) {
    root->refusing = 1;
    snprintf(root->mismatch, sizeof root->mismatch, "%s%s", mismatch_prefix, refusal);
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (!joinable) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int err = pthread_create(joinable ? joinable : &thread, &attr, root_main, root);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    close(listen_fd);
    free(root->watch);
    free(root->dead);
    free(root);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot start the bootstrap root thread: %s", strerror(err));
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_bootstrap_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s) {
  return root_start(job, listen_fd, timeout_s, 0, NULL, NULL, -1, NULL);
}

tally_result_t tally_bootstrap_shrink_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                                 int expect, const struct tally_sockaddr *survivors,
                                                 pthread_t *thread) {
  return root_start(job, listen_fd, timeout_s, expect, NULL, thread, -1, survivors);
}

tally_result_t tally_bootstrap_grow_root_start(const struct tally_job_id *job, int listen_fd, double timeout_s,
                                               int abort_fd, pthread_t *thread) {
  return root_start(job, listen_fd, timeout_s, 0, NULL, thread, abort_fd, NULL);
}

tally_result_t tally_bootstrap_refusing_root_start(int listen_fd, const unsigned char secret[TALLY_SECRET_BYTES],
                                                   double timeout_s, int expect, const char *refusal) {
  struct tally_job_id job = {.authenticated = 1};
  memcpy(job.secret, secret, sizeof job.secret);
  return root_start(&job, listen_fd, timeout_s, expect, refusal, NULL, -1, NULL);
}

tally_result_t tally_bootstrap_join(const struct tally_job_id *job, int rank, int nranks,
                                    const struct tally_peer_info *me, uint64_t deadline, int abort_fd,
                                    struct tally_peer_info *peers, uint64_t *comm_id) {
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
