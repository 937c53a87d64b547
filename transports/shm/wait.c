/* Waiting on shared-memory connections without stealing a core, and noticing a peer's failure.
 *
 * Each side of a segment owns a 32-bit futex word (struct shm_wake). A side that has nothing to do
 * reads its words, raises its `sleeping` flags, checks its connections once more, and sleeps in
 * futex_waitv on all of them plus the endpoint's own word (bumped by wake()). A side that moved the
 * stream (head, tail, an acknowledgement, a mailbox) looks at the peer's flag after a full fence and
 * bumps and wakes the peer's word only when it sleeps: the fast path makes no system call, and the
 * two fences make a lost wake-up impossible (the sleeper sees the change or the waker sees the
 * flag, and the futex refuses to sleep on a word that moved since it was read).
 *
 * A sleep lasts at most SHM_WAIT_CAP_MS: between sleeps the abort fd and the pidfds of the peers
 * are polled, so a dead peer or an abort ends the wait within that time. A peer leaves error
 * reports and closes in this side's mailbox, read whenever a connection would otherwise wait. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "shm.h"

enum { SHM_SPIN_NS = 5000, MAX_WAITERS = FUTEX_WAITV_MAX };

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* Linux 5.16; older kernels answer ENOSYS and get the fallback */
#endif

int shm_open_pidfd(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int shm_peer_gone(const struct tally_conn *c) {
  if (c->pidfd >= 0) {
    struct pollfd pfd = {.fd = c->pidfd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
  }
  return kill(c->peer_pid, 0) != 0 && errno == ESRCH; /* kernels before 5.3 have no pidfd */
}

tally_result_t shm_peer_failed(struct tally_conn *c) {
  tally_error_blame(c->peer);
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s exited or was killed while this rank was %s it over shared memory; that rank has probably "
                     "failed or exited early (check its log)",
                     c->peer_text, c->side == SHM_SENDER ? "sending to" : "receiving from");
}

tally_result_t shm_check_peer_alive(struct tally_endpoint *ep, int peer, const char *doing) {
  int gone = 0;
  char text[96] = "";
  pthread_mutex_lock(&ep->conns.lock);
  for (int i = 0; i < ep->conns.n && !gone; i++) {
    const struct tally_conn *other = ep->conns.items[i];
    if (other->peer != peer || other->peer_pid <= 0 || !shm_peer_gone(other)) continue;
    gone = 1;
    snprintf(text, sizeof text, "%s", other->peer_text);
  }
  pthread_mutex_unlock(&ep->conns.lock);
  if (!gone) return TALLY_SUCCESS;
  tally_error_blame(peer);
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s exited or was killed while this rank was %s; that rank has probably failed or exited early "
                     "(check its log)",
                     text, doing);
}

static void futex_wake(_Atomic uint32_t *word, int private_word) {
  syscall(SYS_futex, word, private_word ? FUTEX_WAKE_PRIVATE : FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void shm_wake_peer(struct tally_conn *c) {
  struct shm_wake *peer = &c->seg->wake[1 - c->side];
  atomic_thread_fence(memory_order_seq_cst); /* what this side changed is visible before the flag is read */
  if (!atomic_load_explicit(&peer->sleeping, memory_order_relaxed)) return;
  atomic_fetch_add_explicit(&peer->seq, 1, memory_order_seq_cst);
  futex_wake(&peer->seq, 0);
}

void shm_post_mailbox(struct tally_conn *c, const unsigned char *frame) {
  struct shm_mailbox *box = &c->seg->mailbox[1 - c->side];
  if (atomic_load_explicit(&box->state, memory_order_relaxed) != MAILBOX_EMPTY) return; /* only this side writes */
  if (frame) memcpy(box->frame, frame, TALLY_WIRE_HEADER_BYTES);
  atomic_store_explicit(&box->state, frame ? MAILBOX_FRAME : MAILBOX_CLOSED, memory_order_release);
  shm_wake_peer(c);
}

tally_result_t shm_read_mailbox(struct tally_conn *c) {
  struct shm_mailbox *box = &c->seg->mailbox[c->side];
  uint32_t state = atomic_load_explicit(&box->state, memory_order_acquire);
  if (state == MAILBOX_EMPTY) return TALLY_SUCCESS;
  tally_error_blame(c->peer);
  if (state == MAILBOX_CLOSED)
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "%s closed its shared-memory connection to this rank: it destroyed its communicator or stopped "
                       "after an error of its own (check its log)",
                       c->peer_text);
  if (state == MAILBOX_FRAME) {
    unsigned char frame[TALLY_WIRE_HEADER_BYTES];
    memcpy(frame, box->frame, sizeof frame);
    tally_result_t r = tally_error_frame_decode(frame, c->peer);
    if (r != TALLY_SUCCESS) return r;
  }
  return TALLY_ERROR(TALLY_ERR_REMOTE,
                     "%s left something other than an error report in its shared-memory mailbox (state %u): protocol "
                     "error or memory corruption in that process",
                     c->peer_text, state);
}

tally_result_t shm_pause(const struct tally_endpoint *ep, int ms) {
  struct pollfd pfd = {.fd = ep->abort_fd, .events = POLLIN};
  if (poll(&pfd, 1, ms) > 0 && pfd.revents)
    return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  return TALLY_SUCCESS;
}

/* Polls the abort fd and the peers of the connections with work; a dead peer fails the call once
 * whatever it left in the ring has been read. */
static tally_result_t check_abort_and_peers(struct tally_endpoint *ep, int *moved) {
  TALLY_CHECK(shm_pause(ep, 0));
  for (int i = 0; i < ep->conns.n; i++) {
    struct tally_conn *c = ep->conns.items[i];
    if (!shm_conn_pending(c) || !shm_peer_gone(c)) continue;
    TALLY_CHECK(shm_progress_conn(c, moved)); /* its last writes came before its death */
    if (*moved) return TALLY_SUCCESS;
    if (shm_conn_pending(c)) return shm_peer_failed(c);
  }
  return TALLY_SUCCESS;
}

static atomic_int have_futex_waitv = 1;

/* Kernels without futex_waitv: one word can be waited on; with several, sleep briefly. */
static void futex_wait_one(struct futex_waitv *w, int n, int timeout_ms) {
  struct futex_waitv *word = n > 1 ? &w[1] : &w[0];
  if (n > 2 && timeout_ms > 1) timeout_ms = 1;
  struct timespec rel = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000};
  int op = (word->flags & FUTEX_PRIVATE_FLAG) ? FUTEX_WAIT_PRIVATE : FUTEX_WAIT;
  syscall(SYS_futex, (uint32_t *)(uintptr_t)word->uaddr, op, (uint32_t)word->val, &rel, NULL, 0);
}

/* Sleeps until a peer moves a connection with work, wake() is called (the endpoint's word is no
 * longer `woken`), or timeout_ms passes. */
static tally_result_t sleep_on_peers(struct tally_endpoint *ep, uint32_t woken, int timeout_ms, int *moved) {
  struct futex_waitv w[MAX_WAITERS];
  struct shm_wake *raised[MAX_WAITERS];
  int n = 0, nraised = 0;
  w[n++] =
      (struct futex_waitv){.val = woken, .uaddr = (uintptr_t)&ep->wake_seq, .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG};
  for (int i = 0; i < ep->conns.n && n < MAX_WAITERS; i++) {
    struct tally_conn *c = ep->conns.items[i];
    if (!shm_conn_pending(c)) continue;
    struct shm_wake *mine = &c->seg->wake[c->side];
    w[n++] = (struct futex_waitv){.val = atomic_load(&mine->seq), .uaddr = (uintptr_t)&mine->seq, .flags = FUTEX_32};
    atomic_store_explicit(&mine->sleeping, 1, memory_order_relaxed);
    raised[nraised++] = mine;
  }
  atomic_thread_fence(memory_order_seq_cst); /* the flags are visible before the stream is read again */
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; i < ep->conns.n && r == TALLY_SUCCESS; i++) r = shm_progress_conn(ep->conns.items[i], moved);
  if (r == TALLY_SUCCESS && !*moved) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    if (have_futex_waitv && syscall(SYS_futex_waitv, w, n, 0, &until, CLOCK_MONOTONIC) < 0 && errno == ENOSYS)
      have_futex_waitv = 0;
    if (!have_futex_waitv) futex_wait_one(w, n, timeout_ms);
  }
  for (int i = 0; i < nraised; i++) atomic_store_explicit(&raised[i]->sleeping, 0, memory_order_relaxed);
  return r;
}

tally_result_t shm_wait(struct tally_endpoint *ep, int timeout_ms, int *moved) {
  uint32_t woken = atomic_load(&ep->wake_seq);
  uint64_t now = tally_now_ns(), deadline = now + (uint64_t)timeout_ms * 1000000ull;
  for (uint64_t spin_end = now + SHM_SPIN_NS; tally_now_ns() < spin_end;) {
    tally_cpu_relax();
    for (int i = 0; i < ep->conns.n; i++) TALLY_CHECK(shm_progress_conn(ep->conns.items[i], moved));
    if (*moved) return TALLY_SUCCESS;
  }
  for (;;) {
    /* Read before the abort fd is polled: an abort writes the fd before it wakes the endpoint, so a
     * wake-up seen here is never an abort missed below. */
    int woken_up = atomic_load(&ep->wake_seq) != woken;
    TALLY_CHECK(check_abort_and_peers(ep, moved));
    int left_ms = tally_ms_until(deadline, SHM_WAIT_CAP_MS);
    if (*moved || left_ms == 0 || woken_up) return TALLY_SUCCESS;
    TALLY_CHECK(sleep_on_peers(ep, woken, left_ms, moved));
    if (*moved) return TALLY_SUCCESS;
    for (int i = 0; i < ep->conns.n; i++) TALLY_CHECK(shm_progress_conn(ep->conns.items[i], moved));
  }
}

void shm_wake_endpoint(struct tally_endpoint *ep) {
  atomic_fetch_add(&ep->wake_seq, 1);
  futex_wake(&ep->wake_seq, 1);
}
