/* Unique id layout:
 *   0  "TLY1"   4  version (2 bytes, big-endian)   6  flags (bit 0: authenticated)
 *   7  root address (net.h's packed form)   26  secret (16 bytes)   42..127 zero
 * A grow id: the same with "TLYG", then   42  parent comm id (8 bytes)   50  old size (4)
 *   54  ranks joining (4)   58..127 zero. */
#include "uid.h"

#include <string.h>

#include "bootstrap_wire.h"
#include "core/bytes.h"
#include "core/error.h"

enum {
  UID_VERSION = 1,
  OFF_VERSION = 4,
  OFF_FLAGS = 6,
  OFF_ADDR = 7,
  OFF_SECRET = OFF_ADDR + TALLY_PACKED_ADDR_BYTES,
  UID_USED = OFF_SECRET + TALLY_SECRET_BYTES,
  OFF_PARENT = UID_USED,
  OFF_OLD_SIZE = OFF_PARENT + 8,
  OFF_NNEW = OFF_OLD_SIZE + 4,
  GROW_USED = OFF_NNEW + 4
};
static const char uid_magic[4] = {'T', 'L', 'Y', '1'};
static const char grow_magic[4] = {'T', 'L', 'Y', 'G'};

static void encode(const char magic[4], const struct tally_job_id *job, unsigned char *b) {
  memset(b, 0, TALLY_UNIQUE_ID_BYTES);
  memcpy(b, magic, 4);
  b[OFF_VERSION + 1] = UID_VERSION;
  b[OFF_FLAGS] = job->authenticated ? 1 : 0;
  tally_net_pack(&job->root, b + OFF_ADDR);
  memcpy(b + OFF_SECRET, job->secret, TALLY_SECRET_BYTES);
}

/* The fields both kinds share, after the magic; `used` bytes are meaningful, the rest must be 0. */
static tally_result_t decode(const unsigned char *b, int used, struct tally_job_id *job) {
  if (b[OFF_VERSION] != 0 || b[OFF_VERSION + 1] != UID_VERSION)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "the unique id has version %d; this Tally reads version %d",
                       b[OFF_VERSION] << 8 | b[OFF_VERSION + 1], UID_VERSION);
  memset(job, 0, sizeof *job);
  int bad = (b[OFF_FLAGS] & ~1) || tally_net_unpack(b + OFF_ADDR, &job->root) != 0;
  for (int i = used; i < TALLY_UNIQUE_ID_BYTES; i++) bad |= b[i] != 0;
  if (bad) return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "the unique id is corrupt (bad flags, address or padding)");
  memcpy(job->secret, b + OFF_SECRET, TALLY_SECRET_BYTES);
  job->authenticated = b[OFF_FLAGS] & 1;
  return TALLY_SUCCESS;
}

void tally_uid_encode(const struct tally_job_id *job, tally_unique_id_t *id) {
  encode(uid_magic, job, (unsigned char *)id->internal);
}

tally_result_t tally_uid_decode(const tally_unique_id_t *id, struct tally_job_id *job) {
  const unsigned char *b = (const unsigned char *)id->internal;
  if (memcmp(b, grow_magic, 4) == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "this id was made by tally_comm_grow_id: the processes joining a grown communicator pass it to "
                       "tally_comm_join, not to tally_comm_init_rank");
  if (memcmp(b, uid_magic, 4) != 0)
    return TALLY_ERROR(
        TALLY_ERR_INVALID_ARGUMENT,
        "the unique id was not made by tally_get_unique_id (bad magic); pass every rank the bytes rank 0 "
        "got, unchanged");
  return decode(b, UID_USED, job);
}

void tally_uid_encode_grow(const struct tally_grow_id *grow, tally_unique_id_t *id) {
  unsigned char *b = (unsigned char *)id->internal;
  encode(grow_magic, &grow->job, b);
  tally_put_u64(b + OFF_PARENT, grow->parent_id);
  tally_put_u32(b + OFF_OLD_SIZE, (uint32_t)grow->old_size);
  tally_put_u32(b + OFF_NNEW, (uint32_t)grow->nnew);
}

tally_result_t tally_uid_decode_grow(const tally_unique_id_t *id, struct tally_grow_id *grow) {
  const unsigned char *b = (const unsigned char *)id->internal;
  if (memcmp(b, uid_magic, 4) == 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "this id was made by tally_get_unique_id, not by tally_comm_grow_id: a grow needs the id that "
                       "one rank of the communicator got from tally_comm_grow_id");
  if (memcmp(b, grow_magic, 4) != 0)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT,
                       "the id was not made by tally_comm_grow_id (bad magic); pass the bytes it gave, unchanged");
  memset(grow, 0, sizeof *grow);
  TALLY_CHECK(decode(b, GROW_USED, &grow->job));
  grow->parent_id = tally_get_u64(b + OFF_PARENT);
  uint32_t old_size = tally_get_u32(b + OFF_OLD_SIZE), nnew = tally_get_u32(b + OFF_NNEW);
  if (old_size < 1 || nnew < 1 || (uint64_t)old_size + nnew > TALLY_BOOTSTRAP_MAX_RANKS)
    return TALLY_ERROR(TALLY_ERR_INVALID_ARGUMENT, "the grow id is corrupt (%u ranks grown by %u)", old_size, nnew);
  grow->old_size = (int)old_size;
  grow->nnew = (int)nnew;
  return TALLY_SUCCESS;
}
