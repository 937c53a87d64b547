/* tally-perf: the collective benchmark. Speaks the nccl-tests command line and table format
 * (-b/-e/-f/-n/-w/-c/-d/-o/-r), times out-of-place and in-place runs of one collective over a
 * range of sizes, checks every result element, and can write the results as JSON. It runs
 * under a launcher (tally-run, mpirun, srun, torchrun), or forks its own local ranks with -N.
 * Uses only the public API in tally.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "tally.h"

/* ---------------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------------- */

typedef enum { COLL_ALLREDUCE, COLL_ALLGATHER, COLL_REDUCESCATTER, COLL_BROADCAST, COLL_REDUCE } coll_t;

static const struct {
  const char *name;
  coll_t coll;
} coll_names[] = {
    {"allreduce", COLL_ALLREDUCE},         {"all_reduce", COLL_ALLREDUCE},
    {"allgather", COLL_ALLGATHER},         {"all_gather", COLL_ALLGATHER},
    {"reducescatter", COLL_REDUCESCATTER}, {"reduce_scatter", COLL_REDUCESCATTER},
    {"broadcast", COLL_BROADCAST},         {"bcast", COLL_BROADCAST},
    {"reduce", COLL_REDUCE},
};

static const char *coll_name(coll_t c) {
  switch (c) {
  case COLL_ALLREDUCE: return "allreduce";
  case COLL_ALLGATHER: return "allgather";
  case COLL_REDUCESCATTER: return "reducescatter";
  case COLL_BROADCAST: return "broadcast";
  case COLL_REDUCE: return "reduce";
  }
  return "?";
}

static bool coll_reduces(coll_t c) { return c == COLL_ALLREDUCE || c == COLL_REDUCESCATTER || c == COLL_REDUCE; }
static bool coll_rooted(coll_t c) { return c == COLL_BROADCAST || c == COLL_REDUCE; }

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
  double timeout;  /* -T, seconds, for -N; 0: none */
  const char *json;
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: tally-perf COLLECTIVE [options]\n"
          "\n"
          "COLLECTIVE: allreduce, allgather, reducescatter, broadcast or reduce.\n"
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
          "  -r, --root R            root rank of broadcast and reduce (default 0)\n"
          "  -N, --nranks N          fork N local ranks instead of using a launcher\n"
          "  -T, --timeout SECONDS   with -N: kill the ranks after this long (default 600, 0: never)\n"
          "  -J, --json FILE         also write the results to FILE as JSON\n"
          "  -h, --help              show this message\n"
          "\n"
          "SIZE takes a K, M or G suffix (powers of 1024). Sizes are whole-buffer bytes as in\n"
          "nccl-tests: the receive buffer of allgather and the send buffer of reducescatter.\n"
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

static void parse_args(int argc, char **argv, struct options *o) {
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
  bool have_coll = false;

  static const struct option longopts[] = {
      {"minbytes", required_argument, NULL, 'b'},   {"maxbytes", required_argument, NULL, 'e'},
      {"stepfactor", required_argument, NULL, 'f'}, {"stepbytes", required_argument, NULL, 'i'},
      {"iters", required_argument, NULL, 'n'},      {"warmup_iters", required_argument, NULL, 'w'},
      {"check", required_argument, NULL, 'c'},      {"datatype", required_argument, NULL, 'd'},
      {"op", required_argument, NULL, 'o'},         {"root", required_argument, NULL, 'r'},
      {"nranks", required_argument, NULL, 'N'},     {"timeout", required_argument, NULL, 'T'},
      {"json", required_argument, NULL, 'J'},       {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":b:e:f:i:n:w:c:d:o:r:N:T:J:h", longopts, NULL)) != -1) {
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
    case 'T': {
      char *end = NULL;
      errno = 0;
      o->timeout = strtod(optarg, &end);
      if (optarg[0] == '\0' || *end != '\0' || errno != 0 || !(o->timeout >= 0))
        bad_arg("-T needs a number of seconds, not '%s'", optarg);
      break;
    }
    case 'J': o->json = optarg; break;
    case 'h': usage(stdout); exit(0);
    case ':': bad_arg("option '%s' needs a value", argv[optind - 1]);
    default:
      if (optopt != 0) bad_arg("unknown option '-%c'", optopt);
      bad_arg("unknown option '%s'", argv[optind - 1]);
    }
  }
  for (int i = optind; i < argc; i++) {
    if (have_coll) bad_arg("unexpected argument '%s'", argv[i]);
    bool found = false;
    for (size_t k = 0; k < sizeof coll_names / sizeof coll_names[0]; k++) {
      if (strcasecmp(coll_names[k].name, argv[i]) == 0) {
        o->coll = coll_names[k].coll;
        found = true;
      }
    }
    if (!found) bad_arg("unknown collective '%s' (allreduce allgather reducescatter broadcast reduce)", argv[i]);
    have_coll = true;
  }
  if (!have_coll) bad_arg("missing COLLECTIVE (allreduce allgather reducescatter broadcast reduce)");
  if (o->minbytes > o->maxbytes)
    bad_arg("-b %zu is larger than -e %zu", o->minbytes, o->maxbytes);
  if (o->stepbytes == 0 && o->minbytes == 0) bad_arg("-b 0 needs -i STEPBYTES (a size times a factor stays 0)");
  if (o->fork_ranks > 0 && coll_rooted(o->coll) && o->root >= o->fork_ranks)
    bad_arg("-r %d is not a rank of a %d-rank job", o->root, o->fork_ranks);
  if (tally_datatype_size(o->type) == 0) bad_arg("this build of Tally does not know the chosen datatype");
}

/* ---------------------------------------------------------------------------------------------
 * Element access: every check value is a small integer, stored in and read from any datatype.
 * ------------------------------------------------------------------------------------------- */

static uint16_t half_from_float(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    unsigned shift = (unsigned)(14 - e);
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry rounds up into the exponent */
  return (uint16_t)(sign | h);
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
  if (exp == 0) {
    float f = (float)mant * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  if (exp == 31)
    x = sign | 0x7f800000 | (mant << 13);
  else
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

static uint16_t bf16_from_float(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

static float bf16_to_float(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

/* Stores v with the datatype's own conversion (integers wrap like the library's arithmetic). */
static void store(tally_datatype_t t, void *buf, size_t i, int64_t v) {
  switch (t) {
  case TALLY_INT8: ((int8_t *)buf)[i] = (int8_t)(uint8_t)v; break;
  case TALLY_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
  case TALLY_INT32: ((int32_t *)buf)[i] = (int32_t)(uint32_t)v; break;
  case TALLY_UINT32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
  case TALLY_INT64: ((int64_t *)buf)[i] = v; break;
  case TALLY_UINT64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
  case TALLY_FLOAT16: ((uint16_t *)buf)[i] = half_from_float((float)v); break;
  case TALLY_BFLOAT16: ((uint16_t *)buf)[i] = bf16_from_float((float)v); break;
  case TALLY_FLOAT32: ((float *)buf)[i] = (float)v; break;
  case TALLY_FLOAT64: ((double *)buf)[i] = (double)v; break;
  default: break;
  }
}

static double load(tally_datatype_t t, const void *buf, size_t i) {
  switch (t) {
  case TALLY_INT8: return ((const int8_t *)buf)[i];
  case TALLY_UINT8: return ((const uint8_t *)buf)[i];
  case TALLY_INT32: return ((const int32_t *)buf)[i];
  case TALLY_UINT32: return ((const uint32_t *)buf)[i];
  case TALLY_INT64: return (double)((const int64_t *)buf)[i];
  case TALLY_UINT64: return (double)((const uint64_t *)buf)[i];
  case TALLY_FLOAT16: return half_to_float(((const uint16_t *)buf)[i]);
  case TALLY_BFLOAT16: return bf16_to_float(((const uint16_t *)buf)[i]);
  case TALLY_FLOAT32: return ((const float *)buf)[i];
  case TALLY_FLOAT64: return ((const double *)buf)[i];
  default: return -1e300; /* never equal to an expected value */
  }
}

static bool is_float_type(tally_datatype_t t) {
  return t == TALLY_FLOAT16 || t == TALLY_BFLOAT16 || t == TALLY_FLOAT32 || t == TALLY_FLOAT64;
}

/* ---------------------------------------------------------------------------------------------
 * Check data. Input element i of rank r is input_value(r, i); every partial and full result is
 * an integer small enough to be exact in every datatype, so the expected result is exact
 * whatever order the library reduces in. Limits: sum is exact up to 42 ranks in int8 and 85 in
 * bfloat16; avg up to 31 ranks in int8 and 64 in bfloat16; prod, min and max at any size.
 * ------------------------------------------------------------------------------------------- */

struct check_ctx {
  coll_t coll;
  tally_op_t op;
  int nranks;
  int root;
};

static int64_t input_value(const struct check_ctx *c, int r, size_t i) {
  size_t n = (size_t)c->nranks;
  if (!coll_reduces(c->coll)) return (int64_t)((i + 3 * (size_t)r) % 101);
  switch (c->op) {
  case TALLY_SUM: return (int64_t)(((size_t)r + i) & 3);
  case TALLY_PROD: return (size_t)r == i % n ? (int64_t)(1 + i % 3) : 1;
  case TALLY_MIN:
  case TALLY_MAX: return (int64_t)(((size_t)r + i) % 101);
  case TALLY_AVG: return (int64_t)(i & 3) + ((size_t)r == i % n ? (int64_t)n : 0);
  default: return 0;
  }
}

/* The reduction of input_value(r, i) over all ranks, in closed form. */
static int64_t reduced_value(const struct check_ctx *c, size_t i) {
  size_t n = (size_t)c->nranks;
  switch (c->op) {
  case TALLY_SUM: {
    int64_t s = (int64_t)(n / 4) * 6; /* each full cycle of 4 ranks adds 0+1+2+3 */
    for (size_t k = 0; k < n % 4; k++) s += (int64_t)((k + i) & 3);
    return s;
  }
  case TALLY_PROD: return (int64_t)(1 + i % 3);
  case TALLY_MIN:
  case TALLY_MAX: {
    size_t a = i % 101;
    bool wraps = n >= 101 || a + n - 1 > 100;
    if (c->op == TALLY_MIN) return wraps ? 0 : (int64_t)a;
    return wraps ? 100 : (int64_t)(a + n - 1);
  }
  case TALLY_AVG: return (int64_t)(i & 3) + 1;
  default: return 0;
  }
}

/* ---------------------------------------------------------------------------------------------
 * One rank's benchmark.
 * ------------------------------------------------------------------------------------------- */

struct place_result {
  double time_us, algbw, busbw;
  uint64_t wrong;
};

struct row {
  size_t bytes, count;
  struct place_result place[2]; /* 0: out-of-place, 1: in-place */
};

struct bench {
  const struct options *o;
  tally_comm_t comm;
  int rank, nranks;
  size_t tsize;
  char *sbuf, *rbuf;
  size_t count;  /* the count argument of the call */
  size_t bytes;  /* the buffer size the row reports */
  size_t send_elems, recv_elems;
};

static void fail(const struct bench *b, tally_result_t r) {
  fprintf(stderr, "tally-perf: rank %d: %s: %s\n", b->rank, tally_result_string(r), tally_comm_last_error(b->comm));
  fflush(stderr);
  exit(1);
}

#define TRY(b, call)                                                                                               \
  do {                                                                                                             \
    tally_result_t try_r_ = (call);                                                                                \
    if (try_r_ != TALLY_SUCCESS) fail((b), try_r_);                                                         \
  } while (0)

static void place_buffers(const struct bench *b, int inplace, char **send, char **recv) {
  if (!inplace) {
    *send = b->sbuf;
    *recv = b->rbuf;
    return;
  }
  switch (b->o->coll) {
  case COLL_ALLGATHER:
    *recv = b->rbuf;
    *send = b->rbuf + (size_t)b->rank * b->count * b->tsize;
    break;
  case COLL_REDUCESCATTER:
    *send = b->rbuf;
    *recv = b->rbuf + (size_t)b->rank * b->count * b->tsize;
    break;
  default:
    *send = *recv = b->rbuf;
    break;
  }
}

static tally_result_t run_once(const struct bench *b, const void *send, void *recv) {
  const struct options *o = b->o;
  switch (o->coll) {
  case COLL_ALLREDUCE: return tally_allreduce(send, recv, b->count, o->type, o->op, b->comm, NULL);
  case COLL_ALLGATHER: return tally_allgather(send, recv, b->count, o->type, b->comm, NULL);
  case COLL_REDUCESCATTER: return tally_reduce_scatter(send, recv, b->count, o->type, o->op, b->comm, NULL);
  case COLL_BROADCAST: return tally_broadcast(send, recv, b->count, o->type, o->root, b->comm, NULL);
  case COLL_REDUCE: return tally_reduce(send, recv, b->count, o->type, o->op, o->root, b->comm, NULL);
  }
  return TALLY_ERR_INTERNAL;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Fills the inputs, runs the collective once and counts this rank's wrong result elements. */
static uint64_t check_place(const struct bench *b, int inplace) {
  const struct options *o = b->o;
  struct check_ctx c = {o->coll, o->op, b->nranks, o->root};
  char *send, *recv;
  place_buffers(b, inplace, &send, &recv);
  /* Poison the whole receive area first; in place, the input written next overlays it. */
  memset(recv, 0xA5, b->recv_elems * b->tsize);
  for (size_t i = 0; i < b->send_elems; i++) store(o->type, send, i, input_value(&c, b->rank, i));
  TRY(b, run_once(b, send, recv));

  if (o->coll == COLL_REDUCE && b->rank != o->root) return 0; /* only the root gets a result */
  bool tolerant = o->op == TALLY_AVG && is_float_type(o->type) && coll_reduces(o->coll);
  double tol = o->type == TALLY_FLOAT64 ? 1e-12 : o->type == TALLY_FLOAT32 ? 1e-6 : 1e-2;
  uint64_t wrong = 0;
  for (size_t j = 0; j < b->recv_elems; j++) {
    int64_t want;
    switch (o->coll) {
    case COLL_ALLREDUCE:
    case COLL_REDUCE: want = reduced_value(&c, j); break;
    case COLL_REDUCESCATTER: want = reduced_value(&c, (size_t)b->rank * b->count + j); break;
    case COLL_ALLGATHER: want = input_value(&c, (int)(j / (b->count ? b->count : 1)), j % (b->count ? b->count : 1)); break;
    case COLL_BROADCAST: want = input_value(&c, o->root, j); break;
    default: want = 0; break;
    }
    /* Round the expectation through the datatype so that integer wraparound matches. */
    char tmp[8];
    store(o->type, tmp, 0, want);
    double w = load(o->type, tmp, 0), got = load(o->type, recv, j);
    double diff = got > w ? got - w : w - got, scale = w > 1.0 ? w : w < -1.0 ? -w : 1.0;
    bool ok = tolerant ? diff <= tol * scale : got == w; /* a NaN is never ok */
    if (!ok) wrong++;
  }
  return wrong;
}

/* Times ITERS calls after WARMUP untimed ones. Each rank measures its own average; the row
 * reports the slowest rank's (a MAX allreduce), so an imbalanced rank is not averaged away.
 * nccl-tests averages over ranks instead; for the blocking host collectives here the two agree
 * closely. */
static double time_place(const struct bench *b, int inplace) {
  char *send, *recv;
  place_buffers(b, inplace, &send, &recv);
  for (int i = 0; i < b->o->warmup; i++) TRY(b, run_once(b, send, recv));
  TRY(b, tally_barrier(b->comm, NULL));
  double t0 = now_seconds();
  for (int i = 0; i < b->o->iters; i++) TRY(b, run_once(b, send, recv));
  double local = (now_seconds() - t0) / b->o->iters * 1e6, slowest = 0;
  TRY(b, tally_allreduce(&local, &slowest, 1, TALLY_FLOAT64, TALLY_MAX, b->comm, NULL));
  return slowest;
}

static double bus_factor(coll_t c, int n) {
  switch (c) {
  case COLL_ALLREDUCE: return 2.0 * (n - 1) / n;
  case COLL_ALLGATHER:
  case COLL_REDUCESCATTER: return (double)(n - 1) / n;
  default: return 1.0;
  }
}

static void format_time(char *buf, size_t len, double us) {
  if (us >= 10000.0)
    snprintf(buf, len, "%7.0f", us);
  else if (us >= 100.0)
    snprintf(buf, len, "%7.1f", us);
  else
    snprintf(buf, len, "%7.2f", us);
}

static void print_header(const struct bench *b) {
  const struct options *o = b->o;
  int version = 0;
  tally_get_version(&version);
  printf("# Tally tally-perf: %s, %d rank%s, minBytes %zu maxBytes %zu step: ", coll_name(o->coll), b->nranks,
         b->nranks == 1 ? "" : "s", o->minbytes, o->maxbytes);
  if (o->stepbytes)
    printf("%zu(bytes)", o->stepbytes);
  else
    printf("%zu(factor)", o->factor);
  printf(" warmup iters: %d iters: %d validation: %d\n", o->warmup, o->iters, o->check);
  printf("# Tally version %d.%d.%d, datatype %s, op %s", version / 10000, version / 100 % 100, version % 100,
         tally_datatype_name(o->type), coll_reduces(o->coll) ? tally_op_name(o->op) : "none");
  if (coll_rooted(o->coll)) printf(", root %d", o->root);
  printf("\n#\n");
}

static void print_ranks(const struct bench *b) {
  enum { REC = 96 };
  char mine[REC];
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  memset(mine, 0, sizeof mine);
  snprintf(mine, sizeof mine, "%ld %s", (long)getpid(), host);
  char *all = malloc((size_t)b->nranks * REC);
  if (all == NULL) {
    fprintf(stderr, "tally-perf: rank %d: out of memory\n", b->rank);
    exit(1);
  }
  TRY(b, tally_allgather(mine, all, REC, TALLY_UINT8, b->comm, NULL));
  if (b->rank == 0) {
    printf("# Using ranks\n");
    for (int r = 0; r < b->nranks; r++) {
      char *rec = all + (size_t)r * REC;
      rec[REC - 1] = '\0';
      char *sp = strchr(rec, ' ');
      printf("#  Rank %2d Pid %7.*s on %s\n", r, sp ? (int)(sp - rec) : 0, rec, sp ? sp + 1 : rec);
    }
    printf("#\n");
  }
  free(all);
}

static void print_table_header(void) {
  static const char *const place[2] = {"     time   algbw   busbw #wrong", "     (us)  (GB/s)  (GB/s)       "};
  printf("#%61s%s%22s%s\n", "", "out-of-place", "", "in-place");
  printf("#%11s  %12s  %8s  %6s  %6s%s%s\n", "size", "count", "type", "redop", "root", place[0], place[0]);
  printf("#%11s  %12s  %8s  %6s  %6s%s%s\n", "(B)", "(elements)", "", "", "", place[1], place[1]);
}

static void print_row(const struct bench *b, const struct row *row) {
  const struct options *o = b->o;
  printf("%12zu  %12zu  %8s  %6s  %6d", row->bytes, row->count, tally_datatype_name(o->type),
         coll_reduces(o->coll) ? tally_op_name(o->op) : "none", coll_rooted(o->coll) ? o->root : -1);
  for (int p = 0; p < 2; p++) {
    char t[32], w[32];
    format_time(t, sizeof t, row->place[p].time_us);
    if (o->check)
      snprintf(w, sizeof w, "%llu", (unsigned long long)row->place[p].wrong);
    else
      snprintf(w, sizeof w, "N/A");
    printf("  %7s  %6.2f  %6.2f  %5s", t, row->place[p].algbw, row->place[p].busbw, w);
  }
  printf("\n");
  fflush(stdout);
}

static void write_json(FILE *f, const struct bench *b, const struct row *rows, size_t nrows, uint64_t wrong,
                       double avg_busbw) {
  const struct options *o = b->o;
  fprintf(f, "{\n  \"tool\": \"tally-perf\",\n  \"collective\": \"%s\",\n  \"nranks\": %d,\n", coll_name(o->coll),
          b->nranks);
  fprintf(f, "  \"datatype\": \"%s\",\n  \"op\": \"%s\",\n  \"root\": %d,\n", tally_datatype_name(o->type),
          coll_reduces(o->coll) ? tally_op_name(o->op) : "none", coll_rooted(o->coll) ? o->root : -1);
  fprintf(f, "  \"iters\": %d,\n  \"warmup_iters\": %d,\n  \"check\": %s,\n  \"rows\": [", o->iters, o->warmup,
          o->check ? "true" : "false");
  for (size_t i = 0; i < nrows; i++) {
    fprintf(f, "%s\n    {\"bytes\": %zu, \"count\": %zu", i ? "," : "", rows[i].bytes, rows[i].count);
    for (int p = 0; p < 2; p++) {
      const struct place_result *r = &rows[i].place[p];
      fprintf(f, ", \"%s\": {\"time_us\": %.3f, \"algbw\": %.6f, \"busbw\": %.6f, \"wrong\": ",
              p ? "in_place" : "out_of_place", r->time_us, r->algbw, r->busbw);
      if (o->check)
        fprintf(f, "%llu}", (unsigned long long)r->wrong);
      else
        fprintf(f, "null}");
    }
    fprintf(f, "}");
  }
  fprintf(f, "\n  ],\n  \"wrong\": ");
  if (o->check)
    fprintf(f, "%llu", (unsigned long long)wrong);
  else
    fprintf(f, "null");
  fprintf(f, ",\n  \"avg_busbw\": %.6f\n}\n", avg_busbw);
}

static void *alloc_buffer(const struct bench *b, size_t bytes) {
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

/* run_rank's status when the job ran to the end but some results were wrong. Forked ranks
 * report it to the parent, which then lets the others finish; otherwise it becomes 1. */
#define STATUS_WRONG 3

/* Runs the benchmark on an initialized communicator; returns the process exit status. */
static int run_rank(tally_comm_t comm, const struct options *o) {
  struct bench b;
  memset(&b, 0, sizeof b);
  b.o = o;
  b.comm = comm;
  b.rank = -1;
  TRY(&b, tally_comm_rank(comm, &b.rank));
  TRY(&b, tally_comm_size(comm, &b.nranks));
  b.tsize = tally_datatype_size(o->type);
  if (coll_rooted(o->coll) && o->root >= b.nranks) {
    if (b.rank == 0) fprintf(stderr, "tally-perf: -r %d is not a rank of this %d-rank job\n", o->root, b.nranks);
    tally_comm_destroy(comm);
    return 2;
  }

  /* Rank 0 opens the JSON file before any work; every rank learns whether that worked. */
  FILE *json = NULL;
  int32_t json_bad = 0, any_bad = 0;
  if (b.rank == 0 && o->json != NULL) {
    json = fopen(o->json, "w");
    if (json == NULL) {
      fprintf(stderr, "tally-perf: cannot write %s: %s\n", o->json, strerror(errno));
      json_bad = 1;
    }
  }
  TRY(&b, tally_allreduce(&json_bad, &any_bad, 1, TALLY_INT32, TALLY_MAX, comm, NULL));
  if (any_bad) {
    tally_comm_destroy(comm);
    return 1;
  }

  b.sbuf = alloc_buffer(&b, o->maxbytes);
  b.rbuf = alloc_buffer(&b, o->maxbytes);

  if (b.rank == 0) print_header(&b);
  print_ranks(&b);
  if (b.rank == 0) print_table_header();

  struct row *rows = NULL;
  size_t nrows = 0, cap = 0;
  uint64_t total_wrong = 0;
  double bw_sum = 0;
  int bw_count = 0;
  double factor = bus_factor(o->coll, b.nranks);

  for (size_t size = o->minbytes; size <= o->maxbytes;) {
    size_t elems = size / b.tsize, n = (size_t)b.nranks;
    switch (o->coll) {
    case COLL_ALLGATHER:
      b.count = elems / n;
      b.send_elems = b.count;
      b.recv_elems = b.count * n;
      b.bytes = b.recv_elems * b.tsize;
      break;
    case COLL_REDUCESCATTER:
      b.count = elems / n;
      b.send_elems = b.count * n;
      b.recv_elems = b.count;
      b.bytes = b.send_elems * b.tsize;
      break;
    default:
      b.count = b.send_elems = b.recv_elems = elems;
      b.bytes = elems * b.tsize;
      break;
    }
    struct row row;
    memset(&row, 0, sizeof row);
    row.bytes = b.bytes;
    row.count = b.count; /* the count passed to the call, as nccl-tests prints it */
    TRY(&b, tally_barrier(comm, NULL));
    for (int p = 0; p < 2; p++) {
      struct place_result *r = &row.place[p];
      r->time_us = time_place(&b, p);
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
    size_t next = o->stepbytes ? size + o->stepbytes : size * o->factor;
    if (next <= size) break; /* overflow */
    size = next;
  }

  double avg = bw_count ? bw_sum / bw_count : 0;
  if (b.rank == 0) {
    if (o->check)
      printf("# Out of bounds values : %llu %s\n", (unsigned long long)total_wrong, total_wrong ? "FAILED" : "OK");
    else
      printf("# Out of bounds values : N/A (run with -c 1 to check)\n");
    printf("# Avg bus bandwidth    : %g \n#\n", avg);
    fflush(stdout);
    if (json != NULL) {
      write_json(json, &b, rows, nrows, total_wrong, avg);
      if (fclose(json) != 0) {
        fprintf(stderr, "tally-perf: cannot write %s: %s\n", o->json, strerror(errno));
        json_bad = 1;
      }
    }
  }
  free(rows);
  /* Nobody exits before rank 0 has printed: a launcher stops the job at the first non-zero exit. */
  TRY(&b, tally_barrier(comm, NULL));
  TRY(&b, tally_comm_destroy(comm));
  free(b.sbuf);
  free(b.rbuf);
  if (json_bad) return 1;
  return total_wrong != 0 ? STATUS_WRONG : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Starting ranks.
 * ------------------------------------------------------------------------------------------- */

static void init_fail(int rank, tally_result_t r, tally_comm_t comm) {
  if (rank >= 0)
    fprintf(stderr, "tally-perf: rank %d: %s: %s\n", rank, tally_result_string(r), tally_comm_last_error(comm));
  else
    fprintf(stderr, "tally-perf: %s: %s\n", tally_result_string(r), tally_comm_last_error(comm));
  fflush(stderr);
  exit(1);
}

static bool launcher_env_present(void) {
  static const char *vars[] = {"TALLY_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i]) != NULL) return true;
  return false;
}

static int env_rank_guess(void) {
  static const char *vars[] = {"TALLY_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v != NULL && v[0] != '\0') return atoi(v);
  }
  return -1;
}

static bool read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

static bool write_full(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

/* The body of one forked rank: rank 0 makes the unique id and hands it to the others over
 * the pipe (N-1 copies of 128 bytes; each write is atomic because it is under PIPE_BUF). */
static int forked_rank(int rank, int nranks, int pipefd[2], const struct options *o) {
  tally_unique_id_t id;
  tally_comm_t comm = NULL;
  if (rank == 0) {
    close(pipefd[0]);
    tally_result_t r = tally_get_unique_id(&id);
    if (r != TALLY_SUCCESS) init_fail(rank, r, NULL);
    for (int i = 1; i < nranks; i++) {
      if (!write_full(pipefd[1], &id, sizeof id)) {
        fprintf(stderr, "tally-perf: rank 0: cannot pass the unique id to the other ranks: %s\n", strerror(errno));
        return 1;
      }
    }
    close(pipefd[1]);
  } else {
    close(pipefd[1]);
    if (!read_full(pipefd[0], &id, sizeof id)) {
      fprintf(stderr, "tally-perf: rank %d: rank 0 exited before passing the unique id\n", rank);
      return 1;
    }
    close(pipefd[0]);
  }
  tally_result_t r = tally_comm_init_rank(&comm, nranks, id, rank);
  if (r != TALLY_SUCCESS) init_fail(rank, r, comm);
  return run_rank(comm, o);
}

static void kill_all(pid_t *pids, const bool *alive, int n, int sig) {
  for (int i = 0; i < n; i++)
    if (alive[i]) kill(pids[i], sig);
}

static int run_forked(const struct options *o) {
  int n = o->fork_ranks;
  int pipefd[2];
  if (pipe(pipefd) != 0) {
    fprintf(stderr, "tally-perf: pipe: %s\n", strerror(errno));
    return 1;
  }
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  bool *alive = calloc((size_t)n, sizeof *alive);
  if (pids == NULL || alive == NULL) {
    fprintf(stderr, "tally-perf: out of memory\n");
    return 1;
  }
  pid_t parent = getpid();
  fflush(NULL);
  for (int r = 0; r < n; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "tally-perf: cannot start rank %d: fork: %s\n", r, strerror(errno));
      kill_all(pids, alive, r, SIGKILL);
      while (wait(NULL) > 0) {}
      return 1;
    }
    if (pid == 0) {
#ifdef __linux__
      prctl(PR_SET_PDEATHSIG, SIGKILL); /* do not outlive the parent */
      if (getppid() != parent) _exit(1);
#else
      (void)parent;
#endif
      free(pids);
      free(alive);
      int status = forked_rank(r, n, pipefd, o);
      fflush(NULL);
      exit(status);
    }
    pids[r] = pid;
    alive[r] = true;
  }
  close(pipefd[0]);
  close(pipefd[1]);

  int running = n, result = 0;
  bool stopping = false, killed = false;
  double start = now_seconds(), kill_at = 0;
  while (running > 0) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid > 0) {
      int r = -1;
      for (int i = 0; i < n; i++)
        if (alive[i] && pids[i] == pid) r = i;
      if (r < 0) continue;
      alive[r] = false;
      running--;
      if (WIFEXITED(status) && WEXITSTATUS(status) == STATUS_WRONG) {
        if (result == 0) result = 1; /* rank 0 has reported the wrong elements */
        continue;
      }
      bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      if (failed && result == 0) {
        result = WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1;
        if (WIFEXITED(status))
          fprintf(stderr, "tally-perf: rank %d (pid %ld) exited with status %d%s\n", r, (long)pid,
                  WEXITSTATUS(status), running ? "; stopping the other ranks" : "");
        else
          fprintf(stderr, "tally-perf: rank %d (pid %ld) was killed by signal %d (%s)%s\n", r, (long)pid,
                  WTERMSIG(status), strsignal(WTERMSIG(status)), running ? "; stopping the other ranks" : "");
      }
      if (failed && !stopping && running > 0) {
        stopping = true;
        kill_all(pids, alive, n, SIGTERM);
        kill_at = now_seconds() + 3;
      }
      continue;
    }
    double now = now_seconds();
    if (!stopping && o->timeout > 0 && now - start > o->timeout) {
      fprintf(stderr, "tally-perf: %d rank(s) still running after the %g s timeout (-T); stopping them\n", running,
              o->timeout);
      result = 1;
      stopping = true;
      kill_all(pids, alive, n, SIGTERM);
      kill_at = now + 3;
    }
    if (stopping && !killed && now >= kill_at) {
      kill_all(pids, alive, n, SIGKILL);
      killed = true;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  free(pids);
  free(alive);
  return result;
}

int main(int argc, char **argv) {
  struct options o;
  parse_args(argc, argv, &o);
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (o.fork_ranks > 1) return run_forked(&o);

  tally_comm_t comm = NULL;
  tally_result_t r;
  if (o.fork_ranks == 0 && launcher_env_present()) {
    r = tally_comm_init_env(&comm);
    if (r != TALLY_SUCCESS) init_fail(env_rank_guess(), r, comm);
  } else {
    /* One rank, no launcher: host the root here. */
    tally_unique_id_t id;
    r = tally_get_unique_id(&id);
    if (r != TALLY_SUCCESS) init_fail(0, r, NULL);
    r = tally_comm_init_rank(&comm, 1, id, 0);
    if (r != TALLY_SUCCESS) init_fail(0, r, comm);
  }
  int status = run_rank(comm, &o);
  return status == STATUS_WRONG ? 1 : status;
}
