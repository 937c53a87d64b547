"""Tally as a torch.distributed backend.

``import tally_torch`` registers the c10d backend "tally"; then
``torch.distributed.init_process_group("tally", ...)`` or ``new_group(backend="tally")`` runs
collectives through libtally. Contiguous CPU tensors only (README.md, "PyTorch backend").
"""
import torch.distributed as dist

from . import _C

__all__ = ["BACKEND_NAME", "tally_version"]

BACKEND_NAME = "tally"
# The store key rank 0 publishes the Tally unique id under (each group's store has its own prefix).
_UNIQUE_ID_KEY = "tally_unique_id"


def _create_process_group(store, rank, size, timeout):
    """The c10d creator: rank 0 draws the unique id and publishes it in the group's store, the
    others read it; the group's timeout becomes the communicator's (TALLY_TIMEOUT) timeout."""
    if rank == 0:
        store.set(_UNIQUE_ID_KEY, _C.unique_id())
    unique_id = store.get(_UNIQUE_ID_KEY)
    return _C.create(rank, size, unique_id, timeout.total_seconds())


def tally_version():
    """libtally's version as (major, minor, patch)."""
    code = _C.version()
    return code // 10000, code // 100 % 100, code % 100


if BACKEND_NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND_NAME, _create_process_group)
