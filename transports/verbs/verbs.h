/* The verbs transport's internals, shared by its files: the endpoint (device, protection domain,
 * event channels), the connection (an RC queue pair and its control slots), and the control
 * messages both sides exchange.
 *
 * Wire protocol on each queue pair (all messages are SENDs into the peer's posted control slots,
 * except the payload of a large message):
 *   - receiver -> sender  CREDIT  for each posted receive, in order: where its payload may be
 *                                 written (address, rkey, length), or "send it eager" for small ones
 *   - sender -> receiver  EAGER   small message: the Tally header and the payload, copied out of
 *                                 the control slot by the receiver
 *                         HEADER  large message: the Tally header, followed by an RDMA WRITE WITH
 *                                 IMMEDIATE of the payload straight into the credited buffer (the
 *                                 immediate carries the message number)
 *   - either way          FRAME   a waiting notice or an error frame (wire.h)
 *                         ACK     returns control slots (every message also returns them)
 *                         AUTH    the authentication handshake (auth_proto.h) at connection time
 * Flow control: a side may only send while the peer has a free control slot for it (`budget`);
 * the peer returns slots as it reposts them, so the device never has to retry for lack of a
 * posted receive. One slot is kept back for ACKs so that returns can always flow. */
#ifndef TALLY_VERBS_H
#define TALLY_VERBS_H

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdint.h>

#include "bootstrap/auth_proto.h"
#include "mr_cache.h"
#include "transports/conn_list.h"
#include "transports/early_conns.h"
#include "transports/transport.h"

enum {
  VERBS_RECV_SLOTS = 64, /* control slots posted for the peer's messages */
  VERBS_SEND_SLOTS = 64, /* control slots for this side's messages */
  VERBS_ARRIVALS = 4 * VERBS_RECV_SLOTS,
  VERBS_CREDITS = 256,      /* credits received and not yet used, by message number */
  VERBS_EAGER_BYTES = 8192, /* messages up to this size are copied through control slots */
  VERBS_CTRL_HEAD = 16,     /* type, flags, returned slots, message number */
  VERBS_CTRL_BYTES = VERBS_CTRL_HEAD + TALLY_WIRE_HEADER_BYTES + VERBS_EAGER_BYTES,
  VERBS_ACK_BATCH = 16, /* returned slots worth an ACK of their own */
  VERBS_MAX_WRITES = 64 /* RDMA writes in flight per connection */
};

enum verbs_msg { MSG_CREDIT = 1, MSG_EAGER, MSG_HEADER, MSG_FRAME, MSG_ACK, MSG_AUTH };
enum { FLAG_EAGER_ONLY = 1, FLAG_NO_PAYLOAD = 2 };

/* Work request ids: what completed, and for control messages, which slot. */
enum { WR_RECV = 1, WR_SEND = 2, WR_WRITE = 3 };
#define VERBS_WR_ID(kind, index) ((uint64_t)(kind) << 32 | (uint32_t)(index))

struct verbs_credit {
  uint32_t seq;
  int valid, eager_only;
  uint64_t addr, len;
  uint32_t rkey;
};

/* A received message waiting for its receive, in arrival order. */
struct verbs_arrival {
  int type; /* MSG_EAGER, MSG_HEADER, or 0 for the immediate of a landed payload */
  int slot; /* control slot holding it (EAGER, HEADER), -1 when none */
  uint32_t seq;
  uint32_t bytes; /* EAGER: payload bytes in the slot */
};

struct tally_conn {
  struct tally_endpoint *ep;
  struct rdma_cm_id *id;
  struct ibv_qp *qp; /* this transport's, not the connection manager's (connection.c) */
  struct ibv_cq *cq;
  int peer;
  char peer_text[96];
  unsigned char *ctrl; /* VERBS_RECV_SLOTS receive slots, then VERBS_SEND_SLOTS send slots */
  struct ibv_mr *ctrl_mr;
  uint32_t max_inline;

  /* flow control */
  int budget;    /* the peer's control slots free for this side's messages */
  int to_return; /* slots reposted since the peer was last told */
  int free_send[VERBS_SEND_SLOTS], nfree_send;

  /* receiving: requests in order, messages in order */
  struct tally_request *recv_head, *recv_tail;
  struct tally_request *uncredited;               /* first queued receive whose credit has not gone out */
  uint32_t recv_seq;                              /* number of the next receive queued (a queued receive keeps its
                                                     number in its `progressed` field) */
  uint32_t recv_done;                             /* receives completed: the number of the oldest queued one */
  struct tally_mr_hold recv_holds[VERBS_CREDITS]; /* by receive number: where payloads land */
  struct verbs_arrival arrivals[VERBS_ARRIVALS];
  int arrival_head, narrivals;
  int header_checked; /* the oldest receive's HEADER passed its check; its payload is due */

  /* sending */
  struct tally_request *send_head, *send_tail;       /* not yet handed to the device */
  struct tally_request *writing_head, *writing_tail; /* payload being written */
  uint32_t send_seq;                                 /* number of send_head */
  uint32_t writes_posted, writes_done;
  struct tally_mr_hold write_holds[VERBS_MAX_WRITES]; /* by write number: the source of each write */
  struct verbs_credit credits[VERBS_CREDITS];

  /* failure */
  int stopped;             /* fail() was called: send nothing more */
  int error_frame_pending; /* the peer reported a failure (error frame) */
  unsigned char error_frame[TALLY_WIRE_HEADER_BYTES];
  char broken[256]; /* why the connection is unusable (disconnect, completion error), "" if fine */
};

struct tally_endpoint {
  struct rdma_event_channel *listen_channel; /* connection requests, taken while accept() runs */
  struct rdma_cm_id *listen_id;              /* listens as long as the endpoint lives */
  struct tally_early_conns early;            /* authenticated peers that came before the accept that wants them
                                                (not in conns until an accept takes them) */
  struct rdma_event_channel *conn_channel; /* disconnects of established connections */
  struct ibv_context *verbs;
  struct ibv_pd *pd;
  struct ibv_comp_channel *comp_channel;
  struct tally_sockaddr addr;
  char device_text[128]; /* "rxe0 port 1 (10.0.2.15, GID 1)" for messages */
  int abort_fd, wake_fd;
  int rank;
  unsigned char secret[TALLY_SECRET_BYTES];
  struct tally_mr_cache mr_cache;
  struct tally_conn_list conns;
};

/* connection.c: a connection's resources and its control messages */
tally_result_t verbs_conn_create(struct tally_endpoint *ep, struct rdma_cm_id *id, struct tally_conn **out);
void verbs_conn_destroy(struct tally_conn *c);
/* Moves the queue pair through RTR to RTS (the passive side before rdma_accept, the active side on
 * RDMA_CM_EVENT_CONNECT_RESPONSE), still without remote access. */
tally_result_t verbs_qp_ready(struct tally_conn *c);
/* Lets the peer RDMA-write into this rank's registered memory: only once it is authenticated. */
tally_result_t verbs_grant_remote_write(struct tally_conn *c);
/* Flushes the queue pair and tells the peer the connection is gone. */
void verbs_disconnect(struct tally_conn *c);
unsigned char *verbs_send_slot(struct tally_conn *c, int slot);
unsigned char *verbs_recv_slot(struct tally_conn *c, int slot);
/* A free send slot with its head filled in (type, flags, seq, returned slots), or -1 when the
 * peer has fewer than `need` free slots for this side or no send slot is free. */
int verbs_ctrl_begin(struct tally_conn *c, enum verbs_msg type, int flags, uint32_t seq, int need);
/* Posts the control message in `slot` with `body` bytes after the head. */
tally_result_t verbs_ctrl_post(struct tally_conn *c, int slot, size_t body);
tally_result_t verbs_repost_recv(struct tally_conn *c, int slot);
/* Polls the connection's completion queue once and handles what completed (see data.c). */
tally_result_t verbs_poll(struct tally_conn *c, int *moved);
/* Marks the connection unusable, blaming the peer. */
void verbs_conn_broken(struct tally_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The error for a broken connection, or for the failure the peer reported. */
tally_result_t verbs_conn_error(struct tally_conn *c, const char *what);

/* handshake.c: the authentication handshake over a new connection. The client side blocks; the
 * server side is a step function so that one accepting thread serves many handshakes at once and
 * a silent stranger delays nobody. */
tally_result_t verbs_handshake_client(struct tally_conn *c, uint64_t comm_id, uint64_t deadline);
struct verbs_server_handshake {
  int state; /* 0: waiting for the hello, 1: waiting for the proof */
  unsigned char hello[TALLY_AUTH_HELLO_BYTES], challenge[TALLY_AUTH_CHALLENGE_BYTES];
  int rank;         /* the client's, from its proof */
  uint64_t comm_id; /* likewise */
};
/* Moves the handshake on with what has arrived; *done once the proof checked out. */
tally_result_t verbs_handshake_server_step(struct tally_conn *c, struct verbs_server_handshake *hs, int *done);
/* Tells the client whether it was admitted. */
tally_result_t verbs_handshake_verdict(struct tally_conn *c, int accepted);

/* data.c: handling of each completion, matching arrivals to receives, posting credits and sends */
tally_result_t verbs_on_completion(struct tally_conn *c, const struct ibv_wc *wc, int *moved);
tally_result_t verbs_match_receives(struct tally_conn *c);
/* The registration a receive (by its number) holds for its payload; empty for eager receives. */
struct tally_mr_hold *verbs_recv_hold(struct tally_conn *c, uint32_t number);
tally_result_t verbs_post_credits(struct tally_conn *c, int *moved);
tally_result_t verbs_post_sends(struct tally_conn *c, int *moved);
/* Forgets every queued request (their owner may be gone: requests are not touched) and drops the
 * registrations they held. */
void verbs_drop_requests(struct tally_conn *c);

#endif
