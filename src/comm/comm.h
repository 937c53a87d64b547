/* The communicator: who this rank is, its connections, its configuration and its error state.
 * Internal: algorithms reach peers only through the transport vtable and the ring neighbours
 * recorded here. */
#ifndef TALLY_COMM_H
#define TALLY_COMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "bootstrap/bootstrap_wire.h"
#include "core/config.h"
#include "counting.h"
#include "flight.h"
#include "trace.h"
#include "tally.h"
#include "topology/link_cost.h"
#include "topology/topo.h"
#include "transports/transport.h"

/* A connection, the transport that carries it, and where it goes. */
struct tally_link {
  const struct tally_transport_ops *ops;
  struct tally_conn *conn;
  int peer; /* the rank at the other end */
  int slot; /* the endpoint slot of its transport (enum below) */
};

/* A ring of ranks: this rank's place in it and its links to the next and the previous member.
 * Rings may share connections (a pair of ranks has at most one connection per direction). */
struct tally_ring {
  int index, size;          /* this rank's position in the ring, and the number of members */
  int next_rank, prev_rank; /* the neighbours' communicator ranks */
  struct tally_link to_next, from_prev;
};

/* The endpoints a communicator may use: the network one (TCP) always, the RDMA one (verbs) when
 * this rank has a usable device (both addresses are what the bootstrap publishes), the local one
 * (shared memory) when a neighbour shares this host. */
enum { TALLY_SLOT_NET, TALLY_SLOT_LOCAL, TALLY_SLOT_RDMA, TALLY_NUM_SLOTS };
struct tally_transport_slot {
  const struct tally_transport_ops *ops;
  struct tally_endpoint *ep; /* NULL: not used by this communicator */
};

/* What a communicator has done, counted always (api/stats.c reports it). Written only by the
 * thread that runs the communicator's calls (the caller holding it busy, or its stream queue's
 * thread, through which every call goes once it exists), so an addition is a relaxed load and
 * store, no locked instruction; read at any time. Calls are counted per collective and algorithm; the point-to-point row counts sends,
 * recvs and alltoallvs, the time of the batches they ran in. */
#define TALLY_COUNTED_ALGOS (TALLY_NUM_ALGOS + 1) /* the last: point-to-point batches (no algorithm) */
#define TALLY_COUNTED_KINDS (TALLY_NUM_COLLS + 1) /* the last: point-to-point */
struct tally_counters {
  _Atomic uint64_t calls[TALLY_COUNTED_KINDS][TALLY_COUNTED_ALGOS];
  _Atomic uint64_t ticks[TALLY_COUNTED_KINDS][TALLY_COUNTED_ALGOS]; /* time inside the calls (clock.h) */
  _Atomic uint64_t bytes[TALLY_COUNTED_KINDS][TALLY_COUNTED_ALGOS]; /* this rank's input bytes */
  _Atomic uint64_t slot_sent[TALLY_NUM_SLOTS], slot_received[TALLY_NUM_SLOTS], slot_messages[TALLY_NUM_SLOTS];
  _Atomic uint64_t *sent, *received; /* [nranks]: payload bytes posted to / from each rank */
  _Atomic uint64_t *waited_ns;       /* [nranks]: time waiting with nothing moving, on each rank */
  uint32_t untimed_left;             /* small calls still to run before the next timed one (dispatch.c) */
};

/* One of the tuner's recent choices (tuning/tuner.c fills and reads them; the communicator only keeps
 * them): a call of the same collective, count, datatype and op runs the same way, since nothing else
 * the choice depends on changes after init. */
struct tally_tuner_choice {
  size_t count;
  uint8_t valid, coll, datatype, op;
  uint8_t algo, wire, rhd_whole_vector;
  size_t chunk_bytes;
  double predicted_us;
};
enum { TALLY_TUNER_CHOICES = 16 };

struct tally_comm {
  int rank, nranks;
  struct tally_config cfg;
  uint64_t comm_id;
  uint32_t seq; /* collectives started on this communicator */

  struct tally_transport_slot slots[TALLY_NUM_SLOTS];
  struct tally_ring world;                  /* every rank in rank order */
  struct tally_ring world_reverse;          /* every rank in reverse rank order (rank r sends to r-1): the second
                                               ring channel; size 0 unless TALLY_RING_CHANNELS=2 and 3+ ranks */
  struct tally_ring local;                  /* the ranks of this host; size 0 unless the hierarchical rings exist */
  struct tally_ring cross;                  /* the ranks with this local rank, one per host; size 0 likewise */
  int hosts_in_rank_order;                  /* with those rings, host h runs ranks hL .. hL+L-1 (set once at init) */
  int cores_shared; /* this host runs more ranks than their bindings span hardware threads
                       (tally_job_topo_cores_shared): a waiting rank yields its core between polls (else
                       it polls without a system call until it blocks) */
  size_t cache_bytes; /* the host's last-level cache, which the one-host choices scale with: TALLY_CACHE_BYTES,
                         else hwloc's, else TALLY_FALLBACK_CACHE_BYTES (set once at init) */
  unsigned char secret[TALLY_SECRET_BYTES]; /* the job's: connections made after init prove it too */
  struct tally_link *links;                 /* every distinct connection, each once (see tally_comm_fail) */
  int nlinks;
  struct tally_link *to, *from;      /* [nranks]: the connection to / from each rank (ops NULL: none) */
  uint32_t *p2p_sent, *p2p_received; /* [nranks]: point-to-point messages sent to / received from each rank
                                        (their headers carry this number; algorithms/p2p.h) */
  int rhd_ready;                     /* the recursive halving-doubling partners are connected */
  int tree_ready;                    /* the double binary trees' parents and children are connected */
  int tree_rooted_ready;             /* and every rank to both trees' roots (tree broadcast and reduce) */
  struct tally_board *board;         /* small collectives in one round, when every rank is on this host */
  /* The cost model's parameters for each link class, identical on every rank (the tuner's choices
   * must agree): measured at init, read from the cache or TALLY_TUNING_FILE (calibrate.h). */
  struct tally_cost_params link_cost[TALLY_NUM_LINK_CLASSES];
  struct tally_tuner_choice tuner_choices[TALLY_TUNER_CHOICES]; /* by a hash of the call's shape */

  int abort_fd; /* eventfd: readable once tally_comm_abort was called */
  atomic_int aborted;
  /* A communicator being built from this one (split, dup, shrink, grow), which tally_comm_abort of
   * this one aborts too; read and written under api/communicator.c's lock. */
  struct tally_comm *constructing;
  atomic_int busy;      /* a collective is running: a second thread is refused */
  tally_result_t error; /* first error; the communicator refuses collectives after it */
  char last_error[1024];
  char failure[1024]; /* the message of the failure that put the communicator in error state */

  struct tally_peer_info *peers; /* every rank's address and topology, from the bootstrap */
  int shrink_attempts;           /* tally_comm_shrink calls on this communicator (api/comm_split.c) */
  int recovery_fd;               /* listening socket where this rank can serve as a shrink's root (its
                                    port is peers[rank].recovery_port; api/comm_split.c); -1: none */
  int grow_fd;                   /* the listening socket of the root tally_comm_grow_id prepared, until
                                    tally_comm_grow starts it (api/comm_grow.c); -1: none pending */
  tally_unique_id_t grow_id;     /* the id it handed out for that grow */
  _Atomic unsigned char *failed; /* [nranks]: 1 for each rank a failure report, a dead connection or a
                                    stalled ring blamed (tally_comm_failed_ranks) */
  int numa_node;                 /* this rank's, for choosing the nearest RDMA device */
  struct tally_job_topo topo;    /* hosts and local ranks, computed from peers */

  struct tally_counters counters;
  struct tally_flight flight; /* the last calls, for the log when the communicator fails (flight.h) */
  struct tally_trace *trace;  /* TALLY_TRACE's writer (trace.h); NULL: not traced */

  void *scratch; /* grows to the largest partial-result buffer a collective needed */
  size_t scratch_bytes;
  void *p2p_msgs; /* the array a batch of point-to-point messages is built in (api/group.c), kept for the next */
  size_t p2p_msgs_bytes;
  void *staging; /* chunk-sized receive slots for reductions */
  size_t staging_bytes;
  struct tally_stream_queue *stream_queue; /* NULL until the first call with device buffers */
  int every_rank_has_gpu;                  /* every rank's topology names a GPU (device/call_split.h) */
  struct tally_ipc_window *ipc_window;     /* src/device/ipc: NULL until its first call */
  int ipc_refused;                         /* the window could not be opened on every rank */
};

/* Whether `peer` runs on another host than this rank: its link is the network's (TALLY_LINK_NET's
 * cost class), where compressed calls send 16-bit values (TALLY_COMPRESS). */
static inline int tally_comm_across_hosts(const struct tally_comm *comm, int peer) {
  return !tally_job_topo_same_host(&comm->topo, comm->rank, peer);
}

/* Posts a send / a receive on `link`, counting its bytes against the peer and the transport, and
 * noting when it was posted when the communicator is traced. */
static inline tally_result_t tally_link_isend(struct tally_comm *comm, const struct tally_link *link,
                                              struct tally_request *req) {
  tally_count(&comm->counters.sent[link->peer], req->len);
  tally_count(&comm->counters.slot_sent[link->slot], req->len);
  tally_count(&comm->counters.slot_messages[link->slot], 1);
  if (comm->trace) tally_trace_posted(req);
  return link->ops->isend(link->conn, req);
}
static inline tally_result_t tally_link_irecv(struct tally_comm *comm, const struct tally_link *link,
                                              struct tally_request *req) {
  tally_count(&comm->counters.received[link->peer], req->len);
  tally_count(&comm->counters.slot_received[link->slot], req->len);
  if (comm->trace) tally_trace_posted(req);
  return link->ops->irecv(link->conn, req);
}
/* The caller saw `req`, posted on `link`, complete: its span goes to the trace when there is one (a
 * request already traced, or posted untraced, is skipped, so calling it twice is harmless). */
static inline void tally_link_done(struct tally_comm *comm, const struct tally_link *link, struct tally_request *req,
                                   int is_send) {
  if (comm->trace && req->posted_ns) tally_trace_message(comm, link, req, is_send);
}

/* Frees what this layer owns: the links and endpoints, the peer and topology tables, the buffers,
 * and the communicator itself. The device path's state and the board are closed before (api/). */
void tally_comm_free(struct tally_comm *comm);

/* After collective `result` failed: tells every connected rank who is to blame (if known) so the
 * failure travels around the rings, and drops the requests the failed collective left queued.
 * A rank blamed for a lost connection or a stall (not for a mismatch) is marked failed. */
void tally_comm_fail(struct tally_comm *comm, tally_result_t result);

/* Waiting without stealing a core: call once per loop of an algorithm's step machine with
 * `moved` saying whether the loop made progress. Polls the transport (without a system call where
 * this rank has a hardware thread to itself, yielding the core between polls where ranks share
 * cores), and once nothing has moved for cfg.spin_us, blocks in the transport until something
 * arrives. Fails on abort, when nothing has moved for TALLY_TIMEOUT, or when the transport fails.
 * Shortly before the timeout it sends the next rank a waiting notice, so that when a stalled rank
 * holds up a whole ring, only the rank right after it blames it and the others wait for that
 * verdict (see tally_waiter.upstream_waiting). */
struct tally_waiter {
  const struct tally_ring *ring;       /* the ring being waited in: its next rank gets the notice */
  const struct tally_msg_header *call; /* the collective's fingerprint, for the board check; NULL when
                                          waiting for point-to-point messages (board_page.h) */
  uint64_t timeout_ns;
  uint64_t grace_ns;    /* a notice goes out this long before the timeout (see wire.h) */
  uint64_t idle_since;  /* 0: not idle */
  int hot_polls;        /* polls since the clock was last read (comm->cores_shared: unused) */
  int notified;         /* the next rank was told that this rank is waiting */
  int told_others;      /* the other ranks this one sends to were told as well */
  int timed_out;        /* set when progress failed because this rank waited too long (not because a
                           peer reported a timeout of its own) */
  int upstream_waiting; /* set by the caller: the rank it waits for said it is waiting too, so the
                           timeout is extended by grace_ns for that rank's verdict to arrive */
  int waiting_for;      /* the rank idle time is counted against: the ring's previous rank unless the
                           caller knows better (comm->counters.waited_ns) */
};
void tally_waiter_start(struct tally_comm *comm, const struct tally_ring *ring, const struct tally_msg_header *call,
                        struct tally_waiter *w);
tally_result_t tally_comm_progress(struct tally_comm *comm, struct tally_waiter *w, int *moved);

/* Writes the ranks marked failed, in order, at most `max` of them; returns how many there are. */
int tally_comm_failed_list(const struct tally_comm *comm, int *ranks, int max);

/* The rank this thread's last failure blames (tally_error_blamed), or -1 when none or when the
 * number is not a rank of this communicator (a peer's report is not trusted blindly). */
int tally_comm_blamed(const struct tally_comm *comm);

/* "rank 5 (10.0.0.7)": a rank and the host it runs on, for error messages. */
const char *tally_comm_rank_text(const struct tally_comm *comm, int rank, char *buf, size_t len);

/* Where `rank`'s recovery listener is (its bootstrap address with peers[rank].recovery_port; see
 * comm->recovery_fd): writes it to *out and returns 1. Returns 0 when the rank has none (port 0),
 * *out then holding the address with port 0, or when the communicator has no peer table yet or
 * `rank` is not one of its ranks, *out then untouched. */
int tally_comm_recovery_address(const struct tally_comm *comm, int rank, struct tally_sockaddr *out);

/* Returns a buffer of at least `bytes` owned by the communicator (scratch or staging). */
tally_result_t tally_comm_buffer(void **buf, size_t *have, size_t bytes);

#endif
