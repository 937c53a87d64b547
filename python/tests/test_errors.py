"""Unsupported arguments and disagreeing ranks raise clear Python errors, never crash or hang."""
import datetime
import time

import pytest

import error_cases as cases
from harness import run

SHORT_TIMEOUT = datetime.timedelta(seconds=10)


def test_unsupported_arguments_raise():
    run(cases.case_unsupported_arguments, 2)


def test_mismatched_sizes_raise_on_every_rank():
    start = time.monotonic()
    run(cases.case_mismatched_sizes, 3, timeout=SHORT_TIMEOUT)
    # Tally detects the mismatch from the first message, long before the group's timeout.
    assert time.monotonic() - start < SHORT_TIMEOUT.total_seconds()


@pytest.mark.parametrize("case", ["mismatched_p2p", "mismatched_batch"])
def test_mismatched_send_recv_raises(case):
    start = time.monotonic()
    run(getattr(cases, "case_" + case), 2, timeout=SHORT_TIMEOUT)
    assert time.monotonic() - start < SHORT_TIMEOUT.total_seconds()


def test_silent_rank_times_out_with_the_group_timeout():
    run(cases.case_silent_rank, 3, 4, timeout=datetime.timedelta(seconds=4))
