/* shm-copy-bench: the shared-memory transport's two copy paths side by side, by message size.
 *
 *   ring  every message goes through the ring: sender -> ring -> receiver (TALLY_SHM_CMA_BYTES=0)
 *   cma   the receiver reads the sender's buffer with process_vm_readv (TALLY_SHM_CMA_BYTES=1)
 *
 * Two forked ranks per path. For each size and run, rank 0 streams messages to rank 1 (WINDOW in
 * flight) until about --bytes have moved, and rank 1 answers with an empty message when it has them
 * all; with --both, each rank streams to the other at once (as in a ring collective); with --pairs N,
 * N such pairs run at once (many ranks per core, as in the test suite). The figure is pair 0's
 * payload bytes over the time to the answer; the table gives the median of --runs runs per cell.
 *
 *   shm-copy-bench [--runs N] [--bytes TOTAL] [--min SIZE] [--max SIZE] [--both] [--pairs N] */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "transports/transport.h"

extern const struct tally_transport_ops tally_shm_transport;
static const struct tally_transport_ops *const shm = &tally_shm_transport;

enum { WINDOW = 4, MAX_SIZES = 64, MAX_RUNS = 99, MAX_PAIRS = 32 };

struct options {
  int runs, both, pairs;
  size_t total, min_size, max_size;
};

struct rank {
  int rank, pair;
  struct tally_endpoint *ep;
  struct tally_conn *to_peer, *from_peer;
  uint64_t comm_id;
  int abort_fd;
};

static void die(int rank, const char *what) {
  fprintf(stderr, "shm-copy-bench: rank %d: %s: %s\n", rank, what, tally_error_message());
  _exit(1);
}

struct accept_job {
  struct rank *r;
  tally_result_t result;
};

static void *accept_peer(void *arg) {
  struct accept_job *a = arg;
  int peer = 1 - a->r->rank;
  a->result = shm->accept(a->r->ep, a->r->comm_id, 1, &peer, tally_deadline_after(30), &a->r->from_peer);
  return NULL;
}

static void connect_pair(struct rank *r) {
  unsigned char secret[32] = {0};
  r->abort_fd = eventfd(0, EFD_CLOEXEC);
  struct tally_transport_params params = {.secret = secret, .rank = r->rank, .abort_fd = r->abort_fd};
  if (shm->create(&params, &r->ep) != TALLY_SUCCESS) die(r->rank, "create");
  struct accept_job a = {.r = r};
  pthread_t thread;
  pthread_create(&thread, NULL, accept_peer, &a);
  struct tally_sockaddr unused;
  memset(&unused, 0, sizeof unused);
  if (shm->connect(r->ep, r->comm_id, 1 - r->rank, &unused, tally_deadline_after(30), &r->to_peer) != TALLY_SUCCESS)
    die(r->rank, "connect");
  pthread_join(thread, NULL);
  if (a.result != TALLY_SUCCESS) die(r->rank, "accept");
}

static struct tally_msg_header header(uint32_t seq, uint64_t index, size_t len) {
  struct tally_msg_header h = {.seq = seq, .datatype = TALLY_UINT8, .count = len, .index = index};
  return h;
}

static void progress_until(struct rank *r, struct tally_request *reqs, int n) {
  for (;;) {
    int all = 1;
    for (int i = 0; i < n; i++) all &= reqs[i].done;
    if (all) return;
    int moved;
    if (shm->progress(r->ep, 100, &moved) != TALLY_SUCCESS) die(r->rank, "progress");
  }
}

/* Sends (to the peer) and receives (from it) `count` messages each of `size` bytes, WINDOW at a
 * time in each direction; either count may be 0. */
static void stream(struct rank *r, uint32_t seq, size_t size, size_t sends, size_t recvs, unsigned char **sbuf,
                   unsigned char **rbuf) {
  struct tally_request sreq[WINDOW], rreq[WINDOW];
  memset(sreq, 0, sizeof sreq);
  memset(rreq, 0, sizeof rreq);
  for (int w = 0; w < WINDOW; w++) sreq[w].done = rreq[w].done = 1;
  size_t sent = 0, received = 0;
  while (sent < sends || received < recvs) {
    for (int w = 0; w < WINDOW; w++) {
      if (sreq[w].done && sent < sends) {
        sreq[w] = (struct tally_request){.buf = sbuf[w], .len = size, .hdr = header(seq, sent++, size)};
        if (shm->isend(r->to_peer, &sreq[w]) != TALLY_SUCCESS) die(r->rank, "isend");
      }
      if (rreq[w].done && received < recvs) {
        rreq[w] = (struct tally_request){.buf = rbuf[w], .len = size, .hdr = header(seq, received++, size)};
        if (shm->irecv(r->from_peer, &rreq[w]) != TALLY_SUCCESS) die(r->rank, "irecv");
      }
    }
    /* wait only for what is still in flight: a sender whose sends all went into the ring at once
     * has nothing to wait for, and would sleep the whole timeout */
    int moved;
    if (shm->progress(r->ep, shm->pending(r->ep) ? 100 : 0, &moved) != TALLY_SUCCESS) die(r->rank, "progress");
  }
  progress_until(r, sreq, WINDOW);
  progress_until(r, rreq, WINDOW);
}

static void empty_message(struct rank *r, int send, uint32_t seq) {
  struct tally_request req = {.buf = NULL, .len = 0, .hdr = header(seq, 0, 0)};
  if ((send ? shm->isend(r->to_peer, &req) : shm->irecv(r->from_peer, &req)) != TALLY_SUCCESS)
    die(r->rank, "empty message");
  progress_until(r, &req, 1);
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One rank of one path: every size, every run; rank 0 writes the medians (GB/s) into `medians`. */
static void rank_main(struct rank *r, const struct options *o, const size_t *sizes, int nsizes, double *medians) {
  connect_pair(r);
  unsigned char *sbuf[WINDOW], *rbuf[WINDOW];
  for (int w = 0; w < WINDOW; w++) {
    sbuf[w] = malloc(o->max_size);
    rbuf[w] = malloc(o->max_size);
    memset(sbuf[w], r->rank + w, o->max_size); /* touch every page before timing */
    memset(rbuf[w], 0, o->max_size);
  }
  uint32_t seq = 0;
  for (int s = 0; s < nsizes; s++) {
    size_t size = sizes[s], count = o->total / size < 8 ? 8 : o->total / size;
    double gbps[MAX_RUNS + 1];
    for (int run = 0; run <= o->runs; run++) { /* run 0 warms up */
      seq++;
      size_t sends = r->rank == 0 || o->both ? count : 0, recvs = r->rank == 1 || o->both ? count : 0;
      uint64_t start = tally_now_ns();
      stream(r, seq, size, sends, recvs, sbuf, rbuf);
      empty_message(r, r->rank == 1, seq); /* rank 1 says it has everything */
      if (run > 0) gbps[run - 1] = (double)(size * count) / (double)(tally_now_ns() - start);
    }
    if (r->rank == 0 && r->pair == 0) {
      qsort(gbps, (size_t)o->runs, sizeof *gbps, compare_doubles);
      medians[s] = gbps[o->runs / 2];
    }
  }
  for (int w = 0; w < WINDOW; w++) free(sbuf[w]), free(rbuf[w]);
  shm->destroy(r->ep);
  close(r->abort_fd);
}

/* Runs both ranks of one path with TALLY_SHM_CMA_BYTES=cma; medians in shared memory. */
static int run_path(const char *cma, const struct options *o, const size_t *sizes, int nsizes, double *medians) {
  setenv("TALLY_SHM_CMA_BYTES", cma, 1);
  uint64_t comm_id;
  if (getrandom(&comm_id, sizeof comm_id, 0) != sizeof comm_id) return -1;
  fflush(NULL);
  pid_t pids[2 * MAX_PAIRS];
  for (int i = 0; i < 2 * o->pairs; i++) {
    if ((pids[i] = fork()) == 0) {
      struct rank r = {.rank = i % 2, .pair = i / 2, .comm_id = comm_id + (uint64_t)(i / 2)};
      rank_main(&r, o, sizes, nsizes, medians);
      _exit(0);
    }
  }
  int failed = 0;
  for (int i = 0; i < 2 * o->pairs; i++) {
    int status;
    waitpid(pids[i], &status, 0);
    failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  return failed ? -1 : 0;
}

static size_t parse_size(const char *flag, const char *text) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || v == 0) {
    fprintf(stderr, "shm-copy-bench: %s wants a positive number, not '%s'\n", flag, text);
    exit(2);
  }
  int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20 : 0;
  v <<= shift;
  if (shift) end++;
  if (*end) {
    fprintf(stderr, "shm-copy-bench: %s: '%s' is not a size (for example 4096, 64K, 16M)\n", flag, text);
    exit(2);
  }
  return (size_t)v;
}

int main(int argc, char **argv) {
  struct options o = {.runs = 5, .pairs = 1, .total = 256u << 20, .min_size = 4096, .max_size = 64u << 20};
  for (int i = 1; i < argc; i++) {
    const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(flag, "--both")) {
      o.both = 1;
      continue;
    }
    if (!value) {
      fprintf(stderr, "usage: %s [--runs N] [--bytes TOTAL] [--min SIZE] [--max SIZE] [--both] [--pairs N]\n", argv[0]);
      return 2;
    }
    i++;
    if (!strcmp(flag, "--runs")) {
      size_t runs = parse_size(flag, value);
      o.runs = runs > MAX_RUNS ? MAX_RUNS : (int)runs;
    } else if (!strcmp(flag, "--pairs")) {
      size_t pairs = parse_size(flag, value);
      o.pairs = pairs > MAX_PAIRS ? MAX_PAIRS : (int)pairs;
    } else if (!strcmp(flag, "--bytes")) {
      o.total = parse_size(flag, value);
    } else if (!strcmp(flag, "--min")) {
      o.min_size = parse_size(flag, value);
    } else if (!strcmp(flag, "--max")) {
      o.max_size = parse_size(flag, value);
    } else {
      fprintf(stderr, "usage: %s [--runs N] [--bytes TOTAL] [--min SIZE] [--max SIZE] [--both] [--pairs N]\n", argv[0]);
      return 2;
    }
  }
  size_t sizes[MAX_SIZES];
  int nsizes = 0;
  for (size_t s = o.min_size; s <= o.max_size && nsizes < MAX_SIZES; s *= 2) sizes[nsizes++] = s;
  double *medians =
      mmap(NULL, 2 * sizeof(double) * MAX_SIZES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (medians == MAP_FAILED || run_path("0", &o, sizes, nsizes, medians) != 0 ||
      run_path("1", &o, sizes, nsizes, medians + MAX_SIZES) != 0) {
    fprintf(stderr, "shm-copy-bench: a run failed (see above)\n");
    return 1;
  }
  printf("# %s, %d pair%s at once, %d runs per cell (median), %zu MiB per run, %d messages in flight\n",
         o.both ? "both ranks send and receive at once" : "rank 0 -> rank 1", o.pairs, o.pairs > 1 ? "s" : "", o.runs,
         o.total >> 20, WINDOW);
  printf("%12s %12s %12s %8s\n", "bytes", "ring GB/s", "cma GB/s", "cma/ring");
  for (int s = 0; s < nsizes; s++)
    printf("%12zu %12.2f %12.2f %8.2f\n", sizes[s], medians[s], medians[MAX_SIZES + s],
           medians[MAX_SIZES + s] / medians[s]);
  return 0;
}
