/* Communicator life cycle: creation (config, topology, bootstrap, links to the ring neighbours),
 * destruction, abort, the registry that catches destroyed handles, and waiting for progress. */
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

#include "../algorithms/board.h"
#include "bootstrap.h"
#include "calibrate.h"
#include "clock.h"
#include "error.h"
#include "links.h"
#include "log.h"
#include "registry.h"
#include "stream_queue.h"
#include "../transports/cudaipc/window.h"

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

void tally_waiter_start(struct tally_comm *comm, const struct tally_ring *ring, const struct tally_msg_header *call,
                        struct tally_waiter *w) {
  memset(w, 0, sizeof *w);
  w->ring = ring;
  w->call = call;
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
    w->notified = 0;
    w->told_others = 0;
  } else {
    uint64_t now = tally_now_ns();
    if (w->idle_since == 0) w->idle_since = now;
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
    } else {
      sched_yield(); /* let a peer sharing this core run while we poll */
    }
  }
  int transport_moved = 0;
  TALLY_CHECK(tally_links_progress(comm, timeout_ms, &transport_moved));
  if (transport_moved) {
    *moved = 1;
    w->idle_since = 0;
  }
  return TALLY_SUCCESS;
}

void tally_comm_fail(struct tally_comm *comm, tally_result_t result) {
  if (comm->nranks < 2) return;
  int culprit = tally_comm_blamed(comm);
  if (result == TALLY_ERR_ABORTED || result == TALLY_ERR_SYSTEM || result == TALLY_ERR_INTERNAL) culprit = comm->rank;
  tally_result_t code = result == TALLY_ERR_MISMATCH || result == TALLY_ERR_TIMEOUT ? result : TALLY_ERR_REMOTE;
  tally_board_fail(comm, code, culprit);
  unsigned char frame[TALLY_WIRE_HEADER_BYTES];
  tally_error_frame_encode(frame, comm->seq, comm->rank, culprit, code);
  /* Frames also go against the data: a sender reads them when its sends break. */
  for (int i = 0; i < comm->nlinks; i++) comm->links[i].ops->fail(comm->links[i].conn, frame);
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

static void comm_free(struct tally_comm *c) {
  tally_stream_queue_close(c);
  tally_ipc_window_close(c->ipc_window);
  tally_board_close(c);
  tally_links_close(c);
  if (c->abort_fd >= 0) close(c->abort_fd);
  free(c->peers);
  free(c->links);
  free(c->to);
  free(c->from);
  tally_job_topo_free(&c->topo);
  free(c->scratch);
  free(c->staging);
  free(c);
}

/* Every rank's topology record, as one array, gives the job's picture (hosts, local ranks). */
static tally_result_t build_job_topology(struct tally_comm *c) {
  struct tally_topo *records = malloc((size_t)c->nranks * sizeof *records);
  if (!records) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the topology of %d ranks", c->nranks);
  c->every_rank_has_gpu = 1;
  for (int r = 0; r < c->nranks; r++) {
    records[r] = c->peers[r].topo;
    if (!records[r].gpu_bus_id[0]) c->every_rank_has_gpu = 0;
  }
  tally_result_t result = tally_job_topo_build(records, c->nranks, &c->topo);
  if (result == TALLY_SUCCESS && c->rank == 0) tally_job_topo_log(&c->topo, records);
  free(records);
  return result;
}

tally_result_t tally_comm_create(struct tally_comm **out, int nranks, int rank, const struct tally_job_id *job,
                                 const tally_config_t *overrides) {
  struct tally_comm *c = calloc(1, sizeof *c);
  if (!c) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory creating a communicator");
  c->rank = rank;
  c->nranks = nranks;
  c->abort_fd = -1;
  tally_result_t r = tally_config_load(&c->cfg);
  if (r != TALLY_SUCCESS) goto fail;
  if (overrides && overrides->timeout_s > 0) c->cfg.timeout_s = overrides->timeout_s;
  tally_log_set_rank(rank);
  c->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  c->peers = calloc((size_t)nranks, sizeof *c->peers);
  if (c->abort_fd < 0 || !c->peers) {
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot create a communicator of %d ranks: %s", nranks,
                    c->peers ? strerror(errno) : "out of memory");
    goto fail;
  }
  struct tally_peer_info me;
  tally_topo_discover_cached(&me.topo);
  /* The RDMA device nearest the GPU when there is one, else the process's NUMA node's. */
  c->numa_node = me.topo.gpu_numa_node >= 0 ? me.topo.gpu_numa_node : me.topo.numa_node;
  r = tally_links_open_network(c, job->secret, &me);
  if (r != TALLY_SUCCESS) goto fail;
  uint64_t deadline = tally_deadline_after(c->cfg.timeout_s);
  r = tally_bootstrap_join(job, rank, nranks, &me, deadline, c->abort_fd, c->peers, &c->comm_id);
  if (r == TALLY_SUCCESS) r = build_job_topology(c);
  if (r == TALLY_SUCCESS && nranks > 1) r = tally_links_connect(c, job->secret, deadline);
  if (r == TALLY_SUCCESS) r = tally_calibrate(c);
  if (r == TALLY_SUCCESS && nranks > 1) r = tally_board_open(c, deadline);
  if (r == TALLY_SUCCESS) r = tally_registry_add(c);
  if (r != TALLY_SUCCESS) goto fail;
  char text[80], links[128];
  TLOG_INFO(TALLY_SUBSYS_INIT, "rank %d of %d ready on %s, host %d of %d (%s), communicator %016llx", rank, nranks,
            tally_net_format(&me.addr, text, sizeof text), c->topo.host_index[rank] + 1, c->topo.nhosts,
            tally_links_describe(c, links, sizeof links), (unsigned long long)c->comm_id);
  *out = c;
  return TALLY_SUCCESS;
fail:
  comm_free(c);
  return r;
}

tally_result_t tally_comm_destroy(tally_comm_t comm) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_destroy: comm is NULL");
  if (!tally_registry_remove(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "tally_comm_destroy: this communicator was already destroyed or never created");
  if (atomic_load(&comm->busy)) {
    tally_registry_add(comm);
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                       "tally_comm_destroy: a collective is still running on this communicator in another thread; "
                       "call tally_comm_abort first and destroy it once the collective has returned");
  }
  comm_free(comm);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_abort(tally_comm_t comm) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_abort: comm is NULL");
  if (!tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "tally_comm_abort: this communicator was destroyed or never created");
  atomic_store(&comm->aborted, 1);
  uint64_t one = 1;
  if (write(comm->abort_fd, &one, sizeof one) < 0)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "tally_comm_abort: eventfd write: %s", strerror(errno));
  tally_links_wake(comm);
  tally_board_wake(comm);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_rank(tally_comm_t comm, int *rank) {
  if (!rank) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_rank: rank is NULL");
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "tally_comm_rank: comm is NULL, destroyed or never created");
  *rank = comm->rank;
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_size(tally_comm_t comm, int *nranks) {
  if (!nranks) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_size: nranks is NULL");
  if (!comm || !tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "tally_comm_size: comm is NULL, destroyed or never created");
  *nranks = comm->nranks;
  return TALLY_SUCCESS;
}

const char *tally_comm_last_error(tally_comm_t comm) {
  if (comm && tally_registry_contains(comm)) return comm->last_error;
  return tally_error_message();
}
