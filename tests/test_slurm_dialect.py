"""Slurm dialect: real outputs, fuzzing, the rendered script, and a round trip through the fake.

Longer than most modules: one file per dialect keeps every test of it in one place (squeue
and sacct each with their real captures and state table)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.slurm import SACCT_FIELDS, SQUEUE_FORMAT, STATE_MAP, SlurmDialect
from schedulerd.drivers.wrapper import parse_exit_file
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected
from tests.conftest import FIXTURES
from tests.fakebatch.core import gated
from tests.helpers.dialect_head import DialectHead
from tests.helpers.fuzzing import (
    FUZZ,
    fixture_texts,
    insert_at,
    on_either_stream,
    only_our_errors,
    parsers_of,
)
from tests.helpers.scripts import NASTY, recorded, recording_argv, run_rendered

D = SlurmDialect()


def read(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "slurm" / name).read_text()


def local(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- real outputs: squeue ---------------------------------------------------------------------


def test_squeue_caret_separated_pending_and_running(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "squeue-noheader-o-caret-separated.pending-running.txt")
    found = D.parse_status(text, "", 0)
    assert sorted(found) == sorted(
        ["862540", "863100", "863546", "863313", "862538", "861352", "863553", "863554"]
    )
    assert found["862540"] == Observation(
        native_id="862540", phase=Phase.QUEUED, reason="Dependency", name="longsqw_L24_q_10_0"
    )
    # a pending job's %S is the *expected* start: not a start time
    assert found["863100"].phase is Phase.QUEUED
    assert found["863100"].reason == "Resources"
    assert found["863100"].started_at is None
    assert found["863100"].name == "eq_solve_e4.slm"
    assert found["863546"].reason == "Priority"
    assert found["863313"].phase is Phase.HELD
    assert found["863313"].reason == "JobHeldUser"
    assert found["863313"].name == "test"
    assert found["862538"] == Observation(
        native_id="862538",
        phase=Phase.RUNNING,
        name="longsqw_L24_q_11_0",
        started_at=local("2013-05-23T11:41:30"),
    )
    assert found["861352"].started_at == local("2013-05-22T12:43:20")
    assert found["863554"].name == "bash"
    assert all(o.exit_code is None for o in found.values())


def test_squeue_invalid_job_id_is_not_an_error(fixtures_dir: Path) -> None:
    stderr = read(fixtures_dir, "squeue-j.invalid-job-id.stderr.txt")
    assert D.parse_status("", stderr, 1) == {}


@pytest.mark.parametrize(
    "stderr",
    [
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
        "slurm_load_jobs error: Socket timed out on send/recv operation\n",
    ],
)
def test_squeue_controller_unreachable_is_transient(stderr: str) -> None:
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status("", stderr, 1)
    assert info.value.transient is True
    assert info.value.remote_exit_status == 1


def test_squeue_other_failure_is_permanent() -> None:
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status("", "squeue: error: Invalid user: nobody2\n", 1)
    assert info.value.transient is False


def test_squeue_long_states_arrays_names_with_separator_and_noise() -> None:
    sep = "^^^"

    def line(job_id: str, state: str, reason: str, start: str, name: str) -> str:
        f = [job_id, state, reason, "n/a", "alice", "1", "1", "(x)", "batch", "1:00:00", "0:00"]
        return sep.join([*f, start, name, "1700000000"])

    text = "\n".join(
        [
            "Welcome to the cluster!",
            line("123_4", "RUNNING", "None", "1700000100", "sd-1-1"),
            line("123_[5-9]", "PENDING", "JobArrayTaskLimit", "N/A", "sd-1-1"),
            line("124", "PENDING", "JobHeldAdmin", "N/A", "a^^^b"),
            line("125", "SUSPENDED", "None", "1700000200", "sd-3-1"),
            line("126", "COMPLETING", "None", "1700000300", "sd-4-1"),
            line("127", "CD", "None", "1700000300", "sd-5-1"),
            line("128", "NEW_STATE", "None", "N/A", "sd-6-1"),
            "",
        ]
    )
    found = D.parse_status(text, "", 0)
    assert found["123_4"].phase is Phase.RUNNING
    assert found["123_4"].started_at == 1700000100.0
    assert found["123_[5-9]"].phase is Phase.QUEUED
    assert found["123_[5-9]"].reason == "JobArrayTaskLimit"
    assert found["124"].phase is Phase.HELD
    assert found["124"].name == "a^^^b"
    assert (found["125"].phase, found["125"].reason) == (Phase.HELD, "suspended")
    assert found["126"].phase is Phase.RUNNING
    assert (found["127"].phase, found["127"].exit_code) == (Phase.COMPLETED, 0)
    assert found["128"].phase is Phase.QUEUED
    assert found["128"].reason == "unrecognised Slurm state NEW_STATE"


def test_squeue_truncated_line_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        D.parse_status("123^^^RUNNING^^^None\n", "", 0)


def test_state_map_covers_the_manual() -> None:
    manual = (
        "PENDING RUNNING SUSPENDED COMPLETING COMPLETED CANCELLED FAILED TIMEOUT NODE_FAIL "
        "PREEMPTED BOOT_FAIL DEADLINE OUT_OF_MEMORY REQUEUED RESV_DEL_HOLD REQUEUE_HOLD "
        "REQUEUE_FED RESIZING REVOKED SIGNALING SPECIAL_EXIT STAGE_OUT STOPPED CONFIGURING"
    )
    for state in manual.split():
        assert state in STATE_MAP


# --- real outputs: sacct ----------------------------------------------------------------------


def test_sacct_allocation_running_while_batch_step_done(fixtures_dir: Path) -> None:
    found = D.parse_history(
        read(fixtures_dir, "sacct-parsable.batch-done-allocation-running.txt"), "", 0
    )
    assert list(found) == ["123"]
    obs = found["123"]
    assert obs.phase is Phase.RUNNING
    assert obs.exit_code is None
    assert obs.started_at == local("2016-03-31T09:33:25")
    assert obs.finished_at is None  # End "Unknown"
    assert obs.name is None  # the capture has no JobName column


def test_sacct_cancelled_by_uid(fixtures_dir: Path) -> None:
    found = D.parse_history(read(fixtures_dir, "sacct-parsable.cancelled-by-uid.txt"), "", 0)
    obs = found["123"]
    assert obs.phase is Phase.CANCELLED
    assert obs.reason == "cancelled by uid 1000"
    assert obs.exit_code is None
    assert obs.finished_at == local("2014-12-11T17:13:44")


def test_sacct_completed_multistep(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "sacct-parsable.completed-multistep-mixed-units.txt")
    found = D.parse_history(text, "", 0)
    assert list(found) == ["123"]  # steps .batch, .0 ... .9 are not jobs
    obs = found["123"]
    assert (obs.phase, obs.exit_code) == (Phase.COMPLETED, 0)
    assert obs.started_at == local("2013-08-30T23:16:22")
    assert obs.finished_at == local("2013-08-30T23:23:51")


def test_sacct_failed_exit_1(fixtures_dir: Path) -> None:
    obs = D.parse_history(read(fixtures_dir, "sacct-parsable.failed-exit-1.txt"), "", 0)["123"]
    assert (obs.phase, obs.exit_code, obs.reason) == (Phase.FAILED, 1, None)
    assert obs.finished_at == local("2016-10-14T16:14:50")


def test_sacct_node_fail(fixtures_dir: Path) -> None:
    obs = D.parse_history(read(fixtures_dir, "sacct-parsable.node-fail.txt"), "", 0)["123"]
    assert (obs.phase, obs.exit_code, obs.reason) == (Phase.FAILED, None, "NODE_FAIL")


def test_sacct_timeout(fixtures_dir: Path) -> None:
    obs = D.parse_history(read(fixtures_dir, "sacct-parsable.timeout.txt"), "", 0)["123"]
    assert (obs.phase, obs.exit_code, obs.reason) == (Phase.TIMEOUT, None, "TIMEOUT")
    assert obs.finished_at == local("2014-12-11T17:11:34")


def test_sacct_relative_time_format_gives_no_times(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "sacct-parsable.slurm-time-format-relative.txt")
    obs = D.parse_history(text, "", 0)["123"]
    assert (obs.phase, obs.exit_code) == (Phase.COMPLETED, 0)
    assert obs.started_at is None and obs.finished_at is None


def test_sacct_accounting_disabled_means_no_history(fixtures_dir: Path) -> None:
    stderr = read(fixtures_dir, "sacct.accounting-disabled.stderr.txt")
    assert D.parse_history("", stderr, 1) == {}


def test_sacct_our_layout_with_names_requeues_and_signals() -> None:
    lines = [
        "banner line",
        "200|0:0|REQUEUED|1|00:00:05|00:00:00|1700000000|1700000001|1700000006|||sd-9-1",
        "200|0:9|FAILED|1|00:00:05|00:00:00|1700000000|1700000010|1700000016|||sd-9-1",
        "200.batch|0:9|FAILED|1|00:00:05|00:00:00|1700000010|1700000010|1700000016|1K|1K|batch",
        "201|0:0|FAILED|1|00:00:05|00:00:00|1700000000|1700000010|1700000016|||name|with|bars",
        "201.batch|3:0|FAILED|1|00:00:05|00:00:00|1700000010|1700000010|1700000016|1K|1K|batch",
        "202|0:0|PENDING|1|00:00:00|00:00:00|1700000000|Unknown|Unknown|||sd-11-1",
        "203|0:0|OUT_OF_MEMORY|1|00:00:05|00:00:00|1700000000|1700000010|1700000016|||x",
    ]
    text = "\n".join(lines)
    found = D.parse_history(text, "", 0)
    assert sorted(found) == ["200", "201", "202", "203"]
    # the last record of a requeued job wins; a signal gives 128+signal
    assert (found["200"].phase, found["200"].exit_code) == (Phase.FAILED, 137)
    assert found["200"].started_at == 1700000010.0
    assert found["200"].finished_at == 1700000016.0
    assert found["200"].name == "sd-9-1"
    # allocation 0:0 but FAILED: the batch step has the script's code
    assert (found["201"].exit_code, found["201"].name) == (3, "name|with|bars")
    assert (found["202"].phase, found["202"].started_at) == (Phase.QUEUED, None)
    assert (found["203"].phase, found["203"].reason) == (Phase.FAILED, "OUT_OF_MEMORY")


def test_sacct_database_down_is_transient() -> None:
    stderr = "sacct: error: Problem talking to the database: Connection refused\n"
    with pytest.raises(RemoteCommandError) as info:
        D.parse_history("", stderr, 1)
    assert info.value.transient is True


# --- real outputs: sbatch, scancel --------------------------------------------------------------


def test_sbatch_outputs(fixtures_dir: Path) -> None:
    assert D.parse_submit(read(fixtures_dir, "sbatch.submitted-on-cluster.txt"), "", 0) == "630114"
    assert D.parse_submit("42\n", "", 0) == "42"
    assert D.parse_submit("42;mpp2\n", "", 0) == "42"
    assert D.parse_submit("Submitted batch job 7\n", "", 0) == "7"
    assert D.parse_submit("motd line\n8\n", "sbatch: Warning: foo\n", 0) == "8"
    with pytest.raises(ParseError):
        D.parse_submit("hello\n", "", 0)


def test_sbatch_invalid_partition_is_permanent(fixtures_dir: Path) -> None:
    stderr = read(fixtures_dir, "sbatch.invalid-partition.stderr.txt")
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", stderr, 1)
    assert info.value.transient is False
    assert "Invalid partition name specified" in info.value.message


def test_sbatch_invalid_account_is_permanent(fixtures_dir: Path) -> None:
    stderr = read(fixtures_dir, "sbatch.invalid-account.stderr.txt")
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", stderr, 1)
    assert info.value.transient is False
    assert "Invalid account" in info.value.message


@pytest.mark.parametrize(
    "reason",
    [
        "Socket timed out on send/recv operation",
        "Resource temporarily unavailable",
        "Unable to contact slurm controller (connect failure)",
        "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
    ],
)
def test_sbatch_transient_failures(reason: str) -> None:
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", f"sbatch: error: Batch job submission failed: {reason}\n", 1)
    assert info.value.transient is True


def test_scancel_outputs(fixtures_dir: Path) -> None:
    D.parse_cancel("", read(fixtures_dir, "scancel-v.already-completing.stderr.txt"), 0)
    D.parse_cancel("", read(fixtures_dir, "scancel.invalid-job-id.stderr.txt"), 1)
    with pytest.raises(RemoteCommandError) as info:
        # scancel exits 0 here: the error line alone must fail the cancel
        D.parse_cancel("", read(fixtures_dir, "scancel.permission-denied-exit0.stderr.txt"), 0)
    assert info.value.transient is False
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel(
            "",
            "scancel: error: Kill job error on job id 5: Unable to contact slurm controller\n",
            1,
        )
    assert info.value.transient is True


def test_version() -> None:
    assert D.parse_version("slurm 23.02.1\n", "", 0) == "slurm 23.02.1"
    assert D.parse_version("slurm-wlm 21.08.5\n", "", 0) == "slurm 21.08.5"
    with pytest.raises(ParseError):
        D.parse_version("sbatch\n", "", 0)
    with pytest.raises(RemoteCommandError):
        D.parse_version("", "sbatch: command not found\n", 127)


# --- argv ---------------------------------------------------------------------------------------


def make_job(workdir: Path | str, argv: tuple[str, ...], **kw: object) -> JobRequest:
    return JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=argv, workdir=str(workdir), **kw)  # type: ignore[arg-type]


def test_argv_shapes() -> None:
    job = make_job("/w", ("true",))
    assert D.submit_argv(job) == ["sbatch", "--parsable", "/w/.schedulerd/sd-1-1.sh"]
    assert D.status_argv("alice", ["1"]) == [
        "env",
        "SLURM_TIME_FORMAT=%s",
        "squeue",
        "-u",
        "alice",
        "-o",
        SQUEUE_FORMAT,
    ]  # fmt: skip (with the header: the header alone is an empty queue)
    hist = D.history_argv("alice", ["1", "2_3"], 1_700_000_000.0)
    assert hist is not None
    assert hist[:4] == ["env", "SLURM_TIME_FORMAT=%s", "sacct", "--parsable2"]
    assert hist[hist.index("--starttime") + 1] == "2023-11-12T22:13:20"  # since - 2 days, UTC
    assert hist[hist.index("--format") + 1] == ",".join(SACCT_FIELDS)
    assert hist[-2:] == ["-j", "1,2_3"]
    assert D.cancel_argv(["1", "2"]) == ["scancel", "1", "2"]
    assert D.hold_argv(["1", "2"]) == ["scontrol", "hold", "1,2"]
    assert D.release_argv(["1", "2"]) == ["scontrol", "release", "1,2"]
    assert D.version_argv() == ["sbatch", "--version"]
    assert D.dry_run_argv(job) == ["sbatch", "--test-only", "/w/.schedulerd/sd-1-1.sh"]
    assert D.extra_files(job) == {}


def test_directives() -> None:
    job = make_job(
        "/w dir",
        ("true",),
        queue="short",
        cpus=4,
        memory_mb=2048,
        walltime_s=90061,
        account="proj1",
        extra_directives=("--constraint=gpu", "#SBATCH --qos=low"),
        stdout="/w dir/100%.out",
    )
    script = D.render_script(job)
    lines = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert lines == [
        "#SBATCH --job-name=sd-1-1",
        '#SBATCH --chdir="/w dir"',
        '#SBATCH --output="/w dir/100%%.out"',
        '#SBATCH --error="/w dir/sd-1-1.err"',
        "#SBATCH --partition=short",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=2048M",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --account=proj1",
        "#SBATCH --no-requeue",
        "#SBATCH --constraint=gpu",
        "#SBATCH --qos=low",
    ]
    assert script.startswith("#!/bin/sh\n#SBATCH --job-name=sd-1-1\n")
    assert "#SBATCH --requeue" in D.render_script(make_job("/w", ("true",), requeue=True))


@pytest.mark.parametrize(
    "kw",
    [
        {"queue": "a\nb"},
        {"account": "a\nb"},
        {"extra_directives": ("--qos=x\n#SBATCH --mem=1",)},
        {"name": "x\ny"},
        {"workdir": '/w"x'},
    ],
)
def test_rejects_values_that_would_break_directives(kw: dict[str, object]) -> None:
    base: dict[str, object] = {"job_id": 1, "attempt": 1, "name": "n", "argv": ("true",)}
    base["workdir"] = "/w"
    base.update(kw)
    with pytest.raises(ValueError):
        D.render_script(JobRequest(**base))  # type: ignore[arg-type]


# --- the rendered script runs ------------------------------------------------------------------


def test_rendered_script_runs_the_exact_command(tmp_path: Path) -> None:
    workdir = tmp_path / "work dir $(x) 'q'"
    workdir.mkdir()
    job = make_job(workdir, recording_argv(7), env={"NASTY_ENV": "x'y\"$(z);\nw"})
    assert run_rendered(D, job, tmp_path) == 7
    assert recorded(workdir) == (list(NASTY), "x'y\"$(z);\nw")
    assert not (workdir / "pwned").exists() and not (tmp_path / "pwned").exists()
    record_ = parse_exit_file(Path(job.exit_path).read_text())
    assert record_.exit_code == 7
    assert record_.signal is None


# --- fuzzing --------------------------------------------------------------------------------

PARSERS = parsers_of(D)
FIXTURE_TEXTS = fixture_texts(FIXTURES / "slurm", ".txt")


@FUZZ
@given(
    stdout=st.text(),
    stderr=st.text(),
    status=st.integers(min_value=-1, max_value=255),
)
def test_parsers_on_arbitrary_text(stdout: str, stderr: str, status: int) -> None:
    only_our_errors(PARSERS, stdout, stderr, status)


@FUZZ
@given(
    which=st.integers(min_value=0, max_value=max(len(FIXTURE_TEXTS) - 1, 0)),
    cut=st.integers(min_value=0, max_value=5000),
    insert=st.text(alphabet="|^:0123456789 \nabcRUNINGPDCA_.-T", max_size=20),
    status=st.sampled_from([0, 1]),
)
def test_parsers_on_mutated_fixtures(which: int, cut: int, insert: str, status: int) -> None:
    on_either_stream(PARSERS, insert_at(FIXTURE_TEXTS[which], cut, insert), status)


# --- round trip through the fake ---------------------------------------------------------------


def fake_head(tmp_path: Path, **config: Any) -> DialectHead:
    return DialectHead(tmp_path, D, "slurm", **config)


@pytest.fixture
def head(tmp_path: Path) -> DialectHead:
    return fake_head(tmp_path)


@pytest.mark.timeout(120)
def test_round_trip_completed(head: DialectHead) -> None:
    gate = head.workdir / "gate"
    job = head.job(*gated(gate, "echo out; echo err >&2"), queue="short", cpus=2)
    native_id = head.submit(job)
    assert native_id.isdigit()
    seen = head.status()[native_id]
    assert seen.phase in (Phase.QUEUED, Phase.RUNNING)
    assert seen.name == job.name
    head.wait_status(native_id, lambda o: o is not None and o.phase is Phase.RUNNING)
    running = head.status()[native_id]
    assert running.started_at is not None and abs(running.started_at - time.time()) < 30
    gate.touch()
    final = head.finish(native_id)
    assert (final.phase, final.exit_code, final.name) == (Phase.COMPLETED, 0, job.name)
    assert final.finished_at is not None
    assert parse_exit_file(Path(job.exit_path).read_text()).exit_code == 0
    assert Path(job.stdout_path).read_text() == "out\n"
    assert Path(job.stderr_path).read_text() == "err\n"
    record = head.fake.job(native_id)
    assert (record["queue"], record["cpus"], record["name"]) == ("short", 2, job.name)


@pytest.mark.timeout(120)
def test_round_trip_failed_exit_3(head: DialectHead) -> None:
    job = head.job("sh", "-c", "exit 3", walltime_s=600, memory_mb=512, account="proj")
    native_id = head.submit(job)
    final = head.finish(native_id)
    assert (final.phase, final.exit_code) == (Phase.FAILED, 3)
    record = head.fake.job(native_id)
    assert (record["walltime"], record["memory_mb"]) == (600, 512)
    assert record["extra"]["account"] == "proj"


@pytest.mark.timeout(120)
def test_round_trip_cancel_running(head: DialectHead) -> None:
    job = head.job("sleep", "30")
    native_id = head.submit(job)
    head.wait_status(native_id, lambda o: o is not None and o.phase is Phase.RUNNING)
    D.parse_cancel(*head.run(D.cancel_argv([native_id])))
    final = head.finish(native_id)
    assert final.phase is Phase.CANCELLED
    assert final.reason is not None and final.reason.startswith("cancelled by uid")
    # cancelling again: "Invalid job id specified" is accepted
    D.parse_cancel(*head.run(D.cancel_argv([native_id])))


@pytest.mark.timeout(120)
def test_round_trip_hold_release(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)  # nothing starts
    job = head.job("true")
    native_id = head.submit(job)
    assert head.status()[native_id].phase is Phase.QUEUED
    assert head.run(D.hold_argv([native_id]))[2] == 0
    held = head.status()[native_id]
    assert (held.phase, held.reason) == (Phase.HELD, "JobHeldUser")
    assert head.run(D.release_argv([native_id]))[2] == 0
    assert head.status()[native_id].phase is Phase.QUEUED
    head.fake.set_config(slots=10)
    assert head.finish(native_id).phase is Phase.COMPLETED


@pytest.mark.timeout(120)
def test_system_hold(head: DialectHead) -> None:
    head.fake.set_faults(hold_next=1)
    native_id = head.submit(head.job("true"))
    obs = head.status()[native_id]
    assert (obs.phase, obs.reason) == (Phase.HELD, "JobHeldAdmin")


@pytest.mark.timeout(120)
def test_submit_faults(head: DialectHead) -> None:
    head.fake.set_faults(submit_transient=2, submit_permanent=1)
    for _ in range(2):
        with pytest.raises(SubmitRejected) as info:
            head.submit(head.job("true"))
        assert info.value.transient is True
    with pytest.raises(SubmitRejected) as info:
        head.submit(head.job("true"))
    assert info.value.transient is False
    assert "Invalid partition name specified" in info.value.message
    assert head.submit(head.job("true")).isdigit()


@pytest.mark.timeout(120)
def test_head_down(head: DialectHead) -> None:
    native_id = head.submit(head.job("true"))
    head.fake.set_faults(down=True)
    with pytest.raises(SubmitRejected) as submit_info:
        head.submit(head.job("true"))
    assert submit_info.value.transient is True
    for call in (
        lambda: D.parse_status(*head.run(D.status_argv(head.user, []))),
        lambda: head.history(native_id),
        lambda: D.parse_cancel(*head.run(D.cancel_argv([native_id]))),
    ):
        with pytest.raises(RemoteCommandError) as info:
            call()
        assert info.value.transient is True
    # sbatch --version needs no controller
    assert D.parse_version(*head.run(D.version_argv())) == "slurm 23.02.1"


@pytest.mark.timeout(120)
def test_noise_is_skipped(head: DialectHead) -> None:
    head.fake.set_faults(noise=True)
    job = head.job("true")
    native_id = head.submit(job)
    assert native_id in head.status()
    assert head.finish(native_id).phase is Phase.COMPLETED


@pytest.mark.timeout(120)
def test_forget_finished_vanishes_everywhere(head: DialectHead) -> None:
    head.fake.set_faults(forget_finished=True)
    job = head.job("true")
    native_id = head.submit(job)
    head.wait_status(native_id, lambda o: o is None)
    assert head.history(native_id) == {}
    # the exit file decides
    assert parse_exit_file(Path(job.exit_path).read_text()).exit_code == 0


@pytest.mark.timeout(120)
def test_dry_run_and_version(head: DialectHead) -> None:
    job = head.job("true")
    head.write(job)
    argv = D.dry_run_argv(job)
    assert argv is not None
    _, err, status = head.run(argv)
    assert status == 0 and "to start at" in err
    assert head.fake.jobs() == []
    assert D.parse_version(*head.run(D.version_argv())) == "slurm 23.02.1"


@pytest.mark.timeout(120)
def test_sacct_needs_a_starttime(head: DialectHead) -> None:
    """The fake, like sacct, shows only today's jobs without -S: we always pass it."""
    argv = D.history_argv(head.user, ["1"], time.time())
    assert argv is not None and "--starttime" in argv
