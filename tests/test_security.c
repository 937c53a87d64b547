/* Intruders at the bootstrap root: garbage bytes, a silent connection, a client with the wrong
 * secret and a forged proof are all refused, and the real job still completes correctly. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap/auth.h"
#include "bootstrap/net.h"
#include "bootstrap/uid.h"
#include "core/clock.h"
#include "harness.h"

static int connect_to(const struct tally_sockaddr *addr) {
  int fd;
  return tally_net_connect(addr, tally_deadline_after(5), -1, &fd) == TALLY_SUCCESS ? fd : -1;
}

/* After being refused, the root must close the connection without sending an address table. */
static int closed_without_table(int fd) {
  char byte;
  tally_result_t r = tally_net_read_all(fd, &byte, 1, tally_deadline_after(15), -1);
  close(fd);
  return r == TALLY_ERR_REMOTE;
}

static int intrude(int rank, const struct tally_job_id *job, int *silent_fd) {
  /* 1. garbage */
  int fd = connect_to(&job->root);
  const char junk[] = "GET / HTTP/1.0\r\n\r\n and a lot more garbage than a hello message holds";
  if (fd < 0 || write(fd, junk, sizeof junk) != sizeof junk || !closed_without_table(fd))
    return harness_fail(rank, "garbage was not refused");
  /* 2. silent: holds a connection open and never speaks, for the whole job */
  *silent_fd = connect_to(&job->root);
  if (*silent_fd < 0) return harness_fail(rank, "cannot open the silent connection");
  /* 3. the wrong secret: the root's challenge fails the client's check */
  unsigned char wrong[TALLY_SECRET_BYTES], payload[TALLY_AUTH_PAYLOAD_BYTES] = {0};
  memcpy(wrong, job->secret, sizeof wrong);
  wrong[0] ^= 1;
  fd = connect_to(&job->root);
  tally_result_t r = tally_auth_connect(fd, wrong, TALLY_PURPOSE_BOOTSTRAP, payload, tally_deadline_after(5), -1);
  close(fd);
  if (r != TALLY_ERR_AUTH) return harness_fail(rank, "wrong secret: expected AUTH, got %s", tally_result_string(r));
  /* 4. a forged proof: a valid hello, then random bytes where the HMAC should be, claiming rank 1 */
  fd = connect_to(&job->root);
  unsigned char hello[24] = {'T', 'L', 'Y', 'A', 0, 1, 0, TALLY_PURPOSE_BOOTSTRAP}, challenge[56];
  unsigned char forged[32 + TALLY_AUTH_PAYLOAD_BYTES];
  memset(forged, 0x42, sizeof forged);
  memset(forged + 32, 0, TALLY_AUTH_PAYLOAD_BYTES);
  forged[32 + 3] = 1; /* rank 1 */
  forged[32 + 7] = 2; /* of 2 */
  if (fd < 0 || write(fd, hello, sizeof hello) != sizeof hello ||
      tally_net_read_all(fd, challenge, sizeof challenge, tally_deadline_after(5), -1) != TALLY_SUCCESS ||
      write(fd, forged, sizeof forged) != sizeof forged || !closed_without_table(fd))
    return harness_fail(rank, "a forged proof was not refused");
  return 0;
}

static int job_with_intruders(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  int silent_fd = -1;
  if (rank == 0) {
    struct tally_job_id job;
    if (tally_uid_decode(id, &job) != TALLY_SUCCESS) return harness_fail(rank, "cannot decode the id");
    if (intrude(rank, &job, &silent_fd)) return 1;
  }
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, *id, rank);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "init after intruders: %s", tally_comm_last_error(NULL));
  int x = rank + 1, sum = 0;
  r = tally_allreduce(&x, &sum, 1, TALLY_INT32, TALLY_SUM, comm, NULL);
  tally_comm_destroy(comm);
  if (silent_fd >= 0) close(silent_fd);
  if (r != TALLY_SUCCESS || sum != nranks * (nranks + 1) / 2)
    return harness_fail(rank, "allreduce after intruders: %s, sum %d", tally_result_string(r), sum);
  return 0;
}

Test(security, intruders_refused_job_completes) { cr_assert_eq(harness_run_raw(2, 60, job_with_intruders, NULL), 0); }
