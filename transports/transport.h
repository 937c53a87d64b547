/* The transport vtable: every way of moving bytes between two ranks (tcp/, shm/, verbs/)
 * implements these operations, and nothing above this layer knows which one carries a connection.
 * (The CUDA IPC window is not a transport: it is the device path's one-host shortcut,
 * src/device/ipc/.)
 *
 * Contract:
 * - create() opens an endpoint that listens for peers; address() is what other ranks connect to
 *   (published through the bootstrap).
 * - connect()/accept() establish authenticated connections for one communicator (comm_id); each
 *   side learns the other's rank.
 * - isend()/irecv() queue a request and return at once. Messages on one connection are matched in
 *   order: the k-th send matches the k-th receive. The header in the request is sent ahead of the
 *   payload and, on the receiving side, checked against the expected one before any payload is
 *   used; a receive completes only with exactly req->len bytes.
 * - test() moves the request's connection forward without blocking and says whether it is done.
 * - progress() moves every queued request forward; when nothing moved it blocks for at most
 *   timeout_ms (0: never blocks), and returns early when the endpoint's abort fd fires or wake()
 *   is called. A failed connection fails the call with a message naming the peer; the endpoint
 *   is then unusable.
 * - pending() says whether any request is queued on the endpoint (the communicator blocks only in
 *   endpoints with work); wake() may be called from any thread and makes a blocked progress()
 *   return soon (tally_comm_abort calls it).
 * - fail() is called when a collective on the connection failed: it drops the queued requests
 *   (their owner is gone), sends `frame` (an error frame, see wire.h) when one is given and the
 *   connection sits between messages, and then stops sending on the connection. A frame may also
 *   go against the direction of the data; the peer reads it when its own sends break.
 * - notify() sends a waiting notice (see wire.h) ahead of anything else when nothing is queued on
 *   the connection; a receiver that reads a notice for the collective of its oldest queued receive
 *   sets that request's peer_waiting, skips the notice, and does not count it as progress.
 * - Connections are kept alive: a peer whose host stops answering (power loss, cable, partition)
 *   fails the connection after keepalive_s seconds, even when no data is due.
 * - register_memory() is a hook for transports that must pin buffers (a no-op for tcp).
 */
#ifndef TALLY_TRANSPORT_H
#define TALLY_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "bootstrap/net.h"
#include "bootstrap/uid.h"
#include "core/wire.h"
#include "tally.h"

struct tally_endpoint;
struct tally_conn;

struct tally_request {
  void *buf; /* send: data to send (read only); receive: where the payload lands */
  size_t len;
  struct tally_msg_header hdr; /* send: header to send; receive: header expected */
  volatile int done;           /* set by the transport when the request completed */
  int peer_waiting;            /* receive: the sender said it is itself waiting (see notify) */
  uint64_t posted_ns;          /* the communicator's tracer: when it was posted; 0 when not traced (comm/trace.h) */
  /* transport-private */
  size_t progressed;
  unsigned char wire[TALLY_WIRE_HEADER_BYTES];
  struct tally_request *next;
};

struct tally_transport_params {
  const char *ifname; /* TALLY_SOCKET_IFNAME filter */
  const unsigned char *secret;
  int rank;
  int abort_fd;    /* readable once the communicator is aborted */
  int keepalive_s; /* a silent peer host is declared dead after this many seconds */
  int cores_shared; /* this host runs more ranks than their bindings span hardware threads (comm.h): shm
                       then reads large messages with one copy by default, where a copy costs a core */
  /* verbs */
  const char *ib_hca;        /* TALLY_IB_HCA filter, "" for any device */
  int ib_gid_index;          /* -1: chosen from the GID table */
  int numa_node;             /* this rank's NUMA node (-1: unknown), to pick the nearest device */
  size_t ib_reg_cache_bytes; /* bound of the registration cache */
  /* Whether rank `peer` is known to have exited, asked now and then while an accept waits for its
   * connection (tcp), so that the wait fails at once, naming it, instead of at the deadline; NULL:
   * never known. Called from the accepting thread; it may take up to a tenth of a second. */
  int (*peer_gone)(void *ctx, int peer);
  void *peer_gone_ctx;
};

struct tally_transport_ops {
  const char *name;
  tally_result_t (*create)(const struct tally_transport_params *params, struct tally_endpoint **ep);
  void (*address)(struct tally_endpoint *ep, struct tally_sockaddr *addr);
  tally_result_t (*connect)(struct tally_endpoint *ep, uint64_t comm_id, int peer, const struct tally_sockaddr *addr,
                            uint64_t deadline, struct tally_conn **conn);
  /* Accepts one connection from each of peers[0..npeers); conns[i] is the one from peers[i]. */
  tally_result_t (*accept)(struct tally_endpoint *ep, uint64_t comm_id, int npeers, const int *peers, uint64_t deadline,
                           struct tally_conn **conns);
  tally_result_t (*isend)(struct tally_conn *conn, struct tally_request *req);
  tally_result_t (*irecv)(struct tally_conn *conn, struct tally_request *req);
  tally_result_t (*test)(struct tally_conn *conn, struct tally_request *req, int *done);
  tally_result_t (*progress)(struct tally_endpoint *ep, int timeout_ms, int *moved);
  int (*pending)(struct tally_endpoint *ep);
  void (*wake)(struct tally_endpoint *ep);
  void (*fail)(struct tally_conn *conn, const unsigned char *frame);
  /* Returns 1 when the notice was sent or queued, 0 when the connection is busy with data. */
  int (*notify)(struct tally_conn *conn, const unsigned char notice[TALLY_WIRE_HEADER_BYTES]);
  tally_result_t (*register_memory)(struct tally_endpoint *ep, void *buf, size_t len, void **handle);
  void (*deregister_memory)(struct tally_endpoint *ep, void *handle);
  void (*close)(struct tally_conn *conn);
  void (*destroy)(struct tally_endpoint *ep);
};

/* register_memory and deregister_memory for transports that reach any user memory as it is (tcp
 * copies through sockets, shm through its rings): nothing to pin. */
tally_result_t tally_transport_pin_nothing(struct tally_endpoint *ep, void *buf, size_t len, void **handle);
void tally_transport_unpin_nothing(struct tally_endpoint *ep, void *handle);

/* Appends `req` to a connection's queue (head, tail), marking it not done and not started. */
void tally_request_enqueue(struct tally_request **head, struct tally_request **tail, struct tally_request *req);

/* The transport named `name` ("tcp", "shm", "verbs"), or NULL when this build has none by that name. */
const struct tally_transport_ops *tally_transport_find(const char *name);

#endif
