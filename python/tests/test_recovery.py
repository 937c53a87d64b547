"""Recovery with the tally backend: failed_ranks and shrink after a rank is killed by SIGKILL
mid-collective, and examples/elastic_train.py (kill, shrink, grow back) against uninterrupted
training."""
import os
import subprocess
import sys
import time

import pytest
import torch

import recovery_cases as cases
import tally_torch
from example_runs import ROOT, assert_replicas_identical
from harness import run, run_grow, run_with_victim


def test_failed_ranks_and_shrink_refusals_on_a_healthy_group():
    run(cases.case_healthy_group, 3)


@pytest.mark.parametrize("victim", [0, 2, 3])
def test_shrink_after_sigkill(victim):
    run_with_victim(cases.case_shrink_after_sigkill, 4, victim)


@pytest.mark.skipif(not tally_torch.HAVE_GROW, reason="this libtally has no tally_comm_grow")
def test_grow_by_two_newcomers():
    run_grow(cases.case_grow, cases.case_join, 3, 2)


def elastic(tmp_path, name, *args):
    prefix = tmp_path / name
    cmd = [sys.executable, os.path.join(ROOT, "examples", "elastic_train.py"), "--save", str(prefix), *args]
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(cmd), out.stdout, out.stderr[-4000:])
    return out.stdout, time.monotonic() - start, prefix


def load(prefix, nranks):
    return [torch.load("%s.rank%d.pt" % (prefix, r)) for r in range(nranks)]


def test_elastic_train_ends_where_uninterrupted_training_does(tmp_path):
    _, _, ref_prefix = elastic(tmp_path, "uninterrupted", "--no-failure")
    if tally_torch.HAVE_GROW:
        out, seconds, prefix = elastic(tmp_path, "elastic")
        final = 4
        assert "grew back to 4 ranks" in out, out
    else:  # no tally_comm_grow in this libtally: the example ends on the 3 survivors
        out, seconds, prefix = elastic(tmp_path, "elastic", "--grow-step", "12")
        final = 3
    assert "killed rank 2" in out and "rank(s) [2] failed" in out and "shrank to 3 ranks" in out, out
    assert "finished: 12 steps on %d ranks" % final in out and "never restarted" in out, out
    ranks = load(prefix, final)
    assert_replicas_identical(ranks, "elastic")
    reference = load(ref_prefix, 4)
    assert_replicas_identical(reference, "uninterrupted")
    # The same steps on the same global batches; only the order of the float64 sums differs.
    for a, b in zip(ranks[0], reference[0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert seconds < 60, out
