"""One driver conformance suite over every batch system.

The daemon drives a fake batch head (tests/fakebatch) through a real asyncssh server in
this process, exactly as it would drive a login node: scripts written and submitted over
SSH, one poll command per head, exit files read back.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from schedulerd.client import RpcError
from tests.fakebatch.core import gated
from tests.harness import wait_terminal
from tests.helpers.fake_cluster import SYSTEMS, fake_cluster, submit, wait_state


@pytest.mark.parametrize("system", SYSTEMS)
async def test_completed_and_failed_with_exact_exit_code(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system) as c:
        ok = await submit(c.client, ["sh", "-c", "sleep 1; echo out; echo err >&2"])
        bad = await submit(c.client, ["sh", "-c", "exit 7"])
        await wait_state(c.client, ok, {"running", "completed"})
        jobs = await wait_terminal(c.client, [ok, bad], timeout=60)
        assert jobs[ok]["state"] == "completed" and jobs[ok]["exit_code"] == 0
        assert jobs[bad]["state"] == "failed" and jobs[bad]["exit_code"] == 7
        assert Path(jobs[ok]["stdout"]).read_text() == "out\n"
        assert Path(jobs[ok]["stderr"]).read_text() == "err\n"
        names = {j["name"] for j in c.head.jobs()}
        assert names == {f"sd-{ok}-1", f"sd-{bad}-1"}  # each submitted once, by our name


@pytest.mark.parametrize("system", SYSTEMS)
async def test_cancel_running_job(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system) as c:
        jid = await submit(c.client, ["sleep", "60"])
        await wait_state(c.client, jid, {"running"})
        out = await c.client.call("job.cancel", {"id": jid})
        assert out["jobs"][0]["state"] == "cancelled"
        deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
        while True:
            (fake,) = c.head.jobs()
            if fake["state"] == "done":
                break
            assert time.monotonic() < deadline, "the head still runs the cancelled job"
            await anyio.sleep(0.2)
        assert fake["end_reason"] == "cancelled"
        job = await c.client.call("job.get", {"id": jid})
        assert job["state"] == "cancelled"


@pytest.mark.parametrize("system", SYSTEMS)
async def test_hold_and_release_on_the_head(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system, slots=0) as c:
        jid = await submit(c.client, ["sh", "-c", "exit 0"])
        await wait_state(c.client, jid, {"queued"})
        await c.client.call("job.hold", {"id": jid})
        held = await wait_state(c.client, jid, {"held"})
        assert held["reason"]
        await c.client.call("job.release", {"id": jid})
        await wait_state(c.client, jid, {"queued"})
        c.head.set_config(slots=10)
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "completed"


@pytest.mark.parametrize("system", SYSTEMS)
async def test_head_that_forgets_jobs_exit_file_decides(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system) as c:
        c.head.set_faults(forget_finished=True)
        jid = await submit(c.client, ["sh", "-c", "sleep 0.5; exit 5"])
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "failed" and job["exit_code"] == 5
        assert "exit file" in (job["reason"] or "")


@pytest.mark.parametrize("system", SYSTEMS)
async def test_no_exit_file_means_lost_then_retried(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system) as c:
        c.head.set_faults(forget_finished=True)
        # the command kills its own wrapper: no exit file, and the head forgets the job
        jid = await submit(c.client, ["sh", "-c", "kill -9 $PPID"], retries=1)
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "lost"
        assert job["attempt"] == 2
        events = (await c.client.call("events.list", {"ids": [jid]}))["events"]
        assert [e["to"] for e in events].count("lost") == 2
        assert {j["name"] for j in c.head.jobs()} == {f"sd-{jid}-1", f"sd-{jid}-2"}


@pytest.mark.parametrize("system", SYSTEMS)
async def test_connection_killed_mid_poll_loses_nothing(tmp_path: Path, system: str) -> None:
    ledger = tmp_path / "ledger"
    async with fake_cluster(tmp_path, system) as c:
        ids = [await submit(c.client, ["sh", "-c", f"sleep 2; echo $SCHEDULERD_JOB_ID >> {ledger}"])
               for _ in range(3)]  # fmt: skip
        for _ in range(6):
            await anyio.sleep(0.4)
            await c.server.drop_connections()
        jobs = await wait_terminal(c.client, ids, timeout=60)
        assert {j["state"] for j in jobs.values()} == {"completed"}
        assert sorted(map(int, ledger.read_text().split())) == ids
        assert len(c.head.jobs()) == 3
        assert c.server.connection_count >= 2  # it did reconnect


@pytest.mark.parametrize("system", SYSTEMS)
async def test_unreachable_head_leaves_job_states_alone(tmp_path: Path, system: str) -> None:
    gate = tmp_path / "gate"
    async with fake_cluster(tmp_path, system) as c:
        # gated: it cannot end before the head is unreachable, however slow the machine
        jid = await submit(c.client, list(gated(gate)))
        await wait_state(c.client, jid, {"running"})
        c.server.pause()
        await c.server.drop_connections()
        before = await c.client.call("job.get", {"id": jid})
        gate.touch()  # the job ends meanwhile; nobody can tell us
        deadline = time.monotonic() + 30
        while not any(j["state"] == "done" for j in c.head.jobs()):
            assert time.monotonic() < deadline, "the job did not end on the head"
            await anyio.sleep(0.1)
        # the daemon tried the head again after the job ended, and was turned away
        rejected = c.server.rejected_connections
        deadline = time.monotonic() + 30
        while c.server.rejected_connections == rejected:
            assert time.monotonic() < deadline, "the daemon stopped trying the head"
            await anyio.sleep(0.1)
        during = await c.client.call("job.get", {"id": jid})
        assert during["state"] == before["state"] == "running"
        assert during["version"] == before["version"]
        info = await c.client.call("daemon.info")
        assert info["clusters"][0]["last_error"]
        c.server.resume()
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "completed" and job["attempt"] == 1


@pytest.mark.parametrize("system", SYSTEMS)
async def test_clusters_check_good_and_broken_head(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system) as c:
        report = await c.client.call("clusters.check", {"name": "head"})
        assert report["ok"], report
        assert {r["name"] for r in report["checks"]} >= {
            "connect",
            "commands",
            "version",
            "queue",
            "workdir",
        }
        c.head.set_faults(down=True)
        broken = await c.client.call("clusters.check", {"name": "head"})
        assert not broken["ok"]
        failed = {r["name"] for r in broken["checks"] if not r["ok"]}
        assert failed & {"version", "queue"}
        with pytest.raises(RpcError) as err:
            await c.client.call("clusters.check", {"name": "nope"})
        assert err.value.code == -32006


@pytest.mark.parametrize("system", SYSTEMS)
async def test_transient_submit_error_is_retried_without_spending_attempts(
    tmp_path: Path, system: str
) -> None:
    async with fake_cluster(tmp_path, system) as c:
        c.head.set_faults(submit_transient=1)
        jid = await submit(c.client, ["true"])
        deadline = time.monotonic() + 30
        while True:
            events = (await c.client.call("events.list", {"ids": [jid]}))["events"]
            moves = [(e["from"], e["to"]) for e in events]
            if ("submitting", "ready") in moves:
                break
            assert time.monotonic() < deadline, moves
            await anyio.sleep(0.1)
        job = await c.client.call("job.get", {"id": jid})
        assert job["state"] == "ready" and job["attempt"] == 1
        assert "deferred" in (job["reason"] or "")
        assert job["not_before"] is not None
        assert c.head.jobs() == []
