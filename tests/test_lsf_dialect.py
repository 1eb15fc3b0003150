"""The LSF dialect: real outputs, fuzzing, the rendered script, and a round trip through
the fake LSF head (tests/fakebatch/lsf.py).

Longer than most modules: one file per dialect keeps every test of it in one place, and
LSF has three bjobs output shapes (JSON, delimited, wide) each with its real captures."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.lsf import LsfDialect, output_mode_for
from schedulerd.drivers.lsf_parse import (
    STATE_MAP,
    bjobs_json_records,
    observations_by_id,
    parse_delimited,
    parse_lsf_time,
)
from schedulerd.drivers.wrapper import parse_exit_file
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected
from tests.conftest import FIXTURES
from tests.helpers.dialect_head import DialectHead
from tests.helpers.fuzzing import ALLOWED

NOW = time.mktime((2026, 6, 1, 12, 0, 0, 0, 0, -1))


def dialect(**kwargs: object) -> LsfDialect:
    return LsfDialect(clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def local(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


@pytest.fixture
def lsf_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "lsf"


def read(lsf_dir: Path, name: str) -> str:
    return (lsf_dir / name).read_text()


# --- bsub ----------------------------------------------------------------------------------


def test_parse_submit_fixtures(lsf_dir: Path) -> None:
    d = dialect()
    assert d.parse_submit(read(lsf_dir, "bsub.submitted-to-queue.txt"), "", 0) == "764254593"
    assert d.parse_submit(read(lsf_dir, "bsub.submitted-to-default-queue.txt"), "", 0) == "2329803"
    # after banner and threshold lines
    out = "LSF is processing your request. Please wait ...\nJob <77> is submitted to queue <q>.\n"
    assert (
        d.parse_submit(out, "Pending job threshold reached. Retrying in 60 seconds...\n", 0) == "77"
    )


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("The destination queue has reached its job limit. Job not submitted.\n", True),
        (
            "LSF is down. Please wait ...\nbatch system daemon not responding ... still trying\n",
            True,
        ),
        ("User or one of user's groups does not have enough job slots. Job not submitted.\n", True),
        ("nosuch: No such queue. Job not submitted.\n", False),
        ("Request from non-LSF host rejected. Job not submitted.\n", False),
        ("Too many processors requested. Job not submitted.\n", False),
        ("something odd\n", False),
    ],
)
def test_parse_submit_rejections(stderr: str, transient: bool) -> None:
    with pytest.raises(SubmitRejected) as info:
        dialect().parse_submit("", stderr, 255)
    assert info.value.transient is transient


def test_parse_submit_unrecognised_output() -> None:
    with pytest.raises(ParseError):
        dialect().parse_submit("hello\n", "", 0)


# --- bjobs -json -----------------------------------------------------------------------------


def test_status_json_exit_and_done(lsf_dir: Path) -> None:
    name = "bjobs-a-hms-json-o-jobid-job_name-stat-finish_time.exit-and-done.json"
    found = dialect().parse_status(read(lsf_dir, name), "", 0)
    assert sorted(found) == ["487641", "487642", "488155", "491861", "491864", "491867"]
    assert found["487641"] == Observation(
        native_id="487641",
        phase=Phase.FAILED,
        exit_code=None,  # EXIT without an exit_code column: the exit file decides
        name="RoddyTest_testScript",
        finished_at=local(2026, 1, 7, 9, 59),
    )
    assert found["491867"].phase is Phase.COMPLETED
    assert found["491867"].exit_code == 0
    assert found["491867"].name == "RoddyTest_testScriptMultiInMixedParameters"
    assert found["491867"].finished_at == local(2026, 1, 8, 14, 21)


def test_status_json_extended_done(lsf_dir: Path) -> None:
    name = "bjobs-a-hms-json-o-extended.done-with-dependency.json"
    found = dialect().parse_status(read(lsf_dir, name), "", 0)
    # Dec 28 is in the future on 2026-06-01: it was last year
    assert found == {
        "22005": Observation(
            native_id="22005",
            phase=Phase.COMPLETED,
            exit_code=0,
            name="ls -l",
            started_at=local(2025, 12, 28, 19, 56),
            finished_at=local(2025, 12, 28, 19, 56),
        )
    }


def test_status_json_escaped_slashes(lsf_dir: Path) -> None:
    fragment = read(lsf_dir, "bjobs-json-record-fragment.escaped-slashes.txt")
    text = '{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"471773","JOB_NAME":"x\\/y",\n'
    text += fragment.rstrip() + "\n]}\n"
    records = bjobs_json_records(text)
    assert records is not None
    assert records[0]["SUB_CWD"] == "/tmp/some/cwd/folder"
    found = dialect().parse_status(text, "", 0)
    obs = found["471773"]
    assert obs.phase is Phase.RUNNING
    assert obs.name == "x/y"
    assert obs.started_at == local(2025, 12, 17, 0, 36)
    assert obs.finished_at is None  # "Dec 27 00:36 L" is the run-limit projection


def test_status_json_banner_and_pend_reason(lsf_dir: Path) -> None:
    text = read(lsf_dir, "bjobs-json.pend-reason.cannot-connect-preamble.devmodel.txt")
    # the record carries no JOBID, so parse_status cannot key it ...
    assert dialect().parse_status(text, "", 0) == {}
    # ... but the banner is skipped and the record reads as a pending job with its reason
    records = bjobs_json_records(text)
    assert records is not None
    found = observations_by_id([{**records[0], "JOBID": "5"}], NOW)
    assert found["5"].phase is Phase.QUEUED
    assert found["5"].reason == "New job is waiting for scheduling"
    assert found["5"].exit_code is None


def test_status_json_psusp(lsf_dir: Path) -> None:
    records = bjobs_json_records(read(lsf_dir, "bjobs-o-fields-json.psusp-held.json"))
    assert records is not None
    found = observations_by_id([{**records[0], "JOBID": "58652"}], NOW)
    assert found["58652"] == Observation(
        native_id="58652",
        phase=Phase.HELD,
        reason="PSUSP: suspended by its owner or the LSF administrator while pending",
        name="hold_job",
    )


def test_status_json_error_records_and_array_index() -> None:
    text = (
        '{"COMMAND":"bjobs","JOBS":3,"RECORDS":[\n'
        '{"JOBID":"9","ERROR":"Job <9> is not found"},\n'
        '{"JOBID":"10","JOBINDEX":"3","JOB_NAME":"arr[3]","STAT":"USUSP","EXIT_CODE":"",'
        '"EXIT_REASON":"","PEND_REASON":"","START_TIME":"May 30 10:00","FINISH_TIME":""},\n'
        '{"JOBID":"11","JOBINDEX":"0","JOB_NAME":"t","STAT":"EXIT","EXIT_CODE":"140",'
        '"EXIT_REASON":"TERM_RUNLIMIT: job killed after reaching LSF run time limit",'
        '"PEND_REASON":"","START_TIME":"May 30 10:00","FINISH_TIME":"May 30 11:00 L"}]}\n'
    )
    found = dialect().parse_status(text, "Job <12> is not found\n", 255)
    assert sorted(found) == ["10[3]", "11"]
    assert found["10[3]"].phase is Phase.HELD
    assert found["10[3]"].reason is not None and found["10[3]"].reason.startswith("USUSP")
    assert found["11"].phase is Phase.TIMEOUT
    assert found["11"].exit_code == 140
    assert found["11"].finished_at == local(2026, 5, 30, 11, 0)


@pytest.mark.parametrize(
    ("stat", "phase"),
    [
        ("PEND", Phase.QUEUED),
        ("RUN", Phase.RUNNING),
        ("PSUSP", Phase.HELD),
        ("USUSP", Phase.HELD),
        ("SSUSP", Phase.HELD),
        ("UNKWN", Phase.RUNNING),
        ("WAIT", Phase.QUEUED),
        ("ZOMBI", Phase.FAILED),
    ],
)
def test_state_map(stat: str, phase: Phase) -> None:
    assert STATE_MAP[stat] is phase


def test_exit_reasons_decide_the_phase() -> None:
    def one(stat: str, code: str, reason: str) -> Observation:
        record = {"JOBID": "1", "STAT": stat, "EXIT_CODE": code, "EXIT_REASON": reason}
        return observations_by_id([record], NOW)["1"]

    assert one("EXIT", "3", "").phase is Phase.FAILED
    assert one("EXIT", "3", "").exit_code == 3
    assert one("EXIT", "", "TERM_OWNER: job killed by owner").phase is Phase.CANCELLED
    assert one("EXIT", "143", "TERM_ADMIN: job killed by root or LSF administrator").phase is (
        Phase.CANCELLED
    )
    assert one("DONE", "-", "-").phase is Phase.COMPLETED


def test_status_unknown_state_is_a_parse_error() -> None:
    text = '{"RECORDS":[{"JOBID":"1","STAT":"WEIRD"}]}'
    with pytest.raises(ParseError):
        dialect().parse_status(text, "", 0)


# --- bjobs delimited / tables ----------------------------------------------------------------


def test_delimited_fixture(lsf_dir: Path) -> None:
    # aiida's field list (SOURCES.md), in our column names
    fields = [
        "jobid", "stat", "exit_reason", "exec_host", "user", "slots", "max_req_proc",
        "exec_host2", "queue", "finish_time", "start_time", "complete", "submit_time",
        "job_name",
    ]  # fmt: skip
    rows = parse_delimited(
        read(lsf_dir, "bjobs-noheader-o-delimiter-pipe.exit-pend-run-done.txt"), fields
    )
    found = observations_by_id(rows, NOW)
    assert len(found) == 7
    assert found["764213236"].phase is Phase.TIMEOUT
    assert (
        found["764213236"].reason == "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    )
    assert found["764213236"].name == "aiida-1033269"
    assert found["764213236"].finished_at == local(2026, 2, 2, 0, 46)
    assert found["764220165"].phase is Phase.QUEUED
    assert found["764254593"].phase is Phase.RUNNING
    assert found["764254593"].started_at == local(2026, 2, 2, 7, 39)
    assert found["764399747"].phase is Phase.COMPLETED  # the line with a leading space
    assert found["764399747"].exit_code == 0
    # "Dec  31 23:48 L": last year
    assert found["764245175"].started_at == local(2025, 12, 31, 23, 48)


def test_delimited_status_of_our_own_fields() -> None:
    d = dialect(output="delimited")
    argv = d.status_argv("alice", ["1"])
    assert argv[-1].endswith("delimiter='|'")
    out = "LSF is processing your request. Please wait ...\n"
    out += "12|0|EXIT|3|-|-|May 30 10:00|May 30 10:01 L|sd-4-1\n12|2|RUN|-|-|-|May 30 10:00|-|a|b\n"
    found = d.parse_status(out, "", 0)
    assert found["12"] == Observation(
        native_id="12",
        phase=Phase.FAILED,
        exit_code=3,
        name="sd-4-1",
        started_at=local(2026, 5, 30, 10, 0),
        finished_at=local(2026, 5, 30, 10, 1),
    )
    assert found["12[2]"].name == "a|b"
    with pytest.raises(ParseError):
        d.parse_status("1|RUN\n", "", 0)


def test_wide_tables(lsf_dir: Path) -> None:
    d = dialect(output="wide")
    states = d.parse_status(
        read(lsf_dir, "bjobs-w.run-pend-psusp-exit-unkwn-zombi-done.txt"), "", 0
    )
    assert {k: v.phase for k, v in states.items() if k in {"5085604", "5085611", "5085107"}} == {
        "5085604": Phase.QUEUED,
        "5085611": Phase.HELD,
        "5085107": Phase.FAILED,
    }
    assert states["5085607"].phase is Phase.RUNNING  # UNKWN
    assert states["5085608"].phase is Phase.FAILED  # ZOMBI
    assert states["5085606"].phase is Phase.COMPLETED
    assert states["5085585"].name == "phenix.autobuild autobuild_config.eff"
    assert len(states) == 14

    arrays = d.parse_status(read(lsf_dir, "bjobs-w-u-all.array-elements.sanger-farm3.txt"), "", 0)
    assert arrays["2067769[9]"].phase is Phase.RUNNING
    assert arrays["2067769[17]"].phase is Phase.QUEUED
    assert (
        arrays["276335[13]"].name
        == "tracking_homo_sapiens_funcgen_81_38_hive-Hive-verylong_rc-1[13]"
    )
    assert arrays["2068410"].phase is Phase.QUEUED

    busy = d.parse_status(read(lsf_dir, "bjobs.processing-request-preamble.txt"), "", 0)
    assert sorted(busy) == ["5157393", "5157493", "5157552", "5157610", "5157674", "5157710"]
    assert busy["5157393"].name == "*l_cmd_bd)"

    multi = d.parse_status(read(lsf_dir, "bjobs.default-format-multihost.txt"), "", 0)
    assert sorted(multi) == ["5136563", "5136570", "5136571"]
    assert multi["5136563"].name == "pi_None"

    running = d.parse_status(read(lsf_dir, "bjobs-a-w-W.running-slots-column.lsf9.1.txt"), "", 0)
    assert running["5861085"].name == "u256-1"
    assert running["5861085"].started_at == local(2025, 6, 15, 16, 48, 56)  # not in the future

    two = d.parse_status(read(lsf_dir, "bjobs-u-all-a-w-W.two-running.osc.txt"), "", 0)
    assert {k: v.name for k, v in two.items()} == {"542935": "foo", "542936": "bar"}
    assert two["542935"].started_at == local(2026, 3, 31, 14, 46, 44)

    piped = d.parse_status(read(lsf_dir, "bjobs-a-w-W.done-piped-script-jobname.osc.txt"), "", 0)
    assert piped["542945"].phase is Phase.COMPLETED
    assert piped["542945"].name is not None and piped["542945"].name.startswith("#!/bin/bash;#;")
    assert piped["542945"].finished_at == local(2026, 3, 31, 19, 25, 29)


# --- not found / down --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["bjobs.job-not-found.stderr.txt", "bjobs-l.job-not-found-after-clean-period.stderr.txt"],
)
def test_not_found_wordings(lsf_dir: Path, name: str) -> None:
    stderr = read(lsf_dir, name)
    d = dialect()
    assert d.parse_status("", stderr, 255) == {}
    assert d.parse_history("", stderr, 255) == {}
    assert d.parse_status(stderr, "", 255) == {}  # some sites merge stderr into stdout
    d.parse_cancel("", stderr, 255)


@pytest.mark.parametrize(
    "stderr", ["No job found\n", "No unfinished job found\n", "No matching job found\n"]
)
def test_empty_queue_wordings(stderr: str) -> None:
    assert dialect().parse_status("", stderr, 255) == {}
    assert dialect().parse_history("", stderr, 255) == {}


@pytest.mark.parametrize(
    "stderr",
    [
        "LSF is down. Please wait ...\n",
        "Cannot connect to LSF. Please wait ...\n",
        "batch system daemon not responding ... still trying\n",
        "Failed in an LSF library call: Slave LIM configuration is not ready yet\n",
    ],
)
def test_down_is_transient(stderr: str) -> None:
    d = dialect()
    for parse in (d.parse_status, d.parse_history, d.parse_cancel):
        with pytest.raises(RemoteCommandError) as info:
            parse("", stderr, 255)
        assert info.value.transient
    with pytest.raises(RemoteCommandError) as err:
        d.parse_version("", "ls_getclustername(): LIM is down; try later\n", 255)
    assert err.value.transient


def test_other_bjobs_errors_are_permanent() -> None:
    with pytest.raises(RemoteCommandError) as info:
        dialect().parse_status("", "bjobs: illegal option -- o\n", 255)
    assert not info.value.transient


# --- long formats (bhist -l; bjobs -l, bacct -l) -------------------------------------------------


def test_bhist_done(lsf_dir: Path) -> None:
    found = dialect().parse_history(read(lsf_dir, "bhist-l.done.equinor.txt"), "", 0)
    assert found == {
        "289263": Observation(
            native_id="289263",
            phase=Phase.COMPLETED,
            exit_code=0,
            started_at=local(2026, 4, 18, 10, 1, 28),
            finished_at=local(2026, 4, 18, 10, 1, 38),
        )
    }


def test_bjobs_long(lsf_dir: Path) -> None:
    d = dialect()
    done = d.parse_history(read(lsf_dir, "bjobs-l.done.brutus.txt"), "", 0)["131851"]
    assert done.phase is Phase.COMPLETED
    assert done.name == "ChromaExtractShort"
    assert done.started_at == local(2025, 7, 24, 10, 4, 19)
    assert done.finished_at == local(2025, 7, 24, 10, 5, 45)
    code127 = d.parse_history(read(lsf_dir, "bjobs-l.exit-127-with-year.lsf9.txt"), "", 0)["2073"]
    assert code127 == Observation(
        native_id="2073",
        phase=Phase.FAILED,
        exit_code=127,
        name="GRunApplication.0",
        started_at=local(2014, 8, 4, 12, 28, 51),
        finished_at=local(2014, 8, 4, 12, 28, 51),
    )
    code42 = d.parse_history(read(lsf_dir, "bjobs-l.exit-code-42.brutus.txt"), "", 0)["132286"]
    assert (code42.phase, code42.exit_code, code42.name) == (Phase.FAILED, 42, None)


def test_bacct_long(lsf_dir: Path) -> None:
    d = dialect()
    farm = d.parse_history(read(lsf_dir, "bacct-l.done-and-term-memlimit.sanger-farm3.txt"), "", 0)
    assert sorted(farm) == ["2581801[48]", "2581807[1]", "3194397[75]"]
    assert farm["2581807[1]"].phase is Phase.COMPLETED
    assert farm["2581807[1]"].name == "protein_83_dumps-Hive-1Gb_job-240[1]"
    assert farm["2581801[48]"].name == "protein_83_dumps-Hive-1Gb_job-239[48]"
    memlimit = farm["3194397[75]"]
    assert memlimit.phase is Phase.FAILED
    assert memlimit.reason == "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"
    assert memlimit.finished_at == local(2025, 12, 2, 13, 53, 29)
    killed = d.parse_history(read(lsf_dir, "bacct-l.exit-killed-by-owner.brutus.txt"), "", 0)
    assert killed["3224113"].phase is Phase.CANCELLED
    assert killed["3224113"].reason == "TERM_OWNER: job killed by owner"
    done = d.parse_history(read(lsf_dir, "bacct-l.done.brutus.txt"), "", 0)
    assert done["3329613"].phase is Phase.COMPLETED
    assert done["3329613"].exit_code == 0


# --- bkill ---------------------------------------------------------------------------------------


def test_parse_cancel_fixtures(lsf_dir: Path) -> None:
    d = dialect()
    d.parse_cancel(read(lsf_dir, "bkill.being-terminated.txt"), "", 0)
    d.parse_cancel(
        read(lsf_dir, "bkill.multiple-jobs.mixed.stdout.txt"),
        read(lsf_dir, "bkill.multiple-jobs.mixed.stderr.txt"),
        255,
    )
    with pytest.raises(RemoteCommandError) as info:
        d.parse_cancel("", "Job <5>: User permission denied\n", 255)
    assert not info.value.transient


# --- lsid ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "mode"),
    [
        ("lsid.EBI.txt", "IBM Spectrum LSF Standard 10.1.0.6", "json"),
        ("lsid.cluster1.txt", "Platform LSF 7 Update 6", "wide"),
        ("lsid.lsf91_bw3.txt", "IBM Platform LSF Standard 9.1.2", "delimited"),
        ("lsid.openlava.txt", "openlava project 2.2", "wide"),
    ],
)
def test_parse_version(lsf_dir: Path, name: str, version: str, mode: str) -> None:
    assert dialect().parse_version(read(lsf_dir, name), "", 0) == version
    assert output_mode_for(version) == mode
    assert LsfDialect.for_version(version).output == mode


def test_parse_version_garbage() -> None:
    with pytest.raises(ParseError):
        dialect().parse_version("hello\n", "", 0)


def test_times() -> None:
    assert parse_lsf_time("Jan  7 09:59 L", NOW) == local(2026, 1, 7, 9, 59)
    assert parse_lsf_time("Mon Aug  4 12:28:51 2014", NOW) == local(2014, 8, 4, 12, 28, 51)
    assert parse_lsf_time("03/31-14:46:42", NOW) == local(2026, 3, 31, 14, 46, 42)
    assert parse_lsf_time("Feb  2 00:46", NOW + 86400 * 365) == local(2027, 2, 2, 0, 46)
    assert parse_lsf_time("Dec 31 23:59 2018", NOW) == local(2018, 12, 31, 23, 59)
    assert parse_lsf_time("-", NOW) is None
    assert parse_lsf_time("Foo 1 10:00", NOW) is None


# --- fuzzing -------------------------------------------------------------------------------------

FIXTURE_DIR = FIXTURES / "lsf"
SAMPLES = (
    sorted(p.read_text() for p in FIXTURE_DIR.glob("*") if p.is_file())
    if (FIXTURE_DIR.is_dir())
    else [""]
)
PARSERS: list[Callable[[LsfDialect, str, str, int], object]] = [
    lambda d, o, e, s: d.parse_submit(o, e, s),
    lambda d, o, e, s: d.parse_status(o, e, s),
    lambda d, o, e, s: d.parse_history(o, e, s),
    lambda d, o, e, s: d.parse_cancel(o, e, s),
    lambda d, o, e, s: d.parse_version(o, e, s),
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(0, 4))):
        if not text:
            break
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start, min(len(text), start + 40)))
        insert = draw(
            st.text(
                alphabet=st.sampled_from(list('{}[]":,<>|\n -0123456789AEXITDONE')), max_size=20
            )
        )
        text = text[:start] + insert + text[end:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(PARSERS) - 1),
    stdout=st.one_of(st.text(max_size=400), mutated()),
    stderr=st.one_of(st.just(""), st.text(max_size=100), mutated()),
    status=st.sampled_from([0, 1, 255]),
)
def test_parsers_raise_only_our_errors(which: int, stdout: str, stderr: str, status: int) -> None:
    d = dialect()
    try:
        PARSERS[which](d, stdout, stderr, status)
    except ALLOWED:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_json_records_raise_only_parse_error(text: str) -> None:
    try:
        bjobs_json_records("{" + text)
    except ParseError:
        pass


# --- render_script -------------------------------------------------------------------------------

NASTY = ("it's", 'say "hi"', "$(touch pwned)", "a;b", "line1\nline2", "`id`", "\\", "")


def make_job(workdir: Path, **kwargs: object) -> JobRequest:
    fields: dict[str, object] = {
        "job_id": 7,
        "attempt": 1,
        "name": "sd-7-1",
        "argv": ("sh", "-c", "exit 0"),
        "workdir": str(workdir),
    }
    fields.update(kwargs)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_directives() -> None:
    job = make_job(
        Path("/home/alice/run"),
        queue="long",
        cpus=4,
        memory_mb=2048,
        walltime_s=5401,
        account="proj-1",
        extra_directives=("-R select[gpu]", "#BSUB -app big"),
    )
    script = dialect().render_script(job)
    lines = [line for line in script.splitlines() if line.startswith("#BSUB")]
    assert lines == [
        "#BSUB -J sd-7-1",
        "#BSUB -q long",
        "#BSUB -P proj-1",
        "#BSUB -n 4",
        "#BSUB -M 2048",
        '#BSUB -R "rusage[mem=2048] span[hosts=1]"',
        "#BSUB -W 1:31",
        "#BSUB -o sd-7-1.out",
        "#BSUB -e sd-7-1.err",
        "#BSUB -rn",
        "#BSUB -R select[gpu]",
        "#BSUB -app big",
    ]
    assert "#BSUB -M 2097152" in dialect(memory_unit="KB").render_script(job)
    assert "#BSUB -r" in dialect().render_script(make_job(Path("/w"), requeue=True)).splitlines()
    other = make_job(Path("/w"), stdout="/scratch/my out.txt")
    assert '#BSUB -o "/scratch/my out.txt"' in dialect().render_script(other)


@pytest.mark.parametrize(
    "bad",
    [{"queue": "a\nb"}, {"account": "x\ry"}, {"extra_directives": ("-x\n-y",)}, {"queue": 'q"'}],
)
def test_directive_values_must_be_one_line(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dialect().render_script(make_job(Path("/w"), **bad))


def test_rendered_script_runs_nasty_arguments(tmp_path: Path) -> None:
    workdir = tmp_path / "w 'q' $(x);\nnl"
    workdir.mkdir()
    out = tmp_path / "args.txt"
    argv = (
        "sh",
        "-c",
        'for a in "$@"; do printf "%s\\0" "$a"; done > "$OUT"; exit 5',
        "sh",
        *NASTY,
    )
    job = make_job(workdir, argv=argv, env={"OUT": str(out), "WEIRD": "$(no) 'x' \"y\";\n"})
    script = tmp_path / "job.sh"
    script.write_text(dialect().render_script(job))
    result = subprocess.run(
        ["/bin/sh", str(script)], check=False, cwd=tmp_path, capture_output=True, timeout=30
    )
    assert result.returncode == 5
    assert out.read_bytes().split(b"\0")[:-1] == [a.encode() for a in NASTY]
    record = parse_exit_file(Path(job.exit_path).read_text())
    assert record.exit_code == 5
    assert not (tmp_path / "pwned").exists() and not (workdir / "pwned").exists()


# --- round trip through the fake head -------------------------------------------------------------


def fake_head(tmp_path: Path, **config: Any) -> DialectHead:
    return DialectHead(tmp_path, LsfDialect(), "lsf", **config)


def test_fake_round_trip(tmp_path: Path) -> None:
    h = fake_head(tmp_path)
    ok = h.job("sh", "-c", "sleep 0.5")
    native_id = h.submit(ok)
    assert native_id == "1"
    first = h.wait_for(native_id, {Phase.QUEUED, Phase.RUNNING})
    assert first.name == "sd-1-1"
    done = h.wait_for(native_id, {Phase.COMPLETED, Phase.FAILED})
    assert (done.phase, done.exit_code, done.name) == (Phase.COMPLETED, 0, "sd-1-1")
    assert parse_exit_file(Path(ok.exit_path).read_text()).exit_code == 0
    assert (h.workdir / "sd-1-1.out").exists()  # the relative -o resolved against the workdir

    failing = h.submit(h.job("sh", "-c", "exit 3"))
    failed = h.wait_for(failing, {Phase.COMPLETED, Phase.FAILED})
    assert (failed.phase, failed.exit_code) == (Phase.FAILED, 3)
    # the history command tells the same story
    history = h.history(native_id, failing)
    assert (history[native_id].phase, history[native_id].exit_code) == (Phase.COMPLETED, 0)
    assert (history[failing].phase, history[failing].exit_code) == (Phase.FAILED, 3)
    assert history[failing].name == "sd-2-1"
    assert h.fake.calls()[0][0] == "bsub"


def test_fake_cancel_and_hold(tmp_path: Path) -> None:
    h = fake_head(tmp_path)
    long = h.submit(h.job("sleep", "30"))
    h.wait_for(long, {Phase.RUNNING})
    # hold (bstop) and release (bresume) a running job
    h.dialect.parse_cancel(*h.run(h.dialect.hold_argv([long])))
    held = h.wait_for(long, {Phase.HELD})
    assert held.reason is not None and held.reason.startswith("USUSP")
    h.run(h.dialect.release_argv([long]))
    h.wait_for(long, {Phase.RUNNING})
    # cancel it
    h.dialect.parse_cancel(*h.run(h.dialect.cancel_argv([long])))
    gone = h.wait_for(long, {Phase.CANCELLED, Phase.FAILED, Phase.COMPLETED})
    assert gone.phase is Phase.CANCELLED
    assert gone.reason == "TERM_OWNER: job killed by owner"
    assert h.history(long)[long].phase is Phase.CANCELLED
    # cancelling again: "Job has already finished" is accepted
    out, err, status = h.run(h.dialect.cancel_argv([long, "999"]))
    assert "Job has already finished" in err and "No matching job found" in err
    h.dialect.parse_cancel(out, err, status)

    # a pending job held at submit time by the system, then released
    h.fake.set_config(slots=0)
    h.fake.set_faults(hold_next=1)
    pending = h.submit(h.job("true"))
    obs = h.status()[pending]
    assert obs.phase is Phase.HELD
    assert obs.reason == "The job was suspended by LSF admin or root while pending"
    h.run(h.dialect.release_argv([pending]))
    assert h.status()[pending].phase is Phase.QUEUED
    h.run(h.dialect.hold_argv([pending]))
    assert h.status()[pending].reason == "The job was suspended by the user while pending"
    h.fake.set_config(slots=1000)
    h.run(h.dialect.release_argv([pending]))
    done = h.wait_for(pending, {Phase.COMPLETED})
    assert done.exit_code == 0


def test_fake_faults(tmp_path: Path) -> None:
    h = fake_head(tmp_path)
    job = h.job("true")
    h.fake.set_faults(submit_transient=1)
    with pytest.raises(SubmitRejected) as transient:
        h.submit(job)
    assert transient.value.transient
    h.fake.set_faults(submit_permanent=1)
    with pytest.raises(SubmitRejected) as permanent:
        h.submit(job)
    assert not permanent.value.transient
    assert "No such queue" in str(permanent.value)

    h.fake.set_faults(noise=True)
    native_id = h.submit(job)
    done = h.wait_for(native_id, {Phase.COMPLETED})
    assert done.name == "sd-1-1"
    assert h.history(native_id)[native_id].phase is Phase.COMPLETED
    assert h.dialect.parse_version(*h.run(h.dialect.version_argv())).startswith("IBM Spectrum LSF")

    h.fake.set_faults(down=True, noise=False)
    for argv, parse in (
        (h.dialect.status_argv(h.user, [native_id]), h.dialect.parse_status),
        (h.dialect.history_argv(h.user, [native_id], 0.0), h.dialect.parse_history),
        (h.dialect.cancel_argv([native_id]), h.dialect.parse_cancel),
        (h.dialect.version_argv(), h.dialect.parse_version),
    ):
        assert argv is not None
        with pytest.raises(RemoteCommandError) as down:
            parse(*h.run(argv))
        assert down.value.transient
    with pytest.raises(SubmitRejected) as rejected:
        h.submit(h.job("true"))
    assert rejected.value.transient

    # a job forgotten when it finishes (forgotten + purged) is not found anywhere
    h.fake.set_faults(down=False, forget_finished=True)
    native_id = h.submit(h.job("true"))
    deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
    while not h.fake.job(native_id)["purged"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert h.fake.job(native_id)["purged"]
    assert native_id not in h.status()
    assert h.history(native_id) == {}
    out, err, status = h.run(["bjobs", "-a", "-json", "-o", "jobid stat", native_id])
    assert f"Job <{native_id}> is not found" in err
    assert h.dialect.parse_status(out, err, status) == {}


def test_fake_finished_jobs_stay_in_bjobs_a(tmp_path: Path) -> None:
    h = fake_head(tmp_path)
    native_id = h.submit(h.job("sh", "-c", "exit 4"))
    h.wait_for(native_id, {Phase.FAILED})
    assert h.fake.job(native_id)["forgotten"]  # left the daemon's queue view ...
    assert h.status()[native_id].exit_code == 4  # ... but LSF keeps it for CLEAN_PERIOD


def test_fake_other_output_modes(tmp_path: Path) -> None:
    h = fake_head(tmp_path)
    native_id = h.submit(h.job("sh", "-c", "exit 2"))
    for mode in ("delimited", "wide"):
        d = LsfDialect(output=mode)
        deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
        while True:
            obs = d.parse_status(*h.run(d.status_argv(h.user, [])))[native_id]
            if obs.phase is Phase.FAILED or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert obs.phase is Phase.FAILED
        assert obs.name == "sd-1-1"
        assert obs.exit_code == (2 if mode == "delimited" else None)
    h.fake.set_config(lsf_version="openlava")
    version = h.dialect.parse_version(*h.run(h.dialect.version_argv()))
    assert version == "openlava project 2.2"
    d = LsfDialect.for_version(version)
    assert d.parse_status(*h.run(d.status_argv(h.user, [])))[native_id].phase is Phase.FAILED
    with pytest.raises(RemoteCommandError):
        h.dialect.parse_status(*h.run(h.dialect.status_argv(h.user, [])))
