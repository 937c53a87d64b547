"""Runs a script of examples/ on N ranks, under tally-run (from $TALLY_BUILD_DIR) or torchrun, and
collects what it saved: run_example(...) -> (its stdout, each rank's saved parameters)."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TALLY_RUN = os.path.join(os.environ.get("TALLY_BUILD_DIR", os.path.join(ROOT, "build")), "tally-run")


def run_example(script, nranks, backend, prefix, tmp_path, launcher="tally-run", args=(), env=None):
    """examples/<script> --backend BACKEND --save PREFIX ARGS on nranks ranks, with `env` added to the
    environment; fails the test with the output if it fails. Returns its stdout and [rank 0's
    parameters, rank 1's, ...]."""
    if launcher == "tally-run":
        if not os.access(TALLY_RUN, os.X_OK):
            pytest.skip("no tally-run at %s (set TALLY_BUILD_DIR)" % TALLY_RUN)
        cmd = [TALLY_RUN, "-n", str(nranks), sys.executable]
    else:
        # Debian's torchrun 1.13 under Python 3.11 fails on its default --redirects/--tee 0
        # (Std.from_str returns None); asking for stdout redirection sidesteps it.
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nranks),
               "--redirects", "1", "--tee", "1", "--log_dir", str(tmp_path / "torchrun-logs")]
    cmd += [os.path.join(ROOT, "examples", script), "--backend", backend, "--save", str(prefix), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert out.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(cmd), out.stdout, out.stderr[-4000:])
    return out.stdout, [torch.load("%s.rank%d.pt" % (prefix, r)) for r in range(nranks)]


def assert_replicas_identical(ranks, what):
    for r, params in enumerate(ranks[1:], 1):
        for a, b in zip(ranks[0], params):
            assert torch.equal(a, b), "%s: rank %d's parameters differ from rank 0's" % (what, r)
