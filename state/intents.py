"""Hold and release of jobs on a head as durable intents (table ``head_intents``).

A user's hold of a job queued on a head, or release of a job held there, does not change
its state: the store records the action here, in the transaction that writes its event,
and the poller carries out every pending intent of its cluster with one batched command
each (:meth:`schedulerd.worker.poller.Poller.carry_out_intents`), dropping it once the
head answered. The state becomes ``held``/``queued`` when a poll sees it. Like the
``kill_pending`` flag of a cancel, an intent survives restarts and unreachable heads.

What an action leaves pending is :func:`.transitions.plan_head_intent`'s decision; this
module is only its SQL (functions of a connection, called inside the store's
transactions).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence

import aiosqlite

from schedulerd.errors import Conflict
from schedulerd.state.models import Job
from schedulerd.state.queries import chunks, fetchall, marks


async def pending(db: aiosqlite.Connection, job_ids: Iterable[int]) -> dict[int, str]:
    """The intent pending for each of ``job_ids`` that has one."""
    found: dict[int, str] = {}
    for chunk in chunks(job_ids):
        rows = await fetchall(
            db, f"SELECT job_id, action FROM head_intents WHERE job_id IN ({marks(chunk)})", chunk
        )
        found.update((int(r[0]), str(r[1])) for r in rows)
    return found


async def of_cluster(db: aiosqlite.Connection, cluster: str) -> list[tuple[int, str]]:
    """Every pending intent of ``cluster``: (job id, action), by id."""
    rows = await fetchall(
        db, "SELECT job_id, action FROM head_intents WHERE cluster = ? ORDER BY job_id", (cluster,)
    )
    return [(int(r[0]), str(r[1])) for r in rows]


async def record(
    db: aiosqlite.Connection, job: Job, intent: str | None, *, reason: str, now: float
) -> Job:
    """Leave ``intent`` pending for ``job`` (None: none), with an event from its state to
    the same state (``data.head_action``); the job's version moves on like any change."""
    cur = await db.execute(
        "UPDATE jobs SET version = version + 1 WHERE id = ? AND version = ?",
        (job.id, job.version),
    )
    if cur.rowcount != 1:
        raise Conflict(f"job {job.id} changed meanwhile")
    if intent is None:
        await db.execute("DELETE FROM head_intents WHERE job_id = ?", (job.id,))
    else:
        await db.execute(
            "INSERT INTO head_intents (job_id, cluster, action) VALUES (?, ?, ?)"
            " ON CONFLICT(job_id) DO UPDATE SET action = excluded.action",
            (job.id, job.cluster, intent),
        )
    new = dataclasses.replace(job, version=job.version + 1)
    await db.execute(
        "INSERT INTO events (job_id, at, from_state, to_state, reason, attempt, native_id,"
        " version, data) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            job.id, now, job.state.value, job.state.value, reason, job.attempt, job.native_id,
            new.version, json.dumps({"head_action": intent}),
        ),
    )  # fmt: skip
    return new


async def drop(db: aiosqlite.Connection, job_ids: Sequence[int]) -> None:
    """No intent pending for these jobs any more (a cancel wins over a hold)."""
    await db.executemany("DELETE FROM head_intents WHERE job_id = ?", [(j,) for j in job_ids])


async def clear(db: aiosqlite.Connection, done: Sequence[tuple[int, str]]) -> None:
    """The head answered these (job id, action): each is dropped unless the user has asked
    for something else meanwhile."""
    await db.executemany("DELETE FROM head_intents WHERE job_id = ? AND action = ?", done)
