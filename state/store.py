"""The store: the transactions that tie the state modules together.

Every state change is a compare-and-set ``UPDATE ... WHERE id=? AND state=? AND
version=?`` plus an ``events`` row in the same transaction (:meth:`Store._transition`),
with its consequences, automatic retries (:mod:`.retry`) and dependency effects
(:mod:`.dag`), in that transaction too. Where the rest lives:

* :mod:`.models` the domain types, :mod:`.transitions` the state machine and the user
  actions, :mod:`.limits` the claiming arithmetic;
* :mod:`.writer` the group-commit writer (the only writer) and the WAL checkpointer;
* :mod:`.queries` the reads, :mod:`.inserts` the bulk-insert SQL of creation,
  :mod:`.intents` the hold/release intents for a head;
* :mod:`.database` opening the file, :mod:`.migrations` the schema.

Somewhat over 500 lines for a reason: the :class:`Store` is the one seam every layer
calls (its 30 public methods, the reads among them one-line delegations to
:mod:`.queries`); splitting the class would split that seam.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
import anyio.abc

from schedulerd.errors import (
    Conflict,
    InvalidParams,
    InvalidTransition,
    JobNotFound,
    SchedulerdError,
    UnknownCluster,
    UnknownDependency,
)
from schedulerd.state import dag, intents, limits, queries, transitions
from schedulerd.state.database import STARTUP_CHECK_SECONDS, open_connections
from schedulerd.state.inserts import INSERT_CREATION_EVENTS, creation_rows, id_runs
from schedulerd.state.models import (
    MUTABLE,
    Change,
    Event,
    Job,
    JobFilter,
    JobState,
    NewJob,
    Submission,
    SubmitKey,
    WatchedJob,
)
from schedulerd.state.retry import RETRY_BASE, fresh_attempt, retry_delay
from schedulerd.state.transitions import State
from schedulerd.state.writer import Writer

T = TypeVar("T")


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
        self._writer = Writer(writer, checkpointer)
        self._reader = reader
        self._checkpointer = checkpointer
        self.retry_base = RETRY_BASE
        self.clock: Callable[[], float] = time.time

    # --- lifecycle ------------------------------------------------------------------------

    async def run_writer(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The single writer: group-commits queued operations until :meth:`close`."""
        await self._writer.run(task_status=task_status)

    @property
    def checkpoint_delay(self) -> float:
        """Seconds from a burst of commits to its WAL checkpoint."""
        return self._writer.checkpoint_delay

    @checkpoint_delay.setter
    def checkpoint_delay(self, seconds: float) -> None:
        self._writer.checkpoint_delay = seconds

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` inside the writer's transaction; return once it is committed."""
        return await self._writer.write(fn)

    async def wait_work(self) -> None:
        """Return after a commit that made a job ready or freed a slot."""
        await self._writer.wait_work()

    @property
    def changed(self) -> anyio.Event:
        """Set by the next commit (take it before reading, then wait on it)."""
        return self._writer.changed

    async def close(self) -> None:
        """Stop accepting writes; the writer drains what is queued and returns."""
        self._writer.close()

    async def aclose_connections(self) -> None:
        self._writer.close_streams()
        await self._reader.close()
        await self._checkpointer.close()
        await self._writer.db.close()  # the last connection out checkpoints and removes the WAL

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
                if key is not None and (before := await queries.submission(db, key.token)):
                    # a call racing with its own retry (the first check is a read)
                    return sorted(same_submission(before, key.digest))
                parent_states = await queries.states_of(db, parent_ids)
                missing = [p for p in parent_ids if p not in parent_states]
                if missing:
                    raise UnknownDependency(
                        (f"after: no job with id {missing[0]}" if len(missing) == 1 else
                         f"after: no jobs with ids {', '.join(map(str, missing[:10]))}"
                         + (" ..." if len(missing) > 10 else "")),
                        data={"missing": missing[:100]},
                    )  # fmt: skip
                row = await queries.fetchone(db, "SELECT COALESCE(MAX(id), 0) FROM jobs")
                first_id = int(row[0]) + 1 if row else 1
                ids = list(range(first_id, first_id + count))
                states: list[State] = []
                async for chunk in chunks:
                    if isinstance(chunk, BaseException):
                        raise chunk
                    if len(states) + len(chunk) > count:
                        raise SchedulerdError("more jobs than announced")
                    sql, params, dep_rows = creation_rows(chunk, ids, states, parent_states)
                    # Both inserts run inside SQLite, off the GIL: the event loop validates
                    # the next chunk meanwhile (binding 13 values a row from Python held the
                    # GIL, and the two threads took turns instead of overlapping).
                    first = ids[len(states) - len(chunk)]
                    await db.execute(sql, {**params, "first": first, "now": now})
                    await db.execute(INSERT_CREATION_EVENTS, (first, first + len(chunk) - 1))
                    if dep_rows:
                        await db.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", dep_rows)
                if len(states) != count:
                    raise SchedulerdError(f"only {len(states)} of {count} jobs arrived")
                if key is not None:
                    answered = ids if key.order is None else [ids[i] for i in key.order]
                    await db.execute(
                        "INSERT INTO submissions (token, digest, ids, created_at)"
                        " VALUES (?, ?, ?, ?)",
                        (key.token, key.digest, json.dumps(id_runs(answered)), now),
                    )
                if State.READY in states:
                    self._writer.work_pending = True
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
        current = await queries.jobs_by_id(db, [c.job_id for c in changes])
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
            if new.state in transitions.TERMINAL:
                follow = transitions.after_finish(
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
                            fields=fresh_attempt(new.attempt + 1, now + delay),
                        ),
                        now,
                    )
                    current[job.id] = new
                else:
                    finished.append(new)
            results.append(new)
        await self._propagate(db, finished, now)
        return results

    async def _propagate(self, db: aiosqlite.Connection, changed: list[Job], now: float) -> None:
        """Dependency effects of ``changed`` (see :mod:`.dag`), in this transaction."""
        if changed:

            async def apply(job: Job, change: Change) -> Job:
                return await self._transition(db, job, change, now)

            await dag.propagate(db, changed, apply)

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
            transitions.check(job.state, change.to)
        unknown = set(change.fields) - MUTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        fields = dict(change.fields)
        if change.reason is not None or change.to is not job.state:
            fields["reason"] = change.reason
        if (
            change.to in transitions.TERMINAL
            and "finished_at" not in fields
            and job.finished_at is None
        ):
            fields["finished_at"] = now
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = (
            f"UPDATE jobs SET state = ?, version = version + 1{', ' + sets if sets else ''}"
            " WHERE id = ? AND state = ? AND version = ?"
        )
        stored = {
            k: (json.dumps(v) if k == "result" and v is not None else v) for k, v in fields.items()
        }
        cur = await db.execute(
            sql, (change.to.value, *stored.values(), job.id, job.state.value, job.version)
        )
        if cur.rowcount != 1:
            raise Conflict(f"job {job.id} changed meanwhile")
        if change.to is State.READY or change.to in transitions.TERMINAL:
            self._writer.work_pending = True
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

    async def user_action(
        self, action: str, job_ids: Sequence[int], *, if_version: int | None = None
    ) -> list[Job]:
        """cancel / hold / release / retry (:data:`.transitions.USER_ACTIONS`), each
        checked against the state machine: :meth:`act`'s jobs."""
        jobs, _ = await self.act(action, job_ids, if_version=if_version)
        return jobs

    async def act(
        self,
        action: str,
        job_ids: Sequence[int],
        *,
        if_version: int | None = None,
        head_clusters: Collection[str] | None = None,
    ) -> tuple[list[Job], bool]:
        """A user action on ``job_ids``: the jobs after it, and True when it was hold or
        release of jobs on a head, recorded as intents for the poller (:mod:`.intents`;
        ``head_clusters``, when given, are those with a poller).

        All or nothing: if any job cannot take the action, nothing changes and the first
        error is raised (its ``data`` lists every refused job)."""
        now = self.clock()
        spec = transitions.user_action(action)

        async def op(db: aiosqlite.Connection) -> tuple[list[Job], bool]:
            current = await queries.jobs_by_id(db, job_ids)
            if any(
                transitions.is_head_intent(action, j.state, native_id=j.native_id)
                for j in current.values()
            ):
                on_head = await self._head_intents(
                    db, action, job_ids, current, if_version, head_clusters, now
                )
                return on_head, True
            parents: dict[int, dict[int, State]] = {}
            if spec.target is State.READY:  # the target depends on the parents' states
                parents = await queries.parent_states(db, current)
            changes: list[Change] = []
            early: dict[int, SchedulerdError] = {}
            for jid in job_ids:
                job = current.get(jid)
                if job is None:
                    early[jid] = JobNotFound(f"no job with id {jid}")
                    continue
                try:
                    plan = transitions.plan_action(
                        action, job.state, job_id=jid, attempt=job.attempt,
                        max_attempts=job.max_attempts, native_id=job.native_id,
                        parent_states=parents.get(jid, {}).values(),
                    )  # fmt: skip
                except SchedulerdError as exc:
                    early[jid] = exc
                    continue
                changes.append(
                    Change(job_id=jid, to=plan.target, expect_version=if_version,
                           reason=f"{action} by user", fields=plan.fields)
                )  # fmt: skip
            if early:
                raise transitions.refused_all(early)
            applied = await self._apply_user(db, current, changes, now)
            failed = {c.job_id: r for c, r in zip(changes, applied, strict=True)
                      if isinstance(r, SchedulerdError)}  # fmt: skip
            if failed:
                raise transitions.refused_all(failed)
            if spec.kill_on_head:  # a cancel wins over a pending hold/release
                await intents.drop(db, [c.job_id for c in changes])
            return [r for r in applied if isinstance(r, Job)], False

        return await self.write(op)

    async def _head_intents(
        self,
        db: aiosqlite.Connection,
        action: str,
        job_ids: Sequence[int],
        current: dict[int, Job],
        if_version: int | None,
        head_clusters: Collection[str] | None,
        now: float,
    ) -> list[Job]:
        """Hold/release of jobs on a head: each one's intent recorded (or withdrawn) with
        an event, its state unchanged. Mixing them with jobs not yet submitted is refused."""
        pending = await intents.pending(db, job_ids)
        errors: dict[int, SchedulerdError] = {}
        planned: list[tuple[Job, str | None]] = []
        for jid in job_ids:
            job = current.get(jid)
            if job is None:
                errors[jid] = JobNotFound(f"no job with id {jid}")
                continue
            if not transitions.is_head_intent(action, job.state, native_id=job.native_id):
                continue
            try:
                planned.append(
                    (job, transitions.plan_head_intent(action, job.state, pending.get(jid)))
                )
            except SchedulerdError as exc:
                errors[jid] = exc
                continue
            if if_version is not None and job.version != if_version:
                errors[jid] = Conflict(
                    f"job {jid} is at version {job.version}, not {if_version}",
                    data={"version": job.version},
                )
            elif head_clusters is not None and job.cluster not in head_clusters:
                errors[jid] = UnknownCluster(f"cluster {job.cluster!r} is not configured any more")
        if errors:
            raise transitions.refused_all(errors)
        if len(planned) != len(job_ids):
            raise InvalidParams(f"{action} jobs on a head separately from jobs not yet submitted")
        out: list[Job] = []
        for job, intent in planned:
            if intent == pending.get(job.id):
                out.append(job)  # asked for already: nothing new
                continue
            reason = (
                f"{action} by user, requested on the head"
                if intent is not None
                else f"{action} by user, withdrawing the {pending[job.id]} not yet sent"
            )
            out.append(await intents.record(db, job, intent, reason=reason, now=now))
        return out

    async def head_intents(self, cluster: str) -> list[tuple[Job, str]]:
        """The pending hold/release intents of ``cluster``, with their jobs as they are."""
        todo = await intents.of_cluster(self._reader, cluster)
        jobs = await queries.jobs_by_id(self._reader, [jid for jid, _ in todo])
        return [(jobs[jid], action) for jid, action in todo if jid in jobs]

    async def clear_head_intents(self, done: Sequence[tuple[int, str]]) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await intents.clear(db, done)

        await self.write(op)

    async def _apply_user(
        self, db: aiosqlite.Connection, current: dict[int, Job], changes: list[Change], now: float
    ) -> list[Job | SchedulerdError]:
        results: list[Job | SchedulerdError] = []
        changed: list[Job] = []
        for change in changes:
            job = current[change.job_id]
            try:
                new = await self._transition(db, job, change, now)
            except SchedulerdError as exc:
                results.append(exc)
                continue
            current[job.id] = new
            results.append(new)
            if new.state in transitions.UNSUCCESSFUL:
                changed.append(new)  # its children are skipped
            elif job.state in transitions.UNSUCCESSFUL and new.state in dag.REARMED:
                changed.append(new)  # a retried job gives its skipped descendants another chance
        await self._propagate(db, changed, now)
        return results

    async def claim_for_submit(
        self,
        cluster: str,
        *,
        slots: int,
        global_slots: int | None = None,
        limit: int = 100,
        count_cpus: bool = False,
    ) -> list[Job]:
        """Move up to the free slots' worth of ready jobs to ``submitting`` (intent first).

        Counting and claiming happen in one transaction, so no two claimers can exceed
        the limit together (invariant 5); what fits is :mod:`.limits`'s decision.

        With ``count_cpus`` (the ``local`` scheduler) a job takes
        :func:`.limits.slots_taken` of the ``slots`` (``global_slots`` still counts jobs).
        """
        now = self.clock()
        on_cluster = "cluster = ? AND state IN ('submitting','queued','running')"

        async def op(db: aiosqlite.Connection) -> list[Job]:
            if count_cpus:
                row = await queries.fetchone(
                    db,
                    f"SELECT COALESCE(SUM({limits.SLOTS_TAKEN_SQL}), 0) FROM jobs WHERE {on_cluster}",
                    (cluster,),
                )
                active = int(row[0]) if row else 0
            else:
                active = await queries.count(db, on_cluster, (cluster,))
            everywhere = 0
            if global_slots is not None:
                everywhere = await queries.count(
                    db, "state IN ('submitting','queued','running')", ()
                )
            free, budget = limits.claim_budget(
                slots=slots, active=active, limit=limit, count_cpus=count_cpus,
                global_slots=global_slots, active_everywhere=everywhere,
            )  # fmt: skip
            if budget <= 0:
                return []
            rows = await queries.fetchall(
                db,
                f"{queries.SELECT_JOB} WHERE cluster = ? AND state = 'ready'"
                " AND (not_before IS NULL OR not_before <= ?) ORDER BY id LIMIT ?",
                (cluster, now, budget),
            )
            ready = [Job.from_row(row) for row in rows]
            fits = limits.fitting(
                ready, slots=slots, free=free, count_cpus=count_cpus, spec_of=lambda j: j.spec
            )
            return [
                await self._transition(
                    db, job,
                    Change(job_id=job.id, to=State.SUBMITTING,
                           reason=f"submitting as {job.submit_name}"),
                    now,
                )
                for job in fits
            ]  # fmt: skip

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

    # --- reads (the reader connection; see :mod:`.queries`) ---------------------------------

    async def get_job(self, job_id: int) -> Job:
        job = await queries.get_job(self._reader, job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    async def get_jobs(self, job_ids: Sequence[int]) -> dict[int, Job]:
        return await queries.jobs_by_id(self._reader, job_ids)

    async def list_jobs(
        self, filt: JobFilter, *, before_id: int | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first; keyset pagination: pass the last id seen as ``before_id``."""
        return await queries.list_jobs(self._reader, filt, before_id=before_id, limit=limit)

    async def cluster_has_jobs(self, cluster: str) -> bool:
        """Whether any job (in any state) belongs to ``cluster``."""
        return await queries.cluster_has_jobs(self._reader, cluster)

    async def jobs_in_states(self, cluster: str, states: Iterable[State]) -> list[Job]:
        return await queries.jobs_in_states(self._reader, cluster, states)

    async def watched_jobs(self, cluster: str, states: Iterable[State]) -> list[WatchedJob]:
        """The jobs of ``cluster`` in ``states`` that have a native id, without their spec."""
        return await queries.watched_jobs(self._reader, cluster, states)

    async def kill_pending(self, cluster: str) -> list[Job]:
        return await queries.kill_pending(self._reader, cluster)

    async def next_not_before(self, cluster: str) -> float | None:
        return await queries.next_not_before(self._reader, cluster)

    async def parents(self, job_id: int) -> list[int]:
        return await queries.parents_of(self._reader, job_id)

    async def events_since(
        self, cursor: int = 0, *, limit: int = 1000, job_ids: Sequence[int] | None = None
    ) -> list[Event]:
        return await queries.events_since(self._reader, cursor, limit=limit, job_ids=job_ids)

    async def job_states(self, job_ids: Sequence[int]) -> tuple[int, list[JobState]]:
        """The newest event cursor, then the state of each of ``job_ids`` that exists (in
        id order), read by one statement however many ids there are: they travel as one
        JSON array. The cursor is read first, so every change made after the states were
        read has an event with a greater cursor (a subscription from it misses nothing)."""
        cursor = await self.last_event_id()
        return cursor, await queries.job_states(self._reader, job_ids)

    async def last_event_id(self) -> int:
        return await queries.last_event_id(self._reader)

    async def count_by_state(self) -> dict[str, int]:
        return await queries.count_by_state(self._reader)

    async def submission(self, token: str) -> Submission | None:
        """The job.submit call stored under ``token`` (see :class:`SubmitKey`), if any."""
        return await queries.submission(self._reader, token)

    async def settings(self) -> dict[str, Any]:
        return await queries.settings(self._reader)


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


async def open_store(path: str | Path, *, check_seconds: float = STARTUP_CHECK_SECONDS) -> Store:
    """Open (creating and migrating as needed) the database at ``path`` (see
    :func:`.database.open_connections`)."""
    path = Path(path)
    connections = await open_connections(path, check_seconds=check_seconds)
    return Store(path, connections.writer, connections.reader, connections.checkpointer)
