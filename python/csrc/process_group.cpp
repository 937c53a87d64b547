/* ProcessGroupTally's construction, its queueing of collectives, and the collectives Tally runs as
 * such (see process_group.h). Every collective is in place on contiguous CPU tensors;
 * list-of-tensors forms go through one flat staging buffer. */
#include "process_group.h"

#include <Python.h> /* the GIL, in the destructor */

#include <stdexcept>

#include "tensor_args.h"

namespace tally_torch {

ProcessGroupTally::ProcessGroupTally(int rank, int size, const tally_unique_id_t &id, double timeout_s)
    : BackendBase(rank, size) {
  tally_config_t config = TALLY_CONFIG_INITIALIZER;
  config.timeout_s = timeout_s;
  tally_comm_t comm = nullptr;
  tally_result_t r = tally_comm_init_rank_config(&comm, size, id, rank, &config);
  if (r != TALLY_SUCCESS)
    throw std::runtime_error(std::string("Tally communicator init failed on rank ") + std::to_string(rank) + " (" +
                             tally_result_string(r) + "): " + tally_comm_last_error(nullptr));
  worker_ = std::make_unique<Worker>(comm);
  init();
}

static int comm_rank(tally_comm_t comm) {
  int rank = -1;
  tally_comm_rank(comm, &rank);
  return rank;
}

static int comm_size(tally_comm_t comm) {
  int size = 0;
  tally_comm_size(comm, &size);
  return size;
}

ProcessGroupTally::ProcessGroupTally(tally_comm_t comm) : BackendBase(comm_rank(comm), comm_size(comm)) {
  worker_ = std::make_unique<Worker>(comm);
  init();
}

void ProcessGroupTally::call(const char *what, Worker::Job job) {
  submit(c10d::OpType::UNKNOWN, what, {}, std::move(job))->wait();
}

/* The worker may drop the last reference to a tensor (or Work) that Python has let go of, which
 * takes the GIL to free its Python object: a caller holding the GIL (destroy_process_group) lets
 * go of it while the worker finishes, or both would wait forever. */
ProcessGroupTally::~ProcessGroupTally() {
  if (Py_IsInitialized() && PyGILState_Check()) {
    PyThreadState *state = PyEval_SaveThread();
    worker_.reset();
    PyEval_RestoreThread(state);
  } else {
    worker_.reset();
  }
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::submit(c10d::OpType type, const char *collective,
                                                         std::vector<at::Tensor> outputs, Worker::Job job) {
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  TORCH_CHECK(!coalescing_, "Tally backend: ", collective,
              " cannot run between startCoalescing and endCoalescing (inside batch_isend_irecv); only send and recv "
              "can");
  auto work = c10::make_intrusive<TallyWork>(rank_, type, std::move(outputs));
  worker_->enqueue(Worker::Op{work, collective, std::move(job)});
  return work;
}

static void check_root(int64_t root, int64_t root_tensor, int size) {
  check_rank(root, size, "root rank");
  TORCH_CHECK(root_tensor == 0, "Tally backend: rootTensor must be 0 (one tensor per rank), got ", root_tensor);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::allreduce(std::vector<at::Tensor> &tensors,
                                                            const c10d::AllreduceOptions &opts) {
  check_single(tensors, "allreduce tensor");
  at::Tensor t = tensors[0];
  tally_datatype_t dt = to_tally_datatype(t);
  tally_op_t op = to_tally_op(opts.reduceOp);
  return submit(c10d::OpType::ALLREDUCE, "allreduce", {t}, [t, dt, op](tally_comm_t comm) {
    return tally_allreduce(t.data_ptr(), t.data_ptr(), t.numel(), dt, op, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::allreduce_coalesced(std::vector<at::Tensor> &tensors,
                                                                      const c10d::AllreduceCoalescedOptions &opts) {
  TORCH_CHECK(!tensors.empty(), "Tally backend: allreduce_coalesced needs at least one tensor");
  check_same(tensors, tensors[0], false, "allreduce_coalesced tensor");
  tally_datatype_t dt = to_tally_datatype(tensors[0]);
  tally_op_t op = to_tally_op(opts.reduceOp);
  return submit(
      c10d::OpType::ALLREDUCE_COALESCED, "allreduce_coalesced", tensors, [tensors, dt, op](tally_comm_t comm) mutable {
        at::Tensor flat = flatten_into_one(tensors);
        tally_result_t r = tally_allreduce(flat.data_ptr(), flat.data_ptr(), flat.numel(), dt, op, comm, nullptr);
        if (r == TALLY_SUCCESS) unflatten_from_one(flat, tensors);
        return r;
      });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::broadcast(std::vector<at::Tensor> &tensors,
                                                            const c10d::BroadcastOptions &opts) {
  check_single(tensors, "broadcast tensor");
  check_root(opts.rootRank, opts.rootTensor, size_);
  at::Tensor t = tensors[0];
  tally_datatype_t dt = to_tally_datatype(t);
  int root = static_cast<int>(opts.rootRank);
  return submit(c10d::OpType::BROADCAST, "broadcast", {t}, [t, dt, root](tally_comm_t comm) {
    return tally_broadcast(t.data_ptr(), t.data_ptr(), t.numel(), dt, root, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::reduce(std::vector<at::Tensor> &tensors,
                                                         const c10d::ReduceOptions &opts) {
  check_single(tensors, "reduce tensor");
  check_root(opts.rootRank, opts.rootTensor, size_);
  at::Tensor t = tensors[0];
  tally_datatype_t dt = to_tally_datatype(t);
  tally_op_t op = to_tally_op(opts.reduceOp);
  int root = static_cast<int>(opts.rootRank);
  bool is_root = root == rank_;
  return submit(c10d::OpType::REDUCE, "reduce", {t}, [t, dt, op, root, is_root](tally_comm_t comm) {
    return tally_reduce(t.data_ptr(), is_root ? t.data_ptr() : nullptr, t.numel(), dt, op, root, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::allgather(std::vector<std::vector<at::Tensor>> &outputs,
                                                            std::vector<at::Tensor> &inputs,
                                                            const c10d::AllgatherOptions &) {
  check_single(inputs, "allgather input");
  TORCH_CHECK(outputs.size() == 1 && outputs[0].size() == static_cast<size_t>(size_),
              "Tally backend: allgather needs one output list of ", size_, " tensors (one per rank)");
  at::Tensor in = inputs[0];
  check_same(outputs[0], in, true, "allgather output");
  std::vector<at::Tensor> outs = outputs[0];
  tally_datatype_t dt = to_tally_datatype(in);
  int size = size_;
  return submit(c10d::OpType::ALLGATHER, "allgather", outs, [in, outs, dt, size](tally_comm_t comm) mutable {
    at::Tensor flat = at::empty({size * in.numel()}, in.options());
    tally_result_t r = tally_allgather(in.data_ptr(), flat.data_ptr(), in.numel(), dt, comm, nullptr);
    if (r == TALLY_SUCCESS) unflatten_from_one(flat, outs);
    return r;
  });
}

/* Checks a *_base collective's pair: same dtype, and big.numel() == small.numel() * size. */
static void check_base_pair(const at::Tensor &big, const at::Tensor &small, int size, const char *collective) {
  check_tensor(big, collective);
  check_tensor(small, collective);
  TORCH_CHECK(big.scalar_type() == small.scalar_type(), "Tally backend: ", collective, " mixes dtypes ",
              big.scalar_type(), " and ", small.scalar_type());
  TORCH_CHECK(big.numel() == small.numel() * size, "Tally backend: ", collective, " needs the large tensor to hold ",
              size, " x ", small.numel(), " elements, got ", big.numel());
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::_allgather_base(at::Tensor &output, at::Tensor &input,
                                                                  const c10d::AllgatherOptions &) {
  check_base_pair(output, input, size_, "_allgather_base");
  at::Tensor out = output, in = input;
  tally_datatype_t dt = to_tally_datatype(in);
  return submit(c10d::OpType::_ALLGATHER_BASE, "allgather", {out}, [out, in, dt](tally_comm_t comm) {
    return tally_allgather(in.data_ptr(), out.data_ptr(), in.numel(), dt, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::reduce_scatter(std::vector<at::Tensor> &outputs,
                                                                 std::vector<std::vector<at::Tensor>> &inputs,
                                                                 const c10d::ReduceScatterOptions &opts) {
  check_single(outputs, "reduce_scatter output");
  TORCH_CHECK(inputs.size() == 1 && inputs[0].size() == static_cast<size_t>(size_),
              "Tally backend: reduce_scatter needs one input list of ", size_, " tensors (one per rank)");
  at::Tensor out = outputs[0];
  check_same(inputs[0], out, true, "reduce_scatter input");
  std::vector<at::Tensor> ins = inputs[0];
  tally_datatype_t dt = to_tally_datatype(out);
  tally_op_t op = to_tally_op(opts.reduceOp);
  return submit(c10d::OpType::REDUCE_SCATTER, "reduce_scatter", {out}, [out, ins, dt, op](tally_comm_t comm) {
    at::Tensor flat = flatten_into_one(ins);
    return tally_reduce_scatter(flat.data_ptr(), out.data_ptr(), out.numel(), dt, op, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::_reduce_scatter_base(at::Tensor &output, at::Tensor &input,
                                                                       const c10d::ReduceScatterOptions &opts) {
  check_base_pair(input, output, size_, "_reduce_scatter_base");
  at::Tensor out = output, in = input;
  tally_datatype_t dt = to_tally_datatype(out);
  tally_op_t op = to_tally_op(opts.reduceOp);
  return submit(c10d::OpType::_REDUCE_SCATTER_BASE, "reduce_scatter", {out}, [out, in, dt, op](tally_comm_t comm) {
    return tally_reduce_scatter(in.data_ptr(), out.data_ptr(), out.numel(), dt, op, comm, nullptr);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupTally::barrier(const c10d::BarrierOptions &) {
  return submit(c10d::OpType::BARRIER, "barrier", {}, [](tally_comm_t comm) { return tally_barrier(comm, nullptr); });
}

}  // namespace tally_torch
