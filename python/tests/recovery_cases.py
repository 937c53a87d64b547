"""Per-rank bodies of the recovery tests: failed_ranks, shrink (and grow, join where libtally has
them) on tally groups, with a rank killed by SIGKILL in the middle of a collective."""
import os
import signal
import time

import torch
import torch.distributed as dist

import tally_torch
from harness import expect_error


def case_healthy_group(rank, nranks, group):
    """On a healthy group nothing has failed; bad exclude lists and non-tally groups are refused
    with a message."""
    assert tally_torch.failed_ranks(group) == []
    expect_error(RuntimeError, "shrink", tally_torch.shrink, group, [rank])  # a rank excluding itself
    expect_error(RuntimeError, "shrink", tally_torch.shrink, group, [nranks])
    expect_error(TypeError, "not a tally one", tally_torch.failed_ranks, None)  # the default group is gloo
    expect_error(TypeError, "not a tally one", tally_torch._C.split, dist.distributed_c10d._get_default_group(), 0, 0)
    t = torch.ones(3)
    dist.all_reduce(t, group=group)  # the refused calls left the group working
    assert torch.equal(t, torch.full((3,), float(nranks)))


def case_shrink_after_sigkill(rank, nranks, group, victim):
    """`victim` dies by SIGKILL instead of joining an allreduce; the others' allreduce raises, they
    name it with failed_ranks, shrink, and the group of survivors, renumbered, computes."""
    t = torch.ones(1000)
    dist.all_reduce(t, group=group)  # every connection up
    if rank == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    start = time.monotonic()
    try:
        dist.all_reduce(t, group=group)
    except RuntimeError as e:
        assert "Tally allreduce failed" in str(e), e
    else:
        raise AssertionError("the allreduce with a dead rank succeeded")
    assert tally_torch.failed_ranks(group) == [victim]
    smaller = tally_torch.shrink(group)  # exclude defaults to failed_ranks
    assert smaller.size() == nranks - 1
    assert smaller.rank() == (rank if rank < victim else rank - 1)
    survivors = [r for r in range(nranks) if r != victim]
    x = torch.full((1000,), float(rank + 1))
    opts = dist.AllreduceOptions()
    smaller.allreduce([x], opts).wait()
    assert torch.equal(x, torch.full((1000,), float(sum(r + 1 for r in survivors))))
    check_registered(smaller, rank, survivors)
    assert tally_torch.failed_ranks(smaller) == []
    assert time.monotonic() - start < 10, "recovery took %.1f s" % (time.monotonic() - start)
    expect_error(RuntimeError, "allreduce", dist.all_reduce, t, group=group)  # the old group stays failed


def check_registered(group, global_rank, global_ranks):
    """`group` (made by shrink, grow or join) is registered with torch.distributed: its global ranks
    are `global_ranks` (in group rank order; this process's is `global_rank`), and torch's
    collectives with group= and global src/dst ranks run on it."""
    size = len(global_ranks)
    assert dist.get_backend(group) == "tally"
    assert dist.get_process_group_ranks(group) == global_ranks
    assert dist.get_group_rank(group, global_rank) == group.rank()
    assert dist.get_global_rank(group, group.rank()) == global_rank
    assert dist.get_world_size(group) == size
    if dist.is_initialized():  # a newcomer has no default group, whose rank get_rank translates
        assert dist.get_rank(group) == group.rank()
    y = torch.ones(10)
    dist.all_reduce(y, group=group)
    assert torch.equal(y, torch.full((10,), float(size)))
    last = global_ranks[-1]  # broadcast from the last member, named by its global rank
    b = torch.full((4,), float(global_rank))
    dist.broadcast(b, src=last, group=group)
    assert torch.equal(b, torch.full((4,), float(last)))
    outs = [torch.empty(2) for _ in range(size)]
    dist.all_gather(outs, torch.full((2,), float(global_rank)), group=group)
    assert [int(o[0].item()) for o in outs] == global_ranks
    r = torch.full((3,), float(global_rank))
    dist.reduce(r, dst=global_ranks[0], group=group)
    if group.rank() == 0:
        assert torch.equal(r, torch.full((3,), float(sum(global_ranks))))
    dist.barrier(group=group)


def check_grown(grown, rank, nranks, nnew):
    """The grown group: the old ranks first, then the newcomers; allreduce, allgather and
    broadcast from a newcomer are right."""
    size = nranks + nnew
    assert grown.size() == size and grown.rank() == rank
    x = torch.full((1000,), float(rank + 1), dtype=torch.float64)
    grown.allreduce([x], dist.AllreduceOptions()).wait()
    assert torch.equal(x, torch.full((1000,), float(size * (size + 1) // 2), dtype=torch.float64))
    outs = [[torch.empty(3, dtype=torch.int64) for _ in range(size)]]
    grown.allgather(outs, [torch.full((3,), rank, dtype=torch.int64)]).wait()
    assert all(torch.equal(o, torch.full((3,), r, dtype=torch.int64)) for r, o in enumerate(outs[0]))
    b = torch.full((5,), float(rank))
    opts = dist.BroadcastOptions()
    opts.rootRank = size - 1
    grown.broadcast([b], opts).wait()
    assert torch.equal(b, torch.full((5,), float(size - 1)))


def case_grow(rank, nranks, group, store, nnew):
    """Existing ranks: rank 1 makes the grow id and hands it out through the store; all grow."""
    uid = tally_torch.grow_id(group, nnew) if rank == 1 else None
    if uid is not None:
        store.set("grow_id", uid)
    grown = tally_torch.grow(group, nnew, uid)
    check_grown(grown, rank, nranks, nnew)
    check_registered(grown, rank, list(range(nranks + nnew)))  # the newcomers' global ranks follow
    t = torch.ones(2)
    dist.all_reduce(t, group=group)  # the group grown from goes on as it was
    assert torch.equal(t, torch.full((2,), float(nranks)))


def case_join(index, store, nranks):
    grown = tally_torch.join(store.get("grow_id"), index)
    check_grown(grown, nranks + index, nranks, grown.size() - nranks)
    check_registered(grown, nranks + index, list(range(grown.size())))
