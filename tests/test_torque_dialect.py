"""Torque dialect: real outputs, fuzzing, the rendered script, the fake head."""

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
from schedulerd.drivers.torque import TorqueDialect
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

D = TorqueDialect()


def fx(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "torque" / name).read_text()


# --- real outputs ----------------------------------------------------------------------------


def test_xml_running_queued_array(fixtures_dir: Path) -> None:
    found = D.parse_status(fx(fixtures_dir, "qstat-t-x.running-queued-array.torque6.xml"), "", 0)
    host = "ip-10-0-0-196.eu-west-1.compute.internal"
    assert list(found) == [f"{n}.{host}" for n in (149, 150, 151, 152)] + [
        f"166[{i}].{host}" for i in (1, 2, 3)
    ]
    running = found[f"149.{host}"]
    assert (running.phase, running.name, running.started_at) == (
        Phase.RUNNING,
        "STDIN",
        1562156185.0,
    )
    assert running.reason == "Job started on Wed Jul 03 at 12:16"
    queued = found[f"152.{host}"]
    assert queued.phase is Phase.QUEUED
    assert queued.reason is not None and queued.reason.startswith("Not Running - PBS Error")
    sub = found[f"166[2].{host}"]
    assert (sub.phase, sub.name) == (Phase.QUEUED, "STDIN-2")


def test_xml_no_jobs(fixtures_dir: Path) -> None:
    assert D.parse_status(fx(fixtures_dir, "qstat-t-x.no-jobs.xml"), "", 0) == {}
    assert D.parse_status("", "", 0) == {}


def test_xml_completed_with_raw_newlines(fixtures_dir: Path) -> None:
    text = fx(fixtures_dir, "qstat-x-f.completed-exit-status-sched-hint.dkfz.xml")
    assert D.parse_status(text, "", 0) == {
        "4564045.pbsserver": Observation(
            native_id="4564045.pbsserver",
            phase=Phase.COMPLETED,
            exit_code=0,
            name="r180405_163953553_stds_snvJoinVcfFiles",
            started_at=1522939183.0,
            finished_at=1522939194.0,
        )
    }


def test_xml_queued_and_held(fixtures_dir: Path) -> None:
    queued = D.parse_status(fx(fixtures_dir, "qstat-x-f.queued.dkfz.xml"), "", 0)
    assert queued["4499334.pbsserver"].phase is Phase.QUEUED
    assert queued["4499334.pbsserver"].name == "r180328_183957634_pid_4_starAlignment"
    held = D.parse_status(fx(fixtures_dir, "qstat-x.held-user-hold.dkfz-anonymised.xml"), "", 0)
    obs = held["15020227.testServer"]
    assert (obs.phase, obs.reason, obs.name) == (Phase.HELD, "user hold", "workflow_test")


def test_xml_lisa(fixtures_dir: Path) -> None:
    found = D.parse_status(
        fx(fixtures_dir, "qstat-x.queued-running-depend.surfsara-lisa.xml"), "", 0
    )
    phases = {k.split(".")[0]: v.phase for k, v in found.items()}
    assert phases == {
        "8921165": Phase.QUEUED,
        "8931330": Phase.QUEUED,
        "8938236": Phase.RUNNING,
        "8941161": Phase.RUNNING,
        "8941948": Phase.RUNNING,
        "8942464": Phase.RUNNING,
        "8954523": Phase.QUEUED,
    }
    assert found["8941161.batch1.lisa.surfsara.nl"].name == "rrelease"
    assert found["8941161.batch1.lisa.surfsara.nl"].started_at == 1432321726.0


def test_text_qstat_f(fixtures_dir: Path) -> None:
    ichec = D.parse_status(
        fx(fixtures_dir, "qstat-f.held-running-completed-queued.ichec.txt"), "", 0
    )
    assert len(ichec) == 10
    assert (ichec["549159"].phase, ichec["549159"].reason) == (Phase.HELD, "system hold")
    done = ichec["546437"]
    assert (done.phase, done.exit_code, done.reason) == (Phase.FAILED, 143, "killed by signal 15")
    assert ichec["555716"].phase is Phase.RUNNING and ichec["547637"].phase is Phase.QUEUED
    t6 = D.parse_status(fx(fixtures_dir, "qstat-f.completed-exit-status.torque6.txt"), "", 0)
    obs = t6["40680075.e4spro-cluster"]
    assert (obs.phase, obs.exit_code, obs.name) == (Phase.COMPLETED, 0, "hostname_test")
    rrcki = D.parse_status(fx(fixtures_dir, "qstat-f.running.rrcki-tier1.txt"), "", 0)
    assert rrcki["55755440.seer.t1.grid.kiae.ru"].phase is Phase.RUNNING


def _drop_lines(text: str, prefix: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith(prefix))


def test_text_completed_without_exit_status_is_left_to_the_exit_file(
    fixtures_dir: Path,
) -> None:
    # a head that shows finished jobs as C without exit_status: the queue cannot tell a
    # job that ran and failed from one deleted before it ran, so the job is treated as
    # having left the queue (the driver then reads its exit file)
    ichec = fx(fixtures_dir, "qstat-f.held-running-completed-queued.ichec.txt")
    limited = TorqueDialect(xml=False)
    found = limited.parse_status(_drop_lines(ichec, "    exit_status = "), "", 0)
    assert len(found) == 8 and "546437" not in found and "543984" not in found
    assert found["549159"].phase is Phase.HELD and found["555716"].phase is Phase.RUNNING
    t6 = fx(fixtures_dir, "qstat-f.completed-exit-status.torque6.txt")
    assert limited.parse_status(_drop_lines(t6, "    exit_status = "), "", 0) == {}
    # with exit_status the queue still decides, in text and in XML
    assert limited.parse_status(t6, "", 0)["40680075.e4spro-cluster"].exit_code == 0
    xml = fx(fixtures_dir, "qstat-x-f.completed-exit-status-sched-hint.dkfz.xml")
    assert D.parse_status(xml.replace("<exit_status>0</exit_status>", ""), "", 0) == {}


def test_text_tab_continuations_join_values(fixtures_dir: Path) -> None:
    from schedulerd.drivers.pbs_parse import parse_full_text

    ichec = parse_full_text(fx(fixtures_dir, "qstat-f.held-running-completed-queued.ichec.txt"))
    assert ichec["549159"]["Output_Path"] == (
        "host.domain:/some/path/to/sth/GLmore/down/the/path/ASSP-1R.o549159"
    )
    assert ichec["549159"]["Hold_Types"] == "s"


# the layout of Slurm's Torque-compatible qstat -f (contribs/torque/qstat.pl,
# print_job_full): "Job Id:" and a TAB, attributes indented by a TAB, no wrapping,
# finished jobs C without exit_status
SLURM_WRAPPER_TEXT = (
    "Job Id:\t4107\n"
    "\tJob_Name = sd-7-1\n"
    "\tJob_Owner = alice@login1\n"
    "\tjob_state = R\n"
    "\tqueue = normal\n"
    "\tqtime = Tue Mar  5 10:00:01 2024\n"
    "\tmtime = Tue Mar  5 10:00:03 2024\n"
    "\texec_host = node7/2\n"
    "\tPriority = 4294901758\n"
    "\teuser = alice(1000)\n"
    "\tegroup = alice(1000)\n"
    "\tResource_List.walltime = 01:00:00\n"
    "\tResource_List.nodect = 1\n"
    "\tResource_List.ncpus = 2\n"
    "\n"
    "Job Id:\t4108\n"
    "\tJob_Name = sd-8-1\n"
    "\tjob_state = C\n"
    "\tqueue = normal\n"
    "\n"
    "Job Id:\t4109\n"
    "\tJob_Name = sd-9-1\n"
    "\tjob_state = Q\n"
    "\n"
)


def test_slurm_wrapper_text() -> None:
    limited = TorqueDialect(xml=False)
    found = limited.parse_status(SLURM_WRAPPER_TEXT, "", 0)
    assert set(found) == {"4107", "4109"}
    assert (found["4107"].phase, found["4107"].name) == (Phase.RUNNING, "sd-7-1")
    assert found["4109"].phase is Phase.QUEUED
    # none of the ids known: it prints nothing and exits 153
    assert limited.parse_status("", "", 153) == {}
    with pytest.raises(RemoteCommandError):
        limited.parse_status("", "", 1)


USAGE = "Usage:\n    qstat [-f] [-a|-i|-r] [-n [-1]] [-G|-M] [-u user_list] [job_id...]\n"


@pytest.mark.parametrize(
    ("stdout", "stderr", "status", "xml"),
    [
        ("", "qstat: Unknown Job Id Error 0.server\n", 153, True),
        ("", "qstat: Unknown Job Id 0.server\n", 153, True),
        ("<Data></Data>\n", "", 0, True),
        ("", "qstat: illegally formed job identifier: 0\n", 1, True),
        ("", f"Unknown option: x\n{USAGE}", 2, False),
        ("", "qstat: invalid option -- 'x'\nusage: qstat [-f] [job_id...]\n", 2, False),
        ("", "qstat: illegal option -- x\n", 1, False),
        ("", USAGE, 2, False),
    ],
)
def test_probe_decides_the_status_format(stdout: str, stderr: str, status: int, xml: bool) -> None:
    dialect, detail = D.for_probe(stdout, stderr, status)
    assert dialect.xml is xml and detail
    assert dialect.status_argv("alice", ["1.s"]) == ["qstat", "-x" if xml else "-f", "1.s"]
    assert dialect.status_argv("alice", []) == ["true"]


def test_probe_of_an_unreachable_server_decides_nothing() -> None:
    with pytest.raises(RemoteCommandError) as info:
        D.for_probe("", "qstat: cannot connect to server head (errno=111) Connection refused\n", 1)
    assert info.value.transient
    assert D.probe_argv("unknown") == D.probe_argv(None) == ["qstat", "-x", "0"]
    assert D.probe_argv("Torque 6.1.2") is None  # Torque's own qstat has -x


@pytest.mark.parametrize(
    "name", ["qstat-jobid-grep.running.txt", "qstat-jobid.default-table.running.txt"]
)
def test_default_table_is_not_our_format(fixtures_dir: Path, name: str) -> None:
    with pytest.raises(ParseError):
        D.parse_status(fx(fixtures_dir, name), "", 0)


@pytest.mark.parametrize(
    "name", ["qstat.unknown-job-id-error.stderr.txt", "qstat.unknown-job-id.old-torque.stderr.txt"]
)
def test_unknown_job_wordings(fixtures_dir: Path, name: str) -> None:
    stderr = fx(fixtures_dir, name)
    assert D.parse_status("", stderr, 153) == {}
    held = fx(fixtures_dir, "qstat-x.held-user-hold.dkfz-anonymised.xml")
    assert list(D.parse_status(held, stderr, 153)) == ["15020227.testServer"]


def test_cannot_connect() -> None:
    stderr = (
        "Unable to communicate with head(10.0.0.1)\n"
        "Cannot connect to specified server host 'head'.\n"
        "qstat: cannot connect to server head (errno=111) Connection refused\n"
    )
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status("", stderr, 1)
    assert info.value.transient


def test_submit_outputs(fixtures_dir: Path) -> None:
    assert D.parse_submit(fx(fixtures_dir, "qsub.jobid-with-server.txt"), "", 0) == (
        "6401.gb-ce-kun.els.sara.nl"
    )
    for name in (
        "qsub.exceeds-queue-resource-limits.stderr.txt",
        "qsub.unauthorized-queue-acl.stderr.txt",
    ):
        with pytest.raises(SubmitRejected) as info:
            D.parse_submit("", fx(fixtures_dir, name), 190)
        assert not info.value.transient
    with pytest.raises(SubmitRejected) as limit:
        D.parse_submit(
            "",
            "qsub: submit error (Maximum number of jobs already in queue for user MSG=total "
            "number of current user's jobs exceeds the queue limit: user a@h, queue batch)\n",
            1,
        )
    assert limit.value.transient


def test_cancel_outputs(fixtures_dir: Path) -> None:
    D.parse_cancel("", fx(fixtures_dir, "qdel.unknown-job-id.stderr.txt"), 153)
    D.parse_cancel(
        "", "qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE 5\n", 153
    )
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel("", fx(fixtures_dir, "qdel.unauthorized-not-permitted.stderr.txt"), 159)
    assert not info.value.transient


def test_version_and_argv() -> None:
    assert D.parse_version("Version: 6.1.2\nCommit: 1234\n", "", 0) == "Torque 6.1.2"
    job = JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=("true",), workdir="/w")
    assert D.submit_argv(job) == ["qsub", "/w/.schedulerd/sd-1-1.sh"]
    assert D.status_argv("alice", ["1.s", "2[3].s"]) == ["qstat", "-x", "1.s", "2[3].s"]
    assert D.history_argv("alice", ["1.s"], 0.0) is None
    assert D.cancel_argv(["1.s"]) == ["qdel", "1.s"]
    assert D.hold_argv(["1.s"]) == ["qhold", "1.s"]
    assert D.release_argv(["1.s"]) == ["qrls", "1.s"]
    assert D.version_argv() == ["qstat", "--version"]
    assert D.dry_run_argv(job) is None and not D.has_dry_run and D.extra_files(job) == {}


# --- fuzzing -------------------------------------------------------------------------------

FIXTURE_TEXTS = [p.read_text() for p in sorted((FIXTURES / "torque").glob("*")) if p.is_file()]
PARSERS = [*parsers_of(D), TorqueDialect(xml=False).parse_status, D.for_probe]


@FUZZ_MORE
@given(st.text(), st.text(max_size=50), st.integers(-1, 256))
def test_fuzz_arbitrary_text(text: str, stderr: str, status: int) -> None:
    only_our_errors(PARSERS, text, stderr, status)
    only_our_errors(PARSERS, "<Data><Job>" + text, stderr, status)


@FUZZ_MORE
@given(st.sampled_from(FIXTURE_TEXTS or [""]), EDITS)
def test_fuzz_mutated_fixtures(base: str, edits: list[tuple[int, int, str]]) -> None:
    only_our_errors_after_edits(PARSERS, base, edits)


# --- the rendered script -------------------------------------------------------------------


def _job(workdir: Path, **kw: object) -> JobRequest:
    fields: dict[str, object] = {
        "job_id": 3,
        "attempt": 1,
        "name": "sd-3-1",
        "argv": ("sleep", "0.5"),
        "workdir": str(workdir),
    }
    fields.update(kw)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_directives(tmp_path: Path) -> None:
    job = _job(tmp_path, queue="batch", cpus=8, memory_mb=512, walltime_s=59, account="acct")
    lines = D.render_script(job).splitlines()
    for expected in (
        "#PBS -N sd-3-1",
        "#PBS -q batch",
        "#PBS -A acct",
        "#PBS -l nodes=1:ppn=8",
        "#PBS -l mem=512mb",
        "#PBS -l walltime=00:00:59",
        f"#PBS -o {tmp_path}/sd-3-1.out",
        f"#PBS -e {tmp_path}/sd-3-1.err",
        "#PBS -r n",
    ):
        assert expected in lines
    with pytest.raises(ValueError):
        D.render_script(_job(tmp_path, queue="q\n#PBS -q x"))
    with pytest.raises(ValueError):
        D.render_script(_job(tmp_path, extra_directives=("-l a=1\rtouch x",)))


ARGS = ("it's", '"dq"', "$(touch pwned)", "a;b", "line1\nline2", "$HOME")


def test_script_runs_with_sh(tmp_path: Path) -> None:
    workdir = tmp_path / "w'$(touch pwned);\"d"
    workdir.mkdir()
    record = "import json,sys; json.dump(sys.argv[1:], open('args.json','w'))"
    job = _job(
        workdir,
        argv=(sys.executable, "-c", record, *ARGS),
        stdout=str(tmp_path / "o"),
        stderr=str(tmp_path / "e"),
    )
    script = tmp_path / "job.sh"
    script.write_text(D.render_script(job))
    proc = subprocess.run(["/bin/sh", str(script)], cwd=tmp_path, timeout=30, check=False)
    assert proc.returncode == 0
    assert json.loads((workdir / "args.json").read_text()) == list(ARGS)
    assert not (workdir / "pwned").exists() and not (tmp_path / "pwned").exists()
    exit_file = workdir / ".schedulerd" / "sd-3-1.exit"
    assert parse_exit_file(exit_file.read_text()).exit_code == 0


# --- round trips through the fake head -----------------------------------------------------


def fake_head(tmp_path: Path, **config: Any) -> DialectHead:
    return DialectHead(tmp_path, D, "torque", poll_by_id=True, **config)


def test_round_trip_complete_and_fail(tmp_path: Path) -> None:
    head = fake_head(tmp_path, keep_finished_in_queue=60)
    gate = tmp_path / "gate"
    ok = head.launch(*gated(gate))
    bad = head.launch(*gated(gate, "exit 3"))
    first = head.observe(ok)
    assert first is not None and first.phase in {Phase.QUEUED, Phase.RUNNING}
    assert first.name == "sd-1-1"
    head.wait_for(ok, {Phase.RUNNING})
    gate.touch()
    done = head.wait_for(ok, set(FINISHED_PHASES))
    assert (done.phase, done.exit_code) == (Phase.COMPLETED, 0)
    assert done.finished_at is not None and done.started_at is not None
    failed = head.wait_for(bad, set(FINISHED_PHASES))
    assert (failed.phase, failed.exit_code, failed.name) == (Phase.FAILED, 3, "sd-2-1")


def test_completed_jobs_leave_the_queue(tmp_path: Path) -> None:
    head = fake_head(tmp_path)
    nid = head.launch("true")
    deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
    while head.observe(nid) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out, err, status = head.run(D.status_argv("alice", [nid]))
    assert f"qstat: Unknown Job Id Error {nid}" in err
    assert D.parse_status(out, err, status) == {}


def test_cancel_running(tmp_path: Path) -> None:
    head = fake_head(tmp_path, keep_finished_in_queue=60)
    nid = head.launch("sleep", "30")
    head.wait_for(nid, {Phase.RUNNING})
    D.parse_cancel(*head.run(D.cancel_argv([nid])))
    obs = head.wait_for(nid, set(FINISHED_PHASES))
    assert obs.phase is not Phase.COMPLETED
    out, err, status = head.run(D.cancel_argv([nid]))
    assert status != 0 and "Request invalid for state of job" in err
    D.parse_cancel(out, err, status)


def test_hold_release(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)
    nid = head.launch("sleep", "0.5")
    assert head.observe(nid) == Observation(native_id=nid, phase=Phase.QUEUED, name="sd-1-1")
    assert head.run(D.hold_argv([nid]))[2] == 0
    held = head.observe(nid)
    assert held is not None and (held.phase, held.reason) == (Phase.HELD, "user hold")
    assert head.run(D.release_argv([nid]))[2] == 0
    again = head.observe(nid)
    assert again is not None and again.phase is Phase.QUEUED


def test_faults(tmp_path: Path) -> None:
    head = fake_head(tmp_path, slots=0)
    head.fake.set_faults(submit_transient=1, submit_permanent=1, noise=True)
    with pytest.raises(SubmitRejected) as transient:
        head.launch("true")
    assert transient.value.transient
    with pytest.raises(SubmitRejected) as permanent:
        head.launch("true")
    assert not permanent.value.transient and "Unknown queue" in permanent.value.message
    nid = head.launch("true")
    out, err, status = head.run(D.status_argv("alice", [nid]))
    assert not out.startswith("<Data>")
    assert D.parse_status(out, err, status)[nid].phase is Phase.QUEUED
    head.fake.set_faults(down=True)
    out, err, status = head.run(D.status_argv("alice", [nid]))
    assert "cannot connect to server" in err
    with pytest.raises(RemoteCommandError) as down:
        D.parse_status(out, err, status)
    assert down.value.transient
    with pytest.raises(SubmitRejected) as submit_down:
        head.launch("true")
    assert submit_down.value.transient


def test_version_through_fake(tmp_path: Path) -> None:
    assert D.parse_version(*fake_head(tmp_path).run(D.version_argv())) == "Torque 6.1.2"


def test_limited_head_round_trip(tmp_path: Path) -> None:
    # a Torque-compatible qstat without -x and --version, showing finished jobs as C
    # without exit_status
    head = fake_head(tmp_path, keep_finished_in_queue=60, qstat_limited=True)
    limited, detail = D.for_probe(*head.run(["qstat", "-x", "0"]))
    assert not limited.xml and "-f" in detail
    with pytest.raises(ParseError):
        D.parse_version(*head.run(D.version_argv()))
    gate = tmp_path / "gate"
    nid = head.launch(*gated(gate, "exit 3"))

    def status() -> Observation | None:
        return limited.parse_status(*head.run(limited.status_argv("alice", [nid]))).get(nid)

    deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
    while (obs := status()) is None or obs.phase is not Phase.RUNNING:
        assert time.monotonic() < deadline, obs
        time.sleep(0.1)
    assert obs.name == "sd-1-1"
    out, _, _ = head.run(limited.status_argv("alice", [nid]))
    assert "\n\t" in out  # long values continue on TAB-indented lines
    gate.touch()
    while head.fake.job(nid)["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out, err, code = head.run(limited.status_argv("alice", [nid]))
    assert "job_state = C" in out and "exit_status" not in out
    assert limited.parse_status(out, err, code) == {}  # the exit file decides
    exit_file = head.workdir / ".schedulerd" / "sd-1-1.exit"
    assert parse_exit_file(exit_file.read_text()).exit_code == 3
    head.fake.set_config(keep_finished_in_queue=0)
    while head.run(limited.status_argv("alice", [nid]))[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert head.run(limited.status_argv("alice", [nid])) == ("", "", 153)
