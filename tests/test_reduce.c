/* Unit tests of the reductions (src/core/reduce.c) and the datatype/op names (src/core/datatype.c): every
 * datatype x op against a plain reference, aliasing, fp16 and bf16 conversions against a reference
 * computed in double (exhaustively for fp16 -> float, sampled and at every boundary for float ->
 * fp16/bf16), rounding of 16-bit reductions, NaN and infinity, AVG's division, and the names. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/reduce.h"
#include "typed.h"

/* ---- references, written independently of the bit tricks in reduce.c ---- */

/* Reference for one element, in double, for values small enough to be exact in every type. */
static double reference(double a, double b, tally_op_t op) {
  switch (op) {
    case TALLY_SUM:
    case TALLY_AVG: return a + b;
    case TALLY_PROD: return a * b;
    case TALLY_MIN: return a < b ? a : b;
    case TALLY_MAX: return a > b ? a : b;
    default: return NAN;
  }
}

/* The bits of |v| rounded to nearest even in a binary format with `mbits` mantissa bits and
 * `ebits` exponent bits (fp16: 10, 5; bf16: 7, 8), subnormals and overflow to infinity included.
 * Double arithmetic only: frexp, ldexp and nearbyint (the default rounding mode is nearest even). */
static uint32_t ref_round(double v, int mbits, int ebits) {
  int bias = (1 << (ebits - 1)) - 1, emin = 1 - bias;
  uint32_t inf = ((1u << ebits) - 1) << mbits;
  double a = fabs(v);
  if (isnan(v)) return inf | (1u << (mbits - 1));
  if (isinf(a)) return inf;
  if (a == 0) return 0;
  int e;
  frexp(a, &e); /* a in [2^(e-1), 2^e) */
  int exp = e - 1;
  if (exp < emin) return (uint32_t)nearbyint(ldexp(a, mbits - emin)); /* subnormal (or rounds up to normal) */
  if (exp + bias >= (1 << ebits) - 1) return inf;
  double q = nearbyint(ldexp(a, mbits - exp)); /* in [2^mbits, 2^(mbits+1)]; the top carries into the exponent */
  uint32_t bits = ((uint32_t)(exp + bias - 1) << mbits) + (uint32_t)q;
  return bits > inf ? inf : bits;
}

static uint16_t ref_to_half(double v) { return (uint16_t)((signbit(v) ? 0x8000u : 0) | ref_round(v, 10, 5)); }
static uint16_t ref_to_bf16(double v) { return (uint16_t)((signbit(v) ? 0x8000u : 0) | ref_round(v, 7, 8)); }

static double ref_half_value(uint16_t h) {
  int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double mag = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int is_nan16(uint16_t h, int mbits) {
  uint32_t inf = mbits == 10 ? 0x7c00 : 0x7f80;
  return (h & 0x7fffu) > inf;
}
static int is_quiet16(uint16_t h, int mbits) { return is_nan16(h, mbits) && (h & (1u << (mbits - 1))); }

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) { /* xorshift64: deterministic */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* ---- every type and op ---- */

static void check_every_type_and_op(size_t n, int alias) {
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++)
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      unsigned char a[67 * 8], b[67 * 8], out[67 * 8], want_bytes[67 * 8];
      for (size_t i = 0; i < n; i++) {
        typed_set(a, i, t, input_value(1, i, t, op));
        typed_set(b, i, t, input_value(2, i, t, op));
      }
      tally_reduce_apply(out, a, b, n, t, op);
      for (size_t i = 0; i < n; i++) {
        double want = reference(typed_get(a, i, t), typed_get(b, i, t), op);
        cr_assert_eq(typed_get(out, i, t), want, "%s %s element %zu of %zu: %g != %g", tally_datatype_name(t),
                     tally_op_name(op), i, n, typed_get(out, i, t), want);
      }
      if (!alias) continue;
      memcpy(want_bytes, out, n * tally_datatype_size(t));
      unsigned char a2[67 * 8];
      memcpy(a2, a, sizeof a2);
      tally_reduce_apply(a, a, b, n, t, op); /* out == a */
      cr_assert_eq(memcmp(a, want_bytes, n * tally_datatype_size(t)), 0, "%s %s out==a", tally_datatype_name(t),
                   tally_op_name(op));
      tally_reduce_apply(b, a2, b, n, t, op); /* out == b */
      cr_assert_eq(memcmp(b, want_bytes, n * tally_datatype_size(t)), 0, "%s %s out==b", tally_datatype_name(t),
                   tally_op_name(op));
    }
}

Test(reduce, every_type_and_op) {
  check_every_type_and_op(67, 1); /* odd, so vector loops have a tail */
  for (size_t n = 1; n < 40; n++) check_every_type_and_op(n, 0); /* every tail length */
}

Test(reduce, count_zero_touches_nothing) {
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++)
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      unsigned char a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {9, 9, 9, 9, 9, 9, 9, 9}, out[8];
      memset(out, 0xa5, sizeof out);
      tally_reduce_apply(out, a, b, 0, t, op);
      for (int i = 0; i < 8; i++) cr_assert_eq(out[i], 0xa5, "%s %s wrote with count 0", tally_datatype_name(t),
                                              tally_op_name(op));
    }
  /* NULL buffers are fine when there is nothing to do. */
  tally_reduce_apply(NULL, NULL, NULL, 0, TALLY_FLOAT32, TALLY_SUM);
  tally_reduce_finish_avg(NULL, 0, TALLY_INT32, 4);
}

Test(reduce, out_of_range_type_or_op_does_nothing) {
  float a = 1, b = 2, out = 7;
  tally_reduce_apply(&out, &a, &b, 1, TALLY_NUM_DATATYPES, TALLY_SUM);
  tally_reduce_apply(&out, &a, &b, 1, (tally_datatype_t)-1, TALLY_SUM);
  tally_reduce_apply(&out, &a, &b, 1, TALLY_FLOAT32, TALLY_NUM_OPS);
  tally_reduce_apply(&out, &a, &b, 1, TALLY_FLOAT32, (tally_op_t)-1);
  cr_assert_eq(out, 7.0f);
  tally_reduce_finish_avg(&out, 1, TALLY_NUM_DATATYPES, 2);
  cr_assert_eq(out, 7.0f);
}

/* Integers over their whole range, against arithmetic modulo 2^64 truncated to the width. */
Test(reduce, integers_full_range) {
  static const tally_datatype_t types[] = {TALLY_INT8, TALLY_UINT8, TALLY_INT32, TALLY_UINT32, TALLY_INT64, TALLY_UINT64};
  enum { N = 1000 };
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    tally_datatype_t t = types[k];
    size_t size = tally_datatype_size(t);
    int is_signed = typed_is_signed(t);
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      unsigned char a[N * 8], b[N * 8], out[N * 8];
      for (size_t i = 0; i < N * 8; i++) {
        a[i] = (unsigned char)rng();
        b[i] = (unsigned char)rng();
      }
      /* some extremes: 0, -1/max, min */
      memset(a, 0, size);
      memset(b + size, 0xff, size);
      memset(a + 2 * size, 0xff, size);
      memset(b + 2 * size, 0xff, size);
      tally_reduce_apply(out, a, b, N, t, op);
      for (size_t i = 0; i < N; i++) {
        uint64_t ua = 0, ub = 0; /* little-endian bytes, then sign-extended for signed types */
        memcpy(&ua, a + i * size, size);
        memcpy(&ub, b + i * size, size);
        if (is_signed && size < 8) {
          uint64_t sbit = 1ull << (size * 8 - 1), ext = ~0ull << (size * 8);
          if (ua & sbit) ua |= ext;
          if (ub & sbit) ub |= ext;
        }
        int a_less = is_signed ? (int64_t)ua < (int64_t)ub : ua < ub;
        uint64_t want = 0;
        switch (op) {
          case TALLY_SUM:
          case TALLY_AVG: want = ua + ub; break;
          case TALLY_PROD: want = ua * ub; break;
          case TALLY_MIN: want = a_less ? ua : ub; break;
          case TALLY_MAX: want = a_less ? ub : ua; break;
        }
        cr_assert_eq(memcmp(out + i * size, &want, size), 0, "%s %s element %zu", tally_datatype_name(t),
                     tally_op_name(op), i);
      }
    }
  }
}

Test(reduce, signed_overflow_wraps) {
  int8_t a = 127, b = 1, out;
  tally_reduce_apply(&out, &a, &b, 1, TALLY_INT8, TALLY_SUM);
  cr_assert_eq(out, -128);
  int8_t c = -128, d = -1;
  tally_reduce_apply(&out, &c, &d, 1, TALLY_INT8, TALLY_PROD);
  cr_assert_eq(out, -128);
  int32_t e = INT32_MIN, f = -1, g;
  tally_reduce_apply(&g, &e, &f, 1, TALLY_INT32, TALLY_SUM);
  cr_assert_eq(g, INT32_MAX);
  int64_t x = INT64_MAX, y = 2, p;
  tally_reduce_apply(&p, &x, &y, 1, TALLY_INT64, TALLY_PROD);
  cr_assert_eq(p, -2);
  uint32_t u = UINT32_MAX, v = 2, w;
  tally_reduce_apply(&w, &u, &v, 1, TALLY_UINT32, TALLY_SUM);
  cr_assert_eq(w, 1u);
}

Test(reduce, floats_random) {
  enum { N = 257 };
  float fa[N], fb[N], fo[N];
  double da[N], db[N], dout[N];
  for (int i = 0; i < N; i++) {
    fa[i] = (float)((double)(int64_t)rng() * 0x1p-50);
    fb[i] = (float)((double)(int64_t)rng() * 0x1p-50);
    da[i] = (double)(int64_t)rng() * 0x1p-50;
    db[i] = (double)(int64_t)rng() * 0x1p-50;
  }
  for (int op = 0; op < TALLY_NUM_OPS; op++) {
    tally_reduce_apply(fo, fa, fb, N, TALLY_FLOAT32, op);
    tally_reduce_apply(dout, da, db, N, TALLY_FLOAT64, op);
    for (int i = 0; i < N; i++) {
      float fw = op == TALLY_PROD ? fa[i] * fb[i] : op == TALLY_MIN ? fminf(fa[i], fb[i])
                 : op == TALLY_MAX ? fmaxf(fa[i], fb[i]) : fa[i] + fb[i];
      double dw = op == TALLY_PROD ? da[i] * db[i] : op == TALLY_MIN ? fmin(da[i], db[i])
                  : op == TALLY_MAX ? fmax(da[i], db[i]) : da[i] + db[i];
      cr_assert_eq(fo[i], fw, "float %s element %d", tally_op_name(op), i);
      cr_assert_eq(dout[i], dw, "double %s element %d", tally_op_name(op), i);
    }
  }
}

/* ---- AVG ---- */

Test(reduce, avg_divides_and_truncates) {
  int32_t v[4] = {-7, 7, 8, INT32_MIN};
  tally_reduce_finish_avg(v, 4, TALLY_INT32, 2);
  cr_assert_eq(v[0], -3); /* toward zero, not -4 */
  cr_assert_eq(v[1], 3);
  cr_assert_eq(v[2], 4);
  cr_assert_eq(v[3], INT32_MIN / 2);
  int32_t odd = (1 << 30) + 1; /* more bits than a float holds: the division must be an integer one */
  tally_reduce_finish_avg(&odd, 1, TALLY_INT32, 3);
  cr_assert_eq(odd, 357913941);
  int8_t s[2] = {-128, 127};
  tally_reduce_finish_avg(s, 2, TALLY_INT8, 3);
  cr_assert_eq(s[0], -42);
  cr_assert_eq(s[1], 42);
  uint8_t u8[2] = {255, 199};
  tally_reduce_finish_avg(u8, 2, TALLY_UINT8, 200); /* n wider than the type */
  cr_assert_eq(u8[0], 1);
  cr_assert_eq(u8[1], 0);
  int64_t big = -(INT64_C(1) << 62) - 5;
  tally_reduce_finish_avg(&big, 1, TALLY_INT64, 4);
  cr_assert_eq(big, -(INT64_C(1) << 60) - 1);
  uint64_t u = UINT64_MAX;
  tally_reduce_finish_avg(&u, 1, TALLY_UINT64, 4);
  cr_assert_eq(u, UINT64_MAX / 4);
  uint32_t u32 = UINT32_MAX;
  tally_reduce_finish_avg(&u32, 1, TALLY_UINT32, 3);
  cr_assert_eq(u32, UINT32_MAX / 3);
  float f = 1.0f;
  tally_reduce_finish_avg(&f, 1, TALLY_FLOAT32, 3);
  cr_assert_eq(f, 1.0f / 3.0f);
  double d = 1.0;
  tally_reduce_finish_avg(&d, 1, TALLY_FLOAT64, 3);
  cr_assert_eq(d, 1.0 / 3.0);
  uint16_t h[2] = {tally_float_to_half(3.0f), 0x3c00};
  tally_reduce_finish_avg(h, 2, TALLY_FLOAT16, 2);
  cr_assert_eq(tally_half_to_float(h[0]), 1.5f);
  cr_assert_eq(h[1], 0x3800); /* 0.5 */
  h[1] = 0x3c00;
  tally_reduce_finish_avg(&h[1], 1, TALLY_FLOAT16, 3);
  cr_assert_eq(h[1], 0x3555); /* 1/3 rounded to fp16 */
  uint16_t bf = 0x3f80;
  tally_reduce_finish_avg(&bf, 1, TALLY_BFLOAT16, 3);
  cr_assert_eq(bf, 0x3eab); /* 1/3 rounded to bf16 */
}

Test(reduce, avg_by_one_or_less_changes_nothing) {
  int32_t v = -7;
  tally_reduce_finish_avg(&v, 1, TALLY_INT32, 1);
  cr_assert_eq(v, -7);
  tally_reduce_finish_avg(&v, 1, TALLY_INT32, 0); /* would divide by zero */
  cr_assert_eq(v, -7);
}

Test(reduce, avg_sums_then_divides) {
  int32_t a[3] = {-3, 5, 1}, b[3] = {-4, 5, 0};
  tally_reduce_apply(a, a, b, 3, TALLY_INT32, TALLY_AVG);
  cr_assert(a[0] == -7 && a[1] == 10 && a[2] == 1, "AVG reduces as SUM");
  tally_reduce_finish_avg(a, 3, TALLY_INT32, 2);
  cr_assert(a[0] == -3 && a[1] == 5 && a[2] == 0);
}

/* ---- reductions of n inputs in rank order ---- */

/* tally_reduce_in_order_own against whole-vector passes of tally_reduce_apply in rank order, bit
 * for bit: float sums, whose rounding depends on the order; counts across the 8 KiB tiles; every
 * choice of the input read from elsewhere; and that input being the output itself (in place). */
Test(reduce, in_order_own_matches_passes_in_rank_order) {
  enum { N = 5, COUNT = 5000 }; /* 20000 bytes: two whole tiles and part of a third */
  float *inputs = malloc(sizeof(float) * N * COUNT), *own = malloc(sizeof(float) * COUNT);
  float *expect = malloc(sizeof(float) * COUNT), *out = malloc(sizeof(float) * COUNT);
  cr_assert(inputs && own && expect && out);
  srand(7);
  for (size_t i = 0; i < (size_t)N * COUNT; i++) inputs[i] = (float)rand() / (float)RAND_MAX * 1e3f - 5e2f;
  for (size_t i = 0; i < COUNT; i++) own[i] = (float)rand() / (float)RAND_MAX * 1e-3f;
  for (int n = 2; n <= N; n++)
    for (int k = -1; k < n; k++)
      for (int in_place = 0; in_place < 2 && (k >= 0 || !in_place); in_place++) {
        const float *input[N];
        for (int j = 0; j < n; j++) input[j] = j == k ? own : inputs + (size_t)j * COUNT;
        tally_reduce_apply(expect, input[0], input[1], COUNT, TALLY_FLOAT32, TALLY_SUM);
        for (int j = 2; j < n; j++) tally_reduce_apply(expect, expect, input[j], COUNT, TALLY_FLOAT32, TALLY_SUM);
        const float *own_input = own;
        if (in_place) own_input = memcpy(out, own, sizeof(float) * COUNT);
        else memset(out, 0xab, sizeof(float) * COUNT);
        tally_reduce_in_order_own(out, inputs, sizeof(float) * COUNT, n, k, own_input, COUNT, TALLY_FLOAT32, TALLY_SUM);
        cr_assert(memcmp(out, expect, sizeof(float) * COUNT) == 0, "%d inputs, input %d elsewhere%s: not the same bits",
                  n, k, in_place ? " and the output" : "");
      }
  int32_t a[3] = {3, 10, -8}, b[3] = {4, 1, 1}, c[3] = {5, 1, 0}, both[9];
  memcpy(both, a, sizeof a), memcpy(both + 3, b, sizeof b), memcpy(both + 6, c, sizeof c);
  int32_t avg[3]; /* AVG divides once, at the end */
  tally_reduce_in_order_own(avg, both, sizeof a, 3, 1, c, 3, TALLY_INT32, TALLY_AVG); /* inputs a, c, c */
  cr_assert(avg[0] == 4 && avg[1] == 4 && avg[2] == -2, "AVG of (3,5,5) (10,1,1) (-8,0,0): %d %d %d", avg[0], avg[1],
            avg[2]);
  free(inputs), free(own), free(expect), free(out);
}

/* ---- fp16 and bf16 conversions ---- */

Test(fp16, to_float_every_value) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    float got = tally_half_to_float((uint16_t)h);
    double want = ref_half_value((uint16_t)h);
    if (isnan(want)) {
      cr_assert(isnan(got) && (bits_of(got) & 0x400000u), "0x%04x: NaN must stay a quiet NaN", h);
      cr_assert_eq(!!signbit(got), !!(h & 0x8000), "0x%04x: NaN sign", h);
    } else {
      cr_assert_eq((double)got, want, "0x%04x: %a != %a", h, (double)got, want);
      cr_assert_eq(!!signbit(got), !!signbit(want), "0x%04x: sign", h);
    }
  }
}

Test(fp16, round_trip_every_value) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    uint16_t back = tally_float_to_half(tally_half_to_float((uint16_t)h));
    if (is_nan16((uint16_t)h, 10))
      cr_assert(is_quiet16(back, 10) && (back & 0x8000) == (h & 0x8000), "0x%04x -> 0x%04x", h, back);
    else
      cr_assert_eq(back, h, "0x%04x -> 0x%04x", h, back);
  }
}

static void check_float_to_16(uint32_t bits) {
  float f = float_of(bits);
  uint16_t h = tally_float_to_half(f), b = tally_float_to_bf16(f);
  if (isnan(f)) {
    cr_assert(is_quiet16(h, 10) && (h & 0x8000) == ((bits >> 16) & 0x8000), "fp16 of NaN 0x%08x: 0x%04x", bits, h);
    cr_assert(is_quiet16(b, 7) && (b & 0x8000) == ((bits >> 16) & 0x8000), "bf16 of NaN 0x%08x: 0x%04x", bits, b);
    return;
  }
  cr_assert_eq(h, ref_to_half(f), "fp16 of 0x%08x (%a): 0x%04x, want 0x%04x", bits, (double)f, h, ref_to_half(f));
  cr_assert_eq(b, ref_to_bf16(f), "bf16 of 0x%08x (%a): 0x%04x, want 0x%04x", bits, (double)f, b, ref_to_bf16(f));
}

Test(fp16, from_float_sampled_and_boundaries) {
  for (uint64_t u = 0; u <= 0xffffffffu; u += 4093) /* about a million patterns, every exponent */
    check_float_to_16((uint32_t)u);
  /* Every pattern within 2^14 ulps of the interesting boundaries, both signs. */
  static const float edges[] = {0x1p-25f, 0x1p-24f,   0x1.8p-24f, 0x1p-14f, 0x1.ff8p-15f, 1.0f,   2048.0f,
                                65504.0f, 65520.0f,   65536.0f,   0x1p-126f, 0x1p-133f,   0x1p-134f,
                                0x1.fep127f, 0x1.ffp127f, 0x1.fffffep127f, INFINITY};
  for (size_t k = 0; k < sizeof edges / sizeof edges[0]; k++)
    for (int32_t d = -(1 << 14); d <= (1 << 14); d++) {
      uint32_t c = bits_of(edges[k]) + (uint32_t)d;
      check_float_to_16(c);
      check_float_to_16(c ^ 0x80000000u);
    }
  check_float_to_16(0);
  check_float_to_16(0x80000000u);
}

Test(fp16, exact_values_and_limits) {
  cr_assert_eq(tally_float_to_half(1.0f), 0x3c00);
  cr_assert_eq(tally_float_to_half(-2.0f), 0xc000);
  cr_assert_eq(tally_float_to_half(-0.0f), 0x8000);
  cr_assert_eq(tally_float_to_half(65504.0f), 0x7bff); /* largest finite */
  cr_assert_eq(tally_float_to_half(65519.996f), 0x7bff);
  cr_assert_eq(tally_float_to_half(65520.0f), 0x7c00); /* halfway to 2^16: rounds to even, which is inf */
  cr_assert_eq(tally_float_to_half(1e9f), 0x7c00);
  cr_assert_eq(tally_float_to_half(-1e9f), 0xfc00);
  cr_assert_eq(tally_float_to_half(INFINITY), 0x7c00);
  cr_assert_eq(tally_float_to_half(-INFINITY), 0xfc00);
  cr_assert_eq(tally_half_to_float(0x7c00), INFINITY);
  cr_assert_eq(tally_half_to_float(0xfc00), -INFINITY);
  cr_assert_eq(tally_half_to_float(0x0001), 0x1p-24f); /* smallest subnormal */
  cr_assert_eq(tally_half_to_float(0x03ff), 1023 * 0x1p-24f); /* largest subnormal */
  cr_assert_eq(tally_half_to_float(0x0400), 0x1p-14f);        /* smallest normal */
  cr_assert_eq(tally_float_to_half(0x1p-24f), 0x0001);
  cr_assert_eq(tally_float_to_half(0x1p-25f), 0x0000);       /* halfway to zero: even is zero */
  cr_assert_eq(tally_float_to_half(0x1.000002p-25f), 0x0001); /* just above halfway */
  cr_assert_eq(tally_float_to_half(0x1.8p-24f), 0x0002);     /* 1.5 ulps: tie goes to even 2 */
  cr_assert_eq(tally_float_to_half(0x1.4p-23f), 0x0002);     /* 2.5 ulps: tie goes to even 2 */
  cr_assert_eq(tally_float_to_half(0x1.ffcp-15f), 0x0400);   /* 1023.5 ulps rounds up into the normals */
  cr_assert_eq(tally_float_to_half(0x1p-30f), 0x0000);
  cr_assert_eq(tally_float_to_half(-0x1p-30f), 0x8000); /* underflow keeps the sign */
}

Test(fp16, round_to_nearest_even) {
  /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1). */
  cr_assert_eq(tally_float_to_half(1.0f + 0x1p-11f), 0x3c00);
  /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even). */
  cr_assert_eq(tally_float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02);
  cr_assert_eq(tally_float_to_half(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above half: up */
  cr_assert_eq(tally_float_to_half(1.0f + 0x1p-11f - 0x1p-20f), 0x3c00); /* below half: down */
  cr_assert_eq(tally_float_to_half(2047.5f), 0x6800); /* 2047 is odd: 2047.5 -> 2048 */
  cr_assert_eq(tally_float_to_half(0x1.ffep0f), 0x4000);                  /* carry into the exponent */
}

Test(fp16, nan_is_quiet) {
  cr_assert(isnan(tally_half_to_float(0x7c01)), "signalling NaN in");
  cr_assert(bits_of(tally_half_to_float(0x7c01)) & 0x400000u, "comes out quiet");
  cr_assert(is_quiet16(tally_float_to_half(float_of(0x7f800001u)), 10), "signalling float NaN -> quiet fp16 NaN");
  cr_assert_eq(tally_float_to_half(float_of(0xffc00000u)) & 0x8000, 0x8000, "sign kept");
  cr_assert(is_quiet16(tally_float_to_bf16(float_of(0x7f800001u)), 7), "NaN whose payload is all in the low half");
  cr_assert(is_quiet16(tally_float_to_bf16(float_of(0x7fa00000u)), 7), "signalling NaN -> quiet bf16 NaN");
  cr_assert(isnan(tally_bf16_to_float(0x7fc0)));
}

Test(bf16, conversions) {
  cr_assert_eq(tally_float_to_bf16(1.0f), 0x3f80);
  cr_assert_eq(tally_float_to_bf16(-0.0f), 0x8000);
  cr_assert_eq(tally_float_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie to even */
  cr_assert_eq(tally_float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  cr_assert_eq(tally_float_to_bf16(1.0f + 0x1p-8f + 0x1p-12f), 0x3f81);
  cr_assert_eq(tally_float_to_bf16(INFINITY), 0x7f80);
  cr_assert_eq(tally_float_to_bf16(-INFINITY), 0xff80);
  cr_assert_eq(tally_float_to_bf16(0x1.fep127f), 0x7f7f); /* largest finite */
  cr_assert_eq(tally_float_to_bf16(0x1.ffp127f), 0x7f80); /* halfway past it: rounds to even, inf */
  cr_assert_eq(tally_float_to_bf16(0x1.fefffep127f), 0x7f7f);
  cr_assert_eq(tally_bf16_to_float(0x7f7f), 0x1.fep127f);
  cr_assert_eq(tally_float_to_bf16(0x1p-133f), 0x0001); /* smallest subnormal */
  cr_assert_eq(tally_float_to_bf16(0x1p-134f), 0x0000); /* halfway to zero */
  cr_assert_eq(tally_bf16_to_float(0x0001), 0x1p-133f);
  cr_assert_eq(tally_bf16_to_float(0x4049), 3.140625f);
  for (uint32_t b = 0; b < 0x10000; b++) { /* every bf16 survives the round trip */
    uint16_t back = tally_float_to_bf16(tally_bf16_to_float((uint16_t)b));
    if (is_nan16((uint16_t)b, 7))
      cr_assert(is_quiet16(back, 7) && (back & 0x8000) == (b & 0x8000), "0x%04x -> 0x%04x", b, back);
    else
      cr_assert_eq(back, b, "0x%04x -> 0x%04x", b, back);
  }
}

/* ---- 16-bit reductions round once, to nearest even ----
 * The float intermediate has more than twice the bits of fp16/bf16 plus two, so float-then-16-bit
 * equals one correct rounding of the exact result, which double gives us here. */
static uint16_t random_finite16(int mbits) {
  for (;;) {
    uint16_t h = (uint16_t)rng();
    if (!is_nan16(h, mbits) && (h & 0x7fffu) != (mbits == 10 ? 0x7c00 : 0x7f80)) return h;
  }
}

static void check_16bit_random(tally_datatype_t t) {
  int mbits = t == TALLY_FLOAT16 ? 10 : 7;
  enum { N = 4099 };
  static uint16_t a[N], b[N], out[N], avg[N];
  for (int i = 0; i < N; i++) {
    a[i] = random_finite16(mbits);
    b[i] = random_finite16(mbits);
  }
  for (int op = 0; op < TALLY_NUM_OPS; op++) {
    tally_reduce_apply(out, a, b, N, t, op);
    for (int i = 0; i < N; i++) {
      double x = typed_get(a, (size_t)i, t), y = typed_get(b, (size_t)i, t);
      double exact = op == TALLY_PROD ? x * y : op == TALLY_MIN ? (x < y ? x : y)
                     : op == TALLY_MAX ? (x > y ? x : y) : x + y;
      uint16_t want = t == TALLY_FLOAT16 ? ref_to_half(exact) : ref_to_bf16(exact);
      cr_assert_eq(out[i], want, "%s %s 0x%04x, 0x%04x: 0x%04x, want 0x%04x", tally_datatype_name(t),
                   tally_op_name(op), a[i], b[i], out[i], want);
    }
  }
  for (int n = 2; n <= 7; n++) {
    memcpy(avg, a, sizeof avg);
    tally_reduce_finish_avg(avg, N, t, n);
    for (int i = 0; i < N; i++) {
      double exact = typed_get(a, (size_t)i, t) / n;
      uint16_t want = t == TALLY_FLOAT16 ? ref_to_half(exact) : ref_to_bf16(exact);
      cr_assert_eq(avg[i], want, "%s 0x%04x / %d: 0x%04x, want 0x%04x", tally_datatype_name(t), a[i], n, avg[i],
                   want);
    }
  }
}

Test(fp16, reductions_round_once) { check_16bit_random(TALLY_FLOAT16); }
Test(bf16, reductions_round_once) { check_16bit_random(TALLY_BFLOAT16); }

Test(fp16, sums_round_to_even_and_overflow) {
  uint16_t a[4] = {tally_float_to_half(2048), tally_float_to_half(2048), tally_float_to_half(65504),
                   tally_float_to_half(65504)};
  uint16_t b[4] = {tally_float_to_half(1), tally_float_to_half(3), tally_float_to_half(15), tally_float_to_half(16)};
  uint16_t out[4];
  tally_reduce_apply(out, a, b, 4, TALLY_FLOAT16, TALLY_SUM);
  cr_assert_eq(tally_half_to_float(out[0]), 2048.0f); /* 2049 is halfway: even 2048 */
  cr_assert_eq(tally_half_to_float(out[1]), 2052.0f); /* 2051 is halfway: even 2052 */
  cr_assert_eq(out[2], 0x7bff);                       /* 65519 rounds down to 65504 */
  cr_assert_eq(out[3], 0x7c00);                       /* 65520 rounds to inf */
  uint16_t m = 0x7bff, p;
  tally_reduce_apply(&p, &m, &m, 1, TALLY_FLOAT16, TALLY_PROD);
  cr_assert_eq(p, 0x7c00);
  uint16_t s1 = 0x0001, s2 = 0x0001, s;
  tally_reduce_apply(&s, &s1, &s2, 1, TALLY_FLOAT16, TALLY_SUM);
  cr_assert_eq(s, 0x0002, "subnormals add exactly");
}

/* ---- NaN and infinity ---- */

Test(reduce, nan_and_infinity_pass_through) {
  for (int t = TALLY_FLOAT16; t <= TALLY_FLOAT64; t++) {
    unsigned char a[32], b[32], out[32];
    typed_set(a, 0, t, NAN);
    typed_set(b, 0, t, 1.0);
    typed_set(a, 1, t, 1.0);
    typed_set(b, 1, t, NAN);
    typed_set(a, 2, t, NAN);
    typed_set(b, 2, t, NAN);
    typed_set(a, 3, t, -INFINITY);
    typed_set(b, 3, t, NAN);
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      tally_reduce_apply(out, a, b, 4, t, op);
      for (size_t i = 0; i < 4; i++)
        cr_assert(isnan(typed_get(out, i, t)), "%s %s lost the NaN in element %zu", tally_datatype_name(t),
                  tally_op_name(op), i);
    }
    typed_set(a, 0, t, INFINITY);
    typed_set(b, 0, t, 5.0);
    typed_set(a, 1, t, -INFINITY);
    typed_set(b, 1, t, 5.0);
    typed_set(a, 2, t, INFINITY);
    typed_set(b, 2, t, -INFINITY);
    tally_reduce_apply(out, a, b, 3, t, TALLY_SUM);
    cr_assert_eq(typed_get(out, 0, t), INFINITY, "%s", tally_datatype_name(t));
    cr_assert_eq(typed_get(out, 1, t), -INFINITY, "%s", tally_datatype_name(t));
    cr_assert(isnan(typed_get(out, 2, t)), "%s inf + -inf", tally_datatype_name(t));
    tally_reduce_apply(out, a, b, 3, t, TALLY_MAX);
    cr_assert_eq(typed_get(out, 0, t), INFINITY);
    cr_assert_eq(typed_get(out, 1, t), 5.0);
    cr_assert_eq(typed_get(out, 2, t), INFINITY);
    tally_reduce_apply(out, a, b, 3, t, TALLY_MIN);
    cr_assert_eq(typed_get(out, 0, t), 5.0);
    cr_assert_eq(typed_get(out, 1, t), -INFINITY);
    cr_assert_eq(typed_get(out, 2, t), -INFINITY);
    tally_reduce_apply(out, a, b, 2, t, TALLY_PROD);
    cr_assert_eq(typed_get(out, 0, t), INFINITY);
    cr_assert_eq(typed_get(out, 1, t), -INFINITY);
  }
}

/* ---- names ---- */

Test(names, exact_names) {
  static const char *const types[] = {"int8", "uint8", "int32", "uint32", "int64",
                                      "uint64", "half", "bfloat16", "float", "double"};
  static const char *const ops[] = {"sum", "prod", "min", "max", "avg"};
  static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 2, 4, 8};
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++) {
    cr_assert_str_eq(tally_datatype_name(t), types[t]);
    cr_assert_eq(tally_datatype_size(t), sizes[t], "%s", types[t]);
  }
  for (int op = 0; op < TALLY_NUM_OPS; op++) cr_assert_str_eq(tally_op_name(op), ops[op]);
}

Test(names, round_trip_aliases_and_out_of_range) {
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++) cr_assert_eq(tally_datatype_from_name(tally_datatype_name(t)), t);
  for (int op = 0; op < TALLY_NUM_OPS; op++) cr_assert_eq(tally_op_from_name(tally_op_name(op)), op);
  static const struct {
    const char *name;
    int type;
  } aliases[] = {{"fp16", TALLY_FLOAT16},    {"float16", TALLY_FLOAT16}, {"bf16", TALLY_BFLOAT16},
                 {"float32", TALLY_FLOAT32}, {"fp32", TALLY_FLOAT32},    {"float64", TALLY_FLOAT64},
                 {"fp64", TALLY_FLOAT64}};
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    cr_assert_eq(tally_datatype_from_name(aliases[i].name), aliases[i].type, "%s", aliases[i].name);
  cr_assert_null(tally_datatype_name(TALLY_NUM_DATATYPES));
  cr_assert_null(tally_datatype_name((tally_datatype_t)-1));
  cr_assert_eq(tally_datatype_size(TALLY_NUM_DATATYPES), 0);
  cr_assert_eq(tally_datatype_size((tally_datatype_t)-1), 0);
  cr_assert_null(tally_op_name(TALLY_NUM_OPS));
  cr_assert_null(tally_op_name((tally_op_t)-1));
  cr_assert_eq(tally_datatype_from_name("complex"), -1);
  cr_assert_eq(tally_datatype_from_name(""), -1);
  cr_assert_eq(tally_datatype_from_name("floa"), -1);
  cr_assert_eq(tally_datatype_from_name(NULL), -1);
  cr_assert_eq(tally_op_from_name("xor"), -1);
  cr_assert_eq(tally_op_from_name("sums"), -1);
  cr_assert_eq(tally_op_from_name(NULL), -1);
}

/* --- the wire formats of compressed fp32 calls (TALLY_COMPRESS) --------------------------------- */

/* What pack must give for `f`: the reference rounding, a finite value past the largest clamped to it. */
static uint16_t ref_wire(float f, enum tally_wire_format format) {
  int half = format == TALLY_WIRE_FP16;
  uint16_t r = half ? ref_to_half(f) : ref_to_bf16(f);
  uint16_t inf = half ? 0x7c00 : 0x7f80, largest = half ? 0x7bff : 0x7f7f;
  if ((r & 0x7fff) == inf && isfinite(f)) r = (uint16_t)((r & 0x8000) | largest);
  return r;
}

/* Packs `n` floats both ways (pack, round) and checks every value, NaN (quiet, same sign) included;
 * returns how many saturated by the reference. */
static size_t check_wire_values(const float *in, size_t n, enum tally_wire_format format) {
  int mbits = format == TALLY_WIRE_FP16 ? 10 : 7;
  uint16_t *packed = malloc(n * sizeof *packed);
  float *rounded = malloc(n * sizeof *rounded), *widened = malloc(n * sizeof *widened);
  memcpy(rounded, in, n * sizeof *in);
  size_t saturated = 0, want_saturated = 0;
  cr_assert_eq(tally_wire_pack(packed, in, n, format), (saturated = tally_wire_round(rounded, n, format)));
  tally_wire_unpack(widened, packed, n, format);
  for (size_t i = 0; i < n; i++) {
    uint16_t want = ref_wire(in[i], format);
    uint16_t unclamped = format == TALLY_WIRE_FP16 ? ref_to_half(in[i]) : ref_to_bf16(in[i]);
    want_saturated += isfinite(in[i]) && unclamped != want;
    if (isnan(in[i]))
      cr_assert(is_quiet16(packed[i], mbits) && (packed[i] & 0x8000) == ((bits_of(in[i]) >> 16) & 0x8000),
                "%s of NaN 0x%08x: 0x%04x", tally_wire_format_name(format), bits_of(in[i]), packed[i]);
    else
      cr_assert_eq(packed[i], want, "%s of %a (0x%08x): 0x%04x, want 0x%04x", tally_wire_format_name(format),
                   (double)in[i], bits_of(in[i]), packed[i], want);
    cr_assert(bits_of(widened[i]) == bits_of(rounded[i]), "%s: round(%a) = %a but unpack(pack) = %a",
              tally_wire_format_name(format), (double)in[i], (double)rounded[i], (double)widened[i]);
  }
  cr_assert_eq(saturated, want_saturated, "%s: %zu saturated, expected %zu", tally_wire_format_name(format), saturated,
               want_saturated);
  free(packed), free(rounded), free(widened);
  return saturated;
}

/* Every tie: the midpoint of each pair of neighbouring 16-bit values (exact in fp32), and the fp32
 * values just below and above it, for every pair of finite values of both signs. */
static void check_every_tie(enum tally_wire_format format) {
  int half = format == TALLY_WIRE_FP16;
  uint16_t last = half ? 0x7bff : 0x7f7f;
  float *in = malloc(6u * 0x8000u * sizeof *in);
  size_t n = 0;
  for (uint32_t h = 0; h < last; h++) {
    float lo = half ? tally_half_to_float((uint16_t)h) : tally_bf16_to_float((uint16_t)h);
    float hi = half ? tally_half_to_float((uint16_t)(h + 1)) : tally_bf16_to_float((uint16_t)(h + 1));
    float mid = (float)(((double)lo + (double)hi) / 2);
    cr_assert_eq((double)mid, ((double)lo + (double)hi) / 2, "the midpoint of 0x%04x and 0x%04x is not exact", h, h + 1);
    float around[3] = {float_of(bits_of(mid) - 1), mid, float_of(bits_of(mid) + 1)};
    if (mid == 0) around[0] = 0; /* below +0 is -0's neighbourhood, covered by the sign flip */
    for (int k = 0; k < 3; k++) in[n++] = around[k], in[n++] = -around[k];
  }
  check_wire_values(in, n, format);
  /* the ties themselves go to the even neighbour */
  for (size_t i = 0; i < n; i += 6) {
    uint16_t got;
    tally_wire_pack(&got, &in[i + 2], 1, format);
    cr_assert_eq(got & 1, 0, "%s: the tie %a went to the odd neighbour 0x%04x", tally_wire_format_name(format),
                 (double)in[i + 2], got);
  }
  free(in);
}

Test(wire_format, every_tie_rounds_to_even) {
  check_every_tie(TALLY_WIRE_BF16);
  check_every_tie(TALLY_WIRE_FP16);
}

Test(wire_format, sampled_patterns_subnormals_nan_infinity) {
  enum { N = (1u << 20) + 64 };
  float *in = malloc(N * sizeof *in);
  size_t n = 0;
  for (uint64_t u = 0; u <= 0xffffffffu; u += 4099) in[n++] = float_of((uint32_t)u); /* every exponent, NaNs too */
  static const float edges[] = {0,          -0.0f,       0x1p-25f,  0x1p-24f,   0x1.8p-24f,    0x1p-14f,  0x1p-126f,
                                0x1p-149f,  65504.0f,    65519.0f,  65520.0f,   1e9f,          0x1.fep127f,
                                0x1.ffp127f, 0x1.fffffep127f, INFINITY, -INFINITY, NAN, -NAN};
  for (size_t k = 0; k < sizeof edges / sizeof edges[0]; k++) in[n++] = edges[k];
  for (enum tally_wire_format f = TALLY_WIRE_BF16; f <= TALLY_WIRE_FP16; f++) check_wire_values(in, n, f);
  free(in);
}

Test(wire_format, fp16_saturates_instead_of_overflowing) {
  float in[] = {65504.0f, 65519.99f, 65520.0f, -70000.0f, 3e38f, INFINITY, -INFINITY};
  uint16_t out[7];
  cr_assert_eq(tally_wire_pack(out, in, 7, TALLY_WIRE_FP16), 3, "65519.99 rounds to 65504; the next three saturate");
  uint16_t want[] = {0x7bff, 0x7bff, 0x7bff, 0xfbff, 0x7bff, 0x7c00, 0xfc00};
  for (int i = 0; i < 7; i++) cr_assert_eq(out[i], want[i], "fp16 of %a: 0x%04x, want 0x%04x", (double)in[i], out[i], want[i]);
  float big[] = {0x1.ffp127f, -FLT_MAX};
  cr_assert_eq(tally_wire_round(big, 2, TALLY_WIRE_BF16), 2);
  cr_assert(big[0] == 0x1.fep127f && big[1] == -0x1.fep127f, "bf16 saturates too: %a %a", (double)big[0],
            (double)big[1]);
}

Test(wire_format, unpack_add_is_fp32_sum_of_the_widened_value) {
  enum { N = 1031 };
  float a[N], out[N];
  uint16_t w[N];
  for (enum tally_wire_format f = TALLY_WIRE_BF16; f <= TALLY_WIRE_FP16; f++) {
    for (int i = 0; i < N; i++) {
      a[i] = (float)((double)(rng() % 2000001) / 1000.0 - 1000.0);
      w[i] = f == TALLY_WIRE_FP16 ? random_finite16(10) : random_finite16(7);
    }
    w[0] = f == TALLY_WIRE_FP16 ? 0x7e00 : 0x7fc0; /* NaN passes */
    w[1] = f == TALLY_WIRE_FP16 ? 0xfc00 : 0xff80; /* -infinity passes */
    tally_wire_unpack_add(out, a, w, N, f);
    cr_assert(isnan(out[0]) && out[1] == -INFINITY);
    for (int i = 2; i < N; i++) {
      float wide = f == TALLY_WIRE_FP16 ? tally_half_to_float(w[i]) : tally_bf16_to_float(w[i]);
      cr_assert(bits_of(out[i]) == bits_of(a[i] + wide), "%a + %a: %a", (double)a[i], (double)wide, (double)out[i]);
    }
    tally_wire_unpack_add(a, a, w, N, f); /* in place */
    cr_assert(bits_of(a[5]) == bits_of(out[5]));
  }
}
