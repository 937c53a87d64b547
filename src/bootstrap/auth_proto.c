/* Building and checking the handshake messages (layouts in auth_proto.h). MACs are HMAC-SHA256
 * from OpenSSL's libcrypto and are compared in constant time. */
#include "auth_proto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "core/bytes.h"

enum {
  AUTH_MAGIC = 0x544c5941 /* "TLYA" */,
  AUTH_VERSION = 1,
  HEADER = 8,
  NONCE = TALLY_AUTH_NONCE_BYTES,
  MAC = TALLY_AUTH_MAC_BYTES,
  HELLO = TALLY_AUTH_HELLO_BYTES
};

static void put_header(unsigned char *p, uint16_t purpose) {
  tally_put_u32(p, AUTH_MAGIC);
  tally_put_u16(p + 4, AUTH_VERSION);
  tally_put_u16(p + 6, purpose);
}

static int header_ok(const unsigned char *p, uint16_t purpose) {
  return tally_get_u32(p) == AUTH_MAGIC && tally_get_u16(p + 4) == AUTH_VERSION && tally_get_u16(p + 6) == purpose;
}

/* The MAC a challenge carries: HMAC(key, "S" hello nonce_s). */
static void server_mac(const unsigned char *key, const unsigned char *hello, const unsigned char *nonce_s,
                       unsigned char *mac) {
  unsigned char msg[1 + HELLO + NONCE];
  msg[0] = 'S';
  memcpy(msg + 1, hello, HELLO);
  memcpy(msg + 1 + HELLO, nonce_s, NONCE);
  unsigned int len = MAC;
  HMAC(EVP_sha256(), key, TALLY_SECRET_BYTES, msg, sizeof msg, mac, &len);
}

/* The MAC a proof carries: HMAC(key, "C" nonce_c nonce_s purpose payload). */
static void client_mac(const unsigned char *key, const unsigned char *nonce_c, const unsigned char *nonce_s,
                       uint16_t purpose, const unsigned char *payload, unsigned char *mac) {
  unsigned char msg[1 + 2 * NONCE + 2 + TALLY_AUTH_PAYLOAD_BYTES];
  msg[0] = 'C';
  memcpy(msg + 1, nonce_c, NONCE);
  memcpy(msg + 1 + NONCE, nonce_s, NONCE);
  tally_put_u16(msg + 1 + 2 * NONCE, purpose);
  memcpy(msg + 3 + 2 * NONCE, payload, TALLY_AUTH_PAYLOAD_BYTES);
  unsigned int len = MAC;
  HMAC(EVP_sha256(), key, TALLY_SECRET_BYTES, msg, sizeof msg, mac, &len);
}

void tally_auth_hello_make(uint16_t purpose, const unsigned char nonce_c[TALLY_AUTH_NONCE_BYTES],
                           unsigned char hello[TALLY_AUTH_HELLO_BYTES]) {
  put_header(hello, purpose);
  memcpy(hello + HEADER, nonce_c, NONCE);
}

enum tally_auth_verdict tally_auth_hello_check(const unsigned char hello[TALLY_AUTH_HELLO_BYTES], uint16_t purpose) {
  return header_ok(hello, purpose) ? TALLY_AUTH_VALID : TALLY_AUTH_NOT_HANDSHAKE;
}

void tally_auth_challenge_make(const unsigned char key[TALLY_SECRET_BYTES],
                               const unsigned char hello[TALLY_AUTH_HELLO_BYTES], uint16_t purpose,
                               const unsigned char nonce_s[TALLY_AUTH_NONCE_BYTES],
                               unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES]) {
  put_header(challenge, purpose);
  memcpy(challenge + HEADER, nonce_s, NONCE);
  server_mac(key, hello, nonce_s, challenge + HEADER + NONCE);
}

enum tally_auth_verdict tally_auth_challenge_check(const unsigned char key[TALLY_SECRET_BYTES],
                                                   const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                                                   const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES],
                                                   uint16_t purpose) {
  if (!header_ok(challenge, purpose)) return TALLY_AUTH_NOT_HANDSHAKE;
  unsigned char expect[MAC];
  server_mac(key, hello, challenge + HEADER, expect);
  return CRYPTO_memcmp(expect, challenge + HEADER + NONCE, MAC) == 0 ? TALLY_AUTH_VALID : TALLY_AUTH_WRONG_SECRET;
}

void tally_auth_proof_make(const unsigned char key[TALLY_SECRET_BYTES],
                           const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                           const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES], uint16_t purpose,
                           const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES],
                           unsigned char proof[TALLY_AUTH_PROOF_BYTES]) {
  client_mac(key, hello + HEADER, challenge + HEADER, purpose, payload, proof);
  memcpy(proof + MAC, payload, TALLY_AUTH_PAYLOAD_BYTES);
}

enum tally_auth_verdict tally_auth_proof_check(const unsigned char key[TALLY_SECRET_BYTES],
                                               const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                                               const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES],
                                               uint16_t purpose, const unsigned char proof[TALLY_AUTH_PROOF_BYTES]) {
  unsigned char expect[MAC];
  client_mac(key, hello + HEADER, challenge + HEADER, purpose, proof + MAC, expect);
  return CRYPTO_memcmp(expect, proof, MAC) == 0 ? TALLY_AUTH_VALID : TALLY_AUTH_WRONG_SECRET;
}

const unsigned char *tally_auth_proof_payload(const unsigned char proof[TALLY_AUTH_PROOF_BYTES]) { return proof + MAC; }
