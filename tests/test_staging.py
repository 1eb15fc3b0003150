"""Staging: input files up into the job's workdir, output patterns back, per job.

Through the local cluster (LocalTransport copies) and through a fake Slurm head over a
real SSH connection (SFTP), plus the pure helpers of schedulerd.drivers.staging.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd.drivers import staging
from tests.fakebatch.core import gated
from tests.harness import RpcError, local_settings, running_daemon, wait_terminal
from tests.test_conformance import fake_cluster

INVALID_SPEC = -32010
MAKE_OUTPUTS = (
    "cat input.txt > copy.txt; echo one > a.dat; echo two > b.dat; echo no > c.txt;"
    " mkdir -p sub; echo three > sub/d.dat"
)


def result_of(settings: Any, jid: int) -> Any:
    """The job's ``result`` column (not on the wire yet): what staging recorded."""
    with contextlib.closing(sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True)) as db:
        (raw,) = db.execute("SELECT result FROM jobs WHERE id = ?", (jid,)).fetchone()
    return None if raw is None else json.loads(raw)


# --- pure helpers -----------------------------------------------------------------------------


def test_input_paths_are_checked() -> None:
    assert staging.validate_inputs(["/a/x.txt", "/b/y.txt"]) == ["/a/x.txt", "/b/y.txt"]
    for bad in (["x.txt"], ["./x"], ["/a/x", "/b/x"], ["/a/.schedulerd"], ["/a/"], ["/a/x\ny"], [""]):
        with pytest.raises(ValueError):
            staging.validate_inputs(bad)
    assert staging.input_remote_paths("/w/5", ["/data/in put.txt"]) == [("/data/in put.txt", "/w/5/in put.txt")]


def test_output_patterns_are_checked() -> None:
    ok = ["*.dat", "sub/*.dat", "$(touch x)", ";rm -rf y", "a b", "-f"]
    assert staging.validate_output_patterns(ok) == ok
    for bad in (["/etc/passwd"], ["../x"], ["a/../../x"], ["~/x"], [""], ["a\nb"], ["*", "*"]):
        with pytest.raises(ValueError):
            staging.validate_output_patterns(bad)


def test_listing_names_never_leave_the_folder() -> None:
    listing = "a.dat\0./b.dat\0../up\0/abs\0sub/../../x\0sub//c\0a.dat\0\0"
    assert staging.parse_output_listing(listing) == ["a.dat", "b.dat", "sub/c"]


@pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
def test_listing_command_only_globs(tmp_path: Path, shell: str) -> None:
    """Patterns meet the shell's globbing and nothing else: no command substitution,
    no word splitting, no ``;``, no escape through ``.*`` matching ``..``."""
    if subprocess.run(["sh", "-c", f"command -v {shell}"], capture_output=True, check=False).returncode:
        pytest.skip(f"no {shell}")
    work = tmp_path / "w d"
    (work / "sub").mkdir(parents=True)
    for name in ("a.dat", "sp ace.dat", "sub/c.dat", "x.txt"):
        (work / name).write_text(name)
    (tmp_path / "outside.dat").write_text("secret")
    marker = tmp_path / "pwned"
    patterns = ["*.dat", "sub/*.dat", f"$(touch {marker})", f"`touch {marker}`", f";touch {marker}",
                "*.dat *.txt", ".*/outside.dat", "sp ace.dat"]  # fmt: skip
    command = staging.list_outputs_command(str(work), patterns)
    argv = shlex.split(command)
    argv[0] = shell
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert staging.parse_output_listing(proc.stdout) == ["a.dat", "sp ace.dat", "sub/c.dat"]
    assert not marker.exists()


# --- local cluster ----------------------------------------------------------------------------


async def test_local_inputs_up_outputs_back(tmp_path: Path) -> None:
    source = tmp_path / "data" / "input.txt"
    source.parent.mkdir()
    source.write_text("payload\n")
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        res = await client.call("job.submit", {"job": {
            "argv": ["sh", "-c", MAKE_OUTPUTS], "inputs": [str(source)],
            "outputs": ["*.dat", "sub/*.dat", "copy.txt"]}})  # fmt: skip
        jid = res["id"]
        job = (await wait_terminal(client, [jid]))[jid]
        assert job["state"] == "completed", job
        assert job["inputs"] == [str(source)]
        assert job["outputs"] == ["*.dat", "sub/*.dat", "copy.txt"]
        assert job["outputs_dir"] == str(settings.state_dir / "outputs" / str(jid))
        assert (Path(job["workdir"]) / "input.txt").read_text() == "payload\n"
        assert (Path(job["workdir"]) / "copy.txt").read_text() == "payload\n"
        fetched = settings.state_dir / "outputs" / str(jid) / "1"
        # fetched before the job is recorded as ended: no waiting needed
        assert sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()) == [
            "a.dat", "b.dat", "copy.txt", "sub/d.dat"]  # fmt: skip
        assert (fetched / "sub" / "d.dat").read_text() == "three\n"
        result = result_of(settings, jid)
        assert result["outputs"]["files"] == ["a.dat", "b.dat", "sub/d.dat", "copy.txt"]
        assert result["outputs"]["attempt"] == 1
        await client.aclose()


async def test_outputs_of_each_attempt_kept_apart(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        res = await client.call("job.submit", {"job": {
            "argv": ["sh", "-c", "echo $SCHEDULERD_ATTEMPT > n.dat; exit 4"],
            "outputs": ["*.dat"], "retries": 1}})  # fmt: skip
        jid = res["id"]
        job = (await wait_terminal(client, [jid], timeout=60))[jid]
        assert job["state"] == "failed" and job["attempt"] == 2
        root = settings.state_dir / "outputs" / str(jid)
        assert (root / "1" / "n.dat").read_text() == "1\n"
        assert (root / "2" / "n.dat").read_text() == "2\n"
        await client.aclose()


async def test_shell_in_patterns_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        patterns = [f"$(touch {marker})", f"`touch {marker}`", f";touch {marker}",
                    f"x; touch {marker}", f"*.dat|touch {marker}", "*.dat"]  # fmt: skip
        res = await client.call("job.submit", {"job": {
            "argv": ["sh", "-c", "echo 1 > a.dat"], "outputs": patterns}})  # fmt: skip
        job = (await wait_terminal(client, [res["id"]]))[res["id"]]
        assert job["state"] == "completed"
        fetched = settings.state_dir / "outputs" / str(res["id"]) / "1"
        assert [p.name for p in fetched.iterdir()] == ["a.dat"]
        assert not marker.exists()
        for bad in (["/etc/passwd"], ["../../x"], ["a/../../../x"]):
            with pytest.raises(RpcError) as err:
                await client.call("job.submit", {"job": {"argv": ["true"], "outputs": bad}})
            assert err.value.code == INVALID_SPEC
        await client.aclose()


async def test_bad_inputs_rejected_and_nothing_created(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "good.txt").write_text("y")
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        cases = [
            ["good.txt"],  # relative
            [str(tmp_path / "missing.txt")],
            [str(other)],  # a directory
            [str(good), str(other / "good.txt")],  # same name twice in the workdir
        ]
        for inputs in cases:
            with pytest.raises(RpcError) as err:
                await client.call("job.submit", {"job": {"argv": ["true"], "inputs": inputs}})
            assert err.value.code == INVALID_SPEC, inputs
            assert "inputs" in err.value.message
        # all or nothing: one bad job in a batch refuses the batch
        with pytest.raises(RpcError) as err:
            await client.call("job.submit", {"jobs": [
                {"argv": ["true"], "inputs": [str(good)]},
                {"argv": ["true"], "inputs": [str(tmp_path / "missing.txt")]}]})  # fmt: skip
        assert err.value.code == INVALID_SPEC
        assert (await client.call("job.list", {}))["jobs"] == []
        jobs_dir = settings.state_dir / "jobs"
        assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []
        await client.aclose()


async def test_input_gone_before_submit_fails_the_job(tmp_path: Path) -> None:
    source, gate = tmp_path / "input.txt", tmp_path / "gate"
    source.write_text("x")
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        # the parent holds the child back until the input is gone, however slow the machine
        parent = await client.call("job.submit", {"job": {"argv": list(gated(gate))}})
        child = await client.call("job.submit", {"job": {
            "argv": ["cat", "input.txt"], "inputs": [str(source)], "after": [parent["id"]]}})  # fmt: skip
        source.unlink()
        gate.touch()
        jobs = await wait_terminal(client, [parent["id"], child["id"]])
        job = jobs[child["id"]]
        assert job["state"] == "failed"
        assert job["native_id"] is None  # never submitted
        assert str(source) in job["reason"] and "does not exist" in job["reason"]
        assert not (Path(job["workdir"]) / "input.txt").exists()
        await client.aclose()


# --- through SSH (SFTP) to a fake Slurm head ---------------------------------------------------


async def test_staging_over_ssh_to_slurm(tmp_path: Path) -> None:
    source = tmp_path / "data" / "input.txt"
    source.parent.mkdir()
    source.write_text("over sftp\n")
    marker = tmp_path / "pwned"
    async with fake_cluster(tmp_path, "slurm") as c:
        res = await c.client.call("job.submit", {"job": {
            "argv": ["sh", "-c", MAKE_OUTPUTS], "inputs": [str(source)],
            "outputs": ["*.dat", "sub/*.dat", f"$(touch {marker})"]}})  # fmt: skip
        jid = res["id"]
        job = (await wait_terminal(c.client, [jid], timeout=60))[jid]
        assert job["state"] == "completed", job
        workdir = Path(job["workdir"])
        assert workdir.is_relative_to(c.workdir)
        assert (workdir / "copy.txt").read_text() == "over sftp\n"
        fetched = c.daemon.settings.state_dir / "outputs" / str(jid) / "1"
        assert job["outputs_dir"] == str(fetched.parent)
        assert sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()) == [
            "a.dat", "b.dat", "sub/d.dat"]  # fmt: skip
        assert (fetched / "a.dat").read_text() == "one\n"
        assert not marker.exists()
        result = result_of(c.daemon.settings, jid)
        assert sorted(result["outputs"]["files"]) == ["a.dat", "b.dat", "sub/d.dat"]


async def test_unreachable_head_during_stage_in_keeps_job_submitting_then_retries(tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("late\n")
    async with fake_cluster(tmp_path, "slurm") as c:
        c.server.pause()
        await c.server.drop_connections()
        res = await c.client.call("job.submit", {"job": {
            "argv": ["cat", "input.txt"], "inputs": [str(source)]}})  # fmt: skip
        jid = res["id"]
        await anyio.sleep(2)
        job = await c.client.call("job.get", {"id": jid})
        assert job["state"] in ("ready", "submitting")
        assert job["attempt"] == 1 and job["native_id"] is None
        c.server.resume()
        deadline = time.monotonic() + 60
        job = (await wait_terminal(c.client, [jid], timeout=max(1.0, deadline - time.monotonic())))[jid]
        assert job["state"] == "completed" and job["attempt"] == 1
        assert await anyio.Path(job["stdout"]).read_text() == "late\n"
        assert [j["name"] for j in c.head.jobs()] == [f"sd-{jid}-1"]
