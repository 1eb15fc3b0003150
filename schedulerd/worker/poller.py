"""The poll loop: carry out pending cancels and hold/release intents, ask the head about every watched job in one
round, turn each observation into the transition it asks for, fetch the outputs of ended
attempts, and keep the cluster's health (``degraded`` after failing polls).

A failed poll never decides a job's fate: job states stay as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import structlog

from schedulerd.config import ClusterConfig
from schedulerd.drivers.api import ActiveJob, Driver
from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.errors import SchedulerdError, TransportError
from schedulerd.state import transitions
from schedulerd.state.models import Change, WatchedJob
from schedulerd.state.store import Store
from schedulerd.state.transitions import State
from schedulerd.worker.clock import Clock
from schedulerd.worker.health import ClusterHealth
from schedulerd.worker.jobs import job_request
from schedulerd.worker.stager import STAGE_OUT_STATES, Stager

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
WATCHED = (State.QUEUED, State.RUNNING, State.HELD)


def observation_change(job: WatchedJob, obs: Observation, now: float) -> Change | None:
    """The transition an observation asks for, or None when it brings no news."""
    target = PHASE_TO_STATE[obs.phase]
    fields: dict[str, Any] = {}
    if obs.exit_code is not None and target in transitions.TERMINAL:
        fields["exit_code"] = obs.exit_code
    if target is State.RUNNING and job.started_at is None:
        fields["started_at"] = obs.started_at or now
    if target in transitions.TERMINAL:
        if obs.started_at and job.started_at is None:
            fields["started_at"] = obs.started_at
        fields["finished_at"] = obs.finished_at or now
    if target is job.state:
        if target is State.HELD and obs.reason != job.reason:
            return Change(job_id=job.id, to=target, expect_version=job.version, reason=obs.reason)
        return None
    if not transitions.is_legal(job.state, target):
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


class Poller:
    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        driver: Driver,
        *,
        clock: Clock,
        health: ClusterHealth,
        stager: Stager,
        first_poll: anyio.Event,
    ) -> None:
        self.config = config
        self.store = store
        self.driver = driver
        self.clock = clock
        self.health = health
        self.stager = stager
        self._first_poll = first_poll
        self._poll_now = anyio.Event()
        # What the driver is handed of each watched attempt, and whether it has outputs
        # to fetch, kept between polls: an attempt's request never changes, so a poll
        # reads only the few columns it needs (no spec, no JSON), and the whole job only
        # of an attempt it sees for the first time or that ended with outputs.
        self._attempts: dict[tuple[int, int], tuple[JobRequest, bool]] = {}
        self._log = log.bind(cluster=config.name)

    def poke(self) -> None:
        """Poll soon."""
        self._poll_now.set()

    async def run(self) -> None:
        while True:
            await self.poll_round()
            await self.clock.wait(self._poll_now.wait, self.config.poll_interval)
            self._poll_now = anyio.Event()

    async def poll_round(self) -> None:
        """One poll, its failure counted in the cluster's health (never raised)."""
        try:
            await self.poll_once()
        except TransportError as exc:
            self.health.poll_failed(str(exc), during="poll")
        except SchedulerdError as exc:
            # nothing is decided from an answer we could not read; try next round
            self.health.poll_failed(str(exc), during="poll", auth=getattr(exc, "auth", False))
        except Exception as exc:
            self._log.exception("poll_crashed")
            self.health.poll_failed(f"internal error: {exc}", during="poll")
        else:
            self.health.poll_succeeded()

    async def _requests(self, watched: list[WatchedJob]) -> list[tuple[WatchedJob, ActiveJob]]:
        """The driver's view of each watched attempt (those not yet known read whole)."""
        keys = {(w.id, w.attempt) for w in watched}
        self._attempts = {k: v for k, v in self._attempts.items() if k in keys}
        new = [w.id for w in watched if (w.id, w.attempt) not in self._attempts]
        if new:
            for job in (await self.store.get_jobs(new)).values():
                if (job.id, job.attempt) in keys:
                    self._attempts[(job.id, job.attempt)] = (
                        job_request(job),
                        bool(job.spec.outputs),
                    )
        return [
            (w, ActiveJob(job_id=w.id, native_id=w.native_id, submitted_at=w.submitted_at,
                          request=self._attempts[(w.id, w.attempt)][0]))
            for w in watched
            if (w.id, w.attempt) in self._attempts  # else it moved on since: next poll
        ]  # fmt: skip

    async def poll_once(self) -> None:
        await self._kill_pending()
        await self.carry_out_intents()
        watched = await self.store.watched_jobs(self.config.name, WATCHED)
        pairs = await self._requests(watched)
        result = await self.driver.poll([active for _, active in pairs])
        self.health.answered(self.clock.now())
        self._first_poll.set()
        if result.foreign_jobs is not None:
            self.health.foreign_jobs = result.foreign_jobs
        now = self.clock.now()
        by_native = {w.native_id: w for w, _ in pairs}
        changes: list[Change] = []
        ended: list[tuple[int, WatchedJob]] = []
        for native_id, obs in result.observations.items():
            watch = by_native.get(native_id)
            if watch is None:
                continue
            change = observation_change(watch, obs, now)
            if change is not None:
                if change.to in STAGE_OUT_STATES and self._attempts[(watch.id, watch.attempt)][1]:
                    ended.append((len(changes), watch))
                changes.append(change)
        if ended:
            await self._stage_out(changes, ended)
        if changes:
            with anyio.CancelScope(shield=True):
                outcome = await self.store.apply(changes)
            for o in outcome:
                if isinstance(o, SchedulerdError):
                    self._log.info("observation_conflict", error=str(o))

    async def _stage_out(self, changes: list[Change], ended: list[tuple[int, WatchedJob]]) -> None:
        """Fetch the outputs of the attempts that ended, before the transition is recorded:
        once a client sees the job ended, its outputs are there (and a crash in between
        fetches them again). Each change gets the job's new result."""
        jobs = await self.store.get_jobs([w.id for _, w in ended])
        todo = [(position, jobs[w.id]) for position, w in ended
                if w.id in jobs and jobs[w.id].attempt == w.attempt]  # fmt: skip
        for index, record in await self.stager.stage_out([job for _, job in todo]):
            position = todo[index][0]
            change = changes[position]
            changes[position] = dataclasses.replace(
                change, fields={**change.fields, "result": record}
            )

    async def _kill_pending(self) -> None:
        doomed = await self.store.kill_pending(self.config.name)
        if not doomed:
            return
        await self.driver.cancel([j.native_id for j in doomed if j.native_id])
        await self.store.clear_kill_pending([j.id for j in doomed])
        self._log.info("jobs_cancelled_on_head", count=len(doomed))

    async def carry_out_intents(self) -> None:
        """The pending hold/release intents of this cluster (state/intents.py): one batched
        command per action; each intent is dropped once the head answered, or at once when
        its job is no longer where the action applies (it started, ended, or the head held
        or released it). A head that cannot be reached keeps them for the next poll."""
        todo = await self.store.head_intents(self.config.name)
        if not todo:
            return
        done: list[tuple[int, str]] = []
        by_action: dict[str, list[str]] = {}
        for job, action in todo:
            if job.native_id and job.state is transitions.USER_ACTIONS[action].on_head_from:
                by_action.setdefault(action, []).append(job.native_id)
                done.append((job.id, action))
            else:
                self._log.info("head_intent_dropped", job_id=job.id, action=action,
                               state=job.state)  # fmt: skip
                await self.store.clear_head_intents([(job.id, action)])
        for action, natives in by_action.items():
            command = self.driver.hold if action == "hold" else self.driver.release
            try:
                await command(natives)
            except TransportError:
                raise  # not known to have reached the head: kept, tried next poll
            except SchedulerdError as exc:  # the head refused: asking again would not help
                self._log.warning("head_intent_refused", action=action, count=len(natives),
                                  error=str(exc))  # fmt: skip
            ours = [(jid, a) for jid, a in done if a == action]
            await self.store.clear_head_intents(ours)
            self._log.info("head_intents_carried_out", action=action, count=len(ours))
