"""examples/ddp_train.py, 20 DDP steps on 4 ranks: the tally backend ends with the parameters gloo
ends with (within float rounding) and every rank with exactly the same ones, under tally-run and
under torchrun."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "examples", "ddp_train.py")
NRANKS = 4
TALLY_RUN = os.path.join(os.environ.get("TALLY_BUILD_DIR", os.path.join(ROOT, "build")), "tally-run")


def train(launcher, backend, prefix, tmp_path):
    if launcher == "tally-run":
        if not os.access(TALLY_RUN, os.X_OK):
            pytest.skip("no tally-run at %s (set TALLY_BUILD_DIR)" % TALLY_RUN)
        cmd = [TALLY_RUN, "-n", str(NRANKS), sys.executable]
    else:
        # Debian's torchrun 1.13 under Python 3.11 fails on its default --redirects/--tee 0
        # (Std.from_str returns None); asking for stdout redirection sidesteps it.
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(NRANKS),
               "--redirects", "1", "--tee", "1", "--log_dir", str(tmp_path / "torchrun-logs")]
    cmd += [SCRIPT, "--backend", backend, "--steps", "20", "--save", str(prefix)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(cmd), out.stdout, out.stderr[-4000:])
    assert "steps_per_s=" in out.stdout, out.stdout
    return [torch.load("%s.rank%d.pt" % (prefix, r)) for r in range(NRANKS)]


def assert_replicas_identical(ranks, backend):
    for r, params in enumerate(ranks[1:], 1):
        for a, b in zip(ranks[0], params):
            assert torch.equal(a, b), "%s: rank %d's parameters differ from rank 0's" % (backend, r)


def test_ddp_tally_matches_gloo(tmp_path):
    tally = train("tally-run", "tally", tmp_path / "tally", tmp_path)
    gloo = train("tally-run", "gloo", tmp_path / "gloo", tmp_path)
    assert_replicas_identical(tally, "tally")
    assert_replicas_identical(gloo, "gloo")
    for a, b in zip(tally[0], gloo[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ddp_under_torchrun(tmp_path):
    assert_replicas_identical(train("torchrun", "tally", tmp_path / "tally", tmp_path), "tally")
