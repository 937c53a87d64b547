/* The RDMA verbs transport. With an RDMA device (the Soft-RoCE VM: tests/rdma-vm/run.sh): every
 * collective, datatype and op on 2, 3 and 4 ranks forced onto verbs; 64 MiB buffers with
 * registration cache hits and misses; a buffer freed and mapped again at the same address; a peer
 * killed mid-transfer; two emulated hosts, verbs between them and shared memory inside; send/recv
 * between ring neighbours over verbs; pairs that no algorithm connected at init (send/recv,
 * alltoall, gather, scatter) connected on first use over verbs, forced and on two hosts, every byte
 * counted on verbs; strangers connecting after init refused without reaching registered memory,
 * while the endpoint still admits the rank it waits for; a rank of another communicator refused,
 * one that comes before it is wanted kept for the later accept. Without one (this machine): forcing verbs
 * fails with a clear message and auto quietly uses TCP. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coll_cases.h"
#include "core/clock.h"
#include "core/error.h"
#include "harness.h"
#include "p2p_cases.h"
#include "transports/verbs/verbs.h"

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

/* Every payload byte this rank sent went over verbs, none over another transport (tally_comm_stats). */
static int all_bytes_over_verbs(tally_comm_t comm, int rank, const char *what) {
  tally_stats_t stats = {.size = sizeof stats};
  tally_result_t r = tally_comm_stats(comm, &stats, NULL, NULL, NULL);
  if (r != TALLY_SUCCESS) return harness_fail(rank, "tally_comm_stats: %s", tally_comm_last_error(comm));
  unsigned long long over_verbs = 0, elsewhere = 0;
  for (int i = 0; i < stats.ntransports; i++) {
    if (!strcmp(stats.transports[i].name, "verbs"))
      over_verbs += stats.transports[i].bytes_sent;
    else
      elsewhere += stats.transports[i].bytes_sent;
  }
  if (over_verbs == 0 || elsewhere != 0)
    return harness_fail(rank, "%s: %llu bytes sent over verbs and %llu over other transports (expected all on verbs)",
                        what, over_verbs, elsewhere);
  return 0;
}

/* Two emulated hosts: ring and partner links from init (verbs across, shared memory inside), the
 * pairs that alltoall, gather and scatter add connected on first use, verbs across too: no byte
 * goes over TCP. */
static int p2p_on_two_hosts(tally_comm_t comm, int rank, int n, void *arg) {
  if (p2p_alltoall_cases(comm, rank, n, arg) || p2p_rooted_cases(comm, rank, n, arg)) return 1;
  tally_stats_t stats = {.size = sizeof stats};
  if (tally_comm_stats(comm, &stats, NULL, NULL, NULL) != TALLY_SUCCESS)
    return harness_fail(rank, "tally_comm_stats: %s", tally_comm_last_error(comm));
  for (int i = 0; i < stats.ntransports; i++)
    if (!strcmp(stats.transports[i].name, "tcp") && stats.transports[i].bytes_sent != 0)
      return harness_fail(rank, "%llu bytes went over TCP: a pair connected on first use did not use verbs",
                          (unsigned long long)stats.transports[i].bytes_sent);
  return 0;
}

Test(verbs, alltoall_gather_scatter_on_two_hosts) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "auto", 1);
  cr_assert_eq(harness_run_on_hosts(4, 2, 900, p2p_on_two_hosts, NULL), 0, "some rank failed (see stderr)");
}

/* Forced verbs and only the ring connected at init (0>1>2>3>0): send/recv between ranks two apart,
 * then alltoall, gather and scatter, connect new pairs on first use, over verbs. */
static int forced_verbs_new_pairs(tally_comm_t comm, int rank, int n, void *arg) {
  int partner = (rank + 2) % n, bad = 0;
  size_t sizes[2] = {100, 1 << 20}; /* through the control slots, and by RDMA write */
  for (int i = 0; i < 2 && !bad; i++) {
    unsigned char *out = malloc(sizes[i]), *in = malloc(sizes[i]);
    p2p_fill(out, sizes[i], rank, partner, i);
    tally_group_start();
    tally_result_t r = tally_send(out, sizes[i], TALLY_UINT8, partner, comm, NULL);
    if (r == TALLY_SUCCESS) r = tally_recv(in, sizes[i], TALLY_UINT8, partner, comm, NULL);
    tally_result_t end = tally_group_end();
    if (r != TALLY_SUCCESS || end != TALLY_SUCCESS)
      bad =
          harness_fail(rank, "send/recv of %zu bytes with rank %d: %s", sizes[i], partner, tally_comm_last_error(comm));
    else
      bad = p2p_check(rank, "send/recv with a rank two apart", in, sizes[i], partner, rank, i);
    free(out);
    free(in);
  }
  if (!bad) bad = p2p_alltoall_cases(comm, rank, n, arg) || p2p_rooted_cases(comm, rank, n, arg);
  return bad ? bad : all_bytes_over_verbs(comm, rank, "send/recv, alltoall, gather and scatter");
}

Test(verbs, forced_verbs_connects_new_pairs_on_first_use) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_ALGO", "ring", 1);
  setenv("TALLY_TIMEOUT", "60", 1);
  cr_assert_eq(harness_run(4, 600, forced_verbs_new_pairs, NULL), 0, "some rank failed (see stderr)");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_TIMEOUT");
}

/* --- strangers after init (the transport itself, so that the test knows a registered buffer's
 * address and rkey, as an attacker guessing them would) ------------------------------------------- */

static const struct tally_transport_ops *verbs_ops(void) {
  const struct tally_transport_ops *ops = tally_transport_find("verbs");
  cr_assert(ops, "this build has no verbs transport");
  return ops;
}

static struct tally_endpoint *open_endpoint_of_rank(int rank, const unsigned char *secret, int abort_fd) {
  struct tally_transport_params params = {.secret = secret,
                                          .rank = rank,
                                          .abort_fd = abort_fd,
                                          .ib_hca = "",
                                          .ib_gid_index = -1,
                                          .numa_node = -1,
                                          .ib_reg_cache_bytes = 1 << 30};
  struct tally_endpoint *ep = NULL;
  tally_result_t r = verbs_ops()->create(&params, &ep);
  cr_assert_eq(r, TALLY_SUCCESS, "creating the endpoint of rank %d: %s", rank, tally_error_message());
  return ep;
}

struct accept_run {
  struct tally_endpoint *ep;
  uint64_t comm_id;
  int peer;
  tally_result_t result;
  struct tally_conn *conn;
};

static void *accept_one(void *arg) {
  struct accept_run *a = arg;
  a->result = verbs_ops()->accept(a->ep, a->comm_id, 1, &a->peer, tally_deadline_after(30), &a->conn);
  return NULL;
}

/* A client that speaks rdma_cm but not Tally's handshake, with a queue pair of its own. */
struct stranger {
  struct rdma_event_channel *channel;
  struct rdma_cm_id *id;
  struct ibv_pd *pd;
  struct ibv_cq *cq;
  struct ibv_mr *mr;
  uint64_t word;
};

/* The next event's type, or -1 when none came within `ms`. */
static int stranger_event(struct stranger *s, int ms) {
  struct pollfd pfd = {.fd = s->channel->fd, .events = POLLIN};
  if (poll(&pfd, 1, ms) <= 0) return -1;
  struct rdma_cm_event *ev;
  if (rdma_get_cm_event(s->channel, &ev)) return -1;
  int type = ev->event;
  rdma_ack_cm_event(ev);
  return type;
}

/* Resolves `to`, makes a queue pair and sends a connection request; NULL, or what failed. */
static const char *stranger_connect(struct stranger *s, const struct tally_sockaddr *to) {
  s->channel = rdma_create_event_channel();
  if (!s->channel || rdma_create_id(s->channel, &s->id, NULL, RDMA_PS_TCP)) return "rdma_create_id";
  if (rdma_resolve_addr(s->id, NULL, (struct sockaddr *)&to->ss, 2000) ||
      stranger_event(s, 5000) != RDMA_CM_EVENT_ADDR_RESOLVED)
    return "resolving the address";
  if (rdma_resolve_route(s->id, 2000) || stranger_event(s, 5000) != RDMA_CM_EVENT_ROUTE_RESOLVED)
    return "resolving the route";
  s->pd = ibv_alloc_pd(s->id->verbs);
  s->cq = ibv_create_cq(s->id->verbs, 16, NULL, NULL, 0);
  struct ibv_qp_init_attr qp = {.send_cq = s->cq,
                                .recv_cq = s->cq,
                                .qp_type = IBV_QPT_RC,
                                .cap = {.max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1}};
  if (!s->pd || !s->cq || rdma_create_qp(s->id, s->pd, &qp)) return "making a queue pair";
  s->mr = ibv_reg_mr(s->pd, &s->word, sizeof s->word, IBV_ACCESS_LOCAL_WRITE);
  struct rdma_conn_param param = {.retry_count = 7, .rnr_retry_count = 7};
  if (!s->mr || rdma_connect(s->id, &param)) return "rdma_connect";
  return NULL;
}

/* RDMA-writes 8 bytes at `addr` with `rkey`; the completion's status. */
static enum ibv_wc_status stranger_write(struct stranger *s, uint64_t addr, uint32_t rkey) {
  s->word = 0x2121212121212121ull;
  struct ibv_sge sge = {(uintptr_t)&s->word, sizeof s->word, s->mr->lkey};
  struct ibv_send_wr wr = {.sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE, .send_flags = IBV_SEND_SIGNALED},
                     *bad;
  wr.wr.rdma.remote_addr = addr;
  wr.wr.rdma.rkey = rkey;
  cr_assert_eq(ibv_post_send(s->id->qp, &wr, &bad), 0);
  struct ibv_wc wc;
  double until = harness_now_s() + 60;
  while (ibv_poll_cq(s->cq, 1, &wc) == 0) {
    cr_assert_lt(harness_now_s(), until, "the stranger's RDMA write never completed");
    usleep(1000);
  }
  return wc.status;
}

static void stranger_close(struct stranger *s) {
  if (s->id && s->id->qp) rdma_destroy_qp(s->id);
  if (s->mr) ibv_dereg_mr(s->mr);
  if (s->cq) ibv_destroy_cq(s->cq);
  if (s->pd) ibv_dealloc_pd(s->pd);
  if (s->id) rdma_destroy_id(s->id);
  if (s->channel) rdma_destroy_event_channel(s->channel);
}

/* Rank 0 accepts rank 1 (init) and registers a buffer as a receive does; then two strangers connect
 * (their requests wait on the listen channel between accepts). Once rank 0's next accept (for rank
 * 2, connecting on first use) takes them, one tries an RDMA write into that buffer with its real
 * address and rkey before any handshake, the other stays silent: the device refuses the write, the
 * buffer is untouched, both strangers are disconnected, and rank 2 is admitted with RDMA writes
 * granted. (RDMA reads a stranger cannot even issue: Tally offers no responder resources.) */
Test(verbs, stranger_after_init_is_refused_and_cannot_reach_memory) {
  NEED_DEVICE();
  unsigned char secret[TALLY_SECRET_BYTES];
  memset(secret, 0x5a, sizeof secret);
  int abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct tally_endpoint *ep[3];
  for (int r = 0; r < 3; r++) ep[r] = open_endpoint_of_rank(r, secret, abort_fd);
  struct tally_sockaddr addr0;
  verbs_ops()->address(ep[0], &addr0);
  const uint64_t comm_id = 0x7e57c0de;

  struct accept_run init = {.ep = ep[0], .comm_id = comm_id, .peer = 1};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, accept_one, &init), 0);
  struct tally_conn *from1 = NULL;
  tally_result_t r = verbs_ops()->connect(ep[1], comm_id, 0, &addr0, tally_deadline_after(30), &from1);
  pthread_join(thread, NULL);
  cr_assert_eq(r, TALLY_SUCCESS, "rank 1 connecting at init: %s", tally_error_message());
  cr_assert_eq(init.result, TALLY_SUCCESS, "rank 0 accepting at init failed");

  enum { BYTES = 1 << 16 };
  unsigned char *buf = malloc(BYTES);
  memset(buf, 0xab, BYTES);
  void *handle = NULL;
  cr_assert_eq(verbs_ops()->register_memory(ep[0], buf, BYTES, &handle), TALLY_SUCCESS);
  const struct ibv_mr *mr = ((struct tally_mr_hold *)handle)->mr;
  /* registered as every receive buffer is, for remote writes (mr_cache.c) */

  struct stranger writer = {0}, silent = {0};
  const char *failed = stranger_connect(&writer, &addr0);
  if (!failed) failed = stranger_connect(&silent, &addr0);
  cr_assert(!failed, "a stranger could not even ask to connect: %s (%s)", failed, strerror(errno));
  usleep(200 * 1000); /* their requests wait on the listen channel between accepts */

  struct accept_run later = {.ep = ep[0], .comm_id = comm_id, .peer = 2};
  cr_assert_eq(pthread_create(&thread, NULL, accept_one, &later), 0);
  cr_assert_eq(stranger_event(&writer, 10000), RDMA_CM_EVENT_ESTABLISHED, "the writer was not connected");
  cr_assert_eq(stranger_event(&silent, 10000), RDMA_CM_EVENT_ESTABLISHED, "the silent one was not connected");
  enum ibv_wc_status wrote = stranger_write(&writer, (uintptr_t)buf + 64, mr->rkey);
  fprintf(stderr, "the stranger's RDMA write completed with '%s'\n", ibv_wc_status_str(wrote));
  cr_expect(wrote == IBV_WC_REM_INV_REQ_ERR || wrote == IBV_WC_REM_ACCESS_ERR,
            "the stranger's RDMA write completed with '%s', not refused by the device", ibv_wc_status_str(wrote));
  for (int i = 0; i < BYTES; i++) cr_assert_eq(buf[i], 0xab, "byte %d of the registered buffer was overwritten", i);

  struct tally_conn *to0 = NULL;
  r = verbs_ops()->connect(ep[2], comm_id, 0, &addr0, tally_deadline_after(30), &to0);
  pthread_join(thread, NULL);
  cr_assert_eq(r, TALLY_SUCCESS, "rank 2 connecting after the strangers: %s", tally_error_message());
  cr_assert_eq(later.result, TALLY_SUCCESS, "rank 0 did not admit rank 2 after the strangers");
  struct ibv_qp_attr attr;
  struct ibv_qp_init_attr init_attr;
  cr_assert_eq(ibv_query_qp(later.conn->qp, &attr, IBV_QP_ACCESS_FLAGS, &init_attr), 0);
  cr_expect(attr.qp_access_flags & IBV_ACCESS_REMOTE_WRITE, "rank 2, authenticated, may not RDMA-write");
  cr_expect(!(attr.qp_access_flags & IBV_ACCESS_REMOTE_READ), "rank 2 may RDMA-read, which Tally never needs");
  int writer_gone = 0, silent_gone = 0;
  for (int i = 0; i < 20 && !(writer_gone && silent_gone); i++) {
    writer_gone |= stranger_event(&writer, 500) == RDMA_CM_EVENT_DISCONNECTED;
    silent_gone |= stranger_event(&silent, 500) == RDMA_CM_EVENT_DISCONNECTED;
  }
  cr_expect(writer_gone && silent_gone, "a stranger was not disconnected (writer %d, silent one %d)", writer_gone,
            silent_gone);

  stranger_close(&writer);
  stranger_close(&silent);
  verbs_ops()->deregister_memory(ep[0], handle);
  free(buf);
  for (int i = 0; i < 3; i++) verbs_ops()->destroy(ep[i]);
  close(abort_fd);
}

/* Rank 0 accepts rank 2 only; rank 1 connects first, once for another communicator (refused) and
 * once for this one (authenticated, so kept); rank 0's next accept, for rank 1, takes that kept
 * connection at once. */
Test(verbs, early_rank_is_kept_for_the_later_accept) {
  NEED_DEVICE();
  unsigned char secret[TALLY_SECRET_BYTES];
  memset(secret, 0x3c, sizeof secret);
  int abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct tally_endpoint *ep[3];
  for (int r = 0; r < 3; r++) ep[r] = open_endpoint_of_rank(r, secret, abort_fd);
  struct tally_sockaddr addr0;
  verbs_ops()->address(ep[0], &addr0);
  const uint64_t comm_id = 0xea71;

  struct accept_run wants2 = {.ep = ep[0], .comm_id = comm_id, .peer = 2};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, accept_one, &wants2), 0);
  struct tally_conn *other = NULL, *from1 = NULL, *from2 = NULL;
  tally_result_t r = verbs_ops()->connect(ep[1], comm_id + 1, 0, &addr0, tally_deadline_after(30), &other);
  cr_expect_eq(r, TALLY_ERR_REMOTE, "a connection for another communicator was not refused");
  cr_expect(strstr(tally_error_message(), "refused"), "%s", tally_error_message());
  r = verbs_ops()->connect(ep[1], comm_id, 0, &addr0, tally_deadline_after(30), &from1);
  cr_assert_eq(r, TALLY_SUCCESS, "rank 1, early, was not kept: %s", tally_error_message());
  r = verbs_ops()->connect(ep[2], comm_id, 0, &addr0, tally_deadline_after(30), &from2);
  pthread_join(thread, NULL);
  cr_assert_eq(r, TALLY_SUCCESS, "rank 2: %s", tally_error_message());
  cr_assert_eq(wants2.result, TALLY_SUCCESS, "rank 0 did not admit rank 2");
  cr_expect_eq(wants2.conn->peer, 2);

  double start = harness_now_s();
  struct accept_run wants1 = {.ep = ep[0], .comm_id = comm_id, .peer = 1};
  accept_one(&wants1);
  cr_assert_eq(wants1.result, TALLY_SUCCESS, "rank 0 did not take rank 1's kept connection");
  cr_expect_eq(wants1.conn->peer, 1);
  cr_expect_lt(harness_now_s() - start, 1.0, "taking a kept connection waited on the network");
  for (int i = 0; i < 3; i++) verbs_ops()->destroy(ep[i]);
  close(abort_fd);
}

/* A stranger that connects to rank 0 of a live communicator (forced verbs, only the ring connected
 * at init) from a thread of rank 1, and then says nothing: rank 0 refuses it while it connects the
 * pairs an alltoall adds, and the alltoall's bytes all arrive, over verbs. */
struct silent_stranger {
  struct tally_sockaddr to;
  int asked;   /* its connection request is out */
  int outcome; /* the event that ended its connection, -1 when none came in 60 s */
  char failed[128];
};

static void *silent_stranger_run(void *arg) {
  struct silent_stranger *run = arg;
  struct stranger s = {0};
  const char *failed = stranger_connect(&s, &run->to);
  if (failed) snprintf(run->failed, sizeof run->failed, "%s: %s", failed, strerror(errno));
  __atomic_store_n(&run->asked, 1, __ATOMIC_RELEASE);
  int event = -1;
  for (int i = 0; !failed && i < 120; i++)
    if ((event = stranger_event(&s, 500)) >= 0 && event != RDMA_CM_EVENT_ESTABLISHED) break;
  run->outcome = event;
  stranger_close(&s);
  return NULL;
}

/* Rank 0's RDMA address: its log names the port it listens on. */
static int rank0_rdma_address(int rank, struct tally_sockaddr *to) {
  char path[128], line[1024];
  snprintf(path, sizeof path, "/tmp/tally-verbs-stranger-%d-rank0.log", (int)getppid()); /* as log_to_file names it */
  FILE *f = fopen(path, "r");
  int found = 0;
  while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, "listening on port") != NULL;
  if (f) fclose(f);
  if (!found) return harness_fail(rank, "rank 0 did not log its RDMA port in %s", path);
  const char *open = strstr(line, "("), *port = strstr(line, "listening on port ");
  char ip[64] = "";
  if (!open || !port || sscanf(open + 1, "%63[0-9.]", ip) != 1) return harness_fail(rank, "cannot read: %s", line);
  struct sockaddr_in *in = (struct sockaddr_in *)&to->ss;
  *to = (struct tally_sockaddr){.len = sizeof *in};
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)atoi(port + strlen("listening on port ")));
  if (inet_pton(AF_INET, ip, &in->sin_addr) != 1) return harness_fail(rank, "cannot read: %s", line);
  return 0;
}

static int stranger_during_alltoall(tally_comm_t comm, int rank, int n, void *arg) {
  struct silent_stranger run = {.outcome = -1};
  pthread_t thread;
  if (rank == 1) {
    if (rank0_rdma_address(rank, &run.to)) return 1;
    if (pthread_create(&thread, NULL, silent_stranger_run, &run)) return harness_fail(rank, "pthread_create");
    while (!__atomic_load_n(&run.asked, __ATOMIC_ACQUIRE)) usleep(1000);
    usleep(100 * 1000); /* its request waits on rank 0's listen channel */
  }
  int bad = p2p_alltoall_cases(comm, rank, n, arg);
  if (!bad) bad = all_bytes_over_verbs(comm, rank, "alltoall with a stranger about");
  if (rank == 1) {
    pthread_join(thread, NULL);
    if (run.failed[0]) bad += harness_fail(rank, "the stranger could not ask to connect: %s", run.failed);
    if (run.outcome != RDMA_CM_EVENT_DISCONNECTED && run.outcome != RDMA_CM_EVENT_REJECTED)
      bad += harness_fail(rank, "the stranger's connection was not refused (last event %s)",
                          run.outcome < 0 ? "none in 60 s" : rdma_event_str((enum rdma_cm_event_type)run.outcome));
  }
  return bad;
}

static int stranger_during_alltoall_logged(int rank, int nranks, const tally_unique_id_t *id, void *arg) {
  (void)arg;
  return run_logged(rank, nranks, id, "stranger", stranger_during_alltoall);
}

Test(verbs, stranger_refused_while_communicator_connects_on_first_use) {
  NEED_DEVICE();
  setenv("TALLY_TRANSPORT", "verbs", 1);
  setenv("TALLY_ALGO", "ring", 1);
  setenv("TALLY_DEBUG", "INFO", 1);
  setenv("TALLY_DEBUG_SUBSYS", "NET", 1);
  cr_assert_eq(harness_run_raw(4, 600, stranger_during_alltoall_logged, NULL), 0, "some rank failed (see its log)");
  char line[1024];
  cr_expect(log_has(0, "stranger", "refused an RDMA connection", line, sizeof line),
            "rank 0 did not log the stranger's refusal");
  unsetenv("TALLY_ALGO");
  unsetenv("TALLY_DEBUG");
  unsetenv("TALLY_DEBUG_SUBSYS");
}
