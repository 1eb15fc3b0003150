"""A cluster whose polls keep failing is shown ``degraded`` (clusters, info), logged once
per change, and recovers by itself when the head answers again (issue 6)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from schedulerd.worker.health import DEGRADED_AFTER
from tests.fakebatch.core import gated
from tests.helpers.fake_cluster import fake_cluster, submit, wait_state


def _schedctl(socket: Path, command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "schedulerd.cli", "--socket", str(socket), command],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout


async def _cluster(client: Any) -> dict[str, Any]:
    (status,) = (await client.call("clusters.list"))["clusters"]
    assert isinstance(status, dict)
    return status


@pytest.mark.parametrize("system", ["slurm", "pbspro"])
async def test_failing_polls_make_the_cluster_degraded_then_it_recovers(
    tmp_path: Path, system: str
) -> None:
    gate = tmp_path / "gate"
    with capture_logs() as logs:
        async with fake_cluster(tmp_path, system) as c:
            jid = await submit(c.client, list(gated(gate)))
            await wait_state(c.client, jid, {"running"})
            status = await _cluster(c.client)
            assert status["degraded"] is False and status["degraded_reason"] is None
            c.head.set_faults(down=True)  # every status command fails
            deadline = time.monotonic() + 30
            while not (status := await _cluster(c.client))["degraded"]:
                assert time.monotonic() < deadline, status
                await anyio.sleep(0.1)
            assert status["poll_failures"] >= DEGRADED_AFTER
            assert status["degraded_reason"], status
            info = await c.client.call("daemon.info")
            assert info["clusters"][0]["degraded"] is True
            for command in ("clusters", "info"):  # what an operator reads
                shown = await anyio.to_thread.run_sync(_schedctl, c.daemon.socket, command)
                (row,) = [line for line in shown.splitlines() if line.startswith("head ")]
                assert " degraded " in row and status["degraded_reason"].split()[0] in row, shown
            # a few more failing polls: still one log line about it
            failures = status["poll_failures"]
            deadline = time.monotonic() + 30
            while (await _cluster(c.client))["poll_failures"] < failures + 3:
                assert time.monotonic() < deadline
                await anyio.sleep(0.1)
            job = await c.client.call("job.get", {"id": jid})
            assert job["state"] == "running", "a failing poll decided a job's fate"
            c.head.set_faults(down=False)
            deadline = time.monotonic() + 30
            while (status := await _cluster(c.client))["degraded"]:
                assert time.monotonic() < deadline, status
                await anyio.sleep(0.1)
            assert status["poll_failures"] == 0 and status["degraded_reason"] is None
            gate.touch()
            await wait_state(c.client, jid, {"completed"})
    names = [e["event"] for e in logs if e["event"] in ("cluster_degraded", "cluster_recovered")]
    assert names == ["cluster_degraded", "cluster_recovered"], names
