"""Staging: input files up into the job's workdir, output patterns back, per job.

Through the local cluster (LocalTransport copies) and through a fake Slurm head over a
real SSH connection (SFTP), plus the pure helpers of schedulerd.drivers.staging.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd.client import RpcError
from schedulerd.drivers import staging
from tests.fakebatch.core import gated
from tests.harness import local_settings, running_daemon, wait_terminal
from tests.helpers.fake_cluster import fake_cluster

INVALID_SPEC = -32010
MAKE_OUTPUTS = (
    "cat input.txt > copy.txt; echo one > a.dat; echo two > b.dat; echo no > c.txt;"
    " mkdir -p sub; echo three > sub/d.dat"
)


def result_of(settings: Any, jid: int) -> Any:
    """The job's ``result`` column (not on the wire yet): what staging recorded."""
    with contextlib.closing(
        sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True)
    ) as db:
        (raw,) = db.execute("SELECT result FROM jobs WHERE id = ?", (jid,)).fetchone()
    return None if raw is None else json.loads(raw)


# --- pure helpers -----------------------------------------------------------------------------


def test_input_paths_are_checked() -> None:
    assert staging.validate_inputs(["/a/x.txt", "/b/y.txt"]) == ["/a/x.txt", "/b/y.txt"]
    for bad in (
        ["x.txt"],
        ["./x"],
        ["/a/x", "/b/x"],
        ["/a/.schedulerd"],
        ["/a/"],
        ["/a/x\ny"],
        [""],
    ):
        with pytest.raises(ValueError):
            staging.validate_inputs(bad)
    assert staging.input_remote_paths("/w/5", ["/data/in put.txt"]) == [
        ("/data/in put.txt", "/w/5/in put.txt")
    ]


def test_output_patterns_are_checked() -> None:
    ok = ["*.dat", "sub/*.dat", "$(touch x)", ";rm -rf y", "a b", "-f"]
    assert staging.validate_output_patterns(ok) == ok
    for bad in (["/etc/passwd"], ["../x"], ["a/../../x"], ["~/x"], [""], ["a\nb"], ["*", "*"]):
        with pytest.raises(ValueError):
            staging.validate_output_patterns(bad)


def _listing(*records: tuple[str, str], root: str = "/w") -> str:
    return f"W{root}\0" + "".join(f"F{name}\0{physical}\0" for name, physical in records)


def names_of(listing: staging.OutputListing) -> list[str]:
    return [name for name, _ in listing.files]


def test_listing_names_never_leave_the_folder() -> None:
    names = ["a.dat", "./b.dat", "../up", "/abs", "sub/../../x", "sub//c", "a.dat"]
    listing = staging.parse_output_listing(_listing(*((n, f"/w/{n}") for n in names)))
    assert listing.files == [("a.dat", "/w/a.dat"), ("b.dat", "/w/./b.dat"), ("sub/c", "/w/sub//c")]
    assert listing.refused == []


def test_listing_refuses_what_leads_outside_the_workdir() -> None:
    listing = staging.parse_output_listing(_listing(
        ("in.dat", "/w/in.dat"), ("alias.dat", "/w/sub/real.dat"), ("key.dat", "/home/a/.ssh/id"),
        ("near.dat", "/w2/x"), ("dangling.dat", ""), ("up.dat", "/w/../etc/passwd")))  # fmt: skip
    assert listing.files == [("in.dat", "/w/in.dat"), ("alias.dat", "/w/sub/real.dat")]
    assert [r.split(":")[0] for r in listing.refused] == [
        "key.dat",
        "near.dat",
        "dangling.dat",
        "up.dat",
    ]
    assert "outside the job's workdir (to /home/a/.ssh/id)" in listing.refused[0]
    # no root record: nothing can be checked, so nothing is copied
    assert staging.parse_output_listing("Fa.dat\0/w/a.dat\0").files == []


@pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
def test_listing_command_only_globs(tmp_path: Path, shell: str) -> None:
    """Patterns meet the shell's globbing and nothing else: no command substitution,
    no word splitting, no ``;``, no escape through ``.*`` matching ``..``."""
    if subprocess.run(
        ["sh", "-c", f"command -v {shell}"], capture_output=True, check=False
    ).returncode:
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
    listing = staging.parse_output_listing(proc.stdout)
    assert names_of(listing) == ["a.dat", "sp ace.dat", "sub/c.dat"] and not listing.refused
    assert not marker.exists()


@pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
def test_listing_command_resolves_symlinks(tmp_path: Path, shell: str) -> None:
    if subprocess.run(
        ["sh", "-c", f"command -v {shell}"], capture_output=True, check=False
    ).returncode:
        pytest.skip(f"no {shell}")
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.dat").write_text("secret")
    (work / "sub" / "real.dat").write_text("real")
    (work / "plain.dat").write_text("plain")
    (work / "alias.dat").symlink_to("sub/real.dat")  # stays inside: copied
    (work / "leak.dat").symlink_to(outside / "secret.dat")  # leads out: refused
    (work / "gone.dat").symlink_to(tmp_path / "missing")  # no file: not listed at all
    (work / "linked").symlink_to(outside)  # a folder that leads out
    argv = shlex.split(staging.list_outputs_command(str(work), ["*.dat", "linked/*.dat", "sub/*"]))
    argv[0] = shell
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    listing = staging.parse_output_listing(proc.stdout)
    real = work.resolve()
    assert listing.files == [("alias.dat", str(real / "sub/real.dat")),
                             ("plain.dat", str(real / "plain.dat")),
                             ("sub/real.dat", str(real / "sub/real.dat"))]  # fmt: skip
    assert [r.split(":")[0] for r in listing.refused] == ["leak.dat", "linked/secret.dat"]


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


async def test_unreachable_head_during_stage_in_keeps_job_submitting_then_retries(
    tmp_path: Path,
) -> None:
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
        job = (await wait_terminal(c.client, [jid], timeout=max(1.0, deadline - time.monotonic())))[
            jid
        ]
        assert job["state"] == "completed" and job["attempt"] == 1
        assert await anyio.Path(job["stdout"]).read_text() == "late\n"
        assert [j["name"] for j in c.head.jobs()] == [f"sd-{jid}-1"]


# --- permissions are never widened ---------------------------------------------------------

LEAKY_OUTPUTS = (
    "umask 022; echo mine > private.dat; chmod 600 private.dat; echo open > open.dat;"
    " ln -s private.dat alias.dat; ln -s {secret} leak.dat; mkdir -p sub; ln -s {outside} linked"
)


@pytest.fixture
def open_umask() -> Any:
    """The usual umask 022, so a copy made with default permissions would be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _private_input(tmp_path: Path) -> Path:
    source = tmp_path / "data" / "input.txt"
    source.parent.mkdir()
    source.write_text("only mine\n")
    source.chmod(0o600)
    return source


def _outside(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "secret.dat"
    secret.write_text("not for the outputs\n")
    secret.chmod(0o600)
    return outside, secret


def _check_fetched(fetched: Path, result: dict[str, Any]) -> None:
    assert sorted(result["files"]) == ["alias.dat", "open.dat", "private.dat"], result
    assert sorted(e.split(":")[0] for e in result["errors"]) == ["leak.dat", "linked/secret.dat"]
    assert (fetched / "private.dat").read_text() == "mine\n"
    assert mode(fetched / "private.dat") == 0o600  # not 0644
    assert (fetched / "alias.dat").read_text() == "mine\n" and mode(fetched / "alias.dat") == 0o600
    assert mode(fetched / "open.dat") == 0o644
    assert not (fetched / "leak.dat").exists() and not (fetched / "linked").exists()
    assert mode(fetched) == 0o700 and mode(fetched.parent) == 0o700


async def test_local_staging_keeps_modes_and_refuses_links_out(
    tmp_path: Path, open_umask: Any
) -> None:
    source = _private_input(tmp_path)
    outside, secret = _outside(tmp_path)
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        res = await client.call("job.submit", {"job": {
            "argv": ["sh", "-c", LEAKY_OUTPUTS.format(secret=secret, outside=outside)],
            "inputs": [str(source)], "outputs": ["*.dat", "linked/*.dat"]}})  # fmt: skip
        jid = res["id"]
        job = (await wait_terminal(client, [jid]))[jid]
        await client.aclose()
    assert job["state"] == "completed", job
    staged = Path(job["workdir"]) / "input.txt"
    assert staged.read_text() == "only mine\n" and mode(staged) == 0o600
    assert mode(Path(job["workdir"])) == 0o700
    fetched = settings.state_dir / "outputs" / str(jid) / "1"
    _check_fetched(fetched, result_of(settings, jid)["outputs"])


async def test_ssh_staging_keeps_modes_and_refuses_links_out(
    tmp_path: Path, open_umask: Any
) -> None:
    source = _private_input(tmp_path)
    outside, secret = _outside(tmp_path)
    async with fake_cluster(tmp_path, "slurm") as c:
        res = await c.client.call("job.submit", {"job": {
            "argv": ["sh", "-c", LEAKY_OUTPUTS.format(secret=secret, outside=outside)],
            "inputs": [str(source)], "outputs": ["*.dat", "linked/*.dat"]}})  # fmt: skip
        plain = await c.client.call("job.submit", {"job": {"argv": ["true"]}})
        jid = res["id"]
        jobs = await wait_terminal(c.client, [jid, plain["id"]], timeout=60)
        settings = c.daemon.settings
    job = jobs[jid]
    assert job["state"] == "completed", job
    staged = Path(job["workdir"]) / "input.txt"
    assert staged.read_text() == "only mine\n" and mode(staged) == 0o600
    for each in jobs.values():  # created by the upload, or by the submit program
        workdir = Path(each["workdir"])
        assert mode(workdir) == 0o700 and mode(workdir / ".schedulerd") == 0o700, each
    fetched = settings.state_dir / "outputs" / str(jid) / "1"
    _check_fetched(fetched, result_of(settings, jid)["outputs"])
