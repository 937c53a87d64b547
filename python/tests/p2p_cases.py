"""Per-rank bodies of the point-to-point tests: send/recv, isend/irecv, batch_isend_irecv and the
collectives Tally builds from messages (alltoall, all_to_all_single, gather, scatter), each run on
the tally group and checked against gloo's result on the default group where gloo 1.13 has the op
(send/recv, batch_isend_irecv, alltoall_base, gather, scatter), and always against the values
computed here (gloo 1.13 has no list alltoall, and no send to a rank itself).
"""
import torch
import torch.distributed as dist

from collective_cases import DTYPES

ROOT = 1


def block(src, dst, dtype, numel):
    """What rank src sends rank dst: small integers, exact in every dtype, different per pair and
    the same values whatever the dtype (so that gloo's float32 stands in for bfloat16)."""
    g = torch.Generator().manual_seed(1000 * src + dst)
    return torch.randint(0, 100, (numel,), generator=g).to(dtype)


def assert_same(got, want, what):
    assert len(got) == len(want), "%s: %d tensors, expected %d" % (what, len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, "%s[%d]: %s %s, expected %s %s" % (
            what, i, g.dtype, tuple(g.shape), w.dtype, tuple(w.shape))
        assert torch.equal(g, w), "%s[%d]: %s, expected %s" % (what, i, g, w)


def against_gloo_and_expected(name, fn, rank, group, expected, dtypes=DTYPES, gloo=True):
    """fn(dtype, group) -> received tensors: on tally equal to gloo's (where gloo has the op) and to
    expected(dtype), for every dtype (gloo 1.13 has no bfloat16: there it runs in float32)."""
    for dtype in dtypes:
        got = fn(dtype, group)
        assert_same(got, expected(dtype), "%s %s rank %d (tally against the expected values)" % (name, dtype, rank))
        if gloo:
            ref_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
            ref = [t.to(dtype) for t in fn(ref_dtype, None)]
            assert_same(got, ref, "%s %s rank %d (tally against gloo)" % (name, dtype, rank))


# --- send / recv -----------------------------------------------------------------------------------

SIZES = [1031, 0, 5, 70_000]  # several messages per pair, matched in call order; one empty


def pairs(nranks):
    """Every pair of ranks once, in one global order: blocking sends and recvs in this order cannot
    deadlock."""
    return [(a, b) for a in range(nranks) for b in range(a + 1, nranks)]


def send_recv(rank, nranks, dtype, group, blocking):
    """For every pair (a, b): a sends b SIZES messages, then b sends a as many; returns what this
    rank received, in order. blocking: send/recv; else isend/irecv, waited at the end."""
    got, works = [], []
    send, recv = (dist.send, dist.recv) if blocking else (dist.isend, dist.irecv)
    for a, b in pairs(nranks):
        if rank not in (a, b):
            continue
        peer = b if rank == a else a
        for first_sender in (a, b):
            for n in SIZES:
                if rank == first_sender:
                    works.append(send(block(rank, peer, dtype, n), peer, group=group))
                else:
                    got.append(torch.empty(n, dtype=dtype))
                    works.append(recv(got[-1], peer, group=group))
    if not blocking:
        for w in works:
            assert w.wait() and w.is_completed() and w.is_success()
    return got


def send_recv_expected(rank, nranks, dtype):
    want = []
    for a, b in pairs(nranks):
        if rank in (a, b):
            peer = b if rank == a else a
            for first_sender in (a, b):
                if first_sender == peer:
                    want += [block(peer, rank, dtype, n) for n in SIZES]
    return want


def case_send_recv(rank, nranks, group):
    against_gloo_and_expected("send/recv", lambda dtype, g: send_recv(rank, nranks, dtype, g, True), rank, group,
                              lambda dtype: send_recv_expected(rank, nranks, dtype))


def case_isend_irecv(rank, nranks, group):
    """isend/irecv in flight together, run in call order on each rank (the same order as blocking
    calls would need); each Work and its future complete with the tensor."""
    against_gloo_and_expected("isend/irecv", lambda dtype, g: send_recv(rank, nranks, dtype, g, False), rank, group,
                              lambda dtype: send_recv_expected(rank, nranks, dtype))
    if rank == 0:
        work = dist.isend(torch.full((4,), 3.0), 1, group=group)
        assert torch.equal(work.get_future().wait()[0], torch.full((4,), 3.0))
    elif rank == 1:
        t = torch.empty(4)
        work = dist.irecv(t, 0, group=group)
        assert torch.equal(work.get_future().wait()[0], torch.full((4,), 3.0))
        assert torch.equal(t, torch.full((4,), 3.0))


# --- batch_isend_irecv -----------------------------------------------------------------------------

BATCH_NUMEL = 1 << 20  # 4 MB of float32 per message: more than any transport buffers, so only
#                        posting every message at once (one Tally group) avoids the deadlock


def batch_all_to_all(rank, nranks, dtype, group, numel, to_self):
    """Every rank posts all its sends (to every other rank, two messages each, and to itself if
    to_self) before any recv; returns what it received, in order."""
    peers = [p for p in range(nranks) if p != rank or to_self]
    sizes = [numel, 3]
    ops, got = [], []
    for p in peers:
        for n in sizes:
            ops.append(dist.P2POp(dist.isend, block(rank, p, dtype, n), p, group))
    for p in peers:
        for n in sizes:
            got.append(torch.empty(n, dtype=dtype))
            ops.append(dist.P2POp(dist.irecv, got[-1], p, group))
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return got


def batch_expected(rank, nranks, dtype, numel, to_self):
    return [block(p, rank, dtype, n) for p in range(nranks) if p != rank or to_self for n in (numel, 3)]


def case_batch_isend_irecv(rank, nranks, group):
    for dtype in (torch.float32, torch.int64):
        against_gloo_and_expected(
            "batch_isend_irecv", lambda dt, g: batch_all_to_all(rank, nranks, dt, g, BATCH_NUMEL, False), rank, group,
            lambda dt: batch_expected(rank, nranks, dt, BATCH_NUMEL, False), dtypes=[dtype])
    # Every dtype, small; and messages to this rank itself, which Tally pairs within the batch.
    against_gloo_and_expected("batch_isend_irecv", lambda dt, g: batch_all_to_all(rank, nranks, dt, g, 129, False),
                              rank, group, lambda dt: batch_expected(rank, nranks, dt, 129, False))
    against_gloo_and_expected("batch_isend_irecv to self",
                              lambda dt, g: batch_all_to_all(rank, nranks, dt, g, 129, True), rank, group,
                              lambda dt: batch_expected(rank, nranks, dt, 129, True), dtypes=[torch.float32],
                              gloo=False)
    # A batch, then ordinary calls: the order is kept.
    t = torch.full((8,), float(rank))
    dist.all_reduce(t, group=group)
    assert torch.equal(t, torch.full((8,), float(sum(range(nranks)))))


# --- collectives made of messages ------------------------------------------------------------------

def case_alltoall(rank, nranks, group):
    """The list form with tensors of uneven sizes, some empty; gloo 1.13 has no list alltoall, so
    against the values only."""
    def numel(src, dst):
        return (src + 2 * dst) % 3 * 5  # 0, 5 or 10: uneven, some empty

    def fn(dtype, group):
        outs = [torch.empty(numel(j, rank), dtype=dtype) for j in range(nranks)]
        dist.all_to_all(outs, [block(rank, j, dtype, numel(rank, j)) for j in range(nranks)], group=group)
        return outs

    against_gloo_and_expected("alltoall", fn, rank, group,
                              lambda dtype: [block(j, rank, dtype, numel(j, rank)) for j in range(nranks)], gloo=False)


def case_alltoall_single(rank, nranks, group):
    """Equal splits (tally_alltoall): 2-D tensors, nranks blocks of 3 rows of 4."""
    def fn(dtype, group):
        inp = torch.cat([block(rank, j, dtype, 12).view(3, 4) for j in range(nranks)])
        out = torch.empty_like(inp)
        dist.all_to_all_single(out, inp, group=group)
        return [out]

    against_gloo_and_expected("all_to_all_single", fn, rank, group,
                              lambda dtype: [torch.cat([block(j, rank, dtype, 12).view(3, 4) for j in range(nranks)])])


def rows(src, dst, nranks):
    """The rows rank src sends rank dst in the uneven all_to_all_single: none to its successor,
    1 to 4 to the others."""
    return 0 if dst == (src + 1) % nranks else (src + 2 * dst) % 4 + 1


def case_alltoall_single_splits(rank, nranks, group):
    """Uneven split sizes, zeros included (tally_alltoallv), on tensors of shape (rows, 2, 3): the
    counts and displacements are the splits times 6 elements."""
    def fn(dtype, group):
        in_splits = [rows(rank, j, nranks) for j in range(nranks)]
        out_splits = [rows(j, rank, nranks) for j in range(nranks)]
        inp = torch.cat([block(rank, j, dtype, 6 * in_splits[j]).view(-1, 2, 3) for j in range(nranks)])
        out = torch.empty(sum(out_splits), 2, 3, dtype=dtype)
        dist.all_to_all_single(out, inp, out_splits, in_splits, group=group)
        return [out]

    against_gloo_and_expected(
        "all_to_all_single with splits", fn, rank, group,
        lambda dtype: [torch.cat([block(j, rank, dtype, 6 * rows(j, rank, nranks)).view(-1, 2, 3)
                                  for j in range(nranks)])])


def case_gather(rank, nranks, group):
    def fn(dtype, group):
        outs = [torch.empty(1031, dtype=dtype) for _ in range(nranks)] if rank == ROOT else None
        dist.gather(block(rank, ROOT, dtype, 1031), outs, dst=ROOT, group=group)
        return outs or []

    against_gloo_and_expected(
        "gather", fn, rank, group,
        lambda dtype: [block(j, ROOT, dtype, 1031) for j in range(nranks)] if rank == ROOT else [])


def case_scatter(rank, nranks, group):
    def fn(dtype, group):
        out = torch.empty(1031, dtype=dtype)
        ins = [block(ROOT, j, dtype, 1031) for j in range(nranks)] if rank == ROOT else None
        dist.scatter(out, ins, src=ROOT, group=group)
        return [out]

    against_gloo_and_expected("scatter", fn, rank, group, lambda dtype: [block(ROOT, rank, dtype, 1031)])
