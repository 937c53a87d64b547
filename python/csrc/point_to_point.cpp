/* ProcessGroupTally's point-to-point operations and the collectives Tally builds from messages
 * (see process_group.h): send, recv (recv from any source is refused), the coalescing of
 * batch_isend_irecv into one Tally group, alltoall_base, alltoall, gather and scatter. Contiguous
 * CPU tensors only; list forms go through one flat staging buffer. Tags are ignored, as in
 * PyTorch's NCCL backend: messages between two ranks match in call order. */
#include "process_group.h"
#include "tensor_args.h"

namespace tally_torch {

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::submit_p2p(c10d::OpType type, const char *call, at::Tensor tensor,
                                                             int peer, Worker::Job job) {
  auto work = c10::make_intrusive<TallyWork>(rank_, type, std::vector<at::Tensor>{tensor});
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  if (coalescing_) {
    coalesced_.push_back(Worker::Op{work, call, std::move(job)});
    return work;
  }
  TORCH_CHECK(peer != rank_, "Tally backend: a ", call, " whose peer is this rank itself (", peer,
              ") runs only inside batch_isend_irecv, together with its matching ",
              type == c10d::OpType::SEND ? "recv" : "send");
  worker_->enqueue(Worker::Op{work, call, std::move(job)});
  return work;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::send(std::vector<at::Tensor> &tensors, int dstRank, int) {
  check_single(tensors, "send tensor");
  check_rank(dstRank, size_, "send's destination rank");
  at::Tensor t = tensors[0];
  tally_datatype_t dt = to_tally_datatype(t);
  return submit_p2p(c10d::OpType::SEND, "send", t, dstRank, [t, dt, dstRank](tally_comm_t comm) {
    return tally_send(t.data_ptr(), t.numel(), dt, dstRank, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::recv(std::vector<at::Tensor> &tensors, int srcRank, int) {
  check_single(tensors, "recv tensor");
  check_rank(srcRank, size_, "recv's source rank");
  at::Tensor t = tensors[0];
  tally_datatype_t dt = to_tally_datatype(t);
  return submit_p2p(c10d::OpType::RECV, "recv", t, srcRank, [t, dt, srcRank](tally_comm_t comm) {
    return tally_recv(t.data_ptr(), t.numel(), dt, srcRank, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::recvAnysource(std::vector<at::Tensor> &, int) {
  TORCH_CHECK(false,
              "Tally backend: recv from any source (recv/irecv without src) is not supported: Tally matches "
              "messages per pair of ranks, in call order; pass src");
}

void ProcessGroupTally::startCoalescing() {
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  TORCH_CHECK(!coalescing_,
              "Tally backend: startCoalescing called again before endCoalescing (batch_isend_irecv "
              "does not nest)");
  coalescing_ = true;
}

/* The held sends and recvs run as one Tally group: every rank's are posted at once, so no order of
 * them across ranks deadlocks. Their Works (which reqs holds) complete when the group has. */
void ProcessGroupTally::endCoalescing(std::vector<c10::intrusive_ptr<c10d::Work>> &) {
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  TORCH_CHECK(coalescing_, "Tally backend: endCoalescing called without startCoalescing");
  coalescing_ = false;
  std::vector<Worker::Op> ops;
  ops.swap(coalesced_);
  if (!ops.empty()) worker_->enqueue_group(std::move(ops), "batch_isend_irecv");
}

/* tally_alltoallv of blocks of `sendcounts` / `recvcounts` elements lying one after another. */
static tally_result_t alltoallv_packed(tally_comm_t comm, const void *sendbuf, const std::vector<size_t> &sendcounts,
                                       void *recvbuf, const std::vector<size_t> &recvcounts, tally_datatype_t dt) {
  std::vector<size_t> sdispls = displacements(sendcounts), rdispls = displacements(recvcounts);
  return tally_alltoallv(sendbuf, sendcounts.data(), sdispls.data(), recvbuf, recvcounts.data(), rdispls.data(), dt,
                         comm, nullptr);
}

/* Without split sizes on either side, equal blocks (tally_alltoall); with any, tally_alltoallv, whose
 * counts are the splits times the elements of one row. Every rank must use the same form, or the
 * call fails with Tally's collective mismatch. */
c10::intrusive_ptr<c10d::Work> ProcessGroupTally::alltoall_base(at::Tensor &outputBuffer, at::Tensor &inputBuffer,
                                                                std::vector<int64_t> &outputSplitSizes,
                                                                std::vector<int64_t> &inputSplitSizes,
                                                                const c10d::AllToAllOptions &) {
  check_tensor(outputBuffer, "alltoall_base output");
  check_tensor(inputBuffer, "alltoall_base input");
  TORCH_CHECK(outputBuffer.scalar_type() == inputBuffer.scalar_type(), "Tally backend: alltoall_base mixes dtypes ",
              inputBuffer.scalar_type(), " and ", outputBuffer.scalar_type());
  at::Tensor out = outputBuffer, in = inputBuffer;
  tally_datatype_t dt = to_tally_datatype(in);
  std::vector<size_t> sendcounts = split_counts(in, inputSplitSizes, size_, "alltoall_base input");
  std::vector<size_t> recvcounts = split_counts(out, outputSplitSizes, size_, "alltoall_base output");
  if (inputSplitSizes.empty() && outputSplitSizes.empty()) {
    TORCH_CHECK(in.numel() == out.numel(),
                "Tally backend: alltoall_base without split sizes needs input and output "
                "of the same size, got ",
                in.numel(), " and ", out.numel(), " elements");
    size_t count = sendcounts[0];
    return submit(c10d::OpType::ALLTOALL_BASE, "alltoall", {out}, [out, in, count, dt](tally_comm_t comm) {
      return tally_alltoall(in.data_ptr(), out.data_ptr(), count, dt, comm, nullptr);
    });
  }
  return submit(c10d::OpType::ALLTOALL_BASE, "alltoallv", {out},
                [out, in, sendcounts, recvcounts, dt](tally_comm_t comm) {
                  return alltoallv_packed(comm, in.data_ptr(), sendcounts, out.data_ptr(), recvcounts, dt);
                });
}

/* Always tally_alltoallv (the tensors' sizes are its counts), so that ranks whose tensors happen to
 * be all of one size agree with ranks whose tensors are not. */
c10::intrusive_ptr<c10d::Work> ProcessGroupTally::alltoall(std::vector<at::Tensor> &outputTensors,
                                                           std::vector<at::Tensor> &inputTensors,
                                                           const c10d::AllToAllOptions &) {
  TORCH_CHECK(inputTensors.size() == static_cast<size_t>(size_) && outputTensors.size() == inputTensors.size(),
              "Tally backend: alltoall needs input and output lists of ", size_, " tensors (one per rank), got ",
              inputTensors.size(), " and ", outputTensors.size());
  check_same(inputTensors, inputTensors[0], false, "alltoall input");
  check_same(outputTensors, inputTensors[0], false, "alltoall output");
  std::vector<at::Tensor> ins = inputTensors, outs = outputTensors;
  std::vector<size_t> sendcounts = numels(ins), recvcounts = numels(outs);
  int64_t received = 0;
  for (size_t c : recvcounts) received += static_cast<int64_t>(c);
  tally_datatype_t dt = to_tally_datatype(ins[0]);
  return submit(c10d::OpType::ALLTOALL, "alltoallv", outs,
                [ins, outs, sendcounts, recvcounts, received, dt](tally_comm_t comm) mutable {
                  at::Tensor send = flatten_into_one(ins), recv = at::empty({received}, ins[0].options());
                  tally_result_t r =
                      alltoallv_packed(comm, send.data_ptr(), sendcounts, recv.data_ptr(), recvcounts, dt);
                  if (r == TALLY_SUCCESS) unflatten_from_one(recv, outs);
                  return r;
                });
}

/* gather's outputs and scatter's inputs: on the root one list of a tensor per rank, each of `like`'s
 * dtype and size; elsewhere nothing (returns an empty list). */
static std::vector<at::Tensor> root_list(const std::vector<std::vector<at::Tensor>> &lists, bool is_root, int size,
                                         const at::Tensor &like, const char *what) {
  if (!is_root) {
    TORCH_CHECK(lists.empty() || (lists.size() == 1 && lists[0].empty()), "Tally backend: ", what,
                " is given on a rank that is not the root; only the root passes one");
    return {};
  }
  TORCH_CHECK(lists.size() == 1 && lists[0].size() == static_cast<size_t>(size), "Tally backend: ", what,
              " needs one list of ", size, " tensors (one per rank) on the root");
  check_same(lists[0], like, true, what);
  return lists[0];
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::gather(std::vector<std::vector<at::Tensor>> &outputTensors,
                                                         std::vector<at::Tensor> &inputTensors,
                                                         const c10d::GatherOptions &opts) {
  check_single(inputTensors, "gather input");
  check_rank(opts.rootRank, size_, "root rank");
  at::Tensor in = inputTensors[0];
  int root = static_cast<int>(opts.rootRank), size = size_;
  std::vector<at::Tensor> outs = root_list(outputTensors, root == rank_, size_, in, "gather output");
  tally_datatype_t dt = to_tally_datatype(in);
  return submit(c10d::OpType::GATHER, "gather", outs, [in, outs, dt, root, size](tally_comm_t comm) mutable {
    if (outs.empty()) return tally_gather(in.data_ptr(), nullptr, in.numel(), dt, root, comm, nullptr);
    at::Tensor flat = at::empty({size * in.numel()}, in.options());
    tally_result_t r = tally_gather(in.data_ptr(), flat.data_ptr(), in.numel(), dt, root, comm, nullptr);
    if (r == TALLY_SUCCESS) unflatten_from_one(flat, outs);
    return r;
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::scatter(std::vector<at::Tensor> &outputTensors,
                                                          std::vector<std::vector<at::Tensor>> &inputTensors,
                                                          const c10d::ScatterOptions &opts) {
  check_single(outputTensors, "scatter output");
  check_rank(opts.rootRank, size_, "root rank");
  at::Tensor out = outputTensors[0];
  int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> ins = root_list(inputTensors, root == rank_, size_, out, "scatter input");
  tally_datatype_t dt = to_tally_datatype(out);
  return submit(c10d::OpType::SCATTER, "scatter", {out}, [out, ins, dt, root](tally_comm_t comm) {
    at::Tensor flat = ins.empty() ? at::Tensor() : flatten_into_one(ins);
    return tally_scatter(ins.empty() ? nullptr : flat.data_ptr(), out.data_ptr(), out.numel(), dt, root, comm, nullptr);
  });
}

}  // namespace tally_torch
