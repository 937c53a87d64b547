/* The per-process-group worker thread and the Work objects it completes.
 *
 * The worker owns the Tally communicator: every collective runs on it, one at a time, in the
 * order the process group queued them (all ranks queue the same order, as Tally requires).
 * Each queued job is paired with a TallyWork that the worker completes, successfully or with
 * the Tally error as an exception, and whose future (DDP's path) carries the output tensors.
 */
#pragma once

#include <ATen/core/ivalue.h>
#include <tally.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "torch_compat.h"

namespace tally_torch {

class TallyWork : public c10d::Work {
 public:
  TallyWork(int rank, c10d::OpType type, std::vector<at::Tensor> outputs);
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  std::vector<at::Tensor> result() override;
  /* Marks the work (and its future) done; `error` null on success. Called by the worker. */
  void complete(std::exception_ptr error);

 private:
  std::vector<at::Tensor> outputs_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

class Worker {
 public:
  /* A collective on the communicator; returns Tally's result. May throw (tensor copies). */
  using Job = std::function<tally_result_t(tally_comm_t)>;

  explicit Worker(tally_comm_t comm); /* takes ownership of comm */
  ~Worker();                          /* runs what is queued, then destroys the communicator */
  void enqueue(c10::intrusive_ptr<TallyWork> work, const char *collective, Job job);

 private:
  struct Item {
    c10::intrusive_ptr<TallyWork> work;
    const char *collective = nullptr;
    Job job;
  };
  void run();
  std::exception_ptr execute(Item &item);

  tally_comm_t comm_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tally_torch
