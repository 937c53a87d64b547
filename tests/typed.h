/* Test helpers: read and write elements of any Tally datatype as doubles, and the deterministic
 * inputs and exact expected results the collective tests compare against. */
#ifndef TALLY_TEST_TYPED_H
#define TALLY_TEST_TYPED_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/reduce.h"
#include "tally.h"

static inline double typed_get(const void *buf, size_t i, tally_datatype_t t) {
  switch (t) {
    case TALLY_INT8: return ((const int8_t *)buf)[i];
    case TALLY_UINT8: return ((const uint8_t *)buf)[i];
    case TALLY_INT32: return ((const int32_t *)buf)[i];
    case TALLY_UINT32: return ((const uint32_t *)buf)[i];
    case TALLY_INT64: return (double)((const int64_t *)buf)[i];
    case TALLY_UINT64: return (double)((const uint64_t *)buf)[i];
    case TALLY_FLOAT16: return tally_half_to_float(((const uint16_t *)buf)[i]);
    case TALLY_BFLOAT16: return tally_bf16_to_float(((const uint16_t *)buf)[i]);
    case TALLY_FLOAT32: return ((const float *)buf)[i];
    case TALLY_FLOAT64: return ((const double *)buf)[i];
    default: return 0;
  }
}

static inline void typed_set(void *buf, size_t i, tally_datatype_t t, double v) {
  switch (t) {
    case TALLY_INT8: ((int8_t *)buf)[i] = (int8_t)v; break;
    case TALLY_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    case TALLY_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case TALLY_UINT32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
    case TALLY_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case TALLY_UINT64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
    case TALLY_FLOAT16: ((uint16_t *)buf)[i] = tally_float_to_half((float)v); break;
    case TALLY_BFLOAT16: ((uint16_t *)buf)[i] = tally_float_to_bf16((float)v); break;
    case TALLY_FLOAT32: ((float *)buf)[i] = (float)v; break;
    case TALLY_FLOAT64: ((double *)buf)[i] = v; break;
    default: break;
  }
}

static inline int typed_is_signed(tally_datatype_t t) {
  return t != TALLY_UINT8 && t != TALLY_UINT32 && t != TALLY_UINT64;
}

/* Rank r's input element i: small integers, exact in every type, whose sums over 8 ranks and
 * products fit in int8. */
static inline double input_value(int r, size_t i, tally_datatype_t t, tally_op_t op) {
  if (op == TALLY_PROD) return (r + i) % 4 == 0 ? 2 : 1;
  double v = (double)((r * 7 + i * 3) % 10);
  return typed_is_signed(t) ? v - 4 : v;
}

/* The exact result of `op` over ranks 0..n-1 for element i. AVG follows Tally: the sum in the
 * datatype, then a division (truncating for integers, in float for fp16/bf16). */
static inline double expected_value(int n, size_t i, tally_datatype_t t, tally_op_t op) {
  double acc = input_value(0, i, t, op);
  for (int r = 1; r < n; r++) {
    double v = input_value(r, i, t, op);
    if (op == TALLY_SUM || op == TALLY_AVG) acc += v;
    if (op == TALLY_PROD) acc *= v;
    if (op == TALLY_MIN && v < acc) acc = v;
    if (op == TALLY_MAX && v > acc) acc = v;
  }
  if (op == TALLY_AVG) {
    if (t == TALLY_FLOAT64) return acc / n;
    if (t == TALLY_FLOAT32 || t == TALLY_FLOAT16 || t == TALLY_BFLOAT16) {
      unsigned char tmp[8];
      typed_set(tmp, 0, t, (double)((float)acc / (float)n));
      return typed_get(tmp, 0, t);
    }
    long long q = (long long)acc / n; /* C division truncates toward zero */
    return (double)q;
  }
  return acc;
}

#endif
