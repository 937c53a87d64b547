/* The communicator's working state: waiting for progress without stealing a core, telling the peers
 * about a failure and naming the rank at fault, the buffers collectives borrow, and freeing what
 * the communicator owns. Creating one is the API's (src/api/communicator.c). */
#define _GNU_SOURCE
#include "comm.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "board_page.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "links.h"

tally_result_t tally_comm_buffer(void **buf, size_t *have, size_t bytes) {
  if (bytes <= *have) return TALLY_SUCCESS;
  void *grown = NULL;
  if (posix_memalign(&grown, 64, bytes) != 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory: cannot allocate a %zu-byte internal buffer", bytes);
  free(*buf);
  *buf = grown;
  *have = bytes;
  return TALLY_SUCCESS;
}

/* How many times a waiting rank that has a hardware thread of its own polls between two readings of
 * the clock. Such a rank never yields its core while it spins (sched_yield is a system call that
 * would delay seeing a reply by its own length); ranks that share cores yield between polls. */
#define HOT_POLLS 64

void tally_waiter_start(struct tally_comm *comm, const struct tally_ring *ring, const struct tally_msg_header *call,
                        struct tally_waiter *w) {
  memset(w, 0, sizeof *w);
  w->ring = ring;
  w->call = call;
  w->waiting_for = ring->prev_rank;
  w->timeout_ns = (uint64_t)(comm->cfg.timeout_s * 1e9);
  w->grace_ns = w->timeout_ns / 10 < 5000000000ull ? w->timeout_ns / 10 : 5000000000ull;
}

/* Tells the ranks this one sends to that it is waiting, once per stall: the ring's next rank until
 * the notice goes out, every other one on a single try (in pairwise and tree algorithms, the rank
 * waiting on this one need not be the ring's next). */
static void notify_waiting(struct tally_comm *comm, struct tally_waiter *w) {
  unsigned char notice[TALLY_WIRE_HEADER_BYTES];
  tally_notice_encode(notice, comm->seq, comm->rank);
  if (!w->told_others)
    for (int r = 0; r < comm->nranks; r++)
      if (comm->to[r].ops && r != w->ring->next_rank) comm->to[r].ops->notify(comm->to[r].conn, notice);
  w->told_others = 1;
  w->notified = w->ring->to_next.ops->notify(w->ring->to_next.conn, notice);
}

tally_result_t tally_comm_progress(struct tally_comm *comm, struct tally_waiter *w, int *moved) {
  if (atomic_load(&comm->aborted))
    return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  int timeout_ms = 0;
  if (*moved) {
    w->idle_since = 0;
    w->hot_polls = 0;
    w->notified = 0;
    w->told_others = 0;
  } else if (!comm->cores_shared && w->hot_polls < HOT_POLLS) {
    w->hot_polls++; /* no system call, no clock: idle time counts from the end of these polls */
    tally_cpu_relax();
  } else {
    uint64_t now = tally_now_ns();
    if (w->idle_since == 0) w->idle_since = now;
    tally_flight_waiting_for(comm, w->waiting_for);
    uint64_t idle = now - w->idle_since, limit = w->timeout_ns + (w->upstream_waiting ? w->grace_ns : 0);
    if (idle >= limit) {
      w->timed_out = 1;
      return TALLY_ERROR(TALLY_ERR_TIMEOUT, "nothing moved for %.1f s (TALLY_TIMEOUT)", (double)idle / 1e9);
    }
    if (!w->notified && idle + w->grace_ns >= w->timeout_ns) notify_waiting(comm, w);
    if (idle >= (uint64_t)comm->cfg.spin_us * 1000) {
      TALLY_CHECK(tally_board_check(comm, w->call));
      timeout_ms = tally_ms_until(
          w->idle_since + (w->notified || idle + w->grace_ns >= w->timeout_ns ? limit : w->timeout_ns - w->grace_ns),
          100);
    } else if (comm->cores_shared) {
      sched_yield(); /* let a peer sharing this core run while we poll */
    } else {
      w->hot_polls = 0; /* a core of its own: poll on without a system call, reading the clock every HOT_POLLS */
    }
  }
  int transport_moved = 0;
  TALLY_CHECK(tally_links_progress(comm, timeout_ms, &transport_moved));
  if (transport_moved) {
    *moved = 1;
    if (w->idle_since && comm->counters.waited_ns && w->waiting_for >= 0 && w->waiting_for < comm->nranks)
      tally_count(&comm->counters.waited_ns[w->waiting_for], tally_now_ns() - w->idle_since);
    w->idle_since = 0;
    w->hot_polls = 0;
  }
  return TALLY_SUCCESS;
}

void tally_comm_fail(struct tally_comm *comm, tally_result_t result) {
  if (comm->nranks < 2) return;
  int culprit = tally_comm_blamed(comm);
  if (result == TALLY_ERR_ABORTED || result == TALLY_ERR_SYSTEM || result == TALLY_ERR_INTERNAL) culprit = comm->rank;
  tally_result_t code = result == TALLY_ERR_MISMATCH || result == TALLY_ERR_TIMEOUT ? result : TALLY_ERR_REMOTE;
  /* A mismatch names one of two ranks that disagree, both alive; anything else names a rank that
   * died, closed its connections, stalled or reported its own failure. */
  if (comm->failed && culprit >= 0 && culprit != comm->rank && result != TALLY_ERR_MISMATCH)
    atomic_store(&comm->failed[culprit], 1);
  tally_board_fail(comm, code, culprit);
  unsigned char frame[TALLY_WIRE_HEADER_BYTES];
  tally_error_frame_encode(frame, comm->seq, comm->rank, culprit, code);
  /* Frames also go against the data: a sender reads them when its sends break. */
  for (int i = 0; i < comm->nlinks; i++) comm->links[i].ops->fail(comm->links[i].conn, frame);
}

int tally_comm_failed_list(const struct tally_comm *comm, int *ranks, int max) {
  int n = 0;
  for (int r = 0; comm->failed && r < comm->nranks; r++)
    if (atomic_load(&comm->failed[r])) {
      if (n < max) ranks[n] = r;
      n++;
    }
  return n;
}

int tally_comm_blamed(const struct tally_comm *comm) {
  int culprit = tally_error_blamed();
  return culprit >= 0 && culprit < comm->nranks ? culprit : -1;
}

const char *tally_comm_rank_text(const struct tally_comm *comm, int rank, char *buf, size_t len) {
  if (rank < 0 || rank >= comm->nranks || !comm->peers) {
    snprintf(buf, len, "rank %d (unknown host)", rank);
    return buf;
  }
  char addr[80];
  tally_net_format(&comm->peers[rank].addr, addr, sizeof addr);
  char *port = strrchr(addr, ':'); /* the host is what matters; the port is the transport's */
  if (port) *port = '\0';
  snprintf(buf, len, "rank %d (%s, %s)", rank, comm->peers[rank].topo.hostname, addr);
  return buf;
}

int tally_comm_recovery_address(const struct tally_comm *comm, int rank, struct tally_sockaddr *out) {
  if (!comm->peers || rank < 0 || rank >= comm->nranks) return 0;
  *out = comm->peers[rank].addr;
  tally_net_set_port(out, comm->peers[rank].recovery_port);
  return comm->peers[rank].recovery_port != 0;
}

void tally_comm_free(struct tally_comm *c) {
  tally_trace_close(c);
  tally_links_close(c);
  if (c->abort_fd >= 0) close(c->abort_fd);
  if (c->recovery_fd >= 0) close(c->recovery_fd);
  if (c->grow_fd >= 0) close(c->grow_fd);
  free((void *)c->failed);
  free(c->peers);
  free(c->links);
  free(c->to);
  free(c->from);
  free((void *)c->counters.sent);
  free((void *)c->counters.received);
  free((void *)c->counters.waited_ns);
  tally_flight_free(&c->flight);
  free(c->p2p_sent);
  free(c->p2p_received);
  tally_job_topo_free(&c->topo);
  free(c->scratch);
  free(c->staging);
  free(c->p2p_msgs);
  free(c);
}
