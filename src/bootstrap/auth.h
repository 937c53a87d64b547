/* Connection authentication: before anything else is read from a connection, both sides prove
 * they know the job secret with HMAC-SHA256 (OpenSSL libcrypto) over fresh random nonces, and the
 * connecting side's fixed-size payload (who it is) is covered by its proof.
 *
 *   client -> server  hello      magic, version, purpose, client nonce
 *   server -> client  challenge  magic, version, purpose, server nonce, HMAC(key, "S" hello nonce_s)
 *   client -> server  proof      HMAC(key, "C" nonce_c nonce_s purpose payload), payload
 *
 * The server side handles many connections at once with poll, so an intruder that sends garbage
 * or nothing delays nobody: it is refused, logged, and the job goes on. The message bytes are
 * built and checked in auth_proto.c; this file's functions do the I/O. */
#ifndef TALLY_AUTH_H
#define TALLY_AUTH_H

#include <stdint.h>

#include "auth_proto.h"
#include "net.h"
#include "tally.h"
#include "uid.h"

/* Fills `out` from the kernel's random source (getrandom); aborts if the kernel cannot. */
void tally_random_bytes(void *out, size_t len);

/* Client side on a connected fd: blocks until authenticated or the deadline. */
tally_result_t tally_auth_connect(int fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                  const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], uint64_t deadline,
                                  int abort_fd);

/* Called for each authenticated connection. Return 1 to keep the fd (the callee owns it), or 0 to
 * refuse it (after writing why into `why`); the server then closes it and logs the reason. */
typedef int (*tally_auth_admit_fn)(void *ctx, int fd, const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES],
                                   const char *from, char *why, size_t whylen);

/* Called by tally_auth_accept at least every WATCH_MS (auth.c) while it waits, with admit's ctx: a
 * chance to look at the world outside the listener (a shrink's root checks that the ranks it waits
 * for are alive) and to change *want. */
typedef void (*tally_auth_watch_fn)(void *ctx);

/* Accepts on listen_fd until `admit` has kept *want connections (admit or watch may change *want), the deadline
 * passes or abort_fd becomes readable. Connections that fail the handshake are closed and logged at WARN. `watch`
 * may be NULL. */
tally_result_t tally_auth_accept(int listen_fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                 const int *want, uint64_t deadline, int abort_fd, tally_auth_admit_fn admit,
                                 tally_auth_watch_fn watch, void *ctx);

/* tally_auth_accept for a server that is told when to stop: once `drain_fd` becomes readable it
 * still takes what is in the listener's queue and finishes the handshakes under way (for at most a
 * second), then returns TALLY_SUCCESS; so a client that connected before the stop gets its answer
 * rather than a reset. */
tally_result_t tally_auth_serve(int listen_fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                const int *want, uint64_t deadline, int drain_fd, tally_auth_admit_fn admit, void *ctx);

#endif
