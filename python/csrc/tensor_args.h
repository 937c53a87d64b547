/* Maps PyTorch arguments to Tally's C types, refusing (with a Python error that names what is not
 * supported) everything the backend cannot carry: non-CPU or non-contiguous tensors, dtypes without
 * a Tally datatype, reduce ops Tally lacks, ranks outside the group, split sizes that do not fit
 * their tensor. Also the staging of tensor lists through one flat buffer. */
#pragma once

#include <ATen/ATen.h>
#include <tally.h>

#include <torch/csrc/distributed/c10d/Types.hpp>
#include <vector>

namespace tally_torch {

/* The Tally datatype of `t`'s dtype; throws TypeError naming the dtype otherwise. */
tally_datatype_t to_tally_datatype(const at::Tensor &t);
/* The Tally op for `op`; throws ValueError naming the op otherwise. */
tally_op_t to_tally_op(const c10d::ReduceOp &op);
/* Throws unless `t` is a dense, contiguous CPU tensor; `what` names the argument. */
void check_tensor(const at::Tensor &t, const char *what);
/* Throws unless `tensors` holds exactly one checked tensor (Tally drives one buffer per rank). */
void check_single(const std::vector<at::Tensor> &tensors, const char *what);
/* Throws unless every tensor is checked and has `like`'s dtype and, if same_numel, its numel. */
void check_same(const std::vector<at::Tensor> &tensors, const at::Tensor &like, bool same_numel, const char *what);
/* Throws unless 0 <= rank < size; `what` names it ("root rank", "peer rank"). */
void check_rank(int64_t rank, int size, const char *what);

/* The elements of each of `size` blocks of `t` split along dim 0 into `splits` rows each (one per
 * rank), or, with `splits` empty, into `size` equal parts; throws unless the splits are
 * non-negative and cover dim 0 exactly. */
std::vector<size_t> split_counts(const at::Tensor &t, const std::vector<int64_t> &splits, int size, const char *what);
/* The element counts of `tensors`, in order. */
std::vector<size_t> numels(const std::vector<at::Tensor> &tensors);
/* Where each block starts when blocks of `counts` elements lie one after another. */
std::vector<size_t> displacements(const std::vector<size_t> &counts);

/* The tensors' elements, one after another, in a new 1-D tensor (a list form's staging buffer). */
at::Tensor flatten_into_one(const std::vector<at::Tensor> &tensors);
/* Copies consecutive slices of `flat` back into `tensors` (the inverse of flatten_into_one). */
void unflatten_from_one(const at::Tensor &flat, std::vector<at::Tensor> &tensors);

}  // namespace tally_torch
