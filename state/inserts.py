"""The bulk-insert SQL of job creation: a chunk of new jobs as one INSERT built inside
SQLite from a JSON array, and their creation events as one INSERT ... SELECT."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

from schedulerd.state.models import NewJob
from schedulerd.state.queries import encode
from schedulerd.state.transitions import State, initial_state


def creation_rows(
    jobs: Sequence[NewJob], ids: list[int], states: list[State], parent_states: dict[int, State]
) -> tuple[str, dict[str, Any], list[tuple[int, int]]]:
    """The INSERT of the next new jobs with its params, and their dependency edges.

    ``states`` holds the states of the jobs before them in the call (extended here);
    ``after_local`` indexes and ``ids`` count from the first job of the call.

    A column whose value is the same for the whole chunk (the cluster, the queue, often
    the workdir template) is bound once; the others travel as one JSON array per job,
    which SQLite takes apart (each value pulled out of the JSON costs about as much as
    binding it from Python, but without the GIL)."""
    dep_rows: list[tuple[int, int]] = []
    if any(job.after or job.after_local for job in jobs):
        chunk_states: list[str] = []
        for n, job in enumerate(jobs, start=len(states)):
            state = State.READY
            if job.after or job.after_local:
                parents = [parent_states[p] for p in job.after]
                parents += [states[i] for i in job.after_local]
                state = initial_state(parents)
                jid = ids[n]
                dep_rows += [(p, jid) for p in job.after]
                dep_rows += [(ids[i], jid) for i in job.after_local]
            states.append(state)
            chunk_states.append(state.value)
        columns: dict[str, list[Any]] = {"state": chunk_states}
    else:
        states += [State.READY] * len(jobs)
        columns = {"state": [State.READY.value]}
    for name in _NEW_JOB_COLUMNS:
        columns[name] = list(map(operator.attrgetter(name), jobs))
    constant: dict[str, Any] = {}
    varying: list[str] = []
    for name, values in columns.items():
        if name != "spec" and len(set(values)) == 1:  # specs (JobSpec) are never compared
            constant[f"c_{name}"] = values[0]
        else:
            varying.append(name)
    params: dict[str, Any] = dict(constant)
    params["rows"] = encode(list(zip(*(columns[v] for v in varying), strict=True))).decode()
    return _insert_jobs_sql(tuple(varying)), params, dep_rows


_NEW_JOB_COLUMNS = ("name", "campaign", "step", "idx", "max_attempts", "cluster", "queue",
                    "workdir", "spec", "fingerprint")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _insert_jobs_sql(varying: tuple[str, ...]) -> str:
    """json_each walks the array in order: the job at position ``key`` gets id
    ``:first + key``. An object (the spec, a JobSpec encoded with its defaults left out)
    comes out of json_extract as its JSON text."""

    def value(name: str) -> str:
        if name in varying:
            return f"json_extract(value, '$[{varying.index(name)}]')"
        return f":c_{name}"

    return (
        "INSERT INTO jobs (id, name, campaign, step, idx, state, max_attempts, cluster, queue,"
        " workdir, spec, fingerprint, created_at)"
        f" SELECT :first + key, {value('name')}, {value('campaign')}, {value('step')},"
        f" {value('idx')}, {value('state')}, {value('max_attempts')}, {value('cluster')},"
        f" {value('queue')}, replace({value('workdir')}, '{{id}}', :first + key),"
        f" {value('spec')}, {value('fingerprint')}, :now"
        " FROM json_each(:rows)"
    )


#: The creation event carries the whole row, so the log alone can rebuild every job.
INSERT_CREATION_EVENTS = (
    "INSERT INTO events (job_id, at, from_state, to_state, reason, attempt, native_id,"
    " version, data)"
    " SELECT id, created_at, NULL, state,"
    f" CASE state WHEN '{State.SKIPPED.value}' THEN 'a parent did not complete'"
    " ELSE 'created' END, 1, NULL, 1,"
    " json_object('name', name, 'campaign', campaign, 'step', step, 'idx', idx,"
    " 'cluster', cluster, 'queue', queue, 'workdir', workdir, 'max_attempts', max_attempts,"
    " 'fingerprint', fingerprint, 'spec', json(spec))"
    " FROM jobs WHERE id BETWEEN ? AND ? ORDER BY id"
)


def id_runs(ids: Sequence[int]) -> list[list[int]]:
    """``[5, 6, 7, 2, 3]`` -> ``[[5, 3], [2, 2]]``: a 100,000-job call in order is one run
    (how a submission's ids are stored)."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs
