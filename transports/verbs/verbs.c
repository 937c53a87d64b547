/* RDMA verbs transport (rdma-core: libibverbs and librdmacm): RC queue pairs set up by the
 * connection manager, authenticated like every Tally connection, moving large payloads with RDMA
 * WRITE WITH IMMEDIATE straight into the receiver's buffer and small ones through pre-registered
 * control slots (protocol in verbs.h). An idle rank blocks on the completion channel.
 *
 * The endpoint listens as long as it lives, so that pairs no algorithm connected at init (alltoall's,
 * gather's, send/recv's) are connected over RDMA on first use too. Requests queue on the listen
 * channel between accepts and are taken by the next accept(): each must pass the authentication
 * handshake (handshake.c) before anything else is read from it, and its queue pair has no remote
 * access until then (connection.c), so a stranger that connects at any time reaches neither the
 * communicator nor the registered buffers in the protection domain, and is refused. An authenticated
 * rank that this accept does not want yet is kept for a later one (`early`), as over TCP. */
#define _GNU_SOURCE
#include "verbs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "device.h"

enum { ADDR_TIMEOUT_MS = 2000, MAX_CONNECTING = 64, CLOSE_DRAIN_S = 5 };

static int nonblocking(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void verbs_destroy(struct tally_endpoint *ep);

static tally_result_t open_endpoint(struct tally_endpoint *ep, const struct verbs_device_choice *dev) {
  ep->listen_channel = rdma_create_event_channel();
  ep->conn_channel = rdma_create_event_channel();
  if (!ep->listen_channel || !ep->conn_channel || rdma_create_id(ep->listen_channel, &ep->listen_id, NULL, RDMA_PS_TCP))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot use the RDMA connection manager (%s): is rdma_ucm loaded?",
                       strerror(errno));
  ep->addr = dev->addr;
  if (rdma_bind_addr(ep->listen_id, (struct sockaddr *)&ep->addr.ss) || rdma_listen(ep->listen_id, MAX_CONNECTING))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot listen for RDMA connections on %s: %s", dev->text, strerror(errno));
  ((struct sockaddr_in *)&ep->addr.ss)->sin_port = rdma_get_src_port(ep->listen_id);
  ep->verbs = ep->listen_id->verbs;
  if (!ep->verbs) return TALLY_ERROR(TALLY_ERR_SYSTEM, "the address of %s belongs to no RDMA device", dev->text);
  ep->pd = ibv_alloc_pd(ep->verbs);
  ep->comp_channel = ibv_create_comp_channel(ep->verbs);
  if (!ep->pd || !ep->comp_channel)
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "cannot set up %s: %s", dev->text, strerror(errno));
  if (nonblocking(ep->comp_channel->fd) || nonblocking(ep->conn_channel->fd) || nonblocking(ep->listen_channel->fd))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "fcntl: %s", strerror(errno));
  return TALLY_SUCCESS;
}

static tally_result_t verbs_create(const struct tally_transport_params *p, struct tally_endpoint **out) {
  struct verbs_device_choice dev;
  TALLY_CHECK(verbs_choose_device(p->ib_hca, p->ib_gid_index, p->numa_node, &dev));
  struct tally_endpoint *ep = calloc(1, sizeof *ep);
  if (!ep) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory creating the verbs endpoint");
  ep->abort_fd = p->abort_fd;
  ep->rank = p->rank;
  memcpy(ep->secret, p->secret, TALLY_SECRET_BYTES);
  snprintf(ep->device_text, sizeof ep->device_text, "%s", dev.text);
  tally_conn_list_init(&ep->conns);
  ep->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  tally_result_t r =
      ep->wake_fd < 0 ? TALLY_ERROR(TALLY_ERR_SYSTEM, "eventfd: %s", strerror(errno)) : open_endpoint(ep, &dev);
  if (r != TALLY_SUCCESS) {
    verbs_destroy(ep);
    return r;
  }
  tally_mr_cache_init(&ep->mr_cache, ep->pd, p->ib_reg_cache_bytes);
  TLOG_INFO(TALLY_SUBSYS_NET, "verbs endpoint on %s, listening on port %d", ep->device_text,
            ntohs(((struct sockaddr_in *)&ep->addr.ss)->sin_port));
  *out = ep;
  return TALLY_SUCCESS;
}

static void verbs_address(struct tally_endpoint *ep, struct tally_sockaddr *addr) { *addr = ep->addr; }

/* Waits for the next event on `ch` and checks it is `want`; the event is acknowledged. */
static tally_result_t wait_cm_event(struct tally_endpoint *ep, struct rdma_event_channel *ch,
                                    enum rdma_cm_event_type want, uint64_t deadline, const char *doing) {
  for (;;) {
    struct rdma_cm_event *ev;
    if (rdma_get_cm_event(ch, &ev) == 0) {
      enum rdma_cm_event_type got = ev->event;
      int status = ev->status;
      rdma_ack_cm_event(ev);
      if (got == want) return TALLY_SUCCESS;
      return TALLY_ERROR(TALLY_ERR_REMOTE, "%s: the connection manager reported %s (status %d)", doing,
                         rdma_event_str(got), status);
    }
    if (errno != EAGAIN) return TALLY_ERROR(TALLY_ERR_SYSTEM, "%s: rdma_get_cm_event: %s", doing, strerror(errno));
    if (tally_now_ns() >= deadline) return TALLY_ERROR(TALLY_ERR_TIMEOUT, "%s: no answer in time", doing);
    struct pollfd pfd[2] = {{.fd = ch->fd, .events = POLLIN}, {.fd = ep->abort_fd, .events = POLLIN}};
    if (poll(pfd, 2, (int)tally_ms_until(deadline, 100)) > 0 && pfd[1].revents)
      return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  }
}

static void name_peer(struct tally_conn *c, int rank, const struct sockaddr *addr) {
  struct tally_sockaddr a = {.len = sizeof(struct sockaddr_in)};
  memcpy(&a.ss, addr, sizeof(struct sockaddr_in));
  char text[80];
  c->peer = rank;
  snprintf(c->peer_text, sizeof c->peer_text, "rank %d (%s)", rank, tally_net_format(&a, text, sizeof text));
}

static tally_result_t connect_on(struct tally_endpoint *ep, struct rdma_event_channel *ch, uint64_t comm_id, int peer,
                                 const struct tally_sockaddr *addr, uint64_t deadline, struct tally_conn **out) {
  struct rdma_cm_id *id;
  if (rdma_create_id(ch, &id, NULL, RDMA_PS_TCP))
    return TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_create_id: %s", strerror(errno));
  struct tally_sockaddr src = ep->addr;
  ((struct sockaddr_in *)&src.ss)->sin_port = 0;
  tally_result_t r = TALLY_SUCCESS;
  if (rdma_resolve_addr(id, (struct sockaddr *)&src.ss, (struct sockaddr *)&addr->ss, ADDR_TIMEOUT_MS))
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_resolve_addr: %s", strerror(errno));
  if (r == TALLY_SUCCESS) r = wait_cm_event(ep, ch, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, "resolving the address");
  if (r == TALLY_SUCCESS && rdma_resolve_route(id, ADDR_TIMEOUT_MS))
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_resolve_route: %s", strerror(errno));
  if (r == TALLY_SUCCESS) r = wait_cm_event(ep, ch, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, "resolving the route");
  if (r == TALLY_SUCCESS && id->verbs != ep->verbs)
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "the route leaves through another RDMA device than %s", ep->device_text);
  struct tally_conn *c = NULL;
  if (r != TALLY_SUCCESS) {
    rdma_destroy_id(id);
    return r;
  }
  if ((r = verbs_conn_create(ep, id, &c)) != TALLY_SUCCESS) return r; /* it destroyed id */
  name_peer(c, peer, (const struct sockaddr *)&addr->ss);
  struct rdma_conn_param param = {.retry_count = 7, .rnr_retry_count = 7, .qp_num = c->qp->qp_num};
  if (rdma_connect(id, &param)) r = TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_connect: %s", strerror(errno));
  if (r == TALLY_SUCCESS) r = wait_cm_event(ep, ch, RDMA_CM_EVENT_CONNECT_RESPONSE, deadline, "connecting");
  if (r == TALLY_SUCCESS) r = verbs_qp_ready(c);
  if (r == TALLY_SUCCESS && rdma_establish(id))
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_establish: %s", strerror(errno));
  if (r == TALLY_SUCCESS) r = verbs_handshake_client(c, comm_id, deadline);
  if (r == TALLY_SUCCESS) r = verbs_grant_remote_write(c); /* the server proved it knows the secret */
  if (r == TALLY_SUCCESS && rdma_migrate_id(id, ep->conn_channel))
    r = TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_migrate_id: %s", strerror(errno));
  if (r == TALLY_SUCCESS) r = tally_conn_list_add(&ep->conns, c);
  if (r != TALLY_SUCCESS) {
    verbs_conn_destroy(c);
    return r;
  }
  *out = c;
  return TALLY_SUCCESS;
}

static tally_result_t verbs_connect(struct tally_endpoint *ep, uint64_t comm_id, int peer,
                                    const struct tally_sockaddr *addr, uint64_t deadline, struct tally_conn **conn) {
  struct rdma_event_channel *ch = rdma_create_event_channel();
  tally_result_t r = ch && nonblocking(ch->fd) == 0
                         ? connect_on(ep, ch, comm_id, peer, addr, deadline, conn)
                         : TALLY_ERROR(TALLY_ERR_SYSTEM, "rdma_create_event_channel: %s", strerror(errno));
  if (ch) rdma_destroy_event_channel(ch);
  if (r != TALLY_SUCCESS) {
    char text[80];
    return TALLY_ERROR(r, "connecting to rank %d at %s over RDMA from %s: %s", peer,
                       tally_net_format(addr, text, sizeof text), ep->device_text, tally_error_message());
  }
  return TALLY_SUCCESS;
}

/* One incoming connection, from its request to its admission. */
struct incoming {
  struct tally_conn *conn;
  int established;
  struct verbs_server_handshake hs;
};

struct accepting {
  struct tally_endpoint *ep;
  uint64_t comm_id;
  int npeers;
  const int *peers;
  struct tally_conn **conns;
  int admitted;
  struct incoming pending[MAX_CONNECTING];
  int npending;
};

static void refuse(struct accepting *a, int i, const char *why) {
  TLOG_WARN(TALLY_SUBSYS_NET, "refused an RDMA connection on %s: %s", a->ep->device_text, why);
  verbs_conn_destroy(a->pending[i].conn);
  a->pending[i] = a->pending[--a->npending];
}

/* Takes the early connection from `rank` into the endpoint's list, or returns NULL. */
static struct tally_conn *take_early(struct tally_endpoint *ep, int rank) {
  struct tally_conn *c = tally_early_conns_take(&ep->early, rank);
  if (!c || tally_conn_list_add(&ep->conns, c) == TALLY_SUCCESS) return c;
  TLOG_WARN(TALLY_SUBSYS_NET, "dropping the connection from %s: %s", c->peer_text, tally_error_message());
  verbs_conn_destroy(c);
  return NULL;
}

/* The client proved it belongs to the job: admit it when it is an expected peer (or keep it for a
 * later accept when it is a rank of this communicator that this accept does not want yet). Remote
 * access is granted before the verdict, so before the client can offer or use any buffer. */
static void admit(struct accepting *a, int i) {
  struct incoming *in = &a->pending[i];
  struct tally_conn *c = in->conn;
  struct tally_endpoint *ep = a->ep;
  int slot = -1, early = 0;
  for (int k = 0; k < a->npeers && in->hs.comm_id == a->comm_id; k++)
    if (a->peers[k] == in->hs.rank && !a->conns[k]) slot = k;
  char why[160];
  if (in->hs.comm_id != a->comm_id) {
    snprintf(why, sizeof why, "it belongs to communicator %016llx, not this one", (unsigned long long)in->hs.comm_id);
  } else if (slot < 0 && !(early = tally_early_conns_make_room(&ep->early, in->hs.rank, ep->rank, MAX_CONNECTING,
                                                                why, sizeof why))) {
    /* refused: `why` says it */
  } else if (verbs_grant_remote_write(c) != TALLY_SUCCESS || verbs_handshake_verdict(c, 1) != TALLY_SUCCESS ||
             rdma_migrate_id(c->id, ep->conn_channel) ||
             (!early && tally_conn_list_add(&ep->conns, c) != TALLY_SUCCESS)) {
    snprintf(why, sizeof why, "setting up the connection failed: %s", tally_error_message());
  } else {
    name_peer(c, in->hs.rank, rdma_get_peer_addr(c->id));
    if (early) {
      tally_early_conns_keep(&ep->early, c, in->hs.rank);
      TLOG_INFO(TALLY_SUBSYS_NET, "rank %d connected before this rank wanted it: kept for a later accept", in->hs.rank);
    } else {
      a->conns[slot] = c;
      a->admitted++;
    }
    a->pending[i] = a->pending[--a->npending];
    return;
  }
  verbs_handshake_verdict(c, 0);
  refuse(a, i, why);
}

static struct incoming *find_pending(struct accepting *a, struct rdma_cm_id *id, int *index) {
  for (int i = 0; i < a->npending; i++)
    if (a->pending[i].conn->id == id) {
      *index = i;
      return &a->pending[i];
    }
  return NULL;
}

static void on_listen_event(struct accepting *a, struct rdma_cm_event *ev) {
  int i;
  struct incoming *in = find_pending(a, ev->id, &i);
  if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
    struct tally_conn *c;
    if (a->npending == MAX_CONNECTING) {
      rdma_reject(ev->id, NULL, 0);
      rdma_destroy_id(ev->id);
    } else if (verbs_conn_create(a->ep, ev->id, &c) != TALLY_SUCCESS) {
      TLOG_WARN(TALLY_SUBSYS_NET, "cannot take an RDMA connection: %s", tally_error_message());
    } else if (verbs_qp_ready(c) != TALLY_SUCCESS) {
      TLOG_WARN(TALLY_SUBSYS_NET, "cannot take an RDMA connection: %s", tally_error_message());
      rdma_reject(ev->id, NULL, 0);
      verbs_conn_destroy(c);
    } else if (rdma_accept(ev->id, &(struct rdma_conn_param){
                                       .retry_count = 7, .rnr_retry_count = 7, .qp_num = c->qp->qp_num})) {
      TLOG_WARN(TALLY_SUBSYS_NET, "cannot accept an RDMA connection: rdma_accept: %s", strerror(errno));
      verbs_conn_destroy(c);
    } else {
      a->pending[a->npending++] = (struct incoming){.conn = c};
    }
  } else if (in && ev->event == RDMA_CM_EVENT_ESTABLISHED) {
    in->established = 1;
  } else if (in) {
    refuse(a, i, rdma_event_str(ev->event));
  }
}

static tally_result_t accept_loop(struct accepting *a, uint64_t deadline) {
  struct tally_endpoint *ep = a->ep;
  while (a->admitted < a->npeers) {
    struct rdma_cm_event *ev;
    while (rdma_get_cm_event(ep->listen_channel, &ev) == 0) {
      struct rdma_cm_event copy = *ev;
      rdma_ack_cm_event(ev); /* before a child id may be destroyed */
      on_listen_event(a, &copy);
    }
    for (int i = a->npending - 1; i >= 0; i--) {
      int done = 0;
      if (!a->pending[i].established) continue;
      if (verbs_handshake_server_step(a->pending[i].conn, &a->pending[i].hs, &done) != TALLY_SUCCESS)
        refuse(a, i, tally_error_message());
      else if (done)
        admit(a, i);
    }
    if (a->admitted == a->npeers) break;
    if (tally_now_ns() >= deadline) return TALLY_ERROR(TALLY_ERR_TIMEOUT, "no connection in time");
    struct pollfd pfd[2] = {{.fd = ep->listen_channel->fd, .events = POLLIN}, {.fd = ep->abort_fd, .events = POLLIN}};
    if (poll(pfd, 2, a->npending ? 1 : (int)tally_ms_until(deadline, 100)) > 0 && pfd[1].revents)
      return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  }
  return TALLY_SUCCESS;
}

static tally_result_t verbs_accept(struct tally_endpoint *ep, uint64_t comm_id, int npeers, const int *peers,
                                   uint64_t deadline, struct tally_conn **conns) {
  struct accepting *a = calloc(1, sizeof *a);
  if (!a) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory accepting RDMA connections");
  *a = (struct accepting){.ep = ep, .comm_id = comm_id, .npeers = npeers, .peers = peers, .conns = conns};
  for (int i = 0; i < npeers; i++)
    if ((conns[i] = take_early(ep, peers[i]))) a->admitted++;
  tally_result_t r = accept_loop(a, deadline);
  /* a request still in its handshake is refused; one that comes later waits on the listen channel */
  while (a->npending > 0) refuse(a, a->npending - 1, "the connections this rank waited for are all made");
  if (r != TALLY_SUCCESS) {
    char missing[256] = "";
    for (int i = 0; i < npeers; i++)
      if (!conns[i]) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %d", peers[i]);
    r = TALLY_ERROR(r, "rank %d waiting on %s for RDMA connections from ranks%s: %s", ep->rank, ep->device_text,
                    missing, tally_error_message());
  }
  free(a);
  return r;
}

static tally_result_t too_large(const struct tally_conn *c, size_t len) {
  return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                     "a message of %zu bytes to or from %s is larger than one RDMA write "
                     "can carry (4 GiB); lower TALLY_CHUNK_BYTES",
                     len, c->peer_text);
}

static tally_result_t verbs_isend(struct tally_conn *c, struct tally_request *req) {
  if (req->len > UINT32_MAX) return too_large(c, req->len);
  req->hdr.bytes = req->len;
  tally_header_encode(&req->hdr, req->wire);
  tally_request_enqueue(&c->send_head, &c->send_tail, req);
  return TALLY_SUCCESS;
}

static tally_result_t verbs_irecv(struct tally_conn *c, struct tally_request *req) {
  if (req->len > UINT32_MAX) return too_large(c, req->len);
  if (c->recv_seq - c->recv_done == VERBS_CREDITS)
    return TALLY_ERROR(TALLY_ERR_INTERNAL, "more than %d receives queued on the connection from %s", VERBS_CREDITS,
                       c->peer_text);
  req->hdr.bytes = req->len;
  struct tally_mr_hold *hold = verbs_recv_hold(c, c->recv_seq);
  *hold = (struct tally_mr_hold){0};
  if (req->len > VERBS_EAGER_BYTES) /* its payload lands in place: register it now */
    TALLY_CHECK(tally_mr_get(&c->ep->mr_cache, req->buf, req->len, 0, hold));
  tally_request_enqueue(&c->recv_head, &c->recv_tail, req);
  req->progressed = c->recv_seq++; /* its message number, which its credit carries */
  if (!c->uncredited) c->uncredited = req;
  return TALLY_SUCCESS;
}

static tally_result_t progress_conn(struct tally_conn *c, int *moved) {
  TALLY_CHECK(verbs_poll(c, moved));
  if (c->stopped) return TALLY_SUCCESS;
  TALLY_CHECK(verbs_match_receives(c));
  TALLY_CHECK(verbs_post_credits(c, moved));
  TALLY_CHECK(verbs_post_sends(c, moved));
  int busy = c->recv_head || c->send_head || c->writing_head;
  if (busy && (c->error_frame_pending || c->broken[0]))
    return verbs_conn_error(c, c->recv_head ? "receiving from" : "sending to");
  return TALLY_SUCCESS;
}

/* Disconnects and the like, for established connections. */
static void drain_cm_events(struct tally_endpoint *ep) {
  struct rdma_cm_event *ev;
  while (rdma_get_cm_event(ep->conn_channel, &ev) == 0) {
    struct tally_conn *c = ev->id->context;
    if (c && ev->event != RDMA_CM_EVENT_ESTABLISHED)
      verbs_conn_broken(c, "the connection manager reported %s", rdma_event_str(ev->event));
    rdma_ack_cm_event(ev);
  }
}

static tally_result_t progress_all(struct tally_endpoint *ep, int *moved) {
  drain_cm_events(ep);
  for (int i = 0; i < ep->conns.n; i++) TALLY_CHECK(progress_conn(ep->conns.items[i], moved));
  return TALLY_SUCCESS;
}

static tally_result_t verbs_test(struct tally_conn *c, struct tally_request *req, int *done) {
  int moved = 0;
  if (!req->done) TALLY_CHECK(progress_conn(c, &moved));
  *done = req->done;
  return TALLY_SUCCESS;
}

/* Completion events are only counted and acknowledged: the queues are polled anyway. */
static void drain_completion_events(struct tally_endpoint *ep) {
  struct ibv_cq *cq;
  void *context;
  while (ibv_get_cq_event(ep->comp_channel, &cq, &context) == 0) ibv_ack_cq_events(cq, 1);
  uint64_t count;
  if (read(ep->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
    TLOG_WARN(TALLY_SUBSYS_NET, "reading the wake eventfd: %s", strerror(errno));
}

static tally_result_t verbs_progress(struct tally_endpoint *ep, int timeout_ms, int *moved) {
  *moved = 0;
  TALLY_CHECK(progress_all(ep, moved));
  if (*moved || timeout_ms == 0) return TALLY_SUCCESS;
  for (int i = 0; i < ep->conns.n; i++) ibv_req_notify_cq(ep->conns.items[i]->cq, 0);
  TALLY_CHECK(progress_all(ep, moved)); /* what completed before the queues were armed */
  if (*moved) return TALLY_SUCCESS;
  struct pollfd pfd[4] = {{.fd = ep->abort_fd, .events = POLLIN},
                          {.fd = ep->comp_channel->fd, .events = POLLIN},
                          {.fd = ep->conn_channel->fd, .events = POLLIN},
                          {.fd = ep->wake_fd, .events = POLLIN}};
  int ready = poll(pfd, 4, timeout_ms);
  if (ready < 0 && errno != EINTR) return TALLY_ERROR(TALLY_ERR_SYSTEM, "poll: %s", strerror(errno));
  if (ready > 0 && pfd[0].revents)
    return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  drain_completion_events(ep);
  return progress_all(ep, moved);
}

static int verbs_pending(struct tally_endpoint *ep) {
  for (int i = 0; i < ep->conns.n; i++) {
    const struct tally_conn *c = ep->conns.items[i];
    if (c->send_head || c->recv_head || c->writing_head) return 1;
  }
  return 0;
}

static void verbs_wake(struct tally_endpoint *ep) {
  uint64_t one = 1;
  if (write(ep->wake_fd, &one, sizeof one) < 0) TLOG_WARN(TALLY_SUBSYS_NET, "eventfd write: %s", strerror(errno));
}

static void verbs_fail(struct tally_conn *c, const unsigned char *frame) {
  int between_messages = !c->writing_head;
  verbs_drop_requests(c);
  if (frame && between_messages && !c->stopped) {
    int slot = verbs_ctrl_begin(c, MSG_FRAME, 0, 0, 1);
    if (slot >= 0) {
      memcpy(verbs_send_slot(c, slot) + VERBS_CTRL_HEAD, frame, TALLY_WIRE_HEADER_BYTES);
      if (verbs_ctrl_post(c, slot, TALLY_WIRE_HEADER_BYTES) != TALLY_SUCCESS) slot = -1;
    }
    if (slot < 0) {
      TLOG_INFO(TALLY_SUBSYS_NET, "could not send an error report to %s; disconnecting instead", c->peer_text);
      verbs_disconnect(c);
    }
  } else if (frame) {
    verbs_disconnect(c); /* mid-message: the peer learns of the failure from the disconnect */
  }
  c->stopped = 1;
}

static int verbs_notify(struct tally_conn *c, const unsigned char notice[TALLY_WIRE_HEADER_BYTES]) {
  if (c->send_head || c->writing_head) return 0; /* mid-stream: the peer is receiving data anyway */
  int slot = verbs_ctrl_begin(c, MSG_FRAME, 0, 0, 2);
  if (slot < 0) return 0;
  memcpy(verbs_send_slot(c, slot) + VERBS_CTRL_HEAD, notice, TALLY_WIRE_HEADER_BYTES);
  return verbs_ctrl_post(c, slot, TALLY_WIRE_HEADER_BYTES) == TALLY_SUCCESS;
}

static tally_result_t verbs_register(struct tally_endpoint *ep, void *buf, size_t len, void **handle) {
  struct tally_mr_hold *hold = calloc(1, sizeof *hold);
  if (!hold) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory registering memory");
  tally_result_t r = tally_mr_get(&ep->mr_cache, buf, len, 0, hold);
  if (r != TALLY_SUCCESS) {
    free(hold);
    return r;
  }
  *handle = hold;
  return TALLY_SUCCESS;
}

static void verbs_deregister(struct tally_endpoint *ep, void *handle) {
  if (!handle) return;
  tally_mr_put(&ep->mr_cache, handle);
  free(handle);
}

/* A small message counts as sent once it is copied, so before the queue pair goes, what is still on
 * its way must arrive (bounded: a dead peer does not hold up the close). */
static void finish_sending(struct tally_conn *c) {
  uint64_t deadline = tally_deadline_after(CLOSE_DRAIN_S);
  while (!c->stopped && !c->broken[0] && (c->nfree_send < VERBS_SEND_SLOTS || c->writes_posted != c->writes_done) &&
         tally_now_ns() < deadline) {
    int moved = 0;
    if (verbs_poll(c, &moved) != TALLY_SUCCESS) return;
    if (!moved) usleep(100);
  }
}

static void verbs_close(struct tally_conn *c) {
  if (!c) return;
  finish_sending(c);
  verbs_drop_requests(c);
  tally_conn_list_remove(&c->ep->conns, c);
  verbs_conn_destroy(c);
}

static void verbs_destroy(struct tally_endpoint *ep) {
  if (!ep) return;
  while (ep->conns.n > 0) verbs_close(ep->conns.items[0]);
  tally_conn_list_free(&ep->conns);
  for (struct tally_conn *c; (c = tally_early_conns_take_any(&ep->early));) verbs_conn_destroy(c);
  tally_early_conns_free(&ep->early);
  if (ep->mr_cache.pd) tally_mr_cache_destroy(&ep->mr_cache);
  if (ep->listen_id) rdma_destroy_id(ep->listen_id);
  if (ep->comp_channel) ibv_destroy_comp_channel(ep->comp_channel);
  if (ep->pd) ibv_dealloc_pd(ep->pd);
  if (ep->listen_channel) rdma_destroy_event_channel(ep->listen_channel);
  if (ep->conn_channel) rdma_destroy_event_channel(ep->conn_channel);
  if (ep->wake_fd >= 0) close(ep->wake_fd);
  free(ep);
}

const struct tally_transport_ops tally_verbs_transport = {
    .name = "verbs",
    .create = verbs_create,
    .address = verbs_address,
    .connect = verbs_connect,
    .accept = verbs_accept,
    .isend = verbs_isend,
    .irecv = verbs_irecv,
    .test = verbs_test,
    .progress = verbs_progress,
    .pending = verbs_pending,
    .wake = verbs_wake,
    .fail = verbs_fail,
    .notify = verbs_notify,
    .register_memory = verbs_register,
    .deregister_memory = verbs_deregister,
    .close = verbs_close,
    .destroy = verbs_destroy,
};
