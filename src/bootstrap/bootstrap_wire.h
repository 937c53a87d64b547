/* The bootstrap's two messages, encoded and decoded without any I/O (bootstrap.c does the I/O):
 *
 *   rank -> root   join payload (inside the authenticated proof): rank, nranks, the rank's entry
 *   root -> rank   reply header: magic, status, nranks, comm id; then either nranks entries (status
 *                  OK) or a fixed-size text saying why the job cannot start (status FAILED)
 *
 * A rank's entry is what the others need to know of it: its packed data addresses (net.h: TCP, and
 * RDMA when it has a verbs endpoint), its topology record (topo.h), the port of its recovery
 * listener (where it serves during tally_comm_shrink, on the TCP address's host) and, in a
 * shrink's join, the digest of the exclude list it was called with; a shrink's join payload also
 * carries the joining rank's number in the communicator being shrunk and the lowest rank its list
 * leaves.
 *
 * Every decoder range-checks each field before the caller may use it, so that a fuzz target can
 * feed them arbitrary bytes. */
#ifndef TALLY_BOOTSTRAP_WIRE_H
#define TALLY_BOOTSTRAP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "auth_proto.h"
#include "net.h"
#include "topology/topo.h"

#define TALLY_BOOTSTRAP_REPLY_HEADER_BYTES 20
#define TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES 256
#define TALLY_BOOTSTRAP_MAX_RANKS (1 << 24)
#define TALLY_BOOTSTRAP_ENTRY_BYTES (2 * TALLY_PACKED_ADDR_BYTES + TALLY_TOPO_WIRE_BYTES + 2 + 8)
enum tally_bootstrap_status { TALLY_BOOTSTRAP_OK = 0, TALLY_BOOTSTRAP_FAILED = 1 };

/* What a rank publishes about itself. */
struct tally_peer_info {
  struct tally_sockaddr addr;      /* where its network (TCP) endpoint listens */
  int has_rdma;                    /* it has an RDMA (verbs) endpoint too, at rdma_addr */
  struct tally_sockaddr rdma_addr; /* where its verbs endpoint listens (connection manager) */
  struct tally_topo topo;     /* where it runs (decoded records hold at most one interface) */
  int recovery_port;          /* its recovery listener, on addr's host (0: none); see api/comm_split.c */
  uint64_t shrink_digest;     /* in a shrink's join: the digest of the communicator and the exclude list the
                                 rank passed, which the root compares; 0 everywhere else */
  int shrink_rank;            /* in a shrink's join (the payload only, not the table): the joining rank's number in
                                 the communicator being shrunk, and the lowest rank its exclude list leaves (the */
  int shrink_root;            /* root it joins), for naming a disagreement; -1 outside a shrink */
  int shrink_attempt;         /* and which of its shrinks of that communicator this is, modulo 128
                                 (TALLY_SHRINK_ATTEMPT_MASK), so that a join from an earlier or a later one is
                                 told apart from a disagreement */
};
#define TALLY_SHRINK_ATTEMPT_MASK 127

void tally_bootstrap_encode_entry(const struct tally_peer_info *info, unsigned char entry[TALLY_BOOTSTRAP_ENTRY_BYTES]);
/* Returns 0, or -1 when the address or the topology record is malformed. */
int tally_bootstrap_parse_entry(const unsigned char entry[TALLY_BOOTSTRAP_ENTRY_BYTES], struct tally_peer_info *info);

void tally_bootstrap_encode_join(int rank, int nranks, const struct tally_peer_info *info,
                                 unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES]);
/* Returns 0 with the rank, nranks (1..MAX_RANKS, above rank) and entry, or -1 after writing into
 * `why` what is wrong with the payload. */
int tally_bootstrap_parse_join(const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], uint32_t *rank, uint32_t *nranks,
                               struct tally_peer_info *info, char *why, size_t whylen);

/* Length of the whole reply: header plus table (failure == 0) or failure text (failure != 0). */
size_t tally_bootstrap_reply_bytes(int nranks, int failure);
/* Fills `msg` (tally_bootstrap_reply_bytes long): the table of nranks entries, or the failure text
 * (truncated to fit) when `failure` is not NULL. */
void tally_bootstrap_encode_reply(unsigned char *msg, int nranks, uint64_t comm_id, const unsigned char *table,
                                  const char *failure);
/* Returns 0 with the status and comm id when the header is a bootstrap reply for `nranks` ranks, else -1. */
int tally_bootstrap_parse_reply_header(const unsigned char header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES], int nranks,
                                       enum tally_bootstrap_status *status, uint64_t *comm_id);
/* Decodes the nranks entries that follow an OK header into `peers`; REMOTE naming the first invalid one. */
tally_result_t tally_bootstrap_parse_table(const unsigned char *table, int nranks, struct tally_peer_info *peers);
/* Makes the failure text that follows a FAILED header (FAILURE_TEXT_BYTES from the wire) a C string. */
const char *tally_bootstrap_parse_failure(char text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES]);

#endif
