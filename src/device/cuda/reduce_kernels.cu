/* CUDA element-wise reductions: the GPU twin of reduce.c, equal to it bit for bit.
 *
 * - One kernel template over (element type, op functor), instantiated for every datatype x op (AVG
 *   runs SUM's kernel, then DivideOp's); the host picks the instantiation with a switch once per call.
 * - When out, a and b are all 16-byte aligned, each thread handles one 16-byte vector (uint4) per
 *   grid-stride iteration and a scalar tail takes the last count % (16 / sizeof(T)) elements;
 *   otherwise the whole range is a scalar grid-stride loop. 256 threads per block, at most 1024 blocks.
 *   Each element is read before it is written by the same thread, so out may alias a or b exactly.
 * - Element semantics are reduce.c's: signed integers add and multiply through the unsigned type of
 *   the same width (wraps, never UB); float MIN/MAX use the same comparison as reduce.c (a NaN `a` wins,
 *   else a NaN `b` wins), so they select one input's bits; fp16/bf16 compute in float through
 *   cuda_fp16.h / cuda_bf16.h conversions (round to nearest even), and write NaN as reduce.c's
 *   conversions do (fp16: sign | 0x7e00; bf16: sign and payload kept, quiet bit set).
 * - Arithmetic goes through the _rn intrinsics, so -fmad and -prec-div cannot change a bit. Build
 *   without -ftz=true (and so without --use_fast_math): flushing float subnormals would break equality.
 * - What cannot match: the payload of a NaN *produced* by SUM/PROD/AVG arithmetic (inf - inf, or a NaN
 *   input). The GPU makes the canonical NaN 0x7fffffff; the host's NaN is whatever its CPU propagates.
 *   Both are NaN.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "reduce_kernels.h"

namespace {

constexpr unsigned kThreadsPerBlock = 256;
constexpr unsigned kMaxBlocks = 1024;
constexpr size_t kVectorBytes = sizeof(uint4);

// ---- fp16 / bf16: float conversions, NaN written the way reduce.c writes it ----

__device__ __forceinline__ bool float_is_nan(float f) { return (__float_as_uint(f) & 0x7fffffffu) > 0x7f800000u; }

template <typename T>
struct Float16;

template <>
struct Float16<__half> {
  static __device__ __forceinline__ float to_float(__half h) { return __half2float(h); }
  static __device__ __forceinline__ __half from_float(float f) {
    const unsigned sign = (__float_as_uint(f) >> 16) & 0x8000u;
    if (float_is_nan(f)) return __ushort_as_half(static_cast<unsigned short>(sign | 0x7e00u));
    return __float2half_rn(f);
  }
  // What reduce.c's trip through float makes of h: h itself, except that a NaN keeps only its sign.
  static __device__ __forceinline__ __half round_trip(__half h) {
    const unsigned bits = __half_as_ushort(h);
    if ((bits & 0x7fffu) > 0x7c00u) return __ushort_as_half(static_cast<unsigned short>((bits & 0x8000u) | 0x7e00u));
    return h;
  }
};

template <>
struct Float16<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 b) { return __bfloat162float(b); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float f) {
    if (float_is_nan(f)) return __ushort_as_bfloat16(static_cast<unsigned short>((__float_as_uint(f) >> 16) | 0x40u));
    return __float2bfloat16_rn(f);
  }
  // A bf16 NaN keeps its sign and payload and becomes quiet; anything else comes back as it was.
  static __device__ __forceinline__ __nv_bfloat16 round_trip(__nv_bfloat16 b) {
    const unsigned bits = __bfloat16_as_ushort(b);
    if ((bits & 0x7fffu) > 0x7f80u) return __ushort_as_bfloat16(static_cast<unsigned short>(bits | 0x40u));
    return b;
  }
};

template <typename T>
constexpr bool kIsFloat16 = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// IEEE operations rounded to nearest even whatever -fmad / -prec-div say.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// reduce.c's OP_FMIN / OP_FMAX choice: keep a if it is NaN or strictly better, else b (NaN or not).
template <typename F>
__device__ __forceinline__ bool min_keeps_a(F a, F b) {
  return a < b || a != a;
}
template <typename F>
__device__ __forceinline__ bool max_keeps_a(F a, F b) {
  return a > b || a != a;
}

// ---- ops: each maps (a, b) to the result element; kUsesB false means b is never read ----

template <typename T>
struct SumOp {
  static constexpr bool kUsesB = true;
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
    } else if constexpr (kIsFloat16<T>) {
      return Float16<T>::from_float(add_rn(Float16<T>::to_float(a), Float16<T>::to_float(b)));
    } else {
      return add_rn(a, b);
    }
  }
};

template <typename T>
struct ProdOp {
  static constexpr bool kUsesB = true;
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
    } else if constexpr (kIsFloat16<T>) {
      return Float16<T>::from_float(mul_rn(Float16<T>::to_float(a), Float16<T>::to_float(b)));
    } else {
      return mul_rn(a, b);
    }
  }
};

template <typename T>
struct MinOp {
  static constexpr bool kUsesB = true;
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      return b < a ? b : a;
    } else if constexpr (kIsFloat16<T>) {
      // Compare in float as reduce.c does, but return the chosen input itself: its trip through float is exact.
      return Float16<T>::round_trip(min_keeps_a(Float16<T>::to_float(a), Float16<T>::to_float(b)) ? a : b);
    } else {
      return min_keeps_a(a, b) ? a : b;
    }
  }
};

template <typename T>
struct MaxOp {
  static constexpr bool kUsesB = true;
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      return b > a ? b : a;
    } else if constexpr (kIsFloat16<T>) {
      return Float16<T>::round_trip(max_keeps_a(Float16<T>::to_float(a), Float16<T>::to_float(b)) ? a : b);
    } else {
      return max_keeps_a(a, b) ? a : b;
    }
  }
};

// AVG's last step: x / n. The second operand is ignored.
template <typename T>
struct DivideOp {
  static constexpr bool kUsesB = false;
  int n;
  __device__ __forceinline__ T operator()(T x, T) const {
    if constexpr (std::is_integral_v<T>) {
      // As reduce.c: the 8-bit types divide in int, the wider ones in their own type.
      using D = std::conditional_t<(sizeof(T) < sizeof(int)), int, T>;
      return static_cast<T>(static_cast<D>(x) / static_cast<D>(n));
    } else if constexpr (kIsFloat16<T>) {
      return Float16<T>::from_float(div_rn(Float16<T>::to_float(x), static_cast<float>(n)));
    } else {
      return div_rn(x, static_cast<T>(n));
    }
  }
};

// ---- the kernel ----

// One 16-byte vector seen as elements; the memcpy calls compile to register moves.
template <typename T>
struct Lanes {
  static constexpr int kCount = static_cast<int>(kVectorBytes / sizeof(T));
  T element[kCount];
};

template <typename T>
__device__ __forceinline__ Lanes<T> load_lanes(const T *base, size_t vector_index) {
  const uint4 bits = reinterpret_cast<const uint4 *>(base)[vector_index];
  Lanes<T> lanes;
  memcpy(&lanes, &bits, sizeof bits);
  return lanes;
}

template <typename T>
__device__ __forceinline__ void store_lanes(T *base, size_t vector_index, const Lanes<T> &lanes) {
  uint4 bits;
  memcpy(&bits, &lanes, sizeof bits);
  reinterpret_cast<uint4 *>(base)[vector_index] = bits;
}

// out[i] = op(a[i], b[i]) for i < count. `vectorised` promises that out, a and b are 16-byte aligned.
template <typename T, typename Op>
__global__ void __launch_bounds__(kThreadsPerBlock)
    elementwise_kernel(T *out, const T *a, const T *b, size_t count, bool vectorised, Op op) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const size_t first = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  size_t tail_start = 0;
  if (vectorised) {
    constexpr int kLanes = Lanes<T>::kCount;
    const size_t vectors = count / kLanes;
    for (size_t v = first; v < vectors; v += stride) {
      Lanes<T> x = load_lanes(a, v);
      const Lanes<T> y = Op::kUsesB ? load_lanes(b, v) : x;
#pragma unroll
      for (int k = 0; k < kLanes; k++) x.element[k] = op(x.element[k], y.element[k]);
      store_lanes(out, v, x);
    }
    tail_start = vectors * kLanes;
  }
  for (size_t i = tail_start + first; i < count; i += stride) {
    const T x = a[i];
    out[i] = op(x, Op::kUsesB ? b[i] : x);
  }
}

// ---- host side ----

template <typename T, typename Op>
cudaError_t launch(void *out, const void *a, const void *b, size_t count, Op op, cudaStream_t stream) {
  const uintptr_t addresses =
      reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b);
  const bool vectorised = addresses % kVectorBytes == 0;
  const size_t per_thread = vectorised ? kVectorBytes / sizeof(T) : 1;
  const size_t threads_wanted = count / per_thread + (count % per_thread != 0);
  const size_t blocks_wanted = threads_wanted / kThreadsPerBlock + (threads_wanted % kThreadsPerBlock != 0);
  const unsigned blocks = blocks_wanted < kMaxBlocks ? static_cast<unsigned>(blocks_wanted) : kMaxBlocks;
  elementwise_kernel<T, Op><<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<T *>(out), static_cast<const T *>(a),
                                                                     static_cast<const T *>(b), count, vectorised, op);
  return cudaGetLastError();
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls body(TypeTag<element type of dt>{}); dt must be in range.
template <typename Body>
cudaError_t with_element_type(tally_datatype_t dt, Body body) {
  switch (dt) {
    case TALLY_INT8: return body(TypeTag<int8_t>{});
    case TALLY_UINT8: return body(TypeTag<uint8_t>{});
    case TALLY_INT32: return body(TypeTag<int32_t>{});
    case TALLY_UINT32: return body(TypeTag<uint32_t>{});
    case TALLY_INT64: return body(TypeTag<int64_t>{});
    case TALLY_UINT64: return body(TypeTag<uint64_t>{});
    case TALLY_FLOAT16: return body(TypeTag<__half>{});
    case TALLY_BFLOAT16: return body(TypeTag<__nv_bfloat16>{});
    case TALLY_FLOAT32: return body(TypeTag<float>{});
    case TALLY_FLOAT64: return body(TypeTag<double>{});
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

extern "C" cudaError_t tally_cuda_reduce(void *out, const void *a, const void *b, size_t count, tally_datatype_t dt,
                                         tally_op_t op, cudaStream_t stream) {
  if (static_cast<unsigned>(dt) >= TALLY_NUM_DATATYPES || static_cast<unsigned>(op) >= TALLY_NUM_OPS)
    return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  return with_element_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case TALLY_SUM:
      case TALLY_AVG: return launch<T>(out, a, b, count, SumOp<T>{}, stream); /* AVG divides in finish_avg */
      case TALLY_PROD: return launch<T>(out, a, b, count, ProdOp<T>{}, stream);
      case TALLY_MIN: return launch<T>(out, a, b, count, MinOp<T>{}, stream);
      case TALLY_MAX: return launch<T>(out, a, b, count, MaxOp<T>{}, stream);
      default: return cudaErrorInvalidValue;
    }
  });
}

extern "C" cudaError_t tally_cuda_finish_avg(void *buf, size_t count, tally_datatype_t dt, int n, cudaStream_t stream) {
  if (static_cast<unsigned>(dt) >= TALLY_NUM_DATATYPES) return cudaErrorInvalidValue;
  /* n is the number of ranks: dividing by 1 changes nothing, and n < 1 would divide by zero. */
  if (count == 0 || n <= 1) return cudaSuccess;
  return with_element_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return launch<T>(buf, buf, nullptr, count, DivideOp<T>{n}, stream);
  });
}
