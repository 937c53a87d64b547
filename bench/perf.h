/* perf.h: what the parts of tally-perf share: the parsed options, one rank's benchmark state,
 * the result rows, and the functions each part offers the others. Uses only tally.h (and, in
 * perf_gpu.c, the CUDA runtime). */
#ifndef TALLY_BENCH_PERF_H
#define TALLY_BENCH_PERF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tally.h"

/* All but sendrecv run through the library's tuner; sendrecv (coll_p2p) is point-to-point messages,
 * which --sweep and --gpu do not take. The soak draws the first five. */
typedef enum {
  COLL_ALLREDUCE,
  COLL_ALLGATHER,
  COLL_REDUCESCATTER,
  COLL_BROADCAST,
  COLL_REDUCE,
  COLL_SENDRECV,
  COLL_ALLTOALL,
  COLL_GATHER,
  COLL_SCATTER
} coll_t;
enum { NUM_TUNED_COLLS = COLL_REDUCE + 1 }; /* the soak draws these */

#define PERF_PLOT_MAX_WITH 16
struct options {
  coll_t coll;
  size_t minbytes, maxbytes, stepbytes; /* stepbytes 0: multiply by factor */
  size_t factor;
  int iters, warmup;
  int check;
  tally_datatype_t type;
  tally_op_t op;
  int root;
  int fork_ranks;  /* -N; 0 when absent */
  bool no_bind;    /* --bind none: -N's ranks are not bound to cores (perf_launch.c) */
  double timeout;  /* -T, seconds, for -N; 0: none */
  const char *json;
  double soak_seconds;     /* --soak: run random collectives this long; 0: the size sweep */
  unsigned long long seed; /* --seed: the soak's random sequence */
  bool sweep;              /* --sweep: every algorithm over the range, then the tuner's choice */
  int repeat;              /* --repeat: the sweep's timed loops per measurement (their median) */
  const char *ignored_algo; /* --sweep: the environment's TALLY_ALGO, which it replaces; NULL if unset */
  bool gpu;                 /* --gpu: buffers in GPU memory, calls on a CUDA stream */
  const char *plot;         /* --plot: busbw against size drawn to this PNG (perf_plot.c); NULL: none */
  const char *plot_with[PERF_PLOT_MAX_WITH]; /* --plot-with: earlier -J files or anchor tables drawn too */
  int nplot_with;
  char plot_json[4096];     /* --plot without -J: the JSON written beside the PNG (FILE.json) */
  int compress;             /* --compress: 0 none, 1 bf16, 2 fp16 (sets TALLY_COMPRESS; the check's float AVG
                               tolerance becomes the format's error bound) */
};

/* After the run, the process that holds the -J file (rank 0, or the parent of -N ranks) draws it with
 * `tally-trace perfplot` (found beside this program, else on PATH); returns the exit status to use. */
int perf_plot(const struct options *o, int status);
/* --plot FILE.png without -J: the JSON goes to FILE.json. */
void perf_plot_default_json(struct options *o);

struct place_result {
  double time_us, algbw, busbw;
  uint64_t wrong;
};

struct row {
  size_t bytes, count;
  struct place_result place[2]; /* 0: out-of-place, 1: in-place */
};

/* One rank's benchmark at the current size. */
struct bench {
  const struct options *o;
  tally_comm_t comm;
  int rank, nranks;
  size_t tsize;
  char *sbuf, *rbuf;       /* GPU memory with --gpu */
  char *host_sbuf, *host_rbuf; /* with --gpu: where the check data is made and read */
  void *stream;            /* the calls' stream: NULL, or with --gpu a cudaStream_t */
  size_t count;  /* the count argument of the call */
  size_t bytes;  /* the buffer size the row reports */
  size_t send_elems, recv_elems;
};

/* run_rank's status when the job ran to the end but some results were wrong. Forked ranks
 * report it to the parent, which then lets the others finish; otherwise it becomes 1. */
#define STATUS_WRONG 3
/* A rank's status when what was asked cannot run here (--gpu without a GPU); the job's too. */
#define STATUS_SKIPPED 77

/* Reports a failed Tally call on this rank and exits with status 1. */
void bench_fail(const struct bench *b, tally_result_t r) __attribute__((noreturn));

#define TRY(b, call)                                                                                                   \
  do {                                                                                                                 \
    tally_result_t try_r_ = (call);                                                                                    \
    if (try_r_ != TALLY_SUCCESS) bench_fail((b), try_r_);                                                              \
  } while (0)

/* perf_args.c: the command line and the collectives' names. */
void parse_args(int argc, char **argv, struct options *o);
const char *coll_name(coll_t c);
bool coll_reduces(coll_t c);
bool coll_rooted(coll_t c);
bool coll_p2p(coll_t c);

/* tally-perf.c: running the collective over the size range. start_bench and finish_bench are
 * the range's common start (header, rank list, buffers, -J file) and end; both are collective. */
void place_in(const struct bench *b, int inplace, char *sbuf, char *rbuf, char **send, char **recv);
void place_buffers(const struct bench *b, int inplace, char **send, char **recv);
tally_result_t run_once(const struct bench *b, const void *send, void *recv);
double now_seconds(void);
double time_place(const struct bench *b, int inplace, int warmup);
bool next_size(const struct options *o, size_t *size);
void *alloc_buffer(const struct bench *b, size_t bytes);
bool set_buffer_size(struct bench *b, size_t bytes);
FILE *open_json(const struct bench *b, bool *failed);
bool close_json(FILE *json, const struct options *o);
int start_bench(struct bench *b, tally_comm_t comm, const struct options *o, FILE **json);
void finish_bench(struct bench *b);
int run_rank(tally_comm_t comm, const struct options *o);

/* perf_check.c: fills the inputs with check data and counts this rank's wrong result elements.
 * check_place does both around one call of the collective. */
bool check_data_exact(coll_t coll, tally_datatype_t type, tally_op_t op, int nranks);
void fill_check_inputs(const struct bench *b, char *send, char *recv);
uint64_t count_wrong_results(const struct bench *b, const char *recv, bool inplace, bool exact);
uint64_t count_changed_inputs(const struct bench *b, const char *send);
uint64_t check_place(const struct bench *b, int inplace);

/* perf_gpu.c: --gpu. gpu_open picks this rank's GPU and makes b->stream; it returns 0, or the exit
 * status after saying why not (77 where there is no GPU). The others exit with a message on a
 * CUDA error. gpu_copy is synchronous, in any direction; gpu_copy_bandwidth is device to device,
 * in GB/s. */
int gpu_open(struct bench *b);
void *gpu_alloc(const struct bench *b, size_t bytes);
void gpu_free(void *p);
void gpu_sync(const struct bench *b);
void gpu_copy(const struct bench *b, void *dst, const void *src, size_t bytes);
double gpu_copy_bandwidth(const struct bench *b, size_t bytes, int iters);

/* perf_soak.c: --soak, random collectives checked exactly for a while, on the soak's communicator
 * and on communicators split from it; returns the exit status. */
int run_soak(tally_comm_t comm, const struct options *o);

/* The soak's totals, as rank 0 reports them. */
struct soak_summary {
  int nranks;
  double seconds, elapsed; /* asked for and taken */
  unsigned long long seed;
  uint64_t operations, per_coll[NUM_TUNED_COLLS], in_place, bytes; /* the children's included */
  uint64_t splits;           /* tally_comm_split calls of the soak's communicator (each child destroyed) */
  uint64_t split_operations; /* operations on the children */
  uint64_t wrong_elements; /* wrong result elements and changed input elements, all ranks */
  uint64_t errors;         /* failed calls */
  bool ranks_combined;     /* false: a failure left only rank 0's own counts */
  /* VmRSS, the largest over the ranks; -1: unknown. The start is taken after rss_start_after
   * operations. */
  long long rss_start_kb, rss_end_kb, rss_growth_kb;
  /* malloc's bytes in use (mallinfo2), sampled with the RSS, the largest growth over the ranks: a
   * leak grows it, memory malloc keeps after a free or a shared-memory ring paged in does not. */
  long long heap_growth_kb;
  uint64_t rss_start_after;
};

/* perf_sweep.c: --sweep, every algorithm and then the tuner's choice over the size range, side
 * by side; returns the exit status. */
int run_sweep(tally_comm_t comm, const struct options *o);

/* The algorithms the sweep forces, as the tuner names them (tally.h): ring tree rhd hier board for
 * the reduction collectives, pairwise bruck hier for alltoall, direct binomial for gather and
 * scatter. `bandwidth` is the one the summary takes for the large sizes (ring, pairwise, direct),
 * `latency` (bits of the indexes) those it compares with it at the smallest size. */
enum { SWEEP_ALGOS = 6 }; /* the most any collective has */
struct sweep_algos {
  int n;
  const char *names[SWEEP_ALGOS];
  int bandwidth;
  unsigned latency;
};
const struct sweep_algos *sweep_algos_for(coll_t c);
enum { SWEEP_MAX_REPEAT = 100 }; /* the most --repeat takes */
#define SWEEP_NONE (-1.0) /* a time that was not measured, or a prediction the model does not make */

/* One size of the sweep. */
struct sweep_row {
  size_t bytes, count;
  double measured_us[SWEEP_ALGOS];  /* the forced algorithm's median; SWEEP_NONE where it did not run */
  double predicted_us[SWEEP_ALGOS]; /* tally_comm_predict; SWEEP_NONE where the model does not cover it */
  const char *choice;               /* the algorithm the tuner runs with nothing forced */
  double choice_predicted_us;       /* the model's time for it (SWEEP_NONE: none) */
  double choice_us;                 /* the unforced run's median */
  uint64_t wrong;                   /* wrong result elements, all runs and ranks (-c) */
};

/* The whole sweep, as rank 0 reports it. */
struct sweep {
  int nranks;
  const struct sweep_algos *algos; /* the collective's */
  char *refused[SWEEP_ALGOS]; /* rank 0: why the library refused to force an algorithm; NULL: it did not */
  struct sweep_row *rows;
  size_t nrows;
  uint64_t wrong;
};

/* perf_sweep_report.c: the sweep's header lines, its table (a row per size, printed as each size
 * completes), the model's table, the summary and the JSON file. Rank 0 calls them. */
void print_sweep_header(const struct bench *b, const struct sweep *s);
void print_sweep_row(const struct sweep *s, const struct sweep_row *row);
void print_sweep_end(const struct options *o, const struct sweep *s);
void write_sweep_json(FILE *f, const struct bench *b, const struct sweep *s);

/* perf_report.c: the nccl-tests style table, its summary, and the JSON file, and the soak's
 * header, summary and JSON file (rank 0 prints; print_ranks is collective). */
void print_header(const struct bench *b);
void print_ranks(const struct bench *b);
void print_table_header(void);
void print_skipped(const struct bench *b, size_t bytes);
void print_row(const struct bench *b, const struct row *row);
void print_summary(const struct options *o, uint64_t wrong, double avg_busbw);
void print_wrong(const struct options *o, uint64_t wrong);
void format_time(char *buf, size_t len, double us);
void write_json(FILE *f, const struct bench *b, const struct row *rows, size_t nrows, uint64_t wrong,
                double avg_busbw);
void print_soak_header(const struct bench *b, size_t max_bytes, int soak_split_every, int soak_split_ops);
void print_soak_summary(const struct soak_summary *s);
void write_soak_json(FILE *f, const struct soak_summary *s);

/* perf_launch.c: starting the ranks. */
int run_forked(const struct options *o);
tally_comm_t open_comm(const struct options *o);
/* Whether a launcher (tally-run, mpirun, srun, torchrun) gave this process a rank variable. */
bool launcher_env_present(void);
/* This process's rank as the launcher's variables give it; -1 when none does. */
int env_rank_guess(void);

#endif
