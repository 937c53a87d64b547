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
/* The same, but input `own` (0 <= own < n) is read from own_input instead: a rank's own data
 * where the others' lie in shared areas. own = -1 reads every input at first + k * stride. */
void tally_reduce_in_order_own(void *out, const void *first, size_t stride, int n, int own, const void *own_input,
                               size_t count, tally_datatype_t dt, tally_op_t op);

float tally_half_to_float(uint16_t h);
uint16_t tally_float_to_half(float f);
float tally_bf16_to_float(uint16_t b);
uint16_t tally_float_to_bf16(float f);

/* --- The 16-bit wire formats of compressed fp32 collectives (TALLY_COMPRESS) ---------------------
 *
 * A compressed call keeps fp32 everywhere but on network links: the sender rounds each fp32 value
 * to bf16 or fp16 (round to nearest even), the receiver widens it back (exact) and reduces in fp32.
 * NaN and infinity pass through (NaN comes out quiet); a finite value beyond the format's largest
 * (fp16: 65504, bf16: about 3.39e38) saturates to it instead of becoming infinity.
 *
 * The error bound. u, the unit roundoff: 2^-8 for bf16 (8 significant bits), 2^-11 for fp16 (11
 * bits, normal range), u32 = 2^-24 for fp32. Every rounding of a value v, to 16 bits or in an fp32
 * addition, errs by at most u|v| (16 bits) or u32|v|, and every value a reduction holds is a partial
 * sum, at most M in magnitude. With r 16-bit roundings and a fp32 operations on the way to one
 * element of the result, its error is at most (r u + a u32) M, and M <= sum|x_i| + that error, so
 *
 *     |result - exact sum| <= e / (1 - e) * sum_i |x_i|,   e = r u + a u32   (for e < 1)
 *
 * relative to the sum of magnitudes: against |sum x_i| no bound exists, since cancellation can
 * leave an exact sum of 0 with a rounded one that is not. Per element, on n ranks, at worst (every
 * hop across hosts):
 *     ring allreduce      r = n      (n-1 hops each round a partial sum; the block's owner rounds the
 *                                     result once more before the allgather spreads it)   a = n-1
 *     ring reduce-scatter r = n-1, a = n-1;   the small gathered allreduce r = 1, a = n-1
 *     rhd allreduce       r = log2(p') + 2 (p' the largest power of two <= n: the fold, each halving
 *                         round, the owner's rounding; recursive doubling of the whole vector: the
 *                         fold, each round's two vectors, which hold disjoint parts of the sum and so
 *                         count once, and the last rounding)                       a = log2(p') + 1
 *     rhd reduce-scatter  r = log2(p') + 2 (the fold, the halving, the unfold)     a = log2(p') + 1
 *     hier allreduce      r = m on m hosts (only the cross-host ring rounds)       a = n-1
 *     tree allreduce      r = D, the trees' levels (floor(log2 n) + 1: a hop up each edge of the
 *                         longest path, then the root's rounding)                 a = n-1
 * AVG divides the sum by n (one more fp32 rounding, a + 1) and the bound scales with it. fp16 only
 * holds this above 2^-14 (its subnormals have an absolute step of 2^-24) and below 65504
 * (saturation). Allgather and broadcast round each value once: r = 1, a = 0. */
enum tally_wire_format { TALLY_WIRE_EXACT, TALLY_WIRE_BF16, TALLY_WIRE_FP16, TALLY_NUM_WIRE_FORMATS };

/* "none", "bf16", "fp16"; "unknown" outside the enum. */
const char *tally_wire_format_name(int format);
/* out[i] = in[i] rounded to `format` (16-bit values); returns how many finite values saturated
 * (the first time any do, a warning says so in the log, once per process). */
size_t tally_wire_pack(void *out, const float *in, size_t count, enum tally_wire_format format);
/* out[i] = in[i] widened to fp32 (exact). */
void tally_wire_unpack(float *out, const void *in, size_t count, enum tally_wire_format format);
/* out[i] = a[i] + in[i] widened, in fp32: a received 16-bit partial reduced into fp32 in one pass.
 * out may alias a. */
void tally_wire_unpack_add(float *out, const float *a, const void *in, size_t count, enum tally_wire_format format);
/* buf[i] = buf[i] rounded to `format` and widened again: the value every receiver of buf[i] sees;
 * returns how many finite values saturated (logged as tally_wire_pack does). */
size_t tally_wire_round(float *buf, size_t count, enum tally_wire_format format);

/* -1 when unknown. Accepts the nccl-tests names and common aliases (fp16, bf16, fp32, ...). */
int tally_datatype_from_name(const char *name);
int tally_op_from_name(const char *name);

#endif
