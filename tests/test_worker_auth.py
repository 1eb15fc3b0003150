"""A head that refuses our credentials on submit (issue 7's authentication class).

The refused round's jobs fail for good (no retry spends itself on them), the cluster is
shown degraded with the head's message, and no further job is submitted to that head
until an operator resumes it: every other job would meet the same refusal. A worker is
driven directly with a fake driver (the Driver protocol) on a fake clock, its store a real
one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest

from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.transport import LocalTransport
from schedulerd.state.models import JobSpec, NewJob
from schedulerd.state.store import Store, open_store
from schedulerd.state.transitions import State
from schedulerd.worker.cluster import ClusterWorker
from tests.fakeclock import FakeClock
from tests.harness import local_settings

POLL = 0.2  # the poll_interval of tests.harness.local_config
REFUSAL = "AUTHENTICATE:1003:Failed to authenticate with any method"


class RefusingHead:
    """Refuses our credentials while ``refusing`` is set; then queues and completes."""

    name = "fake"

    def __init__(self) -> None:
        self.refusing = True
        self.submit_rounds: list[list[int]] = []
        self.polls = 0
        self.transport = LocalTransport()
        self._queued: dict[str, int] = {}

    async def submit(self, jobs: Sequence[JobRequest]) -> list[SubmitResult]:
        self.submit_rounds.append([j.job_id for j in jobs])
        if self.refusing:
            return [SubmitResult(job_id=j.job_id, error=REFUSAL, auth=True) for j in jobs]
        results = []
        for job in jobs:
            native = f"{job.job_id}.head"
            self._queued[native] = job.job_id
            results.append(SubmitResult(job_id=job.job_id, native_id=native))
        return results

    async def poll(self, active: Sequence[ActiveJob]) -> PollResult:
        self.polls += 1
        done = {a.native_id: Observation(native_id=a.native_id, phase=Phase.COMPLETED, exit_code=0)
                for a in active}  # fmt: skip
        return PollResult(observations=done, foreign_jobs=0)

    async def cancel(self, native_ids: Sequence[str]) -> None: ...

    async def hold(self, native_ids: Sequence[str]) -> None: ...

    async def release(self, native_ids: Sequence[str]) -> None: ...

    async def lookup(self, jobs: Sequence[JobRequest]) -> dict[str, str]:
        return {}

    async def check(self) -> list[CheckResult]:
        return []

    async def aclose(self) -> None: ...


@contextlib.asynccontextmanager
async def worker_with(
    tmp_path: Path, head: RefusingHead, clock: FakeClock
) -> AsyncIterator[tuple[ClusterWorker, Store]]:
    settings = local_settings(tmp_path, slots=5, extra="submit_batch = 5")
    store = await open_store(tmp_path / "db.sqlite3")
    store.clock = clock.now
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            worker = ClusterWorker(settings.clusters["local"], settings, store, head, clock=clock)
            await store.create_jobs([NewJob(name=f"j{n}", cluster="local", workdir=str(tmp_path / "w"),
                                            spec=JobSpec(argv=("true",)), max_attempts=3)
                                     for n in range(12)])  # fmt: skip
            async with anyio.create_task_group() as work:
                await work.start(worker.run)
                yield worker, store
                work.cancel_scope.cancel()  # before the writer: a shielded write may be on its way
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
            await store.aclose_connections()


async def _until(condition, clock: FakeClock, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Until ``condition()``, time moving on by one poll interval at each look."""
    with anyio.fail_after(seconds):
        while not await condition():
            clock.advance(POLL)
            await anyio.sleep(0.02)


@pytest.mark.parametrize("fix_by", ["resume", "reload"])
async def test_refused_credentials_fail_one_round_and_stop_submits(
    tmp_path: Path, fix_by: str
) -> None:
    head, clock = RefusingHead(), FakeClock()
    async with worker_with(tmp_path, head, clock) as (worker, store):

        async def refused_round_recorded() -> bool:
            return bool(await store.jobs_in_states("local", [State.FAILED]))

        await _until(refused_round_recorded, clock)
        (first_round,) = head.submit_rounds
        failed = await store.jobs_in_states("local", [State.FAILED])
        assert sorted(j.id for j in failed) == sorted(first_round) and len(first_round) == 5
        for job in failed:  # permanent for the job: no retry was scheduled
            assert job.max_attempts == job.attempt == 1
            assert "credentials" in (job.reason or "") and REFUSAL in (job.reason or "")
        status = worker.status()
        assert status["degraded"] is True and status["submits_stopped"] is True
        assert REFUSAL in status["degraded_reason"]
        # many polls later (they succeed), still no second round and still degraded; the
        # submit loop waits for an operator, not on the clock
        polls = head.polls
        for _ in range(20):
            assert await clock.settle(1) == [pytest.approx(POLL)]
            clock.advance(POLL)
        await clock.settle(1)
        assert head.polls == polls + 20
        assert len(head.submit_rounds) == 1
        assert worker.status()["degraded"] is True
        ready = await store.jobs_in_states("local", [State.READY])
        assert len(ready) == 7, "jobs outside the refused round were touched"

        head.refusing = False
        if fix_by == "resume":
            await worker.set_drained(False)
        else:
            worker.reconfigure(worker.config, worker.settings)

        async def rest_completed() -> bool:
            return len(await store.jobs_in_states("local", [State.COMPLETED])) == 7

        await _until(rest_completed, clock)
        status = worker.status()
        assert status["degraded"] is False and status["submits_stopped"] is False
