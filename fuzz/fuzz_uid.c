/* Fuzz target for the unique id (uid.c's tally_uid_decode), the grow id (tally_uid_decode_grow)
 * and the packed address inside them and in the bootstrap table (net.c's tally_net_unpack).
 *
 * Input: the 128 bytes of a unique id or grow id (both decoders try them); its first 19 bytes are
 * also unpacked as an address on their own. Whatever decodes must survive the round trip: encoding it and decoding that gives it back,
 * and an address that unpacks packs back to the very same bytes. */
#include "bootstrap/net.h"
#include "bootstrap/uid.h"
#include "core/error.h"
#include "fuzz_input.h"

static void check_address(const unsigned char packed[TALLY_PACKED_ADDR_BYTES]) {
  struct tally_sockaddr addr, again;
  if (tally_net_unpack(packed, &addr) != 0) return;
  char text[80];
  tally_net_format(&addr, text, sizeof text);
  FUZZ_REQUIRE(tally_net_port(&addr) > 0);
  unsigned char repacked[TALLY_PACKED_ADDR_BYTES];
  tally_net_pack(&addr, repacked);
  FUZZ_REQUIRE(memcmp(repacked, packed, TALLY_PACKED_ADDR_BYTES) == 0); /* no byte goes unchecked */
  FUZZ_REQUIRE(tally_net_unpack(repacked, &again) == 0);
  FUZZ_REQUIRE(again.len == addr.len && memcmp(&again.ss, &addr.ss, addr.len) == 0);
}

static void check_uid(const tally_unique_id_t *id) {
  struct tally_job_id job, again;
  if (tally_uid_decode(id, &job) != TALLY_SUCCESS) return;
  FUZZ_REQUIRE(job.authenticated == 0 || job.authenticated == 1);
  tally_unique_id_t reencoded;
  tally_uid_encode(&job, &reencoded);
  FUZZ_REQUIRE(tally_uid_decode(&reencoded, &again) == TALLY_SUCCESS);
  FUZZ_REQUIRE(again.authenticated == job.authenticated && memcmp(again.secret, job.secret, TALLY_SECRET_BYTES) == 0);
  FUZZ_REQUIRE(again.root.len == job.root.len && memcmp(&again.root.ss, &job.root.ss, job.root.len) == 0);
}

static void check_grow_id(const tally_unique_id_t *id) {
  struct tally_grow_id grow, again;
  if (tally_uid_decode_grow(id, &grow) != TALLY_SUCCESS) return;
  FUZZ_REQUIRE(grow.old_size >= 1 && grow.nnew >= 1);
  tally_unique_id_t reencoded;
  tally_uid_encode_grow(&grow, &reencoded);
  FUZZ_REQUIRE(memcmp(reencoded.internal, id->internal, sizeof id->internal) == 0); /* no byte goes unchecked */
  FUZZ_REQUIRE(tally_uid_decode_grow(&reencoded, &again) == TALLY_SUCCESS);
  FUZZ_REQUIRE(again.parent_id == grow.parent_id && again.old_size == grow.old_size && again.nnew == grow.nnew);
  struct tally_job_id job;
  FUZZ_REQUIRE(tally_uid_decode(id, &job) != TALLY_SUCCESS); /* never taken for a unique id */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  struct fuzz_input in = {data, size};
  tally_unique_id_t id;
  fuzz_take(&in, id.internal, sizeof id.internal);
  check_address((const unsigned char *)id.internal);
  check_uid(&id);
  check_grow_id(&id);
  tally_error_clear();
  return 0;
}
