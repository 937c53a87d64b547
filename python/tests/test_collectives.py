"""Every collective, dtype and reduce op of the tally backend against gloo, on 2 to 4 ranks."""
import pytest

import collective_cases as cases
from harness import run

COLLECTIVES = ["allreduce", "allreduce_coalesced", "allgather", "allgather_base", "reduce_scatter",
               "reduce_scatter_base", "broadcast", "reduce"]


@pytest.mark.parametrize("name", COLLECTIVES)
def test_collective_matches_gloo(name):
    run(getattr(cases, "case_" + name), 3)


@pytest.mark.parametrize("nranks", [2, 4])
def test_allreduce_other_sizes(nranks):
    run(cases.case_allreduce, nranks)


def test_allreduce_large():
    run(cases.case_allreduce_large, 4)


def test_barrier_waits_for_every_rank():
    run(cases.case_barrier, 3)


def test_async_work_and_futures():
    run(cases.case_async_work, 3)
