/* Per-neighbour transport choice, the endpoints behind it, and progress across them (links.h). */
#define _GNU_SOURCE
#include "links.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

static const char *const slot_transport[TALLY_NUM_SLOTS] = {"tcp", "shm"};

static tally_result_t open_slot(struct tally_comm *c, int slot, const unsigned char *secret) {
  struct tally_transport_slot *s = &c->slots[slot];
  if (s->ep) return TALLY_SUCCESS;
  s->ops = tally_transport_find(slot_transport[slot]);
  struct tally_transport_params params = {.ifname = c->cfg.ifname,
                                          .secret = secret,
                                          .rank = c->rank,
                                          .abort_fd = c->abort_fd,
                                          .keepalive_s = c->cfg.keepalive_s};
  return s->ops->create(&params, &s->ep);
}

tally_result_t tally_links_open_network(struct tally_comm *c, const unsigned char *secret) {
  return open_slot(c, TALLY_SLOT_NET, secret);
}

/* Which endpoint carries the connection with `peer`, by TALLY_TRANSPORT: auto (shared memory within
 * a host when this build has it, the network otherwise), tcp, or shm. */
static tally_result_t choose_slot(const struct tally_comm *c, int peer, int *slot) {
  const char *mode = c->cfg.transport;
  int same_host = tally_job_topo_same_host(&c->topo, c->rank, peer);
  int have_shm = tally_transport_find("shm") != NULL;
  *slot = TALLY_SLOT_NET;
  if (!strcmp(mode, "tcp")) return TALLY_SUCCESS;
  if (!strcmp(mode, "shm")) {
    if (!same_host)
      return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                         "TALLY_TRANSPORT=shm, but rank %d runs on another host (%s) than rank %d (%s): shared memory "
                         "only reaches ranks of one host; use TALLY_TRANSPORT=auto",
                         peer, c->peers[peer].topo.hostname, c->rank, c->peers[c->rank].topo.hostname);
    if (!have_shm)
      return TALLY_ERROR(TALLY_ERR_UNSUPPORTED,
                         "TALLY_TRANSPORT=shm, but this build of Tally has no shared-memory transport; use auto or tcp");
  }
  if (same_host && have_shm) *slot = TALLY_SLOT_LOCAL;
  return TALLY_SUCCESS;
}

/* Accepts the connection from the previous rank while the main thread connects to the next. */
struct accept_job {
  struct tally_comm *comm;
  const struct tally_transport_slot *slot;
  uint64_t deadline;
  tally_result_t result;
  char message[1024];
};

static void *accept_prev(void *arg) {
  struct accept_job *job = arg;
  struct tally_comm *c = job->comm;
  job->result =
      job->slot->ops->accept(job->slot->ep, c->comm_id, 1, &c->prev_rank, job->deadline, &c->from_prev.conn);
  snprintf(job->message, sizeof job->message, "%s", tally_error_message());
  return NULL;
}

tally_result_t tally_links_connect_ring(struct tally_comm *c, const unsigned char *secret, uint64_t deadline) {
  c->next_rank = (c->rank + 1) % c->nranks;
  c->prev_rank = (c->rank + c->nranks - 1) % c->nranks;
  int next_slot, prev_slot;
  TALLY_CHECK(choose_slot(c, c->next_rank, &next_slot));
  TALLY_CHECK(choose_slot(c, c->prev_rank, &prev_slot));
  TALLY_CHECK(open_slot(c, next_slot, secret));
  TALLY_CHECK(open_slot(c, prev_slot, secret));
  const struct tally_transport_slot *to = &c->slots[next_slot], *from = &c->slots[prev_slot];
  c->to_next.ops = to->ops;
  c->from_prev.ops = from->ops;

  struct accept_job job = {.comm = c, .slot = from, .deadline = deadline};
  pthread_t thread;
  int err = pthread_create(&thread, NULL, accept_prev, &job);
  if (err != 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot start a thread to accept connections: %s", strerror(err));
  tally_result_t r = to->ops->connect(to->ep, c->comm_id, c->next_rank, &c->peers[c->next_rank].addr, deadline,
                                      &c->to_next.conn);
  if (r != TALLY_SUCCESS) {
    uint64_t one = 1; /* wake the accepting thread at once */
    if (write(c->abort_fd, &one, sizeof one) < 0) TLOG_WARN(TALLY_SUBSYS_INIT, "eventfd write: %s", strerror(errno));
    tally_links_wake(c);
  }
  pthread_join(thread, NULL);
  if (r != TALLY_SUCCESS) return r;
  if (job.result != TALLY_SUCCESS) return TALLY_ERROR(job.result, "%s", job.message);
  return TALLY_SUCCESS;
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
  if (c->nranks < 2)
    snprintf(buf, len, "no peers");
  else
    snprintf(buf, len, "%s to rank %d, %s from rank %d", c->to_next.ops->name, c->next_rank, c->from_prev.ops->name,
             c->prev_rank);
  return buf;
}
