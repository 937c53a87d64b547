/* perf_check.c: result checking. Fills every rank's inputs with small integers, computes the
 * exact expected result of each collective in closed form, and counts the wrong elements (and,
 * for the soak, input elements a call changed). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

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
 * bfloat16; avg up to 31 ranks in int8 and 64 in bfloat16; prod, min and max at any size
 * (check_data_exact says which). Values depend on i through its key i % 101 (and, for prod and
 * avg, i % nranks), and every result varies along the buffer whatever the number of ranks, so
 * that a block of the result taken from the wrong place reads wrong.
 * ------------------------------------------------------------------------------------------- */

enum { KEY_PERIOD = 101 }; /* a prime: no chunk or block size of a power of two is a multiple */

struct check_ctx {
  coll_t coll;
  tally_op_t op;
  int nranks;
  int root;
  int source; /* sendrecv: the rank whose input this rank receives */
};

/* The context of this rank's check; `inplace` says which call's result it is. sendrecv's rank 1
 * receives rank 0's input; rank 0 receives rank 1's, or in place its own back (rank 1 sends what
 * it received). */
static struct check_ctx check_context(const struct bench *b, bool inplace) {
  const struct options *o = b->o;
  struct check_ctx c = {o->coll, o->op, b->nranks, o->root, 0};
  if (o->coll == COLL_SENDRECV && b->rank == 0 && !inplace) c.source = 1;
  return c;
}

/* Rank r's sum input, 0..3: digit r % 3 (base 4) of the key. */
static int64_t key_digit(size_t key, size_t r) { return (int64_t)((key >> (2 * (r % 3))) & 3); }

/* 0..3, the same on every rank: all three digits of the key mixed. */
static int64_t key_mix(size_t key) { return (int64_t)((key ^ (key >> 2) ^ (key >> 4)) & 3); }

static int64_t input_value(const struct check_ctx *c, int r, size_t i) {
  size_t n = (size_t)c->nranks, key = i % KEY_PERIOD;
  if (!coll_reduces(c->coll)) return (int64_t)((key + 3 * (size_t)r) % KEY_PERIOD);
  switch (c->op) {
  case TALLY_SUM: return key_digit(key, (size_t)r);
  case TALLY_PROD: return (size_t)r == i % n ? 1 + key_mix(key) % 3 : 1; /* one rank's 1..3, the others' 1 */
  case TALLY_MIN:
  case TALLY_MAX: return (int64_t)(((size_t)r + key) % KEY_PERIOD);
  case TALLY_AVG: return key_mix(key) + ((size_t)r == i % n ? (int64_t)n : 0); /* sums to n * (mix + 1) */
  default: return 0;
  }
}

/* The reduction of input_value(r, i) over all ranks, in closed form. */
static int64_t reduced_value(const struct check_ctx *c, size_t i) {
  size_t n = (size_t)c->nranks, key = i % KEY_PERIOD;
  switch (c->op) {
  case TALLY_SUM: {
    int64_t s = 0; /* digit d of the key from each rank r with r % 3 == d */
    for (size_t d = 0; d < 3; d++) s += (int64_t)(n / 3 + (d < n % 3)) * key_digit(key, d);
    return s;
  }
  case TALLY_PROD: return 1 + key_mix(key) % 3;
  case TALLY_MIN:
  case TALLY_MAX: {
    bool wraps = n >= KEY_PERIOD || key + n - 1 >= KEY_PERIOD;
    if (c->op == TALLY_MIN) return wraps ? 0 : (int64_t)key;
    return wraps ? KEY_PERIOD - 1 : (int64_t)(key + n - 1);
  }
  case TALLY_AVG: return key_mix(key) + 1;
  default: return 0;
  }
}

/* input_value and reduced_value repeat every check_period(nranks) elements. */
static size_t check_period(int nranks) {
  size_t a = KEY_PERIOD, b = (size_t)nranks;
  while (b != 0) { /* a becomes gcd(KEY_PERIOD, nranks) */
    size_t t = a % b;
    a = b;
    b = t;
  }
  return KEY_PERIOD / a * (size_t)nranks;
}

/* Element j of what this rank's buffer must hold: its result, or (when `inputs`) its input. */
static int64_t wanted_value(const struct check_ctx *c, const struct bench *b, bool inputs, size_t j) {
  if (inputs) return input_value(c, b->rank, j);
  switch (c->coll) {
  case COLL_ALLREDUCE:
  case COLL_REDUCE: return reduced_value(c, j);
  case COLL_REDUCESCATTER: return reduced_value(c, (size_t)b->rank * b->count + j);
  case COLL_ALLGATHER:
  case COLL_GATHER: return input_value(c, (int)(j / b->count), j % b->count);
  case COLL_BROADCAST: return input_value(c, c->root, j);
  case COLL_SENDRECV: return input_value(c, c->source, j);
  case COLL_ALLTOALL: return input_value(c, (int)(j / b->count), (size_t)b->rank * b->count + j % b->count);
  case COLL_SCATTER: return input_value(c, c->root, (size_t)b->rank * b->count + j);
  }
  return 0;
}

/* The largest value up to which the datatype holds every non-negative integer exactly. */
static int64_t exact_limit(tally_datatype_t t) {
  switch (t) {
  case TALLY_INT8: return INT8_MAX;
  case TALLY_UINT8: return UINT8_MAX;
  case TALLY_FLOAT16: return 2048;
  case TALLY_BFLOAT16: return 256;
  case TALLY_FLOAT32: return (int64_t)1 << 24;
  default: return INT32_MAX; /* 32- and 64-bit integers, double: far above any check value */
  }
}

/* Whether every input, partial and full result of the check data is exact in `type` on `nranks`
 * ranks, so that results can be compared exactly whatever order the library reduces in. */
bool check_data_exact(coll_t coll, tally_datatype_t type, tally_op_t op, int nranks) {
  int64_t n = nranks, largest = KEY_PERIOD - 1; /* inputs of min, max and the data movers */
  if (coll_reduces(coll)) {
    if (op == TALLY_SUM) largest = 3 * n;     /* n inputs of at most 3 */
    if (op == TALLY_AVG) largest = 3 * n + n; /* the sum before the division */
    if (op == TALLY_PROD) largest = 3;        /* one input of at most 3, the rest 1 */
  }
  return largest <= exact_limit(type);
}

/* A buffer of at least `bytes`; exits with status 1 if memory is short. */
static void *check_alloc(const struct bench *b, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (p == NULL) {
    fprintf(stderr, "tally-perf: rank %d: out of memory for %zu bytes of check data\n", b->rank, bytes);
    exit(1);
  }
  return p;
}

/* Poisons the receive area, then writes this rank's inputs into `send` (in place the inputs
 * overlay part of the receive area, hence the order): one period element by element, then
 * copies of it. */
void fill_check_inputs(const struct bench *b, char *send, char *recv) {
  const struct options *o = b->o;
  struct check_ctx c = check_context(b, false);
  size_t period = check_period(b->nranks), first = b->send_elems < period ? b->send_elems : period;
  memset(recv, 0xA5, b->recv_elems * b->tsize);
  for (size_t i = 0; i < first; i++) store(o->type, send, i, input_value(&c, b->rank, i));
  for (size_t done = first; done < b->send_elems;) { /* done is a whole number of periods */
    size_t more = b->send_elems - done < done ? b->send_elems - done : done;
    memcpy(send + done * b->tsize, send, more * b->tsize);
    done += more;
  }
}

/* Counts the elements of `buf` that differ from wanted_value in context `c`. The buffer is
 * `segments` runs of `segment_elems` elements (allgather's, gather's and alltoall's result: one
 * per rank), and within a run the wanted values repeat every check_period elements: each run is
 * compared one period at a time with memcmp, and only a period that differs element by element,
 * as the datatype's values (float AVG within a relative tolerance when `tolerant`; a NaN never
 * matches). */
static uint64_t count_mismatches(const struct bench *b, const struct check_ctx *c, const char *buf, size_t segments,
                                 size_t segment_elems, bool inputs, bool tolerant) {
  const struct options *o = b->o;
  size_t period = check_period(b->nranks), stride = segment_elems < period ? segment_elems : period;
  double tol = o->type == TALLY_FLOAT64 ? 1e-12 : o->type == TALLY_FLOAT32 ? 1e-6 : 1e-2;
  /* --compress: float AVG within the format's bound (README, "Compression"): at most n + 1 roundings
   * of unit 2^-8 (bf16) or 2^-11 (fp16). Sums of the small-integer check data are exact in 16 bits,
   * and so are allgather's and broadcast's values: those are still compared exactly. */
  if (o->type == TALLY_FLOAT32 && o->compress) tol = (b->nranks + 1) * (o->compress == 1 ? 0x1p-8 : 0x1p-11);
  char *want = check_alloc(b, stride * b->tsize);
  uint64_t wrong = 0;
  for (size_t seg = 0; seg < segments; seg++) {
    size_t first = seg * segment_elems;
    for (size_t k = 0; k < stride; k++) store(o->type, want, k, wanted_value(c, b, inputs, first + k));
    for (size_t done = 0; done < segment_elems; done += stride) {
      size_t len = segment_elems - done < stride ? segment_elems - done : stride;
      const char *got = buf + (first + done) * b->tsize;
      if (memcmp(got, want, len * b->tsize) == 0) continue;
      for (size_t k = 0; k < len; k++) {
        double w = load(o->type, want, k), g = load(o->type, got, k);
        double diff = g > w ? g - w : w - g, scale = w > 1.0 ? w : w < -1.0 ? -w : 1.0;
        if (!(tolerant ? diff <= tol * scale : g == w)) wrong++;
      }
    }
  }
  free(want);
  return wrong;
}

/* Whether this rank gets a result: only the root of reduce and gather, only ranks 0 and 1 of
 * sendrecv. */
static bool gets_result(const struct bench *b) {
  switch (b->o->coll) {
  case COLL_REDUCE:
  case COLL_GATHER: return b->rank == b->o->root;
  case COLL_SENDRECV: return b->rank < 2;
  default: return true;
  }
}

/* Counts this rank's wrong elements of the result in `recv` of the out-of-place or in-place
 * (`inplace`) call. Float AVG gets a relative tolerance unless `exact` (for callers that made sure
 * check_data_exact holds); everything else must match. */
uint64_t count_wrong_results(const struct bench *b, const char *recv, bool inplace, bool exact) {
  const struct options *o = b->o;
  if (!gets_result(b)) return 0;
  struct check_ctx c = check_context(b, inplace);
  bool tolerant = !exact && o->op == TALLY_AVG && is_float_type(o->type) && coll_reduces(o->coll);
  bool blocks = o->coll == COLL_ALLGATHER || o->coll == COLL_GATHER || o->coll == COLL_ALLTOALL;
  if (blocks) return count_mismatches(b, &c, recv, (size_t)b->nranks, b->count, false, tolerant);
  return count_mismatches(b, &c, recv, 1, b->recv_elems, false, tolerant);
}

/* Counts the elements of an out-of-place call's `send` buffer that differ from the inputs
 * fill_check_inputs wrote: the library must only read it. */
uint64_t count_changed_inputs(const struct bench *b, const char *send) {
  struct check_ctx c = check_context(b, false);
  return count_mismatches(b, &c, send, 1, b->send_elems, true, false);
}

/* Fills the inputs, runs the collective once and counts this rank's wrong result elements. */
uint64_t check_place(const struct bench *b, int inplace) {
  char *send, *recv;
  place_buffers(b, inplace, &send, &recv);
  if (!b->o->gpu) {
    fill_check_inputs(b, send, recv);
    TRY(b, run_once(b, send, recv));
    return count_wrong_results(b, recv, inplace, false);
  }
  /* --gpu: the check data is made and read in host copies laid out like the GPU buffers. */
  char *host_send, *host_recv;
  size_t recv_bytes = b->recv_elems * b->tsize;
  place_in(b, inplace, b->host_sbuf, b->host_rbuf, &host_send, &host_recv);
  fill_check_inputs(b, host_send, host_recv);
  gpu_copy(b, recv, host_recv, recv_bytes);
  gpu_copy(b, send, host_send, b->send_elems * b->tsize);
  TRY(b, run_once(b, send, recv));
  gpu_sync(b);
  gpu_copy(b, host_recv, recv, recv_bytes);
  return count_wrong_results(b, host_recv, inplace, false);
}
