"""Per-rank bodies of the error tests: what the backend cannot do raises a Python exception that
says so, at the call, on the calling rank; a disagreement between ranks raises on every rank
with Tally's explanation, within the group's timeout, and never hangs or corrupts."""
import time

import torch
import torch.distributed as dist

from harness import expect_error


def case_unsupported_arguments(rank, nranks, group):
    expect_error(RuntimeError, "not contiguous", dist.all_reduce, torch.ones(4, 4).t(), group=group)
    expect_error(RuntimeError, "only dense", dist.all_reduce, torch.ones(4).to_sparse(), group=group)
    expect_error(TypeError, "dtype Bool is not supported", dist.all_reduce, torch.ones(4, dtype=torch.bool),
                 group=group)
    expect_error(TypeError, "dtype ComplexFloat is not supported", dist.broadcast,
                 torch.ones(4, dtype=torch.complex64), src=0, group=group)
    expect_error(ValueError, "reduce op", dist.all_reduce, torch.ones(4, dtype=torch.int32),
                 op=dist.ReduceOp.BAND, group=group)
    expect_error(RuntimeError, "exactly one tensor", group.allreduce, [torch.ones(2), torch.ones(2)])
    expect_error(RuntimeError, "mixes dtypes", group.allreduce_coalesced,
                 [torch.ones(2), torch.ones(2, dtype=torch.float64)])
    expect_error(RuntimeError, "needs the large tensor", dist._all_gather_base, torch.empty(3), torch.ones(2),
                 group=group)
    # A tensor that is not on the CPU. This torch has no CUDA, so no CUDA tensor can be built; a
    # meta tensor stands in; the c10d dispatcher refuses it before any backend sees it (the
    # backend's own device check, tensor_args.cpp, is for builds whose dispatcher lets one through).
    expect_error(NotImplementedError, "Meta", dist.all_reduce, torch.ones(4, device="meta"), group=group)
    # Point-to-point and the collectives made of messages.
    expect_error(RuntimeError, "recv from any source", dist.recv, torch.empty(4), group=group)
    expect_error(RuntimeError, "runs only inside batch_isend_irecv", dist.send, torch.ones(4), rank, group=group)
    expect_error(RuntimeError, "out of range", group.send, [torch.ones(4)], nranks, 0)
    expect_error(RuntimeError, "not contiguous", dist.isend, torch.ones(4, 4).t(), (rank + 1) % nranks, group=group)
    expect_error(RuntimeError, "split sizes add up to 3 rows but dim 0 has 4", dist.all_to_all_single,
                 torch.empty(4), torch.ones(4), [1] * nranks, [1, 2] + [0] * (nranks - 2), group=group)
    expect_error(RuntimeError, "does not divide into", dist.all_to_all_single, torch.empty(nranks + 1),
                 torch.ones(nranks + 1), group=group)
    expect_error(RuntimeError, "alltoall_base mixes dtypes", group.alltoall_base, torch.empty(nranks),
                 torch.ones(nranks, dtype=torch.float64), [], [])  # dist.all_to_all_single checks that first
    group._start_coalescing()
    expect_error(RuntimeError, "cannot run between startCoalescing and endCoalescing", dist.all_reduce,
                 torch.ones(4), group=group)
    group._end_coalescing([])
    # Nothing above reached the communicator: it still works.
    t = torch.ones(4)
    dist.all_reduce(t, group=group)
    assert torch.equal(t, torch.full((4,), float(nranks)))


def case_mismatched_sizes(rank, nranks, group):
    t = torch.ones(16 + rank)
    e = expect_error(RuntimeError, "Tally allreduce failed (collective mismatch)", dist.all_reduce, t, group=group)
    assert "but this rank called allreduce(count=%d" % (16 + rank) in str(e), str(e)
    # The communicator is now in error: later collectives raise at once, naming the first failure.
    expect_error(RuntimeError, "in error state", dist.all_reduce, torch.ones(4), group=group)


def case_silent_rank(rank, nranks, group, seconds):
    """The last rank never calls the allreduce: the others get Tally's timeout, naming it, after
    the group's timeout (the creator's timeout argument), instead of waiting forever."""
    if rank == nranks - 1:
        time.sleep(seconds + 3)
        return
    start = time.monotonic()
    e = expect_error(RuntimeError, "Tally allreduce failed (timeout", dist.all_reduce, torch.ones(8), group=group)
    waited = time.monotonic() - start
    assert "rank %d" % (nranks - 1) in str(e), str(e)
    assert seconds * 0.9 < waited < seconds * 3, "timed out after %.1f s with a %d s timeout" % (waited, seconds)


def case_mismatched_p2p(rank, nranks, group):
    """Rank 0 sends 4 elements where rank 1 receives 5: rank 1's recv raises Tally's mismatch, and
    rank 0 (whose send completed) learns of it at its next collective."""
    if rank == 0:
        dist.send(torch.ones(4), 1, group=group)
    else:
        e = expect_error(RuntimeError, "Tally recv failed (collective mismatch)", dist.recv, torch.empty(5), 0,
                         group=group)
        assert "carries 4 float elements" in str(e) and "takes 5 float" in str(e), str(e)
    expect_error(RuntimeError, "Tally allreduce failed", dist.all_reduce, torch.ones(4), group=group)


def case_mismatched_batch(rank, nranks, group):
    """In a batch_isend_irecv, rank 1 sends and receives one element more than rank 0: every Work of
    the batch, on both ranks, raises Tally's mismatch at once."""
    peer = 1 - rank
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, torch.ones(4 + rank), peer, group),
                                   dist.P2POp(dist.irecv, torch.empty(4 + rank), peer, group)])
    assert len(reqs) == 2
    for req in reqs:
        expect_error(RuntimeError, "Tally batch_isend_irecv failed (collective mismatch)", req.wait)
