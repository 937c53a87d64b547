/* The GPU reductions (src/device/cuda/reduce_kernels.cu) against the host ones (src/core/reduce.c), bit for bit:
 * every datatype x op, counts from 1 to just over 2^20, 16-byte-aligned buffers (vector path) and
 * buffers one element off (scalar path), out separate from or aliasing a or b, and AVG's division.
 * A NaN matches any NaN for the float types (the payload of a NaN made by arithmetic differs between
 * CPU and GPU). Without a CUDA device the test prints why and exits 77 (skipped). */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/reduce.h"
#include "device/cuda/reduce_kernels.h"
#include "tally.h"

#define EXIT_SKIPPED 77

static void check_cuda(cudaError_t err, const char *call, int line) {
  if (err == cudaSuccess) return;
  fprintf(stderr, "test_cuda_reduce.c:%d: %s failed: %s\n", line, call, cudaGetErrorString(err));
  exit(EXIT_FAILURE);
}
#define CHECK_CUDA(call) check_cuda((call), #call, __LINE__)

/* ---- deterministic inputs ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t next_random(void) { /* xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Uniform in [-limit, limit). */
static double uniform(double limit) { return ((double)(next_random() >> 11) * 0x1p-52 - 1.0) * limit; }

static float float_from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static double double_from_bits(uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

/* Which kind of value a float element gets: mostly ordinary numbers of either sign, sometimes a
 * signed zero, a subnormal, a huge value, an infinity or (only when NaNs are wanted) a NaN. */
typedef enum { VALUE_ORDINARY, VALUE_ZERO, VALUE_SUBNORMAL, VALUE_HUGE, VALUE_INFINITY, VALUE_NAN } value_kind_t;

static value_kind_t pick_kind(int with_nans) {
  switch (next_random() % 64) {
    case 0: return VALUE_ZERO;
    case 1: return VALUE_SUBNORMAL;
    case 2: return VALUE_HUGE;
    case 3: return VALUE_INFINITY;
    case 4:
    case 5: return with_nans ? VALUE_NAN : VALUE_ORDINARY;
    default: return VALUE_ORDINARY;
  }
}

/* Each returns the bits of one value; `sign` is the sign bit in place; NaN payloads are random and
 * non-zero, quiet or signalling. */
static uint16_t random_half(int with_nans) {
  uint64_t r = next_random();
  uint16_t sign = (uint16_t)(r & 0x8000u), low = (uint16_t)((r >> 16) & 0x3ffu) | 1u;
  switch (pick_kind(with_nans)) {
    case VALUE_ZERO: return sign;
    case VALUE_SUBNORMAL: return sign | low;
    case VALUE_HUGE: return tally_float_to_half((float)uniform(65504.0)); /* products overflow to infinity */
    case VALUE_INFINITY: return sign | 0x7c00u;
    case VALUE_NAN: return sign | 0x7c00u | low;
    default: return tally_float_to_half((float)uniform(100.0));
  }
}

static uint16_t random_bf16(int with_nans) {
  uint64_t r = next_random();
  uint16_t sign = (uint16_t)(r & 0x8000u), low = (uint16_t)((r >> 16) & 0x7fu) | 1u;
  switch (pick_kind(with_nans)) {
    case VALUE_ZERO: return sign;
    case VALUE_SUBNORMAL: return sign | low;
    case VALUE_HUGE: return tally_float_to_bf16((float)(uniform(1.0) * 0x1p120));
    case VALUE_INFINITY: return sign | 0x7f80u;
    case VALUE_NAN: return sign | 0x7f80u | low;
    default: return tally_float_to_bf16((float)uniform(1000.0));
  }
}

static float random_float(int with_nans) {
  uint64_t r = next_random();
  uint32_t sign = (uint32_t)r & 0x80000000u, low = (uint32_t)(r >> 32) & 0x7fffffu;
  switch (pick_kind(with_nans)) {
    case VALUE_ZERO: return float_from_bits(sign);
    case VALUE_SUBNORMAL: return float_from_bits(sign | low | 1u);
    case VALUE_HUGE: return (float)(uniform(1.0) * 0x1p120);
    case VALUE_INFINITY: return float_from_bits(sign | 0x7f800000u);
    case VALUE_NAN: return float_from_bits(sign | 0x7f800000u | low | 1u);
    default: return (float)uniform(1000.0);
  }
}

static double random_double(int with_nans) {
  uint64_t r = next_random(), sign = r & 0x8000000000000000ull, low = (next_random() >> 12) | 1u;
  switch (pick_kind(with_nans)) {
    case VALUE_ZERO: return double_from_bits(sign);
    case VALUE_SUBNORMAL: return double_from_bits(sign | low);
    case VALUE_HUGE: return uniform(1.0) * 0x1p1000;
    case VALUE_INFINITY: return double_from_bits(sign | 0x7ff0000000000000ull);
    case VALUE_NAN: return double_from_bits(sign | 0x7ff0000000000000ull | low);
    default: return uniform(1000.0);
  }
}

/* Integers get all their bits random, so SUM and PROD wrap and AVG divides negative numbers. */
static void fill(void *buf, size_t count, tally_datatype_t dt, int with_nans) {
  for (size_t i = 0; i < count; i++) {
    switch (dt) {
      case TALLY_INT8:
      case TALLY_UINT8: ((uint8_t *)buf)[i] = (uint8_t)next_random(); break;
      case TALLY_INT32:
      case TALLY_UINT32: ((uint32_t *)buf)[i] = (uint32_t)next_random(); break;
      case TALLY_INT64:
      case TALLY_UINT64: ((uint64_t *)buf)[i] = next_random(); break;
      case TALLY_FLOAT16: ((uint16_t *)buf)[i] = random_half(with_nans); break;
      case TALLY_BFLOAT16: ((uint16_t *)buf)[i] = random_bf16(with_nans); break;
      case TALLY_FLOAT32: ((float *)buf)[i] = random_float(with_nans); break;
      case TALLY_FLOAT64: ((double *)buf)[i] = random_double(with_nans); break;
      default: break;
    }
  }
}

/* Copies a[i] into b[i] for about one element in 32, so that MIN and MAX meet ties (+0 vs -0 too). */
static void make_some_ties(void *b, const void *a, size_t count, size_t size) {
  for (size_t i = 0; i < count; i++)
    if (next_random() % 32 == 0) memcpy((char *)b + i * size, (const char *)a + i * size, size);
}

/* ---- comparison ---- */

static int is_float_type(tally_datatype_t dt) {
  return dt == TALLY_FLOAT16 || dt == TALLY_BFLOAT16 || dt == TALLY_FLOAT32 || dt == TALLY_FLOAT64;
}

static int element_is_nan(const unsigned char *p, tally_datatype_t dt) {
  uint16_t h;
  uint32_t f;
  uint64_t d;
  switch (dt) {
    case TALLY_FLOAT16: memcpy(&h, p, sizeof h); return (h & 0x7fffu) > 0x7c00u;
    case TALLY_BFLOAT16: memcpy(&h, p, sizeof h); return (h & 0x7fffu) > 0x7f80u;
    case TALLY_FLOAT32: memcpy(&f, p, sizeof f); return (f & 0x7fffffffu) > 0x7f800000u;
    case TALLY_FLOAT64: memcpy(&d, p, sizeof d); return (d & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
    default: return 0;
  }
}

/* The first index where `got` differs from `want`, or count when none does. */
static size_t first_difference(const void *want, const void *got, size_t count, tally_datatype_t dt) {
  size_t size = tally_datatype_size(dt);
  const unsigned char *w = want, *g = got;
  for (size_t i = 0; i < count; i++) {
    const unsigned char *wi = w + i * size, *gi = g + i * size;
    if (memcmp(wi, gi, size) == 0) continue;
    if (is_float_type(dt) && element_is_nan(wi, dt) && element_is_nan(gi, dt)) continue;
    return i;
  }
  return count;
}

static void print_bytes(const unsigned char *p, size_t size) {
  for (size_t k = 0; k < size; k++) printf(" %02x", p[k]);
}

static int failures, checks;

/* Counts one check; prints one line when it fails. */
static void expect_equal(const char *what, tally_datatype_t dt, tally_op_t op, size_t count, int offset,
                         const void *want, const void *got) {
  size_t size = tally_datatype_size(dt), i = first_difference(want, got, count, dt);
  checks++;
  if (i == count) return;
  failures++;
  printf("FAIL %s: datatype %s, op %s, count %zu, offset %d: first difference at index %zu: host bytes", what,
         tally_datatype_name(dt), tally_op_name(op), count, offset, i);
  print_bytes((const unsigned char *)want + i * size, size);
  printf(", gpu bytes");
  print_bytes((const unsigned char *)got + i * size, size);
  printf("\n");
}

static void expect_status(const char *what, cudaError_t want, cudaError_t got) {
  checks++;
  if (got == want) return;
  failures++;
  printf("FAIL %s: returned %s, expected %s\n", what, cudaGetErrorName(got), cudaGetErrorName(want));
}

/* ---- the cases ---- */

#define MAX_COUNT (((size_t)1 << 20) + 5)
#define GUARD_BYTE 0xa5
static const size_t counts[] = {1, 3, 17, 1000, MAX_COUNT};

/* Host buffers of MAX_COUNT elements; device buffers of MAX_COUNT + 2, so that a one-element offset
 * still leaves a guard element after the last one. */
typedef struct {
  unsigned char *a, *b, *want, *want_avg, *got;
  unsigned char *dev_a, *dev_b, *dev_out;
  cudaStream_t stream;
} buffers_t;

static void download(void *host, const void *dev, size_t bytes) {
  CHECK_CUDA(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

static void upload(void *dev, const void *host, size_t bytes) {
  CHECK_CUDA(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
}

/* The elements just before (with an offset) and just after the output must keep their guard bytes. */
static void expect_guards_intact(const buffers_t *buf, tally_datatype_t dt, tally_op_t op, size_t count, int offset) {
  size_t size = tally_datatype_size(dt);
  unsigned char guard[8], seen[8];
  memset(guard, GUARD_BYTE, sizeof guard);
  download(seen, buf->dev_out + (offset + count) * size, size);
  expect_equal("write past the end", dt, op, 1, offset, guard, seen);
  if (offset) {
    download(seen, buf->dev_out, size);
    expect_equal("write before the start", dt, op, 1, offset, guard, seen);
  }
}

/* One datatype x op x count x alignment; the host inputs are already in buf->a and buf->b. */
static void run_case(const buffers_t *buf, tally_datatype_t dt, tally_op_t op, size_t count, int offset) {
  size_t size = tally_datatype_size(dt), bytes = count * size;
  unsigned char *dev_a = buf->dev_a + offset * size, *dev_b = buf->dev_b + offset * size;
  unsigned char *dev_out = buf->dev_out + offset * size;
  tally_reduce_apply(buf->want, buf->a, buf->b, count, dt, op);

  /* out separate from both inputs */
  upload(dev_a, buf->a, bytes);
  upload(dev_b, buf->b, bytes);
  CHECK_CUDA(cudaMemset(buf->dev_out, GUARD_BYTE, (MAX_COUNT + 2) * size));
  CHECK_CUDA(tally_cuda_reduce(dev_out, dev_a, dev_b, count, dt, op, buf->stream));
  CHECK_CUDA(cudaStreamSynchronize(buf->stream));
  download(buf->got, dev_out, bytes);
  expect_equal("out = a OP b", dt, op, count, offset, buf->want, buf->got);
  expect_guards_intact(buf, dt, op, count, offset);

  /* in place: out is a, then out is b */
  CHECK_CUDA(tally_cuda_reduce(dev_a, dev_a, dev_b, count, dt, op, buf->stream));
  CHECK_CUDA(cudaStreamSynchronize(buf->stream));
  download(buf->got, dev_a, bytes);
  expect_equal("a = a OP b", dt, op, count, offset, buf->want, buf->got);
  upload(dev_a, buf->a, bytes);
  CHECK_CUDA(tally_cuda_reduce(dev_b, dev_a, dev_b, count, dt, op, buf->stream));
  CHECK_CUDA(cudaStreamSynchronize(buf->stream));
  download(buf->got, dev_b, bytes);
  expect_equal("b = a OP b", dt, op, count, offset, buf->want, buf->got);

  if (op != TALLY_AVG) return;
  /* AVG's division of the host's sum; n = 1 must leave it as it is. */
  static const int rank_counts[] = {3, 1};
  for (size_t k = 0; k < sizeof rank_counts / sizeof rank_counts[0]; k++) {
    int n = rank_counts[k];
    upload(dev_out, buf->want, bytes);
    memcpy(buf->want_avg, buf->want, bytes);
    tally_reduce_finish_avg(buf->want_avg, count, dt, n);
    CHECK_CUDA(tally_cuda_finish_avg(dev_out, count, dt, n, buf->stream));
    CHECK_CUDA(cudaStreamSynchronize(buf->stream));
    download(buf->got, dev_out, bytes);
    expect_equal(n == 3 ? "finish_avg n=3" : "finish_avg n=1", dt, op, count, offset, buf->want_avg, buf->got);
  }
  expect_guards_intact(buf, dt, op, count, offset);
}

/* Bad arguments are refused before anything is enqueued; count 0 and n <= 1 do nothing. */
static void check_arguments(const buffers_t *buf) {
  expect_status("tally_cuda_reduce with count 0", cudaSuccess,
                tally_cuda_reduce(buf->dev_out, buf->dev_a, buf->dev_b, 0, TALLY_FLOAT32, TALLY_SUM, buf->stream));
  expect_status("tally_cuda_reduce with datatype TALLY_NUM_DATATYPES", cudaErrorInvalidValue,
                tally_cuda_reduce(buf->dev_out, buf->dev_a, buf->dev_b, 1, (tally_datatype_t)TALLY_NUM_DATATYPES,
                                  TALLY_SUM, buf->stream));
  expect_status("tally_cuda_reduce with op TALLY_NUM_OPS", cudaErrorInvalidValue,
                tally_cuda_reduce(buf->dev_out, buf->dev_a, buf->dev_b, 1, TALLY_FLOAT32, (tally_op_t)TALLY_NUM_OPS,
                                  buf->stream));
  expect_status("tally_cuda_finish_avg with datatype TALLY_NUM_DATATYPES", cudaErrorInvalidValue,
                tally_cuda_finish_avg(buf->dev_out, 1, (tally_datatype_t)TALLY_NUM_DATATYPES, 3, buf->stream));
  expect_status("tally_cuda_finish_avg with n 0", cudaSuccess,
                tally_cuda_finish_avg(buf->dev_out, 1, TALLY_INT32, 0, buf->stream));
  expect_status("tally_cuda_finish_avg with count 0", cudaSuccess,
                tally_cuda_finish_avg(buf->dev_out, 0, TALLY_INT32, 3, buf->stream));
  CHECK_CUDA(cudaStreamSynchronize(buf->stream));
}

int main(void) {
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    const char *why = err != cudaSuccess ? cudaGetErrorString(err) : "zero devices";
    printf("test_cuda_reduce: no CUDA device: skipped (%s)\n", why);
    return EXIT_SKIPPED;
  }

  const size_t max_bytes = MAX_COUNT * sizeof(uint64_t), max_dev_bytes = (MAX_COUNT + 2) * sizeof(uint64_t);
  buffers_t buf = {0};
  buf.a = malloc(max_bytes);
  buf.b = malloc(max_bytes);
  buf.want = malloc(max_bytes);
  buf.want_avg = malloc(max_bytes);
  buf.got = malloc(max_bytes);
  if (!buf.a || !buf.b || !buf.want || !buf.want_avg || !buf.got) {
    fprintf(stderr, "test_cuda_reduce: out of host memory\n");
    return EXIT_FAILURE;
  }
  CHECK_CUDA(cudaMalloc((void **)&buf.dev_a, max_dev_bytes)); /* cudaMalloc aligns to at least 256 bytes */
  CHECK_CUDA(cudaMalloc((void **)&buf.dev_b, max_dev_bytes));
  CHECK_CUDA(cudaMalloc((void **)&buf.dev_out, max_dev_bytes));
  CHECK_CUDA(cudaStreamCreate(&buf.stream));

  for (int dt = 0; dt < TALLY_NUM_DATATYPES; dt++) {
    for (int op = 0; op < TALLY_NUM_OPS; op++) {
      int with_nans = op == TALLY_MIN || op == TALLY_MAX;
      for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        for (int offset = 0; offset <= 1; offset++) { /* 0: vector path; 1: scalar path */
          fill(buf.a, counts[c], (tally_datatype_t)dt, with_nans);
          fill(buf.b, counts[c], (tally_datatype_t)dt, with_nans);
          make_some_ties(buf.b, buf.a, counts[c], tally_datatype_size((tally_datatype_t)dt));
          run_case(&buf, (tally_datatype_t)dt, (tally_op_t)op, counts[c], offset);
        }
      }
    }
  }
  check_arguments(&buf);

  CHECK_CUDA(cudaStreamDestroy(buf.stream));
  CHECK_CUDA(cudaFree(buf.dev_a));
  CHECK_CUDA(cudaFree(buf.dev_b));
  CHECK_CUDA(cudaFree(buf.dev_out));
  free(buf.a);
  free(buf.b);
  free(buf.want);
  free(buf.want_avg);
  free(buf.got);

  if (failures) {
    printf("test_cuda_reduce: %d of %d checks failed\n", failures, checks);
    return EXIT_FAILURE;
  }
  printf("test_cuda_reduce: all %d checks passed (%d datatypes x %d ops x %zu counts x 2 alignments)\n", checks,
         (int)TALLY_NUM_DATATYPES, (int)TALLY_NUM_OPS, sizeof counts / sizeof counts[0]);
  return EXIT_SUCCESS;
}
