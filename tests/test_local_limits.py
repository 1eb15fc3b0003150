"""The ``local`` cluster's limits: walltime (TERM, KILL after a grace period, state
``timeout``, kept while the daemon is down) and cpus counted as slots."""

from __future__ import annotations

import shlex
import stat
import time
from pathlib import Path
from typing import Any

import anyio

from schedulerd.client import AsyncClient
from schedulerd.drivers.api import ActiveJob
from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.local import LocalDriver
from tests.harness import local_settings, running_daemon, wait_terminal

DEADLINE = 30.0  # generous: the machine is shared and busy


def _proc_start(pid: int) -> str | None:
    """The process's start time (/proc/PID/stat field 22), or None once it is gone or a
    zombie: with the start time a reused pid is not taken for the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _telling(pid_file: Path, body: str) -> list[str]:
    """A job whose ``sleep`` child (started in the background, so it is a second process
    of the job's group) writes its pid to ``pid_file``, then ``body`` runs."""
    q = shlex.quote(str(pid_file))
    return ["sh", "-c", f"sleep 300 & echo $! > {q}.tmp && mv {q}.tmp {q}; {body}"]


async def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await anyio.Path(path).exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await anyio.sleep(0.05)


async def _wait_gone(pid: int, started: str | None) -> None:
    deadline = time.monotonic() + DEADLINE
    while started is not None and _proc_start(pid) == started:
        assert time.monotonic() < deadline, f"process {pid} of the job outlived its walltime"
        await anyio.sleep(0.1)


async def _wait_state(client: AsyncClient, jid: int, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        job: dict[str, Any] = await client.call("job.get", {"id": jid})
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, f"job {jid} is {job['state']}, never {state}"
        await anyio.sleep(0.05)


# --- walltime ----------------------------------------------------------------------------


async def test_walltime_ends_job_timeout_and_its_whole_group(tmp_path: Path) -> None:
    """`--walltime 2s -- sleep 300` ends `timeout` long before the sleep would, and no
    process of the job is left."""
    pid_file = tmp_path / "child.pid"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        argv = _telling(pid_file, "wait")
        jid = (await client.call("job.submit", {"job": {"argv": argv, "walltime": "2s"}}))["id"]
        await _wait_for_file(pid_file)
        child = int(pid_file.read_text())
        started = _proc_start(child)
        job = (await wait_terminal(client, [jid], timeout=DEADLINE))[jid]
        assert job["state"] == "timeout", job
        assert job["exit_code"] == 143  # the wrapper recorded the TERM
        assert "walltime of 2s exceeded" in (job["reason"] or "")
        await _wait_gone(child, started)
        assert "walltime of 2s exceeded" in await anyio.Path(job["stderr"]).read_text()
        await client.aclose()


async def test_walltime_timeout_is_retried_while_attempts_remain(tmp_path: Path) -> None:
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        spec = {"argv": ["sleep", "300"], "walltime": 1, "retries": 1}
        jid = (await client.call("job.submit", {"job": spec}))["id"]
        job = (await wait_terminal(client, [jid], timeout=2 * DEADLINE))[jid]
        assert job["state"] == "timeout" and job["attempt"] == 2, job
        events = (await client.call("events.list", {"ids": [jid]}))["events"]
        moves = [(e["from"], e["to"]) for e in events]
        assert [to for _, to in moves].count("timeout") == 2, moves
        assert ("timeout", "ready") in moves
        await client.aclose()


async def test_job_without_walltime_is_not_limited(tmp_path: Path) -> None:
    """The supervisor only comes with a walltime; a job that ends by itself before its
    walltime ends `completed`."""
    gate = tmp_path / "gate"
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        wait_gate = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"
        free = (await client.call("job.submit", {"job": {"argv": ["sh", "-c", wait_gate]}}))["id"]
        quick = (await client.call("job.submit", {"job": {"argv": ["true"], "walltime": "1h"}}))[
            "id"
        ]
        done = (await wait_terminal(client, [quick], timeout=DEADLINE))[quick]
        assert done["state"] == "completed" and done["exit_code"] == 0
        assert (await client.call("job.get", {"id": free}))["state"] == "running"
        gate.touch()
        done = (await wait_terminal(client, [free], timeout=DEADLINE))[free]
        assert done["state"] == "completed"
        await client.aclose()


async def _poll_until_done(driver: LocalDriver, job: JobRequest, native_id: str) -> Observation:
    active = [ActiveJob(job_id=job.job_id, native_id=native_id, request=job, submitted_at=0.0)]
    deadline = time.monotonic() + DEADLINE
    while True:
        obs = (await driver.poll(active)).observations.get(native_id)
        if obs is not None and obs.phase is not Phase.RUNNING:
            return obs
        assert time.monotonic() < deadline, f"still {obs} after {DEADLINE}s"
        await anyio.sleep(0.1)


async def test_job_ignoring_term_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    driver = LocalDriver(exit_read_timeout=5.0, walltime_grace=1.0)
    job = JobRequest(
        job_id=1,
        attempt=1,
        name="sd-1-1",
        argv=("sh", "-c", f"trap '' TERM; {shlex.join(_telling(pid_file, 'wait'))}"),
        workdir=str(tmp_path / "job"),
        walltime_s=1,
    )
    await anyio.Path(job.workdir).mkdir()
    [result] = await driver.submit([job])
    assert result.native_id is not None, result
    await _wait_for_file(pid_file)
    child = int(pid_file.read_text())
    started = _proc_start(child)
    obs = await _poll_until_done(driver, job, result.native_id)
    assert obs.phase is Phase.TIMEOUT, obs
    assert obs.exit_code == 137, obs  # KILLed: the supervisor wrote the exit file
    assert "signal KILL" in (obs.reason or "")
    await _wait_gone(child, started)
    assert "sending KILL" in await anyio.Path(job.stderr_path).read_text()


async def test_walltime_is_enforced_while_the_daemon_is_down(tmp_path: Path) -> None:
    """The limit does not depend on the daemon: the job is ended at its walltime while no
    daemon runs, and the next daemon finds it `timeout`."""
    settings = local_settings(tmp_path)
    pid_file = tmp_path / "child.pid"
    async with running_daemon(settings) as d:
        client = await d.client()
        argv = _telling(pid_file, "wait")
        jid = (await client.call("job.submit", {"job": {"argv": argv, "walltime": "3s"}}))["id"]
        await _wait_state(client, jid, "running")
        await _wait_for_file(pid_file)
        await client.aclose()
    child = int(pid_file.read_text())
    await _wait_gone(child, _proc_start(child))
    async with running_daemon(settings) as d:
        client = await d.client()
        job = (await wait_terminal(client, [jid], timeout=DEADLINE))[jid]
        assert job["state"] == "timeout", job
        assert "walltime of 3s exceeded" in (job["reason"] or "")
        await client.aclose()


# --- cpus take slots ---------------------------------------------------------------------


def _ledger_job(ledger: Path, tag: str, gate: Path | None = None) -> list[str]:
    """A job that appends "<tag> start" and "<tag> end" to ``ledger`` (and waits for
    ``gate`` in between, if given)."""
    q = shlex.quote
    wait = f"while [ ! -e {q(str(gate))} ]; do sleep 0.05; done; " if gate else ""
    script = f"echo {tag} start >> {q(str(ledger))}; {wait}echo {tag} end >> {q(str(ledger))}"
    return ["sh", "-c", script]


def _never_overlap(lines: list[str], tags: set[str]) -> None:
    running: set[str] = set()
    for line in lines:
        tag, what = line.split()
        if what == "start":
            assert not running, f"{tag} started while {running} ran: {lines}"
            running.add(tag)
        else:
            running.discard(tag)
    assert {line.split()[0] for line in lines} == tags


async def test_cpus_take_slots_on_local(tmp_path: Path) -> None:
    """On a 2-slot cluster a cpus=2 job runs alone: the 1-cpu job behind it stays
    `ready` while it runs (both were considered in the same claim), then runs."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    async with running_daemon(local_settings(tmp_path, slots=2)) as d:
        client = await d.client()
        jobs = [
            {"argv": _ledger_job(ledger, "wide", gate), "cpus": 2},
            {"argv": _ledger_job(ledger, "narrow")},
        ]
        wide, narrow = (await client.call("job.submit", {"jobs": jobs}))["ids"]
        await _wait_state(client, wide, "running")
        assert (await client.call("job.get", {"id": narrow}))["state"] == "ready"
        gate.touch()
        done = await wait_terminal(client, [wide, narrow], timeout=DEADLINE)
        assert {j["state"] for j in done.values()} == {"completed"}
        _never_overlap((await anyio.Path(ledger).read_text()).split("\n")[:-1], {"wide", "narrow"})
        await client.aclose()


async def test_wide_job_waits_for_its_slots_and_is_not_overtaken(tmp_path: Path) -> None:
    """1-cpu job running on a 2-slot cluster: the cpus=2 job behind it waits, and a
    1-cpu job after that does not overtake it (it would fit in the free slot)."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    async with running_daemon(local_settings(tmp_path, slots=2)) as d:
        client = await d.client()
        jobs = [
            {"argv": _ledger_job(ledger, "first", gate)},
            {"argv": _ledger_job(ledger, "wide"), "cpus": 2},
            {"argv": _ledger_job(ledger, "last")},
        ]
        first, wide, last = (await client.call("job.submit", {"jobs": jobs}))["ids"]
        await _wait_state(client, first, "running")
        for jid in (wide, last):
            assert (await client.call("job.get", {"id": jid}))["state"] == "ready"
        gate.touch()
        done = await wait_terminal(client, [first, wide, last], timeout=DEADLINE)
        assert {j["state"] for j in done.values()} == {"completed"}
        lines = (await anyio.Path(ledger).read_text()).split("\n")[:-1]
        assert lines.index("wide start") > lines.index("first end"), lines
        assert lines.index("last start") > lines.index("wide start"), lines
        await client.aclose()


async def test_job_wider_than_the_cluster_fails_and_does_not_block(tmp_path: Path) -> None:
    """A cpus=3 job already in the database (accepted on 4 slots; the cluster has 2 now)
    fails with a clear reason, and the job behind it runs."""
    ledger = tmp_path / "ledger"
    async with running_daemon(local_settings(tmp_path, slots=4)) as d:
        client = await d.client()
        await client.call("clusters.drain", {"name": "local"})
        jobs = [{"argv": ["true"], "cpus": 3}, {"argv": _ledger_job(ledger, "behind")}]
        wide, behind = (await client.call("job.submit", {"jobs": jobs}))["ids"]
        await client.aclose()
    async with running_daemon(local_settings(tmp_path, slots=2)) as d:
        client = await d.client()
        await client.call("clusters.resume", {"name": "local"})
        done = await wait_terminal(client, [wide, behind], timeout=DEADLINE)
        assert done[behind]["state"] == "completed"
        assert done[wide]["state"] == "failed", done[wide]
        assert "asks for 3 cpus" in done[wide]["reason"] and "2 slots" in done[wide]["reason"]
        await client.aclose()


async def test_a_local_jobs_folders_are_its_owners_only(tmp_path: Path) -> None:
    """The workdir and .schedulerd of a local job were made with the default umask
    (world-readable job scripts and outputs); the batch drivers make theirs 0700."""
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            jid = (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"]
            job = (await wait_terminal(client, [jid]))[jid]
        finally:
            await client.aclose()
    workdir = Path(job["workdir"])
    for folder in (workdir, workdir / ".schedulerd"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
