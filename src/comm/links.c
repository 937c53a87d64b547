/* Per-neighbour transport choice, the endpoints behind it, and progress across them (links.h). */
#define _GNU_SOURCE
#include "links.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap/net.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

static const char *const slot_transport[TALLY_NUM_SLOTS] = {"tcp", "shm", "verbs"};

/* tally_transport_params.peer_gone: a rank whose recovery listener (open from init to destroy,
 * api/communicator.c; nothing accepts on it, so a probe disturbs no one) refuses a connection has
 * exited: the kernel closed the socket with its process. A rank that answers, or that cannot be
 * reached in time (a slow network), is not known to be gone. */
static int peer_gone(void *ctx, int peer) {
  enum { PROBE_MS = 100 };
  const struct tally_comm *c = ctx;
  struct tally_sockaddr recovery;
  if (!tally_comm_recovery_address(c, peer, &recovery)) return 0;
  int fd;
  tally_result_t r = tally_net_connect_listening(&recovery, tally_deadline_after(PROBE_MS / 1000.0), -1, &fd);
  if (r == TALLY_SUCCESS) close(fd);
  return r == TALLY_ERR_REMOTE;
}

static tally_result_t open_slot(struct tally_comm *c, int slot) {
  struct tally_transport_slot *s = &c->slots[slot];
  if (s->ep) return TALLY_SUCCESS;
  s->ops = tally_transport_find(slot_transport[slot]);
  struct tally_transport_params params = {.ifname = c->cfg.ifname,
                                          .secret = c->secret,
                                          .rank = c->rank,
                                          .abort_fd = c->abort_fd,
                                          .keepalive_s = c->cfg.keepalive_s,
                                          .cores_shared = c->cores_shared,
                                          .ib_hca = c->cfg.ib_hca,
                                          .ib_gid_index = c->cfg.ib_gid_index,
                                          .numa_node = c->numa_node,
                                          .ib_reg_cache_bytes = c->cfg.ib_reg_cache_bytes,
                                          .peer_gone = peer_gone,
                                          .peer_gone_ctx = c};
  return s->ops->create(&params, &s->ep);
}

tally_result_t tally_links_open_network(struct tally_comm *c, struct tally_peer_info *me) {
  TALLY_CHECK(open_slot(c, TALLY_SLOT_NET));
  c->slots[TALLY_SLOT_NET].ops->address(c->slots[TALLY_SLOT_NET].ep, &me->addr);
  me->has_rdma = 0;
  int forced = !strcmp(c->cfg.transport, "verbs");
  if (!forced && strcmp(c->cfg.transport, "auto")) return TALLY_SUCCESS;
  if (!tally_transport_find("verbs")) {
    if (forced)
      return TALLY_ERROR(TALLY_ERR_UNSUPPORTED,
                         "TALLY_TRANSPORT=verbs, but this build of Tally has no RDMA transport (it was built without "
                         "libibverbs-dev and librdmacm-dev); use auto or tcp");
    return TALLY_SUCCESS;
  }
  tally_result_t r = open_slot(c, TALLY_SLOT_RDMA);
  if (r != TALLY_SUCCESS) {
    c->slots[TALLY_SLOT_RDMA] = (struct tally_transport_slot){0};
    if (forced)
      return TALLY_ERROR(r,
                         "TALLY_TRANSPORT=verbs, but rank %d cannot use RDMA: %s; use TALLY_TRANSPORT=auto to fall "
                         "back to TCP",
                         c->rank, tally_error_message());
    TLOG_INFO(TALLY_SUBSYS_INIT, "no RDMA for this rank, so TCP between hosts: %s", tally_error_message());
    return TALLY_SUCCESS;
  }
  c->slots[TALLY_SLOT_RDMA].ops->address(c->slots[TALLY_SLOT_RDMA].ep, &me->rdma_addr);
  me->has_rdma = 1;
  return TALLY_SUCCESS;
}

/* Which endpoint carries the connection with `peer`, by TALLY_TRANSPORT: auto (shared memory within
 * a host when this build has it; across hosts verbs when both ranks have RDMA, TCP otherwise), tcp,
 * shm, or verbs (for every peer, on this host too). */
static tally_result_t choose_slot(const struct tally_comm *c, int peer, int *slot) {
  const char *mode = c->cfg.transport;
  int same_host = tally_job_topo_same_host(&c->topo, c->rank, peer);
  int have_shm = tally_transport_find("shm") != NULL;
  int both_rdma = c->peers[c->rank].has_rdma && c->peers[peer].has_rdma;
  *slot = TALLY_SLOT_NET;
  if (!strcmp(mode, "tcp")) return TALLY_SUCCESS;
  if (!strcmp(mode, "verbs")) {
    if (!both_rdma)
      return TALLY_ERROR(TALLY_ERR_UNSUPPORTED,
                         "TALLY_TRANSPORT=verbs, but rank %d (%s) has no usable RDMA device (see its log); use "
                         "TALLY_TRANSPORT=auto to fall back to TCP",
                         peer, c->peers[peer].topo.hostname);
    *slot = TALLY_SLOT_RDMA;
    return TALLY_SUCCESS;
  }
  if (!same_host && both_rdma) *slot = TALLY_SLOT_RDMA;
  if (!strcmp(mode, "shm")) {
    if (!same_host)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_TRANSPORT=shm, but rank %d runs on another host (%s) than rank %d (%s): shared memory "
                         "only reaches ranks of one host; use TALLY_TRANSPORT=auto",
                         peer, c->peers[peer].topo.hostname, c->rank, c->peers[c->rank].topo.hostname);
    if (!have_shm)
      return TALLY_ERROR(
          TALLY_ERR_UNSUPPORTED,
          "TALLY_TRANSPORT=shm, but this build of Tally has no shared-memory transport; use auto or tcp");
  }
  if (same_host && have_shm) *slot = TALLY_SLOT_LOCAL;
  return TALLY_SUCCESS;
}

/* Accepts the connections from `peers` on one endpoint while the main thread connects. */
struct accept_job {
  const struct tally_comm *comm;
  const struct tally_transport_slot *slot;
  int npeers;
  const int *peers;
  struct tally_conn **conns;
  uint64_t deadline;
  tally_result_t result;
  char message[1024];
  int blamed; /* the rank the accept's failure blames, or -1 */
};

static void *accept_peers(void *arg) {
  struct accept_job *job = arg;
  job->result =
      job->slot->ops->accept(job->slot->ep, job->comm->comm_id, job->npeers, job->peers, job->deadline, job->conns);
  snprintf(job->message, sizeof job->message, "%s", tally_error_message());
  job->blamed = tally_error_blamed();
  return NULL;
}

/* The distinct ranks this rank sends to (out) or receives from (in), each with the endpoint slot
 * and, once made, the connection that reaches it. */
struct peer_set {
  int n, cap;
  int *rank;
  int *slot;
  struct tally_conn **conn;
};

static void peer_set_free(struct peer_set *set) {
  free(set->rank);
  free(set->slot);
  free(set->conn);
  *set = (struct peer_set){0};
}

/* Adds `rank` unless it is there already. */
static tally_result_t peer_set_add(struct peer_set *set, int rank) {
  for (int i = 0; i < set->n; i++)
    if (set->rank[i] == rank) return TALLY_SUCCESS;
  if (set->n == set->cap) {
    int cap = set->cap ? 2 * set->cap : 16;
    int *ranks = realloc(set->rank, (size_t)cap * sizeof *ranks);
    if (ranks) set->rank = ranks;
    int *slots = realloc(set->slot, (size_t)cap * sizeof *slots);
    if (slots) set->slot = slots;
    struct tally_conn **conns = realloc(set->conn, (size_t)cap * sizeof *conns);
    if (conns) set->conn = conns;
    if (!ranks || !slots || !conns) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a list of %d peers", cap);
    set->cap = cap;
  }
  set->rank[set->n] = rank;
  set->conn[set->n] = NULL;
  set->n++;
  return TALLY_SUCCESS;
}

/* The ring of `members` (communicator ranks, in ring order) that contains this rank. */
static void place_in_ring(const struct tally_comm *c, struct tally_ring *ring, const int *members, int n) {
  int index = 0;
  for (int i = 0; i < n; i++)
    if (members[i] == c->rank) index = i;
  ring->size = n;
  ring->index = index;
  ring->next_rank = members[(index + 1) % n];
  ring->prev_rank = members[(index + n - 1) % n];
}

/* The hierarchical rings (ranks of this host; one rank per host with this local rank) exist when
 * several hosts run the same number of ranks, more than one each. */
static tally_result_t plan_rings(struct tally_comm *c) {
  int *members = calloc((size_t)c->nranks, sizeof *members);
  if (!members) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory planning rings for %d ranks", c->nranks);
  for (int r = 0; r < c->nranks; r++) members[r] = r;
  place_in_ring(c, &c->world, members, c->nranks);
  if (c->cfg.ring_channels > 1 && c->nranks > 2) { /* with 2 ranks both rings would share one connection */
    for (int r = 0; r < c->nranks; r++) members[r] = (c->nranks - r) % c->nranks;
    place_in_ring(c, &c->world_reverse, members, c->nranks);
  }
  const struct tally_job_topo *t = &c->topo;
  int per_host = t->local_size[c->rank], even = t->nhosts > 1 && per_host > 1;
  for (int r = 0; r < c->nranks; r++) even &= t->local_size[r] == per_host;
  if (even) {
    int nlocal = 0, ncross = 0;
    for (int r = 0; r < c->nranks; r++) /* rank order keeps local ranks and hosts in order */
      if (t->host_index[r] == t->host_index[c->rank]) members[nlocal++] = r;
    place_in_ring(c, &c->local, members, nlocal);
    for (int r = 0; r < c->nranks; r++)
      if (t->local_rank[r] == t->local_rank[c->rank]) members[ncross++] = r;
    place_in_ring(c, &c->cross, members, ncross);
  } else if (t->nhosts > 1) {
    TLOG_INFO(TALLY_SUBSYS_INIT,
              "hosts run different numbers of ranks (or one each): no hierarchical rings, every "
              "collective runs on the flat ring");
  }
  free(members);
  return TALLY_SUCCESS;
}

/* Accepts from the in-peers that use `slot`, in a thread; returns 0 when there are none. `peers`
 * and `conns` have room for every in-peer. */
static int start_accepting(struct tally_comm *c, const struct peer_set *in, int slot, struct accept_job *job,
                           int *peers, struct tally_conn **conns, uint64_t deadline, pthread_t *thread) {
  int n = 0;
  for (int i = 0; i < in->n; i++)
    if (in->slot[i] == slot) peers[n++] = in->rank[i];
  if (n == 0) return 0;
  *job = (struct accept_job){.comm = c,
                             .slot = &c->slots[slot],
                             .npeers = n,
                             .peers = peers,
                             .conns = conns,
                             .deadline = deadline,
                             .blamed = -1};
  int err = pthread_create(thread, NULL, accept_peers, job);
  if (err != 0) {
    job->result = TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot start a thread to accept connections: %s", strerror(err));
    snprintf(job->message, sizeof job->message, "%s", tally_error_message());
    return 0;
  }
  return 1;
}

/* The endpoint for a connection to or from `peer` made after init: the one the pair would have had
 * at init (choose_slot), verbs included, since every endpoint keeps listening for the
 * communicator's life (transports/verbs/verbs.c authenticates and admits such late connections). */
static tally_result_t choose_slot_after_init(const struct tally_comm *c, int peer, int *slot) {
  return choose_slot(c, peer, slot);
}

/* Chooses each peer's endpoint (`after_init`: choose_slot_after_init) and opens it. */
static tally_result_t open_slots(struct tally_comm *c, struct peer_set *set, int after_init) {
  for (int i = 0; i < set->n; i++) {
    TALLY_CHECK(after_init ? choose_slot_after_init(c, set->rank[i], &set->slot[i])
                           : choose_slot(c, set->rank[i], &set->slot[i]));
    TALLY_CHECK(open_slot(c, set->slot[i]));
  }
  return TALLY_SUCCESS;
}

/* Connects to every out-peer and accepts every in-peer, each on the transport chosen for it
 * (`after_init`: choose_slot_after_init): one thread per endpoint accepts while this one connects,
 * so that two ranks connecting to each other at once cannot wait on each other. Fills out->conn
 * and in->conn. */
static tally_result_t connect_sets(struct tally_comm *c, struct peer_set *out, struct peer_set *in, int after_init,
                                   uint64_t deadline) {
  TALLY_CHECK(open_slots(c, out, after_init));
  TALLY_CHECK(open_slots(c, in, after_init));
  size_t room = in->n > 0 ? (size_t)in->n : 1;
  int *peers = malloc(TALLY_NUM_SLOTS * room * sizeof *peers);
  struct tally_conn **accepted = malloc(TALLY_NUM_SLOTS * room * sizeof *accepted);
  if (!peers || !accepted) {
    free(peers);
    free(accepted);
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory accepting %d connections", in->n);
  }
  struct accept_job jobs[TALLY_NUM_SLOTS];
  pthread_t threads[TALLY_NUM_SLOTS];
  int accepting[TALLY_NUM_SLOTS];
  for (int s = 0; s < TALLY_NUM_SLOTS; s++) {
    memset(&jobs[s], 0, sizeof jobs[s]);
    accepting[s] = start_accepting(c, in, s, &jobs[s], peers + s * room, accepted + s * room, deadline, &threads[s]);
  }
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; i < out->n && r == TALLY_SUCCESS; i++) {
    const struct tally_transport_slot *slot = &c->slots[out->slot[i]];
    const struct tally_peer_info *peer = &c->peers[out->rank[i]];
    r = slot->ops->connect(slot->ep, c->comm_id, out->rank[i],
                           out->slot[i] == TALLY_SLOT_RDMA ? &peer->rdma_addr : &peer->addr, deadline, &out->conn[i]);
  }
  if (r != TALLY_SUCCESS) {
    uint64_t one = 1; /* wake the accepting threads at once */
    if (write(c->abort_fd, &one, sizeof one) < 0) TLOG_WARN(TALLY_SUBSYS_INIT, "eventfd write: %s", strerror(errno));
    tally_links_wake(c);
  }
  for (int s = 0; s < TALLY_NUM_SLOTS; s++) {
    if (accepting[s]) pthread_join(threads[s], NULL);
    if (r != TALLY_SUCCESS || jobs[s].result == TALLY_SUCCESS) continue;
    r = TALLY_ERROR(jobs[s].result, "%s", jobs[s].message);
    if (jobs[s].blamed >= 0) tally_error_blame(jobs[s].blamed); /* the accepting thread's */
  }
  for (int i = 0; r == TALLY_SUCCESS && i < in->n; i++) { /* each in-peer's connection, from its endpoint's list */
    int s = in->slot[i];
    for (int j = 0; j < jobs[s].npeers; j++)
      if (peers[s * room + (size_t)j] == in->rank[i]) in->conn[i] = accepted[s * room + (size_t)j];
  }
  free(peers);
  free(accepted);
  return r;
}

/* c->to and c->from, made on first need. */
static tally_result_t make_link_tables(struct tally_comm *c) {
  struct tally_counters *k = &c->counters; /* the per-peer counters live as long as the links */
  if (!c->to) c->to = calloc((size_t)c->nranks, sizeof *c->to);
  if (!c->from) c->from = calloc((size_t)c->nranks, sizeof *c->from);
  if (!k->sent) k->sent = calloc((size_t)c->nranks, sizeof *k->sent);
  if (!k->received) k->received = calloc((size_t)c->nranks, sizeof *k->received);
  if (!k->waited_ns) k->waited_ns = calloc((size_t)c->nranks, sizeof *k->waited_ns);
  if (!c->to || !c->from || !k->sent || !k->received || !k->waited_ns)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the links of %d ranks", c->nranks);
  return TALLY_SUCCESS;
}

/* Records the connections of `out` and `in` in c->links, c->to and c->from. */
static tally_result_t record_links(struct tally_comm *c, const struct peer_set *out, const struct peer_set *in) {
  TALLY_CHECK(make_link_tables(c));
  struct tally_link *links = realloc(c->links, (size_t)(c->nlinks + out->n + in->n) * sizeof *links);
  if (!links) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for the links");
  c->links = links;
  for (int i = 0; i < out->n; i++) {
    c->to[out->rank[i]] = (struct tally_link){c->slots[out->slot[i]].ops, out->conn[i], out->rank[i], out->slot[i]};
    c->links[c->nlinks++] = c->to[out->rank[i]];
  }
  for (int i = 0; i < in->n; i++) {
    c->from[in->rank[i]] = (struct tally_link){c->slots[in->slot[i]].ops, in->conn[i], in->rank[i], in->slot[i]};
    c->links[c->nlinks++] = c->from[in->rank[i]];
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_links_connect(struct tally_comm *c, const int *partners, int npartners, uint64_t deadline) {
  TALLY_CHECK(plan_rings(c));
  struct tally_ring *rings[4] = {&c->world, &c->world_reverse, &c->local, &c->cross};
  struct peer_set out = {0}, in = {0};
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; i < 4 && r == TALLY_SUCCESS; i++) {
    if (rings[i]->size == 0) continue;
    r = peer_set_add(&out, rings[i]->next_rank);
    if (r == TALLY_SUCCESS) r = peer_set_add(&in, rings[i]->prev_rank);
  }
  for (int i = 0; i < npartners && r == TALLY_SUCCESS; i++) { /* exchanges go both ways */
    r = peer_set_add(&out, partners[i]);
    if (r == TALLY_SUCCESS) r = peer_set_add(&in, partners[i]);
  }
  if (r == TALLY_SUCCESS) r = connect_sets(c, &out, &in, 0, deadline);
  if (r == TALLY_SUCCESS) r = record_links(c, &out, &in);
  peer_set_free(&out);
  peer_set_free(&in);
  TALLY_CHECK(r);
  for (int i = 0; i < 4; i++) {
    struct tally_ring *ring = rings[i];
    if (ring->size == 0) continue;
    ring->to_next = c->to[ring->next_rank];
    ring->from_prev = c->from[ring->prev_rank];
  }
  return TALLY_SUCCESS;
}

tally_result_t tally_links_connect_peers(struct tally_comm *c, const int *to, int nto, const int *from, int nfrom,
                                         uint64_t deadline) {
  TALLY_CHECK(make_link_tables(c));
  struct peer_set out = {0}, in = {0};
  tally_result_t r = TALLY_SUCCESS;
  for (int i = 0; i < nto && r == TALLY_SUCCESS; i++)
    if (!c->to[to[i]].ops) r = peer_set_add(&out, to[i]);
  for (int i = 0; i < nfrom && r == TALLY_SUCCESS; i++)
    if (!c->from[from[i]].ops) r = peer_set_add(&in, from[i]);
  if (r == TALLY_SUCCESS && out.n + in.n > 0) {
    TLOG_INFO(TALLY_SUBSYS_INIT, "rank %d connects on first use: %d new connection(s) out, %d in", c->rank, out.n,
              in.n);
    r = connect_sets(c, &out, &in, 1, deadline);
    if (r == TALLY_SUCCESS) r = record_links(c, &out, &in);
  }
  peer_set_free(&out);
  peer_set_free(&in);
  return r;
}

tally_result_t tally_links_progress(struct tally_comm *c, int timeout_ms, int *moved) {
  int busy[TALLY_NUM_SLOTS], nbusy = 0;
  for (int s = 0; s < TALLY_NUM_SLOTS; s++)
    if (c->slots[s].ep && c->slots[s].ops->pending(c->slots[s].ep)) busy[nbusy++] = s;
  if (nbusy <= 1) {
    const struct tally_transport_slot *slot = &c->slots[nbusy ? busy[0] : TALLY_SLOT_NET];
    return slot->ops->progress(slot->ep, timeout_ms, moved);
  }
  /* Several transports have work and none can wait on the others' events: take turns. */
  *moved = 0;
  for (int i = 0; i < nbusy; i++) {
    const struct tally_transport_slot *slot = &c->slots[busy[i]];
    int slot_moved = 0;
    TALLY_CHECK(slot->ops->progress(slot->ep, *moved || timeout_ms == 0 ? 0 : 1, &slot_moved));
    *moved |= slot_moved;
  }
  return TALLY_SUCCESS;
}

void tally_links_wake(struct tally_comm *c) {
  for (int s = 0; s < TALLY_NUM_SLOTS; s++)
    if (c->slots[s].ep) c->slots[s].ops->wake(c->slots[s].ep);
}

void tally_links_close(struct tally_comm *c) {
  for (int s = 0; s < TALLY_NUM_SLOTS; s++)
    if (c->slots[s].ep) c->slots[s].ops->destroy(c->slots[s].ep); /* closes its connections */
}

const char *tally_links_describe(const struct tally_comm *c, char *buf, size_t len) {
  if (c->nranks < 2) {
    snprintf(buf, len, "no peers");
    return buf;
  }
  int n = snprintf(buf, len, "%s to rank %d, %s from rank %d", c->world.to_next.ops->name, c->world.next_rank,
                   c->world.from_prev.ops->name, c->world.prev_rank);
  if (c->local.size > 0 && n > 0 && (size_t)n < len)
    snprintf(buf + n, len - (size_t)n, "; hierarchical rings of %d local and %d cross-host ranks", c->local.size,
             c->cross.size);
  return buf;
}
