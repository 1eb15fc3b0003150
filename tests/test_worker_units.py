"""The worker's parts driven by a fake clock (tests/fakeclock.py): the token bucket, the
pause after refused rounds, the pause after a head unreachable mid-submit, the degraded
count, and a drained cluster that polls but never submits. Nothing here sleeps to prove
that nothing happened: time moves only when the test advances it.

Workers run against a real store (sharing the fake clock) and a fake driver that plays
the head (the Driver protocol).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from schedulerd.config import load_settings
from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.transport import LocalTransport
from schedulerd.errors import TransportError
from schedulerd.state.models import Job, JobSpec, NewJob
from schedulerd.state.store import Store, open_store
from schedulerd.state.transitions import State
from schedulerd.worker.cluster import ClusterWorker
from schedulerd.worker.health import DEGRADED_AFTER, ClusterHealth
from schedulerd.worker.submitter import IDLE_WAIT, SUBMIT_PAUSE_MAX, TokenBucket, refusal_pause
from tests.fakeclock import FakeClock
from tests.harness import write_config

POLL = 7.0  # apart from every other wait of the worker, so a test can tell them apart
BUSY = "Batch job submission failed: Resource temporarily unavailable"


class FakeHead:
    """Queues what it is given (or refuses it: ``refuse`` = "transient", "auth"; or is
    unreachable: ``down``); every queued job stays running."""

    name = "fake"

    def __init__(self) -> None:
        self.refuse: str | None = None
        self.down = False
        self.submit_down = False
        self.submit_rounds: list[list[int]] = []
        self.polls = 0
        self.lookups = 0
        self.transport = LocalTransport()

    async def submit(self, jobs: Sequence[JobRequest]) -> list[SubmitResult]:
        self.submit_rounds.append([j.job_id for j in jobs])
        if self.submit_down:
            raise TransportError("connection lost")
        if self.refuse == "transient":
            return [SubmitResult(job_id=j.job_id, error=BUSY, transient=True) for j in jobs]
        return [SubmitResult(job_id=j.job_id, native_id=f"{j.job_id}.head") for j in jobs]

    async def poll(self, active: Sequence[ActiveJob]) -> PollResult:
        self.polls += 1
        if self.down:
            raise TransportError("connection refused")
        running = {a.native_id: Observation(native_id=a.native_id, phase=Phase.RUNNING)
                   for a in active}  # fmt: skip
        return PollResult(observations=running, foreign_jobs=0)

    async def cancel(self, native_ids: Sequence[str]) -> None: ...

    async def hold(self, native_ids: Sequence[str]) -> None: ...

    async def release(self, native_ids: Sequence[str]) -> None: ...

    async def lookup(self, jobs: Sequence[JobRequest]) -> dict[str, str]:
        self.lookups += 1
        return {}

    async def check(self) -> list[CheckResult]:
        return []

    async def aclose(self) -> None: ...

    def submitted(self) -> int:
        return sum(len(r) for r in self.submit_rounds)


@contextlib.asynccontextmanager
async def running_worker(
    tmp_path: Path, head: FakeHead, clock: FakeClock, *, extra: str = "", jobs: int = 20,
    drained: bool = False,
) -> AsyncIterator[tuple[ClusterWorker, Store]]:  # fmt: skip
    config = write_config(tmp_path, f"""
[clusters.local]
scheduler = "local"
max_jobs = 50
poll_interval = "{POLL}s"
submit_batch = 5
{extra}
""")  # fmt: skip
    settings = load_settings(config=config, state_dir=tmp_path / "state",
                             socket=tmp_path / "sd.sock", environ={})  # fmt: skip
    store = await open_store(tmp_path / "db.sqlite3")
    store.clock = clock.now
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            if jobs:
                await store.create_jobs([NewJob(name=f"j{n}", cluster="local", workdir=str(tmp_path / "w"),
                                                spec=JobSpec(argv=("true",)), max_attempts=3)
                                         for n in range(jobs)])  # fmt: skip
            worker = ClusterWorker(settings.clusters["local"], settings, store, head, clock=clock)
            worker.drained = drained
            async with anyio.create_task_group() as work:
                await work.start(worker.run)
                yield worker, store
                work.cancel_scope.cancel()  # before the writer: a shielded write may be on its way
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
            await store.aclose_connections()


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


async def count(store: Store, state: State) -> int:
    return len(await store.jobs_in_states("local", [state]))


# --- pure parts -----------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = FakeClock(start=0.0)
    bucket = TokenBucket(10, 60.0, clock)
    assert bucket.available() == 10
    bucket.take(10)
    assert bucket.available() == 0
    assert bucket.seconds_until_one() == pytest.approx(6.0)
    clock.advance(5.9)
    assert bucket.available() == 0
    clock.advance(0.1)
    assert bucket.available() == 1
    clock.advance(3600)
    assert bucket.available() == 10  # never more than its capacity


def test_refusal_pause_doubles_up_to_its_cap() -> None:
    assert [refusal_pause(30.0, n) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert refusal_pause(30.0, 10) == SUBMIT_PAUSE_MAX
    assert refusal_pause(900.0, 3) == 900.0  # a base above the cap is the pause


def test_degraded_after_failures_in_a_row_logged_once_per_change() -> None:
    health = ClusterHealth("c")
    with capture_logs() as logs:
        for _ in range(DEGRADED_AFTER - 1):
            health.poll_failed("connection refused", during="poll")
        assert not health.degraded
        for _ in range(3):
            health.poll_failed("connection refused", during="poll")
        assert health.degraded_reason == "connection refused"
        health.answered(123.0)
        health.poll_succeeded()
        assert not health.degraded and health.poll_failures == 0 and health.last_poll == 123.0
        health.poll_failed("AUTH refused", during="poll", auth=True)  # no retry helps: at once
        assert health.degraded_reason == "the head refused our credentials: AUTH refused"
    names = [e["event"] for e in logs if e["event"].startswith("cluster_")]
    assert names == ["cluster_degraded", "cluster_recovered", "cluster_degraded"]


def test_refused_credentials_stay_degraded_until_cleared() -> None:
    health = ClusterHealth("c")
    health.refuse_auth("AUTHENTICATE failed")
    health.poll_succeeded()  # polls work, submits would not: still degraded
    assert health.degraded and "clusters resume c" in (health.degraded_reason or "")
    for _ in range(DEGRADED_AFTER):
        health.poll_failed("timeout", during="poll")
    assert "AUTHENTICATE" in (health.degraded_reason or "")
    assert health.clear_auth() is True
    assert health.degraded_reason == "timeout"  # the polls still fail
    assert health.clear_auth() is False


# --- the worker on a fake clock -------------------------------------------------------------


async def test_refused_round_pauses_submits_then_doubles_and_resume_retries_now(
    tmp_path: Path,
) -> None:
    head, clock = FakeHead(), FakeClock()
    head.refuse = "transient"
    async with running_worker(tmp_path, head, clock) as (worker, store):
        # the poller waits POLL s, the submitter the refusal pause (30 s)
        assert await clock.settle(2) == pytest.approx([POLL, 30.0])
        assert len(head.submit_rounds) == 1 and head.submitted() == 5
        status = worker.status()
        assert status["submit_paused_until"] == pytest.approx(clock.now() + 30.0)
        assert status["last_refusal"] == BUSY
        assert await count(store, State.READY) == 20  # deferred, none failed
        for _ in range(4):  # 28 s: polls go on, no submit
            polls = head.polls
            clock.advance(POLL)
            await clock.settle(2)
            assert head.polls == polls + 1
        assert len(head.submit_rounds) == 1
        clock.advance(2.0)  # the pause is over: one more batch, then twice the pause
        await until(lambda: len(head.submit_rounds) == 2)
        waits = await clock.settle(2)
        assert waits[-1] == pytest.approx(60.0) and head.submitted() == 10
        head.refuse = None
        await worker.set_drained(False)  # clusters resume: try now
        await until(lambda: len(head.submit_rounds) >= 3)
        assert worker.status()["submit_paused_until"] is None


async def test_head_lost_mid_submit_pauses_then_reconciles_by_name(tmp_path: Path) -> None:
    head, clock = FakeHead(), FakeClock()
    head.submit_down = True  # the connection drops under the submit command
    async with running_worker(tmp_path, head, clock, jobs=5) as (_worker, store):
        assert await clock.settle(2) == pytest.approx(
            [1.0, POLL]
        )  # the submitter's pause, the poller's wait
        assert len(head.submit_rounds) == 1 and head.lookups == 0
        # nothing decided: the jobs stay `submitting`, the submit may have reached the head
        assert await count(store, State.SUBMITTING) == 5
        head.submit_down = False
        clock.advance(1.0)
        await until(lambda: head.lookups == 1)  # asked the head by name: not there
        assert await clock.settle(2) == pytest.approx([IDLE_WAIT, POLL - 1.0])
        assert await count(store, State.READY) == 5 and len(head.submit_rounds) == 1
        clock.advance(IDLE_WAIT)
        await until(lambda: head.submitted() == 10)  # so they were submitted again
        assert len(head.submit_rounds) == 2


async def test_degraded_after_three_failing_polls_and_recovered_by_one(tmp_path: Path) -> None:
    head, clock = FakeHead(), FakeClock()
    async with running_worker(tmp_path, head, clock, jobs=0) as (worker, _store):
        await clock.settle(2)
        head.down = True
        for failures in range(1, DEGRADED_AFTER + 2):
            clock.advance(POLL)
            await until(lambda n=failures: worker.status()["poll_failures"] == n)  # type: ignore[misc]
            assert worker.status()["degraded"] is (failures >= DEGRADED_AFTER)
        assert worker.status()["degraded_reason"] == "connection refused"
        head.down = False
        clock.advance(POLL)
        await until(lambda: worker.status()["poll_failures"] == 0)
        assert worker.status()["degraded"] is False


async def test_token_bucket_paces_the_submit_loop(tmp_path: Path) -> None:
    head, clock = FakeHead(), FakeClock()
    async with running_worker(tmp_path, head, clock, extra='submit_rate = "5/1m"',
                              jobs=12) as (_worker, store):  # fmt: skip
        await until(lambda: head.submitted() == 5)
        # one token each 12 s: the loop looks again at most every 5 s, and submits nothing
        # before the token is there
        for _ in range(2):
            await clock.settle(2)
            clock.advance(5.0)
        waits = await clock.settle(2)
        assert head.submitted() == 5
        assert waits[0] == pytest.approx(2.0)  # until the next token
        clock.advance(2.5)  # past the 12 s since the bucket was emptied
        await until(lambda: head.submitted() == 6)
        assert await count(store, State.READY) == 6


async def test_drained_worker_polls_and_submits_nothing(tmp_path: Path) -> None:
    head, clock = FakeHead(), FakeClock()
    async with running_worker(tmp_path, head, clock, drained=True, jobs=3) as (worker, store):
        for _ in range(5):
            await clock.settle(2)
            polls = head.polls
            clock.advance(POLL)
            await until(lambda p=polls: head.polls > p)  # type: ignore[misc]
        await clock.settle(2)
        assert head.submit_rounds == [] and await count(store, State.READY) == 3
        await worker.set_drained(False)
        await clock.settle(2)
        clock.advance(IDLE_WAIT)  # the submit loop looks again
        await until(lambda: head.submitted() == 3)


async def test_polls_of_known_attempts_read_no_job_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll reads the columns it needs; a job's spec is decoded once per attempt, not
    once per poll (issue 8: every poll decoded every watched job)."""
    decoded: list[int] = []
    from_row = Job.from_row.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Job], row: Sequence[object]) -> Job:
        job: Job = from_row(cls, row)
        decoded.append(job.id)
        return job

    monkeypatch.setattr(Job, "from_row", classmethod(counting))
    head, clock = FakeHead(), FakeClock()
    async with running_worker(tmp_path, head, clock, jobs=5) as (_worker, store):
        await until(lambda: head.submitted() == 5)
        await clock.settle(2)
        polls = head.polls
        clock.advance(POLL)  # the first poll of the queued jobs reads each one once
        await until(lambda: head.polls == polls + 1)
        await clock.settle(2)
        assert await count(store, State.RUNNING) == 5
        decoded.clear()
        for _ in range(3):
            clock.advance(POLL)
            await until(lambda p=head.polls: head.polls > p)  # type: ignore[misc]
            await clock.settle(2)
        assert decoded == []
