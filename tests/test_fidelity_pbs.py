"""PBS Pro / OpenPBS and Torque read the way real sites word them (issue 7).

The refusal tables row by row (each row's real sample must be classed by that row), the
wordings that used to be misread, and the refusals of the fake heads.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from schedulerd.drivers import torque
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.pbspro import REFUSALS, PbsProDialect, Refusal, classify
from schedulerd.drivers.torque import TorqueDialect
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

sys.path.insert(0, str(Path(__file__).parent / "fakebatch"))
from core import FakeHead, gated

PBS = PbsProDialect()
TORQUE = TorqueDialect()
DIALECTS = {"pbspro": PBS, "torque": TORQUE}
TABLES = {"pbspro": REFUSALS, "torque": torque.REFUSALS}
ROWS = [(system, row) for system, table in TABLES.items() for row in table]


def _row_id(case: tuple[str, Refusal]) -> str:
    system, row = case
    return f"{system}-{row.kind}-{row.pattern.pattern[:40]}"


# --- the refusal tables ----------------------------------------------------------------------


@pytest.mark.parametrize("case", ROWS, ids=[_row_id(c) for c in ROWS])
def test_each_row_classes_its_own_sample(case: tuple[str, Refusal]) -> None:
    system, row = case
    assert row.source and row.sample
    # first match wins: no row above it may claim its sample
    assert classify(row.sample, TABLES[system]) is row
    with pytest.raises(SubmitRejected) as info:
        DIALECTS[system].parse_submit("", row.sample + "\n", 1)
    assert (info.value.transient, info.value.auth) == (
        row.kind == "transient",
        row.kind == "auth",
    ), info.value.message


@pytest.mark.parametrize("system", sorted(TABLES))
def test_every_class_is_in_every_table(system: str) -> None:
    assert {row.kind for row in TABLES[system]} == {"transient", "permanent", "auth"}


@pytest.mark.parametrize(
    ("system", "stderr"),
    [
        # the wordings issue 7 found misread as permanent: OpenPBS's entity limits
        ("pbspro", "qsub: Maximum number of jobs in 'Q' state for user bob already in queue q1"),
        ("pbspro", "qsub: Maximum number of jobs in 'Q' state already in queue workq"),
        ("pbspro", "qsub: Maximum number of jobs in 'Q' state for project p1 already in complex"),
        ("pbspro", "qsub: Maximum number of jobs for user bob already in complex"),
        ("pbspro", "qsub: Maximum number of jobs for group staff already in queue workq"),
        ("pbspro", "qsub: Maximum number of jobs already in queue workq"),
        ("pbspro", "qsub: Maximum number of jobs already in queue"),
        ("pbspro", "qsub: would exceed complex's per-user limit"),
        ("pbspro", "qsub: would exceed queue workq's per-project limit of jobs in 'Q' state"),
        ("pbspro", "qsub: would exceed user bob's limit on resource mem in queue workq"),
        (
            "pbspro",
            "qsub: would exceed limit on resource ncpus in complex for jobs in 'Q' state",
        ),
        ("torque", "qsub: Maximum number of jobs already in queue for user MSG=x"),
        (
            "torque",
            (
                "qsub: submit error (Maximum number of jobs already in queue MSG=total number "
                "of jobs in queue exceeds the queue limit: user bob@login, queue batch)"
            ),
        ),
    ],
)
def test_queued_jobs_limits_are_transient(system: str, stderr: str) -> None:
    with pytest.raises(SubmitRejected) as info:
        DIALECTS[system].parse_submit("", stderr + "\n", 38)
    assert info.value.transient and not info.value.auth


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_unknown_qsub_refusal_stays_permanent(system: str) -> None:
    # a site's queuejob hook with its own words: qsub said no, for a reason we do not know
    stderr = "qsub: No walltime specified. Master does not approve! ;o)\n"
    with pytest.raises(SubmitRejected) as info:
        DIALECTS[system].parse_submit("", stderr, 32)
    assert not info.value.transient and not info.value.auth
    assert "No walltime specified" in info.value.message


@pytest.mark.parametrize("system", sorted(DIALECTS))
@pytest.mark.parametrize(
    "stderr",
    [
        "sh: 1: qsub: not found\n",
        "bash: line 3: qsub: command not found\n",
        "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
        "",
    ],
)
def test_a_failure_without_a_refusal_is_not_understood(system: str, stderr: str) -> None:
    # not a refusal: the driver looks the job up by name instead of failing it
    with pytest.raises(ParseError):
        DIALECTS[system].parse_submit("", stderr, 127)


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_credentials_refused_on_a_poll_are_auth(system: str) -> None:
    stderr = (
        "munge_get_auth_data: MUNGE user-authentication on encode failed with "
        "`Socket communication error`\n"
        "auth: error returned: 15010\n"
        "qstat: cannot connect to server head (errno=15010)\n"
    )
    if system == "torque":
        stderr = "No Permission.\nqstat: cannot connect to server head (errno=15007)\n"
    dialect = DIALECTS[system]
    for parse in (dialect.parse_status, dialect.parse_history, dialect.parse_cancel):
        with pytest.raises(RemoteCommandError) as info:
            parse("", stderr, 159)
        assert info.value.auth and not info.value.transient


def test_unauthorized_qdel_is_auth_not_transient() -> None:
    with pytest.raises(RemoteCommandError) as info:
        PBS.parse_cancel("", "qdel: Unauthorized Request  210\n", 159)
    assert info.value.auth and not info.value.transient


# --- the fake heads refuse in the real wordings ------------------------------------------------


class Head:
    """A fake PBS Pro or Torque head and the dialect that reads it."""

    def __init__(self, tmp_path: Path, system: str) -> None:
        self.dialect = DIALECTS[system]
        self.bin = tmp_path / "bin"
        self.fake = FakeHead.create(tmp_path / "home", self.bin, flavor=system, user="alice")
        self.workdir = tmp_path / "work"
        self.env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}")
        self.count = 0

    def run(self, argv: list[str]) -> tuple[str, str, int]:
        proc = subprocess.run(shlex.join(argv), shell=True, env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        return proc.stdout, proc.stderr, proc.returncode

    def submit(self, *argv: str) -> str:
        self.count += 1
        name = f"sd-{self.count}-1"
        job = JobRequest(job_id=self.count, attempt=1, name=name, argv=argv,
                         workdir=str(self.workdir))  # fmt: skip
        Path(job.control_dir).mkdir(parents=True, exist_ok=True)
        Path(job.script_path).write_text(self.dialect.render_script(job))
        return self.dialect.parse_submit(*self.run(self.dialect.submit_argv(job)))


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_fake_head_refuses_our_credentials_as_auth(tmp_path: Path, system: str) -> None:
    head = Head(tmp_path, system)
    head.fake.set_faults(submit_auth=1)
    with pytest.raises(SubmitRejected) as info:
        head.submit("true")
    assert info.value.auth and not info.value.transient
    assert "Bad UID for job execution" in info.value.message
    assert head.submit("true")  # the fault was used up


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_fake_head_queued_jobs_limit_is_transient(tmp_path: Path, system: str) -> None:
    head = Head(tmp_path, system)
    head.fake.set_faults(max_queued=1)
    gate = tmp_path / "gate"
    head.submit(*gated(gate))  # stays unfinished until the gate opens
    with pytest.raises(SubmitRejected) as info:
        head.submit("true")
    assert info.value.transient and not info.value.auth
    assert "Maximum number of jobs" in info.value.message
    head.fake.set_faults(max_queued=0)
    assert head.submit("true")
    gate.touch()


# --- output that is not recognised is an error, not an empty queue -----------------------------

HTML = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
SHELL = "bash: qstat: command not found\n"
WRAPPER = "Your jobs on cluster X:\n  1.srv  running  0:05\n  2.srv  queued\n"
#: ``qstat`` without -f: the default table (real: openpbs/openpbs#2237, OSC/ood_core#126)
TABLE = (
    "Job id            Name             User              Time Use S Queue\n"
    "----------------  ---------------- ----------------  -------- - -----\n"
    "3[].head          STDIN            ood                      0 B workq\n"
)
PBS_FOREIGN = {
    "html": HTML,
    "shell error": SHELL,
    "wrapper text": WRAPPER,
    "default table": TABLE,
    "other JSON": '{"error": "service unavailable", "retry": true}\n',
    "unknown state": '{"pbs_version": "23.06", "Jobs": {"5.srv": {"job_state": "Z"}}}\n',
    "no state": '{"pbs_version": "23.06", "Jobs": {"5.srv": {"Job_Name": "sd-5-1"}}}\n',
    "a word for a state": '{"pbs_version": "23.06", "Jobs": {"5.srv": {"job_state": "Run"}}}\n',
    "job not an object": '{"pbs_version": "23.06", "Jobs": {"5.srv": "R"}}\n',
    "text block, bad id": "Job Id: see http://status.example.org\n    job_state = R\n",
    "text block, no state": "Job Id: 5.srv\n    Job_Name = sd-5-1\n",
}
TORQUE_FOREIGN = {
    "html": HTML,
    "shell error": SHELL,
    "wrapper text": WRAPPER,
    "default table": TABLE,
    "cut off": "<Data><Job><Job_Id>5.srv</Job_Id><job_state>R</job_state></Job><Job><Job_Id>6",
    "text after it": "<Data></Data>\nqstat: warning: HTML follows\n<html></html>\n",
    "job without id": "<Data><Job><Job_Name>x</Job_Name><job_state>Q</job_state></Job></Data>",
    "unknown state": "<Data><Job><Job_Id>5.srv</Job_Id><job_state>Z</job_state></Job></Data>",
    "not jobs": "<Data><Error>server busy</Error></Data>\n",
    "text block, no state": "Job Id: 5.srv\n    Job_Name = sd-5-1\n",
}


@pytest.mark.parametrize(("system", "stdout"), [
    *(("pbspro", text) for text in PBS_FOREIGN.values()),
    *(("torque", text) for text in TORQUE_FOREIGN.values()),
], ids=[f"pbspro-{k}" for k in PBS_FOREIGN] + [f"torque-{k}" for k in TORQUE_FOREIGN])  # fmt: skip
def test_status_and_history_refuse_foreign_output(system: str, stdout: str) -> None:
    dialect = DIALECTS[system]
    for parse in (dialect.parse_status, dialect.parse_history):
        with pytest.raises(ParseError):
            parse(stdout, "", 0)


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_nothing_but_a_shell_error_is_not_an_empty_queue(system: str) -> None:
    dialect = DIALECTS[system]
    with pytest.raises(ParseError):
        dialect.parse_status("", SHELL, 0)
    # the recognised empty answers stay empty
    assert dialect.parse_status("", "", 0) == {}
    assert dialect.parse_status("", "qstat: Unknown Job Id 5.srv\n", 153) == {}


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        '{\n    "timestamp":1752246824,\n    "pbs_version":"2024.1.2",\n    "pbs_server":"s"\n}\n',
    ],
)
def test_pbspro_recognised_empty_answers(stdout: str) -> None:
    assert PBS.parse_status(stdout, "", 0) == {}


@pytest.mark.parametrize(
    "stdout", ["", "<Data></Data>\n", "<Data/>\n", '<?xml version="1.0"?>\n<Data></Data>\n']
)
def test_torque_recognised_empty_answers(stdout: str) -> None:
    assert TORQUE.parse_status(stdout, "", 0) == {}


@pytest.mark.parametrize("system", sorted(DIALECTS))
@pytest.mark.parametrize("stdout", [HTML, SHELL, WRAPPER, "Job submitted.\n"])
def test_submit_without_an_id_is_not_understood(system: str, stdout: str) -> None:
    with pytest.raises(ParseError):
        DIALECTS[system].parse_submit(stdout, "", 0)


@pytest.mark.parametrize("system", sorted(DIALECTS))
@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [
        ("", "bash: qdel: command not found\n"),
        (HTML, ""),
        ("Deleting job 5.srv ... see the portal for the result\n", ""),
    ],
)
def test_cancel_with_foreign_output_is_not_understood(
    system: str, stdout: str, stderr: str
) -> None:
    with pytest.raises(ParseError):
        DIALECTS[system].parse_cancel(stdout, stderr, 0)


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_cancel_recognised_answers(system: str) -> None:
    dialect = DIALECTS[system]
    dialect.parse_cancel("", "", 0)
    dialect.parse_cancel("", "qdel: Unknown Job Id 5.srv\n", 0)
    dialect.parse_cancel("", "qdel: Job has finished 484874.s034-lcam\n", 35)


@pytest.mark.parametrize("system", sorted(DIALECTS))
def test_job_listing_refuses_foreign_output(system: str) -> None:
    dialect = DIALECTS[system]
    with pytest.raises(ParseError):
        dialect.parse_list_user(TABLE, "", 0)
    with pytest.raises(ParseError):
        dialect.parse_list_user("", SHELL, 0)
    assert dialect.parse_list_user("5.srv\n6[2].srv\n", "", 0) == ["5.srv", "6[2].srv"]
    assert dialect.parse_list_user("", "", 0) == []
