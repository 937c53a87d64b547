/* perf_args.c: tally-perf's command line: the options and their defaults, the usage text,
 * sizes with K/M/G suffixes, and the names of collectives, datatypes and ops (the library's
 * own and nccl-tests' spellings), for the size range, --sweep and --soak. Exits with status 2 on
 * a bad argument. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "perf.h"

static const struct {
  const char *name;
  coll_t coll;
} coll_names[] = {
    {"allreduce", COLL_ALLREDUCE},
    {"all_reduce", COLL_ALLREDUCE},
    {"allgather", COLL_ALLGATHER},
    {"all_gather", COLL_ALLGATHER},
    {"reducescatter", COLL_REDUCESCATTER},
    {"reduce_scatter", COLL_REDUCESCATTER},
    {"broadcast", COLL_BROADCAST},
    {"bcast", COLL_BROADCAST},
    {"reduce", COLL_REDUCE},
    {"sendrecv", COLL_SENDRECV},
    {"alltoall", COLL_ALLTOALL},
    {"gather", COLL_GATHER},
    {"scatter", COLL_SCATTER},
};

/* The collectives' names, as the messages list them. */
#define COLL_LIST "allreduce allgather reducescatter broadcast reduce sendrecv alltoall gather scatter"

const char *coll_name(coll_t c) {
  switch (c) {
  case COLL_ALLREDUCE: return "allreduce";
  case COLL_ALLGATHER: return "allgather";
  case COLL_REDUCESCATTER: return "reducescatter";
  case COLL_BROADCAST: return "broadcast";
  case COLL_REDUCE: return "reduce";
  case COLL_SENDRECV: return "sendrecv";
  case COLL_ALLTOALL: return "alltoall";
  case COLL_GATHER: return "gather";
  case COLL_SCATTER: return "scatter";
  }
  return "?";
}

bool coll_reduces(coll_t c) { return c == COLL_ALLREDUCE || c == COLL_REDUCESCATTER || c == COLL_REDUCE; }
bool coll_rooted(coll_t c) { return c == COLL_BROADCAST || c == COLL_REDUCE || c == COLL_GATHER || c == COLL_SCATTER; }
/* Made of the library's point-to-point calls (tally_send/recv): no tuner, so no algorithms to
 * sweep; tally-perf keeps it to host memory. Alltoall, gather and scatter are collectives with
 * algorithms of their own. */
bool coll_p2p(coll_t c) { return c == COLL_SENDRECV; }

/* nccl-tests' spellings besides the library's own names. */
static const struct {
  const char *name;
  tally_datatype_t type;
} type_aliases[] = {
    {"int8", TALLY_INT8},         {"char", TALLY_INT8},         {"uint8", TALLY_UINT8},
    {"int32", TALLY_INT32},       {"int", TALLY_INT32},         {"uint32", TALLY_UINT32},
    {"int64", TALLY_INT64},       {"uint64", TALLY_UINT64},     {"half", TALLY_FLOAT16},
    {"float16", TALLY_FLOAT16},   {"fp16", TALLY_FLOAT16},      {"bfloat16", TALLY_BFLOAT16},
    {"bf16", TALLY_BFLOAT16},     {"float", TALLY_FLOAT32},     {"float32", TALLY_FLOAT32},
    {"fp32", TALLY_FLOAT32},      {"double", TALLY_FLOAT64},    {"float64", TALLY_FLOAT64},
    {"fp64", TALLY_FLOAT64},
};

static const struct {
  const char *name;
  tally_op_t op;
} op_aliases[] = {
    {"sum", TALLY_SUM}, {"prod", TALLY_PROD}, {"product", TALLY_PROD}, {"min", TALLY_MIN},
    {"max", TALLY_MAX}, {"avg", TALLY_AVG},   {"average", TALLY_AVG},
};


/* The soak's seed when --seed is absent; the output prints the seed either way. */
#define SOAK_DEFAULT_SEED 1
/* With --soak and no -T, the forked ranks get the soak's time plus this long to finish. */
#define SOAK_TIMEOUT_MARGIN 600
/* --sweep's timed loops per measurement when --repeat is absent. */
#define SWEEP_DEFAULT_REPEAT 3

static void usage(FILE *f) {
  fprintf(f,
          "usage: tally-perf COLLECTIVE [options]\n"
          "       tally-perf COLLECTIVE --sweep [--repeat R] [options]\n"
          "       tally-perf --soak SECONDS [--seed S] [-N N] [-T SECONDS] [-J FILE]\n"
          "\n"
          "COLLECTIVE: allreduce, allgather, reducescatter, broadcast, reduce, sendrecv, alltoall,\n"
          "gather or scatter. sendrecv: ranks 0 and 1 ping-pong (the others wait); its time is one\n"
          "way, half the round trip.\n"
          "\n"
          "  -b, --minbytes SIZE     smallest buffer size (default 8)\n"
          "  -e, --maxbytes SIZE     largest buffer size (default 64M)\n"
          "  -f, --stepfactor F      multiply the size by F each step (default 2)\n"
          "  -i, --stepbytes SIZE    add SIZE each step instead of multiplying\n"
          "  -n, --iters N           timed iterations per size (default 20)\n"
          "  -w, --warmup_iters N    untimed iterations before them (default 5)\n"
          "  -c, --check 0|1         check every result element (default 1)\n"
          "  -d, --datatype TYPE     int8 uint8 int32 uint32 int64 uint64 half bfloat16\n"
          "                          float double (default float)\n"
          "  -o, --op OP             sum prod min max avg (default sum)\n"
          "  -r, --root R            root rank of broadcast, reduce, gather and scatter (default 0)\n"
          "  -N, --nranks N          fork N local ranks instead of using a launcher\n"
          "  -a, --algo ALGO         the algorithms to use, as TALLY_ALGO (for example rhd, ring,\n"
          "                          or allreduce:rhd;ring); sets TALLY_ALGO for the ranks\n"
          "  -T, --timeout SECONDS   with -N: kill the ranks after this long (default 600, 0: never;\n"
          "                          with --soak, default the soak's SECONDS + 600)\n"
          "  -J, --json FILE         also write the results to FILE as JSON\n"
          "      --plot FILE.png     draw busbw against size (tally-trace perfplot, matplotlib) from the\n"
          "                          -J file (FILE.json beside the PNG when there is no -J)\n"
          "      --plot-with FILE    with --plot: also draw FILE, an earlier run's -J output or an\n"
          "                          nccl-tests style table (e.g. /work/shared/anchors/run.sh's output)\n"
          "      --compress FORMAT   none, bf16 or fp16: FLOAT32 data crosses hosts as 16-bit values\n"
          "                          (sets TALLY_COMPRESS; with -d float; see TALLY_COMPRESS_MIN_BYTES)\n"
          "      --sweep             compare the algorithms: run the range once with each algorithm\n"
          "                          forced by TALLY_ALGO (ring tree rhd hier board shared; for alltoall\n"
          "                          pairwise bruck hier; for gather and scatter direct binomial; one\n"
          "                          the library refuses for COLLECTIVE is skipped, and a size it\n"
          "                          cannot run shows '-') and once as the tuner chooses; print per\n"
          "                          size each one's time, the fastest, the tuner's choice and its\n"
          "                          time over the fastest's, then the cost model's predicted over\n"
          "                          measured times (out-of-place only; replaces the environment's\n"
          "                          TALLY_ALGO; not for sendrecv, which has no algorithms)\n"
          "      --gpu               buffers in GPU memory (GPU rank %% GPUs), calls on a CUDA stream and\n"
          "                          timed to its completion; prints the GPU's device-to-device\n"
          "                          cudaMemcpy bandwidth first (the size range only; not for\n"
          "                          sendrecv, which tally-perf runs on host memory)\n"
          "      --repeat R          with --sweep: each time is the median of R timed loops of -n\n"
          "                          iterations (default 3)\n"
          "      --soak SECONDS      instead of the size range, run random collectives, sizes (1\n"
          "                          element to 4 MiB), datatypes, ops, roots, in place and out of\n"
          "                          place for SECONDS, check every result exactly, and report the\n"
          "                          counts, wrong results, errors and memory (RSS); every 32\n"
          "                          operations split the communicator at random, run 4 checked\n"
          "                          collectives on the child and destroy it; forks 8 ranks\n"
          "                          unless -N or a launcher says otherwise\n"
          "      --seed S            the soak's random sequence (default 1); the same seed on the\n"
          "                          same number of ranks repeats the same operations\n"
          "  -h, --help              show this message\n"
          "\n"
          "SIZE takes a K, M or G suffix (powers of 1024). Sizes are whole-buffer bytes as in\n"
          "nccl-tests: the receive buffer of allgather and alltoall, the send buffer of\n"
          "reducescatter, the root's receive buffer of gather and send buffer of scatter. Those\n"
          "hold one block per rank, so a size is rounded down to whole blocks; a size with no\n"
          "whole element (per block) is skipped.\n"
          "Without -N the ranks come from the launcher's environment (tally-run, mpirun, srun,\n"
          "torchrun); with no launcher environment a single rank runs.\n"
          "Exit status: 0 success, 1 wrong results or a Tally error, 2 bad arguments.\n");
}

static void bad_arg(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_arg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "tally-perf: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(run 'tally-perf --help' for usage)\n");
  exit(2);
}

static size_t parse_size(const char *opt, const char *s) {
  char *end = NULL;
  errno = 0;
  if (s[0] == '-' || s[0] == '\0') bad_arg("%s needs a size in bytes, not '%s'", opt, s);
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || errno != 0) bad_arg("%s needs a size in bytes, not '%s'", opt, s);
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  default: break;
  }
  if (*end == 'b' || *end == 'B') end++;
  if (*end != '\0') bad_arg("%s: cannot read '%s' as a size (a number with an optional K, M or G)", opt, s);
  if (shift != 0 && v > (SIZE_MAX >> shift)) bad_arg("%s: size '%s' is too large", opt, s);
  return (size_t)(v << shift);
}

/* A number of seconds: at least 0, or more than 0 unless `zero_ok`. */
static double parse_seconds(const char *opt, const char *s, bool zero_ok) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (s[0] == '\0' || *end != '\0' || errno != 0 || !(v >= 0 && v <= 1e9) || (v == 0 && !zero_ok))
    bad_arg("%s needs a %snumber of seconds, not '%s'", opt, zero_ok ? "" : "positive ", s);
  return v;
}

static unsigned long long parse_seed(const char *s) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0)
    bad_arg("--seed needs a non-negative integer below 2^64, not '%s'", s);
  return v;
}

static long parse_int(const char *opt, const char *s, long lo, long hi) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (s[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
    bad_arg("%s needs an integer from %ld to %ld, not '%s'", opt, lo, hi, s);
  return v;
}

static tally_datatype_t parse_type(const char *s) {
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++) {
    const char *name = tally_datatype_name((tally_datatype_t)t);
    if (name != NULL && strcasecmp(name, s) == 0) return (tally_datatype_t)t;
  }
  for (size_t i = 0; i < sizeof type_aliases / sizeof type_aliases[0]; i++)
    if (strcasecmp(type_aliases[i].name, s) == 0) return type_aliases[i].type;
  bad_arg("unknown datatype '%s' (int8 uint8 int32 uint32 int64 uint64 half bfloat16 float double)", s);
}

static tally_op_t parse_op(const char *s) {
  for (int o = 0; o < TALLY_NUM_OPS; o++) {
    const char *name = tally_op_name((tally_op_t)o);
    if (name != NULL && strcasecmp(name, s) == 0) return (tally_op_t)o;
  }
  for (size_t i = 0; i < sizeof op_aliases / sizeof op_aliases[0]; i++)
    if (strcasecmp(op_aliases[i].name, s) == 0) return op_aliases[i].op;
  bad_arg("unknown op '%s' (sum prod min max avg)", s);
}

/* --sweep sets TALLY_ALGO itself for each run (and leaves it unset for the tuner's): it refuses
 * -a, and keeps the environment's value only to say that it was replaced. */
static void take_algo_env(struct options *o, bool have_algo) {
  if (have_algo) bad_arg("--sweep forces each algorithm in turn itself: drop -a");
  const char *env = getenv("TALLY_ALGO");
  if (env == NULL) return;
  o->ignored_algo = strdup(env);
  if (o->ignored_algo == NULL || unsetenv("TALLY_ALGO") != 0) bad_arg("--sweep: cannot unset TALLY_ALGO");
}

/* --compress: the library reads TALLY_COMPRESS at init; the check needs the format's tolerance. */
static int parse_compress(const char *s) {
  static const char *const names[] = {"none", "bf16", "fp16"};
  for (int f = 0; f < 3; f++)
    if (strcmp(s, names[f]) == 0) {
      if (setenv("TALLY_COMPRESS", s, 1) != 0) bad_arg("--compress %s: cannot set TALLY_COMPRESS", s);
      return f;
    }
  bad_arg("--compress '%s': not none, bf16 or fp16", s);
  return 0;
}

void parse_args(int argc, char **argv, struct options *o) {
  memset(o, 0, sizeof *o);
  o->minbytes = 8;
  o->maxbytes = (size_t)64 << 20;
  o->factor = 2;
  o->iters = 20;
  o->warmup = 5;
  o->check = 1;
  o->type = TALLY_FLOAT32;
  o->op = TALLY_SUM;
  o->root = 0;
  o->timeout = 600;
  o->seed = SOAK_DEFAULT_SEED;
  o->repeat = SWEEP_DEFAULT_REPEAT;
  bool have_coll = false, have_timeout = false, have_seed = false, have_repeat = false, have_algo = false;
  int sweep_opt = 0; /* the last option seen that only the sweep uses */
  enum { OPT_SOAK = 256, OPT_SEED, OPT_SWEEP, OPT_REPEAT, OPT_GPU, OPT_PLOT, OPT_PLOT_WITH, OPT_BIND, OPT_COMPRESS };

  static const struct option longopts[] = {
      {"minbytes", required_argument, NULL, 'b'},   {"maxbytes", required_argument, NULL, 'e'},
      {"stepfactor", required_argument, NULL, 'f'}, {"stepbytes", required_argument, NULL, 'i'},
      {"iters", required_argument, NULL, 'n'},      {"warmup_iters", required_argument, NULL, 'w'},
      {"check", required_argument, NULL, 'c'},      {"datatype", required_argument, NULL, 'd'},
      {"op", required_argument, NULL, 'o'},         {"root", required_argument, NULL, 'r'},
      {"nranks", required_argument, NULL, 'N'},     {"timeout", required_argument, NULL, 'T'},
      {"json", required_argument, NULL, 'J'},       {"help", no_argument, NULL, 'h'},
      {"soak", required_argument, NULL, OPT_SOAK},  {"seed", required_argument, NULL, OPT_SEED},
      {"algo", required_argument, NULL, 'a'},       {"sweep", no_argument, NULL, OPT_SWEEP},
      {"repeat", required_argument, NULL, OPT_REPEAT}, {"gpu", no_argument, NULL, OPT_GPU},
      {"plot", required_argument, NULL, OPT_PLOT},  {"plot-with", required_argument, NULL, OPT_PLOT_WITH},
      {"bind", required_argument, NULL, OPT_BIND},
      {"compress", required_argument, NULL, OPT_COMPRESS},
      {NULL, 0, NULL, 0},
  };
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":b:e:f:i:n:w:c:d:o:r:N:T:J:a:h", longopts, NULL)) != -1) {
    if (c > 0 && c < 128 && strchr("befinwcdor", c) != NULL) sweep_opt = c;
    switch (c) {
    case 'b': o->minbytes = parse_size("-b", optarg); break;
    case 'e': o->maxbytes = parse_size("-e", optarg); break;
    case 'f': o->factor = (size_t)parse_int("-f", optarg, 2, 1 << 20); break;
    case 'i': o->stepbytes = parse_size("-i", optarg); break;
    case 'n': o->iters = (int)parse_int("-n", optarg, 1, 1000000000); break;
    case 'w': o->warmup = (int)parse_int("-w", optarg, 0, 1000000000); break;
    case 'c': o->check = (int)parse_int("-c", optarg, 0, 1); break;
    case 'd': o->type = parse_type(optarg); break;
    case 'o': o->op = parse_op(optarg); break;
    case 'r': o->root = (int)parse_int("-r", optarg, 0, 1 << 30); break;
    case 'N': o->fork_ranks = (int)parse_int("-N", optarg, 1, 1024); break;
    case 'T':
      o->timeout = parse_seconds("-T", optarg, true);
      have_timeout = true;
      break;
    case 'J': o->json = optarg; break;
    case 'a': /* the library reads it at init (and refuses a malformed one there, saying why) */
      if (setenv("TALLY_ALGO", optarg, 1) != 0) bad_arg("-a %s: cannot set TALLY_ALGO", optarg);
      have_algo = true;
      break;
    case OPT_SWEEP: o->sweep = true; break;
    case OPT_GPU: o->gpu = true; break;
    case OPT_BIND:
      if (strcmp(optarg, "core") != 0 && strcmp(optarg, "none") != 0)
        bad_arg("--bind %s: expected core (each -N rank on its own core when they fit, the default) or none", optarg);
      o->no_bind = strcmp(optarg, "none") == 0;
      break;
    case OPT_PLOT: o->plot = optarg; break;
    case OPT_PLOT_WITH:
      if (o->nplot_with == PERF_PLOT_MAX_WITH) bad_arg("--plot-with: at most %d files", PERF_PLOT_MAX_WITH);
      o->plot_with[o->nplot_with++] = optarg;
      break;
    case OPT_COMPRESS: o->compress = parse_compress(optarg); break;
    case OPT_REPEAT:
      o->repeat = (int)parse_int("--repeat", optarg, 1, SWEEP_MAX_REPEAT);
      have_repeat = true;
      break;
    case OPT_SOAK: o->soak_seconds = parse_seconds("--soak", optarg, false); break;
    case OPT_SEED:
      o->seed = parse_seed(optarg);
      have_seed = true;
      break;
    case 'h': usage(stdout); exit(0);
    case ':': bad_arg("option '%s' needs a value", argv[optind - 1]);
    default:
      if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) == 0) /* --sweep=3: a known one, with a value */
        bad_arg("option '%s' takes no value", argv[optind - 1]);
      if (optopt != 0) bad_arg("unknown option '-%c'", optopt);
      bad_arg("unknown option '%s'", argv[optind - 1]);
    }
  }
  for (int i = optind; i < argc; i++) {
    if (have_coll) bad_arg("unexpected argument '%s'", argv[i]);
    if (o->soak_seconds > 0)
      bad_arg("--soak runs all five collectives at random: drop '%s' (or drop --soak to measure it)", argv[i]);
    bool found = false;
    for (size_t k = 0; k < sizeof coll_names / sizeof coll_names[0]; k++) {
      if (strcasecmp(coll_names[k].name, argv[i]) == 0) {
        o->coll = coll_names[k].coll;
        found = true;
      }
    }
    if (!found) bad_arg("unknown collective '%s' (" COLL_LIST ")", argv[i]);
    have_coll = true;
  }
  if (o->gpu && (o->sweep || o->soak_seconds > 0))
    bad_arg("--gpu measures the size range only: drop --sweep or --soak");
  if (o->nplot_with > 0 && !o->plot) bad_arg("--plot-with draws into --plot's picture: give --plot FILE.png too");
  if (o->plot && o->soak_seconds > 0) bad_arg("--plot draws busbw against size; a --soak has no sizes: drop --plot");
  if (o->plot) perf_plot_default_json(o);
  if (o->soak_seconds > 0) {
    if (o->sweep) bad_arg("--sweep and --soak are different runs: give one of them");
    if (sweep_opt != 0)
      bad_arg("-%c does not apply to --soak, which draws collectives, sizes, datatypes, ops and roots at random",
              sweep_opt);
    if (!have_timeout)
      o->timeout = o->soak_seconds + SOAK_TIMEOUT_MARGIN;
    else if (o->timeout > 0 && o->timeout <= o->soak_seconds)
      bad_arg("-T %g would stop the ranks before the %g s soak ends: give -T more than --soak, or -T 0 for no limit",
              o->timeout, o->soak_seconds);
    return;
  }
  if (have_seed) bad_arg("--seed only applies to --soak");
  if (have_repeat && !o->sweep) bad_arg("--repeat only applies to --sweep");
  if (o->sweep && coll_p2p(o->coll))
    bad_arg("--sweep compares the library's algorithms; %s has none (it is point-to-point messages): drop --sweep",
            coll_name(o->coll));
  if (o->gpu && coll_p2p(o->coll))
    bad_arg("--gpu: tally-perf runs %s on host memory only: drop --gpu", coll_name(o->coll));
  if (o->sweep) take_algo_env(o, have_algo);
  if (!have_coll) bad_arg("missing COLLECTIVE (" COLL_LIST "), or --soak SECONDS");
  if (o->minbytes > o->maxbytes)
    bad_arg("-b %zu is larger than -e %zu", o->minbytes, o->maxbytes);
  if (o->stepbytes == 0 && o->minbytes == 0) bad_arg("-b 0 needs -i STEPBYTES (a size times a factor stays 0)");
  if (o->fork_ranks > 0 && coll_rooted(o->coll) && o->root >= o->fork_ranks)
    bad_arg("-r %d is not a rank of a %d-rank job", o->root, o->fork_ranks);
  if (o->fork_ranks == 1 && o->coll == COLL_SENDRECV)
    bad_arg("sendrecv ping-pongs between ranks 0 and 1: give -N 2 or more");
  if (tally_datatype_size(o->type) == 0) bad_arg("this build of Tally does not know the chosen datatype");
}