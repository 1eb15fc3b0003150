"""End to end through the socket with the local driver."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from schedulerd.client import RpcError
from tests.harness import local_settings, running_daemon, wait_terminal


async def test_echo_hi_completes_with_stdout(tmp_path: Path) -> None:
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        res = await client.call("job.submit", {"job": {"argv": ["sh", "-c", "echo hi"]}})
        jobs = await wait_terminal(client, [res["id"]])
        job = jobs[res["id"]]
        assert job["state"] == "completed"
        assert job["exit_code"] == 0
        assert Path(job["stdout"]).read_text() == "hi\n"
        await client.aclose()


async def test_failure_exit_code_and_retries(tmp_path: Path) -> None:
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        res = await client.call(
            "job.submit", {"job": {"argv": ["sh", "-c", "exit 3"], "retries": 1}}
        )
        job = (await wait_terminal(client, [res["id"]], timeout=30))[res["id"]]
        assert job["state"] == "failed"
        assert job["exit_code"] == 3
        assert job["attempt"] == 2
        events = await client.call("events.list", {"ids": [res["id"]]})
        transitions = [(e["from"], e["to"]) for e in events["events"]]
        assert (
            transitions.count(("queued", "failed")) + transitions.count(("running", "failed")) == 2
        )
        assert ("failed", "ready") in transitions
        await client.aclose()


async def test_after_runs_in_order_and_skips_on_failure(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        first = await client.call(
            "job.submit", {"job": {"argv": ["sh", "-c", f"sleep 0.5; echo a >> {ledger}"]}}
        )
        second = await client.call(
            "job.submit",
            {"job": {"argv": ["sh", "-c", f"echo b >> {ledger}"], "after": [first["id"]]}},
        )
        bad = await client.call("job.submit", {"job": {"argv": ["false"]}})
        child = await client.call("job.submit", {"job": {"argv": ["true"], "after": [bad["id"]]}})
        jobs = await wait_terminal(client, [first["id"], second["id"], bad["id"], child["id"]])
        assert ledger.read_text() == "a\nb\n"
        assert jobs[child["id"]]["state"] == "skipped"
        # retrying the failed parent re-arms the skipped child
        await client.call("job.retry", {"id": bad["id"]})
        again = await client.call("job.get", {"id": child["id"]})
        assert again["state"] == "pending"
        await client.aclose()


def _proc_start(pid: int) -> str | None:
    """The process's start time (/proc/PID/stat field 22), or None once it is gone or a
    zombie: with the start time a reused pid is not taken for the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return None if fields[0] in ("Z", "X") else fields[19]


async def test_cancel_running_kills_process_group(tmp_path: Path) -> None:
    marker, pid_file = tmp_path / "grandchild-alive", tmp_path / "grandchild.pid"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        # the grandchild says who it is, then sleeps far longer than any cancel can take
        tell = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}"
        script = f"sh -c '{tell}; sleep 20; touch {marker}' & sleep 60"
        res = await client.call("job.submit", {"job": {"argv": ["sh", "-c", script]}})
        deadline = time.monotonic() + 30
        while True:
            job = await client.call("job.get", {"id": res["id"]})
            if job["state"] == "running" and pid_file.exists():
                break
            assert time.monotonic() < deadline, (job["state"], pid_file.exists())
            await anyio.sleep(0.1)
        pid = int(pid_file.read_text())
        started = _proc_start(pid)
        assert started is not None, "the grandchild is not running"
        out = await client.call("job.cancel", {"id": res["id"]})
        assert out["jobs"][0]["state"] == "cancelled"
        with pytest.raises(RpcError) as err:
            await client.call("job.cancel", {"id": res["id"]})
        assert err.value.code == -32002
        # wait for the grandchild itself, not for a time; had the cancel missed it, it would
        # outlive the deadline or wake after 20 s and touch the marker: both fail
        deadline = time.monotonic() + 30
        while _proc_start(pid) == started:
            assert time.monotonic() < deadline, "the job's process group outlived the cancel"
            await anyio.sleep(0.1)
        assert not marker.exists(), "the job's process group outlived the cancel"
        await client.aclose()
