/* The worker thread and TallyWork (see worker.h). */
#include "worker.h"

#include <stdexcept>
#include <string>

namespace tally_torch {

TallyWork::TallyWork(int rank, c10d::OpType type, std::vector<at::Tensor> outputs)
    : c10d::Work(rank, type),
      outputs_(std::move(outputs)),
      future_(c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {}

c10::intrusive_ptr<c10::ivalue::Future> TallyWork::getFuture() { return future_; }

std::vector<at::Tensor> TallyWork::result() { return outputs_; }

void TallyWork::complete(std::exception_ptr error) {
  finish(error); /* c10d::Work: completed_, exception_, wakes wait() */
  if (error)
    future_->setError(error);
  else
    future_->markCompleted(c10::IValue(outputs_));
}

Worker::Worker(tally_comm_t comm) : comm_(comm), thread_([this] { run(); }) {}

Worker::~Worker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
  tally_comm_destroy(comm_);
} /* finished_ lets go of the last items' references here, on the destroying thread */

void Worker::push(Item item) {
  std::vector<Item> finished;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(item));
    finished.swap(finished_);
  }
  cv_.notify_one();
} /* `finished` lets go of its tensors and Works here, on the caller's thread */

void Worker::enqueue(Op op) {
  Item item;
  item.ops.push_back(std::move(op));
  push(std::move(item));
}

void Worker::enqueue_group(std::vector<Op> ops, const char *group) { push(Item{std::move(ops), group}); }

void Worker::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return; /* stopping, and everything queued has run */
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    std::exception_ptr error = execute(item);
    for (auto &op : item.ops) op.work->complete(error);
    std::lock_guard<std::mutex> lock(mutex_);
    finished_.push_back(std::move(item)); /* not let go of here: see worker.h */
  }
}

/* A Tally failure of `what` as a std::runtime_error (RuntimeError in Python) carrying `sentence`,
 * tally_comm_last_error's. */
static std::exception_ptr tally_error(const char *what, tally_result_t r, const char *sentence) {
  return std::make_exception_ptr(
      std::runtime_error(std::string("Tally ") + what + " failed (" + tally_result_string(r) + "): " + sentence));
}

/* Runs an item's jobs: one alone, or a group's between tally_group_start and tally_group_end, which
 * runs them; the first failure is the item's. A group is always ended, even after a failure at a
 * call, so that this thread never keeps a Tally group open. */
std::exception_ptr Worker::execute(Item &item) {
  if (item.group) {
    tally_result_t r = tally_group_start();
    if (r != TALLY_SUCCESS) return tally_error(item.group, r, tally_comm_last_error(nullptr)); /* the thread's */
  }
  std::exception_ptr first;
  for (auto &op : item.ops) {
    try {
      tally_result_t r = op.job(comm_);
      if (r != TALLY_SUCCESS && !first) first = tally_error(op.collective, r, tally_comm_last_error(comm_));
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (item.group) {
    tally_result_t r = tally_group_end();
    if (r != TALLY_SUCCESS && !first) first = tally_error(item.group, r, tally_comm_last_error(comm_));
  }
  return first;
}

}  // namespace tally_torch
