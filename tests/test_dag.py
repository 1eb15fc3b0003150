"""Dependency effects (state/dag.py): the pure level decision, the walk through the
store, and its cost: a fixed number of reads per level, however wide the level."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedulerd.errors import InvalidTransition
from schedulerd.state import dag
from schedulerd.state.models import Change, Job, JobSpec, NewJob
from schedulerd.state.store import Store
from schedulerd.state.transitions import State, initial_state
from tests.harness import running_store


def _job(jid: int, state: State, *, native_id: str | None = None) -> Job:
    return Job(
        id=jid, name=f"j{jid}", campaign=None, step=None, idx=None, state=state, attempt=1,
        max_attempts=1, epoch=0, version=1, cluster="c", queue=None, workdir="/w",
        native_id=native_id, spec=JobSpec(argv=("x",)), fingerprint=None, result=None,
        exit_code=None, reason=None, not_before=None, kill_pending=False, created_at=0.0,
        queued_at=None, started_at=None, finished_at=None,
    )  # fmt: skip


def _new(name: str, *, after: tuple[int, ...] = (), after_local: tuple[int, ...] = ()) -> NewJob:
    return NewJob(name=name, cluster="c", workdir="/w", spec=JobSpec(argv=("x",)), after=after,
                  after_local=after_local)  # fmt: skip


async def _finish(store: Store, job_id: int, outcome: State) -> None:
    """Take a ready job through the head to ``outcome``, as the worker does."""
    for to in (State.SUBMITTING, State.QUEUED, outcome):
        (result,) = await store.apply([Change(job_id=job_id, to=to)])
        assert isinstance(result, Job), result


# --- the pure decision ---------------------------------------------------------------------


def test_a_failed_parent_skips_children_not_on_a_head_and_passes_it_on() -> None:
    kids = {2: _job(2, State.PENDING), 3: _job(3, State.READY), 4: _job(4, State.HELD),
            5: _job(5, State.HELD, native_id="77"), 6: _job(6, State.QUEUED, native_id="78")}  # fmt: skip
    edges = [(1, k) for k in kids]
    changes, onward = dag.level_changes({1: State.FAILED}, edges, kids, {})
    assert [(c.job_id, c.to, c.reason) for c in changes] == [
        (2, State.SKIPPED, "parent 1 ended failed"),
        (3, State.SKIPPED, "parent 1 ended failed"),
        (4, State.SKIPPED, "parent 1 ended failed"),
    ]
    assert onward == {2, 3, 4}


def test_a_completed_parent_releases_only_children_whose_parents_all_completed() -> None:
    kids = {3: _job(3, State.PENDING), 4: _job(4, State.PENDING), 5: _job(5, State.SKIPPED)}
    edges = [(1, 3), (1, 4), (1, 5)]
    need = dag.candidates({1: State.COMPLETED}, edges, kids)
    assert need == {3, 4}  # a skipped child is not released
    parents = {3: {1: State.COMPLETED}, 4: {1: State.COMPLETED, 2: State.RUNNING}}
    changes, onward = dag.level_changes({1: State.COMPLETED}, edges, kids, parents)
    assert [(c.job_id, c.to) for c in changes] == [(3, State.READY)]
    assert onward == set()  # a released child changes nothing below it


def test_re_armed_children_count_for_their_siblings_in_the_same_level() -> None:
    # 1 retried; 2 and 3 are its skipped children, and 2 is also a parent of 3
    kids = {2: _job(2, State.SKIPPED), 3: _job(3, State.SKIPPED)}
    edges = [(1, 2), (1, 3)]
    parents = {2: {1: State.READY}, 3: {1: State.READY, 2: State.SKIPPED}}
    changes, onward = dag.level_changes({1: State.READY}, edges, kids, parents)
    assert [(c.job_id, c.to, c.reason) for c in changes] == [
        (2, State.PENDING, "a parent was retried"),
        (3, State.PENDING, "a parent was retried"),  # 2 counted as pending, not skipped
    ]
    assert onward == {2, 3}


def test_a_dangling_edge_is_ignored() -> None:
    assert dag.level_changes({1: State.FAILED}, [(1, 9)], {}, {}) == ([], set())


# --- the walk through the store, and what it costs -----------------------------------------


@asynccontextmanager
async def counting_selects(store: Store) -> AsyncIterator[list[str]]:
    """The SELECT statements the writer's connection runs meanwhile."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append(sql)

    await store._writer.db.set_trace_callback(trace)
    try:
        yield seen
    finally:
        # sqlite3 takes None to remove the callback; aiosqlite's annotation omits it
        await store._writer.db.set_trace_callback(None)  # type: ignore[arg-type]


async def _fan_out_reads(tmp_path: Path, width: int, outcome: State) -> tuple[int, dict[int, Job]]:
    """A parent with ``width`` children, each with a child of its own: the reads while
    the parent ends ``outcome``, and every job afterwards."""
    async with running_store(tmp_path / f"fan-{width}-{outcome}.sqlite3") as store:
        (root,) = await store.create_jobs([_new("root")])
        jobs = [_new(f"c{i}", after=(root,)) for i in range(width)]
        jobs += [_new(f"g{i}", after_local=(i,)) for i in range(width)]
        ids = await store.create_jobs(jobs)
        for to in (State.SUBMITTING, State.QUEUED):
            await store.apply([Change(job_id=root, to=to)])
        async with counting_selects(store) as seen:
            await store.apply([Change(job_id=root, to=outcome)])
        return len(seen), await store.get_jobs([root, *ids])


@pytest.mark.parametrize("outcome", [State.COMPLETED, State.FAILED])
async def test_propagation_reads_per_level_not_per_job(tmp_path: Path, outcome: State) -> None:
    narrow, _ = await _fan_out_reads(tmp_path, 3, outcome)
    wide, jobs = await _fan_out_reads(tmp_path, 2000, outcome)
    assert wide == narrow, (narrow, wide)
    # the job read, then per level: its edges, its children and (to release) their parents
    assert wide <= 1 + 3 * 3
    children = [j for j in jobs.values() if j.name.startswith("c")]
    grandchildren = [j for j in jobs.values() if j.name.startswith("g")]
    assert len(children) == len(grandchildren) == 2000
    if outcome is State.COMPLETED:
        assert {j.state for j in children} == {State.READY}
        assert {j.state for j in grandchildren} == {State.PENDING}
    else:
        assert {j.state for j in children} == {State.SKIPPED}
        assert {j.state for j in grandchildren} == {State.SKIPPED}
        # each grandchild names the child it was skipped for
        by_name = {j.name: j for j in jobs.values()}
        for i in range(2000):
            assert by_name[f"g{i}"].reason == f"parent {by_name[f'c{i}'].id} ended skipped"


async def test_a_user_action_reads_its_jobs_parents_once(tmp_path: Path) -> None:
    """Retrying failed jobs (each with a completed parent and a skipped child) reads a
    fixed number of times, however many jobs: not a few reads per job."""

    async def reads(width: int) -> int:
        async with running_store(tmp_path / f"retry-{width}.sqlite3") as store:
            (root,) = await store.create_jobs([_new("root")])
            mids = await store.create_jobs([_new(f"m{i}", after=(root,)) for i in range(width)])
            kids = await store.create_jobs([_new(f"g{i}", after=(m,)) for i, m in enumerate(mids)])
            await _finish(store, root, State.COMPLETED)
            for m in mids:
                await _finish(store, m, State.FAILED)
            assert {j.state for j in (await store.get_jobs(kids)).values()} == {State.SKIPPED}
            async with counting_selects(store) as seen:
                retried = await store.user_action("retry", mids)
            assert {j.state for j in retried} == {State.READY}
            assert {j.state for j in (await store.get_jobs(kids)).values()} == {State.PENDING}
            return len(seen)

    assert await reads(3) == await reads(300)


# --- the effects as a whole: a property over random graphs ----------------------------------

#: what may happen to job ``i``: it ends (from ready) completed or failed, or a user
#: cancels or retries it
operations = st.lists(
    st.tuples(st.sampled_from(["completed", "failed", "cancel", "retry"]), st.integers(0, 7)),
    max_size=14,
)
graphs = st.lists(st.sets(st.integers(0, 6), max_size=3), min_size=2, max_size=8)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(graph=graphs, ops=operations)
def test_jobs_waiting_on_parents_always_agree_with_them(
    tmp_path: Path, graph: list[set[int]], ops: list[tuple[str, int]]
) -> None:
    """Whatever ends, is cancelled or retried, every job that waits on its parents
    (pending, ready or skipped) is in the state its parents' states give
    (:func:`initial_state`), after every step."""
    db = tmp_path / f"prop-{time.monotonic_ns()}.sqlite3"

    async def run() -> None:
        async with running_store(db) as store:
            news = [
                _new(f"j{i}", after_local=tuple(sorted(p for p in parents if p < i)))
                for i, parents in enumerate(graph)
            ]
            ids = await store.create_jobs(news)
            parents_of = {ids[i]: [ids[p] for p in n.after_local] for i, n in enumerate(news)}
            for what, index in ops:
                if index >= len(ids):
                    continue
                jid = ids[index]
                job = await store.get_job(jid)
                if what in ("completed", "failed"):
                    if job.state is State.READY:
                        await _finish(store, jid, State(what))
                else:
                    try:
                        await store.user_action(what, [jid])
                    except InvalidTransition:
                        pass
                jobs = await store.get_jobs(ids)
                for j in jobs.values():
                    if j.state in (State.PENDING, State.READY, State.SKIPPED):
                        expected = initial_state(jobs[p].state for p in parents_of[j.id])
                        assert j.state is expected, (j.id, j.state, j.reason, expected)

    anyio.run(run)
