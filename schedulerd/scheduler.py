"""Per-cluster workers: reconcile after a crash, submit what is ready, poll what runs.

A worker never decides a job's fate from a transport failure: the head being
unreachable pauses the worker (the driver's backoff), and job states stay as they are.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import anyio
import structlog

from schedulerd.config import ClusterConfig, Settings
from schedulerd.drivers.api import ActiveJob, Driver
from schedulerd.drivers.base import JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.staging import output_dir, stage_in, stage_out
from schedulerd.errors import InvalidSpec, SchedulerdError, TransportError
from schedulerd.state import machine
from schedulerd.state.machine import State
from schedulerd.state.store import Change, Job, Store, slots_taken

log = structlog.get_logger(__name__)

PHASE_TO_STATE = {
    Phase.QUEUED: State.QUEUED,
    Phase.RUNNING: State.RUNNING,
    Phase.HELD: State.HELD,
    Phase.COMPLETED: State.COMPLETED,
    Phase.FAILED: State.FAILED,
    Phase.TIMEOUT: State.TIMEOUT,
    Phase.CANCELLED: State.CANCELLED,
    Phase.GONE: State.LOST,
}
#: an attempt that ended in one of these on the head has its outputs fetched
STAGE_OUT_STATES = frozenset({State.COMPLETED, State.FAILED, State.TIMEOUT})
STAGING_CONCURRENCY = 8
# pause of the submit loop after a round whose every job the head refused for a
# passing reason: the cluster's refusal_pause (30 s), doubling each further such round,
# at most 10 min
SUBMIT_PAUSE_MAX = 600.0
#: polls in a row that fail before the cluster is shown ``degraded``
DEGRADED_AFTER = 3


def job_request(job: Job) -> JobRequest:
    """What a driver needs from a stored job (the current attempt)."""
    spec = job.spec
    return JobRequest(
        job_id=job.id,
        attempt=job.attempt,
        name=job.submit_name,
        argv=tuple(spec["argv"]),
        workdir=job.workdir,
        env=dict(spec.get("env") or {}),
        queue=job.queue,
        cpus=spec.get("cpus"),
        memory_mb=spec.get("memory_mb"),
        walltime_s=spec.get("walltime_s"),
        account=spec.get("account"),
        extra_directives=tuple(spec.get("directives") or ()),
        requeue=bool(spec.get("requeue", False)),
    )


class TokenBucket:
    """``count`` submissions per ``period`` seconds."""

    def __init__(self, count: int, period: float) -> None:
        self.capacity = count
        self.rate = count / period
        self.tokens = float(count)
        self.stamp = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def seconds_until_one(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


def observation_change(job: Job, obs: Observation, now: float) -> Change | None:
    """The transition an observation asks for, or None when it brings no news."""
    target = PHASE_TO_STATE[obs.phase]
    fields: dict[str, Any] = {}
    if obs.exit_code is not None and target in machine.TERMINAL:
        fields["exit_code"] = obs.exit_code
    if target is State.RUNNING and job.started_at is None:
        fields["started_at"] = obs.started_at or now
    if target in machine.TERMINAL:
        if obs.started_at and job.started_at is None:
            fields["started_at"] = obs.started_at
        fields["finished_at"] = obs.finished_at or now
    if target is job.state:
        if target is State.HELD and obs.reason != job.reason:
            return Change(job_id=job.id, to=target, expect_version=job.version, reason=obs.reason)
        return None
    if not machine.is_legal(job.state, target):
        log.warning("observation_ignored", job_id=job.id, state=job.state, observed=obs.phase)
        return None
    reason = obs.reason
    if reason is None and target in (State.FAILED,) and obs.exit_code is not None:
        reason = f"exit code {obs.exit_code}"
    return Change(
        job_id=job.id,
        to=target,
        expect_state=job.state,
        expect_version=job.version,
        reason=reason,
        fields=fields,
    )


def drained_key(cluster: str) -> str:
    """The settings key that remembers an operator's ``clusters.drain``."""
    return f"cluster.{cluster}.drained"


class ClusterWorker:
    def __init__(
        self, config: ClusterConfig, settings: Settings, store: Store, driver: Driver
    ) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.driver = driver
        self.name = config.name
        self.drained = False  # by an operator (clusters.drain); persisted in the store
        self.removed = False  # gone from the config at a reload: watched, never fed
        self.foreign_jobs = 0
        self.last_poll: float | None = None
        self.last_error: str | None = None
        # Polls failing in a row. After DEGRADED_AFTER of them the cluster is shown
        # degraded (clusters, info, wait) with the error; the log says so once per change.
        self.poll_failures = 0
        self.degraded_reason: str | None = None
        self._poll_now = anyio.Event()
        # rounds in a row whose every job the head refused for a passing reason
        self._refused_rounds = 0
        self._retry_now = anyio.Event()
        self.submit_paused_until: float | None = None
        self.last_refusal: str | None = None
        # The head refused our credentials on a submit: no job is submitted to it until
        # an operator acts (clusters.resume, or a reload), since every job would meet the
        # same; the cluster stays degraded with the head's message meanwhile.
        self.auth_refused: str | None = None
        # Invariant 5 counts this user's jobs that we did not submit: nothing is submitted
        # before the first poll has told us how many there are.
        self._first_poll = anyio.Event()
        self._bucket = TokenBucket(*config.submit_rate) if config.submit_rate else None
        self._log = log.bind(cluster=self.name)

    def poke(self) -> None:
        """Poll soon (a user action may have work for the head)."""
        self._poll_now.set()

    def reconfigure(self, config: ClusterConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._bucket = TokenBucket(*config.submit_rate) if config.submit_rate else None
        self._clear_auth_stop()  # the reload may carry new credentials: try them

    def _clear_auth_stop(self) -> None:
        if self.auth_refused is None:
            return
        self._log.info("submits_resumed_after_auth_refusal", was=self.auth_refused)
        self.auth_refused = None
        failing = self.poll_failures >= DEGRADED_AFTER
        self._set_degraded(self.last_error if failing else None)
        self._retry_now.set()
        self._retry_now = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.reconcile()
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._submit_loop)
            tg.start_soon(self._poll_loop)

    # --- crash recovery (invariant 2) ---------------------------------------------------

    async def reconcile(self) -> None:
        """Jobs left in ``submitting`` by a crash: adopt if the head has them, else resubmit."""
        while True:
            stuck = await self.store.jobs_in_states(self.name, [State.SUBMITTING])
            if not stuck:
                return
            try:
                found = await self.driver.lookup([job_request(j) for j in stuck])
            except SchedulerdError as exc:
                self.last_error = str(exc)
                self._log.warning("head_unreachable", error=str(exc), during="reconcile")
                await anyio.sleep(min(30.0, self.config.poll_interval))
                continue
            changes = []
            for job in stuck:
                native = found.get(job.submit_name)
                if native is not None:
                    changes.append(Change(job_id=job.id, to=State.QUEUED, expect_state=State.SUBMITTING,
                                          reason=f"adopted {native} after restart",
                                          fields={"native_id": native, "queued_at": time.time()}))  # fmt: skip
                else:
                    changes.append(Change(job_id=job.id, to=State.READY, expect_state=State.SUBMITTING,
                                          reason="not on the head after restart; resubmitting"))  # fmt: skip
            await self.store.apply(changes)
            self._log.info("reconciled", adopted=sum(c.to is State.QUEUED for c in changes),
                           resubmitted=sum(c.to is State.READY for c in changes))  # fmt: skip
            return

    # --- submitting ---------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.drained or self.removed

    async def set_drained(self, drained: bool) -> None:
        """Drain or resume; remembered across restarts and reloads."""
        await self.store.set_setting(drained_key(self.name), drained)
        self.drained = drained
        if not drained:
            # resume also means "try now": it ends a pause after refused submits, and
            # the stop after refused credentials
            self._refused_rounds = 0
            self._clear_auth_stop()
            self._retry_now.set()
            self._retry_now = anyio.Event()
            self.poke()

    def _slots(self) -> int:
        return max(0, self.config.max_jobs - self.foreign_jobs)

    async def _submit_loop(self) -> None:
        await self._first_poll.wait()
        while True:
            submitted = 0
            if self.auth_refused is not None:
                await self._retry_now.wait()  # clusters.resume or a reload
                continue
            if not self.draining:
                try:
                    submitted = await self.submit_once()
                except Exception as exc:
                    # jobs claimed by this round stay `submitting`: reconciled by name
                    self.last_error = str(exc)
                    self._log.exception("submit_failed")
                    await anyio.sleep(min(30.0, self.config.poll_interval * 5))
                    await self.reconcile()
                    continue
            if self._refused_rounds:
                # The head refused every job of the last round for a reason that should
                # pass (per-user limit, busy server). Ask again after a pause instead of
                # going on with the next ready jobs at once: a head that keeps refusing
                # (a QOS limit that never lifts) sees one batch per pause, not thousands
                # of submit commands every 30 s.
                base = self.config.refusal_pause
                pause = min(max(SUBMIT_PAUSE_MAX, base), base * 2 ** (self._refused_rounds - 1))
                self._log.warning("head_refusing_submits", rounds=self._refused_rounds,
                                  pause=pause, error=self.last_refusal)  # fmt: skip
                self.submit_paused_until = time.time() + pause
                with anyio.move_on_after(pause):
                    await self._retry_now.wait()
                self.submit_paused_until = None
                continue
            if submitted:
                self._poll_now.set()
                continue
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        timeout = 5.0
        if self._bucket is not None and self._bucket.available() < 1:
            timeout = min(timeout, self._bucket.seconds_until_one())
        nxt = await self.store.next_not_before(self.name)
        if nxt is not None:
            timeout = min(timeout, max(0.05, nxt - time.time()))
        with anyio.move_on_after(timeout):
            await self.store.wait_work()

    async def submit_once(self) -> int:
        limit = self.config.submit_batch
        if self._bucket is not None:
            limit = min(limit, self._bucket.available())
            if limit <= 0:
                return 0
        slots = self._slots()
        count_cpus = self.config.scheduler == "local"  # a local job's cpus take that many slots
        claimed = await self.store.claim_for_submit(
            self.name,
            slots=slots,
            global_slots=self.settings.max_active,
            limit=limit,
            count_cpus=count_cpus,
        )
        if not claimed:
            return 0
        if self._bucket is not None:
            self._bucket.take(len(claimed))
        requests = [job_request(j) for j in claimed]
        # wider than the whole cluster (accepted by an older version, or max_jobs lowered
        # since): it could never start, and the claim hands it over to be failed here
        refused = {
            j.id: SubmitResult(job_id=j.id, error=f"it asks for {slots_taken(j.spec)} cpus and"
                               f" cluster {self.name} has {slots} slots: it can never start")
            for j in claimed
            if count_cpus and slots_taken(j.spec) > slots
        }  # fmt: skip
        try:
            todo = [(j, r) for j, r in zip(claimed, requests, strict=True) if j.id not in refused]
            refused |= await self._stage_in([j for j, _ in todo], [r for _, r in todo])
            submitted = await self.driver.submit([r for r in requests if r.job_id not in refused])
        except TransportError as exc:
            # Nothing decided; the submit may or may not have reached the head, so the
            # jobs stay `submitting` and are reconciled by name like after a crash.
            self.last_error = str(exc)
            self._log.warning("head_unreachable", error=str(exc), during="submit")
            await anyio.sleep(1.0)
            await self.reconcile()
            return 0
        by_id = {r.job_id: r for r in submitted}
        results = [refused.get(j.id) or by_id[j.id] for j in claimed]
        await self._record_submits(claimed, results)
        return len(claimed)

    async def _stage_in(self, claimed: Sequence[Job], requests: Sequence[JobRequest]) -> dict[int, SubmitResult]:
        """Upload the input files of the claimed jobs that have any. A job whose input
        is gone from this machine is refused (it fails, nothing is submitted); a
        transport failure raises TransportError after all uploads have ended."""
        todo = [(j, r) for j, r in zip(claimed, requests, strict=True) if j.spec.get("inputs")]
        refused: dict[int, SubmitResult] = {}
        if not todo:
            return refused
        errors: list[TransportError] = []
        limiter = anyio.CapacityLimiter(STAGING_CONCURRENCY)

        async def one(job: Job, request: JobRequest) -> None:
            async with limiter:
                try:
                    await stage_in(self.driver.transport, request, job.spec["inputs"])
                except InvalidSpec as exc:
                    refused[job.id] = SubmitResult(job_id=job.id, error=exc.message)
                except TransportError as exc:
                    errors.append(exc)
                except (OSError, SchedulerdError) as exc:
                    # the head refused the file (no space, permissions): the job cannot run
                    refused[job.id] = SubmitResult(job_id=job.id, error=f"staging inputs failed: {exc}")

        async with anyio.create_task_group() as tg:
            for job, request in todo:
                tg.start_soon(one, job, request)
        if errors:
            raise errors[0]
        if refused:
            self._log.warning("stage_in_refused", job_ids=sorted(refused))
        self._log.info("inputs_staged", count=len(todo) - len(refused))
        return refused

    async def _record_submits(self, claimed: Sequence[Job], results: Sequence[SubmitResult]) -> None:
        now = time.time()
        if results and all(r.native_id is None and r.transient for r in results):
            self._refused_rounds += 1
            self.last_refusal = results[0].error
        elif any(r.native_id is not None for r in results):
            self._refused_rounds = 0
        refused = next((r.error or "credentials refused" for r in results if r.auth), None)
        if refused is not None:
            self.auth_refused = refused
            self.mark_degraded(f"the head refused our credentials; submits stopped until"
                               f" clusters resume {self.name}: {refused}")  # fmt: skip
        changes = []
        for job, result in zip(claimed, results, strict=True):
            if result.native_id is not None:
                changes.append(Change(job_id=job.id, to=State.QUEUED, expect_state=State.SUBMITTING,
                                      reason=f"submitted as {result.native_id}",
                                      fields={"native_id": result.native_id, "queued_at": now}))  # fmt: skip
            elif result.auth:
                # permanent for the job (no retry spends itself on it); `schedctl retry`
                # once the credentials are fixed
                changes.append(Change(job_id=job.id, to=State.FAILED, expect_state=State.SUBMITTING,
                                      reason=f"submit refused, credentials: {result.error}",
                                      fields={"max_attempts": job.attempt}))  # fmt: skip
            elif result.transient:
                changes.append(Change(job_id=job.id, to=State.READY, expect_state=State.SUBMITTING,
                                      reason=f"submit deferred: {result.error}",
                                      fields={"not_before": now + self.config.refusal_pause}))  # fmt: skip
            else:
                changes.append(Change(job_id=job.id, to=State.FAILED, expect_state=State.SUBMITTING,
                                      reason=f"submit refused: {result.error}"))  # fmt: skip
        with anyio.CancelScope(shield=True):
            outcome = await self.store.apply(changes)
        orphans = [
            r.native_id
            for r, o in zip(results, outcome, strict=True)
            if r.native_id is not None and isinstance(o, SchedulerdError)
        ]
        if orphans:
            # cancelled while submitting: take it off the head again
            self._log.info("cancel_after_submit", native_ids=orphans)
            try:
                await self.driver.cancel(orphans)
            except SchedulerdError as exc:
                self._log.warning("cancel_failed", error=str(exc))
        self._log.info("jobs_submitted", count=sum(r.native_id is not None for r in results))

    # --- polling ------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except TransportError as exc:
                self._poll_failed(str(exc), during="poll")
            except SchedulerdError as exc:
                # nothing is decided from an answer we could not read; try next round
                self._poll_failed(str(exc), during="poll", auth=getattr(exc, "auth", False))
            except Exception as exc:
                self._log.exception("poll_crashed")
                self._poll_failed(f"internal error: {exc}", during="poll")
            else:
                self._poll_succeeded()
            with anyio.move_on_after(self.config.poll_interval):
                await self._poll_now.wait()
            self._poll_now = anyio.Event()

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def mark_degraded(self, reason: str) -> None:
        """Show the cluster degraded at once (a head whose answer no retry can change)."""
        self._set_degraded(reason)

    def _set_degraded(self, reason: str | None) -> None:
        if reason == self.degraded_reason:
            return
        if reason is None:
            self._log.info("cluster_recovered", was=self.degraded_reason)
        else:
            self._log.warning("cluster_degraded", error=reason, failures=self.poll_failures)
        self.degraded_reason = reason

    def _poll_failed(self, error: str, *, during: str, auth: bool = False) -> None:
        self.last_error = error
        self.poll_failures += 1
        self._log.debug("poll_failed", error=error, during=during, failures=self.poll_failures)
        if self.auth_refused is not None:
            return  # degraded already, with the head's refusal of our credentials
        if auth:
            self._set_degraded(f"the head refused our credentials: {error}")  # no retry helps
        elif self.poll_failures >= DEGRADED_AFTER:
            self._set_degraded(error)

    def _poll_succeeded(self) -> None:
        self.poll_failures = 0
        if self.auth_refused is None:
            self._set_degraded(None)

    async def poll_once(self) -> None:
        await self._kill_pending()
        watched = await self.store.jobs_in_states(
            self.name, [State.QUEUED, State.RUNNING, State.HELD]
        )
        watched = [j for j in watched if j.native_id is not None]
        active = [
            ActiveJob(
                job_id=j.id,
                native_id=j.native_id or "",
                request=job_request(j),
                submitted_at=j.queued_at or j.created_at,
            )
            for j in watched
        ]
        result = await self.driver.poll(active)
        self.last_poll = time.time()
        self._first_poll.set()
        self.last_error = None
        if result.foreign_jobs is not None:
            self.foreign_jobs = result.foreign_jobs
        now = time.time()
        by_native = {j.native_id: j for j in watched}
        changes: list[Change] = []
        ended: list[tuple[int, Job]] = []
        for native_id, obs in result.observations.items():
            job = by_native.get(native_id)
            if job is None:
                continue
            change = observation_change(job, obs, now)
            if change is not None:
                if change.to in STAGE_OUT_STATES and job.spec.get("outputs"):
                    ended.append((len(changes), job))
                changes.append(change)
        if ended:
            # before the transition is recorded: once a client sees the job ended, its
            # outputs are there (and a crash in between fetches them again)
            for index, record in await self._stage_out([job for _, job in ended]):
                position = ended[index][0]
                change = changes[position]
                changes[position] = dataclasses.replace(change, fields={**change.fields, "result": record})
        if changes:
            with anyio.CancelScope(shield=True):
                outcome = await self.store.apply(changes)
            for o in outcome:
                if isinstance(o, SchedulerdError):
                    self._log.info("observation_conflict", error=str(o))

    async def _stage_out(self, jobs: Sequence[Job]) -> list[tuple[int, dict[str, Any]]]:
        """Fetch each ended attempt's outputs; (index in ``jobs``, the job's new result).
        Failures are logged (``stage_out_failed``) and recorded, never change a state."""
        records: list[tuple[int, dict[str, Any]]] = []
        limiter = anyio.CapacityLimiter(STAGING_CONCURRENCY)

        async def one(index: int, job: Job) -> None:
            root = job.spec.get("outputs_root") or str(self.settings.outputs_path)
            local_dir = output_dir(root, job.id, job.attempt)
            async with limiter:
                try:
                    fetched = await stage_out(self.driver.transport, job.workdir, job.spec["outputs"],
                                              local_dir, command_timeout=self.config.command_timeout)  # fmt: skip
                    outputs: dict[str, Any] = fetched.to_json()
                except (OSError, SchedulerdError) as exc:
                    outputs = {"dir": local_dir, "files": [], "errors": [str(exc)]}
            outputs["attempt"] = job.attempt
            if outputs.get("errors"):
                self._log.warning("stage_out_failed", job_id=job.id, attempt=job.attempt,
                                  errors=outputs["errors"][:10])  # fmt: skip
            self._log.info("outputs_fetched", job_id=job.id, attempt=job.attempt,
                           count=len(outputs["files"]), dir=local_dir)  # fmt: skip
            result = dict(job.result) if isinstance(job.result, dict) else {}
            result["outputs"] = outputs
            records.append((index, result))

        async with anyio.create_task_group() as tg:
            for index, job in enumerate(jobs):
                tg.start_soon(one, index, job)
        return records

    async def _kill_pending(self) -> None:
        doomed = await self.store.kill_pending(self.name)
        if not doomed:
            return
        await self.driver.cancel([j.native_id for j in doomed if j.native_id])
        await self.store.clear_kill_pending([j.id for j in doomed])
        self._log.info("jobs_cancelled_on_head", count=len(doomed))

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scheduler": self.config.scheduler,
            "host": self.config.host,
            "max_jobs": self.config.max_jobs,
            "foreign_jobs": self.foreign_jobs,
            "draining": self.draining,
            "last_poll": self.last_poll,
            "last_error": self.last_error,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
            "submits_stopped": self.auth_refused is not None,
            "poll_failures": self.poll_failures,
            "submit_paused_until": self.submit_paused_until,
            "last_refusal": self.last_refusal,
            "poll_interval": self.config.poll_interval,
        }
