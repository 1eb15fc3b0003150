"""Dependency effects: what a job's change does to the jobs that depend on it.

Written once for every cause: a parent that ended unsuccessfully skips its children not
yet on a head, a completed parent releases a pending child whose parents all completed,
and a job re-armed by a retry gives its skipped children another chance. Skipped and
re-armed children pass the effect on to their own children, level by level.

:func:`level_changes` decides one level (pure); :func:`propagate` walks the levels in
the writer's transaction with three reads per level, however many jobs a level holds,
and applies each change through the store's compare-and-set. (The order and cycle check
of the jobs of one submit call are the submit path's, in ``schedulerd``.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import aiosqlite

from schedulerd.state import queries
from schedulerd.state.models import Change, Job
from schedulerd.state.transitions import SKIPPABLE, UNSUCCESSFUL, State, initial_state

#: states of a job re-armed by a retry: its skipped children are looked at again
REARMED = frozenset({State.READY, State.PENDING})


def candidates(
    level: Mapping[int, State], edges: Sequence[tuple[int, int]], kids: Mapping[int, Job]
) -> set[int]:
    """The children whose decision needs all their parents' states: pending children of
    a completed job, skipped children of a re-armed one."""
    need: set[int] = set()
    for parent, child_id in edges:
        child = kids.get(child_id)
        if child is None:
            continue
        cause = level[parent]
        if (cause is State.COMPLETED and child.state is State.PENDING) or (
            cause in REARMED and child.state is State.SKIPPED
        ):
            need.add(child_id)
    return need


def level_changes(
    level: Mapping[int, State],
    edges: Sequence[tuple[int, int]],
    kids: Mapping[int, Job],
    parents: Mapping[int, Mapping[int, State]],
) -> tuple[list[Change], set[int]]:
    """The changes one level causes, in the order to apply them, and the children that
    carry the effect on to the next level.

    ``level``: the jobs that changed, with their new states; ``edges``: their
    ``(parent, child)`` dependency edges in (parent, child) order; ``kids``: the children
    as stored; ``parents``: for each of :func:`candidates`, its parents' states. A child
    changed earlier in the level counts with its new state for the ones after it."""
    state = {jid: kid.state for jid, kid in kids.items()}
    known = {child: dict(states) for child, states in parents.items()}
    depends: dict[int, list[int]] = {}
    for waiting, states in known.items():
        for parent in states:
            depends.setdefault(parent, []).append(waiting)

    changes: list[Change] = []
    onward: set[int] = set()

    def decide(child_id: int, to: State, reason: str, *, passes_on: bool) -> None:
        changes.append(Change(job_id=child_id, to=to, reason=reason))
        state[child_id] = to
        for other in depends.get(child_id, ()):
            known[other][child_id] = to
        if passes_on:
            onward.add(child_id)

    rearmed_kids: set[int] = set()
    for parent, child_id in edges:
        child = kids.get(child_id)
        if child is None:
            continue
        cause = level[parent]
        if cause in UNSUCCESSFUL:
            if state[child_id] in SKIPPABLE and not child.native_id:
                decide(child_id, State.SKIPPED, f"parent {parent} ended {cause}", passes_on=True)
        elif cause is State.COMPLETED:
            if state[child_id] is State.PENDING and (
                initial_state(known.get(child_id, {}).values()) is State.READY
            ):
                decide(child_id, State.READY, "parents completed", passes_on=False)
        elif cause in REARMED:
            rearmed_kids.add(child_id)
    for child_id in sorted(rearmed_kids):  # re-armed in id order: parents before children
        if state[child_id] is State.SKIPPED:
            target = initial_state(known.get(child_id, {}).values())
            if target is not State.SKIPPED:
                decide(child_id, target, "a parent was retried", passes_on=True)
    return changes, onward


async def propagate(
    db: aiosqlite.Connection,
    changed: Iterable[Job],
    apply: Callable[[Job, Change], Awaitable[Job]],
) -> None:
    """Carry the effects of ``changed`` (already written) through their descendants."""
    level = {job.id: job.state for job in changed}
    while level:
        edges = await queries.children_of(db, level)
        if not edges:
            return
        kids = await queries.jobs_by_id(db, {child for _, child in edges})
        need = candidates(level, edges, kids)
        parents = await queries.parent_states(db, need) if need else {}
        changes, onward = level_changes(level, edges, kids, parents)
        level = {}
        for change in changes:
            new = await apply(kids[change.job_id], change)
            kids[change.job_id] = new
            if change.job_id in onward:
                level[new.id] = new.state
