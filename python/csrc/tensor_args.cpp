/* Tensor, dtype and reduce-op checks and mappings (see tensor_args.h). */
#include "tensor_args.h"

#include <c10/util/Exception.h>

namespace tally_torch {

tally_datatype_t to_tally_datatype(const at::Tensor &t) {
  switch (t.scalar_type()) {
    case at::kChar: return TALLY_INT8;
    case at::kByte: return TALLY_UINT8;
    case at::kInt: return TALLY_INT32;
    case at::kLong: return TALLY_INT64;
    case at::kHalf: return TALLY_FLOAT16;
    case at::kBFloat16: return TALLY_BFLOAT16;
    case at::kFloat: return TALLY_FLOAT32;
    case at::kDouble: return TALLY_FLOAT64;
    default:
      TORCH_CHECK_TYPE(false, "Tally backend: dtype ", t.scalar_type(),
                       " is not supported (supported: int8, uint8, int32, int64, float16, bfloat16, float32, float64)");
  }
}

tally_op_t to_tally_op(const c10d::ReduceOp &op) {
  switch (op.op_) {
    case c10d::ReduceOp::SUM: return TALLY_SUM;
    case c10d::ReduceOp::PRODUCT: return TALLY_PROD;
    case c10d::ReduceOp::MIN: return TALLY_MIN;
    case c10d::ReduceOp::MAX: return TALLY_MAX;
    case c10d::ReduceOp::AVG: return TALLY_AVG;
    default:
      TORCH_CHECK_VALUE(false, "Tally backend: reduce op ", static_cast<int>(op.op_),
                        " is not supported (supported: SUM, PRODUCT, MIN, MAX, AVG; not BAND, BOR, BXOR, PREMUL_SUM)");
  }
}

void check_tensor(const at::Tensor &t, const char *what) {
  TORCH_CHECK(t.defined(), "Tally backend: ", what, " is an undefined tensor");
  TORCH_CHECK(t.device().is_cpu(), "Tally backend: ", what, " is on ", t.device(),
              "; only CPU tensors are supported (this build of Tally has no CUDA support)");
  TORCH_CHECK(t.layout() == at::kStrided, "Tally backend: ", what, " has layout ", t.layout(),
              "; only dense (strided) tensors are supported");
  TORCH_CHECK(t.is_contiguous(), "Tally backend: ", what,
              " is not contiguous; only contiguous tensors are supported (call .contiguous() first)");
  to_tally_datatype(t);
}

void check_single(const std::vector<at::Tensor> &tensors, const char *what) {
  TORCH_CHECK(tensors.size() == 1, "Tally backend: ", what, " must be a list of exactly one tensor per rank, got ",
              tensors.size());
  check_tensor(tensors[0], what);
}

void check_same(const std::vector<at::Tensor> &tensors, const at::Tensor &like, bool same_numel, const char *what) {
  for (const auto &t : tensors) {
    check_tensor(t, what);
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "Tally backend: ", what, " mixes dtypes ", t.scalar_type(),
                " and ", like.scalar_type());
    TORCH_CHECK(!same_numel || t.numel() == like.numel(), "Tally backend: ", what, " has a tensor of ", t.numel(),
                " elements where ", like.numel(), " are expected");
  }
}

}  // namespace tally_torch
