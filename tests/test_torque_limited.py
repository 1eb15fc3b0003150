"""A Torque-compatible head whose qstat has no -x (XML) and no --version and shows
finished jobs as C without exit_status: the daemon detects it and polls with qstat -f."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from tests.fakebatch.core import FakeHead
from tests.harness import running_daemon, wait_terminal
from tests.helpers.fake_cluster import USER, cluster_settings, submit, wait_state
from tests.sshserver import running_ssh_server


async def test_jobs_on_a_limited_torque_head_reach_their_final_state(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    # finished jobs stay in the queue (as C, without exit_status) for a minute
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor="torque", user=USER,
                           qstat_limited=True, keep_finished_in_queue=60)  # fmt: skip
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        async with running_daemon(cluster_settings(tmp_path, "torque", server)) as daemon:
            client = await daemon.client()
            try:
                report = await client.call("clusters.check", {"name": "head"})
                assert report["ok"], report
                checks = {c["name"]: c for c in report["checks"]}
                assert "version unknown" in checks["version"]["detail"]
                assert "qstat -f" in checks["status format"]["detail"]
                ok = await submit(client, ["sh", "-c", "echo out"])
                bad = await submit(client, ["sh", "-c", "exit 7"])
                await wait_state(client, ok, {"queued", "running", "completed"})
                jobs = await wait_terminal(client, [ok, bad], timeout=60)
            finally:
                await client.aclose()
    assert (jobs[ok]["state"], jobs[ok]["exit_code"]) == ("completed", 0)
    assert (jobs[bad]["state"], jobs[bad]["exit_code"]) == ("failed", 7)
    assert await anyio.Path(jobs[ok]["stdout"]).read_text() == "out\n"
    # decided by the exit files while the head still listed both jobs as C
    assert all(job["state"] == "done" and not job["forgotten"] for job in head.jobs())
    qstats = [call for call in head.calls() if call[0] == "qstat"]
    assert ["qstat", "-f"] in [call[:2] for call in qstats]
    # -x only in the probe (qstat -x 0), never again in a poll
    assert all(call == ["qstat", "-x", "0"] for call in qstats if "-x" in call)
