"""Refusals read the way each real system words them, end to end (issue 7, "done means").

Every fake head refuses in its system's real wording: a site's queued-jobs limit (the
jobs wait and complete, none fails, no attempt is spent), and our credentials refused
(the cluster is shown degraded, only the jobs of one submit round fail, and nothing more
is submitted until the operator resumes the cluster).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from tests.harness import wait_terminal
from tests.helpers.fake_cluster import SYSTEMS, fake_cluster

SUBMIT_COMMANDS = {"qsub", "bsub", "condor_submit", "sbatch"}


def _submit_calls(calls: list[list[str]]) -> int:
    return sum(1 for argv in calls if argv and os.path.basename(argv[0]) in SUBMIT_COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
async def test_a_queued_jobs_limit_makes_jobs_wait_and_all_complete(
    tmp_path: Path, system: str
) -> None:
    async with fake_cluster(tmp_path, system, submit_batch=4, refusal_pause="1s") as c:
        c.head.set_faults(max_queued=2)
        ids = (await c.client.call("job.submit", {"jobs": [{"argv": ["true"]}] * 8}))["ids"]
        jobs = await wait_terminal(c.client, ids, timeout=180)
        assert {j["state"] for j in jobs.values()} == {"completed"}, jobs
        assert {j["attempt"] for j in jobs.values()} == {1}, "a passing limit spent an attempt"
        events = (await c.client.call("events.list", {"ids": ids, "limit": 10000}))["events"]
        deferred = [e for e in events if e["from"] == "submitting" and e["to"] == "ready"]
        assert deferred, "the head's limit was never met: the test proves nothing"
        assert all("deferred" in (e["reason"] or "") for e in deferred)
        assert sorted(j["name"] for j in c.head.jobs()) == sorted(f"sd-{i}-1" for i in ids)


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
async def test_refused_credentials_degrade_the_cluster_and_fail_one_round(
    tmp_path: Path, system: str
) -> None:
    async with fake_cluster(tmp_path, system, submit_batch=3) as c:
        c.head.set_faults(submit_auth=1000)
        ids = (await c.client.call("job.submit", {"jobs": [{"argv": ["true"]}] * 9}))["ids"]
        deadline = time.monotonic() + 60
        while True:
            status = (await c.client.call("clusters.list"))["clusters"][0]
            if status["submits_stopped"]:
                break
            assert time.monotonic() < deadline, status
            await anyio.sleep(0.1)
        assert status["degraded"] is True and "credentials" in status["degraded_reason"], status
        submits = _submit_calls(c.head.calls())
        # polls go on (ten of them at 0.3 s); no further submit is tried meanwhile
        polls = len(c.head.calls())
        deadline = time.monotonic() + 60
        while len(c.head.calls()) < polls + 10:
            assert time.monotonic() < deadline, "the cluster stopped polling"
            await anyio.sleep(0.1)
        assert _submit_calls(c.head.calls()) == submits
        jobs = {j["id"]: j for j in (await c.client.call("job.list", {"limit": 100}))["jobs"]}
        failed = [j for j in jobs.values() if j["state"] == "failed"]
        assert len(failed) == 3, {j["id"]: j["state"] for j in jobs.values()}
        assert all(j["final"] and "credentials" in j["reason"] for j in failed)
        assert {j["state"] for j in jobs.values() if j["state"] != "failed"} == {"ready"}

        c.head.set_faults(submit_auth=0)  # the operator fixed the credentials
        await c.client.call("clusters.resume", {"name": "head"})
        rest = [i for i in ids if jobs[i]["state"] == "ready"]
        done = await wait_terminal(c.client, rest, timeout=120)
        assert {j["state"] for j in done.values()} == {"completed"}
        status = (await c.client.call("clusters.list"))["clusters"][0]
        assert status["degraded"] is False and status["submits_stopped"] is False


async def test_a_submit_whose_answer_timed_out_is_looked_up_not_sent_twice(tmp_path: Path) -> None:
    """Slurm answers "Socket timed out" for a job the controller did queue: a transient
    refusal, and resubmitting on it ran the job twice (invariant 2)."""
    async with fake_cluster(tmp_path, "slurm", refusal_pause="1s") as c:
        c.head.set_faults(submit_lost_reply=1)
        (jid,) = (await c.client.call("job.submit", {"jobs": [{"argv": ["true"]}]}))["ids"]
        job = (await wait_terminal(c.client, [jid], timeout=120))[jid]
        assert job["state"] == "completed" and job["attempt"] == 1
        assert [j["name"] for j in c.head.jobs()] == [f"sd-{jid}-1"], "submitted twice"
