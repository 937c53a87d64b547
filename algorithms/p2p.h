/* A batch of point-to-point messages run together: the sends and recvs of a group, and the
 * messages alltoall, alltoallv, gather and scatter are made of (as NCCL builds them from grouped
 * sends and recvs). Every message is posted at once, so no order of calls across ranks can
 * deadlock; messages between two ranks match in the order they are posted on both, per direction,
 * and each carries a header the receiver checks before it takes a byte (wire.h): a count or
 * datatype that differs from the receiver's is TALLY_ERR_MISMATCH, never a truncated or overrun
 * buffer. Pairs without a connection yet are connected first (tally_links_connect_peers). */
#ifndef TALLY_P2P_H
#define TALLY_P2P_H

#include "comm/comm.h"

struct tally_p2p_msg {
  int peer;                    /* a rank of the communicator; this rank itself pairs with its own opposite */
  int is_send;                 /* 1: to peer, from buf; 0: from peer, into buf */
  void *buf;                   /* sends only read it */
  size_t bytes;                /* exactly this many bytes travel */
  struct tally_msg_header hdr; /* send: the header sent; recv: the header expected */
  int call;                    /* the caller's number for the call the message belongs to, for errors */
  struct tally_request req;    /* the executor's */
};

/* The header of a tally_send of `count` elements to `peer` (is_send) or of the matching tally_recv
 * from `peer`: numbered per pair and direction, which advances the communicator's count. */
void tally_p2p_header(struct tally_comm *comm, int peer, int is_send, size_t count, tally_datatype_t datatype,
                      struct tally_msg_header *hdr);

/* Runs the `n` messages. Messages to and from this rank itself pair up in order (the k-th send
 * with the k-th recv) and are copied. On failure *failed_call is the `call` of the message this
 * rank was held up by (the first unfinished one), and the message says which peer and why. */
tally_result_t tally_p2p_run(struct tally_comm *comm, struct tally_p2p_msg *msgs, int n, int *failed_call);

/* One step of a collective made of messages (alltoall.c, gather_scatter.c): sends `send_bytes` from
 * `send` to rank `to` and receives `recv_bytes` into `recv` from rank `from` (-1: no such message)
 * at once, both with header `hdr` (the call's fingerprint, its index the step), and waits for both. */
tally_result_t tally_p2p_exchange(struct tally_comm *comm, const struct tally_msg_header *hdr, int to,
                                  const void *send, size_t send_bytes, int from, void *recv, size_t recv_bytes);

/* An exchange of `bytes` with each of the `n` ranks first + j * stride (this rank among them): the
 * block from send + j * bytes to rank j of the set, the one from it into recv + j * bytes; all posted
 * at once in the pairwise order (to the rank k places after this one while receiving from the one k
 * places before, k = 0 .. n-1), so that not every rank starts with the same peer. */
tally_result_t tally_p2p_exchange_all(struct tally_comm *comm, const struct tally_msg_header *hdr, int first, int stride,
                                      int n, const void *send, void *recv, size_t bytes);

/* dst[i] = src[(first + i) mod n] for the n blocks of `block` bytes (dst and src do not overlap). */
void tally_blocks_rotate(void *dst, const void *src, int n, int first, size_t block);

#endif
