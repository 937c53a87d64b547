/* Shared-memory transport: the vtable (see shm.h for the files behind it and the segment layout).
 *
 * connect() creates the segment that carries this rank's messages to the peer and waits until the
 * peer has mapped it; accept() opens the segments the peers made for this rank. isend()/irecv()
 * queue requests; progress passes copy what the ring has room or data for, and fail, on a dead or
 * misbehaving peer, with a message that names it. Nothing here blocks except connect(), accept()
 * and progress() with a timeout. */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

enum { ACCEPT_POLL_MS = 1 };

static tally_result_t shm_create(const struct tally_transport_params *p, struct tally_endpoint **out) {
  struct shm_settings settings;
  TALLY_CHECK(shm_settings_load(&settings, p->cores_shared));
  struct tally_endpoint *ep = calloc(1, sizeof *ep);
  if (!ep) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory creating the shared-memory endpoint");
  ep->rank = p->rank;
  ep->abort_fd = p->abort_fd;
  ep->settings = settings;
  tally_conn_list_init(&ep->conns);
  *out = ep;
  return TALLY_SUCCESS;
}

/* Peers find this rank's segments by name (communicator and ranks): there is nothing to publish. */
static void shm_address(struct tally_endpoint *ep, struct tally_sockaddr *addr) {
  (void)ep;
  memset(addr, 0, sizeof *addr);
}

static struct tally_conn *new_conn(struct tally_endpoint *ep, int peer, enum shm_side side) {
  struct tally_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->ep = ep;
  c->peer = peer;
  c->side = side;
  c->pidfd = -1;
  snprintf(c->peer_text, sizeof c->peer_text, "rank %d (shared memory)", peer);
  return c;
}

/* The peer is known: name it with its pid in messages, and watch it for death. */
static tally_result_t watch_peer(struct tally_conn *c) {
  snprintf(c->peer_text, sizeof c->peer_text, "rank %d (shared memory, pid %d)", c->peer, (int)c->peer_pid);
  if (c->pidfd >= 0) return TALLY_SUCCESS;
  c->pidfd = shm_open_pidfd(c->peer_pid);
  if (c->pidfd < 0 && errno == ESRCH) return shm_peer_failed(c);
  return TALLY_SUCCESS; /* no pidfd (kernel before 5.3): shm_peer_gone falls back to kill(pid, 0) */
}

/* Tells the peer the connection is gone (unless it was told why already), then frees it. */
static void free_conn(struct tally_conn *c) {
  if (!c) return;
  if (c->seg && atomic_load(&c->seg->state) == SEGMENT_MAPPED) shm_post_mailbox(c, NULL);
  shm_segment_unmap(c);
  shm_segment_unlink(c);
  if (c->pidfd >= 0) close(c->pidfd);
  free(c);
}

static tally_result_t add_conn(struct tally_endpoint *ep, struct tally_conn *c) {
  return tally_conn_list_add(&ep->conns, c);
}

static tally_result_t shm_connect(struct tally_endpoint *ep, uint64_t comm_id, int peer,
                                  const struct tally_sockaddr *addr, uint64_t deadline, struct tally_conn **conn) {
  (void)addr; /* the segment's name says where to meet */
  struct tally_conn *c = new_conn(ep, peer, SHM_SENDER);
  if (!c) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a connection");
  if (getrandom(&c->cma_probe, sizeof c->cma_probe, 0) != sizeof c->cma_probe)
    c->cma_probe = (uint64_t)tally_now_ns() ^ ((uint64_t)getpid() << 32);
  tally_result_t r = shm_segment_create(c, comm_id);
  if (r == TALLY_SUCCESS) r = shm_segment_wait_mapped(c, deadline);
  if (r == TALLY_SUCCESS) r = watch_peer(c);
  if (r == TALLY_SUCCESS) r = add_conn(ep, c);
  if (r != TALLY_SUCCESS) {
    free_conn(c);
    return TALLY_ERROR(r, "connecting to rank %d over shared memory: %s", peer, tally_error_message());
  }
  *conn = c;
  return TALLY_SUCCESS;
}

static tally_result_t accept_all(struct tally_endpoint *ep, uint64_t comm_id, int npeers, const int *peers,
                                 uint64_t deadline, struct tally_conn **conns) {
  for (int i = 0; i < npeers; i++)
    if (!(conns[i] = new_conn(ep, peers[i], SHM_RECEIVER)))
      return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a connection");
  int left = npeers;
  char *opened = calloc(npeers > 0 ? (size_t)npeers : 1, 1);
  if (!opened) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a connection");
  tally_result_t r = TALLY_SUCCESS;
  while (left > 0 && r == TALLY_SUCCESS) {
    for (int i = 0; i < npeers && r == TALLY_SUCCESS; i++) {
      if (opened[i]) continue;
      int found = 0;
      r = shm_segment_try_open(conns[i], comm_id, &found);
      if (r == TALLY_SUCCESS && found) r = watch_peer(conns[i]);
      if (r == TALLY_SUCCESS && found) opened[i] = 1, left--;
    }
    if (r != TALLY_SUCCESS || left == 0) break;
    if (tally_now_ns() >= deadline) {
      char missing[256] = "";
      for (int i = 0; i < npeers; i++)
        if (!opened[i]) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %d", peers[i]);
      r = TALLY_ERROR(TALLY_ERR_TIMEOUT,
                      "no shared-memory segment from ranks%s within TALLY_TIMEOUT: they have not started, failed "
                      "earlier, or do not run on this host (shared memory joins ranks of one host only; check "
                      "TALLY_HOSTID)",
                      missing);
    } else {
      for (int i = 0; i < npeers && r == TALLY_SUCCESS; i++)
        if (!opened[i]) r = shm_check_peer_alive(ep, peers[i], "waiting for its new shared-memory segment");
      if (r == TALLY_SUCCESS) r = shm_pause(ep, ACCEPT_POLL_MS);
    }
  }
  free(opened);
  for (int i = 0; i < npeers && r == TALLY_SUCCESS; i++) r = add_conn(ep, conns[i]);
  return r;
}

static tally_result_t shm_accept(struct tally_endpoint *ep, uint64_t comm_id, int npeers, const int *peers,
                                 uint64_t deadline, struct tally_conn **conns) {
  for (int i = 0; i < npeers; i++) conns[i] = NULL;
  tally_result_t r = accept_all(ep, comm_id, npeers, peers, deadline, conns);
  if (r == TALLY_SUCCESS) return TALLY_SUCCESS;
  for (int i = 0; i < npeers; i++) tally_conn_list_remove(&ep->conns, conns[i]);
  for (int i = 0; i < npeers; i++) {
    free_conn(conns[i]);
    conns[i] = NULL;
  }
  return TALLY_ERROR(r, "rank %d accepting shared-memory connections: %s", ep->rank, tally_error_message());
}

/* A request for the wrong direction or after fail() is a bug in the caller. */
static tally_result_t refuse_request(const struct tally_conn *c, const char *call) {
  if (c->broken)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "%s on the shared-memory connection with %s after it was failed", call,
                       c->peer_text);
  return TALLY_ERROR(TALLY_ERR_INTERNAL,
                     "%s on a shared-memory connection that %s %s: data flows from the rank that "
                     "connected to the rank that accepted",
                     call, c->side == SHM_SENDER ? "sends to" : "receives from", c->peer_text);
}

static tally_result_t shm_isend(struct tally_conn *c, struct tally_request *req) {
  if (c->side != SHM_SENDER || c->broken) return refuse_request(c, "isend");
  req->hdr.bytes = req->len;
  tally_header_encode(&req->hdr, req->wire);
  tally_request_enqueue(&c->send_head, &c->send_tail, req);
  if (c->send_head != req || c->notice_left) return TALLY_SUCCESS;
  /* alone in the queue: into the ring now, so the peer sees it without waiting for a progress pass */
  int moved = 0;
  return shm_send_pass(c, &moved);
}

static tally_result_t shm_irecv(struct tally_conn *c, struct tally_request *req) {
  if (c->side != SHM_RECEIVER || c->broken) return refuse_request(c, "irecv");
  req->hdr.bytes = req->len;
  tally_request_enqueue(&c->recv_head, &c->recv_tail, req);
  return TALLY_SUCCESS;
}

int shm_conn_pending(const struct tally_conn *c) {
  return c->send_head || c->ack_head || c->notice_left || c->recv_head;
}

static tally_result_t conn_pass(struct tally_conn *c, int *moved) {
  if (c->send_head || c->notice_left) TALLY_CHECK(shm_send_pass(c, moved));
  if (c->ack_head) TALLY_CHECK(shm_cma_collect_acks(c, moved));
  if (c->recv_head) TALLY_CHECK(shm_recv_pass(c, moved));
  return TALLY_SUCCESS;
}

tally_result_t shm_progress_conn(struct tally_conn *c, int *moved) {
  int conn_moved = 0;
  TALLY_CHECK(conn_pass(c, &conn_moved));
  if (conn_moved || !shm_conn_pending(c)) {
    if (conn_moved) *moved = 1;
    return TALLY_SUCCESS;
  }
  if (atomic_load_explicit(&c->seg->mailbox[c->side].state, memory_order_acquire) == MAILBOX_EMPTY)
    return TALLY_SUCCESS;
  TALLY_CHECK(conn_pass(c, &conn_moved)); /* the peer's last data came before its report: read that first */
  if (conn_moved) {
    *moved = 1;
    return TALLY_SUCCESS;
  }
  return shm_read_mailbox(c);
}

static tally_result_t shm_test(struct tally_conn *c, struct tally_request *req, int *done) {
  int moved = 0;
  if (!req->done) TALLY_CHECK(shm_progress_conn(c, &moved));
  *done = req->done;
  return TALLY_SUCCESS;
}

static tally_result_t shm_progress(struct tally_endpoint *ep, int timeout_ms, int *moved) {
  *moved = 0;
  for (int i = 0; i < ep->conns.n; i++) TALLY_CHECK(shm_progress_conn(ep->conns.items[i], moved));
  if (*moved || timeout_ms <= 0) return TALLY_SUCCESS;
  return shm_wait(ep, timeout_ms, moved);
}

static int shm_pending(struct tally_endpoint *ep) {
  for (int i = 0; i < ep->conns.n; i++)
    if (shm_conn_pending(ep->conns.items[i])) return 1;
  return 0;
}

static void shm_wake(struct tally_endpoint *ep) { shm_wake_endpoint(ep); }

static void shm_fail(struct tally_conn *c, const unsigned char *frame) {
  int mid_message = c->side == SHM_SENDER ? c->send_mid || c->ack_head ||
                                                (c->notice_left > 0 && c->notice_left < sizeof c->notice)
                                          : c->rhdr_have > 0;
  c->send_head = c->send_tail = NULL;
  c->send_mid = 0;
  c->ack_head = c->ack_tail = NULL; /* their buffers go back to the caller: the mailbox tells the reader */
  c->recv_head = c->recv_tail = NULL;
  c->notice_left = 0;
  c->rhdr_have = 0;
  c->rhdr_checked = 0;
  c->cma_desc_have = 0;
  if (!frame && !mid_message) return; /* the stream is intact: the connection stays usable */
  c->broken = 1;
  shm_post_mailbox(c, frame);
}

static int shm_notify(struct tally_conn *c, const unsigned char notice[TALLY_WIRE_HEADER_BYTES]) {
  if (c->side != SHM_SENDER || c->broken || c->send_head || c->notice_left) return 0;
  memcpy(c->notice, notice, sizeof c->notice);
  c->notice_left = sizeof c->notice;
  int moved = 0;
  if (shm_send_pass(c, &moved) != TALLY_SUCCESS) c->notice_left = 0; /* the data path reports the failure */
  return 1;
}

static void shm_close(struct tally_conn *c) {
  if (!c) return;
  tally_conn_list_remove(&c->ep->conns, c);
  free_conn(c);
}

static void shm_destroy(struct tally_endpoint *ep) {
  if (!ep) return;
  for (int i = 0; i < ep->conns.n; i++) free_conn(ep->conns.items[i]);
  tally_conn_list_free(&ep->conns);
  free(ep);
}

const struct tally_transport_ops tally_shm_transport = {
    .name = "shm",
    .create = shm_create,
    .address = shm_address,
    .connect = shm_connect,
    .accept = shm_accept,
    .isend = shm_isend,
    .irecv = shm_irecv,
    .test = shm_test,
    .progress = shm_progress,
    .pending = shm_pending,
    .wake = shm_wake,
    .fail = shm_fail,
    .notify = shm_notify,
    .register_memory = tally_transport_pin_nothing,
    .deregister_memory = tally_transport_unpin_nothing,
    .close = shm_close,
    .destroy = shm_destroy,
};
