"""Per-rank bodies of the new_group tests on a tally default group: every tally subgroup is a
split of the default group's communicator (no rendezvous through the store), and its collectives
give what the same group on gloo gives."""
import torch
import torch.distributed as dist

import tally_torch

from collective_cases import make_input


def pair(ranks):
    """The same ranks as a tally group (a split) and as a gloo group; new_group is called on every
    rank of the default group, members or not, in the same order."""
    return dist.new_group(ranks), dist.new_group(ranks, backend="gloo")


def check_group(rank, tally, gloo, ranks, what):
    """Allreduce (every op), allgather, broadcast and reduce_scatter on the tally group against gloo."""
    assert tally.rank() == gloo.rank() == ranks.index(rank), what
    assert tally.size() == gloo.size() == len(ranks), what
    assert dist.get_rank(tally) == ranks.index(rank) and dist.get_world_size(tally) == len(ranks), what
    for dtype in [torch.int32, torch.float32, torch.float64]:
        for op in [dist.ReduceOp.SUM, dist.ReduceOp.PRODUCT, dist.ReduceOp.MIN, dist.ReduceOp.MAX]:
            x = make_input(rank, dtype, op, 1000)
            got, want = x.clone(), x.clone()
            dist.all_reduce(got, op=op, group=tally)
            dist.all_reduce(want, op=op, group=gloo)
            assert torch.equal(got, want), "%s: allreduce %s %s differs from gloo's" % (what, dtype, op)
    x = make_input(rank, torch.float32, dist.ReduceOp.SUM, 257)
    got = [torch.empty_like(x) for _ in ranks]
    want = [torch.empty_like(x) for _ in ranks]
    dist.all_gather(got, x, group=tally)
    dist.all_gather(want, x, group=gloo)
    assert all(torch.equal(g, w) for g, w in zip(got, want)), what + ": allgather differs from gloo's"
    src = ranks[-1]  # a global rank, as torch's API takes it
    got, want = x.clone(), x.clone()
    dist.broadcast(got, src, group=tally)
    dist.broadcast(want, src, group=gloo)
    assert torch.equal(got, want), what + ": broadcast differs from gloo's"
    # reduce_scatter (gloo 1.13 has none): gloo's allreduce, this rank's chunk.
    x = make_input(rank, torch.int64, dist.ReduceOp.SUM, 10 * len(ranks))
    got = torch.empty(10, dtype=torch.int64)
    dist.reduce_scatter(got, list(x.clone().chunk(len(ranks))), group=tally)
    want = x.clone()
    dist.all_reduce(want, group=gloo)
    assert torch.equal(got, want.chunk(len(ranks))[ranks.index(rank)]), what + ": reduce_scatter differs"


def case_new_group_splits(rank, nranks, world_gloo):
    made = dict(tally_torch._created)
    groups = [("evens", list(range(0, nranks, 2))), ("odds", list(range(1, nranks, 2))),
              ("world", list(range(nranks))), ("reversed", list(range(nranks - 1, 0, -1))),
              ("alone", [nranks - 1])]
    built = [(name, sorted(ranks), *pair(ranks)) for name, ranks in groups]
    member_of = 0
    for name, ranks, tally, gloo in built:
        if rank in ranks:
            member_of += 1
            check_group(rank, tally, gloo, ranks, name)
        else:
            assert tally is dist.GroupMember.NON_GROUP_MEMBER and gloo is dist.GroupMember.NON_GROUP_MEMBER, name
    # Every tally group came from a split: no new unique id went through the store.
    assert tally_torch._created["rendezvous"] == made["rendezvous"], tally_torch._created
    assert tally_torch._created["split"] == made["split"] + member_of, tally_torch._created
    # Groups in use at once, in another order on every rank than they were made, then the default
    # group, which the splits left as it was; destroying a subgroup leaves the others working.
    for name, ranks, tally, gloo in reversed(built):
        if rank in ranks:
            t = torch.full((3,), float(rank + 1))
            dist.all_reduce(t, group=tally)
            assert torch.equal(t, torch.full((3,), float(sum(r + 1 for r in ranks)))), name
    t = torch.arange(5, dtype=torch.float64) * (rank + 1)
    w = t.clone()
    dist.all_reduce(t)
    dist.all_reduce(w, group=world_gloo)
    assert torch.equal(t, w), "the default group after the splits"
    name, ranks, tally, gloo = built[0]
    if rank in ranks:
        dist.destroy_process_group(tally)
    t = torch.ones(4)
    dist.all_reduce(t, group=built[2][2])
    assert torch.equal(t, torch.full((4,), float(nranks)))


def case_tally_group_on_gloo_default(rank, nranks, group):
    """The other way round (harness.run's setup): on a gloo default group, a tally group still
    meets through the store, since there is no tally communicator to split."""
    made = dict(tally_torch._created)
    sub = dist.new_group([0, 1], backend="tally")
    assert tally_torch._created["split"] == made["split"]
    if rank in (0, 1):
        assert tally_torch._created["rendezvous"] == made["rendezvous"] + 1
        t = torch.ones(2)
        dist.all_reduce(t, group=sub)
        assert torch.equal(t, torch.full((2,), 2.0))
