"""The store's reads: each a function of a connection (the reader's, or the writer's
inside a transaction), each read in one call on the connection's thread."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite
import msgspec

from schedulerd.state.models import (
    EVENT_COLUMNS,
    JOB_COLUMNS,
    Event,
    Job,
    JobFilter,
    JobState,
    Submission,
    WatchedJob,
)
from schedulerd.state.transitions import State

SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
SQLITE_MAX_VARS = 30000  # well below SQLITE_MAX_VARIABLE_NUMBER (32766)

encode = msgspec.json.Encoder().encode


async def fetchall(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Run a query and read all of its rows in ONE call on the connection's thread.

    With an aiosqlite cursor read in several awaits, a task cancelled in between (a
    client that hung up mid-request, an unsubscribe, a timeout) left the statement open
    until the garbage collector found the cursor, and with it a read transaction: the
    connection went on seeing the database as it was, and a job acknowledged on the
    socket was "not found" by the next request (seen once in CI)."""
    return list(await db.execute_fetchall(sql, args))


async def fetchone(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    """The first row of a query that returns at most one (see :func:`fetchall`)."""
    rows = await fetchall(db, sql, args)
    return rows[0] if rows else None


def chunks(values: Iterable[int]) -> Iterable[list[int]]:
    """Sorted distinct ``values`` in runs SQLite takes as variables of one statement."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), SQLITE_MAX_VARS):
        yield ordered[start : start + SQLITE_MAX_VARS]


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


async def count(db: aiosqlite.Connection, where: str, args: Sequence[Any]) -> int:
    row = await fetchone(db, f"SELECT COUNT(*) FROM jobs WHERE {where}", args)
    return int(row[0]) if row else 0


async def jobs_by_id(db: aiosqlite.Connection, ids: Iterable[int]) -> dict[int, Job]:
    found: dict[int, Job] = {}
    for chunk in chunks(ids):
        for row in await fetchall(db, f"{SELECT_JOB} WHERE id IN ({marks(chunk)})", chunk):
            job = Job.from_row(row)
            found[job.id] = job
    return found


async def states_of(db: aiosqlite.Connection, ids: Iterable[int]) -> dict[int, State]:
    found: dict[int, State] = {}
    for chunk in chunks(ids):
        rows = await fetchall(db, f"SELECT id, state FROM jobs WHERE id IN ({marks(chunk)})", chunk)
        found.update((int(jid), State(state)) for jid, state in rows)
    return found


async def children_of(db: aiosqlite.Connection, ids: Iterable[int]) -> list[tuple[int, int]]:
    """``(parent, child)`` edges from ``ids``, in (parent, child) order."""
    pairs: list[tuple[int, int]] = []
    for chunk in chunks(ids):
        rows = await fetchall(
            db, f"SELECT parent, child FROM deps WHERE parent IN ({marks(chunk)})", chunk
        )
        pairs += [(int(p), int(c)) for p, c in rows]
    return pairs


async def parents_of(db: aiosqlite.Connection, job_id: int) -> list[int]:
    rows = await fetchall(db, "SELECT parent FROM deps WHERE child = ?", (job_id,))
    return [int(r[0]) for r in rows]


async def parent_states(
    db: aiosqlite.Connection, children: Iterable[int]
) -> dict[int, dict[int, State]]:
    """For each of ``children`` that has parents: each existing parent's state, read by
    one statement (per 30,000 children) however many there are."""
    found: dict[int, dict[int, State]] = {}
    for chunk in chunks(children):
        rows = await fetchall(
            db,
            "SELECT d.child, d.parent, j.state FROM deps d JOIN jobs j ON j.id = d.parent"
            f" WHERE d.child IN ({marks(chunk)})",
            chunk,
        )
        for child, parent, state in rows:
            found.setdefault(int(child), {})[int(parent)] = State(state)
    return found


async def submission(db: aiosqlite.Connection, token: str) -> Submission | None:
    row = await fetchone(
        db, "SELECT token, digest, ids, created_at FROM submissions WHERE token = ?", (token,)
    )
    if row is None:
        return None
    ids = [i for first, n in json.loads(row[2]) for i in range(first, first + n)]
    return Submission(token=row[0], digest=row[1], ids=ids, created_at=row[3])


async def get_job(db: aiosqlite.Connection, job_id: int) -> Job | None:
    row = await fetchone(db, f"{SELECT_JOB} WHERE id = ?", (job_id,))
    return None if row is None else Job.from_row(row)


async def list_jobs(
    db: aiosqlite.Connection, filt: JobFilter, *, before_id: int | None, limit: int
) -> list[Job]:
    where: list[str] = []
    args: list[Any] = []
    if filt.states:
        where.append(f"state IN ({marks(filt.states)})")
        args += [s.value for s in filt.states]
    for column in ("campaign", "cluster", "name"):
        value = getattr(filt, column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    sql = SELECT_JOB
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [Job.from_row(r) for r in await fetchall(db, sql, args)]


async def cluster_has_jobs(db: aiosqlite.Connection, cluster: str) -> bool:
    row = await fetchone(db, "SELECT 1 FROM jobs WHERE cluster = ? LIMIT 1", (cluster,))
    return row is not None


async def jobs_in_states(
    db: aiosqlite.Connection, cluster: str, states: Iterable[State]
) -> list[Job]:
    wanted = [s.value for s in states]
    rows = await fetchall(
        db,
        f"{SELECT_JOB} WHERE cluster = ? AND state IN ({marks(wanted)}) ORDER BY id",
        (cluster, *wanted),
    )
    return [Job.from_row(r) for r in rows]


async def watched_jobs(
    db: aiosqlite.Connection, cluster: str, states: Iterable[State]
) -> list[WatchedJob]:
    wanted = [s.value for s in states]
    rows = await fetchall(
        db,
        "SELECT id, state, version, attempt, native_id, reason, started_at,"
        " COALESCE(queued_at, created_at) FROM jobs"
        f" WHERE cluster = ? AND state IN ({marks(wanted)}) AND native_id IS NOT NULL"
        " ORDER BY id",
        (cluster, *wanted),
    )
    return [
        WatchedJob(id=int(r[0]), state=State(r[1]), version=int(r[2]), attempt=int(r[3]),
                   native_id=str(r[4]), reason=r[5], started_at=r[6], submitted_at=float(r[7]))
        for r in rows
    ]  # fmt: skip


async def kill_pending(db: aiosqlite.Connection, cluster: str) -> list[Job]:
    rows = await fetchall(
        db, f"{SELECT_JOB} WHERE cluster = ? AND kill_pending = 1 ORDER BY id", (cluster,)
    )
    return [Job.from_row(r) for r in rows]


async def next_not_before(db: aiosqlite.Connection, cluster: str) -> float | None:
    row = await fetchone(
        db,
        "SELECT MIN(not_before) FROM jobs"
        " WHERE cluster = ? AND state = 'ready' AND not_before IS NOT NULL",
        (cluster,),
    )
    return None if row is None or row[0] is None else float(row[0])


async def events_since(
    db: aiosqlite.Connection, cursor: int, *, limit: int, job_ids: Sequence[int] | None
) -> list[Event]:
    if job_ids and len(job_ids) > 500:
        # more ids than SQLite takes as variables in one statement: one JSON array
        sql = (
            f"{SELECT_EVENT} WHERE id > ? AND job_id IN (SELECT value FROM json_each(?))"
            " ORDER BY id LIMIT ?"
        )
        args: tuple[Any, ...] = (cursor, encode(list(job_ids)).decode(), limit)
    elif job_ids:
        sql = f"{SELECT_EVENT} WHERE id > ? AND job_id IN ({marks(job_ids)}) ORDER BY id LIMIT ?"
        args = (cursor, *job_ids, limit)
    else:
        sql = f"{SELECT_EVENT} WHERE id > ? ORDER BY id LIMIT ?"
        args = (cursor, limit)
    return [Event.from_row(r) for r in await fetchall(db, sql, args)]


async def last_event_id(db: aiosqlite.Connection) -> int:
    row = await fetchone(db, "SELECT COALESCE(MAX(id), 0) FROM events")
    return int(row[0]) if row else 0


async def job_states(db: aiosqlite.Connection, job_ids: Sequence[int]) -> list[JobState]:
    rows = await fetchall(
        db,
        "SELECT id, state, attempt, max_attempts, exit_code, cluster FROM jobs"
        " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (encode(list(job_ids)).decode(),),
    )
    return [
        JobState(id=int(r[0]), state=State(r[1]), attempt=int(r[2]), max_attempts=int(r[3]),
                 exit_code=r[4], cluster=str(r[5]))
        for r in rows
    ]  # fmt: skip


async def count_by_state(db: aiosqlite.Connection) -> dict[str, int]:
    rows = await fetchall(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
    return {str(s): int(n) for s, n in rows}


async def settings(db: aiosqlite.Connection) -> dict[str, Any]:
    rows = await fetchall(db, "SELECT key, value FROM settings")
    return {str(k): json.loads(v) for k, v in rows}
