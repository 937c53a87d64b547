"""Runs a function on N ranks, each in its own process, with two process groups over the same
ranks: the default group on gloo (the reference) and a group on the tally backend.

run(case, nranks, *args, timeout=...) spawns the ranks and calls case(rank, nranks, tally_group,
*args) in each (the tally group with that timeout); an exception on any rank fails the caller
with that rank's traceback.
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
