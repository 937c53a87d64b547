/* The shared-memory transport on its own: forked processes in a ring (each connects to its successor
 * and accepts from its predecessor, as a communicator does), messages of every awkward size through
 * both copy paths, many in flight, and every failure: mismatched headers, error reports both ways,
 * waiting notices, a peer killed mid-transfer, wake() from another thread, segments left in /dev/shm,
 * two jobs at once, a /dev/shm too small, forged segments, and process_vm_readv refused. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "harness.h"
#include "transports/shm/shm.h"

extern const struct tally_transport_ops tally_shm_transport;
static const struct tally_transport_ops *const shm = &tally_shm_transport;

/* Present when built with AddressSanitizer (see harness.c). */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

enum { MAX_RANKS = 16, MESSAGE_TEXT = 1024 };

/* Memory shared by the test process and its ranks. */
struct shared {
  double kill_time;            /* when the victim killed itself */
  _Atomic int step[MAX_RANKS]; /* per-rank progress flags for simple hand-offs */
  char message[MAX_RANKS][MESSAGE_TEXT];
};

struct rank_ctx {
  int job, rank, nranks;
  uint64_t comm_id;
  int abort_fd;
  struct tally_endpoint *ep;
  struct tally_conn *to_next, *from_prev;
  struct shared *shared;
  void *arg;
};

typedef int (*rank_body_fn)(struct rank_ctx *r);

struct accept_job {
  struct rank_ctx *r;
  uint64_t deadline;
  tally_result_t result;
  char message[MESSAGE_TEXT];
};

static void *accept_prev(void *arg) {
  struct accept_job *a = arg;
  int prev = (a->r->rank + a->r->nranks - 1) % a->r->nranks;
  a->result = shm->accept(a->r->ep, a->r->comm_id, 1, &prev, a->deadline, &a->r->from_prev);
  snprintf(a->message, sizeof a->message, "%s", tally_error_message());
  return NULL;
}

/* Connects to the next rank while a thread accepts from the previous one, as comm.c does. */
static tally_result_t connect_ring(struct rank_ctx *r, double seconds) {
  struct tally_sockaddr unused;
  memset(&unused, 0, sizeof unused);
  struct accept_job a = {.r = r, .deadline = tally_deadline_after(seconds)};
  pthread_t thread;
  pthread_create(&thread, NULL, accept_prev, &a);
  tally_result_t res = shm->connect(r->ep, r->comm_id, (r->rank + 1) % r->nranks, &unused, a.deadline, &r->to_next);
  char message[MESSAGE_TEXT];
  snprintf(message, sizeof message, "%s", tally_error_message());
  if (res != TALLY_SUCCESS) {
    uint64_t one = 1; /* stop the accepting thread */
    if (write(r->abort_fd, &one, sizeof one) != sizeof one) perror("eventfd");
  }
  pthread_join(thread, NULL);
  if (res == TALLY_SUCCESS && a.result != TALLY_SUCCESS) {
    res = a.result;
    snprintf(message, sizeof message, "%s", a.message);
  }
  if (res != TALLY_SUCCESS) snprintf(r->shared->message[r->rank], MESSAGE_TEXT, "%s", message);
  return res;
}

static int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static int maps_mention(const char *needle) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (f && fgets(line, sizeof line, f)) found |= strstr(line, needle) != NULL;
  if (f) fclose(f);
  return found;
}

/* How many files of this communicator are in /dev/shm. */
static int segments_left(uint64_t comm_id) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, "tally-%016" PRIx64 "-", comm_id);
  DIR *d = opendir("/dev/shm");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  if (d) closedir(d);
  return n;
}

static int segment_exists(uint64_t comm_id, int from, int to) {
  char name[SHM_NAME_BYTES], path[96];
  shm_segment_name(comm_id, from, to, name);
  snprintf(path, sizeof path, "/dev/shm%s", name);
  return access(path, F_OK) == 0;
}

/* Rank 1 of comm_id alone in this process, accepting rank 0's segment (which tests forge or
 * orphan): its endpoint and abort fd, for release(). */
struct lone_receiver {
  struct tally_endpoint *ep;
  int abort_fd;
};

static tally_result_t accept_from_rank_0(struct lone_receiver *rx, uint64_t comm_id, double seconds) {
  rx->abort_fd = eventfd(0, EFD_CLOEXEC);
  struct tally_transport_params params = {.rank = 1, .abort_fd = rx->abort_fd};
  struct tally_conn *conn;
  int zero = 0;
  cr_assert_eq(shm->create(&params, &rx->ep), TALLY_SUCCESS);
  return shm->accept(rx->ep, comm_id, 1, &zero, tally_deadline_after(seconds), &conn);
}

static void release(struct lone_receiver *rx) {
  shm->destroy(rx->ep);
  close(rx->abort_fd);
}

/* One rank: endpoint, ring connections, body, teardown; checks that nothing leaked. */
static int rank_main(struct rank_ctx *r, rank_body_fn body) {
  int fds_before = count_open_fds();
  r->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  unsigned char secret[32] = {0};
  struct tally_transport_params params = {.secret = secret, .rank = r->rank, .abort_fd = r->abort_fd};
  tally_result_t res = shm->create(&params, &r->ep);
  if (res != TALLY_SUCCESS) return harness_fail(r->rank, "create: %s", tally_error_message());
  res = connect_ring(r, 20);
  if (res != TALLY_SUCCESS)
    return harness_fail(r->rank, "connect_ring: %s: %s", tally_result_string(res), r->shared->message[r->rank]);
  int prev = (r->rank + r->nranks - 1) % r->nranks, next = (r->rank + 1) % r->nranks;
  if (segment_exists(r->comm_id, r->rank, next) || segment_exists(r->comm_id, prev, r->rank))
    return harness_fail(r->rank, "a segment of this rank is still in /dev/shm after connecting");
  int rc = body(r);
  shm->destroy(r->ep);
  close(r->abort_fd);
  if (rc == 0 && count_open_fds() != fds_before)
    rc = harness_fail(r->rank, "%d file descriptors open before, %d after destroy", fds_before, count_open_fds());
  if (rc == 0 && maps_mention("/dev/shm/tally")) rc = harness_fail(r->rank, "a segment is still mapped after destroy");
  return rc;
}

struct run {
  int njobs, nranks;
  double deadline_s;
  int victim; /* rank of job 0 expected to die by SIGKILL, -1: none */
  rank_body_fn body;
  void *arg;
  uint64_t comm_id[4];
  struct shared *shared; /* one per job */
};

static uint64_t random_comm_id(void) {
  uint64_t id = 0;
  cr_assert_eq(getrandom(&id, sizeof id, 0), (ssize_t)sizeof id);
  return id;
}

/* Forks njobs rings of nranks ranks each and waits for all of them until the deadline. */
static int run_jobs(struct run *run) {
  int total = run->njobs * run->nranks;
  if (!run->shared) {
    run->shared = mmap(NULL, sizeof(struct shared) * (size_t)run->njobs, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(run->shared, MAP_FAILED);
  }
  for (int j = 0; j < run->njobs; j++)
    if (!run->comm_id[j]) run->comm_id[j] = random_comm_id();
  pid_t pids[4 * MAX_RANKS];
  fflush(NULL);
  for (int i = 0; i < total; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      alarm((unsigned)run->deadline_s + 10); /* a backstop should the test process die */
      struct rank_ctx r = {.job = i / run->nranks,
                           .rank = i % run->nranks,
                           .nranks = run->nranks,
                           .comm_id = run->comm_id[i / run->nranks],
                           .shared = &run->shared[i / run->nranks],
                           .arg = run->arg};
      int rc = rank_main(&r, run->body);
      if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() && rc == 0)
        rc = harness_fail(r.rank, "LeakSanitizer found leaks (see above)");
      fflush(NULL);
      _exit(rc);
    }
  }
  int failed = 0, left = total;
  double deadline = harness_now_s() + run->deadline_s;
  while (left > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int i = 0; i < total; i++) {
        if (pids[i] != pid) continue;
        pids[i] = 0;
        int planned = i == run->victim && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        if (!planned && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
          fprintf(stderr, "job %d rank %d %s %d\n", i / run->nranks, i % run->nranks,
                  WIFEXITED(status) ? "exited with" : "killed by signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
          failed = 1;
        }
      }
      left--;
      continue;
    }
    if (harness_now_s() > deadline) {
      for (int i = 0; i < total; i++)
        if (pids[i] > 0) {
          fprintf(stderr, "job %d rank %d still running after %.0f s: killing it (a hang is a failure)\n",
                  i / run->nranks, i % run->nranks, run->deadline_s);
          kill(pids[i], SIGKILL);
        }
      while (waitpid(-1, NULL, 0) > 0) {
      }
      failed = 1;
      break;
    }
    usleep(1000);
  }
  return failed;
}

static int run_ring(int nranks, double deadline_s, rank_body_fn body, void *arg) {
  struct run run = {.njobs = 1, .nranks = nranks, .deadline_s = deadline_s, .victim = -1, .body = body, .arg = arg};
  int failed = run_jobs(&run);
  munmap(run.shared, sizeof *run.shared);
  return failed;
}

/* --- messages ---------------------------------------------------------------------------------- */

static struct tally_msg_header header_for(uint32_t seq, uint64_t count, uint64_t index) {
  struct tally_msg_header h = {
      .seq = seq, .coll = 0 /* allreduce */, .datatype = TALLY_UINT8, .op = TALLY_SUM, .count = count, .index = index};
  return h;
}

static unsigned char pattern(int sender, uint64_t index, size_t offset) {
  return (unsigned char)((size_t)sender * 31 + index * 7 + offset * 13 + (offset >> 9));
}

static void fill(unsigned char *buf, size_t len, int sender, uint64_t index) {
  for (size_t i = 0; i < len; i++) buf[i] = pattern(sender, index, i);
}

static int check(int rank, const unsigned char *buf, size_t len, int sender, uint64_t index) {
  for (size_t i = 0; i < len; i++)
    if (buf[i] != pattern(sender, index, i))
      return harness_fail(rank, "message %llu from rank %d: byte %zu of %zu is %u, expected %u",
                          (unsigned long long)index, sender, i, len, buf[i], pattern(sender, index, i));
  return 0;
}

/* Progresses until every request is done; returns the first error, or TIMEOUT after `seconds`. */
static tally_result_t wait_all(struct rank_ctx *r, struct tally_request *reqs, int n, double seconds) {
  double deadline = harness_now_s() + seconds;
  for (;;) {
    int all = 1;
    for (int i = 0; i < n; i++) all &= reqs[i].done;
    if (all) return TALLY_SUCCESS;
    if (harness_now_s() > deadline) return TALLY_ERROR(TALLY_ERR_TIMEOUT, "wait_all: not done in %.0f s", seconds);
    int moved;
    tally_result_t res = shm->progress(r->ep, 100, &moved);
    if (res != TALLY_SUCCESS) return res;
  }
}

struct exchange_plan {
  const size_t *sizes;
  int nsizes;
  int rounds;     /* the list is sent this many times, all in flight at once */
  int expect_cma; /* 1: the receiver must have read large messages with one copy; 0: none; -1: either */
};

/* Every rank sends the plan's messages to the next rank and receives them from the previous one. */
static int exchange(struct rank_ctx *r) {
  const struct exchange_plan *plan = r->arg;
  int n = plan->nsizes * plan->rounds, prev = (r->rank + r->nranks - 1) % r->nranks;
  struct tally_request *sends = calloc((size_t)n, sizeof *sends), *recvs = calloc((size_t)n, sizeof *recvs);
  int rc = 0, cma_messages = 0;
  for (int i = 0; i < n; i++) {
    size_t len = plan->sizes[i % plan->nsizes];
    sends[i].buf = malloc(len + 1);
    recvs[i].buf = malloc(len + 1);
    fill(sends[i].buf, len, r->rank, (uint64_t)i);
    sends[i].len = recvs[i].len = len;
    sends[i].hdr = recvs[i].hdr = header_for(1, 1000, (uint64_t)i);
    cma_messages += shm_uses_cma(r->from_prev, len);
    cr_assert_eq(shm->irecv(r->from_prev, &recvs[i]), TALLY_SUCCESS);
    cr_assert_eq(shm->isend(r->to_next, &sends[i]), TALLY_SUCCESS);
  }
  tally_result_t res = wait_all(r, recvs, n, 30);
  if (res == TALLY_SUCCESS) res = wait_all(r, sends, n, 30);
  if (res != TALLY_SUCCESS) rc = harness_fail(r->rank, "%s: %s", tally_result_string(res), tally_error_message());
  for (int i = 0; i < n && !rc; i++) rc = check(r->rank, recvs[i].buf, recvs[i].len, prev, (uint64_t)i);
  if (!rc && shm->pending(r->ep)) rc = harness_fail(r->rank, "requests still pending after all completed");
  if (!rc && plan->expect_cma == 1 && (cma_messages == 0 || r->from_prev->cma_acked != (uint64_t)cma_messages))
    rc = harness_fail(r->rank, "%d messages should have taken the single-copy path, %llu did", cma_messages,
                      (unsigned long long)r->from_prev->cma_acked);
  if (!rc && plan->expect_cma == 0 && r->from_prev->cma_acked != 0)
    rc = harness_fail(r->rank, "the single-copy path was used where it should be off");
  /* the next rank may still be reading single-copy messages from this one: wait for it */
  for (r->shared->step[r->rank] = 1; !rc;) {
    int all = 1;
    for (int k = 0; k < r->nranks; k++) all &= r->shared->step[k] >= 1;
    if (all) break;
    int moved;
    shm->progress(r->ep, 10, &moved);
  }
  for (int i = 0; i < n; i++) free(sends[i].buf), free(recvs[i].buf);
  free(sends);
  free(recvs);
  return rc;
}

#define SLOT ((size_t)256 * 1024)
static const size_t awkward_sizes[] = {
    0,     1, 40,       SLOT - 1, SLOT, SLOT + 1,       (size_t)3 << 20 | 5, (size_t)64 << 10,
    65535, 7, 2 * SLOT, 100,      0,    (size_t)5 << 20};

static void set_or_unset(const char *name, const char *value) {
  if (value) setenv(name, value, 1);
  if (!value) unsetenv(name);
}

/* The transport settings of the ranks forked next (NULL: the default). */
static void set_env(const char *slots, const char *slot_bytes, const char *cma) {
  set_or_unset("TALLY_SHM_SLOTS", slots);
  set_or_unset("TALLY_SHM_SLOT_BYTES", slot_bytes);
  set_or_unset("TALLY_SHM_CMA_BYTES", cma);
}

Test(shm, ring_of_2_to_8_ranks_both_copy_paths, .timeout = 600) {
  struct exchange_plan ring_only = {awkward_sizes, sizeof awkward_sizes / sizeof *awkward_sizes, 2, 0};
  struct exchange_plan single_copy = {awkward_sizes, sizeof awkward_sizes / sizeof *awkward_sizes, 2, 1};
  for (int n = 2; n <= 8; n++) {
    set_env(NULL, NULL, "0");
    cr_assert_eq(run_ring(n, 120, exchange, &ring_only), 0, "%d ranks, ring only", n);
    set_env(NULL, NULL, "65536");
    cr_assert_eq(run_ring(n, 120, exchange, &single_copy), 0, "%d ranks, single copy from 64 KiB", n);
  }
}

Test(shm, tiny_ring_wraps_many_times, .timeout = 300) {
  static const size_t sizes[] = {0, 1, 40, 4095, 4096, 4097, 8191, 8192, 8193, 1 << 20, 3, 77777};
  struct exchange_plan plan = {sizes, sizeof sizes / sizeof *sizes, 8, 0};
  set_env("2", "4096", "0");
  cr_assert_eq(run_ring(3, 120, exchange, &plan), 0);
}

Test(shm, many_small_messages_in_flight, .timeout = 300) {
  static size_t sizes[300];
  for (int i = 0; i < 300; i++) sizes[i] = (size_t)(i * 37 % 1000);
  struct exchange_plan plan = {sizes, 300, 1, -1};
  set_env("4", "8192", NULL);
  cr_assert_eq(run_ring(4, 120, exchange, &plan), 0);
}

Test(shm, two_jobs_at_once_do_not_interfere, .timeout = 300) {
  struct exchange_plan plan = {awkward_sizes, sizeof awkward_sizes / sizeof *awkward_sizes, 1, -1};
  set_env(NULL, NULL, NULL);
  struct run run = {.njobs = 2, .nranks = 3, .deadline_s = 120, .victim = -1, .body = exchange, .arg = &plan};
  cr_assert_eq(run_jobs(&run), 0);
  munmap(run.shared, 2 * sizeof *run.shared);
}

/* --- failures ---------------------------------------------------------------------------------- */

/* Waits until every rank of the ring reached `step`, moving connections meanwhile. */
static void barrier(struct rank_ctx *r, int step) {
  r->shared->step[r->rank] = step;
  double deadline = harness_now_s() + 30;
  for (int k = 0; k < r->nranks && harness_now_s() < deadline; k++)
    while (r->shared->step[k] < step && harness_now_s() < deadline) usleep(1000);
}

static int mismatched_header(struct rank_ctx *r) {
  unsigned char data[64] = {0};
  struct tally_request send = {.buf = data, .len = 10, .hdr = header_for(3, 10, 0)};
  struct tally_request recv = {.buf = data, .len = 10, .hdr = header_for(3, 20, 0)};
  if (r->rank == 0) {
    cr_assert_eq(shm->isend(r->to_next, &send), TALLY_SUCCESS);
    int done = 0;
    tally_result_t res = TALLY_SUCCESS;
    for (double give_up = harness_now_s() + 10; res == TALLY_SUCCESS && !done && harness_now_s() < give_up;)
      res = shm->test(r->to_next, &send, &done);
    barrier(r, 1);
    return res == TALLY_SUCCESS && done ? 0 : harness_fail(0, "send: %s", tally_error_message());
  }
  cr_assert_eq(shm->irecv(r->from_prev, &recv), TALLY_SUCCESS);
  tally_result_t res = wait_all(r, &recv, 1, 10);
  barrier(r, 1);
  if (res != TALLY_ERR_MISMATCH) return harness_fail(1, "expected a mismatch, got %s", tally_result_string(res));
  if (!strstr(tally_error_message(), "count=10") || !strstr(tally_error_message(), "rank 0"))
    return harness_fail(1, "the mismatch message does not say what rank 0 called: %s", tally_error_message());
  return 0;
}

Test(shm, header_mismatch_is_reported, .timeout = 120) {
  set_env(NULL, NULL, NULL);
  cr_assert_eq(run_ring(2, 60, mismatched_header, NULL), 0);
}

/* Rank 0 fails its sending connection with a report that blames it: rank 1, waiting to receive,
 * returns the report's code and blames rank 0. */
static int report_to_receiver(struct rank_ctx *r) {
  unsigned char frame[TALLY_WIRE_HEADER_BYTES], data[16];
  if (r->rank == 0) {
    tally_error_frame_encode(frame, 7, 0, 0, TALLY_ERR_MISMATCH);
    shm->fail(r->to_next, frame);
    barrier(r, 1);
    return 0;
  }
  struct tally_request recv = {.buf = data, .len = sizeof data, .hdr = header_for(7, 16, 0)};
  cr_assert_eq(shm->irecv(r->from_prev, &recv), TALLY_SUCCESS);
  tally_result_t res = wait_all(r, &recv, 1, 10);
  barrier(r, 1);
  if (res != TALLY_ERR_MISMATCH || tally_error_blamed() != 0)
    return harness_fail(1, "expected MISMATCH blaming rank 0, got %s blaming %d: %s", tally_result_string(res),
                        tally_error_blamed(), tally_error_message());
  return 0;
}

/* Rank 1 fails its receiving connection with a report: rank 0, whose send cannot finish (the
 * message is larger than the ring, or waits for its single-copy acknowledgement), returns it. */
static int report_to_sender(struct rank_ctx *r) {
  size_t len = 1 << 20;
  if (r->rank == 1) {
    unsigned char frame[TALLY_WIRE_HEADER_BYTES];
    tally_error_frame_encode(frame, 9, 1, 1, TALLY_ERR_TIMEOUT);
    shm->fail(r->from_prev, frame);
    barrier(r, 1);
    return 0;
  }
  unsigned char *data = calloc(1, len);
  struct tally_request send = {.buf = data, .len = len, .hdr = header_for(9, len, 0)};
  cr_assert_eq(shm->isend(r->to_next, &send), TALLY_SUCCESS);
  tally_result_t res = wait_all(r, &send, 1, 10);
  barrier(r, 1);
  free(data);
  if (res != TALLY_ERR_TIMEOUT || tally_error_blamed() != 1)
    return harness_fail(0, "expected TIMEOUT blaming rank 1, got %s blaming %d: %s", tally_result_string(res),
                        tally_error_blamed(), tally_error_message());
  return 0;
}

Test(shm, error_report_reaches_the_peer_both_ways, .timeout = 120) {
  set_env("2", "4096", "0");
  cr_assert_eq(run_ring(2, 60, report_to_receiver, NULL), 0, "sender to receiver");
  cr_assert_eq(run_ring(2, 60, report_to_sender, NULL), 0, "receiver to sender, through the ring");
  set_env(NULL, NULL, "65536");
  cr_assert_eq(run_ring(2, 60, report_to_sender, NULL), 0, "receiver to sender, single copy");
}

/* A notice marks the matching receive and is not progress; notify refuses while data is queued. */
static int notices(struct rank_ctx *r) {
  size_t len = 1 << 20;
  unsigned char *data = malloc(len);
  int rc = 0;
  if (r->rank == 0) {
    unsigned char notice[TALLY_WIRE_HEADER_BYTES];
    tally_notice_encode(notice, 5, 0);
    if (shm->notify(r->to_next, notice) != 1) rc = harness_fail(0, "notify on an idle connection refused");
    barrier(r, 1); /* rank 1 saw the notice */
    fill(data, len, 0, 0);
    struct tally_request send = {.buf = data, .len = len, .hdr = header_for(5, len, 0)};
    cr_assert_eq(shm->isend(r->to_next, &send), TALLY_SUCCESS);
    if (!rc && shm->notify(r->to_next, notice) != 0) rc = harness_fail(0, "notify accepted with data queued");
    if (!rc && wait_all(r, &send, 1, 10) != TALLY_SUCCESS) rc = harness_fail(0, "send: %s", tally_error_message());
    barrier(r, 2);
  } else {
    struct tally_request recv = {.buf = data, .len = len, .hdr = header_for(5, len, 0)};
    cr_assert_eq(shm->irecv(r->from_prev, &recv), TALLY_SUCCESS);
    double deadline = harness_now_s() + 10;
    while (!recv.peer_waiting && harness_now_s() < deadline && !rc) {
      int moved = 0;
      if (shm->progress(r->ep, 10, &moved) != TALLY_SUCCESS) rc = harness_fail(1, "%s", tally_error_message());
      if (moved) rc = harness_fail(1, "a waiting notice counted as progress");
    }
    if (!rc && !recv.peer_waiting) rc = harness_fail(1, "the notice never marked the receive");
    barrier(r, 1);
    if (!rc && wait_all(r, &recv, 1, 10) != TALLY_SUCCESS) rc = harness_fail(1, "recv: %s", tally_error_message());
    if (!rc) rc = check(1, data, len, 0, 0);
    barrier(r, 2);
  }
  free(data);
  return rc;
}

Test(shm, waiting_notices, .timeout = 120) {
  set_env("2", "4096", "0");
  cr_assert_eq(run_ring(2, 60, notices, NULL), 0);
}

/* The victim kills itself in the middle of a transfer that cannot fit the ring; the survivor must
 * fail within a second, naming it. */
struct kill_plan {
  int victim;
};

static int killed_mid_transfer(struct rank_ctx *r) {
  const struct kill_plan *plan = r->arg;
  size_t len = 64 << 20;
  unsigned char *data = calloc(1, len);
  struct tally_request req = {.buf = data, .len = len, .hdr = header_for(1, len, 0)};
  if (r->rank == 0)
    cr_assert_eq(shm->isend(r->to_next, &req), TALLY_SUCCESS);
  else
    cr_assert_eq(shm->irecv(r->from_prev, &req), TALLY_SUCCESS);
  tally_result_t res = TALLY_SUCCESS;
  double give_up = harness_now_s() + 10;
  while (res == TALLY_SUCCESS && !req.done) {
    if (harness_now_s() > give_up) return harness_fail(r->rank, "the death of rank %d went unnoticed", plan->victim);
    if (r->rank == plan->victim && req.progressed > (1 << 20)) {
      r->shared->kill_time = harness_now_s();
      raise(SIGKILL);
    }
    int moved;
    res = shm->progress(r->ep, 100, &moved);
  }
  double latency = harness_now_s() - r->shared->kill_time;
  free(data);
  if (res != TALLY_ERR_REMOTE) return harness_fail(r->rank, "expected REMOTE, got %s", tally_result_string(res));
  char victim[32];
  snprintf(victim, sizeof victim, "rank %d", plan->victim);
  if (!strstr(tally_error_message(), victim) || !strstr(tally_error_message(), "killed") ||
      tally_error_blamed() != plan->victim)
    return harness_fail(r->rank, "the error does not name %s: %s", victim, tally_error_message());
  if (latency > 1.0) return harness_fail(r->rank, "noticed the death after %.2f s", latency);
  fprintf(stderr, "rank %d: noticed the death of %s after %.0f ms: %s\n", r->rank, victim, latency * 1e3,
          tally_error_message());
  return 0;
}

Test(shm, peer_killed_mid_transfer_is_named_within_a_second, .timeout = 120) {
  set_env("2", "65536", "0");
  for (int victim = 0; victim < 2; victim++) {
    struct kill_plan plan = {victim};
    struct run run = {
        .njobs = 1, .nranks = 2, .deadline_s = 60, .victim = victim, .body = killed_mid_transfer, .arg = &plan};
    cr_assert_eq(run_jobs(&run), 0, "victim %d", victim);
    cr_assert_eq(segments_left(run.comm_id[0]), 0, "a segment was left in /dev/shm after the SIGKILL");
    munmap(run.shared, sizeof *run.shared);
  }
}

/* The creator of a segment dies before its receiver opens it: the receiver says so and removes it. */
Test(shm, creator_killed_before_accept_leaves_nothing, .timeout = 120) {
  set_env(NULL, NULL, NULL);
  uint64_t comm_id = random_comm_id();
  fflush(NULL);
  pid_t creator = fork();
  if (creator == 0) {
    alarm(30);
    int abort_fd = eventfd(0, EFD_CLOEXEC);
    struct tally_transport_params params = {.rank = 0, .abort_fd = abort_fd};
    struct tally_endpoint *ep;
    struct tally_conn *conn;
    struct tally_sockaddr unused = {0};
    if (shm->create(&params, &ep) != TALLY_SUCCESS) _exit(1);
    shm->connect(ep, comm_id, 1, &unused, tally_deadline_after(20), &conn); /* waits to be killed */
    _exit(2);
  }
  double deadline = harness_now_s() + 10;
  while (!segment_exists(comm_id, 0, 1) && harness_now_s() < deadline) usleep(1000);
  usleep(20000); /* let it finish writing the header */
  kill(creator, SIGKILL);
  int status;
  waitpid(creator, &status, 0);
  cr_assert(segment_exists(comm_id, 0, 1), "the creator never made its segment");
  struct lone_receiver rx;
  tally_result_t res = accept_from_rank_0(&rx, comm_id, 5);
  cr_assert_eq(res, TALLY_ERR_REMOTE, "got %s: %s", tally_result_string(res), tally_error_message());
  cr_assert(strstr(tally_error_message(), "rank 0") && strstr(tally_error_message(), "killed"), "%s",
            tally_error_message());
  cr_assert_eq(segments_left(comm_id), 0);
  release(&rx);
}

/* wake() from another thread ends a blocked progress at once; with the abort fd set it fails. */
struct waker {
  struct rank_ctx *r;
  int abort;
};

static void *wake_later(void *arg) {
  struct waker *w = arg;
  usleep(200000);
  if (w->abort) {
    uint64_t one = 1;
    if (write(w->r->abort_fd, &one, sizeof one) != sizeof one) perror("eventfd");
  }
  shm->wake(w->r->ep);
  return NULL;
}

static int woken(struct rank_ctx *r) {
  int rc = 0;
  if (r->rank == 1) {
    unsigned char data[8];
    struct tally_request recv = {.buf = data, .len = sizeof data, .hdr = header_for(1, 8, 0)};
    cr_assert_eq(shm->irecv(r->from_prev, &recv), TALLY_SUCCESS);
    int moved;
    double start = harness_now_s();
    tally_result_t res = shm->progress(r->ep, 150, &moved);
    double took = harness_now_s() - start;
    if (res != TALLY_SUCCESS || moved || took < 0.1 || took > 1.0)
      rc = harness_fail(1, "an idle progress(150 ms) returned %s after %.3f s", tally_result_string(res), took);
    for (int abort = 0; abort < 2 && !rc; abort++) {
      struct waker w = {r, abort};
      pthread_t thread;
      pthread_create(&thread, NULL, wake_later, &w);
      start = harness_now_s();
      res = shm->progress(r->ep, 20000, &moved);
      took = harness_now_s() - start;
      pthread_join(thread, NULL);
      tally_result_t want = abort ? TALLY_ERR_ABORTED : TALLY_SUCCESS;
      if (res != want || took > 1.0)
        rc = harness_fail(1, "progress woken %s returned %s after %.3f s", abort ? "with abort" : "plainly",
                          tally_result_string(res), took);
      if (abort && !strstr(tally_error_message(), "aborted")) rc = harness_fail(1, "%s", tally_error_message());
    }
  }
  barrier(r, 1);
  return rc;
}

Test(shm, wake_ends_a_blocked_progress, .timeout = 120) {
  set_env(NULL, NULL, NULL);
  cr_assert_eq(run_ring(2, 60, woken, NULL), 0);
}

/* --- setup ------------------------------------------------------------------------------------- */

/* A rank of the small-/dev/shm test: its connection must fail and say why and what to do. */
static int rank_with_small_shm(struct shared *shared, uint64_t comm_id, int rank) {
  struct rank_ctx r = {.rank = rank, .nranks = 2, .comm_id = comm_id, .shared = shared};
  r.abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct tally_transport_params params = {.rank = rank, .abort_fd = r.abort_fd};
  if (shm->create(&params, &r.ep) != TALLY_SUCCESS) return harness_fail(rank, "create: %s", tally_error_message());
  tally_result_t res = connect_ring(&r, 3);
  shm->destroy(r.ep);
  close(r.abort_fd);
  const char *msg = shared->message[rank];
  if (res != TALLY_ERR_SYSTEM) return harness_fail(rank, "expected SYSTEM, got %s: %s", tally_result_string(res), msg);
  static const char *const needed[] = {"/dev/shm is too small", "bytes", "--shm-size", "TALLY_TRANSPORT=tcp"};
  for (size_t i = 0; i < sizeof needed / sizeof *needed; i++)
    if (!strstr(msg, needed[i])) return harness_fail(rank, "the error lacks '%s': %s", needed[i], msg);
  fprintf(stderr, "rank %d: %s\n", rank, msg);
  return 0;
}

Test(shm, too_small_dev_shm_says_what_to_do, .timeout = 120) {
  if (unshare(CLONE_NEWNS) != 0) cr_skip_test("SKIPPED: cannot make a mount namespace (unshare: %s)", strerror(errno));
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
    cr_skip_test("SKIPPED: cannot make / private in the new mount namespace: %s", strerror(errno));
  if (mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0)
    cr_skip_test("SKIPPED: cannot mount a 1 MiB tmpfs on /dev/shm: %s", strerror(errno));
  set_env(NULL, NULL, NULL); /* 8 x 256 KiB: a ring alone is 2 MiB */
  struct shared *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  uint64_t comm_id = random_comm_id();
  pid_t pids[2];
  fflush(NULL);
  for (int rank = 0; rank < 2; rank++)
    if ((pids[rank] = fork()) == 0) {
      alarm(30);
      _exit(rank_with_small_shm(shared, comm_id, rank));
    }
  for (int rank = 0; rank < 2; rank++) {
    int status;
    cr_assert_eq(waitpid(pids[rank], &status, 0), pids[rank]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank %d failed", rank);
  }
  cr_assert_eq(segments_left(comm_id), 0);
  munmap(shared, sizeof *shared);
  umount2("/dev/shm", MNT_DETACH);
}

Test(shm, malformed_settings_refused, .timeout = 30) {
  static const struct {
    const char *var, *value, *needle;
  } bad[] = {{"TALLY_SHM_SLOTS", "1", "from 2 to 4096"},         {"TALLY_SHM_SLOTS", "eight", "TALLY_SHM_SLOTS"},
             {"TALLY_SHM_SLOT_BYTES", "100", "from 4096"},       {"TALLY_SHM_SLOT_BYTES", "-4096", "from 4096"},
             {"TALLY_SHM_CMA_BYTES", "64k", "process_vm_readv"}, {"TALLY_SHM_SLOTS", "4096", "at most"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    set_env(NULL, NULL, NULL);
    setenv(bad[i].var, bad[i].value, 1);
    if (i == 5) setenv("TALLY_SHM_SLOT_BYTES", "1048576", 1);
    struct tally_transport_params params = {.rank = 0, .abort_fd = -1};
    struct tally_endpoint *ep = NULL;
    tally_result_t res = shm->create(&params, &ep);
    cr_assert_eq(res, TALLY_ERR_INVALID_ARGUMENT, "%s=%s accepted", bad[i].var, bad[i].value);
    cr_assert(strstr(tally_error_message(), bad[i].needle), "%s=%s: %s", bad[i].var, bad[i].value,
              tally_error_message());
  }
  set_env(NULL, NULL, NULL);
}

/* Segments that this rank did not get from a Tally sender are refused with the field that is wrong. */
Test(shm, forged_segments_refused, .timeout = 60) {
  enum { WRONG_MAGIC, WRONG_VERSION, WRONG_RANK, WRONG_COMM, WRONG_SIZE, HUGE_RING, NUM_FORGERIES };
  static const char *const needle[] = {"magic", "version", "receiving rank", "communicator id", "file size", "slots"};
  set_env(NULL, NULL, NULL);
  for (int kind = 0; kind < NUM_FORGERIES; kind++) {
    uint64_t comm_id = random_comm_id();
    char name[SHM_NAME_BYTES];
    shm_segment_name(comm_id, 0, 1, name);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    cr_assert_geq(fd, 0);
    size_t bytes = SHM_HEADER_BYTES + 2 * 4096;
    cr_assert_eq(ftruncate(fd, (off_t)(kind == WRONG_SIZE ? bytes + 4096 : bytes)), 0);
    struct shm_segment *seg = mmap(NULL, SHM_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(seg, MAP_FAILED);
    *seg = (struct shm_segment){.magic = kind == WRONG_MAGIC ? 1 : SHM_MAGIC,
                                .version = kind == WRONG_VERSION ? 99 : SHM_VERSION,
                                .header_bytes = SHM_HEADER_BYTES,
                                .comm_id = kind == WRONG_COMM ? comm_id + 1 : comm_id,
                                .sender_rank = 0,
                                .receiver_rank = kind == WRONG_RANK ? 2 : 1,
                                .sender_pid = getpid(),
                                .slots = 2,
                                .slot_bytes = 4096,
                                .ring_offset = SHM_HEADER_BYTES,
                                .segment_bytes = bytes};
    if (kind == HUGE_RING) { /* consistent sizes, but more than the settings allow */
      seg->slots = 4097;
      seg->segment_bytes = SHM_HEADER_BYTES + (uint64_t)seg->slots * seg->slot_bytes;
      cr_assert_eq(ftruncate(fd, (off_t)seg->segment_bytes), 0);
    }
    atomic_store(&seg->state, SEGMENT_READY);
    struct lone_receiver rx;
    tally_result_t res = accept_from_rank_0(&rx, comm_id, 2);
    cr_assert_neq(res, TALLY_SUCCESS, "forgery %d accepted", kind);
    cr_assert(strstr(tally_error_message(), needle[kind]), "forgery %d: %s", kind, tally_error_message());
    release(&rx);
    munmap(seg, SHM_HEADER_BYTES);
    close(fd);
    shm_unlink(name);
  }
}

/* process_vm_readv refused (non-dumpable ranks without CAP_SYS_PTRACE): large messages still
 * arrive, through the ring, and the refusal is logged once at INFO. */
static int drop_ptrace_rights(void) {
  if (prctl(PR_SET_DUMPABLE, 0) != 0) return -1;
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) != 0) return -1;
  data[CAP_TO_INDEX(CAP_SYS_PTRACE)].effective &= ~CAP_TO_MASK(CAP_SYS_PTRACE);
  return (int)syscall(SYS_capset, &hdr, data);
}

static int exchange_without_cma(struct rank_ctx *r) {
  if (r->from_prev->cma_min_bytes != 0 || r->to_next->cma_min_bytes != 0)
    return harness_fail(r->rank, "the single-copy path is on although process_vm_readv is refused");
  return exchange(r);
}

Test(shm, process_vm_readv_refused_falls_back_to_the_ring, .timeout = 120) {
  char log_path[] = "/tmp/tally-test-shm-log-XXXXXX";
  int log_fd = mkstemp(log_path);
  cr_assert_geq(log_fd, 0);
  /* the ranks inherit these: no ptrace rights, INFO logging into the file */
  cr_assert_eq(drop_ptrace_rights(), 0, "cannot drop CAP_SYS_PTRACE: %s", strerror(errno));
  char err[128];
  cr_assert_eq(tally_log_configure("INFO", "NET", err, sizeof err), 0, "%s", err);
  int saved_stderr = dup(2);
  dup2(log_fd, 2);
  static const size_t sizes[] = {1 << 20, 100, 3 << 20};
  struct exchange_plan plan = {sizes, 3, 2, 0};
  set_env(NULL, NULL, "65536");
  int failed = run_ring(2, 60, exchange_without_cma, &plan);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  char log[8192] = "";
  ssize_t n = pread(log_fd, log, sizeof log - 1, 0);
  log[n > 0 ? n : 0] = '\0';
  close(log_fd);
  unlink(log_path);
  fprintf(stderr, "%s", log);
  cr_assert_eq(failed, 0);
  cr_assert(strstr(log, "single-copy transfers (TALLY_SHM_CMA_BYTES) from rank"), "the refusal was not logged at INFO");
}

/* Ranks 1..n-1 connect to rank 0 on a second communicator, which accepts them all in one call
 * (as a tree's root will), and each sends it one message. */
static int star_into_rank_0(struct rank_ctx *r) {
  uint64_t star_id = r->comm_id ^ 0x5a5a5a5a5a5a5a5aull;
  uint64_t deadline = tally_deadline_after(20);
  unsigned char data[3][1000];
  struct tally_request reqs[3];
  memset(reqs, 0, sizeof reqs);
  int rc = 0;
  if (r->rank == 0) {
    int peers[3] = {3, 1, 2}; /* in any order */
    struct tally_conn *conns[3];
    tally_result_t res = shm->accept(r->ep, star_id, 3, peers, deadline, conns);
    if (res != TALLY_SUCCESS) return harness_fail(0, "accept from 3 peers: %s", tally_error_message());
    for (int i = 0; i < 3; i++) {
      reqs[i] = (struct tally_request){.buf = data[i], .len = sizeof data[i], .hdr = header_for(2, 1000, 0)};
      cr_assert_eq(shm->irecv(conns[i], &reqs[i]), TALLY_SUCCESS);
    }
    res = wait_all(r, reqs, 3, 10);
    if (res != TALLY_SUCCESS) rc = harness_fail(0, "receiving: %s", tally_error_message());
    for (int i = 0; i < 3 && !rc; i++) rc = check(0, data[i], sizeof data[i], peers[i], 0);
  } else {
    struct tally_conn *conn;
    struct tally_sockaddr unused = {0};
    if (shm->connect(r->ep, star_id, 0, &unused, deadline, &conn) != TALLY_SUCCESS)
      return harness_fail(r->rank, "connect to rank 0: %s", tally_error_message());
    fill(data[0], sizeof data[0], r->rank, 0);
    reqs[0] = (struct tally_request){.buf = data[0], .len = sizeof data[0], .hdr = header_for(2, 1000, 0)};
    cr_assert_eq(shm->isend(conn, &reqs[0]), TALLY_SUCCESS);
    if (wait_all(r, reqs, 1, 10) != TALLY_SUCCESS) rc = harness_fail(r->rank, "send: %s", tally_error_message());
  }
  barrier(r, 1);
  return rc;
}

Test(shm, accept_from_several_peers_at_once, .timeout = 120) {
  set_env(NULL, NULL, NULL);
  cr_assert_eq(run_ring(4, 60, star_into_rank_0, NULL), 0);
}

/* Kernels before 5.16 have no futex_waitv and before 5.3 no pidfd_open: a seccomp filter makes both
 * answer ENOSYS, and the transport must still move data, notice deaths, and wake up. */
static void deny_recent_syscalls(void) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex_waitv, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
  };
  struct sock_fprog program = {.len = sizeof filter / sizeof *filter, .filter = filter};
  cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
  cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program), 0, "seccomp: %s", strerror(errno));
  cr_assert_eq(syscall(SYS_pidfd_open, getpid(), 0), -1);
  cr_assert_eq(errno, ENOSYS);
}

Test(shm, works_without_futex_waitv_and_pidfd, .timeout = 300) {
  deny_recent_syscalls();
  struct exchange_plan plan = {awkward_sizes, sizeof awkward_sizes / sizeof *awkward_sizes, 1, -1};
  set_env("4", "65536", NULL);
  cr_assert_eq(run_ring(4, 120, exchange, &plan), 0, "exchange");
  cr_assert_eq(run_ring(2, 60, woken, NULL), 0, "wake");
  set_env("2", "65536", "0");
  struct kill_plan plan_kill = {1};
  struct run run = {
      .njobs = 1, .nranks = 2, .deadline_s = 60, .victim = 1, .body = killed_mid_transfer, .arg = &plan_kill};
  cr_assert_eq(run_jobs(&run), 0, "peer killed");
  munmap(run.shared, sizeof *run.shared);
}
