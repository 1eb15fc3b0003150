"""DESIGN.md invariants 2, 5 and 6 against fake batch heads over SSH."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from schedulerd.daemon import create_driver
from schedulerd.state.models import JobSpec, NewJob
from schedulerd.state.store import open_store
from schedulerd.state.transitions import State
from schedulerd.worker.jobs import job_request
from tests.fakebatch.core import FakeHead
from tests.harness import running_daemon, wait_terminal
from tests.helpers.fake_cluster import SYSTEMS, USER, cluster_settings, fake_cluster, submit
from tests.sshserver import running_ssh_server


@pytest.mark.parametrize("system", SYSTEMS)
async def test_crash_while_submitting_adopts_or_resubmits_by_name(
    tmp_path: Path, system: str
) -> None:
    """Invariant 2: a job left `submitting` by a crash is adopted if the head has it
    (found by its batch name) and submitted again only if it does not."""
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        settings = cluster_settings(tmp_path, system, server)
        # The state a crash leaves: both jobs have their submit intent committed; the
        # submit command of the first one ran on the head, the second one's never did.
        store = await open_store(settings.database_path)
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            spec = JobSpec(argv=("sh", "-c", "echo ran >> ran.log"))
            await store.create_jobs([
                NewJob(name="a", cluster="head", workdir=str(tmp_path / "remote" / "{id}"), spec=spec),
                NewJob(name="b", cluster="head", workdir=str(tmp_path / "remote" / "{id}"), spec=spec),
            ])  # fmt: skip
            claimed = await store.claim_for_submit("head", slots=10)
            assert [j.state for j in claimed] == [State.SUBMITTING] * 2
            driver = create_driver(settings.clusters["head"])
            (result,) = await driver.submit([job_request(claimed[0])])
            assert result.native_id
            await driver.aclose()
            await store.close()
        await store.aclose_connections()

        async with running_daemon(settings) as d:
            client = await d.client()
            jobs = await wait_terminal(client, [1, 2], timeout=60)
            events = (await client.call("events.list", {"ids": [1, 2]}))["events"]
            await client.aclose()
    assert {j["state"] for j in jobs.values()} == {"completed"}
    # found in the queue by name, or (already finished and gone) by its exit file
    assert jobs[1]["native_id"] in (result.native_id, "?sd-1-1")
    adopted = [e for e in events if e["job_id"] == 1 and e["from"] == "submitting"]
    assert adopted[0]["to"] == "queued" and "adopted" in adopted[0]["reason"]
    names = sorted(j["name"] for j in head.jobs())
    assert names == ["sd-1-1", "sd-2-1"]  # each exactly once
    for jid in (1, 2):
        assert (tmp_path / "remote" / str(jid) / "ran.log").read_text() == "ran\n"


@pytest.mark.parametrize("system", ["slurm", "pbspro"])
async def test_limit_counts_foreign_jobs_at_every_instant(tmp_path: Path, system: str) -> None:
    """Invariant 5: max_jobs counts all of the user's jobs on the head, including two
    this daemon did not submit; at no instant are more than max_jobs there."""
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=100)
    foreign_script = tmp_path / "foreign.sh"
    foreign_script.write_text("#!/bin/sh\nsleep 30\n")
    with head.transaction() as state:
        for n in range(2):
            fmt = "{seq}.{server}" if system == "pbspro" else "{seq}"
            head.add_job(
                state, fmt, name=f"theirs{n}", script=str(foreign_script), workdir=str(tmp_path)
            )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        settings = cluster_settings(tmp_path, system, server, max_jobs=4)
        async with running_daemon(settings) as d:
            client = await d.client()
            ids = [await submit(client, ["sleep", "1"]) for _ in range(8)]
            peak = 0
            deadline = time.monotonic() + 90
            while True:
                on_head = [j for j in head.jobs() if j["state"] in ("queued", "running", "held")]
                peak = max(peak, len(on_head))
                assert len(on_head) <= 4, [(j["name"], j["state"]) for j in on_head]
                states = [(await client.call("job.get", {"id": i}))["state"] for i in ids]
                if all(s == "completed" for s in states):
                    break
                assert time.monotonic() < deadline, states
                await anyio.sleep(0.05)
            await client.aclose()
    assert peak == 4  # two of theirs and at most two of ours


@pytest.mark.parametrize("system", SYSTEMS)
async def test_no_job_field_can_inject_shell_code(tmp_path: Path, system: str) -> None:
    """Invariant 6: hostile argv and env travel to the head as data."""
    pwned = tmp_path / "PWNED"
    hostile = [
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"; touch {pwned}",
        "it's",
        '"q"',
        "a\nb",
        "\\",
    ]
    async with fake_cluster(tmp_path, system) as c:
        jid = await submit(
            c.client,
            [
                "sh",
                "-c",
                'for a in "$@"; do printf "<%s>" "$a"; done; printf "[%s]" "$EVIL"',
                "sh",
                *hostile,
            ],
            env={"EVIL": f"'$(touch {pwned})'\"; touch {pwned}"},
        )
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "completed", job
        out = Path(job["stdout"]).read_text()
    assert not pwned.exists()
    assert out == "".join(f"<{a}>" for a in hostile) + f"['$(touch {pwned})'\"; touch {pwned}]"
