/* TCP transport: non-blocking sockets with TCP_NODELAY, one connection per peer and direction.
 *
 * Sends are batched: the queued requests of a connection go out in one sendmsg with an iovec of
 * their headers and payloads. Receives read the header and the payload straight into the posted
 * buffer with one readv (no staging copy); the header is checked against the expected one before
 * the request completes, and a receive can never write past its posted length.
 *
 * Waiting blocks in poll() on exactly the sockets with queued work plus the abort fd, so an idle
 * rank costs no CPU. A peer whose host goes silent is caught by TCP keep-alive probes and a user
 * timeout on unacknowledged data, both set to TALLY_KEEPALIVE seconds. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "core/bytes.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transports/conn_list.h"
#include "transports/early_conns.h"
#include "transports/transport.h"

enum { MAX_CONNS_POLLED = 256, SEND_BATCH = 16 };

struct tally_conn {
  struct tally_endpoint *ep;
  int fd;
  int peer;
  char peer_text[96];
  struct tally_request *send_head, *send_tail;
  int send_mid; /* the first queued send is partly sent (kept here: fail() may come after its request is gone) */
  struct tally_request *recv_head, *recv_tail;
  unsigned char rhdr[TALLY_WIRE_HEADER_BYTES]; /* header of the message being received */
  size_t rhdr_have;
  int rhdr_checked;
  unsigned char notice[TALLY_WIRE_HEADER_BYTES]; /* a waiting notice being sent (see notify) */
  size_t notice_left;                            /* its bytes not yet sent */
};

struct tally_endpoint {
  int listen_fd;
  struct tally_sockaddr addr;
  int abort_fd;
  int rank;
  int keepalive_s;
  unsigned char secret[TALLY_SECRET_BYTES];
  struct tally_conn_list conns;
  struct tally_early_conns early; /* also in conns, which closes them */
  int (*peer_gone)(void *ctx, int peer); /* see tally_transport_params */
  void *peer_gone_ctx;
};

static tally_result_t tcp_create(const struct tally_transport_params *p, struct tally_endpoint **out) {
  struct tally_endpoint *ep = calloc(1, sizeof *ep);
  if (!ep) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory creating the TCP endpoint");
  ep->abort_fd = p->abort_fd;
  ep->rank = p->rank;
  ep->keepalive_s = p->keepalive_s;
  ep->peer_gone = p->peer_gone;
  ep->peer_gone_ctx = p->peer_gone_ctx;
  memcpy(ep->secret, p->secret, TALLY_SECRET_BYTES);
  tally_conn_list_init(&ep->conns);
  tally_result_t r = tally_net_pick_address(p->ifname, &ep->addr);
  if (r == TALLY_SUCCESS) r = tally_net_listen(&ep->addr, &ep->listen_fd);
  if (r != TALLY_SUCCESS) {
    tally_conn_list_free(&ep->conns);
    free(ep);
    return r;
  }
  *out = ep;
  return TALLY_SUCCESS;
}

static void tcp_address(struct tally_endpoint *ep, struct tally_sockaddr *addr) { *addr = ep->addr; }

/* Probes an idle peer every second and gives up on a peer (idle or with data unacknowledged) whose
 * host has not answered for `seconds`: the socket then fails with ETIMEDOUT. */
static void keep_alive(int fd, int seconds) {
  int on = 1, idle = 1, interval = 1, count = seconds > 1 ? seconds - 1 : 1;
  unsigned int user_timeout_ms = (unsigned int)seconds * 1000;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms) != 0)
    TLOG_WARN(TALLY_SUBSYS_NET,
              "cannot enable TCP keep-alive (%s): a peer whose host goes silent is only noticed "
              "after TALLY_TIMEOUT",
              strerror(errno));
}

static tally_result_t add_conn(struct tally_endpoint *ep, int fd, int peer, const char *text, struct tally_conn **out) {
  struct tally_conn *c = calloc(1, sizeof *c);
  if (!c) return TALLY_ERROR(TALLY_ERR_SYSTEM, "out of memory for a connection");
  c->ep = ep;
  c->fd = fd;
  c->peer = peer;
  snprintf(c->peer_text, sizeof c->peer_text, "rank %d (%s)", peer, text);
  int bufsize = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
  keep_alive(fd, ep->keepalive_s);
  tally_result_t r = tally_conn_list_add(&ep->conns, c);
  if (r != TALLY_SUCCESS) {
    free(c);
    return r;
  }
  *out = c;
  return TALLY_SUCCESS;
}

static void data_payload(unsigned char *payload, int rank, uint64_t comm_id) {
  memset(payload, 0, TALLY_AUTH_PAYLOAD_BYTES);
  tally_put_u32(payload, (uint32_t)rank);
  tally_put_u64(payload + 4, comm_id);
}

static tally_result_t tcp_connect(struct tally_endpoint *ep, uint64_t comm_id, int peer,
                                  const struct tally_sockaddr *addr, uint64_t deadline, struct tally_conn **conn) {
  char text[80];
  tally_net_format(addr, text, sizeof text);
  unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES];
  data_payload(payload, ep->rank, comm_id);
  int fd;
  /* every rank listens from the moment its endpoint exists, before its address is published: a
   * refused connection means the rank is gone */
  tally_result_t r = tally_net_connect_listening(addr, deadline, ep->abort_fd, &fd);
  if (r == TALLY_ERR_REMOTE) tally_error_blame(peer);
  if (r == TALLY_SUCCESS) {
    r = tally_auth_connect(fd, ep->secret, TALLY_PURPOSE_DATA, payload, deadline, ep->abort_fd);
    if (r == TALLY_SUCCESS) r = add_conn(ep, fd, peer, text, conn);
    if (r != TALLY_SUCCESS) close(fd);
  }
  if (r != TALLY_SUCCESS) return TALLY_ERROR(r, "connecting to rank %d at %s: %s", peer, text, tally_error_message());
  return TALLY_SUCCESS;
}

struct accept_ctx {
  struct tally_endpoint *ep;
  uint64_t comm_id;
  int npeers;
  const int *peers;
  struct tally_conn **conns;
  int want; /* connections tally_auth_accept still keeps: the wanted ones, plus each early one */
  int gone; /* a wanted rank found gone (watch_missing), or -1 */
  uint64_t next_probe_ns;
  int probe_gap_ms; /* until the probe after the next */
};

/* Keeps an authenticated connection from `rank`, which this accept does not want, for a later one. */
static int keep_early(struct accept_ctx *a, int fd, int rank, const char *from, char *why, size_t whylen) {
  struct tally_endpoint *ep = a->ep;
  struct tally_conn *c;
  if (!tally_early_conns_make_room(&ep->early, rank, ep->rank, 0, why, whylen)) return 0;
  if (add_conn(ep, fd, rank, from, &c) != TALLY_SUCCESS) {
    snprintf(why, whylen, "%s", tally_error_message());
    return 0;
  }
  tally_early_conns_keep(&ep->early, c, rank);
  a->want++; /* it does not count towards the wanted ones */
  return 1;
}

static int admit_peer(void *arg, int fd, const unsigned char *payload, const char *from, char *why, size_t whylen) {
  struct accept_ctx *a = arg;
  int rank = (int)tally_get_u32(payload);
  if (tally_get_u64(payload + 4) != a->comm_id) {
    snprintf(why, whylen, "it belongs to another communicator of this job");
    return 0;
  }
  for (int i = 0; i < a->npeers; i++) {
    if (a->peers[i] != rank || a->conns[i]) continue;
    if (add_conn(a->ep, fd, rank, from, &a->conns[i]) != TALLY_SUCCESS) {
      snprintf(why, whylen, "%s", tally_error_message());
      return 0;
    }
    return 1;
  }
  return keep_early(a, fd, rank, from, why, whylen);
}

/* While the accept waits (tally_auth_watch_fn): a wanted rank that has not connected and is gone
 * (ep->peer_gone) never will, so the wait ends (want 0) and the accept fails naming it. The probes
 * come 0.2 s into the wait, then at intervals that double up to 5 s: each probe of a live rank
 * stays in its recovery listener's queue (nothing accepts there), so a long wait for a slow rank
 * adds at most a few dozen. */
static void watch_missing(void *arg) {
  enum { LONGEST_GAP_MS = 5000 };
  struct accept_ctx *a = arg;
  uint64_t now = tally_now_ns();
  if (!a->ep->peer_gone || a->gone >= 0 || now < a->next_probe_ns) return;
  a->next_probe_ns = now + (uint64_t)a->probe_gap_ms * 1000000ull;
  a->probe_gap_ms = a->probe_gap_ms < LONGEST_GAP_MS / 2 ? 2 * a->probe_gap_ms : LONGEST_GAP_MS;
  for (int i = 0; i < a->npeers; i++) {
    if (a->conns[i] || !a->ep->peer_gone(a->ep->peer_gone_ctx, a->peers[i])) continue;
    a->gone = a->peers[i];
    a->want = 0;
    return;
  }
}

static tally_result_t tcp_accept(struct tally_endpoint *ep, uint64_t comm_id, int npeers, const int *peers,
                                 uint64_t deadline, struct tally_conn **conns) {
  enum { FIRST_PROBE_MS = 200 }; /* peers that are alive usually connect before */
  struct accept_ctx a = {.ep = ep,
                         .comm_id = comm_id,
                         .npeers = npeers,
                         .peers = peers,
                         .conns = conns,
                         .gone = -1,
                         .next_probe_ns = tally_now_ns() + FIRST_PROBE_MS * 1000000ull,
                         .probe_gap_ms = 2 * FIRST_PROBE_MS};
  for (int i = 0; i < npeers; i++) {
    conns[i] = tally_early_conns_take(&ep->early, peers[i]);
    if (!conns[i]) a.want++;
  }
  tally_result_t r = a.want == 0 ? TALLY_SUCCESS
                                 : tally_auth_accept(ep->listen_fd, ep->secret, TALLY_PURPOSE_DATA, &a.want, deadline,
                                                     ep->abort_fd, admit_peer, watch_missing, &a);
  if (r == TALLY_SUCCESS && a.gone >= 0) {
    tally_error_blame(a.gone);
    r = TALLY_ERROR(TALLY_ERR_REMOTE,
                    "rank %d is gone: it never connected, and nothing listens on its recovery port any more (its "
                    "process exited, or it destroyed the communicator)",
                    a.gone);
  }
  if (r != TALLY_SUCCESS) {
    char missing[256] = "";
    for (int i = 0; i < npeers; i++)
      if (!conns[i]) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %d", peers[i]);
    return TALLY_ERROR(r, "rank %d waiting for connections from ranks%s: %s", ep->rank, missing, tally_error_message());
  }
  return TALLY_SUCCESS;
}

static tally_result_t tcp_isend(struct tally_conn *c, struct tally_request *req) {
  req->hdr.bytes = req->len;
  tally_header_encode(&req->hdr, req->wire);
  tally_request_enqueue(&c->send_head, &c->send_tail, req);
  return TALLY_SUCCESS;
}

static tally_result_t tcp_irecv(struct tally_conn *c, struct tally_request *req) {
  req->hdr.bytes = req->len;
  tally_request_enqueue(&c->recv_head, &c->recv_tail, req);
  return TALLY_SUCCESS;
}

static tally_result_t conn_failed(struct tally_conn *c, const char *what, int err) {
  tally_error_blame(c->peer);
  if (err == ETIMEDOUT)
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "%s %s: its host has not answered for %d s (TALLY_KEEPALIVE); it is down, frozen, or cut off "
                       "from this host by the network",
                       what, c->peer_text, c->ep->keepalive_s);
  return TALLY_ERROR(TALLY_ERR_REMOTE, "%s %s: %s; that rank has probably failed or exited early (check its log)", what,
                     c->peer_text, err ? strerror(err) : "connection closed by the peer");
}

/* A send failed because the peer closed: if it left an error report behind (ranks send one both
 * ways when they fail), the report names the real culprit rather than the peer. */
static tally_result_t conn_send_failed(struct tally_conn *c, int err) {
  unsigned char frame[TALLY_WIRE_HEADER_BYTES];
  if (recv(c->fd, frame, sizeof frame, MSG_DONTWAIT) == (ssize_t)sizeof frame) {
    tally_result_t r = tally_error_frame_decode(frame, c->peer);
    if (r != TALLY_SUCCESS) return r;
  }
  return conn_failed(c, "sending to", err);
}

/* Sends what is left of a waiting notice; it goes out ahead of any data and is not progress.
 * Returns 0, or the errno of a failed send. */
static int conn_send_notice(struct tally_conn *c) {
  while (c->notice_left > 0) {
    ssize_t sent =
        send(c->fd, c->notice + sizeof c->notice - c->notice_left, c->notice_left, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return errno;
    }
    c->notice_left -= (size_t)sent;
  }
  return 0;
}

/* Sends what the socket takes of the queued requests; *moved is set when bytes went out. */
static tally_result_t conn_send_some(struct tally_conn *c, int *moved) {
  int err = conn_send_notice(c);
  if (err) return conn_send_failed(c, err);
  if (c->notice_left > 0) return TALLY_SUCCESS;
  while (c->send_head) {
    struct iovec iov[2 * SEND_BATCH];
    int n = 0, reqs = 0;
    for (struct tally_request *q = c->send_head; q && reqs < SEND_BATCH; q = q->next, reqs++) {
      size_t off = q->progressed;
      if (off < TALLY_WIRE_HEADER_BYTES) {
        iov[n++] = (struct iovec){q->wire + off, TALLY_WIRE_HEADER_BYTES - off};
        off = TALLY_WIRE_HEADER_BYTES;
      }
      size_t data_off = off - TALLY_WIRE_HEADER_BYTES;
      if (data_off < q->len) iov[n++] = (struct iovec){(char *)q->buf + data_off, q->len - data_off};
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return TALLY_SUCCESS;
      return conn_send_failed(c, errno);
    }
    *moved = 1;
    size_t left = (size_t)sent;
    while (c->send_head) {
      struct tally_request *q = c->send_head;
      size_t remaining = TALLY_WIRE_HEADER_BYTES + q->len - q->progressed;
      if (left < remaining) {
        q->progressed += left;
        break;
      }
      left -= remaining;
      q->progressed += remaining;
      c->send_head = q->next;
      if (!c->send_head) c->send_tail = NULL;
      q->done = 1;
    }
  }
  return TALLY_SUCCESS;
}

/* Sends what the socket takes, and notes whether the stream stopped inside a message. */
static tally_result_t conn_send(struct tally_conn *c, int *moved) {
  tally_result_t r = conn_send_some(c, moved);
  c->send_mid = c->send_head && c->send_head->progressed > 0;
  return r;
}

/* The header just completed is a waiting notice: mark the request when the notice is about its
 * collective, and drop the notice. Bytes that readv put behind it into the payload are the start
 * of the next header. Returns 0 when the header is not a notice. */
static int skip_notice(struct tally_conn *c, struct tally_request *q) {
  uint32_t seq;
  if (!tally_notice_decode(c->rhdr, c->peer, &seq)) return 0;
  if (seq == q->hdr.seq) q->peer_waiting = 1;
  size_t behind = q->progressed, to_header = behind < TALLY_WIRE_HEADER_BYTES ? behind : TALLY_WIRE_HEADER_BYTES;
  memcpy(c->rhdr, q->buf, to_header);
  memmove(q->buf, (char *)q->buf + to_header, behind - to_header);
  c->rhdr_have = to_header;
  q->progressed = behind - to_header;
  return 1;
}

/* Reads what has arrived for the queued receives, straight into their buffers. */
static tally_result_t conn_recv(struct tally_conn *c, int *moved) {
  while (c->recv_head) {
    struct tally_request *q = c->recv_head;
    ssize_t got;
    if (c->rhdr_have < TALLY_WIRE_HEADER_BYTES) {
      size_t want_hdr = TALLY_WIRE_HEADER_BYTES - c->rhdr_have;
      struct iovec iov[2] = {{c->rhdr + c->rhdr_have, want_hdr}, {q->buf, q->len}};
      got = readv(c->fd, iov, q->len ? 2 : 1);
      if (got > 0) {
        size_t g = (size_t)got;
        c->rhdr_have += g < want_hdr ? g : want_hdr;
        q->progressed = g > want_hdr ? g - want_hdr : 0;
      }
    } else {
      got = recv(c->fd, (char *)q->buf + q->progressed, q->len - q->progressed, MSG_DONTWAIT);
      if (got > 0) q->progressed += (size_t)got;
    }
    if (got == 0) return conn_failed(c, "receiving from", 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return TALLY_SUCCESS;
      return conn_failed(c, "receiving from", errno);
    }
    size_t data = (size_t)got; /* bytes that were not waiting notices */
    while (c->rhdr_have == TALLY_WIRE_HEADER_BYTES && !c->rhdr_checked && skip_notice(c, q))
      data = data > TALLY_WIRE_HEADER_BYTES ? data - TALLY_WIRE_HEADER_BYTES : 0;
    if (data > 0) *moved = 1;
    if (c->rhdr_have == TALLY_WIRE_HEADER_BYTES && !c->rhdr_checked) {
      TALLY_CHECK(tally_header_check(c->rhdr, &q->hdr, c->peer));
      c->rhdr_checked = 1;
    }
    if (c->rhdr_checked && q->progressed == q->len) {
      c->recv_head = q->next;
      if (!c->recv_head) c->recv_tail = NULL;
      c->rhdr_have = 0;
      c->rhdr_checked = 0;
      q->done = 1;
    }
  }
  return TALLY_SUCCESS;
}

static tally_result_t progress_conn(struct tally_conn *c, int *moved) {
  if (c->send_head || c->notice_left) TALLY_CHECK(conn_send(c, moved));
  if (c->recv_head) TALLY_CHECK(conn_recv(c, moved));
  return TALLY_SUCCESS;
}

static tally_result_t progress_all(struct tally_endpoint *ep, int *moved) {
  for (int i = 0; i < ep->conns.n; i++) TALLY_CHECK(progress_conn(ep->conns.items[i], moved));
  return TALLY_SUCCESS;
}

static tally_result_t tcp_test(struct tally_conn *c, struct tally_request *req, int *done) {
  int moved = 0;
  if (!req->done) TALLY_CHECK(progress_conn(c, &moved));
  *done = req->done;
  return TALLY_SUCCESS;
}

static tally_result_t tcp_progress(struct tally_endpoint *ep, int timeout_ms, int *moved) {
  *moved = 0;
  TALLY_CHECK(progress_all(ep, moved));
  if (*moved || timeout_ms == 0) return TALLY_SUCCESS;
  struct pollfd pfd[MAX_CONNS_POLLED + 1];
  nfds_t n = 0;
  pfd[n++] = (struct pollfd){.fd = ep->abort_fd, .events = POLLIN};
  for (int i = 0; i < ep->conns.n && n <= MAX_CONNS_POLLED; i++) {
    struct tally_conn *c = ep->conns.items[i];
    short events = (short)((c->recv_head ? POLLIN : 0) | (c->send_head || c->notice_left ? POLLOUT : 0));
    if (events) pfd[n++] = (struct pollfd){.fd = c->fd, .events = events};
  }
  int ready = poll(pfd, n, timeout_ms);
  if (ready < 0 && errno != EINTR) return TALLY_ERROR(TALLY_ERR_SYSTEM, "poll: %s", strerror(errno));
  if (ready > 0 && pfd[0].revents)
    return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  return progress_all(ep, moved);
}

static int tcp_pending(struct tally_endpoint *ep) {
  for (int i = 0; i < ep->conns.n; i++)
    if (ep->conns.items[i]->send_head || ep->conns.items[i]->recv_head || ep->conns.items[i]->notice_left) return 1;
  return 0;
}

/* poll() already wakes on the abort eventfd, the only reason another thread wakes an endpoint. */
static void tcp_wake(struct tally_endpoint *ep) { (void)ep; }

static void tcp_fail(struct tally_conn *c, const unsigned char *frame) {
  int between_messages = !c->send_mid && (c->notice_left == 0 || c->notice_left == sizeof c->notice);
  c->send_head = c->send_tail = NULL;
  c->send_mid = 0;
  c->recv_head = c->recv_tail = NULL;
  c->rhdr_have = 0;
  c->rhdr_checked = 0;
  c->notice_left = 0;
  if (frame && between_messages) {
    /* best effort: a full socket buffer or a dead peer just means the frame is not delivered */
    if (send(c->fd, frame, TALLY_WIRE_HEADER_BYTES, MSG_NOSIGNAL | MSG_DONTWAIT) != TALLY_WIRE_HEADER_BYTES)
      TLOG_INFO(TALLY_SUBSYS_NET, "could not send an error report to %s", c->peer_text);
  }
  if (frame) shutdown(c->fd, SHUT_WR); /* whatever was not delivered, the peer now sees end of stream */
}

static int tcp_notify(struct tally_conn *c, const unsigned char notice[TALLY_WIRE_HEADER_BYTES]) {
  if (c->send_head || c->notice_left) return 0; /* mid-stream: the peer is reading data anyway */
  memcpy(c->notice, notice, sizeof c->notice);
  c->notice_left = sizeof c->notice;
  if (conn_send_notice(c) != 0) c->notice_left = 0; /* the data path reports the failure */
  return 1;
}

static void tcp_close(struct tally_conn *c) {
  if (!c) return;
  tally_conn_list_remove(&c->ep->conns, c);
  close(c->fd);
  free(c);
}

static void tcp_destroy(struct tally_endpoint *ep) {
  if (!ep) return;
  while (ep->conns.n > 0) tcp_close(ep->conns.items[0]); /* the early ones too */
  tally_early_conns_free(&ep->early);
  tally_conn_list_free(&ep->conns);
  close(ep->listen_fd);
  free(ep);
}

const struct tally_transport_ops tally_tcp_transport = {
    .name = "tcp",
    .create = tcp_create,
    .address = tcp_address,
    .connect = tcp_connect,
    .accept = tcp_accept,
    .isend = tcp_isend,
    .irecv = tcp_irecv,
    .test = tcp_test,
    .progress = tcp_progress,
    .pending = tcp_pending,
    .wake = tcp_wake,
    .fail = tcp_fail,
    .notify = tcp_notify,
    .register_memory = tally_transport_pin_nothing,
    .deregister_memory = tally_transport_unpin_nothing,
    .close = tcp_close,
    .destroy = tcp_destroy,
};
