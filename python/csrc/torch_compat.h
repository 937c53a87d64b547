/* The only PyTorch-version-dependent code of the Tally backend.
 *
 * PyTorch 1.13 (Debian's python3-torch, the tested version) has backends derive from
 * c10d::ProcessGroup and complete c10d::Work objects. PyTorch 2.x moved the collective
 * interface to c10d::Backend (same virtual method signatures) and creators return a Backend
 * registered per device: porting means the #else branch below plus the creator in
 * tally_torch/__init__.py (register_backend's `devices` argument), and, from 2.1, endCoalescing's
 * signature (it takes no list and returns the Work; process_group.h). Untested on 2.x.
 */
#pragma once

#include <torch/version.h>

#if TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR == 13
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
namespace tally_torch {
using BackendBase = c10d::ProcessGroup;
}
#elif TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
namespace tally_torch {
using BackendBase = c10d::Backend;
}
#else
#error "tally_torch supports PyTorch 1.13 (tested) and 2.x (c10d::Backend, untested); see torch_compat.h"
#endif
