"""The submit loop: claim ready jobs under the limits (the cluster's ``max_jobs`` less the
user's jobs we did not submit, the daemon's ``max_active``, ``submit_batch``, the
``submit_rate`` token bucket), stage their inputs, submit them and record each answer.

A round whose every job the head refused for a passing reason pauses the loop
(``refusal_pause``, doubling, at most :data:`SUBMIT_PAUSE_MAX`); refused credentials stop
it until ``clusters resume`` or a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import structlog

from schedulerd.config import ClusterConfig, Settings
from schedulerd.drivers.api import Driver
from schedulerd.drivers.base import SubmitResult
from schedulerd.errors import SchedulerdError, TransportError
from schedulerd.state.limits import slots_taken
from schedulerd.state.models import Change, Job
from schedulerd.state.retry import retry_delay
from schedulerd.state.store import Store
from schedulerd.state.transitions import State
from schedulerd.worker.clock import Clock
from schedulerd.worker.health import ClusterHealth
from schedulerd.worker.jobs import job_request
from schedulerd.worker.reconciler import Reconciler
from schedulerd.worker.stager import Stager

# pause of the submit loop after a round whose every job the head refused for a
# passing reason: the cluster's refusal_pause (30 s), doubling each further such round,
# at most 10 min
SUBMIT_PAUSE_MAX = 600.0
#: the longest the loop waits for new work before it looks again
IDLE_WAIT = 5.0


class TokenBucket:
    """``count`` submissions per ``period`` seconds."""

    def __init__(self, count: int, period: float, clock: Clock) -> None:
        self.capacity = count
        self.rate = count / period
        self.tokens = float(count)
        self.clock = clock
        self.stamp = clock.monotonic()

    def available(self) -> int:
        now = self.clock.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def seconds_until_one(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


def refusal_pause(base: float, rounds: int) -> float:
    """The pause after ``rounds`` (>= 1) refused rounds in a row: ``base``, doubling, at most
    :data:`SUBMIT_PAUSE_MAX` (or ``base`` where that is longer)."""
    return retry_delay(rounds, base=base, cap=max(SUBMIT_PAUSE_MAX, base))


class Submitter:
    def __init__(
        self,
        config: ClusterConfig,
        settings: Settings,
        store: Store,
        driver: Driver,
        *,
        clock: Clock,
        health: ClusterHealth,
        stager: Stager,
        reconciler: Reconciler,
        first_poll: anyio.Event,
        submitted: Callable[[], None],
        draining: Callable[[], bool],
    ) -> None:
        self.store = store
        self.driver = driver
        self.clock = clock
        self.health = health
        self.stager = stager
        self.reconciler = reconciler
        # Invariant 5 counts this user's jobs that we did not submit: nothing is submitted
        # before the first poll has told us how many there are.
        self._first_poll = first_poll
        self._submitted = submitted  # a round submitted jobs: poll soon
        self._draining = draining
        # rounds in a row whose every job the head refused for a passing reason
        self.refused_rounds = 0
        self._retry_now = anyio.Event()
        self.paused_until: float | None = None
        self.last_refusal: str | None = None
        self._log = structlog.get_logger(__name__).bind(cluster=config.name)
        self.reconfigure(config, settings)

    def reconfigure(self, config: ClusterConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.bucket = TokenBucket(*config.submit_rate, self.clock) if config.submit_rate else None
        if self.health.clear_auth():  # the reload may carry new credentials: try them
            self._wake()

    def resume(self) -> None:
        """Try now: ends a pause after refused submits, and the stop after refused
        credentials."""
        self.refused_rounds = 0
        self.health.clear_auth()
        self._wake()

    def _wake(self) -> None:
        self._retry_now.set()
        self._retry_now = anyio.Event()

    async def run(self) -> None:
        await self._first_poll.wait()
        while True:
            submitted = 0
            if self.health.auth_refused is not None:
                await self._retry_now.wait()  # clusters.resume or a reload
                continue
            if not self._draining():
                try:
                    submitted = await self.submit_once()
                except Exception as exc:
                    # jobs claimed by this round stay `submitting`: reconciled by name
                    self.health.last_error = str(exc)
                    self._log.exception("submit_failed")
                    await self.clock.sleep(min(30.0, self.config.poll_interval * 5))
                    await self.reconciler.reconcile()
                    continue
            if self.refused_rounds:
                # The head refused every job of the last round for a reason that should
                # pass (per-user limit, busy server). Ask again after a pause instead of
                # going on with the next ready jobs at once: a head that keeps refusing
                # (a QOS limit that never lifts) sees one batch per pause, not thousands
                # of submit commands every 30 s.
                pause = refusal_pause(self.config.refusal_pause, self.refused_rounds)
                self._log.warning("head_refusing_submits", rounds=self.refused_rounds,
                                  pause=pause, error=self.last_refusal)  # fmt: skip
                self.paused_until = self.clock.now() + pause
                await self.clock.wait(self._retry_now.wait, pause)
                self.paused_until = None
                continue
            if submitted:
                self._submitted()
                continue
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        timeout = IDLE_WAIT
        if self.bucket is not None and self.bucket.available() < 1:
            timeout = min(timeout, self.bucket.seconds_until_one())
        nxt = await self.store.next_not_before(self.config.name)
        if nxt is not None:
            timeout = min(timeout, max(0.05, nxt - self.clock.now()))
        await self.clock.wait(self.store.wait_work, timeout)

    async def submit_once(self) -> int:
        """One round: claim, stage in, submit, record. How many jobs it claimed."""
        limit = self.config.submit_batch
        if self.bucket is not None:
            limit = min(limit, self.bucket.available())
            if limit <= 0:
                return 0
        slots = max(0, self.config.max_jobs - self.health.foreign_jobs)
        count_cpus = self.config.scheduler == "local"  # a local job's cpus take that many slots
        claimed = await self.store.claim_for_submit(
            self.config.name,
            slots=slots,
            global_slots=self.settings.max_active,
            limit=limit,
            count_cpus=count_cpus,
        )
        if not claimed:
            return 0
        if self.bucket is not None:
            self.bucket.take(len(claimed))
        requests = [job_request(j) for j in claimed]
        # wider than the whole cluster (accepted by an older version, or max_jobs lowered
        # since): it could never start, and the claim hands it over to be failed here
        refused = {
            j.id: SubmitResult(job_id=j.id, error=f"it asks for {slots_taken(j.spec)} cpus and"
                               f" cluster {self.config.name} has {slots} slots: it can never start")
            for j in claimed
            if count_cpus and slots_taken(j.spec) > slots
        }  # fmt: skip
        try:
            todo = [(j, r) for j, r in zip(claimed, requests, strict=True) if j.id not in refused]
            refused |= await self.stager.stage_in([j for j, _ in todo], [r for _, r in todo])
            submitted = await self.driver.submit([r for r in requests if r.job_id not in refused])
        except TransportError as exc:
            # Nothing decided; the submit may or may not have reached the head, so the
            # jobs stay `submitting` and are reconciled by name like after a crash.
            self.health.last_error = str(exc)
            self._log.warning("head_unreachable", error=str(exc), during="submit")
            await self.clock.sleep(1.0)
            await self.reconciler.reconcile()
            return 0
        by_id = {r.job_id: r for r in submitted}
        results = [refused.get(j.id) or by_id[j.id] for j in claimed]
        await self._record(claimed, results)
        return len(claimed)

    async def _record(self, claimed: Sequence[Job], results: Sequence[SubmitResult]) -> None:
        now = self.clock.now()
        if results and all(r.native_id is None and r.transient for r in results):
            self.refused_rounds += 1
            self.last_refusal = results[0].error
        elif any(r.native_id is not None for r in results):
            self.refused_rounds = 0
        refusal = next((r.error or "credentials refused" for r in results if r.auth), None)
        if refusal is not None:
            self.health.refuse_auth(refusal)
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
