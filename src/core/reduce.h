/* Element-wise reductions for every datatype and op, and the fp16/bf16 conversions they use.
 * The one place in Tally where data is combined. */
#ifndef TALLY_REDUCE_H
#define TALLY_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

/* out[i] = a[i] OP b[i] for i < count; out may alias a or b (exactly, not partially). AVG reduces
 * as SUM. Integer SUM/PROD wrap; float MIN/MAX propagate NaN; fp16/bf16 compute in float and round
 * to nearest even. An out-of-range dt or op does nothing (callers validate them first). */
void tally_reduce_apply(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt, tally_op_t op);
/* AVG's last step: buf[i] /= n; integers truncate toward zero (C division), fp16/bf16 go through
 * float and round to nearest even. n <= 1 leaves buf as it is. */
void tally_reduce_finish_avg(void *buf, size_t count, tally_datatype_t dt, int n);

/* out = in[0] OP in[1] OP ... OP in[n-1], always in this order, so every rank that reduces the
 * same inputs gets the same bits; input k is at first + k * stride bytes, n >= 2. AVG divides by
 * n at the end. */
void tally_reduce_in_order(void *out, const void *first, size_t stride, int n, size_t count, tally_datatype_t dt,
                           tally_op_t op);

float tally_half_to_float(uint16_t h);
uint16_t tally_float_to_half(float f);
float tally_bf16_to_float(uint16_t b);
uint16_t tally_float_to_bf16(float f);

/* -1 when unknown. Accepts the nccl-tests names and common aliases (fp16, bf16, fp32, ...). */
int tally_datatype_from_name(const char *name);
int tally_op_from_name(const char *name);

#endif
