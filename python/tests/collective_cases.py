"""Per-rank bodies of the collective tests: each runs one collective for every dtype (and every
reduce op) on the tally group and on gloo, the reference, and checks they agree.

Gloo in PyTorch 1.13 has no bfloat16, no ReduceOp.AVG and no reduce_scatter: the reference then
runs in float32 (cast back), as SUM divided by the group size (integers truncate, as Tally's AVG
does), and as an allreduce whose rank-th chunk is kept.
"""
import time

import torch
import torch.distributed as dist

DTYPES = [torch.int8, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64]
OPS = [dist.ReduceOp.SUM, dist.ReduceOp.PRODUCT, dist.ReduceOp.MIN, dist.ReduceOp.MAX, dist.ReduceOp.AVG]
NO_OP = [dist.ReduceOp.SUM]  # for collectives without an op: ignored
ROOT = 1


def make_input(rank, dtype, op, numel):
    """Small integers (exact in every dtype, no overflow for 4 ranks), different on every rank."""
    g = torch.Generator().manual_seed(1000 * rank + DTYPES.index(dtype))
    lo, hi = (1, 3) if op == dist.ReduceOp.PRODUCT else ((0, 11) if dtype == torch.uint8 else (-5, 6))
    return torch.randint(lo, hi, (numel,), generator=g).to(dtype)


def reference(gloo_fn, x, op, nranks):
    """gloo_fn's outputs on the default (gloo) group, standing in for what gloo lacks."""
    ref_dtype = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
    outs = gloo_fn(x.to(ref_dtype), dist.ReduceOp.SUM if op == dist.ReduceOp.AVG else op, None)
    if op == dist.ReduceOp.AVG:
        outs = [o / nranks if o.is_floating_point() else torch.div(o, nranks, rounding_mode="trunc") for o in outs]
    return [o.to(x.dtype) for o in outs]


def check(rank, nranks, group, name, tally_fn, ops, numel, gloo_fn=None):
    for dtype in DTYPES:
        for op in ops:
            x = make_input(rank, dtype, op, numel)
            got = tally_fn(x.clone(), op, group)
            want = reference(gloo_fn or tally_fn, x, op, nranks)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-2,
                                           msg=lambda m: "%s %s %s rank %d: %s" % (name, dtype, op, rank, m))


# --- the collectives, each as fn(x, op, group) -> output tensors ---------------------------------

def allreduce(x, op, group):
    dist.all_reduce(x, op=op, group=group)
    return [x]


def allreduce_coalesced(x, op, group):
    parts = [p.clone() for p in torch.split(x, [100, 1, x.numel() - 101])]
    dist.all_reduce_coalesced(parts, op=op, group=group)
    return parts


def allgather(x, op, group):
    outs = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(outs, x, group=group)
    return outs


def allgather_base(x, op, group):
    out = torch.empty(x.numel() * dist.get_world_size(group), dtype=x.dtype)
    dist._all_gather_base(out, x, group=group)
    return [out]


def reduce_scatter(x, op, group):
    out = torch.empty(x.numel() // dist.get_world_size(group), dtype=x.dtype)
    dist.reduce_scatter(out, [c.clone() for c in x.chunk(dist.get_world_size(group))], op=op, group=group)
    return [out]


def reduce_scatter_base(x, op, group):
    out = torch.empty(x.numel() // dist.get_world_size(group), dtype=x.dtype)
    dist._reduce_scatter_base(out, x, op=op, group=group)
    return [out]


def reduce_scatter_reference(x, op, group):
    dist.all_reduce(x, op=op, group=group)
    return [x.chunk(dist.get_world_size(group))[dist.get_rank(group)].clone()]


def broadcast(x, op, group):
    dist.broadcast(x, src=ROOT, group=group)
    return [x]


def reduce(x, op, group):
    dist.reduce(x, dst=ROOT, op=op, group=group)
    return [x] if dist.get_rank() == ROOT else []


# --- the per-rank test bodies ----------------------------------------------------------------------

def case_allreduce(rank, nranks, group):
    check(rank, nranks, group, "allreduce", allreduce, OPS, 1031)


def case_allreduce_large(rank, nranks, group):
    """Several MB: many pipeline chunks, in float32 SUM only."""
    x = make_input(rank, torch.float32, dist.ReduceOp.SUM, 3_000_001)
    got = allreduce(x.clone(), dist.ReduceOp.SUM, group)[0]
    torch.testing.assert_close(got, allreduce(x, dist.ReduceOp.SUM, None)[0])


def case_allreduce_coalesced(rank, nranks, group):
    check(rank, nranks, group, "allreduce_coalesced", allreduce_coalesced, OPS, 1031)


def case_allgather(rank, nranks, group):
    check(rank, nranks, group, "allgather", allgather, NO_OP, 1031)


def case_allgather_base(rank, nranks, group):
    check(rank, nranks, group, "_allgather_base", allgather_base, NO_OP, 1031, gloo_fn=allgather_base_reference)


def allgather_base_reference(x, op, group):
    return [torch.cat(allgather(x, op, group))]


def case_reduce_scatter(rank, nranks, group):
    check(rank, nranks, group, "reduce_scatter", reduce_scatter, OPS, 343 * nranks, gloo_fn=reduce_scatter_reference)


def case_reduce_scatter_base(rank, nranks, group):
    check(rank, nranks, group, "_reduce_scatter_base", reduce_scatter_base, OPS, 343 * nranks,
          gloo_fn=reduce_scatter_reference)


def case_broadcast(rank, nranks, group):
    check(rank, nranks, group, "broadcast", broadcast, NO_OP, 1031)


def case_reduce(rank, nranks, group):
    check(rank, nranks, group, "reduce", reduce, OPS, 1031)


def case_barrier(rank, nranks, group):
    """Rank 0 arrives 1 s late: nobody may leave the barrier before it arrives."""
    dist.barrier(group=group)
    if rank == 0:
        time.sleep(1.0)
    start = time.monotonic()
    dist.barrier(group=group)
    waited = time.monotonic() - start
    assert rank == 0 or waited > 0.5, "rank %d left the barrier after %.3f s, before rank 0 arrived" % (rank, waited)


def case_async_work(rank, nranks, group):
    """Several collectives in flight at once complete in order; Work and its future report them."""
    tensors = [torch.full((1000,), float(rank + i)) for i in range(8)]
    works = [dist.all_reduce(t, group=group, async_op=True) for t in tensors]
    futures = [w.get_future() for w in works]
    for i, (w, f) in enumerate(zip(works, futures)):
        assert w.wait()
        assert w.is_completed() and w.is_success()
        want = float(sum(r + i for r in range(nranks)))
        assert torch.equal(f.wait()[0], torch.full((1000,), want)), "async allreduce %d on rank %d" % (i, rank)
        assert torch.equal(tensors[i], torch.full((1000,), want))
