/* Unique id layout:
 *   0  "TLY1"   4  version (2 bytes, big-endian)   6  flags (bit 0: authenticated)
 *   7  root address (net.h's packed form)   26  secret (16 bytes)   42..127 zero */
#include "uid.h"

#include <string.h>

#include "core/error.h"

enum { UID_VERSION = 1, OFF_VERSION = 4, OFF_FLAGS = 6, OFF_ADDR = 7, OFF_SECRET = OFF_ADDR + TALLY_PACKED_ADDR_BYTES,
       UID_USED = OFF_SECRET + TALLY_SECRET_BYTES };
static const char uid_magic[4] = {'T', 'L', 'Y', '1'};

void tally_uid_encode(const struct tally_job_id *job, tally_unique_id_t *id) {
  unsigned char *b = (unsigned char *)id->internal;
  memset(b, 0, TALLY_UNIQUE_ID_BYTES);
  memcpy(b, uid_magic, 4);
  b[OFF_VERSION + 1] = UID_VERSION;
  b[OFF_FLAGS] = job->authenticated ? 1 : 0;
  tally_net_pack(&job->root, b + OFF_ADDR);
  memcpy(b + OFF_SECRET, job->secret, TALLY_SECRET_BYTES);
}

tally_result_t tally_uid_decode(const tally_unique_id_t *id, struct tally_job_id *job) {
  const unsigned char *b = (const unsigned char *)id->internal;
  if (memcmp(b, uid_magic, 4) != 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "the unique id was not made by tally_get_unique_id (bad magic); pass every rank the bytes rank 0 "
                       "got, unchanged");
  if (b[OFF_VERSION] != 0 || b[OFF_VERSION + 1] != UID_VERSION)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "the unique id has version %d; this Tally reads version %d",
                       b[OFF_VERSION] << 8 | b[OFF_VERSION + 1], UID_VERSION);
  memset(job, 0, sizeof *job);
  int bad = (b[OFF_FLAGS] & ~1) || tally_net_unpack(b + OFF_ADDR, &job->root) != 0;
  for (int i = UID_USED; i < TALLY_UNIQUE_ID_BYTES; i++) bad |= b[i] != 0;
  if (bad) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "the unique id is corrupt (bad flags, address or padding)");
  memcpy(job->secret, b + OFF_SECRET, TALLY_SECRET_BYTES);
  job->authenticated = b[OFF_FLAGS] & 1;
  return TALLY_SUCCESS;
}
