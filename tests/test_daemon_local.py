"""End to end through the socket with the local driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import RpcError, local_settings, running_daemon, wait_terminal


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
        assert transitions.count(("queued", "failed")) + transitions.count(("running", "failed")) == 2
        assert ("failed", "ready") in transitions
        await client.aclose()


async def test_after_runs_in_order_and_skips_on_failure(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        first = await client.call("job.submit", {"job": {"argv": ["sh", "-c", f"sleep 0.5; echo a >> {ledger}"]}})
        second = await client.call("job.submit", {"job": {"argv": ["sh", "-c", f"echo b >> {ledger}"], "after": [first["id"]]}})
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


async def test_cancel_running_kills_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild-alive"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        script = f"sh -c 'sleep 3; touch {marker}' & sleep 30"
        res = await client.call("job.submit", {"job": {"argv": ["sh", "-c", script]}})
        for _ in range(100):
            job = await client.call("job.get", {"id": res["id"]})
            if job["state"] == "running":
                break
            import anyio

            await anyio.sleep(0.1)
        assert job["state"] == "running"
        out = await client.call("job.cancel", {"id": res["id"]})
        assert out["jobs"][0]["state"] == "cancelled"
        with pytest.raises(RpcError) as err:
            await client.call("job.cancel", {"id": res["id"]})
        assert err.value.code == -32002
        import anyio

        await anyio.sleep(4)
        assert not marker.exists(), "the job's process group outlived the cancel"
        await client.aclose()
