/* Argument checks and mappings, and list staging (see tensor_args.h). */
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

void check_rank(int64_t rank, int size, const char *what) {
  TORCH_CHECK(rank >= 0 && rank < size, "Tally backend: ", what, " ", rank, " is out of range [0, ", size, ")");
}

std::vector<size_t> split_counts(const at::Tensor &t, const std::vector<int64_t> &splits, int size, const char *what) {
  TORCH_CHECK(t.dim() >= 1, "Tally backend: ", what, " must have at least one dimension to split along dim 0");
  int64_t rows = t.size(0), row_elements = 1;
  for (int64_t d = 1; d < t.dim(); d++) row_elements *= t.size(d);
  if (splits.empty()) {
    TORCH_CHECK(rows % size == 0, "Tally backend: ", what, "'s dim 0 (", rows, ") does not divide into ", size,
                " equal parts; pass split sizes");
    return std::vector<size_t>(size, static_cast<size_t>(rows / size * row_elements));
  }
  TORCH_CHECK(splits.size() == static_cast<size_t>(size), "Tally backend: ", what, " split sizes has ", splits.size(),
              " entries; it needs one per rank (", size, ")");
  std::vector<size_t> counts;
  int64_t total = 0;
  for (int64_t s : splits) {
    TORCH_CHECK(s >= 0, "Tally backend: ", what, " split sizes has a negative entry (", s, ")");
    total += s;
    counts.push_back(static_cast<size_t>(s * row_elements));
  }
  TORCH_CHECK(total == rows, "Tally backend: ", what, " split sizes add up to ", total, " rows but dim 0 has ", rows);
  return counts;
}

std::vector<size_t> numels(const std::vector<at::Tensor> &tensors) {
  std::vector<size_t> counts;
  for (const auto &t : tensors) counts.push_back(static_cast<size_t>(t.numel()));
  return counts;
}

std::vector<size_t> displacements(const std::vector<size_t> &counts) {
  std::vector<size_t> displs;
  size_t offset = 0;
  for (size_t c : counts) {
    displs.push_back(offset);
    offset += c;
  }
  return displs;
}

at::Tensor flatten_into_one(const std::vector<at::Tensor> &tensors) {
  std::vector<at::Tensor> flat;
  for (const auto &t : tensors) flat.push_back(t.view(-1));
  return at::cat(flat);
}

void unflatten_from_one(const at::Tensor &flat, std::vector<at::Tensor> &tensors) {
  int64_t offset = 0;
  for (auto &t : tensors) {
    t.view(-1).copy_(flat.narrow(0, offset, t.numel()));
    offset += t.numel();
  }
}

}  // namespace tally_torch
