"""send/recv, isend/irecv, batch_isend_irecv, alltoall, all_to_all_single, gather and scatter on
the tally backend, against gloo and the expected values, on 2 to 4 ranks."""
import pytest

import p2p_cases as cases
from harness import run

CASES = ["send_recv", "isend_irecv", "batch_isend_irecv", "alltoall", "alltoall_single", "alltoall_single_splits",
         "gather", "scatter"]


@pytest.mark.parametrize("name", CASES)
def test_p2p_matches_gloo(name):
    run(getattr(cases, "case_" + name), 3)


@pytest.mark.parametrize("name", ["batch_isend_irecv", "alltoall_single_splits"])
@pytest.mark.parametrize("nranks", [2, 4])
def test_p2p_other_sizes(name, nranks):
    run(getattr(cases, "case_" + name), nranks)
