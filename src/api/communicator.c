/* A communicator's public life: tally_comm_create (configuration, this machine's topology with its
 * GPU, the network endpoints and the recovery listener, the bootstrap, the links the algorithms
 * need, link calibration, the one-host board, the registry) in steps that comm_split.c shares,
 * tally_comm_destroy, tally_comm_abort and the questions
 * tally_comm_rank, tally_comm_size and tally_comm_last_error answer. */
#define _GNU_SOURCE
#include "communicator.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "algorithms/board.h"
#include "bootstrap/bootstrap.h"
#include "comm/comm.h"
#include "comm/links.h"
#include "config_env.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/reduce.h"
#include "device/device.h"
#include "device/device_call.h"
#include "dispatch/dispatch.h"
#include "flight_signal.h"
#include "group.h"
#include "registry.h"
#include "stats.h"
#include "tuning/calibrate.h"
#include "tuning/clock_offset.h"
#include "tuning/tuner.h"

/* What the device path and the algorithms keep (stream queue, IPC window, board), then the rest. */
static void comm_free(struct tally_comm *c) {
  tally_device_comm_close(c);
  tally_board_close(c);
  tally_comm_free(c);
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
  if (result == TALLY_SUCCESS) {
    c->cores_shared = tally_job_topo_cores_shared(&c->topo, records, c->rank);
    TLOG_INFO(TALLY_SUBSYS_TOPO, "rank %d: %s", c->rank,
              c->cores_shared ? "this host's ranks share cores: waiting ranks yield theirs between polls"
                              : "this host's ranks have cores of their own: waiting ranks poll without yielding");
  }
  free(records);
  return result;
}

tally_result_t tally_comm_new(struct tally_comm **out, int nranks, int rank, const struct tally_config *cfg,
                              const unsigned char secret[TALLY_SECRET_BYTES]) {
  *out = NULL;
  struct tally_comm *c = calloc(1, sizeof *c);
  if (!c) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory creating a communicator");
  c->rank = rank;
  c->nranks = nranks;
  c->cfg = *cfg;
  c->recovery_fd = -1;
  c->grow_fd = -1;
  c->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  c->peers = calloc((size_t)nranks, sizeof *c->peers);
  c->failed = calloc((size_t)nranks, sizeof *c->failed);
  c->p2p_sent = calloc((size_t)nranks, sizeof *c->p2p_sent);
  c->p2p_received = calloc((size_t)nranks, sizeof *c->p2p_received);
  memcpy(c->secret, secret, sizeof c->secret);
  tally_flight_init(&c->flight, cfg->flight_records, cfg->flight_signal);
  if (cfg->flight_signal) tally_flight_signal_arm();
  if (c->abort_fd < 0 || !c->peers || !c->failed || !c->p2p_sent || !c->p2p_received) {
    tally_result_t r = TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot create a communicator of %d ranks: %s", nranks,
                                   c->abort_fd < 0 ? strerror(errno) : "out of memory");
    comm_free(c);
    return r;
  }
  *out = c;
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_check_derive(const char *fn, tally_comm_t comm, tally_comm_t *newcomm) {
  if (!newcomm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "%s: newcomm is NULL", fn);
  *newcomm = NULL;
  TALLY_CHECK(tally_call_check_comm(fn, comm));
  if (tally_group_open())
    return tally_coll_remember(comm, TALLY_ERROR(TALLY_ERR_INVALID_USAGE,
                                                 "%s: called between tally_group_start and tally_group_end; make "
                                                 "communicators outside groups",
                                                 fn));
  return TALLY_SUCCESS;
}

/* Guards every communicator's `constructing`: an abort must not reach a child being freed. */
static pthread_mutex_t construction_lock = PTHREAD_MUTEX_INITIALIZER;

/* The flag and the eventfd every wait watches: what tally_comm_abort does to `c`, and all it does to
 * a child being built (whose endpoints and board its builder may be setting up meanwhile; their
 * waits check the flag at least every few milliseconds). */
static void signal_abort(struct tally_comm *c) {
  atomic_store(&c->aborted, 1);
  uint64_t one = 1;
  if (write(c->abort_fd, &one, sizeof one) < 0)
    TLOG_WARN(TALLY_SUBSYS_INIT, "tally_comm_abort: eventfd write: %s", strerror(errno));
}

void tally_comm_construction_begin(struct tally_comm *origin, struct tally_comm *child, int aborted_before) {
  if (!child) return;
  pthread_mutex_lock(&construction_lock);
  origin->constructing = child;
  if (atomic_load(&origin->aborted) && !aborted_before) signal_abort(child); /* it came during the call */
  pthread_mutex_unlock(&construction_lock);
}

tally_result_t tally_comm_complete(struct tally_comm *c, const struct tally_comm *parent, struct tally_comm *origin,
                                   uint64_t deadline, tally_result_t r, const char *fn) {
  if (r == TALLY_SUCCESS && c) {
    r = tally_comm_finish(c, parent, deadline);
    if (r != TALLY_SUCCESS) r = TALLY_ERROR(r, "%s: building the new communicator: %s", fn, tally_error_message());
  }
  if (origin) {
    pthread_mutex_lock(&construction_lock);
    if (origin->constructing == c) origin->constructing = NULL;
    pthread_mutex_unlock(&construction_lock);
  }
  if (r == TALLY_SUCCESS && c && atomic_load(&c->aborted)) { /* the abort came as the last step ended */
    tally_registry_remove(c);
    r = TALLY_ERROR(TALLY_ERR_ABORTED, "%s: the communicator was aborted (tally_comm_abort) while the new one was built",
                    fn);
  }
  if (r != TALLY_SUCCESS) tally_comm_discard(c);
  return r;
}

void tally_comm_discard(struct tally_comm *c) {
  if (c) comm_free(c);
}

tally_result_t tally_comm_open(struct tally_comm *c, struct tally_peer_info *me) {
  memset(me, 0, sizeof *me);
  char gpu_bus_id[TALLY_TOPO_BUS_ID_BYTES];
  tally_topo_discover_cached(&me->topo, tally_device_gpu_bus_id(gpu_bus_id, sizeof gpu_bus_id));
  /* The RDMA device nearest the GPU when there is one, else the process's NUMA node's. */
  c->numa_node = me->topo.gpu_numa_node >= 0 ? me->topo.gpu_numa_node : me->topo.numa_node;
  /* The ranks of a host read the same machine, so they agree on it (as the tuner needs). */
  c->cache_bytes = c->cfg.cache_bytes     ? c->cfg.cache_bytes
                   : me->topo.cache_bytes ? (size_t)me->topo.cache_bytes
                                          : TALLY_FALLBACK_CACHE_BYTES;
  TALLY_CHECK(tally_links_open_network(c, me));
  /* The recovery listener: on the TCP endpoint's address, any port. Nothing is accepted on it
   * until this rank serves as the root of a shrink (comm_split.c). */
  struct tally_sockaddr recovery = me->addr;
  tally_net_set_port(&recovery, 0);
  TALLY_CHECK(tally_net_listen(&recovery, &c->recovery_fd));
  me->recovery_port = tally_net_port(&recovery);
  return TALLY_SUCCESS;
}

/* TALLY_TRACE: the clocks aligned with rank 0's, then the writer started (last: the messages of
 * calibration and of the board's agreement are not the user's). */
static tally_result_t start_trace(struct tally_comm *c) {
  int64_t offset_ns;
  uint64_t error_ns;
  tally_result_t r = tally_clock_offset_measure(c, &offset_ns, &error_ns);
  if (r != TALLY_SUCCESS) return TALLY_ERROR(r, "TALLY_TRACE: aligning the clocks with rank 0: %s", tally_error_message());
  tally_trace_open(c, offset_ns, error_ns);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_finish(struct tally_comm *c, const struct tally_comm *parent, uint64_t deadline) {
  tally_result_t r = build_job_topology(c);
  if (r == TALLY_SUCCESS && c->nranks > 1) {
    int partners[TALLY_MAX_ALGO_PARTNERS];
    int npartners = tally_tuner_plan_partners(c, partners);
    r = tally_links_connect(c, partners, npartners, deadline);
    c->hosts_in_rank_order = tally_hier_hosts_in_rank_order(c); /* the tuner asks on every call */
  }
  if (r == TALLY_SUCCESS && parent) /* the same values on every rank of the parent, so on the child's */
    memcpy(c->link_cost, parent->link_cost, sizeof c->link_cost);
  else if (r == TALLY_SUCCESS)
    r = tally_calibrate(c);
  if (r == TALLY_SUCCESS && c->nranks > 1) r = tally_board_open(c, deadline);
  if (r == TALLY_SUCCESS && c->cfg.trace_dir[0]) r = start_trace(c);
  if (r == TALLY_SUCCESS) r = tally_registry_add(c);
  if (r != TALLY_SUCCESS) return r;
  char text[80], links[128];
  TLOG_INFO(TALLY_SUBSYS_INIT, "rank %d of %d ready on %s, host %d of %d (%s), communicator %016llx", c->rank,
            c->nranks, tally_net_format(&c->peers[c->rank].addr, text, sizeof text), c->topo.host_index[c->rank] + 1,
            c->topo.nhosts, tally_links_describe(c, links, sizeof links), (unsigned long long)c->comm_id);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_create(struct tally_comm **out, int nranks, int rank, const struct tally_job_id *job,
                                 const tally_config_t *overrides) {
  struct tally_config cfg;
  TALLY_CHECK(tally_config_load(&cfg));
  if (overrides && overrides->timeout_s > 0) cfg.timeout_s = overrides->timeout_s;
  if (overrides && overrides->compress != TALLY_COMPRESS_DEFAULT)
    cfg.compress = overrides->compress - TALLY_COMPRESS_NONE + TALLY_WIRE_EXACT; /* the same order */
  if (overrides && overrides->compress_min_bytes >= 0) cfg.compress_min_bytes = (size_t)overrides->compress_min_bytes;
  tally_log_set_rank(rank);
  struct tally_comm *c;
  TALLY_CHECK(tally_comm_new(&c, nranks, rank, &cfg, job->secret));
  struct tally_peer_info me;
  tally_result_t r = tally_comm_open(c, &me);
  uint64_t deadline = tally_deadline_after(c->cfg.timeout_s);
  if (r == TALLY_SUCCESS)
    r = tally_bootstrap_join(job, rank, nranks, &me, deadline, c->abort_fd, c->peers, &c->comm_id);
  if (r == TALLY_SUCCESS) r = tally_comm_finish(c, NULL, deadline);
  if (r != TALLY_SUCCESS) {
    comm_free(c);
    return r;
  }
  *out = c;
  return TALLY_SUCCESS;
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
  if (comm->cfg.stats) tally_stats_print(comm);
  comm_free(comm);
  return TALLY_SUCCESS;
}

tally_result_t tally_comm_abort(tally_comm_t comm) {
  if (!comm) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "tally_comm_abort: comm is NULL");
  if (!tally_registry_contains(comm))
    return TALLY_ERROR(TALLY_ERR_INVALID_USAGE, "tally_comm_abort: this communicator was destroyed or never created");
  pthread_mutex_lock(&construction_lock);
  signal_abort(comm);
  if (comm->constructing) signal_abort(comm->constructing);
  pthread_mutex_unlock(&construction_lock);
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
