/* The Python module tally_torch._C: a fresh unique id (rank 0 publishes it in the c10d store)
 * and the process-group constructor; tally_torch/__init__.py registers the backend with them.
 * The functions that derive groups from a group (split, shrink, grow) are in derive.cpp. */
#include <torch/csrc/utils/pybind.h>

#include <cstring>

#include "process_group.h"

namespace py = pybind11;
using tally_torch::ProcessGroupTally;

namespace tally_torch {
void define_derive(py::module &m); /* derive.cpp: split, failed_ranks, shrink, grow, join */
}

static py::bytes unique_id() {
  tally_unique_id_t id;
  tally_result_t r = tally_get_unique_id(&id);
  if (r != TALLY_SUCCESS)
    throw std::runtime_error(std::string("tally_get_unique_id failed (") + tally_result_string(r) +
                             "): " + tally_comm_last_error(nullptr));
  return py::bytes(id.internal, sizeof id.internal);
}

static c10::intrusive_ptr<tally_torch::BackendBase> create(int rank, int size, const std::string &id_bytes,
                                                           double timeout_s) {
  TORCH_CHECK_VALUE(id_bytes.size() == TALLY_UNIQUE_ID_BYTES, "Tally backend: the unique id from the store has ",
                    id_bytes.size(), " bytes, expected ", TALLY_UNIQUE_ID_BYTES);
  tally_unique_id_t id;
  std::memcpy(id.internal, id_bytes.data(), sizeof id.internal);
  return c10::make_intrusive<ProcessGroupTally>(rank, size, id, timeout_s);
}

static int version() {
  int v = 0;
  tally_get_version(&v);
  return v;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "Tally collectives as a torch.distributed backend (import tally_torch to register \"tally\")";
  m.def("unique_id", &unique_id, "A fresh Tally unique id (starts the bootstrap root in this process)");
  m.def("create", &create, py::arg("rank"), py::arg("size"), py::arg("unique_id"), py::arg("timeout_s"),
        py::call_guard<py::gil_scoped_release>(),
        "Joins the communicator (blocks until every rank has) and returns the process group");
  m.def("version", &version, "libtally's version code (MAJOR * 10000 + MINOR * 100 + PATCH)");
  tally_torch::define_derive(m);
}
