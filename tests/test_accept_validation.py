"""The head side of a job: what job.submit accepts, and how one submit round treats each job.

Invariant 7 says a job that can never be submitted is refused at ``job.submit`` with a
clear error; what slips through (a directory the head cannot create) fails that job alone,
never its neighbours in the same submit round.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schedulerd.daemon import create_dialect
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.batch import BatchDriver, parse_submit_program_output, render_submit_program
from schedulerd.drivers.ssh import SSHTransport
from schedulerd.errors import InvalidSpec
from schedulerd.protocol import ClusterView, JobSpecIn, build_new_jobs
from tests.fakebatch.core import FakeHead
from tests.sshserver import SSHTestServer, running_ssh_server

SYSTEMS = ["pbspro", "torque", "lsf", "htcondor", "slurm"]
USER = getpass.getuser()


def request(job_id: int, workdir: str, *argv: str) -> JobRequest:
    return JobRequest(job_id=job_id, attempt=1, name=f"sd-{job_id}-1", argv=argv or ("true",),
                      workdir=workdir)  # fmt: skip


@contextlib.asynccontextmanager
async def head_driver(tmp_path: Path, system: str) -> AsyncIterator[tuple[BatchDriver, FakeHead, SSHTestServer]]:
    """A BatchDriver talking to a fake head of ``system`` through the in-process SSH server."""
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=0)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        driver = BatchDriver(create_dialect(system), SSHTransport(server.options(max_channels=2)),
                             user=USER, command_timeout=60.0, workdir=str(tmp_path / "remote"))  # fmt: skip
        try:
            yield driver, head, server
        finally:
            await driver.aclose()


def views(**extra: Any) -> dict[str, ClusterView]:
    return {"head": ClusterView(name="head", workdir="/scratch/sd", default_queue=None, is_local=False, **extra)}


def accept(cluster: dict[str, ClusterView] | None = None, **fields: Any) -> dict[str, Any]:
    """The stored payload of one job, or InvalidSpec."""
    spec = JobSpecIn(argv=fields.pop("argv", ["true"]), **fields)
    rows, _ = build_new_jobs([spec], cluster or views(), "head")
    return {"workdir": rows[0].workdir, **rows[0].spec}


# --- item: workdirs that the head's commands would read as options ----------------------------


@pytest.mark.parametrize("workdir", ["-m777", "-rf", "runs/-x/1", "/scratch/-m777/{id}"])
def test_workdir_with_a_component_starting_with_dash_is_refused(workdir: str) -> None:
    with pytest.raises(InvalidSpec, match=r"jobs\[0\]: workdir .*starting with '-'"):
        accept(workdir=workdir)


@pytest.mark.parametrize("workdir", ["/scratch/a\rb", "/scratch/a\tb", "/x\x7f"])
def test_workdir_with_control_characters_is_refused(workdir: str) -> None:
    with pytest.raises(InvalidSpec, match=r"jobs\[0\]: workdir .*control characters"):
        accept(workdir=workdir)


def test_submit_program_never_reads_a_path_as_an_option(tmp_path: Path) -> None:
    """A relative workdir "-m777" made ``mkdir -p -m777 ...`` take it for a mode, create
    nothing, and fail every job of the round; with ``--`` the other job is submitted."""
    bin_dir = tmp_path / "bin"
    FakeHead.create(tmp_path / "head", bin_dir, flavor="slurm", user=USER, slots=0)
    home = tmp_path / "home"
    home.mkdir()
    dialect = create_dialect("slurm")
    jobs = [request(1, "-m777"), request(2, str(tmp_path / "good"))]
    proc = subprocess.run(["sh", "-s"], input=render_submit_program(dialect, jobs), cwd=home,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    sections = parse_submit_program_output(proc.stdout, len(jobs))
    status, out, err = sections[1]
    assert status == 0, err
    assert dialect.parse_submit(out, err, status).isdigit()
    assert (home / "-m777" / ".schedulerd").is_dir()  # created as a directory, not a mode


@pytest.mark.timeout(120)
@pytest.mark.parametrize("system", SYSTEMS)
async def test_one_jobs_unpreparable_workdir_fails_only_that_job(tmp_path: Path, system: str) -> None:
    """A directory the head cannot create (under a regular file: root cannot either) fails
    its own job permanently, with the head's reason; the other job of the round is queued."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "plain-file").write_text("")
    bad = request(1, str(remote / "plain-file" / "1"))
    good = request(2, str(remote / "2"))
    async with head_driver(tmp_path, system) as (driver, head, _server):
        results = await driver.submit([bad, good])
        assert results[1].native_id is not None, results[1]
        assert results[0].native_id is None
        assert results[0].error is not None and results[0].error.startswith("cannot prepare ")
        assert "Not a directory" in results[0].error
        assert results[0].transient is False
        assert [j["name"] for j in head.jobs()] == [good.name]


# --- item: relative and ~/ workdirs on an SSH cluster --------------------------------------


@pytest.mark.parametrize(("given", "stored"), [("adv/run{id}", "adv/run{id}"), ("~/adv/{id}", "adv/{id}"),
                                               ("~", "."), ("/abs/{id}", "/abs/{id}")])  # fmt: skip
def test_workdir_on_an_ssh_cluster_is_kept_relative_to_the_login_directory(given: str, stored: str) -> None:
    assert accept(workdir=given)["workdir"] == stored


def test_workdir_of_another_users_home_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"workdir '~bob/x': only ~ and ~/"):
        accept(workdir="~bob/x")


def test_workdir_on_a_local_cluster_expands_tilde_and_must_be_absolute() -> None:
    local = {"head": ClusterView(name="head", workdir="/tmp/sd", default_queue=None, is_local=True)}
    assert accept(local, workdir="~/runs/{id}")["workdir"] == os.path.expanduser("~/runs/{id}")
    with pytest.raises(InvalidSpec, match="must be an absolute path on a local cluster"):
        accept(local, workdir="runs/{id}")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("system", SYSTEMS)
async def test_relative_and_tilde_workdirs_run_in_the_login_directory(tmp_path: Path, system: str) -> None:
    """``adv/run{id}`` and ``~/tilde/{id}`` both mean a folder in the login directory
    (the SSH server's home here): the job runs there, its exit code comes back, its
    stdout is where job.get says (relative to the login directory)."""
    from tests.harness import wait_terminal
    from tests.test_conformance import fake_cluster, submit

    async with fake_cluster(tmp_path, system) as c:
        rel = await submit(c.client, ["sh", "-c", "pwd; exit 3"], workdir="adv/run{id}")
        tilde = await submit(c.client, ["sh", "-c", "pwd"], workdir="~/tilde/{id}")
        jobs = await wait_terminal(c.client, [rel, tilde], timeout=90)
        home = c.server.home
        assert (jobs[rel]["state"], jobs[rel]["exit_code"]) == ("failed", 3), jobs[rel]
        assert (jobs[tilde]["state"], jobs[tilde]["exit_code"]) == ("completed", 0), jobs[tilde]
        assert jobs[rel]["workdir"] == f"adv/run{rel}"
        assert jobs[tilde]["workdir"] == f"tilde/{tilde}"
        for jid in (rel, tilde):
            out = home / jobs[jid]["stdout"]
            assert Path(out.read_text().strip()).resolve() == (home / jobs[jid]["workdir"]).resolve()
