/* Fuzz target for the authentication handshake (auth_proto.c), with a fixed key: the hello the
 * server parses, the challenge the client parses and the proof the server parses.
 *
 * Input: purpose (2 bytes), hello (24), challenge (56), proof (224), then two bit positions (2 bytes
 * each). The three messages are first checked as received. Then a genuine exchange is built with
 * the first 16 bytes of hello and challenge as nonces and the proof's payload: it must be accepted,
 * and refused once the chosen bit of its challenge or proof is flipped, or under another key. */
#include "bootstrap/auth_proto.h"
#include "fuzz_input.h"

static const unsigned char job_key[TALLY_SECRET_BYTES] = FUZZ_AUTH_KEY;

static void check_received(uint16_t purpose, const unsigned char *hello, const unsigned char *challenge,
                           const unsigned char *proof) {
  tally_auth_hello_check(hello, purpose);
  tally_auth_challenge_check(job_key, hello, challenge, purpose);
  tally_auth_proof_check(job_key, hello, challenge, purpose, proof);
}

static void flip_bit(unsigned char *msg, size_t len, unsigned position) {
  position %= (unsigned)(len * 8);
  msg[position / 8] ^= (unsigned char)(1u << (position % 8));
}

static void check_genuine(uint16_t purpose, const unsigned char *nonce_c, const unsigned char *nonce_s,
                          const unsigned char *payload, unsigned challenge_bit, unsigned proof_bit) {
  unsigned char hello[TALLY_AUTH_HELLO_BYTES], challenge[TALLY_AUTH_CHALLENGE_BYTES], proof[TALLY_AUTH_PROOF_BYTES];
  tally_auth_hello_make(purpose, nonce_c, hello);
  FUZZ_REQUIRE(tally_auth_hello_check(hello, purpose) == TALLY_AUTH_VALID);
  tally_auth_challenge_make(job_key, hello, purpose, nonce_s, challenge);
  FUZZ_REQUIRE(tally_auth_challenge_check(job_key, hello, challenge, purpose) == TALLY_AUTH_VALID);
  tally_auth_proof_make(job_key, hello, challenge, purpose, payload, proof);
  FUZZ_REQUIRE(tally_auth_proof_check(job_key, hello, challenge, purpose, proof) == TALLY_AUTH_VALID);
  FUZZ_REQUIRE(memcmp(tally_auth_proof_payload(proof), payload, TALLY_AUTH_PAYLOAD_BYTES) == 0);

  unsigned char other_key[TALLY_SECRET_BYTES];
  memcpy(other_key, job_key, sizeof other_key);
  other_key[0] ^= 1;
  FUZZ_REQUIRE(tally_auth_challenge_check(other_key, hello, challenge, purpose) == TALLY_AUTH_WRONG_SECRET);
  FUZZ_REQUIRE(tally_auth_proof_check(other_key, hello, challenge, purpose, proof) == TALLY_AUTH_WRONG_SECRET);

  unsigned char forged_challenge[TALLY_AUTH_CHALLENGE_BYTES];
  memcpy(forged_challenge, challenge, sizeof challenge);
  flip_bit(forged_challenge, sizeof forged_challenge, challenge_bit);
  FUZZ_REQUIRE(tally_auth_challenge_check(job_key, hello, forged_challenge, purpose) != TALLY_AUTH_VALID);
  flip_bit(proof, sizeof proof, proof_bit);
  FUZZ_REQUIRE(tally_auth_proof_check(job_key, hello, challenge, purpose, proof) != TALLY_AUTH_VALID);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  struct fuzz_input in = {data, size};
  unsigned char purpose_bytes[2], hello[TALLY_AUTH_HELLO_BYTES], challenge[TALLY_AUTH_CHALLENGE_BYTES];
  unsigned char proof[TALLY_AUTH_PROOF_BYTES], bits[4];
  fuzz_take(&in, purpose_bytes, sizeof purpose_bytes);
  fuzz_take(&in, hello, sizeof hello);
  fuzz_take(&in, challenge, sizeof challenge);
  fuzz_take(&in, proof, sizeof proof);
  fuzz_take(&in, bits, sizeof bits);
  uint16_t purpose = (uint16_t)(purpose_bytes[0] << 8 | purpose_bytes[1]);
  check_received(purpose, hello, challenge, proof);
  check_genuine(purpose, hello, challenge, tally_auth_proof_payload(proof), (unsigned)(bits[0] << 8 | bits[1]),
                (unsigned)(bits[2] << 8 | bits[3]));
  return 0;
}
