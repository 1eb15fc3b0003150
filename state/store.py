"""The SQLite store: the only writer of the database, and its queries.

* WAL journal; ``synchronous=FULL`` on the writer so an acknowledged write survives a
  power cut (invariant 1).
* One writer task drains a queue of write operations and group-commits them: each
  operation runs inside its own SAVEPOINT of a shared ``BEGIN IMMEDIATE`` transaction,
  so one failing operation rolls back alone while the others commit together.
* Every state change is a compare-and-set ``UPDATE ... WHERE id=? AND state=? AND
  version=?`` plus an ``events`` row in the same transaction.
* Reads go through a second, read-only connection (WAL readers never block the writer).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
import anyio.abc
import msgspec
import structlog

from schedulerd.errors import (
    Conflict,
    InvalidTransition,
    JobNotFound,
    SchedulerdError,
    ShuttingDown,
    StorageError,
    UnknownDependency,
)
from schedulerd.state import machine
from schedulerd.state.machine import State
from schedulerd.state.schema import MIGRATIONS, SCHEMA_VERSION

log = structlog.get_logger(__name__)
T = TypeVar("T")

JOB_COLUMNS = (
    "id", "name", "campaign", "step", "idx", "state", "attempt", "max_attempts", "epoch",
    "version", "cluster", "queue", "workdir", "native_id", "spec", "fingerprint", "result",
    "exit_code", "reason", "not_before", "kill_pending", "created_at", "queued_at",
    "started_at", "finished_at",
)  # fmt: skip
_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
EVENT_COLUMNS = (
    "id", "job_id", "at", "from_state", "to_state", "reason", "attempt", "native_id",
    "version", "data",
)  # fmt: skip
_SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
# columns a transition may set besides state/version
MUTABLE = frozenset(
    {"attempt", "max_attempts", "native_id", "exit_code", "reason", "not_before",
     "kill_pending", "queued_at", "started_at", "finished_at", "result", "epoch"}
)  # fmt: skip
SQLITE_MAX_VARS = 30000  # well below SQLITE_MAX_VARIABLE_NUMBER (32766)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    name: str
    campaign: str | None
    step: str | None
    idx: int | None
    state: State
    attempt: int
    max_attempts: int
    epoch: int
    version: int
    cluster: str
    queue: str | None
    workdir: str
    native_id: str | None
    spec: dict[str, Any]
    fingerprint: str | None
    result: Any
    exit_code: int | None
    reason: str | None
    not_before: float | None
    kill_pending: bool
    created_at: float
    queued_at: float | None
    started_at: float | None
    finished_at: float | None

    @property
    def submit_name(self) -> str:
        return f"sd-{self.id}-{self.attempt}"

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        values["state"] = State(values["state"])
        values["spec"] = json.loads(values["spec"])
        values["result"] = None if values["result"] is None else json.loads(values["result"])
        values["kill_pending"] = bool(values["kill_pending"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    job_id: int
    at: float
    from_state: State | None
    to_state: State
    reason: str | None
    attempt: int
    native_id: str | None
    version: int
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Event:
        values = dict(zip(EVENT_COLUMNS, row, strict=True))
        values["from_state"] = None if values["from_state"] is None else State(values["from_state"])
        values["to_state"] = State(values["to_state"])
        values["data"] = None if values["data"] is None else json.loads(values["data"])
        return cls(**values)


class NewJob(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A job to create. ``after`` are existing job ids; ``after_local`` are indexes of
    earlier jobs in the same ``create_jobs`` call.

    A msgspec Struct rather than a frozen dataclass: a 100,000-job submit builds one per
    job, and the dataclass's ``__init__`` cost 5 µs each against 0.3 µs. It holds plain
    data only, so it need not be tracked by the cycle collector (``gc=False``)."""

    name: str
    cluster: str
    workdir: str
    spec: dict[str, Any]
    queue: str | None = None
    max_attempts: int = 1
    campaign: str | None = None
    step: str | None = None
    idx: int | None = None
    fingerprint: str | None = None
    after: tuple[int, ...] = ()
    after_local: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    """What a waiter needs to know of a job (see :meth:`Store.job_states`)."""

    id: int
    state: State
    attempt: int
    max_attempts: int
    exit_code: int | None
    cluster: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitKey:
    """A job.submit call's idempotency key, stored with its jobs in their transaction.

    ``digest`` identifies the call's params (the same token with another digest is
    refused); ``order`` gives, for each job in the caller's order, its index among the
    jobs as created (``None``: the same order)."""

    token: str
    digest: str
    order: Sequence[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """A stored job.submit call: the ids it answered, in the caller's order."""

    token: str
    digest: str
    ids: list[int]
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A requested transition of one job (compare-and-set on state and version)."""

    job_id: int
    to: State
    expect_state: State | frozenset[State] | None = None
    expect_version: int | None = None
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    states: tuple[State, ...] = ()
    campaign: str | None = None
    cluster: str | None = None
    name: str | None = None


def slots_taken(spec: dict[str, Any]) -> int:
    """How many slots a job takes where cpus are counted (``local``): its ``cpus``, at
    least one. ``_SLOTS_TAKEN_SQL`` is the same in SQL."""
    cpus = spec.get("cpus")
    return max(1, cpus) if isinstance(cpus, int) else 1


_SLOTS_TAKEN_SQL = "MAX(1, COALESCE(CAST(json_extract(spec, '$.cpus') AS INTEGER), 1))"


def retry_delay(attempt: int, *, base: float = 30.0, cap: float = 3600.0) -> float:
    """Backoff before attempt ``attempt + 1``: 30 s, 60 s, 120 s, ... capped at an hour."""
    return min(cap, base * math.pow(2, max(0, attempt - 1)))


class _Op:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Store:
    """Open with :func:`open_store`; run :meth:`run_writer` in the task group."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection,
    ):
        self.path = path
        self._db = writer
        self._reader = reader
        self._checkpointer = checkpointer
        self.checkpoint_delay = 1.0
        self._commits = 0
        send, receive = anyio.create_memory_object_stream[_Op](max_buffer_size=math.inf)
        self._send = send
        self._receive = receive
        self._changed = anyio.Event()
        self._work = anyio.Event()
        self._work_pending = False
        self._closed = False
        self.retry_base = 30.0
        self.clock: Callable[[], float] = time.time

    # --- lifecycle ------------------------------------------------------------------------

    async def run_writer(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The single writer: group-commits queued operations until :meth:`close`.

        The WAL is checkpointed by a task of its own on a third connection, not by the
        commit that crosses SQLite's automatic threshold: after a 100,000-job submit that
        checkpoint copied 65 MB and waited for an fsync before the client got its ack."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._checkpoint_loop)
            task_status.started()
            await self._write_loop()
            tg.cancel_scope.cancel()

    async def _checkpoint_loop(self) -> None:
        done = 0
        while True:
            if self._commits == done:
                await self._changed.wait()
            await anyio.sleep(self.checkpoint_delay)  # one checkpoint per burst of commits
            done = self._commits
            try:
                # PASSIVE never blocks the writer or the readers; what it cannot copy now
                # (frames a reader still needs) the next round copies
                await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("store_checkpoint_failed", error=str(exc))

    async def _write_loop(self) -> None:
        async with self._receive:
            while True:
                try:
                    first = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < 1000:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                with anyio.CancelScope(shield=True):
                    await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        db = self._db
        try:
            await db.execute("BEGIN IMMEDIATE")
            for op in batch:
                await db.execute("SAVEPOINT op")
                try:
                    op.result = await op.fn(db)
                except Exception as exc:
                    op.error = exc
                    if not db.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk, an I/O
                        # error): the batch's other operations are undone too, for that cause
                        raise
                    await db.execute("ROLLBACK TO op")
                await db.execute("RELEASE op")
            await db.execute("COMMIT")
        except Exception as exc:
            log.error("store_commit_failed", error=str(exc))
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for op in batch:
                if op.error is None:
                    op.error = (
                        _write_error(exc) if isinstance(exc, sqlite3.Error)
                        else SchedulerdError(f"database write failed: {exc}")
                    )  # fmt: skip
        for op in batch:
            op.done.set()
        self._commits += 1
        self._changed.set()
        self._changed = anyio.Event()
        if self._work_pending:
            self._work_pending = False
            self._work.set()
            self._work = anyio.Event()

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` inside the writer's transaction; return once it is committed."""
        if self._closed:
            raise ShuttingDown("the store is closed")
        op = _Op(fn)
        self._send.send_nowait(op)
        with anyio.CancelScope(shield=True):
            # the write goes ahead regardless; never leave before knowing its outcome
            await op.done.wait()
        if isinstance(op.error, sqlite3.Error):
            raise _write_error(op.error) from op.error
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def wait_work(self) -> None:
        """Return after a commit that made a job ready or freed a slot."""
        await self._work.wait()

    @property
    def changed(self) -> anyio.Event:
        """Set by the next commit (take it before reading, then wait on it)."""
        return self._changed

    async def close(self) -> None:
        """Stop accepting writes; the writer drains what is queued and returns."""
        if not self._closed:
            self._closed = True
            self._send.close()

    async def aclose_connections(self) -> None:
        self._closed = True
        self._send.close()
        self._receive.close()
        await self._reader.close()
        await self._checkpointer.close()
        await self._db.close()  # the last connection out checkpoints and removes the WAL

    # --- writes -----------------------------------------------------------------------------

    async def create_jobs(
        self, jobs: Sequence[NewJob], *, key: SubmitKey | None = None
    ) -> list[int]:
        """Insert jobs, their dependencies and their creation events; return their ids."""
        send, receive = anyio.create_memory_object_stream[Sequence[NewJob] | BaseException](1)
        send.send_nowait(jobs)
        send.close()
        parents = sorted({p for job in jobs for p in job.after})
        return await self.create_jobs_from(len(jobs), parents, receive, key=key)

    async def create_jobs_from(
        self,
        count: int,
        parent_ids: Sequence[int],
        chunks: anyio.abc.ObjectReceiveStream[Sequence[NewJob] | BaseException],
        *,
        key: SubmitKey | None = None,
    ) -> list[int]:
        """Like :meth:`create_jobs` for ``count`` jobs arriving in chunks (in order), so a
        caller can validate the next chunk while this one is written. An exception
        received instead of a chunk aborts the whole call: nothing is stored.

        With ``key``, the token is stored in the same transaction as the jobs. If it was
        stored before, nothing is created and that call's ids are returned (in creation
        order, as ever); if that call had another digest, Conflict."""
        now = self.clock()

        async def op(db: aiosqlite.Connection) -> list[int]:
            async with chunks:
                if key is not None and (before := await _submission(db, key.token)):
                    # a call racing with its own retry (the first check is a read)
                    return sorted(same_submission(before, key.digest))
                parent_states = await _states_of(db, parent_ids)
                missing = [p for p in parent_ids if p not in parent_states]
                if missing:
                    raise UnknownDependency(
                        (f"after: no job with id {missing[0]}" if len(missing) == 1 else
                         f"after: no jobs with ids {', '.join(map(str, missing[:10]))}"
                         + (" ..." if len(missing) > 10 else "")),
                        data={"missing": missing[:100]},
                    )
                row = await _fetchone(db, "SELECT COALESCE(MAX(id), 0) FROM jobs")
                first_id = int(row[0]) + 1 if row else 1
                ids = list(range(first_id, first_id + count))
                states: list[State] = []
                async for chunk in chunks:
                    if isinstance(chunk, BaseException):
                        raise chunk
                    if len(states) + len(chunk) > count:
                        raise SchedulerdError("more jobs than announced")
                    sql, params, dep_rows = _creation_rows(chunk, ids, states, parent_states)
                    # Both inserts run inside SQLite, off the GIL: the event loop validates
                    # the next chunk meanwhile (binding 13 values a row from Python held the
                    # GIL, and the two threads took turns instead of overlapping).
                    first = ids[len(states) - len(chunk)]
                    await db.execute(sql, {**params, "first": first, "now": now})
                    await db.execute(_INSERT_CREATION_EVENTS, (first, first + len(chunk) - 1))
                    if dep_rows:
                        await db.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", dep_rows)
                if len(states) != count:
                    raise SchedulerdError(f"only {len(states)} of {count} jobs arrived")
                if key is not None:
                    answered = ids if key.order is None else [ids[i] for i in key.order]
                    await db.execute(
                        "INSERT INTO submissions (token, digest, ids, created_at)"
                        " VALUES (?, ?, ?, ?)",
                        (key.token, key.digest, json.dumps(_runs(answered)), now),
                    )
                if State.READY in states:
                    self._work_pending = True
                return ids

        return await self.write(op)

    async def apply(self, changes: Sequence[Change]) -> list[Job | SchedulerdError]:
        """Apply transitions (CAS each); per change, the new job row or the error.

        Automatic retries and dependency effects (children released or skipped) are
        applied in the same transaction.
        """

        async def op(db: aiosqlite.Connection) -> list[Job | SchedulerdError]:
            return await self._apply(db, changes)

        return await self.write(op)

    async def _apply(
        self, db: aiosqlite.Connection, changes: Sequence[Change]
    ) -> list[Job | SchedulerdError]:
        now = self.clock()
        current = await _jobs_by_id(db, [c.job_id for c in changes])
        results: list[Job | SchedulerdError] = []
        finished: list[Job] = []
        for change in changes:
            job = current.get(change.job_id)
            if job is None:
                results.append(JobNotFound(f"no job with id {change.job_id}"))
                continue
            try:
                new = await self._transition(db, job, change, now)
            except SchedulerdError as exc:
                results.append(exc)
                continue
            current[job.id] = new
            if new.state in machine.TERMINAL:
                follow = machine.after_finish(
                    new.state, attempt=new.attempt, max_attempts=new.max_attempts
                )
                if follow is not None:
                    delay = retry_delay(new.attempt, base=self.retry_base)
                    new = await self._transition(
                        db,
                        new,
                        Change(
                            job_id=new.id,
                            to=follow,
                            reason=f"retry {new.attempt + 1}/{new.max_attempts}",
                            fields=_fresh_attempt(new.attempt + 1, now + delay),
                        ),
                        now,
                    )
                    current[job.id] = new
                else:
                    finished.append(new)
            results.append(new)
        if finished:
            await self._propagate(db, finished, now)
        return results

    async def _transition(
        self, db: aiosqlite.Connection, job: Job, change: Change, now: float
    ) -> Job:
        expect = change.expect_state
        if expect is not None:
            allowed = expect if isinstance(expect, frozenset) else frozenset({expect})
            if job.state not in allowed:
                raise InvalidTransition(
                    f"job {job.id} is {job.state}, not {'/'.join(sorted(allowed))}"
                )
        if change.expect_version is not None and change.expect_version != job.version:
            raise Conflict(
                f"job {job.id} is at version {job.version}, not {change.expect_version}",
                data={"version": job.version},
            )
        if change.to is job.state and not change.fields:
            return job  # nothing to do (idempotent observation)
        if change.to is not job.state:
            machine.check(job.state, change.to)
        unknown = set(change.fields) - MUTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        fields = dict(change.fields)
        if change.reason is not None or change.to is not job.state:
            fields["reason"] = change.reason
        if change.to in machine.TERMINAL and "finished_at" not in fields and job.finished_at is None:
            fields["finished_at"] = now
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = (
            f"UPDATE jobs SET state = ?, version = version + 1{', ' + sets if sets else ''}"
            " WHERE id = ? AND state = ? AND version = ?"
        )
        stored = {k: (json.dumps(v) if k == "result" and v is not None else v) for k, v in fields.items()}
        cur = await db.execute(sql, (change.to.value, *stored.values(), job.id, job.state.value, job.version))
        if cur.rowcount != 1:
            raise Conflict(f"job {job.id} changed meanwhile")
        if change.to is State.READY or change.to in machine.TERMINAL:
            self._work_pending = True
        new = dataclasses.replace(job, **fields, state=change.to, version=job.version + 1)
        if "kill_pending" in fields:
            new = dataclasses.replace(new, kill_pending=bool(fields["kill_pending"]))
        data = {k: v for k, v in fields.items() if k != "reason"}
        await db.execute(
            "INSERT INTO events (job_id, at, from_state, to_state, reason, attempt, native_id,"
            " version, data) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                job.id, now, job.state.value, change.to.value, change.reason, new.attempt,
                new.native_id, new.version, json.dumps(data) if data else None,
            ),
        )  # fmt: skip
        return new

    async def _propagate(self, db: aiosqlite.Connection, finished: list[Job], now: float) -> None:
        """Release children whose parents all completed; skip children of failures."""
        todo = list(finished)
        while todo:
            ids = [j.id for j in todo]
            outcome = {j.id: j.state for j in todo}
            todo = []
            children = await _children_of(db, ids)
            if not children:
                return
            kids = await _jobs_by_id(db, sorted({c for _, c in children}))
            for parent, child_id in children:
                child = kids.get(child_id)
                if child is None:
                    continue
                if outcome[parent] in machine.UNSUCCESSFUL:
                    if child.state in (State.PENDING, State.READY, State.HELD) and not child.native_id:
                        new = await self._transition(
                            db, child,
                            Change(job_id=child_id, to=State.SKIPPED,
                                   reason=f"parent {parent} ended {outcome[parent]}"),
                            now,
                        )  # fmt: skip
                        kids[child_id] = new
                        todo.append(new)
                elif child.state is State.PENDING:
                    parents = await _parents_of(db, child_id)
                    states = await _states_of(db, parents)
                    if machine.initial_state(states.values()) is State.READY:
                        kids[child_id] = await self._transition(
                            db, child,
                            Change(job_id=child_id, to=State.READY, reason="parents completed"),
                            now,
                        )  # fmt: skip

    async def user_action(
        self, action: str, job_ids: Sequence[int], *, if_version: int | None = None
    ) -> list[Job]:
        """cancel / hold / release / retry, each checked against the state machine.

        All or nothing: if any job cannot take the action, nothing changes and the first
        error is raised (its ``data`` lists every refused job)."""
        now = self.clock()

        async def op(db: aiosqlite.Connection) -> list[Job]:
            current = await _jobs_by_id(db, list(job_ids))
            changes: list[Change] = []
            early: dict[int, SchedulerdError] = {}
            for jid in job_ids:
                job = current.get(jid)
                if job is None:
                    early[jid] = JobNotFound(f"no job with id {jid}")
                    continue
                try:
                    target = machine.action_target(
                        action, job.state, has_native_id=job.native_id is not None
                    )
                except SchedulerdError as exc:
                    early[jid] = exc
                    continue
                fields: dict[str, Any] = {}
                if action == "cancel" and job.native_id and job.state in machine.ACTIVE:
                    fields["kill_pending"] = 1
                if action in ("release", "retry"):
                    parents = await _states_of(db, await _parents_of(db, jid))
                    initial = machine.initial_state(parents.values())
                    if action == "release" and target is State.READY:
                        target = initial
                    if action == "retry":
                        if initial is State.SKIPPED:
                            early[jid] = InvalidTransition(
                                f"job {jid} depends on a job that did not complete; retry that first"
                            )
                            continue
                        target = initial
                        fields = _fresh_attempt(job.attempt + 1, None)
                        fields["max_attempts"] = max(job.max_attempts, job.attempt + 1)
                changes.append(
                    Change(job_id=jid, to=target, expect_version=if_version,
                           reason=f"{action} by user", fields=fields)
                )  # fmt: skip
            if early:
                raise _all_or_nothing(early)
            applied = await self._apply_user(db, changes, now)
            failed = {c.job_id: r for c, r in zip(changes, applied, strict=True)
                      if isinstance(r, SchedulerdError)}  # fmt: skip
            if failed:
                raise _all_or_nothing(failed)
            return [r for r in applied if isinstance(r, Job)]

        return await self.write(op)

    async def _apply_user(
        self, db: aiosqlite.Connection, changes: list[Change], now: float
    ) -> list[Job | SchedulerdError]:
        results: list[Job | SchedulerdError] = []
        finished: list[Job] = []
        rearmed: list[int] = []
        for change in changes:
            job = (await _jobs_by_id(db, [change.job_id]))[change.job_id]
            try:
                new = await self._transition(db, job, change, now)
            except SchedulerdError as exc:
                results.append(exc)
                continue
            results.append(new)
            if new.state in machine.UNSUCCESSFUL:
                finished.append(new)
            if job.state in machine.UNSUCCESSFUL and new.state in (State.READY, State.PENDING):
                rearmed.append(new.id)
        if finished:
            await self._propagate(db, finished, now)
        # a retried job gives its skipped descendants another chance
        while rearmed:
            children = await _children_of(db, rearmed)
            rearmed = []
            kids = await _jobs_by_id(db, sorted({c for _, c in children}))
            for child in kids.values():
                if child.state is State.SKIPPED:
                    parents = await _states_of(db, await _parents_of(db, child.id))
                    target = machine.initial_state(parents.values())
                    if target is not State.SKIPPED:
                        await self._transition(
                            db, child,
                            Change(job_id=child.id, to=target, reason="a parent was retried"),
                            now,
                        )  # fmt: skip
                        rearmed.append(child.id)
        return results

    async def claim_for_submit(
        self, cluster: str, *, slots: int, global_slots: int | None = None, limit: int = 100,
        count_cpus: bool = False,
    ) -> list[Job]:
        """Move up to the free slots' worth of ready jobs to ``submitting`` (intent first).

        Counting and claiming happen in one transaction, so no two claimers can exceed
        the limit together (invariant 5).

        With ``count_cpus`` (the ``local`` scheduler) a job takes :func:`slots_taken` of the
        ``slots`` (``global_slots`` still counts jobs). Jobs are claimed in id order up to
        the first that does not fit, so a wide job is never overtaken for ever by narrow
        ones. A job wider than ``slots`` can never fit: it is claimed all the same, for
        the caller to refuse, instead of blocking the queue.
        """
        now = self.clock()

        async def op(db: aiosqlite.Connection) -> list[Job]:
            if count_cpus:
                row = await _fetchone(
                    db,
                    f"SELECT COALESCE(SUM({_SLOTS_TAKEN_SQL}), 0) FROM jobs"
                    " WHERE cluster = ? AND state IN ('submitting','queued','running')",
                    (cluster,),
                )
                active = int(row[0]) if row else 0
            else:
                active = await _count(db, "cluster = ? AND state IN ('submitting','queued','running')", (cluster,))
            free = slots - active
            jobs_free = free if not count_cpus else limit
            if global_slots is not None:
                everywhere = await _count(db, "state IN ('submitting','queued','running')", ())
                jobs_free = min(jobs_free, global_slots - everywhere)
            jobs_free = min(jobs_free, limit)
            if free <= 0 or jobs_free <= 0:
                return []
            rows = await _fetchall(
                db,
                f"{_SELECT_JOB} WHERE cluster = ? AND state = 'ready'"
                " AND (not_before IS NULL OR not_before <= ?) ORDER BY id LIMIT ?",
                (cluster, now, jobs_free),
            )
            claimed = []
            for row in rows:
                job = Job.from_row(row)
                if count_cpus and (need := slots_taken(job.spec)) <= slots:
                    if need > free:
                        break
                    free -= need
                claimed.append(
                    await self._transition(
                        db, job,
                        Change(job_id=job.id, to=State.SUBMITTING,
                               reason=f"submitting as {job.submit_name}"),
                        now,
                    )
                )  # fmt: skip
            return claimed

        return await self.write(op)

    async def clear_kill_pending(self, job_ids: Sequence[int]) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE jobs SET kill_pending = 0 WHERE id = ?", [(j,) for j in job_ids]
            )

        await self.write(op)

    async def set_setting(self, key: str, value: Any) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

        await self.write(op)

    # --- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job:
        row = await _fetchone(self._reader, f"{_SELECT_JOB} WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Job.from_row(row)

    async def get_jobs(self, job_ids: Sequence[int]) -> dict[int, Job]:
        return await _jobs_by_id(self._reader, list(job_ids))

    async def list_jobs(
        self, filt: JobFilter, *, before_id: int | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first; keyset pagination: pass the last id seen as ``before_id``."""
        where: list[str] = []
        args: list[Any] = []
        if filt.states:
            where.append(f"state IN ({', '.join('?' * len(filt.states))})")
            args += [s.value for s in filt.states]
        for column in ("campaign", "cluster", "name"):
            value = getattr(filt, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = _SELECT_JOB
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = await _fetchall(self._reader, sql, args)
        return [Job.from_row(r) for r in rows]

    async def cluster_has_jobs(self, cluster: str) -> bool:
        """Whether any job (in any state) belongs to ``cluster``."""
        row = await _fetchone(self._reader, "SELECT 1 FROM jobs WHERE cluster = ? LIMIT 1", (cluster,))
        return row is not None

    async def jobs_in_states(self, cluster: str, states: Iterable[State]) -> list[Job]:
        wanted = [s.value for s in states]
        rows = await _fetchall(
            self._reader,
            f"{_SELECT_JOB} WHERE cluster = ? AND state IN ({', '.join('?' * len(wanted))})"
            " ORDER BY id",
            (cluster, *wanted),
        )
        return [Job.from_row(r) for r in rows]

    async def kill_pending(self, cluster: str) -> list[Job]:
        rows = await _fetchall(
            self._reader,
            f"{_SELECT_JOB} WHERE cluster = ? AND kill_pending = 1 ORDER BY id", (cluster,)
        )
        return [Job.from_row(r) for r in rows]

    async def next_not_before(self, cluster: str) -> float | None:
        row = await _fetchone(
            self._reader,
            "SELECT MIN(not_before) FROM jobs"
            " WHERE cluster = ? AND state = 'ready' AND not_before IS NOT NULL",
            (cluster,),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def parents(self, job_id: int) -> list[int]:
        return await _parents_of(self._reader, job_id)

    async def events_since(
        self, cursor: int = 0, *, limit: int = 1000, job_ids: Sequence[int] | None = None
    ) -> list[Event]:
        if job_ids and len(job_ids) > 500:
            # more ids than SQLite takes as variables in one statement: one JSON array
            sql = (
                f"{_SELECT_EVENT} WHERE id > ? AND job_id IN (SELECT value FROM json_each(?))"
                " ORDER BY id LIMIT ?"
            )
            args: tuple[Any, ...] = (cursor, _encode(list(job_ids)).decode(), limit)
        elif job_ids:
            sql = (
                f"{_SELECT_EVENT} WHERE id > ? AND job_id IN ({', '.join('?' * len(job_ids))})"
                " ORDER BY id LIMIT ?"
            )
            args = (cursor, *job_ids, limit)
        else:
            sql = f"{_SELECT_EVENT} WHERE id > ? ORDER BY id LIMIT ?"
            args = (cursor, limit)
        rows = await _fetchall(self._reader, sql, args)
        return [Event.from_row(r) for r in rows]

    async def job_states(self, job_ids: Sequence[int]) -> tuple[int, list[JobState]]:
        """The newest event cursor, then the state of each of ``job_ids`` that exists (in
        id order), read by one statement however many ids there are: they travel as one
        JSON array. The cursor is read first, so every change made after the states were
        read has an event with a greater cursor (a subscription from it misses nothing)."""
        cursor = await self.last_event_id()
        rows = await _fetchall(
            self._reader,
            "SELECT id, state, attempt, max_attempts, exit_code, cluster FROM jobs"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (_encode(list(job_ids)).decode(),),
        )
        return cursor, [
            JobState(id=int(r[0]), state=State(r[1]), attempt=int(r[2]), max_attempts=int(r[3]),
                     exit_code=r[4], cluster=str(r[5]))
            for r in rows
        ]  # fmt: skip

    async def last_event_id(self) -> int:
        row = await _fetchone(self._reader, "SELECT COALESCE(MAX(id), 0) FROM events")
        return int(row[0]) if row else 0

    async def count_by_state(self) -> dict[str, int]:
        rows = await _fetchall(self._reader, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {str(s): int(n) for s, n in rows}

    async def submission(self, token: str) -> Submission | None:
        """The job.submit call stored under ``token`` (see :class:`SubmitKey`), if any."""
        return await _submission(self._reader, token)

    async def settings(self) -> dict[str, Any]:
        rows = await _fetchall(self._reader, "SELECT key, value FROM settings")
        return {str(k): json.loads(v) for k, v in rows}


_encode = msgspec.json.Encoder().encode


def same_submission(before: Submission, digest: str) -> list[int]:
    """The ids of a stored call sent again; Conflict if the token came with other params."""
    if before.digest != digest:
        first = min(before.ids)
        what = f"job {first}" if len(before.ids) == 1 else f"{len(before.ids)} jobs from id {first}"
        raise Conflict(
            f"token {before.token!r} was already used for a different submission (it created"
            f" {what}); send a new token with a new call"
        )
    return before.ids


async def _submission(db: aiosqlite.Connection, token: str) -> Submission | None:
    row = await _fetchone(
        db, "SELECT token, digest, ids, created_at FROM submissions WHERE token = ?", (token,)
    )
    if row is None:
        return None
    ids = [i for first, n in json.loads(row[2]) for i in range(first, first + n)]
    return Submission(token=row[0], digest=row[1], ids=ids, created_at=row[3])


def _runs(ids: Sequence[int]) -> list[list[int]]:
    """``[5, 6, 7, 2, 3]`` -> ``[[5, 3], [2, 2]]``: a 100,000-job call in order is one run."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def _write_error(exc: sqlite3.Error) -> SchedulerdError:
    """A failed write as the caller hears it (never a bare sqlite3 error, whatever path
    the write took): what happened, and that nothing of it was stored."""
    message = f"the database could not be written ({exc}); nothing of this request was stored"
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        message += ": free space on the file system of the state directory"
    return StorageError(message)


async def _fetchall(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Run a query and read all of its rows in ONE call on the connection's thread.

    With an aiosqlite cursor read in several awaits, a task cancelled in between (a
    client that hung up mid-request, an unsubscribe, a timeout) left the statement open
    until the garbage collector found the cursor, and with it a read transaction: the
    connection went on seeing the database as it was, and a job acknowledged on the
    socket was "not found" by the next request (seen once in CI)."""
    return list(await db.execute_fetchall(sql, args))


async def _fetchone(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    """The first row of a query that returns at most one (see :func:`_fetchall`)."""
    rows = await _fetchall(db, sql, args)
    return rows[0] if rows else None


def _creation_rows(
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
                state = machine.initial_state(parents)
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
        if name != "spec" and len(set(values)) == 1:  # specs are dicts: never compared
            constant[f"c_{name}"] = values[0]
        else:
            varying.append(name)
    params: dict[str, Any] = dict(constant)
    params["rows"] = _encode(list(zip(*(columns[v] for v in varying), strict=True))).decode()
    return _insert_jobs_sql(tuple(varying)), params, dep_rows


_NEW_JOB_COLUMNS = ("name", "campaign", "step", "idx", "max_attempts", "cluster", "queue",
                    "workdir", "spec", "fingerprint")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _insert_jobs_sql(varying: tuple[str, ...]) -> str:
    """json_each walks the array in order: the job at position ``key`` gets id
    ``:first + key``. An object (the spec) comes out of json_extract as its JSON text."""

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


# The creation event carries the whole row, so the log alone can rebuild every job.
_INSERT_CREATION_EVENTS = (
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


def _all_or_nothing(errors: dict[int, SchedulerdError]) -> SchedulerdError:
    first_id, first = next(iter(errors.items()))
    refused = []
    for jid, e in errors.items():
        entry: dict[str, Any] = {"id": jid, "code": e.code, "message": e.message}
        if e.data is not None:
            entry["data"] = e.data
        refused.append(entry)
    extra = f" (and {len(errors) - 1} more; nothing was changed)" if len(errors) > 1 else ""
    message = first.message
    # "no job with id N" names the job already
    if not message.startswith(f"job {first_id} ") and not isinstance(first, JobNotFound):
        message = f"job {first_id}: {message}"
    return type(first)(f"{message}{extra}", data={"refused": refused[:100]})


def _fresh_attempt(attempt: int, not_before: float | None) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "native_id": None,
        "exit_code": None,
        "not_before": not_before,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
    }


async def _count(db: aiosqlite.Connection, where: str, args: tuple[Any, ...]) -> int:
    row = await _fetchone(db, f"SELECT COUNT(*) FROM jobs WHERE {where}", args)
    return int(row[0]) if row else 0


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), SQLITE_MAX_VARS):
        yield values[start : start + SQLITE_MAX_VARS]


async def _jobs_by_id(db: aiosqlite.Connection, ids: list[int]) -> dict[int, Job]:
    found: dict[int, Job] = {}
    for chunk in _chunks(sorted(set(ids))):
        for row in await _fetchall(
            db,
            f"{_SELECT_JOB} WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ):
            job = Job.from_row(row)
            found[job.id] = job
    return found


async def _states_of(db: aiosqlite.Connection, ids: Sequence[int]) -> dict[int, State]:
    found: dict[int, State] = {}
    for chunk in _chunks(sorted(set(ids))):
        for jid, state in await _fetchall(
            db,
            f"SELECT id, state FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ):
            found[int(jid)] = State(state)
    return found


async def _children_of(db: aiosqlite.Connection, ids: list[int]) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for chunk in _chunks(sorted(set(ids))):
        rows = await _fetchall(
            db, f"SELECT parent, child FROM deps WHERE parent IN ({', '.join('?' * len(chunk))})", chunk
        )
        pairs += [(int(p), int(c)) for p, c in rows]
    return pairs


async def _parents_of(db: aiosqlite.Connection, job_id: int) -> list[int]:
    rows = await _fetchall(db, "SELECT parent FROM deps WHERE child = ?", (job_id,))
    return [int(r[0]) for r in rows]


STARTUP_CHECK_SECONDS = 2.0
"""How long :func:`open_store` checks the database's structure (``PRAGMA quick_check``)
before giving up on finishing: a 1,000,000-job database (700 MB) takes 0.6 s from the
page cache but 10 s from a cold disk, and a restart must reach READY within 5 s."""


async def open_store(path: str | Path, *, check_seconds: float = STARTUP_CHECK_SECONDS) -> Store:
    """Open (creating and migrating as needed) the database at ``path``.

    A damaged database is refused before anything is written to it (see
    :func:`_check_database`); every failure to open is a SchedulerdError whose message is
    one line: the path, what is wrong, what to do."""
    path = Path(path)
    try:
        if _has_content(path):
            await _check_database(path, check_seconds)
        return await _open_connections(path)
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc


def _has_content(path: Path) -> bool:
    """Whether a database is already there (creating its directory if need be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise SchedulerdError(
                f"database {path} is a directory, not an SQLite file: move it away"
                " (or choose another --state-dir)"
            )
        return path.exists() and path.stat().st_size > 0
    except OSError as exc:
        raise SchedulerdError(
            f"cannot reach the database {path}: {exc.strerror or exc}; its directory must"
            " be one this user can read and write (or choose another --state-dir)"
        ) from exc


async def _check_database(path: Path, seconds: float) -> None:
    """``PRAGMA quick_check`` (every page's structure, without comparing indexes to their
    tables), interrupted after ``seconds``: an unfinished check is logged and the daemon
    starts, a failed one refuses the database. Without it a damaged file was accepted and
    the daemon failed later, with jobs already acknowledged into it."""
    started = time.monotonic()
    failure: sqlite3.Error | None = None
    rows: Iterable[Any] = ()
    checker = await aiosqlite.connect(path, isolation_level=None)
    try:
        # SQLite calls the progress handler every 1000 steps of the check, also inside its
        # one long virtual-machine instruction (1,000,000 jobs: 56,000 calls, 1 ms in all);
        # sqlite3_interrupt stops one whose SQLite does not
        deadline = started + seconds
        await checker.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        async with anyio.create_task_group() as tg:

            async def interrupt_later() -> None:
                await anyio.sleep(seconds)
                while True:  # until it lands: one sent before the statement began is lost
                    await checker.interrupt()  # sqlite3_interrupt: safe from any thread
                    await anyio.sleep(0.01)

            tg.start_soon(interrupt_later)
            try:
                rows = await checker.execute_fetchall("PRAGMA quick_check")
            except sqlite3.Error as exc:  # kept out of the task group's exception group
                failure = exc
            tg.cancel_scope.cancel()
    finally:
        await checker.close()
    if getattr(failure, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
        log.warning(
            "store_check_unfinished", database=str(path), seconds=seconds,
            detail=f"started unchecked; `sqlite3 {path} 'PRAGMA quick_check'` checks it all",
        )  # fmt: skip
        return
    if failure is not None:
        raise failure
    problems = [str(r[0]) for r in rows]
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("***", "").split())
        more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
        raise sqlite3.DatabaseError(f"{first[:200]}{more}")
    log.debug("store_checked", seconds=round(time.monotonic() - started, 3))


def _open_error(path: Path, exc: sqlite3.Error) -> SchedulerdError:
    """One line for a database that cannot be opened: what is wrong and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    damaged = primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    if damaged or type(exc) is sqlite3.DatabaseError:
        return SchedulerdError(
            f"database {path} is damaged ({exc}); schedulerd will not use it: keep a copy, then"
            f" restore it from a backup or salvage it (sqlite3 {path} .recover), or move it"
            " away to start with an empty database"
        )
    if primary == sqlite3.SQLITE_FULL:
        return SchedulerdError(f"database {path}: {exc}: free some space on its file system")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return SchedulerdError(f"database {path} is locked by another program ({exc}): stop it")
    return SchedulerdError(
        f"cannot open database {path} ({exc}): it must be a file this user can read and"
        " write, in a directory this user can write (or choose another --state-dir)"
    )


async def _open_connections(path: Path) -> Store:
    writer = await aiosqlite.connect(path, isolation_level=None)
    opened = [writer]
    try:
        await writer.execute("PRAGMA journal_mode=WAL")
        await writer.execute("PRAGMA synchronous=FULL")
        await writer.execute("PRAGMA foreign_keys=OFF")
        await writer.execute("PRAGMA busy_timeout=5000")
        await writer.execute("PRAGMA wal_autocheckpoint=0")  # Store._checkpoint_loop does it
        try:  # jobs are created through json_each (see _creation_rows)
            await writer.execute_fetchall(
                "SELECT json_object('a', json_extract(value, '$[0]')) FROM json_each('[[1]]')"
            )
        except sqlite3.OperationalError as exc:
            raise SchedulerdError(
                f"this Python's SQLite {sqlite3.sqlite_version} lacks the JSON functions"
                " (json_each); schedulerd needs SQLite 3.38 or later, or one built with JSON1"
            ) from exc
        await _migrate(writer)
        if pages := os.environ.get("SCHEDULERD_TEST_MAX_PAGES"):
            # for tests only: a database that is full at this many pages (SQLITE_FULL),
            # as a full disk would make it
            await writer.execute(f"PRAGMA max_page_count = {int(pages)}")
        reader = await aiosqlite.connect(path, isolation_level=None)
        opened.append(reader)
        await reader.execute("PRAGMA query_only=ON")
        await reader.execute("PRAGMA busy_timeout=5000")
        checkpointer = await aiosqlite.connect(path, isolation_level=None)
        opened.append(checkpointer)
        await checkpointer.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        for connection in reversed(opened):
            await connection.close()
        raise
    return Store(path, writer, reader, checkpointer)


async def _migrate(db: aiosqlite.Connection) -> None:
    row = await _fetchone(db, "PRAGMA user_version")
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise SchedulerdError(
            f"database schema version {version} is newer than this schedulerd's"
            f" ({SCHEMA_VERSION}): run a newer schedulerd on it, or choose another --state-dir"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[target - 1]):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {target}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        log.info("store_migrated", version=target)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
