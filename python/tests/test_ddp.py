"""examples/ddp_train.py, 20 DDP steps on 4 ranks: the tally backend ends with the parameters gloo
ends with (within float rounding) and every rank with exactly the same ones, under tally-run and
under torchrun."""
import torch

from example_runs import assert_replicas_identical, run_example

NRANKS = 4


def train(launcher, backend, prefix, tmp_path):
    out, params = run_example("ddp_train.py", NRANKS, backend, prefix, tmp_path, launcher, ["--steps", "20"])
    assert "steps_per_s=" in out, out
    return params


def test_ddp_tally_matches_gloo(tmp_path):
    tally = train("tally-run", "tally", tmp_path / "tally", tmp_path)
    gloo = train("tally-run", "gloo", tmp_path / "gloo", tmp_path)
    assert_replicas_identical(tally, "tally")
    assert_replicas_identical(gloo, "gloo")
    for a, b in zip(tally[0], gloo[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ddp_under_torchrun(tmp_path):
    assert_replicas_identical(train("torchrun", "tally", tmp_path / "tally", tmp_path), "tally")
