"""Tally as a torch.distributed backend.

``import tally_torch`` registers the c10d backend "tally"; then
``torch.distributed.init_process_group("tally", ...)`` or ``new_group(backend="tally")`` runs
collectives through libtally. Contiguous CPU tensors only (README.md, "PyTorch backend").

On a tally default group, ``new_group`` splits the default group's communicator
(``tally_comm_split``) instead of a new rendezvous through the store. After a rank died,
``failed_ranks``, ``shrink`` and (where libtally has it) ``grow``/``join`` make the group the
survivors go on with, and the one a replacement process joins; those groups are registered with
torch.distributed as new_group's are, so ``dist.all_reduce(t, group=g)``, ``dist.broadcast(t,
src, group=g)``, ``dist.get_rank(g)`` and the rest take them.
"""
import threading

import torch
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


# This process's global rank when it has no default group (a newcomer that joined through grow):
# the number its first registered group gave it (_register).
_own = {"global_rank": None, "groups": 0}


def _own_global_rank():
    if dist.is_initialized():
        return dist.get_rank()
    return -1 if _own["global_rank"] is None else _own["global_rank"]


def _torch_tables():
    """torch.distributed's registry of process groups: (pg_map, pg_names, pg_group_ranks), the dicts
    new_group fills (module globals in torch 1.x, the _world object's in 2.x)."""
    world = getattr(_c10d, "_world", None)
    if world is not None and hasattr(world, "pg_group_ranks"):
        return world.pg_map, world.pg_names, world.pg_group_ranks
    return _c10d._pg_map, _c10d._pg_names, _c10d._pg_group_ranks


def _register(pg, kind):
    """Registers the tally ProcessGroup `pg` that shrink, grow or join made with torch.distributed,
    as new_group registers its groups (torch has no public call for a group made elsewhere): its
    backend, a name, and the map from global ranks to its ranks, which dist.get_rank(pg),
    dist.broadcast(src=...), dist.get_global_rank and dist.destroy_process_group(pg) read.

    Collective over `pg`: an allgather of every member's global rank (its rank in its default
    group). A member without a default group (a newcomer) has none, or the one an earlier group gave
    it; the members without one are numbered after the highest global rank in the group, in group
    rank order, alike on every member."""
    mine = torch.tensor([_own_global_rank()], dtype=torch.int64)
    every = [torch.empty(1, dtype=torch.int64) for _ in range(pg.size())]
    pg.allgather([every], [mine]).wait()
    claimed = [int(t.item()) for t in every]
    known = [g for g in claimed if g >= 0]
    if len(set(known)) != len(known):
        raise RuntimeError("tally_torch: two members of the new group have the same global rank (%s); their default "
                           "groups are not one job's" % claimed)
    following = max(known, default=-1) + 1
    global_ranks = []
    for g in claimed:
        if g < 0:
            g, following = following, following + 1
        global_ranks.append(g)
    if not dist.is_initialized():
        _own["global_rank"] = global_ranks[pg.rank()]
    pg_map, pg_names, pg_group_ranks = _torch_tables()
    pg_map[pg] = (BACKEND_NAME, None)
    pg_names[pg] = "tally_%s_%d" % (kind, _own["groups"])
    _own["groups"] += 1
    pg_group_ranks[pg] = {g: r for r, g in enumerate(global_ranks)}
    world = getattr(_c10d, "_world", None)
    if world is not None and hasattr(world, "pg_backend_config"):  # torch 2.x's other per-group tables
        world.pg_backend_config[pg] = BACKEND_NAME
    return pg


def shrink(group=None, exclude=None):
    """tally_comm_shrink of `group`'s communicator, typically after a collective on it raised
    because a rank died: every survivor calls it with the same `exclude` (default: failed_ranks())
    and gets a new tally ProcessGroup of the other ranks, renumbered in order. Raises RuntimeError
    on failure (the survivors disagreed, or another one died: call failed_ranks and shrink again).

    The new group is registered with torch.distributed (_register): torch's collectives take it as
    ``group=``, with global ranks (``src=``, ``dst=``) those of the default group, and
    dist.get_rank(group) is the rank in it. Destroy the old group (or let it go) once done with it."""
    group = _group(group)
    if exclude is None:
        exclude = _C.failed_ranks(group)
    return _register(_C.shrink(group, sorted(exclude)), "shrink")


if HAVE_GROW:
    def grow_id(group, nnew):
        """tally_comm_grow_id, on one existing rank of `group`: the unique id (bytes) to hand the
        `nnew` newcomers out of band (a store) and to pass to that rank's own grow()."""
        return _C.grow_id(_group(group), nnew)

    def grow(group, nnew, unique_id=None):
        """tally_comm_grow, on every existing rank of `group` (unique_id only on the rank that made
        it with grow_id, None elsewhere): the grown tally ProcessGroup, existing ranks keeping their
        numbers, registered with torch.distributed (see shrink; the newcomers' global ranks follow
        the highest of the existing ranks')."""
        return _register(_C.grow(_group(group), nnew, unique_id), "grow")

    def join(unique_id, index):
        """tally_comm_join, in a newcomer: the grown tally ProcessGroup, in which this process is rank
        old size + index, registered with torch.distributed as grow's is on the existing ranks; a
        newcomer without a default group may still pass it as ``group=`` to torch's collectives."""
        return _register(_C.join(unique_id, index), "join")


def tally_version():
    """libtally's version as (major, minor, patch)."""
    code = _C.version()
    return code // 10000, code // 100 % 100, code % 100


if BACKEND_NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND_NAME, _create_process_group)
    _c10d._new_process_group_helper = _new_process_group_helper
