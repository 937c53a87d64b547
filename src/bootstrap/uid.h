/* The unique id: the bootstrap root's address and the job's 128-bit secret, packed into the
 * opaque tally_unique_id_t in a fixed, versioned byte layout that every rank checks. */
#ifndef TALLY_UID_H
#define TALLY_UID_H

#include <stdint.h>

#include "net.h"
#include "tally.h"

#define TALLY_SECRET_BYTES 16

struct tally_job_id {
  struct tally_sockaddr root;
  unsigned char secret[TALLY_SECRET_BYTES];
  int authenticated; /* 0: the job runs with an all-zero secret (TALLY_SECRET was absent) */
  /* Not in the unique id: a shrink's root (bootstrap.h) takes only joins carrying this digest of the
   * communicator and the exclude list (tally_peer_info.shrink_digest); 0 for every other bootstrap. */
  uint64_t shrink_digest;
  /* Not in the unique id either: the root listened before the id was made (a grow's), so that a
   * refused connection means it is gone rather than not started yet. */
  int listening;
};

void tally_uid_encode(const struct tally_job_id *job, tally_unique_id_t *id);
/* Checks magic, version, address family, port and padding; INVALID_ARGUMENT with a message. */
tally_result_t tally_uid_decode(const tally_unique_id_t *id, struct tally_job_id *job);

/* A grow id (tally_comm_grow_id, api/comm_grow.c): the grown communicator's bootstrap root and fresh
 * secret, as in a unique id, and which communicator it grows: its comm id and size, and how many
 * ranks join. Its magic differs from a unique id's, so that neither is taken for the other. */
struct tally_grow_id {
  struct tally_job_id job;
  uint64_t parent_id;
  int old_size, nnew;
};
void tally_uid_encode_grow(const struct tally_grow_id *grow, tally_unique_id_t *id);
/* As tally_uid_decode; INVALID_ARGUMENT with a message for a unique id or a corrupt grow id. */
tally_result_t tally_uid_decode_grow(const tally_unique_id_t *id, struct tally_grow_id *grow);

#endif
