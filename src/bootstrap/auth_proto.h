/* The bytes of the authentication handshake (see auth.h for the exchange), without any I/O: each
 * message is built from the transcript so far, and each received message is checked against it.
 * Pure functions of their arguments, so that the fuzz targets can call them without sockets.
 *
 *   hello      0 magic "TLYA"  4 version  6 purpose  8 client nonce
 *   challenge  0 magic "TLYA"  4 version  6 purpose  8 server nonce  24 HMAC(key, "S" hello nonce_s)
 *   proof      0 HMAC(key, "C" nonce_c nonce_s purpose payload)  32 payload
 */
#ifndef TALLY_AUTH_PROTO_H
#define TALLY_AUTH_PROTO_H

#include <stdint.h>

#include "uid.h"

#define TALLY_AUTH_PAYLOAD_BYTES 200
enum { TALLY_PURPOSE_BOOTSTRAP = 1, TALLY_PURPOSE_DATA = 2 };

enum {
  TALLY_AUTH_NONCE_BYTES = 16,
  TALLY_AUTH_MAC_BYTES = 32,
  TALLY_AUTH_HELLO_BYTES = 8 + TALLY_AUTH_NONCE_BYTES,
  TALLY_AUTH_CHALLENGE_BYTES = 8 + TALLY_AUTH_NONCE_BYTES + TALLY_AUTH_MAC_BYTES,
  TALLY_AUTH_PROOF_BYTES = TALLY_AUTH_MAC_BYTES + TALLY_AUTH_PAYLOAD_BYTES
};

/* What a received handshake message turned out to be. */
enum tally_auth_verdict {
  TALLY_AUTH_VALID,         /* well formed, and its MAC (if any) proves the sender knows the key */
  TALLY_AUTH_NOT_HANDSHAKE, /* wrong magic, version or purpose: not a Tally handshake for this use */
  TALLY_AUTH_WRONG_SECRET   /* well formed, but its MAC was made with another key */
};

/* Client: the first message, carrying the client's fresh nonce. */
void tally_auth_hello_make(uint16_t purpose, const unsigned char nonce_c[TALLY_AUTH_NONCE_BYTES],
                           unsigned char hello[TALLY_AUTH_HELLO_BYTES]);
/* Server: VALID or NOT_HANDSHAKE. */
enum tally_auth_verdict tally_auth_hello_check(const unsigned char hello[TALLY_AUTH_HELLO_BYTES], uint16_t purpose);

/* Server: the answer to `hello`, carrying the server's fresh nonce and proving the server knows the key. */
void tally_auth_challenge_make(const unsigned char key[TALLY_SECRET_BYTES],
                               const unsigned char hello[TALLY_AUTH_HELLO_BYTES], uint16_t purpose,
                               const unsigned char nonce_s[TALLY_AUTH_NONCE_BYTES],
                               unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES]);
/* Client: checks the server's answer to the hello this client sent. */
enum tally_auth_verdict tally_auth_challenge_check(const unsigned char key[TALLY_SECRET_BYTES],
                                                   const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                                                   const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES],
                                                   uint16_t purpose);

/* Client: the last message, proving the client knows the key and binding the payload to this exchange. */
void tally_auth_proof_make(const unsigned char key[TALLY_SECRET_BYTES],
                           const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                           const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES], uint16_t purpose,
                           const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES],
                           unsigned char proof[TALLY_AUTH_PROOF_BYTES]);
/* Server: VALID or WRONG_SECRET for the proof that follows the hello it got and the challenge it sent. */
enum tally_auth_verdict tally_auth_proof_check(const unsigned char key[TALLY_SECRET_BYTES],
                                               const unsigned char hello[TALLY_AUTH_HELLO_BYTES],
                                               const unsigned char challenge[TALLY_AUTH_CHALLENGE_BYTES],
                                               uint16_t purpose, const unsigned char proof[TALLY_AUTH_PROOF_BYTES]);
/* The connecting side's payload inside a proof (meaningful only once the proof is VALID). */
const unsigned char *tally_auth_proof_payload(const unsigned char proof[TALLY_AUTH_PROOF_BYTES]);

#endif
