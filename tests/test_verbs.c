/* The RDMA verbs transport. With an RDMA device (the Soft-RoCE VM: tests/rdma-vm/run.sh): every
 * collective, datatype and op on 2, 3 and 4 ranks forced onto verbs; 64 MiB buffers with
 * registration cache hits and misses; a buffer freed and mapped again at the same address; a peer
 * killed mid-transfer; two emulated hosts, verbs between them and shared memory inside; send/recv
 * between ring neighbours over verbs, alltoall, gather and scatter on two hosts (pairs not connected
 * at init go over TCP), and forced verbs refusing such a pair with a message. Without one (this
 * machine): forcing verbs fails with a clear message and auto quietly uses TCP. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <infiniband/verbs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coll_cases.h"
#include "harness.h"
#include "p2p_cases.h"

static int rdma_devices(void) {
  int n = 0;
  struct ibv_device **list = ibv_get_device_list(&n);
  if (list) ibv_free_device_list(list);
  return n;
}

/* ctest runs suite `verbs` only where a device exists (tests/if_rdma.sh) and `verbs_no_device`
 * everywhere; these guards make a direct run of the binary say the same. */
#define NEED_DEVICE()                                                                           \
  do {                                                                                          \
    if (rdma_devices() == 0) cr_skip_test("SKIPPED: no RDMA device here (run make test-rdma)"); \
  } while (0)
#define NEED_NO_DEVICE()                                                              \
  do {                                                                                \
    if (rdma_devices() > 0) cr_skip_test("SKIPPED: this machine has an RDMA device"); \
  } while (0)

/* Each rank's log goes to its own file, for tests that read what the library said. */
static void log_to_file(int rank, const char *test) {
  char path[128];
  snprintf(path, sizeof path, "/tmp/tally-verbs-%s-%d-rank%d.log", test, (int)getppid(), rank);
  if (!freopen(path, "w", stderr)) abort();
  setvbuf(stderr, NULL, _IONBF, 0);
}

/* Whether the rank's log file contains `needle`; fills `line` with the first matching line. A
 * missing log fails the test. */
static int log_has(int rank, const char *test, const char *needle, char *line, size_t len) {
  char path[128], buf[1024];
  snprintf(path, sizeof path, "/tmp/tally-verbs-%s-%d-rank%d.log", test, (int)getpid(), rank);
  FILE *f = fopen(path, "r");
  cr_assert(f, "rank %d left no log at %s", rank, path);
  int found = 0;
  while (f && !found && fgets(buf, sizeof buf, f))
    if (strstr(buf, needle)) {
      found = 1;
      if (line) snprintf(line, len, "%s", buf);
    }
  fclose(f);
  return found;
}

/* --- without a device ------------------------------------------------------------------------ */

static int forced_without_device(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  tally_comm_t comm;
  tally_result_t r = tally_comm_init_rank(&comm, nranks, *id, rank);
  if (r == TALLY_SUCCESS) return harness_fail(rank, "init succeeded with TALLY_TRANSPORT=verbs and no RDMA device");
  int bad = harness_expect(rank, NULL, r, TALLY_ERR_UNSUPPORTED, "TALLY_TRANSPORT=verbs");
  bad += harness_expect(rank, NULL, r, TALLY_ERR_UNSUPPORTED, "no RDMA device");
  return bad + harness_expect(rank, NULL, r, TALLY_ERR_UNSUPPORTED, "TALLY_TRANSPORT=auto");
}

Test(verbs_no_device, forced_verbs_fails_clearly) {
  NEED_NO_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_TIMEOUT", "20", 1);
  cr_assert_eq(harness_run_raw(2, 60, forced_without_device, NULL), 0);
}

static int auto_without_device(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  float x = 1;
  tally_result_t r = tally_allreduce(&x, &x, 1, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS || x != 2) return harness_fail(rank, "allreduce over TCP: %s", tally_comm_last_error(comm));
  return 0;
}

/* Runs `body` on a communicator whose rank logs into its own file (log_has reads it). */
static int run_logged(int rank, int nranks, const tally_unique_id_t *id, const char *test, harness_body_fn body) {
  log_to_file(rank, test);
  tally_comm_t comm;
  if (tally_comm_init_rank(&comm, nranks, *id, rank) != TALLY_SUCCESS)
    return harness_fail(rank, "init: %s", tally_comm_last_error(NULL));
  int bad = body(comm, rank, nranks, NULL);
  tally_comm_destroy(comm); /* the verbs endpoint logs its registration cache's counts */
  return bad;
}

static int auto_without_device_quietly(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  return run_logged(rank, nranks, id, "auto", auto_without_device);
}

Test(verbs_no_device, auto_uses_tcp_quietly) {
  NEED_NO_DEVICE();
  setenv("TALLY_TRANSPORT", "auto", 1);
  cr_assert_eq(harness_run_raw(2, 60, auto_without_device_quietly, NULL), 0);
  for (int r = 0; r < 2; r++) {
    char line[1024];
    cr_expect(!log_has(r, "auto", "WARN", line, sizeof line), "rank %d warned: %s", r, line);
  }
}

/* --- with a device ----------------------------------------------------------------------------- */

#define FORCED_TEST(n)                                                                           \
  Test(verbs, every_collective_on_##n##_ranks) {                                                 \
    NEED_DEVICE();                                                                               \
    setenv("TALLY_TRANSPORT", "verbs", 1);                                                       \
    cr_assert_eq(harness_run(n, 900, coll_all_cases, NULL), 0, "some rank failed (see stderr)"); \
  }
FORCED_TEST(2)
FORCED_TEST(3)
FORCED_TEST(4)

enum { BIG_COUNT = (64 << 20) / 4 };

/* Allreduce of 64 MiB of floats in `buf`, every element checked: rank r contributes r+1+i%7. */
static int big_allreduce(tally_comm_t comm, int rank, int n, float *buf, const char *what) {
  for (size_t i = 0; i < BIG_COUNT; i++) buf[i] = (float)(rank + 1 + (int)(i % 7));
  tally_result_t r = tally_allreduce(buf, buf, BIG_COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "%s: %s", what, tally_comm_last_error(comm));
  for (size_t i = 0; i < BIG_COUNT; i++) {
    float want = (float)(n * (n + 1) / 2 + n * (int)(i % 7));
    if (buf[i] != want) return harness_fail(rank, "%s: element %zu is %g, expected %g", what, i, buf[i], want);
  }
  return 0;
}

/* The same buffers three times (registration cache hits), then fresh ones (misses), then a buffer
 * unmapped and mapped again at the same address with other pages behind it (a stale registration
 * would move the old pages and the result would be wrong), then a read-only source. */
static int registrations_body(tally_comm_t comm, int rank, int nranks, void *arg) {
  (void)arg;
  size_t bytes = (size_t)BIG_COUNT * 4;
  int bad = 0;
  float *a = malloc(bytes), *b = malloc(bytes);
  for (int i = 0; i < 3 && !bad; i++) bad += big_allreduce(comm, rank, nranks, a, "same buffer");
  bad += big_allreduce(comm, rank, nranks, b, "another buffer");
  void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!bad) bad += big_allreduce(comm, rank, nranks, m, "mapped buffer");
  munmap(m, bytes);
  void *again = mmap(m, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (again != m) bad += harness_fail(rank, "could not map the same address again");
  if (!bad) bad += big_allreduce(comm, rank, nranks, again, "buffer mapped again at the same address");
  munmap(again, bytes);
  /* out of place from memory that cannot be written: registered for reading only */
  float *source = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < BIG_COUNT; i++) source[i] = (float)(rank + 1 + (int)(i % 7));
  mprotect(source, bytes, PROT_READ);
  tally_result_t r = bad ? TALLY_SUCCESS : tally_allreduce(source, a, BIG_COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
  if (r != TALLY_SUCCESS) bad += harness_fail(rank, "from read-only memory: %s", tally_comm_last_error(comm));
  for (size_t i = 0; !bad && i < BIG_COUNT; i++)
    if (a[i] != (float)(nranks * (nranks + 1) / 2 + nranks * (int)(i % 7)))
      bad += harness_fail(rank, "from read-only memory: element %zu is %g", i, a[i]);
  munmap(source, bytes);
  free(a);
  free(b);
  return bad;
}

static int registrations(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  return run_logged(rank, nranks, id, "reg", registrations_body);
}

Test(verbs, large_buffers_and_registration_cache) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_DEBUG", "INFO", 1);
  setenv("TALLY_DEBUG_SUBSYS", "NET", 1);
  cr_assert_eq(harness_run_raw(2, 900, registrations, NULL), 0, "some rank failed (see its log in /tmp)");
  for (int r = 0; r < 2; r++) {
    char line[1024];
    unsigned long hits = 0, misses = 0, stale = 0;
    cr_assert(log_has(r, "reg", "registration cache:", line, sizeof line), "rank %d logged no cache counts", r);
    const char *counts = strstr(line, "registration cache:");
    cr_assert_eq(sscanf(counts, "registration cache: %lu hits, %lu misses, %lu stale", &hits, &misses, &stale), 3);
    cr_expect_gt(hits, 0, "rank %d: %s", r, line);
    cr_expect_gt(misses, 0, "rank %d: %s", r, line);
    cr_expect_gt(stale, 0, "rank %d: the remapped buffer was not seen as stale: %s", r, line);
  }
}

/* kill -9 of rank 1 of 3 in the middle of 64 MiB allreduces: the survivors name it in time. */
static int killed_mid_transfer(tally_comm_t comm, int rank, int n, void *arg) {
  (void)arg;
  float *buf = malloc((size_t)BIG_COUNT * 4);
  memset(buf, 0, (size_t)BIG_COUNT * 4);
  for (int i = 0;; i++) {
    if (rank == 1 && i == 2) {
      if (fork() == 0) { /* dies while its allreduce is moving data */
        usleep(300 * 1000);
        kill(getppid(), SIGKILL);
        _exit(0);
      }
    }
    double start = harness_now_s();
    tally_result_t r = tally_allreduce(buf, buf, BIG_COUNT, TALLY_FLOAT32, TALLY_SUM, comm, NULL);
    if (r == TALLY_SUCCESS) continue;
    double took = harness_now_s() - start;
    fprintf(stderr, "rank %d: the failed allreduce returned after %.2f s: %s\n", rank, took,
            tally_comm_last_error(comm));
    int bad = harness_expect(rank, comm, r, TALLY_ERR_REMOTE, "rank 1");
    if (took > 60) bad += harness_fail(rank, "noticing the dead rank took %.1f s", took);
    free(buf);
    (void)n;
    return bad;
  }
}

Test(verbs, peer_killed_mid_transfer) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_TIMEOUT", "120", 1);
  cr_assert_eq(harness_run_killing(3, 400, killed_mid_transfer, NULL, 1), 0);
}

/* Two emulated hosts of two ranks (TALLY_HOSTID): shared memory inside each, verbs between them,
 * every collective checked; each rank's log says which transport carries its ring links. */
static int two_hosts(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  setenv("TALLY_HOSTID", rank < 2 ? "verbs-test-host-a" : "verbs-test-host-b", 1);
  return run_logged(rank, nranks, id, "hosts", coll_all_cases);
}

Test(verbs, two_hosts_hierarchical) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "auto", 1);
  setenv("TALLY_DEBUG", "INFO", 1);
  setenv("TALLY_DEBUG_SUBSYS", "INIT", 1);
  cr_assert_eq(harness_run_raw(4, 900, two_hosts, NULL), 0, "some rank failed (see its log in /tmp)");
  char line[1024];
  /* the world ring 0 1 | 2 3: ranks 1 and 3 send to the other host, 0 and 2 within their own */
  cr_expect(log_has(1, "hosts", "verbs to rank 2", line, sizeof line), "rank 1 does not use verbs to rank 2");
  cr_expect(log_has(3, "hosts", "verbs to rank 0", line, sizeof line), "rank 3 does not use verbs to rank 0");
  cr_expect(log_has(0, "hosts", "shm to rank 1", line, sizeof line), "rank 0 does not use shm to rank 1");
  cr_expect(log_has(2, "hosts", "hierarchical rings", line, sizeof line), "rank 2 has no hierarchical rings");
}

/* --- point to point ------------------------------------------------------------------------------ */

/* Sends and recvs between ring neighbours, whose connections verbs made at init. */
Test(verbs, send_recv_between_neighbours) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  cr_assert_eq(harness_run(3, 900, p2p_ring_exchange, NULL), 0, "some rank failed (see stderr)");
}

/* Two emulated hosts: ring and partner links from init (verbs across, shared memory inside), the
 * pairs that alltoall, gather and scatter add connected on first use (TCP across). */
static int p2p_on_two_hosts(tally_comm_t comm, int rank, int n, void *arg) {
  return p2p_alltoall_cases(comm, rank, n, arg) || p2p_rooted_cases(comm, rank, n, arg);
}

Test(verbs, alltoall_gather_scatter_on_two_hosts) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "auto", 1);
  cr_assert_eq(harness_run_on_hosts(4, 2, 900, p2p_on_two_hosts, NULL), 0, "some rank failed (see stderr)");
}

/* Forced verbs and only the ring connected at init: an alltoall needs rank r to send to rank r-1,
 * which RDMA cannot connect after init; every rank is refused with a message saying what to do. */
static int forced_verbs_new_pair(tally_comm_t comm, int rank, int n, void *arg) {
  (void)n, (void)arg;
  int32_t send[3] = {0}, recv[3];
  return harness_expect(rank, comm, tally_alltoall(send, recv, 1, TALLY_INT32, comm, NULL), TALLY_ERR_UNSUPPORTED,
                        "use TALLY_TRANSPORT=auto");
}

Test(verbs, forced_verbs_refuses_pairs_after_init) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_ALGO", "ring", 1);
  setenv("TALLY_TIMEOUT", "30", 1);
  cr_assert_eq(harness_run(3, 300, forced_verbs_new_pair, NULL), 0, "some rank failed (see stderr)");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
}
