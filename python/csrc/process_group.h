/* ProcessGroupTally: the c10d backend named "tally". Each operation checks its tensors in the
 * caller's thread (bad arguments raise at once), then queues a job on the worker thread, which
 * owns the Tally communicator, and returns a TallyWork that completes when the job has run.
 * Between startCoalescing and endCoalescing (batch_isend_irecv) sends and recvs are held back and
 * queued at the end as one Tally group. The collectives are in process_group.cpp; send, recv,
 * coalescing and the collectives Tally builds from messages (alltoall, gather, scatter) in
 * point_to_point.cpp. */
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "torch_compat.h"
#include "worker.h"

namespace tally_torch {

class ProcessGroupTally : public BackendBase {
 public:
  /* Joins the communicator (blocks until every rank has); timeout_s is every wait's limit. */
  ProcessGroupTally(int rank, int size, const tally_unique_id_t &id, double timeout_s);
  /* Takes over a communicator already built (by a split, shrink, grow or join): rank and size are its. */
  explicit ProcessGroupTally(tally_comm_t comm);
  /* Waits for the queued operations, then destroys the communicator. */
  ~ProcessGroupTally() override;

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

  /* point_to_point.cpp */
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor> &tensors, int dstRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor> &tensors, int srcRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor> &tensors, int tag) override;
  /* PyTorch 1.13's signatures (2.1 and later: endCoalescing() returns the Work; see torch_compat.h). */
  void startCoalescing() override;
  void endCoalescing(std::vector<c10::intrusive_ptr<c10d::Work>> &reqs) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor &outputBuffer, at::Tensor &inputBuffer,
                                               std::vector<int64_t> &outputSplitSizes,
                                               std::vector<int64_t> &inputSplitSizes,
                                               const c10d::AllToAllOptions &opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor> &outputTensors, std::vector<at::Tensor> &inputTensors,
                                          const c10d::AllToAllOptions &opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>> &outputTensors,
                                        std::vector<at::Tensor> &inputTensors,
                                        const c10d::GatherOptions &opts = c10d::GatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor> &outputTensors,
                                         std::vector<std::vector<at::Tensor>> &inputTensors,
                                         const c10d::ScatterOptions &opts = c10d::ScatterOptions()) override;

  /* Runs job on the worker after everything queued before it, waits for it (release the GIL
   * first), and rethrows its failure: how split, shrink, grow and failed_ranks (derive.cpp) use
   * the communicator the worker owns. */
  void call(const char *what, Worker::Job job);

 private:
  /* Queues job (a collective) on the worker; refused between startCoalescing and endCoalescing. */
  c10::intrusive_ptr<c10d::Work> submit(c10d::OpType type, const char *collective, std::vector<at::Tensor> outputs,
                                        Worker::Job job);
  /* Queues job (a send or recv with `peer`) on the worker, or, while coalescing, holds it for
   * endCoalescing; a peer that is this rank itself is refused outside coalescing. */
  c10::intrusive_ptr<c10d::Work> submit_p2p(c10d::OpType type, const char *call, at::Tensor tensor, int peer,
                                            Worker::Job job);

  std::unique_ptr<Worker> worker_;
  std::mutex coalescing_mutex_; /* guards the two below (callers may be several threads) */
  bool coalescing_ = false;     /* between startCoalescing and endCoalescing */
  std::vector<Worker::Op> coalesced_;
};

}  // namespace tally_torch
