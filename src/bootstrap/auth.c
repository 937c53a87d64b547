/* HMAC challenge-response authentication of every connection (see auth.h for the exchange). */
#define _GNU_SOURCE
#include "auth.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

enum {
  HELLO = TALLY_AUTH_HELLO_BYTES,
  CHALLENGE = TALLY_AUTH_CHALLENGE_BYTES,
  PROOF = TALLY_AUTH_PROOF_BYTES,
  HANDSHAKE_SECONDS = 10 /* an accepted connection must finish its handshake within this */
};

void tally_random_bytes(void *out, size_t len) {
  unsigned char *buf = out;
  while (len > 0) {
    ssize_t n = getrandom(buf, len, 0);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (errno != EINTR) {
      abort(); /* the kernel's random source failing leaves nothing safe to do */
    }
  }
}

tally_result_t tally_auth_connect(int fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                  const unsigned char payload[TALLY_AUTH_PAYLOAD_BYTES], uint64_t deadline,
                                  int abort_fd) {
  unsigned char nonce_c[TALLY_AUTH_NONCE_BYTES], hello[HELLO], challenge[CHALLENGE], proof[PROOF];
  tally_random_bytes(nonce_c, sizeof nonce_c);
  tally_auth_hello_make(purpose, nonce_c, hello);
  TALLY_CHECK(tally_net_write_all(fd, hello, sizeof hello, deadline, abort_fd));
  TALLY_CHECK(tally_net_read_all(fd, challenge, sizeof challenge, deadline, abort_fd));
  switch (tally_auth_challenge_check(key, hello, challenge, purpose)) {
    case TALLY_AUTH_VALID: break;
    case TALLY_AUTH_NOT_HANDSHAKE:
      return TALLY_ERROR(TALLY_ERR_AUTH, "the listener answered with something that is not a Tally handshake");
    case TALLY_AUTH_WRONG_SECRET:
      return TALLY_ERROR(TALLY_ERR_AUTH,
                         "the listener does not know this job's secret: check that every rank got the same unique id "
                         "or TALLY_SECRET");
  }
  tally_auth_proof_make(key, hello, challenge, purpose, payload, proof);
  return tally_net_write_all(fd, proof, sizeof proof, deadline, abort_fd);
}

/* One connection in the middle of its handshake on the server side. */
struct pending {
  int fd;
  int stage; /* 0: reading hello, 1: reading proof */
  size_t have;
  unsigned char buf[PROOF];
  unsigned char hello[HELLO], challenge[CHALLENGE]; /* the transcript the proof must match */
  uint64_t deadline;
  char from[80];
};

static void refuse(struct pending *p, const char *why) {
  TLOG_WARN(TALLY_SUBSYS_NET, "refused a connection from %s: %s", p->from, why);
  close(p->fd);
  p->fd = -1;
}

/* Reads what has arrived; returns 1 when the handshake is complete, 0 to wait, -1 when refused. */
static int advance(struct pending *p, const unsigned char *key, uint16_t purpose) {
  size_t need = p->stage == 0 ? HELLO : PROOF;
  ssize_t n = recv(p->fd, p->buf + p->have, need - p->have, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    refuse(p, "closed before finishing the handshake");
    return -1;
  }
  if (n < 0) return 0;
  p->have += (size_t)n;
  if (p->have < need) return 0;
  if (p->stage == 0) {
    if (tally_auth_hello_check(p->buf, purpose) != TALLY_AUTH_VALID) {
      refuse(p, "not a Tally handshake (garbage, another program, or another Tally version)");
      return -1;
    }
    unsigned char nonce_s[TALLY_AUTH_NONCE_BYTES];
    memcpy(p->hello, p->buf, HELLO);
    tally_random_bytes(nonce_s, sizeof nonce_s);
    tally_auth_challenge_make(key, p->hello, purpose, nonce_s, p->challenge);
    if (send(p->fd, p->challenge, CHALLENGE, MSG_NOSIGNAL) != (ssize_t)CHALLENGE) {
      refuse(p, "could not send the challenge");
      return -1;
    }
    p->stage = 1;
    p->have = 0;
    return 0;
  }
  if (tally_auth_proof_check(key, p->hello, p->challenge, purpose, p->buf) != TALLY_AUTH_VALID) {
    refuse(p, "wrong secret (its proof does not match this job's secret)");
    return -1;
  }
  return 1;
}

/* tally_auth_accept, and tally_auth_serve when drain_fd >= 0. */
static tally_result_t accept_loop(int listen_fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                  const int *want, uint64_t deadline, int abort_fd, int drain_fd,
                                  tally_auth_admit_fn admit, tally_auth_watch_fn watch, void *ctx) {
  enum { MAX_PENDING = 64, WATCH_MS = 250, DRAIN_POLL_MS = 5, DRAIN_MS = 1000 };
  struct pending pend[MAX_PENDING];
  int npend = 0, kept = 0, draining = 0;
  tally_result_t result = TALLY_SUCCESS;
  while (kept < *want) {
    struct pollfd pfd[MAX_PENDING + 3];
    pfd[0] = (struct pollfd){.fd = listen_fd, .events = npend < MAX_PENDING ? POLLIN : 0};
    pfd[1] = (struct pollfd){.fd = abort_fd, .events = POLLIN};
    pfd[2] = (struct pollfd){.fd = draining ? -1 : drain_fd, .events = POLLIN};
    for (int i = 0; i < npend; i++) pfd[i + 3] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
    int ms = tally_ms_until(deadline, draining ? DRAIN_POLL_MS : watch ? WATCH_MS : 500);
    if (ms == 0 && draining) break;
    if (draining && npend == 0) ms = 0; /* only what is queued already */
    if (ms == 0) {
      result = TALLY_ERROR(TALLY_ERR_TIMEOUT, "only %d of %d expected connections arrived before TALLY_TIMEOUT", kept,
                           *want);
      break;
    }
    int n = poll(pfd, (nfds_t)npend + 3, ms);
    if (n < 0 && errno != EINTR) {
      result = TALLY_ERROR(TALLY_ERR_SYSTEM, "poll: %s", strerror(errno));
      break;
    }
    if (abort_fd >= 0 && pfd[1].revents) {
      result = TALLY_ERROR(TALLY_ERR_ABORTED, "aborted while accepting connections (tally_comm_abort)");
      break;
    }
    if (!draining && drain_fd >= 0 && pfd[2].revents) { /* from now on only what already came */
      draining = 1;
      deadline = tally_deadline_after(DRAIN_MS / 1000.0);
    }
    if (draining && n == 0 && npend == 0) break; /* nothing in the queue, no handshake under way */
    uint64_t now = tally_now_ns();
    for (int i = 0; i < npend; i++) {
      struct pending *p = &pend[i];
      if (pfd[i + 3].revents) {
        int done = advance(p, key, purpose);
        if (done == 1) {
          char why[256] = "";
          if (admit(ctx, p->fd, tally_auth_proof_payload(p->buf), p->from, why, sizeof why)) {
            kept++;
            p->fd = -1;
          } else {
            refuse(p, why);
          }
        }
      } else if (now > p->deadline) {
        refuse(p, "did not finish the handshake in time");
      }
    }
    for (int i = 0; i < npend;) /* drop finished entries */
      if (pend[i].fd < 0)
        pend[i] = pend[--npend];
      else
        i++;
    if (pfd[0].revents & POLLIN) {
      struct tally_sockaddr from = {.len = sizeof from.ss};
      int fd = accept4(listen_fd, (struct sockaddr *)&from.ss, &from.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        struct pending *p = &pend[npend++];
        memset(p, 0, sizeof *p);
        p->fd = fd;
        p->deadline = now + HANDSHAKE_SECONDS * 1000000000ull;
        tally_net_format(&from, p->from, sizeof p->from);
        tally_net_set_nodelay(fd);
      }
    }
    if (watch) watch(ctx);
  }
  for (int i = 0; i < npend; i++) close(pend[i].fd);
  return result;
}

tally_result_t tally_auth_accept(int listen_fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                 const int *want, uint64_t deadline, int abort_fd, tally_auth_admit_fn admit,
                                 tally_auth_watch_fn watch, void *ctx) {
  return accept_loop(listen_fd, key, purpose, want, deadline, abort_fd, -1, admit, watch, ctx);
}

tally_result_t tally_auth_serve(int listen_fd, const unsigned char key[TALLY_SECRET_BYTES], uint16_t purpose,
                                const int *want, uint64_t deadline, int drain_fd, tally_auth_admit_fn admit,
                                void *ctx) {
  return accept_loop(listen_fd, key, purpose, want, deadline, -1, drain_fd, admit, NULL, ctx);
}
