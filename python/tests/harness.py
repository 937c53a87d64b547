"""Runs a function on N ranks, each in its own process, with two process groups over the same
ranks: the default group on gloo (the reference) and a group on the tally backend.

run(case, nranks, *args, timeout=...) spawns the ranks and calls case(rank, nranks, tally_group,
*args) in each (the tally group with that timeout); an exception on any rank fails the caller
with that rank's traceback. run_tally_world puts the default group on tally instead (new_group
then splits it), and run_with_victim lets one rank die of SIGKILL.
"""
import datetime
import os
import tempfile

import torch.distributed as dist
import torch.multiprocessing as mp

# Short enough that a hang fails the test quickly, long enough for 4 ranks on 2 busy cores.
TALLY_TIMEOUT = datetime.timedelta(seconds=60)


def _rank_main(rank, nranks, store_path, case, args, timeout):
    import tally_torch  # noqa: F401  (registers the backend in the spawned process)

    dist.init_process_group("gloo", init_method="file://" + store_path, rank=rank, world_size=nranks)
    try:
        group = dist.new_group(backend="tally", timeout=timeout)
        case(rank, nranks, group, *args)
    finally:
        dist.destroy_process_group()


def run(case, nranks, *args, timeout=TALLY_TIMEOUT):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_main, args=(nranks, os.path.join(tmp, "store"), case, args, timeout), nprocs=nranks)


def expect_error(exc_type, text, fn, *args, **kwargs):
    """Calls fn and checks it raises exc_type with `text` in its message."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        assert text in str(e), "expected %r in the error, got: %s" % (text, e)
        return e
    raise AssertionError("%s did not raise %s (%r)" % (getattr(fn, "__name__", fn), exc_type.__name__, text))


def _tally_world_main(rank, nranks, store_path, case, args, timeout):
    import tally_torch  # noqa: F401

    dist.init_process_group("tally", init_method="file://" + store_path, rank=rank, world_size=nranks,
                            timeout=timeout)
    try:
        world_gloo = dist.new_group(backend="gloo")
        case(rank, nranks, world_gloo, *args)
    finally:
        dist.destroy_process_group()


def run_tally_world(case, nranks, *args, timeout=TALLY_TIMEOUT):
    """As run, with the default group on tally (so new_group splits it) and a gloo group over
    every rank for reference: calls case(rank, nranks, gloo_world_group, *args)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_tally_world_main, args=(nranks, os.path.join(tmp, "store"), case, args, timeout), nprocs=nranks)


def run_with_victim(case, nranks, victim, *args, timeout=TALLY_TIMEOUT):
    """As run, where rank `victim` kills itself with SIGKILL (mp.spawn would stop the others when
    one dies): calls case(rank, nranks, tally_group, victim, *args) and checks that the victim
    died of SIGKILL and every other rank returned."""
    import signal
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_rank_main, args=(r, nranks, os.path.join(tmp, "store"), case,
                                                      (victim,) + args, timeout)) for r in range(nranks)]
        for p in procs:
            p.start()
        codes = _join_all(procs, timeout)
    want = [-signal.SIGKILL if r == victim else 0 for r in range(nranks)]
    assert codes == want, "exit codes by rank %s, expected %s (tracebacks above)" % (codes, want)


def _newcomer_main(index, store_path, case, args, timeout):
    import tally_torch  # noqa: F401

    store = dist.FileStore(store_path, -1)
    store.set_timeout(timeout)
    case(index, store, *args)


def _join_all(procs, timeout):
    """Waits for procs until one deadline (kills what is left then); their exit codes."""
    import time
    deadline = time.monotonic() + timeout.total_seconds() * 2
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join()
    return codes


def run_grow(case, newcomer_case, nranks, nnew, *args, timeout=TALLY_TIMEOUT):
    """nranks ranks as in run, calling case(rank, nranks, tally_group, store, nnew, *args), and nnew
    newcomer processes outside every group, calling newcomer_case(index, store, nranks, *args);
    `store` is a FileStore they all share (to pass the grow id). Checks every process returned."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        shared = os.path.join(tmp, "shared")

        procs = [ctx.Process(target=_rank_main, args=(r, nranks, os.path.join(tmp, "store"), _WithStore(case, shared),
                                                      (nnew,) + args, timeout)) for r in range(nranks)]
        procs += [ctx.Process(target=_newcomer_main, args=(i, shared, newcomer_case, (nranks,) + args, timeout))
                  for i in range(nnew)]
        for p in procs:
            p.start()
        codes = _join_all(procs, timeout)
    assert codes == [0] * len(procs), "exit codes (ranks, then newcomers) %s (tracebacks above)" % codes


class _WithStore:
    """case with the shared FileStore put after the tally group (picklable, for spawn)."""

    def __init__(self, case, path):
        self.case, self.path = case, path

    def __call__(self, rank, nranks, group, *args):
        return self.case(rank, nranks, group, dist.FileStore(self.path, -1), *args)
