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
}

void Worker::enqueue(c10::intrusive_ptr<TallyWork> work, const char *collective, Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(Item{std::move(work), collective, std::move(job)});
  }
  cv_.notify_one();
}

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
    item.work->complete(execute(item));
  }
}

/* Runs one job; a Tally failure becomes a std::runtime_error (RuntimeError in Python) carrying
 * tally_comm_last_error's sentence. */
std::exception_ptr Worker::execute(Item &item) {
  try {
    tally_result_t r = item.job(comm_);
    if (r == TALLY_SUCCESS) return nullptr;
    throw std::runtime_error(std::string("Tally ") + item.collective + " failed (" + tally_result_string(r) +
                             "): " + tally_comm_last_error(comm_));
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace tally_torch
