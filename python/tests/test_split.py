"""new_group on a tally default group: a split of the default communicator (no rendezvous through
the store), non-members included, its collectives matching gloo's on the same ranks."""
import split_cases as cases
from harness import run, run_tally_world


def test_new_group_splits_the_default_group():
    run_tally_world(cases.case_new_group_splits, 4)


def test_tally_group_on_gloo_default_meets_through_the_store():
    run(cases.case_tally_group_on_gloo_default, 3)
