/* perf_check.c: result checking. Fills every rank's inputs with small integers, computes the
 * exact expected result of each collective in closed form, and counts the wrong elements. */
#include <stdbool.h>
#include <stdint.h>
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

/* Fills the inputs, runs the collective once and counts this rank's wrong result elements. */
uint64_t check_place(const struct bench *b, int inplace) {
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
