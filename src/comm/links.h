/* The links of a communicator: which transport carries the connection to each neighbour (shared
 * memory within a host, RDMA or else TCP across hosts, or what TALLY_TRANSPORT forces), the endpoints
 * behind them, and progress and waiting across all of them. */
#ifndef TALLY_LINKS_H
#define TALLY_LINKS_H

#include "comm.h"

/* Opens the network endpoints whose addresses the bootstrap publishes: TCP always, and verbs when
 * TALLY_TRANSPORT is auto or verbs and this rank has a usable RDMA device (forced verbs without one
 * fails; auto quietly goes without). Fills in me->addr, has_rdma and rdma_addr. */
tally_result_t tally_links_open_network(struct tally_comm *c, struct tally_peer_info *me);

/* Plans the rings (the world ring; the hierarchical local and cross-host rings when the hosts run
 * the same number of ranks, more than one each), chooses a transport for each neighbour and each
 * of the `npartners` other ranks the algorithms exchange with (tally_tuner_plan_partners) from
 * comm->topo and TALLY_TRANSPORT, opens the endpoints they need, and connects every distinct peer
 * once, both ways for the partners. Partners cost a connection each way (on one host, a
 * shared-memory ring each, which pages in only as far as the messages reach), which is why only
 * those of the algorithms TALLY_ALGO allows are passed. */
tally_result_t tally_links_connect(struct tally_comm *c, const int *partners, int npartners, uint64_t deadline);

/* Connections on first use (point-to-point calls): connects to the ranks in `to` and accepts from
 * those in `from` that have no connection in that direction yet, on the transport each pair
 * would use, authenticated with the job's secret like every other connection. The ranks at the
 * other end must be making the matching call (or have made it): a peer that never does fails this
 * with a timeout naming it. Duplicates in the lists are fine. RDMA pairs included: every endpoint
 * keeps listening for the communicator's life. */
tally_result_t tally_links_connect_peers(struct tally_comm *c, const int *to, int nto, const int *from, int nfrom,
                                         uint64_t deadline);

/* Moves every endpoint forward; when nothing moved, blocks up to timeout_ms in the endpoint that
 * has work (in turns, a millisecond each, when several have). */
tally_result_t tally_links_progress(struct tally_comm *c, int timeout_ms, int *moved);

/* Makes a blocked tally_links_progress return soon; safe from any thread. */
void tally_links_wake(struct tally_comm *c);

/* Closes every connection and endpoint. */
void tally_links_close(struct tally_comm *c);

/* "tcp to rank 1, shm from rank 3", for the log. */
const char *tally_links_describe(const struct tally_comm *c, char *buf, size_t len);

#endif
