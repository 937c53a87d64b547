/* Fuzz target for the bootstrap messages (bootstrap_wire.c): the join payload the root parses, and
 * the reply a rank parses (header, then the address table or the failure text).
 *
 * Input: the 200-byte join payload; nranks as this rank believes it (1 byte, 0..255); the 20-byte
 * reply header; then the reply body (nranks entries: packed address and topology record; or the
 * 256-byte failure text). What parses must survive the round trip through the encoders. */
#include <stdlib.h>

#include "bootstrap/bootstrap_wire.h"
#include "core/error.h"
#include "fuzz_input.h"

static void check_join(const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES]) {
  uint32_t rank, nranks, rank2, nranks2;
  struct tally_peer_info info, info2;
  char why[256];
  if (tally_bootstrap_parse_join(payload, &rank, &nranks, &info, why, sizeof why) != 0) {
    FUZZ_REQUIRE(strlen(why) > 0);
    return;
  }
  FUZZ_REQUIRE(nranks >= 1 && nranks <= TALLY_BOOTSTRAP_MAX_RANKS && rank < nranks);
  unsigned char again[TALLY_AUTH_PAYLOAD_BYTES];
  tally_bootstrap_encode_join((int)rank, (int)nranks, &info, again);
  FUZZ_REQUIRE(tally_bootstrap_parse_join(again, &rank2, &nranks2, &info2, why, sizeof why) == 0);
  FUZZ_REQUIRE(rank2 == rank && nranks2 == nranks && info2.addr.len == info.addr.len &&
               memcmp(&info2.addr.ss, &info.addr.ss, info.addr.len) == 0 && info2.topo.host_id == info.topo.host_id);
  FUZZ_REQUIRE(memcmp(again, payload, TALLY_AUTH_PAYLOAD_BYTES) == 0); /* every byte was checked */
}

/* Parses the body after an OK header; returns the verdict, with the addresses in `peers`. */
static tally_result_t check_table(const unsigned char *table, int nranks, struct tally_peer_info *peers) {
  tally_result_t r = tally_bootstrap_parse_table(table, nranks, peers);
  FUZZ_REQUIRE(r == TALLY_SUCCESS || r == TALLY_ERR_REMOTE);
  return r;
}

/* The reply as a rank receives it, then re-encoded the way the root would send it and parsed again. */
static void check_reply(const unsigned char header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES], int nranks,
                        struct fuzz_input *in) {
  enum tally_bootstrap_status status;
  uint64_t comm_id;
  if (tally_bootstrap_parse_reply_header(header, nranks, &status, &comm_id) != 0) return;
  FUZZ_REQUIRE(status == TALLY_BOOTSTRAP_OK || status == TALLY_BOOTSTRAP_FAILED);
  int failed = status == TALLY_BOOTSTRAP_FAILED;
  size_t reply_bytes = tally_bootstrap_reply_bytes(nranks, failed);
  size_t body_bytes = reply_bytes - TALLY_BOOTSTRAP_REPLY_HEADER_BYTES;
  unsigned char *body = malloc(body_bytes), *reply = malloc(reply_bytes);
  struct tally_peer_info *peers = malloc((size_t)nranks * sizeof *peers);
  if (!body || !reply || !peers) abort();
  fuzz_take(in, body, body_bytes);
  if (failed) {
    char text[TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES];
    memcpy(text, body, sizeof text);
    const char *reason = tally_bootstrap_parse_failure(text);
    FUZZ_REQUIRE(strlen(reason) < TALLY_BOOTSTRAP_FAILURE_TEXT_BYTES);
    tally_bootstrap_encode_reply(reply, nranks, comm_id, NULL, reason);
    FUZZ_REQUIRE(strcmp((const char *)reply + TALLY_BOOTSTRAP_REPLY_HEADER_BYTES, reason) == 0);
  } else {
    tally_result_t r = check_table(body, nranks, peers);
    tally_bootstrap_encode_reply(reply, nranks, comm_id, body, NULL);
    FUZZ_REQUIRE(check_table(reply + TALLY_BOOTSTRAP_REPLY_HEADER_BYTES, nranks, peers) == r);
  }
  enum tally_bootstrap_status status2;
  uint64_t comm_id2;
  FUZZ_REQUIRE(tally_bootstrap_parse_reply_header(reply, nranks, &status2, &comm_id2) == 0);
  FUZZ_REQUIRE(status2 == status && comm_id2 == comm_id);
  free(body);
  free(reply);
  free(peers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  struct fuzz_input in = {data, size};
  unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], header[TALLY_BOOTSTRAP_REPLY_HEADER_BYTES];
  fuzz_take(&in, payload, sizeof payload);
  check_join(payload);
  int nranks = fuzz_u8(&in);
  fuzz_take(&in, header, sizeof header);
  if (nranks > 0) check_reply(header, nranks, &in);
  tally_error_clear();
  return 0;
}
