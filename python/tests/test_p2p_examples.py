"""examples/pipeline_train.py (2 pipeline stages exchanging activations and gradients with send,
recv and batch_isend_irecv) and examples/moe_layer.py (tokens routed to experts with
all_to_all_single, uneven splits) end with the same results on the tally backend as on gloo."""
import re

import torch

from example_runs import run_example


def final_loss(out):
    m = re.search(r"final_loss=(\S+)", out)
    assert m, out
    return float(m.group(1))


def test_pipeline_tally_matches_gloo_bitwise(tmp_path):
    """Point-to-point moves bytes: the two backends train to exactly the same parameters."""
    runs = {b: run_example("pipeline_train.py", 2, b, tmp_path / b, tmp_path, args=["--steps", "8"])
            for b in ("tally", "gloo")}
    assert final_loss(runs["tally"][0]) == final_loss(runs["gloo"][0]), (runs["tally"][0], runs["gloo"][0])
    for rank, (t, g) in enumerate(zip(runs["tally"][1], runs["gloo"][1])):
        for a, b in zip(t, g):
            assert torch.equal(a, b), "pipeline stage %d: tally's parameters differ from gloo's" % rank


def test_moe_tally_matches_gloo(tmp_path):
    """3 ranks; the gate's gradient all_reduce adds in another order than gloo's, hence the tolerance."""
    runs = {b: run_example("moe_layer.py", 3, b, tmp_path / b, tmp_path, args=["--steps", "8"])
            for b in ("tally", "gloo")}
    tally, gloo = runs["tally"], runs["gloo"]
    assert re.search(r"tokens_per_expert=(\[.*\])", tally[0]).group(1) == \
        re.search(r"tokens_per_expert=(\[.*\])", gloo[0]).group(1), (tally[0], gloo[0])
    assert abs(final_loss(tally[0]) - final_loss(gloo[0])) < 1e-5, (tally[0], gloo[0])
    for rank, (t, g) in enumerate(zip(tally[1], gloo[1])):
        for a, b in zip(t, g):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: "moe rank %d: %s" % (rank, m))
    for t in tally[1][1:]:  # the replicated gate (first two parameters) is identical on every rank
        assert all(torch.equal(a, b) for a, b in zip(tally[1][0][:2], t[:2]))
