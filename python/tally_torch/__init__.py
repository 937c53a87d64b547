"""Tally as a torch.distributed backend.

``import tally_torch`` registers the c10d backend "tally"; then
``torch.distributed.init_process_group("tally", ...)`` or ``new_group(backend="tally")`` runs
collectives through libtally. Contiguous CPU tensors only (README.md, "PyTorch backend").

On a tally default group, ``new_group`` splits the default group's communicator
(``tally_comm_split``) instead of a new rendezvous through the store. After a rank died,
``failed_ranks``, ``shrink`` and (where libtally has it) ``grow``/``join`` make the group the
survivors go on with, and the one a replacement process joins.
"""
import threading

import torch.distributed as dist
import torch.distributed.distributed_c10d as _c10d

from . import _C

__all__ = ["BACKEND_NAME", "tally_version", "failed_ranks", "shrink", "HAVE_GROW"]

BACKEND_NAME = "tally"
# The store key rank 0 publishes the Tally unique id under (each group's store has its own prefix).
_UNIQUE_ID_KEY = "tally_unique_id"
# Whether libtally (at build time) had tally_comm_grow: grow_id, grow and join exist only then.
HAVE_GROW = hasattr(_C, "grow")
if HAVE_GROW:
    __all__ += ["grow_id", "grow", "join"]

# How this process's tally groups were made (the tests read it): "rendezvous" through the store,
# or "split" of the default group's communicator.
_created = {"rendezvous": 0, "split": 0}
# The default group to split, set by _new_process_group_helper around torch's own helper.
_pending = threading.local()


def _create_process_group(store, rank, size, timeout):
    """The c10d creator. For new_group on a tally default group: color 0 of a split of the default
    group's communicator, ranked by the group rank (the split takes the default group's timeout).
    Otherwise rank 0 draws the unique id and publishes it in the group's store, the others read it;
    the group's timeout becomes the communicator's (TALLY_TIMEOUT) timeout."""
    parent = getattr(_pending, "parent", None)
    if parent is not None:
        _pending.parent = None
        pg = _C.split(parent, 0, rank)
        if pg.rank() != rank or pg.size() != size:
            raise RuntimeError("tally_torch: the split of the default group made rank %d of %d, torch expected rank "
                               "%d of %d" % (pg.rank(), pg.size(), rank, size))
        _created["split"] += 1
        return pg
    if rank == 0:
        store.set(_UNIQUE_ID_KEY, _C.unique_id())
    unique_id = store.get(_UNIQUE_ID_KEY)
    _created["rendezvous"] += 1
    return _C.create(rank, size, unique_id, timeout.total_seconds())


def _tally_default_group():
    """The default group when it is a tally one, else None."""
    if not dist.is_initialized():
        return None
    pg = _c10d._get_default_group()
    return pg if dist.get_backend(pg) == BACKEND_NAME else None


_torch_new_process_group_helper = _c10d._new_process_group_helper


def _new_process_group_helper(group_size, group_rank, global_ranks_in_group, backend, store, *args, **kwargs):
    """Wraps torch's helper, which new_group calls on every rank of the default group: for a tally
    subgroup of a tally default group, members split the default communicator with color 0 (in
    the creator) and non-members, for which torch calls no creator, with TALLY_SPLIT_NOCOLOR, so
    that the split is collective over the default group as Tally requires (torch 2.x's NCCL
    backend does the same with perform_nocolor_split)."""
    parent = None
    if global_ranks_in_group and str(backend).lower() == BACKEND_NAME:
        parent = _tally_default_group()
    if parent is None:
        return _torch_new_process_group_helper(group_size, group_rank, global_ranks_in_group, backend, store,
                                               *args, **kwargs)
    _pending.parent = parent
    try:
        pg = _torch_new_process_group_helper(group_size, group_rank, global_ranks_in_group, backend, store,
                                             *args, **kwargs)
    finally:
        _pending.parent = None
    if pg is _c10d.GroupMember.NON_GROUP_MEMBER:
        _C.split(parent, _C.SPLIT_NOCOLOR, 0)
    return pg


def _group(group):
    return _c10d._get_default_group() if group is None or group is _c10d.GroupMember.WORLD else group


def failed_ranks(group=None):
    """The ranks of `group` (default: the default group; a tally group) that this rank knows to have
    failed (tally_comm_failed_ranks), sorted. Runs after the group's queued calls."""
    return _C.failed_ranks(_group(group))


def shrink(group=None, exclude=None):
    """tally_comm_shrink of `group`'s communicator, typically after a collective on it raised
    because a rank died: every survivor calls it with the same `exclude` (default: failed_ranks())
    and gets a new tally ProcessGroup of the other ranks, renumbered in order. Raises RuntimeError
    on failure (the survivors disagreed, or another one died: call failed_ranks and shrink again).

    The new group is not registered with torch.distributed: pass it as ``group=`` to collectives
    and use its ``rank()`` and ``size()`` (dist.get_rank(group) does not know it). Destroy the old
    group (or let it go) once done with it."""
    group = _group(group)
    if exclude is None:
        exclude = _C.failed_ranks(group)
    return _C.shrink(group, sorted(exclude))


if HAVE_GROW:
    def grow_id(group, nnew):
        """tally_comm_grow_id, on one existing rank of `group`: the unique id (bytes) to hand the
        `nnew` newcomers out of band (a store) and to pass to that rank's own grow()."""
        return _C.grow_id(_group(group), nnew)

    def grow(group, nnew, unique_id=None):
        """tally_comm_grow, on every existing rank of `group` (unique_id only on the rank that made
        it with grow_id, None elsewhere): the grown tally ProcessGroup, existing ranks keeping their
        numbers. Not registered with torch.distributed (see shrink)."""
        return _C.grow(_group(group), nnew, unique_id)

    def join(unique_id, index):
        """tally_comm_join, in a newcomer: the grown tally ProcessGroup, in which this process is rank
        old size + index."""
        return _C.join(unique_id, index)


def tally_version():
    """libtally's version as (major, minor, patch)."""
    code = _C.version()
    return code // 10000, code // 100 % 100, code % 100


if BACKEND_NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND_NAME, _create_process_group)
    _c10d._new_process_group_helper = _new_process_group_helper
