/* The authentication handshake over a new verbs connection: the same exchange as over TCP
 * (auth_proto.h: hello, challenge, proof carrying the client's rank and communicator, then the
 * server's verdict), carried in AUTH control messages. Until it succeeds nothing else is read from
 * the connection and no buffer of this rank is offered to the peer. */
#define _GNU_SOURCE
#include <poll.h>
#include <string.h>

#include "bootstrap/auth.h"
#include "core/bytes.h"
#include "core/clock.h"
#include "core/error.h"
#include "verbs.h"

enum { VERDICT_ACCEPTED = 1 };

static tally_result_t send_auth(struct tally_conn *c, int flags, const unsigned char *body, size_t len) {
  int slot = verbs_ctrl_begin(c, MSG_AUTH, flags, 0, 1);
  if (slot < 0) return TALLY_ERROR(TALLY_ERR_SYSTEM, "no control slot free for the handshake with %s", c->peer_text);
  memcpy(verbs_send_slot(c, slot) + VERBS_CTRL_HEAD, body, len);
  return verbs_ctrl_post(c, slot, len);
}

/* Takes the next AUTH message if one arrived: copies exactly `len` bytes of its body (a message of
 * another length is refused) and its flags. Returns 1 when taken, 0 when none arrived yet. */
static int take_auth(struct tally_conn *c, unsigned char *body, size_t len, int *flags, tally_result_t *r) {
  int moved = 0;
  *r = verbs_poll(c, &moved);
  if (*r != TALLY_SUCCESS || c->narrivals == 0) return 0;
  const struct verbs_arrival *a = &c->arrivals[c->arrival_head];
  const unsigned char *m = verbs_recv_slot(c, a->slot);
  if (a->type != MSG_AUTH || a->bytes != len) {
    *r = TALLY_ERROR(TALLY_ERR_REMOTE, "%s did not follow the authentication handshake", c->peer_text);
    return 0;
  }
  memcpy(body, m + VERBS_CTRL_HEAD, len);
  *flags = m[1];
  int slot = a->slot;
  c->arrival_head = (c->arrival_head + 1) % VERBS_ARRIVALS;
  c->narrivals--;
  *r = verbs_repost_recv(c, slot);
  return *r == TALLY_SUCCESS;
}

/* Blocks (polling every millisecond) until the next AUTH message, the deadline or an abort. */
static tally_result_t wait_auth(struct tally_conn *c, uint64_t deadline, unsigned char *body, size_t len, int *flags) {
  for (;;) {
    tally_result_t r;
    if (take_auth(c, body, len, flags, &r)) return TALLY_SUCCESS;
    if (r != TALLY_SUCCESS) return r;
    if (c->broken[0]) return verbs_conn_error(c, "authenticating");
    if (tally_now_ns() >= deadline)
      return TALLY_ERROR(TALLY_ERR_TIMEOUT, "%s did not complete the authentication handshake in time", c->peer_text);
    struct pollfd pfd = {.fd = c->ep->abort_fd, .events = POLLIN};
    if (poll(&pfd, 1, 1) > 0) return TALLY_ERROR(TALLY_ERR_ABORTED, "the communicator was aborted (tally_comm_abort)");
  }
}

tally_result_t verbs_handshake_client(struct tally_conn *c, uint64_t comm_id, uint64_t deadline) {
  unsigned char nonce[TALLY_AUTH_NONCE_BYTES], hello[TALLY_AUTH_HELLO_BYTES], challenge[TALLY_AUTH_CHALLENGE_BYTES];
  unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES] = {0}, proof[TALLY_AUTH_PROOF_BYTES], verdict;
  int flags;
  tally_random_bytes(nonce, sizeof nonce);
  tally_auth_hello_make(TALLY_PURPOSE_DATA, nonce, hello);
  TALLY_CHECK(send_auth(c, 0, hello, sizeof hello));
  TALLY_CHECK(wait_auth(c, deadline, challenge, sizeof challenge, &flags));
  if (tally_auth_challenge_check(c->ep->secret, hello, challenge, TALLY_PURPOSE_DATA) != TALLY_AUTH_VALID)
    return TALLY_ERROR(TALLY_ERR_REMOTE,
                       "%s answered the handshake without knowing this job's secret: it is not a rank of this job",
                       c->peer_text);
  tally_put_u32(payload, (uint32_t)c->ep->rank);
  tally_put_u64(payload + 4, comm_id);
  tally_auth_proof_make(c->ep->secret, hello, challenge, TALLY_PURPOSE_DATA, payload, proof);
  TALLY_CHECK(send_auth(c, 0, proof, sizeof proof));
  TALLY_CHECK(wait_auth(c, deadline, &verdict, 1, &flags));
  if (!(flags & VERDICT_ACCEPTED))
    return TALLY_ERROR(TALLY_ERR_REMOTE, "%s refused this rank's connection for communicator %016llx", c->peer_text,
                       (unsigned long long)comm_id);
  return TALLY_SUCCESS;
}

tally_result_t verbs_handshake_server_step(struct tally_conn *c, struct verbs_server_handshake *hs, int *done) {
  *done = 0;
  int flags;
  tally_result_t r;
  if (hs->state == 0) {
    if (!take_auth(c, hs->hello, sizeof hs->hello, &flags, &r)) return r;
    if (tally_auth_hello_check(hs->hello, TALLY_PURPOSE_DATA) != TALLY_AUTH_VALID)
      return TALLY_ERROR(TALLY_ERR_REMOTE, "the peer's first message is not a Tally handshake");
    unsigned char nonce[TALLY_AUTH_NONCE_BYTES];
    tally_random_bytes(nonce, sizeof nonce);
    tally_auth_challenge_make(c->ep->secret, hs->hello, TALLY_PURPOSE_DATA, nonce, hs->challenge);
    hs->state = 1;
    return send_auth(c, 0, hs->challenge, sizeof hs->challenge);
  }
  unsigned char proof[TALLY_AUTH_PROOF_BYTES];
  if (!take_auth(c, proof, sizeof proof, &flags, &r)) return r;
  if (tally_auth_proof_check(c->ep->secret, hs->hello, hs->challenge, TALLY_PURPOSE_DATA, proof) != TALLY_AUTH_VALID)
    return TALLY_ERROR(TALLY_ERR_REMOTE, "the peer does not know this job's secret");
  const unsigned char *payload = tally_auth_proof_payload(proof);
  hs->rank = (int)tally_get_u32(payload);
  hs->comm_id = tally_get_u64(payload + 4);
  *done = 1;
  return TALLY_SUCCESS;
}

tally_result_t verbs_handshake_verdict(struct tally_conn *c, int accepted) {
  unsigned char verdict = 0;
  return send_auth(c, accepted ? VERDICT_ACCEPTED : 0, &verdict, 1);
}
