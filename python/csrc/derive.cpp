/* Communicators made from a tally process group's: split (new_group on a tally default group),
 * and recovery after a rank died: failed_ranks, shrink, and, where libtally has it, grow and join
 * (tally_torch/__init__.py wraps them). Each runs on the worker thread that owns the parent's
 * communicator, after what was queued before it, and the new communicator becomes a new
 * ProcessGroupTally with its own worker. */
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "process_group.h"

namespace py = pybind11;
using tally_torch::BackendBase;
using tally_torch::ProcessGroupTally;
using GroupPtr = c10::intrusive_ptr<BackendBase>;

namespace {

ProcessGroupTally &tally_group(const GroupPtr &group, const char *fn) {
  auto *pg = group ? dynamic_cast<ProcessGroupTally *>(group.get()) : nullptr;
  TORCH_CHECK_TYPE(pg, "tally_torch.", fn, ": the process group is not a tally one (backend ",
                   group ? group->getBackendName() : std::string("none"), ")");
  return *pg;
}

/* Thrown inside a job, on the worker thread, whose last Tally message is the call's. */
[[noreturn]] void fail(const char *what, tally_result_t r) {
  throw std::runtime_error(std::string("Tally ") + what + " failed (" + tally_result_string(r) +
                           "): " + tally_comm_last_error(nullptr));
}

GroupPtr wrap(tally_comm_t comm) {
  if (!comm) return GroupPtr();
  return c10::make_intrusive<ProcessGroupTally>(comm);
}

tally_unique_id_t id_from_bytes(const std::string &bytes, const char *fn) {
  TORCH_CHECK_VALUE(bytes.size() == TALLY_UNIQUE_ID_BYTES, "tally_torch.", fn, ": the unique id has ", bytes.size(),
                    " bytes, expected ", TALLY_UNIQUE_ID_BYTES);
  tally_unique_id_t id;
  std::memcpy(id.internal, bytes.data(), sizeof id.internal);
  return id;
}

GroupPtr split(const GroupPtr &parent, int color, int key) {
  tally_comm_t child = nullptr;
  tally_group(parent, "split").call("split", [&child, color, key](tally_comm_t comm) {
    tally_result_t r = tally_comm_split(comm, color, key, &child);
    if (r != TALLY_SUCCESS) fail("split", r);
    return r;
  });
  return wrap(child);
}

std::vector<int> failed_ranks(const GroupPtr &group) {
  ProcessGroupTally &pg = tally_group(group, "failed_ranks");
  std::vector<int> ranks(pg.getSize());
  int n = 0;
  pg.call("failed_ranks", [&ranks, &n](tally_comm_t comm) {
    tally_result_t r = tally_comm_failed_ranks(comm, ranks.data(), static_cast<int>(ranks.size()), &n);
    if (r != TALLY_SUCCESS) fail("failed_ranks", r);
    return r;
  });
  ranks.resize(n);
  return ranks;
}

GroupPtr shrink(const GroupPtr &group, const std::vector<int> &exclude) {
  tally_comm_t child = nullptr;
  tally_group(group, "shrink").call("shrink", [&child, &exclude](tally_comm_t comm) {
    tally_result_t r = tally_comm_shrink(comm, exclude.data(), static_cast<int>(exclude.size()), &child);
    if (r != TALLY_SUCCESS) fail("shrink", r);
    return r;
  });
  return wrap(child);
}

#ifdef TALLY_TORCH_HAVE_GROW
py::bytes grow_id(const GroupPtr &group, int nnew) {
  tally_unique_id_t id;
  {
    py::gil_scoped_release nogil;
    tally_group(group, "grow_id").call("grow_id", [&id, nnew](tally_comm_t comm) {
      tally_result_t r = tally_comm_grow_id(comm, nnew, &id);
      if (r != TALLY_SUCCESS) fail("grow_id", r);
      return r;
    });
  }
  return py::bytes(id.internal, sizeof id.internal);
}

GroupPtr grow(const GroupPtr &group, int nnew, const py::object &id_bytes) {
  tally_unique_id_t id;
  const tally_unique_id_t *idp = nullptr;
  if (!id_bytes.is_none()) {
    id = id_from_bytes(id_bytes.cast<std::string>(), "grow");
    idp = &id;
  }
  tally_comm_t child = nullptr;
  ProcessGroupTally &pg = tally_group(group, "grow");
  py::gil_scoped_release nogil;
  pg.call("grow", [&child, nnew, idp](tally_comm_t comm) {
    tally_result_t r = tally_comm_grow(comm, nnew, idp, &child);
    if (r != TALLY_SUCCESS) fail("grow", r);
    return r;
  });
  return wrap(child);
}

GroupPtr join(const std::string &id_bytes, int index) {
  tally_unique_id_t id = id_from_bytes(id_bytes, "join");
  tally_comm_t comm = nullptr;
  tally_result_t r = tally_comm_join(&id, index, &comm);
  if (r != TALLY_SUCCESS) fail("join", r);
  return wrap(comm);
}
#endif

}  // namespace

namespace tally_torch {

void define_derive(py::module &m) {
  m.attr("SPLIT_NOCOLOR") = TALLY_SPLIT_NOCOLOR;
  m.def("split", &split, py::arg("group"), py::arg("color"), py::arg("key"), py::call_guard<py::gil_scoped_release>(),
        "tally_comm_split of the group's communicator (collective over it): the new group, or None for NOCOLOR");
  m.def("failed_ranks", &failed_ranks, py::arg("group"), py::call_guard<py::gil_scoped_release>(),
        "The group's ranks this rank knows failed (tally_comm_failed_ranks), sorted");
  m.def("shrink", &shrink, py::arg("group"), py::arg("exclude"), py::call_guard<py::gil_scoped_release>(),
        "tally_comm_shrink: a new group of the ranks not excluded, renumbered in order");
#ifdef TALLY_TORCH_HAVE_GROW
  m.def("grow_id", &grow_id, py::arg("group"), py::arg("nnew"),
        "tally_comm_grow_id (one existing rank): the unique id to give the newcomers");
  m.def("grow", &grow, py::arg("group"), py::arg("nnew"), py::arg("unique_id"),
        "tally_comm_grow (every existing rank; unique_id only on the rank that made it, else None)");
  m.def("join", &join, py::arg("unique_id"), py::arg("index"), py::call_guard<py::gil_scoped_release>(),
        "tally_comm_join (a newcomer): the grown group, in which this process is rank old_size + index");
#endif
}

}  // namespace tally_torch
