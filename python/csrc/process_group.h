/* ProcessGroupTally: the c10d backend named "tally". Each collective checks its tensors in the
 * caller's thread (bad arguments raise at once), then queues a job on the worker thread, which
 * owns the Tally communicator, and returns a TallyWork that completes when the job has run. */
#pragma once

#include <memory>
#include <string>

#include "torch_compat.h"
#include "worker.h"

namespace tally_torch {

class ProcessGroupTally : public BackendBase {
 public:
  /* Joins the communicator (blocks until every rank has); timeout_s is every wait's limit. */
  ProcessGroupTally(int rank, int size, const tally_unique_id_t &id, double timeout_s);

  const std::string getBackendName() const override { return "tally"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor> &tensors,
                                           const c10d::BroadcastOptions &opts = c10d::BroadcastOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor> &tensors,
                                           const c10d::AllreduceOptions &opts = c10d::AllreduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor> &tensors,
      const c10d::AllreduceCoalescedOptions &opts = c10d::AllreduceCoalescedOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor> &tensors,
                                        const c10d::ReduceOptions &opts = c10d::ReduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>> &outputs,
                                           std::vector<at::Tensor> &inputs,
                                           const c10d::AllgatherOptions &opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(
      at::Tensor &output, at::Tensor &input, const c10d::AllgatherOptions &opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(
      std::vector<at::Tensor> &outputs, std::vector<std::vector<at::Tensor>> &inputs,
      const c10d::ReduceScatterOptions &opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor &output, at::Tensor &input,
      const c10d::ReduceScatterOptions &opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions &opts = c10d::BarrierOptions()) override;

 private:
  c10::intrusive_ptr<c10d::Work> submit(c10d::OpType type, const char *collective, std::vector<at::Tensor> outputs,
                                        Worker::Job job);
  c10::intrusive_ptr<c10d::Work> allreduce_flat(c10d::OpType type, const char *collective, at::Tensor tensor,
                                                tally_op_t op, std::vector<at::Tensor> outputs);

  std::unique_ptr<Worker> worker_;
};

}  // namespace tally_torch
