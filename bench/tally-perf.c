/* tally-perf: the collective benchmark. Speaks the nccl-tests command line and table format
 * (-b/-e/-f/-n/-w/-c/-d/-o/-r), times out-of-place and in-place runs of one collective (or of
 * sendrecv, a ping-pong between ranks 0 and 1) over a range of sizes, checks every result
 * element, and can write the results as JSON; with --soak it runs random collectives for a
 * while instead and checks them all. It runs under a launcher
 * (tally-run, mpirun, srun, torchrun), or forks its own local ranks with -N.
 * With --sweep it runs the range once per algorithm and once as the tuner chooses, and compares.
 * Uses only the public API in tally.h. This file owns main and one rank's timing loop; the
 * other parts are perf_args.c, perf_launch.c, perf_check.c, perf_soak.c, perf_sweep.c,
 * perf_sweep_report.c and perf_report.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "perf.h"

void bench_fail(const struct bench *b, tally_result_t r) {
  fprintf(stderr, "tally-perf: rank %d: %s: %s\n", b->rank, tally_result_string(r), tally_comm_last_error(b->comm));
  fflush(stderr);
  exit(1);
}

/* The send and receive buffers of the out-of-place (0) or in-place (1) call at the current size,
 * laid out in sbuf and rbuf. */
void place_in(const struct bench *b, int inplace, char *sbuf, char *rbuf, char **send, char **recv) {
  if (!inplace) {
    *send = sbuf;
    *recv = rbuf;
    return;
  }
  switch (b->o->coll) {
  case COLL_ALLGATHER:
  case COLL_GATHER:
    *recv = rbuf;
    *send = rbuf + (size_t)b->rank * b->count * b->tsize;
    break;
  case COLL_REDUCESCATTER:
  case COLL_SCATTER:
    *send = rbuf;
    *recv = rbuf + (size_t)b->rank * b->count * b->tsize;
    break;
  default:
    *send = *recv = rbuf;
    break;
  }
}

void place_buffers(const struct bench *b, int inplace, char **send, char **recv) {
  place_in(b, inplace, b->sbuf, b->rbuf, send, recv);
}

/* One round trip, as mpi_coll.c's: rank 0 sends and then receives, rank 1 receives and then sends
 * its own send buffer (in place: what it received); the other ranks have nothing to do. */
static tally_result_t ping_pong(const struct bench *b, const void *send, void *recv) {
  const struct options *o = b->o;
  tally_result_t r = TALLY_SUCCESS;
  if (b->rank == 0) {
    r = tally_send(send, b->count, o->type, 1, b->comm, b->stream);
    if (r == TALLY_SUCCESS) r = tally_recv(recv, b->count, o->type, 1, b->comm, b->stream);
  } else if (b->rank == 1) {
    r = tally_recv(recv, b->count, o->type, 0, b->comm, b->stream);
    if (r == TALLY_SUCCESS) r = tally_send(send, b->count, o->type, 0, b->comm, b->stream);
  }
  return r;
}

/* One call of the chosen collective at the current size. */
tally_result_t run_once(const struct bench *b, const void *send, void *recv) {
  const struct options *o = b->o;
  switch (o->coll) {
  case COLL_ALLREDUCE: return tally_allreduce(send, recv, b->count, o->type, o->op, b->comm, b->stream);
  case COLL_ALLGATHER: return tally_allgather(send, recv, b->count, o->type, b->comm, b->stream);
  case COLL_REDUCESCATTER: return tally_reduce_scatter(send, recv, b->count, o->type, o->op, b->comm, b->stream);
  case COLL_BROADCAST: return tally_broadcast(send, recv, b->count, o->type, o->root, b->comm, b->stream);
  case COLL_REDUCE: return tally_reduce(send, recv, b->count, o->type, o->op, o->root, b->comm, b->stream);
  case COLL_SENDRECV: return ping_pong(b, send, recv);
  case COLL_ALLTOALL: return tally_alltoall(send, recv, b->count, o->type, b->comm, b->stream);
  case COLL_GATHER: return tally_gather(send, recv, b->count, o->type, o->root, b->comm, b->stream);
  case COLL_SCATTER: return tally_scatter(send, recv, b->count, o->type, o->root, b->comm, b->stream);
  }
  return TALLY_ERR_INTERNAL;
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Times ITERS calls after `warmup` untimed ones. Each rank measures its own average; the result
 * is the slowest rank's (a MAX allreduce), so an imbalanced rank is not averaged away.
 * nccl-tests averages over ranks instead; for the blocking host collectives here the two agree
 * closely. */
double time_place(const struct bench *b, int inplace, int warmup) {
  char *send, *recv;
  place_buffers(b, inplace, &send, &recv);
  for (int i = 0; i < warmup; i++) TRY(b, run_once(b, send, recv));
  if (b->o->gpu) gpu_sync(b);
  TRY(b, tally_barrier(b->comm, NULL));
  double t0 = now_seconds();
  for (int i = 0; i < b->o->iters; i++) TRY(b, run_once(b, send, recv));
  if (b->o->gpu) gpu_sync(b); /* stream-ordered calls: done when the stream is */
  double local = (now_seconds() - t0) / b->o->iters * 1e6, slowest = 0;
  TRY(b, tally_allreduce(&local, &slowest, 1, TALLY_FLOAT64, TALLY_MAX, b->comm, NULL));
  return slowest;
}

/* Steps *size to the next size of the -b/-e/-f/-i range; false after the last. */
bool next_size(const struct options *o, size_t *size) {
  size_t next = o->stepbytes ? *size + o->stepbytes : *size * o->factor;
  if (next <= *size || next > o->maxbytes) return false; /* next <= *size: overflow */
  *size = next;
  return true;
}

/* busbw over algbw, as nccl-tests has it. */
static double bus_factor(coll_t c, int n) {
  switch (c) {
  case COLL_ALLREDUCE: return 2.0 * (n - 1) / n;
  case COLL_ALLGATHER:
  case COLL_REDUCESCATTER:
  case COLL_ALLTOALL:
  case COLL_GATHER:
  case COLL_SCATTER: return (double)(n - 1) / n;
  default: return 1.0;
  }
}

/* The time a row reports for a timed call of `call_us`: sendrecv's call is a round trip, and the
 * row reports one way, as mpi_coll.c does. */
static double reported_time(coll_t c, double call_us) { return c == COLL_SENDRECV ? call_us / 2 : call_us; }

/* A page-aligned buffer of at least `bytes`, every page touched; exits with status 1 if memory is short. */
void *alloc_buffer(const struct bench *b, size_t bytes) {
  long page = sysconf(_SC_PAGESIZE);
  size_t align = page > 0 ? (size_t)page : 4096;
  size_t len = (bytes + align - 1) / align * align;
  if (len == 0) len = align;
  void *p = NULL;
  int err = posix_memalign(&p, align, len);
  if (err != 0) {
    fprintf(stderr, "tally-perf: rank %d: cannot allocate %zu bytes: %s\n", b->rank, len, strerror(err));
    exit(1);
  }
  memset(p, 0, len); /* touch every page now, not inside the timed loop */
  return p;
}

/* Sets the call's count and the send and receive element counts for a whole-buffer size of
 * `bytes` as nccl-tests defines it: the receive buffer of allgather and alltoall, the send buffer
 * of reduce-scatter, the root's receive buffer of gather and send buffer of scatter (each of these
 * one block per rank, rounded down to whole blocks), the one buffer of the others. False where a
 * size above 0 holds no whole element (per block): mpi_coll.c skips such a size. */
bool set_buffer_size(struct bench *b, size_t bytes) {
  size_t elems = bytes / b->tsize, n = (size_t)b->nranks;
  switch (b->o->coll) {
  case COLL_ALLGATHER:
  case COLL_GATHER:
    b->count = elems / n;
    b->send_elems = b->count;
    b->recv_elems = b->count * n;
    b->bytes = b->recv_elems * b->tsize;
    break;
  case COLL_REDUCESCATTER:
  case COLL_SCATTER:
    b->count = elems / n;
    b->send_elems = b->count * n;
    b->recv_elems = b->count;
    b->bytes = b->send_elems * b->tsize;
    break;
  case COLL_ALLTOALL:
    b->count = elems / n;
    b->send_elems = b->recv_elems = b->count * n;
    b->bytes = b->recv_elems * b->tsize;
    break;
  default:
    b->count = b->send_elems = b->recv_elems = elems;
    b->bytes = elems * b->tsize;
    break;
  }
  return b->count > 0 || bytes == 0;
}

/* Rank 0 opens the -J file before any work; every rank learns whether that worked (collective).
 * Returns the file on rank 0 (NULL without -J), and sets *failed on every rank if it failed. */
FILE *open_json(const struct bench *b, bool *failed) {
  FILE *json = NULL;
  int32_t mine = 0, any = 0;
  if (b->rank == 0 && b->o->json != NULL) {
    json = fopen(b->o->json, "w");
    if (json == NULL) {
      fprintf(stderr, "tally-perf: cannot write %s: %s\n", b->o->json, strerror(errno));
      mine = 1;
    }
  }
  TRY(b, tally_allreduce(&mine, &any, 1, TALLY_INT32, TALLY_MAX, b->comm, NULL));
  *failed = any != 0;
  return json;
}

/* Rank 0 closes the -J file; false (and a message) if the data did not reach it. */
bool close_json(FILE *json, const struct options *o) {
  if (fclose(json) == 0) return true;
  fprintf(stderr, "tally-perf: cannot write %s: %s\n", o->json, strerror(errno));
  return false;
}

/* The start every size range shares: rank and size, the -r check, the -J file, the buffers for
 * the largest size, the header and the rank list. Returns 0 when ready, else the exit status
 * (the communicator is then destroyed). */
int start_bench(struct bench *b, tally_comm_t comm, const struct options *o, FILE **json) {
  memset(b, 0, sizeof *b);
  b->o = o;
  b->comm = comm;
  b->rank = -1;
  TRY(b, tally_comm_rank(comm, &b->rank));
  TRY(b, tally_comm_size(comm, &b->nranks));
  b->tsize = tally_datatype_size(o->type);
  char refused[128] = "";
  if (coll_rooted(o->coll) && o->root >= b->nranks)
    snprintf(refused, sizeof refused, "-r %d is not a rank of this %d-rank job", o->root, b->nranks);
  else if (o->coll == COLL_SENDRECV && b->nranks < 2)
    snprintf(refused, sizeof refused, "sendrecv ping-pongs between ranks 0 and 1: this job has 1 rank");
  if (refused[0] != '\0') {
    if (b->rank == 0) fprintf(stderr, "tally-perf: %s\n", refused);
    tally_barrier(comm, NULL); /* nobody exits (and has a launcher stop rank 0) before rank 0 has said why */
    tally_comm_destroy(comm);
    return 2;
  }
  bool json_bad = false;
  *json = open_json(b, &json_bad);
  if (json_bad) {
    tally_comm_destroy(comm);
    return 1;
  }
  if (o->gpu) {
    int status = gpu_open(b);
    if (status != 0) {
      tally_comm_destroy(comm);
      return status;
    }
    b->sbuf = gpu_alloc(b, o->maxbytes);
    b->rbuf = gpu_alloc(b, o->maxbytes);
    b->host_sbuf = alloc_buffer(b, o->maxbytes);
    b->host_rbuf = alloc_buffer(b, o->maxbytes);
  } else {
    b->sbuf = alloc_buffer(b, o->maxbytes);
    b->rbuf = alloc_buffer(b, o->maxbytes);
  }
  if (b->rank == 0) print_header(b);
  if (o->gpu && b->rank == 0)
    printf("# GPU buffers; device-to-device cudaMemcpy of %zu bytes on rank 0's GPU: %.2f GB/s\n", o->maxbytes,
           gpu_copy_bandwidth(b, o->maxbytes, 20));
  print_ranks(b);
  return 0;
}

/* The end every size range shares: nobody exits before rank 0 has printed (a launcher stops the
 * job at the first non-zero exit), then the communicator and the buffers go. */
void finish_bench(struct bench *b) {
  TRY(b, tally_barrier(b->comm, NULL));
  TRY(b, tally_comm_destroy(b->comm));
  if (b->o->gpu) {
    gpu_free(b->sbuf);
    gpu_free(b->rbuf);
    free(b->host_sbuf);
    free(b->host_rbuf);
    return;
  }
  free(b->sbuf);
  free(b->rbuf);
}

/* Runs the benchmark (the size range; with --sweep every algorithm over it; with --soak the soak)
 * on an initialized communicator; returns the process exit status. */
int run_rank(tally_comm_t comm, const struct options *o) {
  if (o->soak_seconds > 0) return run_soak(comm, o);
  if (o->sweep) return run_sweep(comm, o);
  struct bench b;
  FILE *json = NULL;
  int status = start_bench(&b, comm, o, &json);
  if (status != 0) return status;
  if (b.rank == 0) print_table_header();

  struct row *rows = NULL;
  size_t nrows = 0, cap = 0;
  uint64_t total_wrong = 0;
  double bw_sum = 0;
  int bw_count = 0;
  double factor = bus_factor(o->coll, b.nranks);

  size_t size = o->minbytes;
  do {
    if (!set_buffer_size(&b, size)) {
      if (b.rank == 0) print_skipped(&b, size);
      continue;
    }
    struct row row;
    memset(&row, 0, sizeof row);
    row.bytes = b.bytes;
    row.count = b.count; /* the count passed to the call, as nccl-tests prints it */
    TRY(&b, tally_barrier(comm, NULL));
    for (int p = 0; p < 2; p++) {
      struct place_result *r = &row.place[p];
      r->time_us = reported_time(o->coll, time_place(&b, p, o->warmup));
      double sec = r->time_us * 1e-6;
      r->algbw = sec > 0 ? (double)b.bytes / 1e9 / sec : 0;
      r->busbw = r->algbw * factor;
      if (o->check) {
        uint64_t mine = check_place(&b, p);
        TRY(&b, tally_allreduce(&mine, &r->wrong, 1, TALLY_UINT64, TALLY_SUM, comm, NULL));
        total_wrong += r->wrong;
      }
      bw_sum += r->busbw;
      bw_count++;
    }
    if (b.rank == 0) {
      print_row(&b, &row);
      if (json != NULL) {
        if (nrows == cap) {
          cap = cap ? cap * 2 : 32;
          struct row *grown = realloc(rows, cap * sizeof *rows);
          if (grown == NULL) {
            fprintf(stderr, "tally-perf: out of memory\n");
            exit(1);
          }
          rows = grown;
        }
        rows[nrows++] = row;
      }
    }
  } while (next_size(o, &size));

  double avg = bw_count ? bw_sum / bw_count : 0;
  bool json_bad = false;
  if (b.rank == 0) {
    print_summary(o, total_wrong, avg);
    if (json != NULL) {
      write_json(json, &b, rows, nrows, total_wrong, avg);
      json_bad = !close_json(json, o);
    }
  }
  free(rows);
  finish_bench(&b);
  if (json_bad) return 1;
  return total_wrong != 0 ? STATUS_WRONG : 0;
}

/* Ranks a soak forks when neither -N nor a launcher says how many. */
#define SOAK_DEFAULT_RANKS 8

int main(int argc, char **argv) {
  struct options o;
  parse_args(argc, argv, &o);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (o.soak_seconds > 0 && o.fork_ranks == 0 && !launcher_env_present()) o.fork_ranks = SOAK_DEFAULT_RANKS;

  int status;
  if (o.fork_ranks > 1) {
    status = perf_plot(&o, run_forked(&o));
  } else {
    status = run_rank(open_comm(&o), &o);
    status = perf_plot(&o, status == STATUS_WRONG ? 1 : status);
  }
  free((char *)o.ignored_algo); /* --sweep's copy of TALLY_ALGO */
  return status;
}