/* Internals of the shared-memory transport, shared by its files:
 *   settings.c  TALLY_SHM_SLOTS, TALLY_SHM_SLOT_BYTES, TALLY_SHM_CMA_BYTES
 *   segment.c   one segment per connection: name, create and reserve, open and check, map, unlink
 *   fifo.c      the ring buffer and the stream of messages over it (headers, notices, payloads)
 *   cma.c       the single-copy path for large messages (process_vm_readv from the sender)
 *   wait.c      sleeping and waking (futexes in the segment), mailboxes, peer death (pidfd), abort
 *   shm.c       the transport's vtable
 *
 * A connection joins one ordered pair of ranks of one communicator. Data flows from the side that
 * called connect() (the sender, which creates the segment) to the side that called accept() (the
 * receiver). The segment:
 *
 *   0      struct shm_segment: identity and layout (written once by the sender), the handshake,
 *          then one cache line each for head, tail (+ acks), each side's futex word, and each
 *          side's mailbox (error reports and closes, read when the side would otherwise wait)
 *   4096   the ring, slots x slot_bytes bytes: a byte stream of records
 *            [40-byte header][payload]             two copies: sender -> ring -> receiver
 *            [40-byte header][16-byte descriptor]  one copy: the receiver reads the sender's buffer
 *            [40-byte waiting notice]
 *
 * Nothing read from the segment is trusted: the identity is checked field by field once and kept
 * in the connection; counters are range-checked at every load; lengths come from the request.
 */
#ifndef TALLY_SHM_H
#define TALLY_SHM_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "transports/conn_list.h"
#include "transports/transport.h"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "the shared-memory transport needs lock-free 32- and 64-bit atomics (they live in shared memory)");

enum {
  SHM_VERSION = 1,
  SHM_HEADER_BYTES = 4096, /* the ring starts at this offset */
  SHM_CACHE_LINE = 64,
  SHM_CMA_DESC_BYTES = 16, /* address and length of the sender's buffer */
  SHM_NAME_BYTES = 64,
};
#define SHM_MAGIC 0x54414c4c5953484dull /* "TALLYSHM" */

enum shm_side { SHM_SENDER = 0, SHM_RECEIVER = 1 };
enum shm_segment_state { SEGMENT_CREATING = 0, SEGMENT_READY = 1, SEGMENT_MAPPED = 2 };
enum shm_mailbox_state { MAILBOX_EMPTY = 0, MAILBOX_CLOSED = 1, MAILBOX_FRAME = 2 };

/* A side sleeps on its own word; the other side bumps it and wakes it, only when it sleeps. */
struct shm_wake {
  alignas(SHM_CACHE_LINE) _Atomic uint32_t seq;
  _Atomic uint32_t sleeping;
};

/* What a side leaves for the other one to read when it waits: an error report or a close. */
struct shm_mailbox {
  alignas(SHM_CACHE_LINE) _Atomic uint32_t state;
  unsigned char frame[TALLY_WIRE_HEADER_BYTES];
};

struct shm_segment {
  /* identity and layout, written by the sender before state becomes SEGMENT_READY */
  uint64_t magic;
  uint32_t version, header_bytes;
  uint64_t comm_id;
  int32_t sender_rank, receiver_rank;
  int32_t sender_pid;
  int32_t receiver_pid; /* written by the receiver before SEGMENT_MAPPED */
  uint64_t pid_namespace;
  uint32_t slots, slot_bytes;
  uint64_t ring_offset, segment_bytes;
  uint64_t cma_min_bytes;                      /* 0: single-copy path off */
  uint64_t cma_probe_address, cma_probe_value; /* the receiver reads this from the sender to test it */
  uint32_t cma_ok;                             /* written by the receiver: 1 when the probe worked */
  _Atomic uint32_t state;
  /* the stream, each counter on its own cache line */
  alignas(SHM_CACHE_LINE) _Atomic uint64_t head; /* bytes written into the ring, by the sender */
  alignas(SHM_CACHE_LINE) _Atomic uint64_t tail; /* bytes consumed, by the receiver */
  _Atomic uint64_t cma_acked;                    /* single-copy messages read, by the receiver */
  struct shm_wake wake[2];                       /* wake[s]: side s sleeps on it */
  struct shm_mailbox mailbox[2];                 /* mailbox[s]: for side s to read */
};
_Static_assert(sizeof(struct shm_segment) <= SHM_HEADER_BYTES, "the segment header outgrew its page");

struct shm_settings {
  uint32_t slots, slot_bytes;
  uint64_t cma_min_bytes; /* 0: off */
};

struct tally_conn {
  struct tally_endpoint *ep;
  int peer;
  enum shm_side side; /* SHM_SENDER: this rank connected and sends; SHM_RECEIVER: accepted, receives */
  pid_t peer_pid;
  int pidfd;          /* readable once the peer process is gone; -1 where pidfd_open is missing */
  char peer_text[96]; /* "rank 3 (shared memory, pid 1234)" */
  char name[SHM_NAME_BYTES];
  int linked; /* this side created the name and has not unlinked it yet */
  struct shm_segment *seg;
  size_t seg_bytes;
  unsigned char *ring;
  uint64_t ring_bytes, slot_bytes;
  uint64_t cma_min_bytes; /* as agreed for this connection; 0: off */
  int broken;             /* fail() stopped it: no more messages in either direction */

  /* sending side */
  uint64_t head, published_head;
  uint64_t head_at;   /* head % ring_bytes */
  uint64_t tail_seen; /* the receiver's tail at the last load */
  struct tally_request *send_head, *send_tail; /* not all in the ring yet */
  int send_mid; /* the first of them is partly in the ring (kept here: fail() may come after its request is gone) */
  struct tally_request *ack_head, *ack_tail;   /* single-copy sends the receiver has not read yet */
  uint64_t cma_sent, cma_acked;
  unsigned char notice[TALLY_WIRE_HEADER_BYTES]; /* a waiting notice being written (see notify) */
  size_t notice_left;
  uint64_t cma_probe; /* the value the receiver reads from this process while connecting */

  /* receiving side */
  uint64_t tail, published_tail;
  uint64_t tail_at; /* tail % ring_bytes */
  struct tally_request *recv_head, *recv_tail;
  unsigned char rhdr[TALLY_WIRE_HEADER_BYTES]; /* header of the message being received */
  size_t rhdr_have;
  int rhdr_checked;
  unsigned char cma_desc[SHM_CMA_DESC_BYTES];
  size_t cma_desc_have;
};

struct tally_endpoint {
  int rank;
  int abort_fd;
  struct shm_settings settings;
  struct tally_conn_list conns;
  _Atomic uint32_t wake_seq; /* bumped by wake(); a blocked progress() waits on it too */
};

/* settings.c: the TALLY_SHM_* environment, with the defaults for a host whose ranks share cores or not */
tally_result_t shm_settings_load(struct shm_settings *s, int cores_shared);
/* 1 when a ring of `slots` x `slot_bytes` is within the limits the settings allow. */
int shm_settings_valid(uint64_t slots, uint64_t slot_bytes);

/* segment.c */
void shm_segment_name(uint64_t comm_id, int from, int to, char name[SHM_NAME_BYTES]);
tally_result_t shm_segment_create(struct tally_conn *c, uint64_t comm_id);
/* One attempt to open the segment the sender `c->peer` made for this rank: *found is 0 when it is
 * not there (or not ready) yet, 1 when it is open, checked and mapped. */
tally_result_t shm_segment_try_open(struct tally_conn *c, uint64_t comm_id, int *found);
/* The sender's half of the handshake: waits until the receiver mapped the segment, then unlinks it. */
tally_result_t shm_segment_wait_mapped(struct tally_conn *c, uint64_t deadline);
void shm_segment_unlink(struct tally_conn *c);
void shm_segment_unmap(struct tally_conn *c);

/* fifo.c */
int shm_uses_cma(const struct tally_conn *c, size_t len);
tally_result_t shm_send_pass(struct tally_conn *c, int *moved);
tally_result_t shm_recv_pass(struct tally_conn *c, int *moved);
/* The peer wrote `counter` = value into the segment where this rank, at `mine`, allows no such value. */
tally_result_t shm_broke_protocol(const struct tally_conn *c, const char *counter, uint64_t value, uint64_t mine);

/* cma.c */
void shm_cma_describe(const struct tally_request *req, unsigned char desc[SHM_CMA_DESC_BYTES]);
/* Copies the payload of the receive `q`, whose descriptor is in c->cma_desc, from the sender. */
tally_result_t shm_cma_read(struct tally_conn *c, struct tally_request *q, int *done);
tally_result_t shm_cma_collect_acks(struct tally_conn *c, int *moved);
/* Reads the probe the sender published; 1 when process_vm_readv works towards it, else 0 and why. */
int shm_cma_probe(pid_t sender, uint64_t address, uint64_t value, char *why, size_t whylen);

/* wait.c */
int shm_open_pidfd(pid_t pid);
/* 1 when the peer process is gone. */
int shm_peer_gone(const struct tally_conn *c);
tally_result_t shm_peer_failed(struct tally_conn *c);
/* While a connection with `peer` is being made: TALLY_ERR_REMOTE, blaming it, when another
 * connection of this endpoint with the same rank shows its process gone (a rank that died before
 * a pair it never used was connected); else TALLY_SUCCESS. Only ranks this one already shares a
 * connection with can be found dead this way; for the others the wait ends at its deadline. */
tally_result_t shm_check_peer_alive(struct tally_endpoint *ep, int peer, const char *doing);
void shm_wake_peer(struct tally_conn *c);
/* Leaves `frame` (or a close, when NULL) in the peer's mailbox and wakes it; the first one stays. */
void shm_post_mailbox(struct tally_conn *c, const unsigned char *frame);
/* TALLY_SUCCESS when the peer left nothing in this side's mailbox, else the error it stands for. */
tally_result_t shm_read_mailbox(struct tally_conn *c);
/* TALLY_ERR_ABORTED once the abort fd fired, else TALLY_SUCCESS after waiting `ms` for it. */
tally_result_t shm_pause(const struct tally_endpoint *ep, int ms);
/* progress() once nothing moved: spins briefly, then sleeps until a peer moves a connection with
 * work, wake() is called, or timeout_ms passes; fails on abort or a dead peer. */
tally_result_t shm_wait(struct tally_endpoint *ep, int timeout_ms, int *moved);
void shm_wake_endpoint(struct tally_endpoint *ep);

/* shm.c */
int shm_conn_pending(const struct tally_conn *c);
tally_result_t shm_progress_conn(struct tally_conn *c, int *moved);

/* The longest futex sleep: a dead peer or an abort is noticed at least this often. */
enum { SHM_WAIT_CAP_MS = 10 };

#endif
