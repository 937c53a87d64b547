/* Unit tests of the reductions: every datatype x op against a plain reference, aliasing, fp16 and
 * bf16 rounding, NaN and infinity, AVG's division, and the datatype/op names. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "reduce.h"
#include "typed.h"

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

Test(reduce, every_type_and_op) {
  enum { N = 67 }; /* odd, so vector loops have a tail */
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++)
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      unsigned char a[N * 8], b[N * 8], out[N * 8];
      for (size_t i = 0; i < N; i++) {
        typed_set(a, i, t, input_value(1, i, t, op));
        typed_set(b, i, t, input_value(2, i, t, op));
      }
      tally_reduce_apply(out, a, b, N, t, op);
      for (size_t i = 0; i < N; i++) {
        double want = reference(typed_get(a, i, t), typed_get(b, i, t), op);
        cr_assert_eq(typed_get(out, i, t), want, "%s %s element %zu: %g != %g", tally_datatype_name(t),
                     tally_op_name(op), i, typed_get(out, i, t), want);
      }
      /* out aliasing a gives the same result */
      tally_reduce_apply(a, a, b, N, t, op);
      cr_assert_eq(memcmp(a, out, N * tally_datatype_size(t)), 0, "%s %s aliased", tally_datatype_name(t),
                   tally_op_name(op));
    }
}

Test(reduce, count_zero_touches_nothing) {
  float a = 1, b = 2, out = 7;
  tally_reduce_apply(&out, &a, &b, 0, TALLY_FLOAT32, TALLY_SUM);
  cr_assert_eq(out, 7.0f);
}

Test(reduce, signed_overflow_wraps) {
  int8_t a = 127, b = 1, out;
  tally_reduce_apply(&out, &a, &b, 1, TALLY_INT8, TALLY_SUM);
  cr_assert_eq(out, -128);
  int64_t x = INT64_MAX, y = 2, p;
  tally_reduce_apply(&p, &x, &y, 1, TALLY_INT64, TALLY_PROD);
  cr_assert_eq(p, -2);
}

Test(reduce, avg_divides_and_truncates) {
  int32_t v[3] = {-7, 7, 8};
  tally_reduce_finish_avg(v, 3, TALLY_INT32, 2);
  cr_assert_eq(v[0], -3);
  cr_assert_eq(v[1], 3);
  cr_assert_eq(v[2], 4);
  uint64_t u = 10;
  tally_reduce_finish_avg(&u, 1, TALLY_UINT64, 4);
  cr_assert_eq(u, 2);
  float f = 1.0f;
  tally_reduce_finish_avg(&f, 1, TALLY_FLOAT32, 3);
  cr_assert_float_eq(f, 1.0f / 3.0f, 1e-7);
  uint16_t h = tally_float_to_half(3.0f);
  tally_reduce_finish_avg(&h, 1, TALLY_FLOAT16, 2);
  cr_assert_eq(tally_half_to_float(h), 1.5f);
}

Test(fp16, exact_values_and_limits) {
  cr_assert_eq(tally_float_to_half(1.0f), 0x3c00);
  cr_assert_eq(tally_float_to_half(-2.0f), 0xc000);
  cr_assert_eq(tally_float_to_half(65504.0f), 0x7bff); /* largest finite */
  cr_assert_eq(tally_float_to_half(65520.0f), 0x7c00); /* halfway to the next: rounds to even = inf */
  cr_assert_eq(tally_float_to_half(65519.0f), 0x7bff);
  cr_assert_eq(tally_float_to_half(1e9f), 0x7c00);
  cr_assert_eq(tally_half_to_float(0x0001), ldexpf(1, -24)); /* smallest subnormal */
  cr_assert_eq(tally_float_to_half(ldexpf(1, -24)), 0x0001);
  cr_assert_eq(tally_float_to_half(ldexpf(1, -25)), 0x0000); /* halfway to zero: even is zero */
  cr_assert_eq(tally_float_to_half(ldexpf(3, -26)), 0x0001); /* 0.75 ulp rounds up */
  cr_assert_eq(tally_half_to_float(0x03ff), ldexpf(1023, -24)); /* largest subnormal */
}

Test(fp16, round_to_nearest_even) {
  /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1). */
  cr_assert_eq(tally_float_to_half(1.0f + ldexpf(1, -11)), 0x3c00);
  /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even). */
  cr_assert_eq(tally_float_to_half(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
  cr_assert_eq(tally_float_to_half(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01); /* above half: up */
  for (uint32_t h = 0; h < 0x7c00; h++) /* every finite half survives the round trip */
    cr_assert_eq(tally_float_to_half(tally_half_to_float((uint16_t)h)), h, "0x%04x", h);
}

Test(bf16, round_to_nearest_even) {
  cr_assert_eq(tally_float_to_bf16(1.0f), 0x3f80);
  cr_assert_eq(tally_float_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80); /* tie to even */
  cr_assert_eq(tally_float_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
  cr_assert_eq(tally_float_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -12)), 0x3f81);
  cr_assert_eq(tally_float_to_bf16(INFINITY), 0x7f80);
  cr_assert_eq(tally_float_to_bf16(3.4e38f), 0x7f80); /* rounds past the largest finite */
  cr_assert_eq(tally_bf16_to_float(0x4049), 3.140625f);
}

Test(reduce, nan_and_infinity_pass_through) {
  for (int t = TALLY_FLOAT16; t <= TALLY_FLOAT64; t++) {
    unsigned char a[16], b[16], out[16];
    typed_set(a, 0, t, NAN);
    typed_set(b, 0, t, 1.0);
    typed_set(a, 1, t, 1.0);
    typed_set(b, 1, t, NAN);
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      tally_reduce_apply(out, a, b, 2, t, op);
      cr_assert(isnan(typed_get(out, 0, t)) && isnan(typed_get(out, 1, t)), "%s %s lost a NaN",
                tally_datatype_name(t), tally_op_name(op));
    }
    typed_set(a, 0, t, INFINITY);
    typed_set(b, 0, t, 5.0);
    typed_set(a, 1, t, -INFINITY);
    typed_set(b, 1, t, 5.0);
    tally_reduce_apply(out, a, b, 2, t, TALLY_SUM);
    cr_assert_eq(typed_get(out, 0, t), INFINITY, "%s", tally_datatype_name(t));
    cr_assert_eq(typed_get(out, 1, t), -INFINITY, "%s", tally_datatype_name(t));
    tally_reduce_apply(out, a, b, 2, t, TALLY_MAX);
    cr_assert_eq(typed_get(out, 0, t), INFINITY);
    cr_assert_eq(typed_get(out, 1, t), 5.0);
  }
}

Test(names, round_trip_and_out_of_range) {
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++) {
    cr_assert_eq(tally_datatype_from_name(tally_datatype_name(t)), t);
    cr_assert_gt(tally_datatype_size(t), 0);
  }
  for (int op = 0; op < TALLY_NUM_OPS; op++) cr_assert_eq(tally_op_from_name(tally_op_name(op)), op);
  cr_assert_eq(tally_datatype_from_name("bf16"), TALLY_BFLOAT16);
  cr_assert_eq(tally_datatype_from_name("fp16"), TALLY_FLOAT16);
  cr_assert_null(tally_datatype_name(TALLY_NUM_DATATYPES));
  cr_assert_eq(tally_datatype_size((tally_datatype_t)-1), 0);
  cr_assert_null(tally_op_name(TALLY_NUM_OPS));
  cr_assert_eq(tally_datatype_from_name("complex"), -1);
  cr_assert_eq(tally_op_from_name("xor"), -1);
}
