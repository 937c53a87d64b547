/* Fuzz target for the data-plane headers (wire.c): tally_header_check, tally_error_frame_decode and
 * tally_notice_decode, on the raw 40 input bytes and on genuine messages that the same bytes alter.
 *
 * Input: peer (1 byte, signed), the 40 received bytes, then the expected header's fields (seq, coll,
 * datatype, op, root, count, index, bytes) and an error frame's code and culprit. The genuine
 * messages are the expected header, the error frame and the notice, each XORed with the 40 bytes:
 * all-zero bytes leave them untouched, and then they must be accepted. */
#include "core/error.h"
#include "core/wire.h"
#include "fuzz_input.h"

static void xor_into(unsigned char *msg, const unsigned char *mask) {
  for (int i = 0; i < TALLY_WIRE_HEADER_BYTES; i++) msg[i] ^= mask[i];
}

static int all_zero(const unsigned char *b) {
  for (int i = 0; i < TALLY_WIRE_HEADER_BYTES; i++)
    if (b[i]) return 0;
  return 1;
}

static void check_headers(const unsigned char got[TALLY_WIRE_HEADER_BYTES], const struct tally_msg_header *expected,
                          int peer) {
  tally_header_check(got, expected, peer);
  unsigned char genuine[TALLY_WIRE_HEADER_BYTES];
  tally_header_encode(expected, genuine);
  xor_into(genuine, got);
  tally_result_t r = tally_header_check(genuine, expected, peer);
  if (all_zero(got)) FUZZ_REQUIRE(r == TALLY_SUCCESS && tally_error_blamed() == -1);
}

static void check_error_frames(const unsigned char got[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int peer,
                               tally_result_t code, int culprit) {
  tally_error_frame_decode(got, peer);
  unsigned char genuine[TALLY_WIRE_HEADER_BYTES];
  tally_error_frame_encode(genuine, seq, peer, culprit, code);
  xor_into(genuine, got);
  tally_result_t r = tally_error_frame_decode(genuine, peer);
  int reportable = code == TALLY_ERR_REMOTE || code == TALLY_ERR_MISMATCH || code == TALLY_ERR_TIMEOUT;
  if (all_zero(got)) FUZZ_REQUIRE(r == (reportable && culprit >= -1 ? code : TALLY_ERR_REMOTE));
}

static void check_notices(const unsigned char got[TALLY_WIRE_HEADER_BYTES], uint32_t seq, int peer) {
  uint32_t got_seq;
  tally_notice_decode(got, peer, &got_seq);
  unsigned char genuine[TALLY_WIRE_HEADER_BYTES];
  tally_notice_encode(genuine, seq, peer);
  xor_into(genuine, got);
  int ok = tally_notice_decode(genuine, peer, &got_seq);
  if (all_zero(got)) FUZZ_REQUIRE(ok == 1 && got_seq == seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  struct fuzz_input in = {data, size};
  int peer = (int8_t)fuzz_u8(&in);
  unsigned char got[TALLY_WIRE_HEADER_BYTES];
  fuzz_take(&in, got, sizeof got);
  struct tally_msg_header expected; /* one field at a time: initialisers are evaluated in no set order */
  expected.seq = fuzz_u32(&in);
  expected.coll = fuzz_u8(&in);
  expected.datatype = fuzz_u8(&in);
  expected.op = fuzz_u8(&in);
  expected.root = (int32_t)fuzz_u32(&in);
  expected.count = fuzz_u64(&in);
  expected.index = fuzz_u64(&in);
  expected.bytes = fuzz_u64(&in);
  tally_result_t code = (tally_result_t)fuzz_u8(&in);
  int culprit = (int8_t)fuzz_u8(&in);
  check_headers(got, &expected, peer);
  check_error_frames(got, expected.seq, peer, code, culprit);
  check_notices(got, expected.seq, peer);
  tally_error_clear();
  return 0;
}
