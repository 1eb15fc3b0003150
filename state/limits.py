"""Slot limits, pure: from what is active and what is allowed, what may be claimed.

The store counts (in the claiming transaction, so no two claimers exceed a limit
together: invariant 5) and hands the counts here; the decisions are plain arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from schedulerd.state.models import JobSpec

T = TypeVar("T")


def slots_taken(spec: JobSpec) -> int:
    """How many slots a job takes where cpus are counted (``local``): its ``cpus``, at
    least one. :data:`SLOTS_TAKEN_SQL` is the same in SQL."""
    return 1 if spec.cpus is None else max(1, spec.cpus)


SLOTS_TAKEN_SQL = "MAX(1, COALESCE(CAST(json_extract(spec, '$.cpus') AS INTEGER), 1))"


def claim_budget(
    *,
    slots: int,
    active: int,
    limit: int,
    count_cpus: bool,
    global_slots: int | None = None,
    active_everywhere: int = 0,
) -> tuple[int, int]:
    """``(free, jobs)``: the slots free on the cluster and how many ready jobs at most
    may be claimed now (0: none).

    ``active`` counts what the active jobs take of ``slots`` (jobs, or their cpus with
    ``count_cpus``); ``global_slots`` and ``active_everywhere`` always count jobs.
    """  # fmt: skip
    free = slots - active
    jobs = limit if count_cpus else free
    if global_slots is not None:
        jobs = min(jobs, global_slots - active_everywhere)
    jobs = min(jobs, limit)
    if free <= 0 or jobs <= 0:
        return free, 0
    return free, jobs


def fitting(
    ready: Sequence[T],
    *,
    slots: int,
    free: int,
    count_cpus: bool,
    spec_of: Callable[[T], JobSpec],
) -> list[T]:
    """The ready jobs (in id order, already at most the budget's count) to claim.

    Without ``count_cpus`` all of them. With it each takes :func:`slots_taken` of the
    ``free`` slots, up to the first that does not fit, so a wide job is never overtaken
    for ever by narrow ones; a job wider than ``slots`` can never fit and is claimed all
    the same (for the caller to refuse) instead of blocking the queue."""  # fmt: skip
    if not count_cpus:
        return list(ready)
    taken: list[T] = []
    for job in ready:
        need = slots_taken(spec_of(job))
        if need <= slots:
            if need > free:
                break
            free -= need
        taken.append(job)
    return taken
