"""HTCondor dialect: real outputs, fuzzing, the rendered script and submit description,
and a round trip through the fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.htcondor import ATTRIBUTES, STATE_MAP, HTCondorDialect
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

D = HTCondorDialect()


def read(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "htcondor" / name).read_text()


def ad_line(native_id: str, **values: object) -> str:
    """One ``-af:jt`` line for ATTRIBUTES."""
    cells = [str(values.get(a, "undefined")) for a in ATTRIBUTES]
    return "\t".join([native_id, *cells])


# --- real outputs -----------------------------------------------------------------------------


def test_history_af_j_completed(fixtures_dir: Path) -> None:
    found = D.parse_history(read(fixtures_dir, "condor_history-af-j.completed.txt"), "", 0)
    assert found == {"123.0": Observation(native_id="123.0", phase=Phase.COMPLETED, exit_code=0)}


def test_queue_af_j_held_and_removed(fixtures_dir: Path) -> None:
    found = D.parse_status(read(fixtures_dir, "condor_q-af-j.jobstatus-holdcodes.txt"), "", 0)
    assert sorted(found) == ["123.1", "123.2"]
    assert (found["123.2"].phase, found["123.2"].reason) == (Phase.HELD, "[4/0]")
    assert found["123.2"].exit_code is None
    assert (found["123.1"].phase, found["123.1"].reason) == (Phase.CANCELLED, None)


def test_queue_af_j_multi_word_hold_reason() -> None:
    # the line quoted in SOURCES.md from the same upstream test file
    found = D.parse_status("104098.5 5 16 57 Input data are being spooled\n", "", 0)
    assert found["104098.5"].phase is Phase.HELD
    assert found["104098.5"].reason == "Input data are being spooled [16/57]"


@pytest.mark.parametrize(
    "name",
    [
        "condor_q.legacy-format.all-states.txt",
        "condor_q.legacy-format.no-jobs.txt",
        "condor_q-nobatch.dag-running.txt",
        "condor_q.batch-mode.done-run-idle-hold.txt",
        "condor_q-hold.code-subcode.htcondor25.txt",
        "condor_q-long.idle-after-spooling.htcondor7.9.ad",
    ],
)
def test_other_layouts_are_refused_not_read_as_empty(fixtures_dir: Path, name: str) -> None:
    """We query with -af:jt; any other layout is a ParseError, never "no jobs"."""
    with pytest.raises(ParseError):
        D.parse_status(read(fixtures_dir, name), "", 0)


def test_submit_outputs(fixtures_dir: Path) -> None:
    assert (
        D.parse_submit(read(fixtures_dir, "condor_submit-terse.single-job.txt"), "", 0) == "123.0"
    )
    assert D.parse_submit("15.0 - 15.0\n", "", 0) == "15.0"
    assert D.parse_submit(read(fixtures_dir, "condor_submit.success.txt"), "", 0) == "6.0"
    warned = read(fixtures_dir, "condor_submit.submit-requirement-warning.txt")
    assert D.parse_submit(warned, "", 0) == "452.0"
    with pytest.raises(ParseError):
        D.parse_submit("Submitting job(s).\n", "", 0)


def test_submit_requirement_rejection_is_permanent(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "condor_submit.submit-requirement-rejected.txt")
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit(text, "", 1)
    assert info.value.transient is False
    assert "does not accept standard universe jobs" in info.value.message
    # the same text split over stdout/stderr, as a terminal shows it
    with pytest.raises(SubmitRejected):
        D.parse_submit("Submitting job(s).\n", text, 1)


def test_submit_schedd_unreachable_is_transient() -> None:
    stderr = (
        "ERROR: Failed to connect to local queue manager\n"
        "CEDAR:6001:Failed to connect to <127.0.0.1:9618>\n"
    )
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", stderr, 1)
    assert info.value.transient is True


def test_rm_authentication_failure_is_permanent(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "condor_rm.auth-failure-remote-schedd.txt")
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel("", text, 1)
    assert info.value.transient is False


def test_rm_outputs() -> None:
    D.parse_cancel("Job 12.0 marked for removal\n", "", 0)
    D.parse_cancel("", "Job 12.0 not found\n", 1)
    D.parse_cancel(
        "Job 12.0 marked for removal\n", "Couldn't find/remove all jobs in cluster 13\n", 1
    )
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel("", "CEDAR:6001:Failed to connect to <127.0.0.1:9618>\n", 1)
    assert info.value.transient is True


def test_queue_unreachable_is_transient() -> None:
    stderr = (
        "-- Failed to fetch ads from: <131.169.223.41:9618?addrs=x> : sched13\n"
        "SECMAN:2007:Failed to end classad message.\n"
    )
    for parse in (D.parse_status, D.parse_history):
        with pytest.raises(RemoteCommandError) as info:
            parse("", stderr, 1)
        assert info.value.transient is True
        # some versions print it on stdout
        with pytest.raises(RemoteCommandError):
            parse(stderr, "", 1)


def test_our_layout() -> None:
    text = "\n".join(
        [
            "a banner",
            ad_line("10.0", JobStatus=1, JobBatchName="sd-1-1", EnteredCurrentStatus=1700000000),
            ad_line("11.0", JobStatus=2, JobBatchName="sd-2-1", JobCurrentStartDate=1700000100),
            ad_line("12.0", JobStatus=4, ExitCode=0, ExitBySignal="false",
                    JobCurrentStartDate=1700000100, CompletionDate=1700000200, JobBatchName="x y"),
            ad_line("13.0", JobStatus=4, ExitCode=3, ExitBySignal="false"),
            ad_line("14.0", JobStatus=4, ExitBySignal="true", ExitSignal=9),
            ad_line("15.0", JobStatus=3, RemoveReason="via condor_rm (by user alice)",
                    EnteredCurrentStatus=1700000300),
            ad_line("16.0", JobStatus=3, RemoveReason=(
                "The job attribute PeriodicRemove expression '(JobStatus == 2) && "
                "((time() - JobCurrentStartDate) > 60)' evaluated to TRUE")),
            ad_line("17.0", JobStatus=5, HoldReasonCode=1, HoldReasonSubCode=0,
                    HoldReason="via condor_hold (by user alice)"),
            ad_line("18.0", JobStatus=6),
            ad_line("19.0", JobStatus=7),
            "\t" + ad_line("20.0", JobStatus=1),  # a tab before the id too
            "",
        ]
    )  # fmt: skip
    found = D.parse_status(text, "", 0)
    assert found["10.0"] == Observation(native_id="10.0", phase=Phase.QUEUED, name="sd-1-1")
    assert found["11.0"] == Observation(
        native_id="11.0", phase=Phase.RUNNING, name="sd-2-1", started_at=1700000100.0
    )
    assert found["12.0"] == Observation(
        native_id="12.0",
        phase=Phase.COMPLETED,
        exit_code=0,
        name="x y",
        started_at=1700000100.0,
        finished_at=1700000200.0,
    )
    assert (found["13.0"].phase, found["13.0"].exit_code) == (Phase.FAILED, 3)
    assert (found["14.0"].phase, found["14.0"].exit_code) == (Phase.FAILED, 137)
    assert found["14.0"].reason == "killed by signal 9"
    assert (found["15.0"].phase, found["15.0"].finished_at) == (Phase.CANCELLED, 1700000300.0)
    assert found["15.0"].reason == "via condor_rm (by user alice)"
    assert found["16.0"].phase is Phase.TIMEOUT
    assert (found["17.0"].phase, found["17.0"].reason) == (
        Phase.HELD,
        "via condor_hold (by user alice) [1/0]",
    )
    assert found["18.0"].phase is Phase.RUNNING
    assert (found["19.0"].phase, found["19.0"].reason) == (Phase.HELD, "suspended")
    assert found["20.0"].phase is Phase.QUEUED


def test_bad_job_status_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        D.parse_status(ad_line("1.0", JobStatus=9), "", 0)
    with pytest.raises(ParseError):
        D.parse_status("1.0\tundefined\n", "", 0)


def test_state_map_covers_the_manual() -> None:
    assert sorted(STATE_MAP) == [1, 2, 3, 4, 5, 6, 7]


def test_version() -> None:
    out = "$CondorVersion: 10.0.0 Nov 15 2022 BuildID: 613286 $\n$CondorPlatform: x86_64 $\n"
    assert D.parse_version(out, "", 0) == "HTCondor 10.0.0"
    with pytest.raises(ParseError):
        D.parse_version("condor\n", "", 0)
    with pytest.raises(RemoteCommandError):
        D.parse_version("", "condor_version: command not found\n", 127)


# --- argv and submit description -------------------------------------------------------------


def make_job(workdir: Path | str, argv: tuple[str, ...], **kw: object) -> JobRequest:
    return JobRequest(job_id=1, attempt=2, name="sd-1-2", argv=argv, workdir=str(workdir), **kw)  # type: ignore[arg-type]


def test_argv_shapes() -> None:
    job = make_job("/w", ("true",))
    sub = "/w/.schedulerd/sd-1-2.sub"
    assert D.submit_argv(job) == ["condor_submit", "-terse", sub]
    assert D.dry_run_argv(job) == ["condor_submit", "-dry-run", "/dev/null", sub]
    assert D.status_argv("alice", ["1.0"]) == ["condor_q", "alice", "-af:jt", *ATTRIBUTES]
    assert D.history_argv("alice", ["1.0", "2.3"], 1700000000.0) == [
        "condor_history",
        "-constraint",
        "(ClusterId == 1 && ProcId == 0) || (ClusterId == 2 && ProcId == 3)",
        "-match",
        "2",
        "-af:jt",
        *ATTRIBUTES,
    ]
    with pytest.raises(ValueError):
        D.history_argv("alice", ["1.0 || true"], 0.0)
    assert D.cancel_argv(["1.0", "2.0"]) == ["condor_rm", "1.0", "2.0"]
    assert D.hold_argv(["1.0"]) == ["condor_hold", "1.0"]
    assert D.release_argv(["1.0"]) == ["condor_release", "1.0"]
    assert D.version_argv() == ["condor_version"]
    assert ATTRIBUTES[:4] == ("JobStatus", "HoldReasonCode", "HoldReasonSubCode", "HoldReason")


def test_submit_description() -> None:
    job = make_job(
        "/w dir",
        ("true",),
        cpus=2,
        memory_mb=1500,
        walltime_s=3600,
        account="group_a.alice",
        extra_directives=('+ProjectName = "p1"',),
    )
    files = D.extra_files(job)
    assert list(files) == ["/w dir/.schedulerd/sd-1-2.sub"]
    lines = files["/w dir/.schedulerd/sd-1-2.sub"].splitlines()
    for expected in (
        "executable = /w dir/.schedulerd/sd-1-2.sh",
        "initialdir = /w dir",
        "output = /w dir/sd-1-2.out",
        "error = /w dir/sd-1-2.err",
        "log = /w dir/.schedulerd/sd-1-2.log",
        "batch_name = sd-1-2",
        "request_cpus = 2",
        "request_memory = 1500M",
        "accounting_group = group_a.alice",
        "+MaxRuntime = 3600",
        "periodic_remove = (JobStatus == 2) && ((time() - JobCurrentStartDate) > 3600)",
        "periodic_hold = (JobStatus == 1) && (NumJobStarts > 0)",
        '+ProjectName = "p1"',
    ):
        assert expected in lines
    assert lines[-1] == "queue 1"
    requeue = D.extra_files(make_job("/w", ("true",), requeue=True))
    assert "periodic_hold" not in next(iter(requeue.values()))
    # the script is the plain wrapper: no directives
    assert D.render_script(job).startswith("#!/bin/sh\n# schedulerd job 1")


@pytest.mark.parametrize(
    "kw",
    [
        {"queue": "a\nb"},
        {"account": "a\nb"},
        {"extra_directives": ("x = 1\nqueue 5",)},
        {"extra_directives": ("queue 5",)},
        {"workdir": "/w/$(Cluster)"},
        {"name": "a\nb"},
    ],
)
def test_rejects_values_that_would_break_the_description(kw: dict[str, object]) -> None:
    base: dict[str, object] = {"job_id": 1, "attempt": 1, "name": "n", "argv": ("true",)}
    base["workdir"] = "/w"
    base.update(kw)
    with pytest.raises(ValueError):
        D.extra_files(JobRequest(**base))  # type: ignore[arg-type]


# --- the rendered script runs ------------------------------------------------------------------


def test_rendered_script_runs_the_exact_command(tmp_path: Path) -> None:
    workdir = tmp_path / "work dir 'q' \"d\""
    workdir.mkdir()
    job = make_job(workdir, recording_argv(3), env={"NASTY_ENV": "a'b\"$(c);\nd"})
    assert run_rendered(D, job, tmp_path) == 3
    assert recorded(workdir) == (list(NASTY), "a'b\"$(c);\nd")
    assert not (workdir / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert parse_exit_file(Path(job.exit_path).read_text()).exit_code == 3


# --- fuzzing --------------------------------------------------------------------------------

PARSERS = parsers_of(D)


FIXTURE_TEXTS = [
    *fixture_texts(FIXTURES / "htcondor"),
    ad_line("7.0", JobStatus=4, ExitCode=1, JobBatchName="n"),
]


@FUZZ
@given(stdout=st.text(), stderr=st.text(), status=st.integers(min_value=-1, max_value=255))
def test_parsers_on_arbitrary_text(stdout: str, stderr: str, status: int) -> None:
    only_our_errors(PARSERS, stdout, stderr, status)


@FUZZ
@given(
    which=st.integers(min_value=0, max_value=max(len(FIXTURE_TEXTS) - 1, 0)),
    cut=st.integers(min_value=0, max_value=5000),
    insert=st.text(alphabet="\t .0123456789-undefinedtruefalse\nERROR:", max_size=20),
    status=st.sampled_from([0, 1]),
)
def test_parsers_on_mutated_fixtures(which: int, cut: int, insert: str, status: int) -> None:
    on_either_stream(PARSERS, insert_at(FIXTURE_TEXTS[which], cut, insert), status)


# --- round trip through the fake ---------------------------------------------------------------


def fake_head(tmp_path: Path, **config: Any) -> DialectHead:
    return DialectHead(tmp_path, D, "htcondor", **config)


@pytest.fixture
def head(tmp_path: Path) -> DialectHead:
    return fake_head(tmp_path)


@pytest.mark.timeout(120)
def test_round_trip_completed(head: DialectHead) -> None:
    gate = head.workdir / "gate"
    job = head.job(*gated(gate, "echo out; echo err >&2"), cpus=2, memory_mb=256)
    native_id = head.submit(job)
    assert native_id.endswith(".0")
    seen = head.status()[native_id]
    assert seen.phase in (Phase.QUEUED, Phase.RUNNING)
    assert seen.name == job.name
    head.wait_status(native_id, lambda o: o is not None and o.phase is Phase.RUNNING)
    gate.touch()
    final = head.finish(native_id)
    assert (final.phase, final.exit_code, final.name) == (Phase.COMPLETED, 0, job.name)
    assert final.started_at is not None and final.finished_at is not None
    assert parse_exit_file(Path(job.exit_path).read_text()).exit_code == 0
    assert Path(job.stdout_path).read_text() == "out\n"
    assert Path(job.stderr_path).read_text() == "err\n"
    record = head.fake.job(native_id)
    assert (record["cpus"], record["memory_mb"], record["name"]) == (2, 256, job.name)


@pytest.mark.timeout(120)
def test_round_trip_failed_exit_3(head: DialectHead) -> None:
    job = head.job("sh", "-c", "exit 3", walltime_s=600)
    native_id = head.submit(job)
    final = head.finish(native_id)
    assert (final.phase, final.exit_code) == (Phase.FAILED, 3)
    assert head.fake.job(native_id)["walltime"] == 600


@pytest.mark.timeout(120)
def test_round_trip_walltime_is_timeout(head: DialectHead) -> None:
    job = head.job("sleep", "30", walltime_s=1)
    native_id = head.submit(job)
    final = head.finish(native_id)
    assert final.phase is Phase.TIMEOUT
    assert parse_exit_file(Path(job.exit_path).read_text()).signal == "TERM"


@pytest.mark.timeout(120)
def test_round_trip_cancel_running(head: DialectHead) -> None:
    native_id = head.submit(head.job("sleep", "30"))
    head.wait_status(native_id, lambda o: o is not None and o.phase is Phase.RUNNING)
    D.parse_cancel(*head.run(D.cancel_argv([native_id])))
    final = head.finish(native_id)
    assert final.phase is Phase.CANCELLED
    assert final.reason == f"via condor_rm (by user {head.user})"
    # removing it again: "not found" is accepted
    D.parse_cancel(*head.run(D.cancel_argv([native_id])))


@pytest.mark.timeout(120)
def test_round_trip_hold_release(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)
    native_id = head.submit(head.job("true"))
    assert head.status()[native_id].phase is Phase.QUEUED
    assert head.run(D.hold_argv([native_id]))[2] == 0
    held = head.status()[native_id]
    assert (held.phase, held.reason) == (Phase.HELD, f"via condor_hold (by user {head.user}) [1/0]")
    assert head.run(D.release_argv([native_id]))[2] == 0
    assert head.status()[native_id].phase is Phase.QUEUED
    head.fake.set_config(slots=10)
    assert head.finish(native_id).phase is Phase.COMPLETED


@pytest.mark.timeout(120)
def test_system_hold(head: DialectHead) -> None:
    head.fake.set_faults(hold_next=1)
    native_id = head.submit(head.job("true"))
    obs = head.status()[native_id]
    assert obs.phase is Phase.HELD
    assert obs.reason is not None and "SYSTEM_PERIODIC_HOLD" in obs.reason


@pytest.mark.timeout(120)
def test_submit_faults(head: DialectHead) -> None:
    head.fake.set_faults(submit_transient=1, submit_permanent=1)
    with pytest.raises(SubmitRejected) as info:
        head.submit(head.job("true"))
    assert info.value.transient is True
    assert "Failed to connect to local queue manager" in info.value.message
    with pytest.raises(SubmitRejected) as info:
        head.submit(head.job("true"))
    assert info.value.transient is False
    assert "Failed to commit job submission" in info.value.message
    assert head.submit(head.job("true")).endswith(".0")


@pytest.mark.timeout(120)
def test_submit_auth_fault_is_refused_credentials(head: DialectHead) -> None:
    head.fake.set_faults(submit_auth=1)
    with pytest.raises(SubmitRejected) as info:
        head.submit(head.job("true"))
    assert (info.value.transient, info.value.auth) == (False, True)
    assert "Failed to connect to local queue manager" in info.value.message
    assert "AUTHENTICATE:1003" in info.value.message
    assert head.fake.jobs() == []
    assert head.submit(head.job("true")).endswith(".0")


@pytest.mark.timeout(120)
def test_max_queued_fault_is_the_per_owner_limit(head: DialectHead) -> None:
    gate = head.workdir / "gate"
    head.fake.set_faults(max_queued=1)
    first = head.submit(head.job(*gated(gate)))
    with pytest.raises(SubmitRejected) as info:
        head.submit(head.job("true"))
    assert (info.value.transient, info.value.auth) == (True, False)
    assert "would exceed MAX_JOBS_PER_OWNER" in info.value.message
    assert [j["id"] for j in head.fake.jobs()] == [first]
    gate.touch()
    head.finish(first)
    assert head.submit(head.job("true")).endswith(".0")  # the limit passed


@pytest.mark.timeout(120)
def test_schedd_down(head: DialectHead) -> None:
    native_id = head.submit(head.job("true"))
    head.fake.set_faults(down=True)
    with pytest.raises(SubmitRejected) as submit_info:
        head.submit(head.job("true"))
    assert submit_info.value.transient is True
    for call in (
        lambda: D.parse_status(*head.run(D.status_argv(head.user, []))),
        lambda: D.parse_cancel(*head.run(D.cancel_argv([native_id]))),
    ):
        with pytest.raises(RemoteCommandError) as info:
            call()
        assert info.value.transient is True
    assert D.parse_version(*head.run(D.version_argv())) == "HTCondor 10.0.0"


@pytest.mark.timeout(120)
def test_noise_is_skipped(head: DialectHead) -> None:
    head.fake.set_faults(noise=True)
    native_id = head.submit(head.job("true"))
    assert native_id in head.status()
    assert head.finish(native_id).phase is Phase.COMPLETED


@pytest.mark.timeout(120)
def test_forget_finished_vanishes_everywhere(head: DialectHead) -> None:
    head.fake.set_faults(forget_finished=True)
    job = head.job("sh", "-c", "exit 4")
    native_id = head.submit(job)
    head.wait_status(native_id, lambda o: o is None)
    assert head.history(native_id) == {}
    assert parse_exit_file(Path(job.exit_path).read_text()).exit_code == 4


@pytest.mark.timeout(120)
def test_dry_run(head: DialectHead) -> None:
    job = head.job("true")
    head.write(job)
    argv = D.dry_run_argv(job)
    assert argv is not None
    assert head.run(argv)[2] == 0
    assert head.fake.jobs() == []
