"""Compressed DDP (TALLY_COMPRESS, tally_torch.hooks) on 4 ranks claiming 2 hosts: examples/ddp_train.py
with TALLY_COMPRESS=bf16 and no code change, and with the error-feedback hook, each against the
uncompressed run: every rank ends with the same parameters, close to the uncompressed ones, and the
final loss within 1% of it. The hook's rounding and residual are checked on their own."""
import re

import pytest
import torch

from example_runs import assert_replicas_identical, run_example

NRANKS = 4
ARGS = ["--steps", "20", "--hosts", "2"]


def final_loss(out):
    m = re.search(r"final_loss=(\S+)", out)
    assert m, out
    return float(m.group(1))


def train(tmp_path, name, env=None, args=()):
    out, params = run_example("ddp_train.py", NRANKS, "tally", tmp_path / name, tmp_path, "tally-run",
                              ARGS + list(args), env)
    assert_replicas_identical(params, name)
    return final_loss(out), params[0]


@pytest.fixture(scope="module")
def uncompressed(tmp_path_factory):
    """The uncompressed run's final loss and rank 0's parameters, once for every comparison."""
    return train(tmp_path_factory.mktemp("exact"), "exact")


@pytest.mark.parametrize("how", ["TALLY_COMPRESS=bf16", "TALLY_COMPRESS=fp16", "--hook ef-bf16", "--hook ef-fp16"])
def test_compressed_ddp_close_to_uncompressed(tmp_path, uncompressed, how):
    exact_loss, exact = uncompressed
    if how.startswith("TALLY_COMPRESS="):
        loss, params = train(tmp_path, "compressed", {"TALLY_COMPRESS": how.split("=")[1],
                                                      "TALLY_COMPRESS_MIN_BYTES": "0"})
    else:
        loss, params = train(tmp_path, "hooked", args=how.split())
    assert abs(loss - exact_loss) <= 0.01 * abs(exact_loss), (how, loss, exact_loss)
    for a, b in zip(params, exact):
        torch.testing.assert_close(a, b, rtol=0.05, atol=5e-3)


class _Bucket:
    def __init__(self, buffer, index=0):
        self._buffer, self._index = buffer, index

    def buffer(self):
        return self._buffer

    def index(self):
        return self._index


def test_residual_carries_what_rounding_lost():
    from tally_torch.hooks import ErrorFeedbackState
    state = ErrorFeedbackState.__new__(ErrorFeedbackState)  # no group: only the rounding is tested
    state.dtype, state.residuals = torch.bfloat16, {}
    g = torch.tensor([1.0 + 2 ** -9, 3.0, 1e-3], dtype=torch.float32)
    first = state.round_with_feedback(0, g)
    assert torch.equal(first, g.to(torch.bfloat16).float())
    assert torch.equal(state.residuals[0], g - first)
    second = state.round_with_feedback(0, g)  # the residual joins the next step's gradient
    assert torch.allclose(first + second, 2 * g, rtol=0, atol=2 ** -8)
    state.dtype = torch.float16
    big = state.round_with_feedback(1, torch.tensor([1e6]))
    assert big.item() == 65504.0 and state.residuals[1].item() == 1e6 - 65504.0
    bad = state.round_with_feedback(2, torch.tensor([float("nan"), float("inf"), 1.0]))
    assert torch.isnan(bad[0]) and bad[1].item() == float("inf") and bad[2].item() == 1.0
    assert torch.isfinite(state.residuals[2]).all(), "a NaN or infinity must not stay in the residual"
