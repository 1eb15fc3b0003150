"""The claiming arithmetic (state/limits.py): counts and limits -> what may be claimed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schedulerd.state.limits import claim_budget, fitting, slots_taken
from schedulerd.state.models import JobSpec


def test_slots_taken_is_the_cpus_at_least_one() -> None:
    assert slots_taken(JobSpec(argv=("true",))) == 1
    assert slots_taken(JobSpec(argv=("true",), cpus=4)) == 4
    assert slots_taken(JobSpec(argv=("true",), cpus=0)) == 1


def test_budget_counts_jobs_against_the_cluster_limit() -> None:
    assert claim_budget(slots=10, active=3, limit=100, count_cpus=False) == (7, 7)
    assert claim_budget(slots=10, active=3, limit=5, count_cpus=False) == (7, 5)
    assert claim_budget(slots=10, active=10, limit=100, count_cpus=False) == (0, 0)
    assert claim_budget(slots=10, active=12, limit=100, count_cpus=False) == (-2, 0)


def test_the_global_limit_counts_jobs_everywhere() -> None:
    budget = claim_budget(slots=10, active=0, limit=100, count_cpus=False, global_slots=4,
                          active_everywhere=1)  # fmt: skip
    assert budget == (10, 3)
    full = claim_budget(slots=10, active=0, limit=100, count_cpus=False, global_slots=4,
                        active_everywhere=4)  # fmt: skip
    assert full[1] == 0


def test_with_cpus_counted_the_budget_is_the_read_limit_while_cpus_are_free() -> None:
    assert claim_budget(slots=8, active=6, limit=100, count_cpus=True) == (2, 100)
    assert claim_budget(slots=8, active=8, limit=100, count_cpus=True) == (0, 0)
    assert claim_budget(slots=8, active=0, limit=100, count_cpus=True, global_slots=3,
                        active_everywhere=1) == (8, 2)  # fmt: skip


def _specs(*cpus: int) -> list[JobSpec]:
    return [JobSpec(argv=("true",), cpus=c) for c in cpus]


def _fit(ready: list[JobSpec], *, slots: int, free: int, count_cpus: bool = True) -> list[int]:
    taken = fitting(ready, slots=slots, free=free, count_cpus=count_cpus, spec_of=lambda s: s)
    return [s.cpus or 1 for s in taken]


def test_fitting_stops_at_the_first_job_that_does_not_fit() -> None:
    assert _fit(_specs(2, 2, 4, 1), slots=8, free=5) == [2, 2]  # 4 waits, 1 does not overtake
    assert _fit(_specs(1, 1, 1), slots=8, free=8) == [1, 1, 1]
    assert _fit(_specs(3), slots=8, free=2) == []


def test_a_job_wider_than_the_cluster_is_claimed_for_the_caller_to_refuse() -> None:
    assert _fit(_specs(16, 2), slots=8, free=2) == [16, 2]


def test_without_cpus_counted_every_read_job_is_claimed() -> None:
    assert _fit(_specs(4, 4, 4), slots=2, free=1, count_cpus=False) == [4, 4, 4]


@given(st.lists(st.integers(1, 6), max_size=20), st.integers(1, 8), st.integers(0, 8))
def test_fitting_never_takes_more_than_the_free_slots(
    cpus: list[int], slots: int, active: int
) -> None:
    free, budget = claim_budget(slots=slots, active=active, limit=100, count_cpus=True)
    taken = _fit(_specs(*cpus[:budget]), slots=slots, free=free)
    assert taken == cpus[: len(taken)]  # a prefix, in order
    assert sum(c for c in taken if c <= slots) <= max(free, 0)
