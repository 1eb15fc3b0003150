"""PBS Pro / OpenPBS dialect: real outputs, fuzzing, the rendered script, the fake head."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.drivers.base import FINISHED_PHASES, JobRequest, Observation, Phase
from schedulerd.drivers.pbs_parse import parse_ctime
from schedulerd.drivers.pbspro import PbsProDialect
from schedulerd.drivers.wrapper import parse_exit_file
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected
from tests.conftest import FIXTURES
from tests.fakebatch.core import gated
from tests.helpers.dialect_head import DialectHead
from tests.helpers.fuzzing import (
    EDITS,
    FUZZ_MORE,
    only_our_errors,
    only_our_errors_after_edits,
    parsers_of,
)

D = PbsProDialect()


def fx(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "pbspro" / name).read_text()


# --- real outputs ----------------------------------------------------------------------------


def test_status_running_metacentrum(fixtures_dir: Path) -> None:
    text = fx(fixtures_dir, "qstat-xf-F-json.running.pbspro19-metacentrum.json")
    found = D.parse_status(text, "", 0)
    obs = found["12860476.meta-pbs.metacentrum.cz"]
    assert list(found) == ["12860476.meta-pbs.metacentrum.cz"]
    assert obs.phase is Phase.RUNNING
    assert obs.name == "swrap_01"
    assert obs.exit_code is None
    assert obs.started_at == parse_ctime("Tue Oct  4 21:23:33 2022")
    assert obs.reason is not None and obs.reason.startswith("Job run at Tue Oct 04")


def test_status_held_user_hold(fixtures_dir: Path) -> None:
    found = D.parse_status(fx(fixtures_dir, "qstat-x-f-F-json.held.openpbs19.json"), "", 0)
    assert found == {
        "157.pbs": Observation(
            native_id="157.pbs", phase=Phase.HELD, reason="user hold", name="pbs_hold_job"
        )
    }


@pytest.mark.parametrize(
    ("name", "native_id", "job_name"),
    [
        (
            "qstat-x-f-F-json.finished-exit-status.openpbs19.reserialized.json",
            "40.pbs",
            "pbs_sleep",
        ),
        (
            "qstat-x-f-F-JSON.finished-exit-status-array-fields.openpbs22.edited.json",
            "0.725ccdf1a5fb",
            "testname",
        ),
    ],
)
def test_history_finished(fixtures_dir: Path, name: str, native_id: str, job_name: str) -> None:
    found = D.parse_history(fx(fixtures_dir, name), "", 0)
    obs = found[native_id]
    assert (obs.phase, obs.exit_code, obs.name) == (Phase.COMPLETED, 0, job_name)
    assert obs.started_at is not None
    assert obs.reason is not None and obs.reason.endswith("and finished")


def test_history_finished_times(fixtures_dir: Path) -> None:
    name = "qstat-x-f-F-JSON.finished-exit-status-array-fields.openpbs22.edited.json"
    obs = D.parse_history(fx(fixtures_dir, name), "", 0)["0.725ccdf1a5fb"]
    assert obs.started_at == parse_ctime("Tue Oct 11 08:13:45 2022")
    assert obs.finished_at == parse_ctime("Tue Oct 11 08:13:47 2022")


def test_status_plain_text_qstat_f(fixtures_dir: Path) -> None:
    found = D.parse_status(fx(fixtures_dir, "qstat-f.queued-running-held.pbspro12.txt"), "", 0)
    phases = {k: v.phase for k, v in found.items()}
    assert phases["68350.mycluster"] is Phase.QUEUED
    assert found["68350.mycluster"].reason == "Not Running: Node is in an ineligible state: offline"
    assert found["68350.mycluster"].name == "cell-Qnormal"
    assert sorted(p.value for p in phases.values()) == sorted(
        ["queued", "queued", "running", "running", "held", "held"]
    )
    gadi = D.parse_status(fx(fixtures_dir, "qstat-f.running-queued.nci-gadi.txt"), "", 0)
    assert gadi["80005196.gadi-pbs"].phase is Phase.RUNNING
    assert gadi["80005196.gadi-pbs"].name == "test1"
    assert gadi["80005197.gadi-pbs"].phase is Phase.QUEUED
    one = D.parse_status(fx(fixtures_dir, "qstat-f-w.running.openpbs.txt"), "", 0)
    assert one["14"].phase is Phase.RUNNING and one["14"].name == "myscript_1"


def test_status_plain_text_held_reason(fixtures_dir: Path) -> None:
    found = D.parse_status(fx(fixtures_dir, "qstat-f.queued-running-held.pbspro12.txt"), "", 0)
    held = [o for o in found.values() if o.phase is Phase.HELD]
    assert held and all(o.reason and "hold" in o.reason for o in held)


def test_mixed_plaintext_bug_has_no_jobs(fixtures_dir: Path) -> None:
    text = fx(fixtures_dir, "qstat-u-fF-JSON.mixed-plaintext-bug.openpbs23.txt")
    assert D.parse_status(text, "", 0) == {}


def test_noise_lines_before_json(fixtures_dir: Path) -> None:
    table = fx(fixtures_dir, "qstat-u-fF-JSON.mixed-plaintext-bug.openpbs23.txt").split("{")[0]
    text = table + fx(fixtures_dir, "qstat-x-f-F-json.held.openpbs19.json")
    assert D.parse_status(text, "", 0)["157.pbs"].phase is Phase.HELD


def test_numeric_env_value_invalid_json(fixtures_dir: Path) -> None:
    fragment = fx(fixtures_dir, "qstat-f-F-json.numeric-env-var-invalid-json.fragment.txt")
    bad_line = fragment.splitlines()[0].rstrip(",")
    held = fx(fixtures_dir, "qstat-x-f-F-json.held.openpbs19.json")
    text = held.replace('"PBS_O_HOST":"pbs"', '"PBS_O_HOST":"pbs",\n' + bad_line)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    found = D.parse_status(text, "", 0)
    assert found["157.pbs"].phase is Phase.HELD and found["157.pbs"].name == "pbs_hold_job"


def test_unescaped_quote_falls_back_to_scanning(fixtures_dir: Path) -> None:
    held = fx(fixtures_dir, "qstat-x-f-F-json.held.openpbs19.json")
    text = held.replace(
        '"PBS_O_HOST":"pbs"', '"PBS_O_HOST":"pbs",\n"BASH_FUNC_x%%":"() {  echo "hi\n}"'
    )
    found = D.parse_status(text, "", 0)
    assert found["157.pbs"].phase is Phase.HELD


@pytest.mark.parametrize(
    "stdout",
    [
        "qstat-x-f-F-JSON.cannot-connect.stdout.openpbs22.json",
        "qstat-x-f-F-JSON.cannot-connect.no-route.stdout.pbspro2025.json",
    ],
)
def test_empty_header_object_means_no_jobs(fixtures_dir: Path, stdout: str) -> None:
    assert D.parse_status(fx(fixtures_dir, stdout), "", 0) == {}
    assert D.parse_status("", "", 0) == {}


@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [
        (
            "qstat-x-f-F-JSON.cannot-connect.stdout.openpbs22.json",
            "qstat-x-f-F-JSON.cannot-connect.connection-refused.stderr.txt",
        ),
        (
            "qstat-x-f-F-JSON.cannot-connect.no-route.stdout.pbspro2025.json",
            "qstat-x-f-F-JSON.cannot-connect.no-route.stderr.txt",
        ),
    ],
)
def test_cannot_connect_is_transient(fixtures_dir: Path, stdout: str, stderr: str) -> None:
    for parse in (D.parse_status, D.parse_history):
        with pytest.raises(RemoteCommandError) as info:
            parse(fx(fixtures_dir, stdout), fx(fixtures_dir, stderr), 255)
        assert info.value.transient
    with pytest.raises(SubmitRejected) as rejected:
        D.parse_submit("", fx(fixtures_dir, stderr), 255)
    assert rejected.value.transient
    with pytest.raises(RemoteCommandError) as cancel:
        D.parse_cancel("", fx(fixtures_dir, stderr), 255)
    assert cancel.value.transient


@pytest.mark.parametrize(
    "name", ["qstat.unknown-job-id.stderr.txt", "qstat.job-has-finished-use-x.stderr.txt"]
)
def test_unknown_or_finished_ids_are_not_errors(fixtures_dir: Path, name: str) -> None:
    stderr = fx(fixtures_dir, name)
    assert D.parse_status("", stderr, 153) == {}
    held = fx(fixtures_dir, "qstat-x-f-F-json.held.openpbs19.json")
    assert list(D.parse_status(held, stderr, 153)) == ["157.pbs"]


def test_other_qstat_failure_is_an_error() -> None:
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status("", "qstat: conflicting options.\n", 2)
    assert not info.value.transient


def test_array_ids() -> None:
    text = json.dumps(
        {
            "pbs_version": "20.0.1",
            "Jobs": {
                "123[].srv": {"Job_Name": "arr", "job_state": "B"},
                "123[4].srv": {"Job_Name": "arr", "job_state": "X", "Exit_status": 0},
                "123[5].srv": {"Job_Name": "arr", "job_state": "X", "Exit_status": 271},
                "124.srv": {"job_state": "F", "Exit_status": -29},
                "125.srv": {"job_state": "F"},
                "126.srv": {"job_state": "S"},
            },
        }
    )
    found = D.parse_status(text, "", 0)
    assert found["123[].srv"].phase is Phase.RUNNING
    assert (found["123[4].srv"].phase, found["123[4].srv"].exit_code) == (Phase.COMPLETED, 0)
    assert (found["123[5].srv"].phase, found["123[5].srv"].exit_code) == (Phase.FAILED, 143)
    assert found["123[5].srv"].reason == "killed by signal 15"
    assert found["124.srv"].phase is Phase.TIMEOUT
    assert found["125.srv"].phase is Phase.CANCELLED
    assert found["126.srv"].phase is Phase.HELD and found["126.srv"].reason == "suspended"


def test_submit_outputs(fixtures_dir: Path) -> None:
    assert D.parse_submit(fx(fixtures_dir, "qsub.success-jobid.txt"), "", 0) == "24"
    assert D.parse_submit("Welcome to the cluster\n1234.pbs01\n", "", 0) == "1234.pbs01"
    assert D.parse_submit("55[].srv\n", "", 0) == "55[].srv"
    with pytest.raises(SubmitRejected) as bad_queue:
        D.parse_submit("", fx(fixtures_dir, "qsub.unknown-queue.stderr.txt"), 1)
    assert not bad_queue.value.transient
    assert "Unknown queue" in bad_queue.value.message
    for name in (
        "qsub.would-exceed-complex-per-user-limit.stderr.txt",
        "qsub.would-exceed-queue-generic-per-user-limit.stderr.txt",
    ):
        with pytest.raises(SubmitRejected) as limit:
            D.parse_submit("", fx(fixtures_dir, name), 1)
        assert limit.value.transient
    with pytest.raises(ParseError):
        D.parse_submit("something odd\n", "", 0)
    with pytest.raises(ParseError):
        D.parse_submit("", "", 1)


def test_cancel_outputs(fixtures_dir: Path) -> None:
    D.parse_cancel("", "", 0)
    D.parse_cancel("", fx(fixtures_dir, "qdel.unknown-job-id.stderr.txt"), 1)
    D.parse_cancel("", fx(fixtures_dir, "qdel.job-has-finished.stderr.txt"), 1)
    for name in (
        "qdel.unauthorized-request.stderr.txt",
        "qdel.illegally-formed-job-identifier.stderr.txt",
        "qdel.no-args-usage.stderr.txt",
    ):
        with pytest.raises(RemoteCommandError) as info:
            D.parse_cancel("", fx(fixtures_dir, name), 1)
        assert not info.value.transient


def test_version() -> None:
    assert D.parse_version("pbs_version = 19.1.3\n", "", 0) == "PBS 19.1.3"
    assert D.parse_version("pbs_version = 2025.2.0.20250218043111\n", "", 0) == (
        "PBS 2025.2.0.20250218043111"
    )
    assert D.parse_version("Version: 6.1.2\nCommit: abc\n", "", 0) == "Torque 6.1.2"
    with pytest.raises(ParseError):
        D.parse_version("", "qstat: command not found", 127)


def test_argv() -> None:
    job = JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=("true",), workdir="/w")
    assert D.submit_argv(job) == ["qsub", "/w/.schedulerd/sd-1-1.sh"]
    assert D.status_argv("alice", ["1.s", "2.s"]) == ["qstat", "-f", "-F", "json", "1.s", "2.s"]
    assert D.history_argv("alice", ["1.s"], 0.0) == ["qstat", "-x", "-f", "-F", "json", "1.s"]
    assert D.cancel_argv(["1.s", "2.s"]) == ["qdel", "1.s", "2.s"]
    assert D.hold_argv(["1.s"]) == ["qhold", "1.s"]
    assert D.release_argv(["1.s"]) == ["qrls", "1.s"]
    assert D.version_argv() == ["qstat", "--version"]
    assert D.dry_run_argv(job) is None and not D.has_dry_run
    assert D.extra_files(job) == {}


# --- fuzzing -------------------------------------------------------------------------------

PARSERS = parsers_of(D)
FIXTURE_TEXTS = [p.read_text() for p in sorted((FIXTURES / "pbspro").glob("*")) if p.is_file()]


@FUZZ_MORE
@given(st.text(), st.text(max_size=50), st.integers(-1, 256))
def test_fuzz_arbitrary_text(text: str, stderr: str, status: int) -> None:
    only_our_errors(PARSERS, text, stderr, status)


@FUZZ_MORE
@given(st.sampled_from(FIXTURE_TEXTS or [""]), EDITS)
def test_fuzz_mutated_fixtures(base: str, edits: list[tuple[int, int, str]]) -> None:
    only_our_errors_after_edits(PARSERS, base, edits)


# --- the rendered script -------------------------------------------------------------------


def _job(workdir: Path, **kw: object) -> JobRequest:
    fields: dict[str, object] = {
        "job_id": 7,
        "attempt": 2,
        "name": "sd-7-2",
        "argv": ("sleep", "0.5"),
        "workdir": str(workdir),
    }
    fields.update(kw)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_directives(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        queue="short",
        cpus=4,
        memory_mb=2048,
        walltime_s=3 * 3600 + 62,
        account="proj1",
        extra_directives=("-l place=scatter", "#PBS -m n"),
    )
    lines = D.render_script(job).splitlines()
    assert lines[0] == "#!/bin/sh"
    for expected in (
        "#PBS -N sd-7-2",
        "#PBS -q short",
        "#PBS -A proj1",
        "#PBS -l select=1:ncpus=4:mem=2048mb",
        "#PBS -l walltime=03:01:02",
        f"#PBS -o {tmp_path}/sd-7-2.out",
        f"#PBS -e {tmp_path}/sd-7-2.err",
        "#PBS -r n",
        "#PBS -l place=scatter",
        "#PBS -m n",
    ):
        assert expected in lines
    directive_block = lines[1 : lines.index(next(x for x in lines if not x.startswith("#PBS")))]
    assert all(x.startswith("#PBS ") for x in directive_block)
    assert "#PBS -r y" in D.render_script(_job(tmp_path, requeue=True)).splitlines()
    assert "#PBS -l select=1:ncpus=2" in D.render_script(_job(tmp_path, cpus=2)).splitlines()


@pytest.mark.parametrize(
    "bad",
    [
        {"queue": "short\n#PBS -q evil"},
        {"account": "a\nrm -rf ~"},
        {"extra_directives": ("-l x=1\ntouch /tmp/pwned",)},
        {"queue": "two words"},
        {"stdout": "/tmp/a'b.out"},
        {"stderr": "/tmp/host:path"},
        {"cpus": 0},
    ],
)
def test_unsafe_values_rejected(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        D.render_script(_job(tmp_path, **bad))


ARGS = ("it's", '"dq"', "$(touch pwned)", "a;b", "line1\nline2", "`id`", "$HOME", "")


def test_script_runs_with_sh(tmp_path: Path) -> None:
    workdir = tmp_path / "w'o;$(touch pwned)\"k"
    workdir.mkdir()
    record = "import json,os,sys; json.dump([sys.argv[1:], os.environ['ODD']], open('args.json','w')); sys.exit(5)"
    job = _job(
        workdir,
        argv=(sys.executable, "-c", record, *ARGS),
        env={"ODD": "x'y\"$(z);\nw"},
        stdout=str(tmp_path / "out.txt"),
        stderr=str(tmp_path / "err.txt"),
    )
    script = tmp_path / "job.sh"
    script.write_text(D.render_script(job))
    proc = subprocess.run(["/bin/sh", str(script)], cwd=tmp_path, timeout=30, check=False)
    assert proc.returncode == 5
    args, odd = json.loads((workdir / "args.json").read_text())
    assert args == list(ARGS) and odd == "x'y\"$(z);\nw"
    assert not (workdir / "pwned").exists() and not (tmp_path / "pwned").exists()
    record_file = workdir / ".schedulerd" / "sd-7-2.exit"
    assert parse_exit_file(record_file.read_text()).exit_code == 5


# --- round trips through the fake head -----------------------------------------------------


def fake_head(tmp_path: Path, **config: Any) -> DialectHead:
    return DialectHead(tmp_path, D, "pbspro", poll_by_id=True, **config)


def test_round_trip_complete_and_fail(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    gate = tmp_path / "gate"
    ok = head.launch(*gated(gate))
    bad = head.launch(*gated(gate, "exit 3"))
    assert ok.endswith(".fakehead") and ok != bad
    first = head.observe(ok)
    assert first is not None and first.phase in {Phase.QUEUED, Phase.RUNNING}
    assert first.name == "sd-1-1"
    head.wait(lambda: head.observe(ok), {Phase.RUNNING})
    gate.touch()
    deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
    while head.observe(ok) is not None or head.observe(bad) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    done = head.history(ok).get(ok)
    assert done is not None and (done.phase, done.exit_code) == (Phase.COMPLETED, 0)
    failed = head.history(bad).get(bad)
    assert failed is not None and (failed.phase, failed.exit_code) == (Phase.FAILED, 3)
    assert failed.name == "sd-2-1"
    exit_file = head.workdir / ".schedulerd" / "sd-2-1.exit"
    assert parse_exit_file(exit_file.read_text()).exit_code == 3


def test_cancel_running(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    nid = head.launch("sleep", "30")
    head.wait(lambda: head.observe(nid), {Phase.RUNNING})
    D.parse_cancel(*head.run(D.cancel_argv([nid])))
    obs = head.wait(lambda: head.history(nid).get(nid), set(FINISHED_PHASES))
    assert obs.phase is not Phase.COMPLETED
    out, err, status = head.run(D.cancel_argv([nid]))
    assert "Job has finished" in err and status != 0
    D.parse_cancel(out, err, status)


def test_hold_release_and_system_hold(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)
    nid = head.launch("sleep", "0.5")
    assert head.observe(nid) == Observation(native_id=nid, phase=Phase.QUEUED, name="sd-1-1")
    assert head.run(D.hold_argv([nid]))[2] == 0
    held = head.observe(nid)
    assert held is not None and (held.phase, held.reason) == (Phase.HELD, "user hold")
    assert head.run(D.release_argv([nid]))[2] == 0
    released = head.observe(nid)
    assert released is not None and released.phase is Phase.QUEUED
    head.fake.set_faults(hold_next=1)
    other = head.launch("sleep", "0.5")
    system = head.observe(other)
    assert system is not None and system.phase is Phase.HELD
    assert system.reason is not None and system.reason.startswith("system hold")


def test_submit_faults(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    head.fake.set_faults(submit_transient=1, submit_permanent=1)
    with pytest.raises(SubmitRejected) as transient:
        head.launch("true")
    assert transient.value.transient and "per-user limit" in transient.value.message
    with pytest.raises(SubmitRejected) as permanent:
        head.launch("true")
    assert not permanent.value.transient
    assert head.launch("true").endswith(".fakehead")


def test_down(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    nid = head.launch("sleep", "0.5")
    head.fake.set_faults(down=True)
    out, err, status = head.run(D.status_argv("alice", [nid]))
    assert "cannot connect to server" in err and status == 255
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status(out, err, status)
    assert info.value.transient
    with pytest.raises(SubmitRejected) as rejected:
        head.launch("true")
    assert rejected.value.transient
    with pytest.raises(RemoteCommandError) as cancel:
        D.parse_cancel(*head.run(D.cancel_argv([nid])))
    assert cancel.value.transient


def test_noise_and_numeric_env(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)
    head.fake.set_faults(noise=True)
    job = _job(head.workdir, extra_directives=("-v FOO=005",))
    Path(job.script_path).write_text(D.render_script(job))
    nid = D.parse_submit(*head.run(D.submit_argv(job)))
    out, err, status = head.run(D.status_argv("alice", [nid]))
    assert not out.startswith("{") and '"FOO":005' in out
    assert D.parse_status(out, err, status)[nid].phase is Phase.QUEUED


def test_forgotten_jobs_are_unknown(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    head.fake.set_faults(forget_finished=True)
    nid = head.launch("true")
    deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
    while head.observe(nid) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    argv = D.history_argv("alice", [nid], 0.0)
    assert argv is not None
    out, err, status = head.run(argv)
    assert f"qstat: Unknown Job Id {nid}" in err
    assert D.parse_history(out, err, status) == {}


def test_version_through_fake(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    assert D.parse_version(*head.run(D.version_argv())) == "PBS 19.1.3"
