/* The per-process-group worker thread and the Work objects it completes.
 *
 * The worker owns the Tally communicator: every collective and point-to-point call runs on it,
 * one queued item at a time, in the order the process group queued them (all ranks queue the
 * same order, as Tally requires). An item is one operation, or a group of operations (the sends
 * and recvs of batch_isend_irecv) run between tally_group_start and tally_group_end, so that
 * their order across ranks cannot deadlock. Each operation is paired with a TallyWork that the
 * worker completes, successfully or with the Tally error as an exception, and whose future
 * (DDP's path) carries the output tensors.
 *
 * The worker never lets go of the last reference to a tensor: freeing a tensor whose Python object
 * Python has dropped takes the GIL, and a thread that asks for the GIL while the interpreter is
 * finalizing is ended by Python (pthread_exit) inside the tensor's destructor, which aborts the
 * process ("terminate called without an active exception") after the program has finished. So
 * an item that has run is kept until the next call that queues one, or the destructor, lets go of
 * it on the caller's thread.
 */
#pragma once

#include <ATen/core/ivalue.h>
#include <tally.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

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
  /* A Tally call on the communicator; returns Tally's result. May throw (tensor copies). */
  using Job = std::function<tally_result_t(tally_comm_t)>;
  /* One operation: its Work, the Tally call's name for error messages, and the call. */
  struct Op {
    c10::intrusive_ptr<TallyWork> work;
    const char *collective = nullptr;
    Job job;
  };

  explicit Worker(tally_comm_t comm); /* takes ownership of comm */
  ~Worker();                          /* runs what is queued, then destroys the communicator */
  /* Runs op alone, after everything queued before it. */
  void enqueue(Op op);
  /* Runs the ops between tally_group_start and tally_group_end (so only calls whose results
   * are complete when tally_group_end returns, without work after the call: send, recv); every
   * op's Work completes with the group's outcome. `group` names the group in error messages. */
  void enqueue_group(std::vector<Op> ops, const char *group);

 private:
  struct Item {
    std::vector<Op> ops;
    const char *group = nullptr; /* null: one op, run alone */
  };
  void run();
  std::exception_ptr execute(Item &item);
  /* Queues item; lets go of the items that have run (on the calling thread, see above). */
  void push(Item item);

  tally_comm_t comm_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::vector<Item> finished_; /* items that have run, their references still held */
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tally_torch
