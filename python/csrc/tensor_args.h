/* Maps PyTorch tensors, dtypes and reduce ops to Tally's C types, refusing (with a Python error
 * that names what is not supported) everything the backend cannot carry: non-CPU or
 * non-contiguous tensors, dtypes without a Tally datatype, reduce ops Tally lacks. */
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

}  // namespace tally_torch
