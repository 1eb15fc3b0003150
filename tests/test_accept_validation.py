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

import msgspec
import pytest

from schedulerd.daemon import create_dialect
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.batch import BatchDriver
from schedulerd.drivers.ssh import SSHTransport
from schedulerd.drivers.submit_program import parse_submit_program_output, render_submit_program
from schedulerd.errors import InvalidSpec
from schedulerd.jobspec import ClusterView, JobSpecIn, build_new_jobs
from tests.fakebatch.core import FakeHead
from tests.sshserver import SSHTestServer, running_ssh_server

SYSTEMS = ["pbspro", "torque", "lsf", "htcondor", "slurm"]
USER = getpass.getuser()


def request(job_id: int, workdir: str, *argv: str) -> JobRequest:
    return JobRequest(job_id=job_id, attempt=1, name=f"sd-{job_id}-1", argv=argv or ("true",),
                      workdir=workdir)  # fmt: skip


@contextlib.asynccontextmanager
async def head_driver(
    tmp_path: Path, system: str
) -> AsyncIterator[tuple[BatchDriver, FakeHead, SSHTestServer]]:
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
    return {
        "head": ClusterView(
            name="head", workdir="/scratch/sd", default_queue=None, is_local=False, **extra
        )
    }


def accept(cluster: dict[str, ClusterView] | None = None, **fields: Any) -> dict[str, Any]:
    """The stored payload of one job (its spec as the column holds it), or InvalidSpec."""
    spec = JobSpecIn(argv=fields.pop("argv", ["true"]), **fields)
    rows, _ = build_new_jobs([spec], cluster or views(), "head")
    return {"workdir": rows[0].workdir, **msgspec.json.decode(msgspec.json.encode(rows[0].spec))}


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
async def test_one_jobs_unpreparable_workdir_fails_only_that_job(
    tmp_path: Path, system: str
) -> None:
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
def test_workdir_on_an_ssh_cluster_is_kept_relative_to_the_login_directory(
    given: str, stored: str
) -> None:
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
async def test_relative_and_tilde_workdirs_run_in_the_login_directory(
    tmp_path: Path, system: str
) -> None:
    """``adv/run{id}`` and ``~/tilde/{id}`` both mean a folder in the login directory
    (the SSH server's home here): the job runs there, its exit code comes back, its
    stdout is where job.get says (relative to the login directory)."""
    from tests.harness import wait_terminal
    from tests.helpers.fake_cluster import fake_cluster, submit

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
            assert (
                printed_dir(home / jobs[jid]["stdout"]) == (home / jobs[jid]["workdir"]).resolve()
            )


def printed_dir(stdout: Path) -> Path:
    return Path(stdout.read_text().strip()).resolve()


# --- item: each batch system's own limits, checked at job.submit --------------------------


def on(scheduler: str, **fields: Any) -> dict[str, Any]:
    return accept(views(scheduler=scheduler), **fields)


@pytest.mark.parametrize(
    ("scheduler", "fields", "message"),
    [
        (
            "pbspro",
            {"workdir": "/scratch/a:b/{id}"},
            "PBS would read the part before ':' as a host",
        ),
        ("torque", {"workdir": "/scratch/a b"}, "invalid stdout path for a #PBS directive"),
        ("slurm", {"workdir": '/scratch/a"b'}, "workdir must not contain a double quote"),
        ("slurm", {"workdir": "/scratch/a\\b"}, "or a backslash"),
        ("htcondor", {"workdir": '/scratch/a"b'}, "workdir must not contain a double quote"),
        ("htcondor", {"workdir": "/scratch/$(Cluster)"}, "submit macro"),
        ("slurm", {"cpus": 65534}, "cpus 65534: Slurm takes 1 to 65533 CPUs per task"),
        (
            "slurm",
            {"walltime": (2**32 - 2) * 60},
            "Slurm's time limit is at most 4294967293 minutes",
        ),
        ("torque", {"cpus": 2**31}, "cpus 2147483648: Torque takes 1 to 2147483647"),
        ("pbspro", {"memory": "9000000000T"}, "more than PBS Pro can hold"),
        ("lsf", {"cpus": 2**31}, "cpus 2147483648: LSF takes 1 to 2147483647 slots"),
        ("lsf", {"walltime": 2**31}, "LSF's run limit is at most 35791394 minutes"),
        ("lsf", {"memory": f"{2**31}M"}, "more than LSF can hold"),
        ("htcondor", {"cpus": 2**31}, "HTCondor slots hold 1 to 2147483647"),
        ("htcondor", {"memory": "3000T"}, "HTCondor slots hold at most 2147483647 MB"),
    ],
)
def test_what_a_batch_system_cannot_carry_is_refused(
    scheduler: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        on(scheduler, **fields)
    assert info.value.message.startswith(f"jobs[0]: cluster head ({scheduler}): ")
    assert message in info.value.message


@pytest.mark.parametrize(
    ("scheduler", "fields"),
    [
        (
            "slurm",
            {"cpus": 65533, "walltime": "30d", "memory": "2T", "workdir": "/scratch/a b/{id}"},
        ),
        ("torque", {"cpus": 2**31 - 1, "memory": "64G"}),
        ("pbspro", {"cpus": 10**6, "walltime": "1000d"}),
        ("lsf", {"cpus": 2**31 - 1, "walltime": 35791394 * 60, "workdir": "/scratch/a b"}),
        ("htcondor", {"cpus": 2**31 - 1, "memory": "1T", "workdir": "/scratch/a b"}),
    ],
)
def test_the_largest_values_a_system_takes_are_accepted(
    scheduler: str, fields: dict[str, Any]
) -> None:
    assert on(scheduler, **fields)["argv"] == ["true"]


def test_the_default_workdir_is_checked_too() -> None:
    pbs = {"head": ClusterView(name="head", workdir="/scratch/with:colon", default_queue=None,
                               is_local=False, scheduler="pbspro")}  # fmt: skip
    with pytest.raises(InvalidSpec, match="PBS would read the part before ':'"):
        accept(pbs)


def test_local_cluster_refuses_more_cpus_than_slots() -> None:
    local = {
        "head": ClusterView(
            name="local", workdir="/tmp/sd", default_queue=None, is_local=True, slots=2
        )
    }
    with pytest.raises(InvalidSpec, match=r"^jobs\[0\]: cpus 99: cluster local has 2 slots$"):
        accept(local, cpus=99)
    assert accept(local, cpus=2)["cpus"] == 2


async def test_local_daemon_refuses_cpus_beyond_its_slots(tmp_path: Path) -> None:
    from schedulerd.client import RpcError
    from tests.harness import local_settings, running_daemon

    async with running_daemon(local_settings(tmp_path, slots=2)) as d:
        c = await d.client()
        try:
            with pytest.raises(RpcError) as info:
                await c.call(
                    "job.submit", {"jobs": [{"argv": ["true"]}, {"argv": ["true"], "cpus": 99}]}
                )
            assert info.value.code == -32010
            assert info.value.message == "jobs[1]: cpus 99: cluster local has 2 slots"
            assert (await c.call("job.list"))["jobs"] == []  # all or nothing
        finally:
            await c.aclose()


# --- item: directives that break "one job, one run" --------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "directive", "named"),
    [
        ("slurm", "--array=1-3", "--array is not allowed"),
        ("slurm", "--array 1-3", "--array is not allowed"),
        ("slurm", "-a1-3", "-a (--array) is not allowed"),
        ("slurm", "-a 1-3", "-a (--array) is not allowed"),
        ("slurm", "#SBATCH --array=1-3", "--array is not allowed"),
        ("slurm", "--arr=1-3", "--array is not allowed"),
        ("slurm", "-Ha1-3", "-a (--array) is not allowed"),
        ("slurm", "--qos=low --array=1-3", "--array is not allowed"),
        ("slurm", "--job-name=x", "--job-name is not allowed"),
        ("slurm", "-J x", "-J (--job-name) is not allowed"),
        ("slurm", "#SBATCH -Jx", "-J (--job-name) is not allowed"),
        ("slurm", "--output=/tmp/o", "--output is not allowed"),
        ("slurm", "-o /tmp/o", "-o (--output) is not allowed"),
        ("slurm", "--error=/tmp/e", "--error is not allowed"),
        ("slurm", "-e /tmp/e", "-e (--error) is not allowed"),
        ("slurm", "--chdir=/tmp", "--chdir is not allowed"),
        ("slurm", "-D /tmp", "-D (--chdir) is not allowed"),
        ("slurm", "--requeue", "--requeue is not allowed: use the requeue field"),
        ("pbspro", "-J 1-3", "-J is not allowed: an array"),
        ("pbspro", "#PBS -J1-3", "-J is not allowed"),
        ("pbspro", "-N name", "-N is not allowed"),
        ("pbspro", "-hN name", "-N is not allowed"),
        ("pbspro", "-o /tmp/o", "-o is not allowed"),
        ("pbspro", "-e /tmp/e", "-e is not allowed"),
        ("pbspro", "-r y", "-r is not allowed: use the requeue field"),
        ("pbspro", "-W block=true", "-W block is not allowed"),
        ("torque", "-t 1-3", "-t is not allowed: an array"),
        ("torque", "#PBS -N x", "-N is not allowed"),
        ("lsf", "-J name", "-J is not allowed"),
        ("lsf", '-J "a[1-3]"', "-J is not allowed"),
        ("lsf", "#BSUB -o out", "-o is not allowed"),
        ("lsf", "-e err", "-e is not allowed"),
        ("lsf", "-oo out", "-oo is not allowed"),
        ("lsf", "-eo err", "-eo is not allowed"),
        ("lsf", "-cwd /tmp", "-cwd is not allowed"),
        ("lsf", "-K", "-K is not allowed"),
        ("lsf", "-Is", "-Is is not allowed"),
        ("htcondor", "queue 3", "queue is not allowed"),
        ("htcondor", "Queue", "queue is not allowed"),
        ("htcondor", "executable = /bin/true", "executable is not allowed"),
        ("htcondor", "log = /tmp/l", "log is not allowed"),
        ("htcondor", "output=/tmp/o", "output is not allowed"),
        ("htcondor", "error = /tmp/e", "error is not allowed"),
        ("htcondor", "initialdir = /tmp", "initialdir is not allowed"),
        ("htcondor", "batch_name = x", "batch_name is not allowed"),
        ("htcondor", '+JobBatchName = "x"', "+JobBatchName is not allowed"),
        ("htcondor", 'MY.Iwd = "/tmp"', "MY.Iwd is not allowed"),
        ("htcondor", "max_retries = 3", "max_retries is not allowed"),
        ("htcondor", "include : /tmp/more.sub", "only 'name = value' lines are allowed"),
        ("htcondor", "request_gpus = 1 \\", "a trailing backslash"),
    ],
)
def test_directives_that_break_one_job_one_run_are_refused(
    scheduler: str, directive: str, named: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        on(scheduler, directives=[directive])
    assert info.value.message.startswith(
        f"jobs[0]: cluster head ({scheduler}): directive {directive!r}: "
    )
    assert named in info.value.message


@pytest.mark.parametrize(
    ("scheduler", "directives"),
    [
        ("slurm", ["--gres=gpu:1", "#SBATCH --qos=low", "-c 4", "--constraint=gpu", "--exclusive", "-p short"]),
        ("pbspro", ["-l place=scatter", "#PBS -m n", "-j oe", "-W depend=afterok:12", "-v FOO=005"]),
        ("torque", ["-l nodes=2", "-m ae", "-W group_list=x"]),
        ("lsf", ["-R select[gpu]", "#BSUB -app big", "-Jd description", "-G group"]),
        ("htcondor", ['+ProjectName = "p1"', "request_gpus = 1", 'requirements = (OpSys == "LINUX")',
                      "# a comment", "arguments = a b"]),
    ],
)  # fmt: skip
def test_ordinary_directives_are_accepted(scheduler: str, directives: list[str]) -> None:
    assert on(scheduler, directives=directives)["directives"] == directives


@pytest.mark.parametrize(
    ("scheduler", "directive"),
    [("slurm", "--array=1-3"), ("lsf", "-J x"), ("htcondor", "executable = /bin/x")],
)
def test_a_stored_job_with_such_a_directive_fails_to_render(scheduler: str, directive: str) -> None:
    """Jobs accepted before the check existed: rendering refuses them (a permanent
    "invalid job" at submit) instead of running them several times."""
    job = JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=("true",), workdir="/w",
                     extra_directives=(directive,))  # fmt: skip
    dialect = create_dialect(scheduler)
    with pytest.raises(ValueError, match="is not allowed"):
        dialect.render_script(job)
        dialect.extra_files(job)


@pytest.mark.timeout(120)
async def test_slurm_array_directive_is_refused_at_submit_and_nothing_runs(tmp_path: Path) -> None:
    """``--array=1-3`` ran the job three times and reported one completed job."""
    from schedulerd.client import RpcError
    from tests.helpers.fake_cluster import fake_cluster

    async with fake_cluster(tmp_path, "slurm") as c:
        with pytest.raises(RpcError) as info:
            await c.client.call(
                "job.submit", {"job": {"argv": ["true"], "directives": ["--array=1-3"]}}
            )
        assert info.value.code == -32010
        assert info.value.message == (
            "jobs[0]: cluster head (slurm): directive '--array=1-3': --array is not allowed:"
            " an array would run the job several times"
        )
        assert (await c.client.call("job.list"))["jobs"] == []
        assert c.head.jobs() == []
