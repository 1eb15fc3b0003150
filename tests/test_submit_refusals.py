"""A head that refuses every submit for a passing reason is asked again after a pause,
not flooded with the next ready jobs (cluster admins would notice the daemon)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from tests.helpers.fake_cluster import fake_cluster, wait_state


def _submits(calls: list[list[str]]) -> int:
    return sum(1 for argv in calls if argv[:2] == ["sbatch", "--parsable"])


async def test_refusing_head_sees_one_batch_per_pause_and_resume_retries_now(
    tmp_path: Path,
) -> None:
    async with fake_cluster(tmp_path, "slurm", submit_batch=5) as c:
        c.head.set_faults(submit_transient=1000)  # e.g. a QOS submit limit that never lifts
        ids = (await c.client.call("job.submit", {"jobs": [{"argv": ["true"]}] * 20}))["ids"]
        deadline = time.monotonic() + 30
        while _submits(c.head.calls()) < 5:
            assert time.monotonic() < deadline, "nothing was submitted"
            await anyio.sleep(0.1)
        # the loop pauses after the refused round (that nothing is submitted during the
        # pause is tests/test_worker_units.py's, on a fake clock)
        while (status := (await c.client.call("clusters.list"))["clusters"][0])[
            "submit_paused_until"
        ] is None:
            assert time.monotonic() < deadline, "the submit loop did not pause"
            await anyio.sleep(0.1)
        assert _submits(c.head.calls()) == 5
        assert status["submit_paused_until"] > time.time() + 20
        assert "temporarily unavailable" in status["last_refusal"]
        first = await c.client.call("job.get", {"id": ids[0]})
        assert first["state"] == "ready" and first["attempt"] == 1 and "deferred" in first["reason"]

        # the limit lifted; `clusters resume` means "try now"
        c.head.set_faults(submit_transient=0)
        resumed = await c.client.call("clusters.resume", {"name": "head"})
        assert resumed["draining"] is False
        # the 15 jobs never tried go now; the 5 refused ones wait for their not_before
        for jid in ids[5:]:
            await wait_state(c.client, jid, {"queued", "running", "completed"}, timeout=60)
        assert (await c.client.call("job.get", {"id": ids[0]}))["state"] == "ready"
