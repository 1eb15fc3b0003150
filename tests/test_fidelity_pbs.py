"""PBS Pro / OpenPBS and Torque read the way real sites word them (issue 7).

The refusal tables row by row (each row's real sample must be classed by that row), the
wordings that used to be misread, and the refusals of the fake heads.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from schedulerd.drivers import torque
from schedulerd.drivers.base import FINISHED_PHASES, JobRequest, Phase
from schedulerd.drivers.pbspro import PbsProDialect
from schedulerd.drivers.pbspro_refusals import REFUSALS, classify
from schedulerd.drivers.refusals import Refusal
from schedulerd.drivers.torque import TorqueDialect
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected
from tests.fakebatch.core import FakeHead, gated

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


# --- states, array element ids, real captures ----------------------------------------------------


def fx(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / name).read_text()


def _pbs_json(jobs: dict[str, dict[str, object]]) -> str:
    return json.dumps({"timestamp": 1, "pbs_version": "23.06.06", "pbs_server": "srv",
                       "Jobs": jobs})  # fmt: skip


STARTED = "Tue Oct 11 08:13:45 2022"


@pytest.mark.parametrize(
    ("attrs", "phase", "exit_code", "reason"),
    [
        ({"job_state": "B"}, Phase.RUNNING, None, None),
        ({"job_state": "X", "Exit_status": 0, "stime": STARTED}, Phase.COMPLETED, 0, None),
        ({"job_state": "X", "Exit_status": 3, "stime": STARTED}, Phase.FAILED, 3, None),
        ({"job_state": "F", "Exit_status": 0, "stime": STARTED}, Phase.COMPLETED, 0, None),
        ({"job_state": "F", "Exit_status": -29, "stime": STARTED}, Phase.TIMEOUT, None,
         "walltime exceeded (Exit_status=-29)"),
        ({"job_state": "F"}, Phase.CANCELLED, None, "deleted before it ran"),
        ({"job_state": "S"}, Phase.HELD, None, "suspended"),
        ({"job_state": "U"}, Phase.HELD, None, "suspended"),
        ({"job_state": "W"}, Phase.QUEUED, None,
         "waiting for its execution time (qsub -a) or a stage-in retry"),
        ({"job_state": "W", "comment": "Not Running: stage-in failed"}, Phase.QUEUED, None,
         "Not Running: stage-in failed"),
        ({"job_state": "M", "substate": 94, "comment": 'Job has been moved to "workq@peer"'},
         Phase.QUEUED, None, 'Job has been moved to "workq@peer"'),
        ({"job_state": "M", "substate": 92, "comment": 'Job finished at "peer"'},
         Phase.GONE, None, 'Job finished at "peer"'),
        ({"job_state": "M", "comment": 'Job finished at "peer"'}, Phase.GONE, None,
         'Job finished at "peer"'),
        ({"job_state": "T"}, Phase.QUEUED, None, None),
        ({"job_state": "E", "stime": STARTED}, Phase.RUNNING, None, None),
    ],
)  # fmt: skip
def test_pbspro_state_letters(
    attrs: dict[str, object], phase: Phase, exit_code: int | None, reason: str | None
) -> None:
    for parse in (PBS.parse_status, PBS.parse_history):
        obs = parse(_pbs_json({"7.srv": {"Job_Name": "sd-7-1", **attrs}}), "", 0)["7.srv"]
        assert (obs.phase, obs.exit_code, obs.reason) == (phase, exit_code, reason)
    # the same in the plain qstat -f layout
    text = "Job Id: 7.srv\n" + "".join(f"    {k} = {v}\n" for k, v in attrs.items())
    obs = PBS.parse_status(text, "", 0)["7.srv"]
    assert (obs.phase, obs.exit_code, obs.reason) == (phase, exit_code, reason)


def test_a_moved_job_in_history_keeps_the_driver_waiting() -> None:
    # qstat without -x follows a moved job to its new server; history on this server
    # shows the M record: still alive there, not gone (gone would retry it)
    history = _pbs_json({"8.srv": {"job_state": "M", "substate": 94}})
    assert PBS.parse_history(history, "", 0)["8.srv"].phase not in FINISHED_PHASES | {Phase.GONE}


@pytest.mark.parametrize(
    "native_id", ["123[4].server", "123[].server", "3386904[17].dedicated-sched.pace.gatech.edu"]
)
def test_array_element_ids(native_id: str) -> None:
    found = PBS.parse_status(_pbs_json({native_id: {"job_state": "R"}}), "", 0)
    assert found[native_id].phase is Phase.RUNNING
    text = f"Job Id: {native_id}\n    job_state = Q\n    Job_Name = arr\n"
    assert PBS.parse_status(text, "", 0)[native_id].phase is Phase.QUEUED
    assert TORQUE.parse_status(text, "", 0)[native_id].phase is Phase.QUEUED
    xml = f"<Data><Job><Job_Id>{native_id}</Job_Id><job_state>H</job_state></Job></Data>"
    assert TORQUE.parse_status(xml, "", 0)[native_id].phase is Phase.HELD
    for dialect in (PBS, TORQUE):
        assert dialect.parse_submit(native_id + "\n", "", 0) == native_id
        assert dialect.parse_list_user(native_id + "\n", "", 0) == [native_id]


def test_array_parent_id_printed_by_qsub(fixtures_dir: Path) -> None:
    assert PBS.parse_submit(fx(fixtures_dir, "pbspro/qsub-J.array-parent-jobid.openpbs.txt"),
                            "", 0) == "10[].Nile-extn"  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [
        "pbspro/qstat.default-table.array-begun.openpbs.txt",
        "pbspro/qstat-t.default-table.array-subjobs.pbspro.txt",
        "pbspro/qstat-x.default-table.finished-running.pbspro2024.txt",
    ],
)
def test_real_default_tables_are_not_our_layout(fixtures_dir: Path, name: str) -> None:
    for dialect in (PBS, TORQUE):
        with pytest.raises(ParseError):
            dialect.parse_status(fx(fixtures_dir, name), "", 0)


def test_polaris_job_has_finished_is_an_empty_answer(fixtures_dir: Path) -> None:
    stdout = fx(fixtures_dir, "pbspro/qstat-f-F-json.job-has-finished.header-only.polaris2024.json")
    stderr = fx(fixtures_dir, "pbspro/qstat-f-F-json.job-has-finished.polaris2024.stderr.txt")
    assert PBS.parse_status(stdout, stderr, 35) == {}  # PBSE_HISTJOBID 15139 & 0xff


@pytest.mark.parametrize(
    ("name", "exit_status", "kind"),
    [
        ("pbspro/qsub.invalid-credential.stderr.txt", 171, "transient"),
        ("pbspro/qsub.premature-end-of-message.stderr.txt", 183, "transient"),
        ("pbspro/qsub.connection-refused.stderr.txt", 162, "transient"),
        ("pbspro/qsub.munge-not-running.stderr.txt", 255, "auth"),
        ("pbspro/qsub.would-exceed-complex-per-user-limit.stderr.txt", 38, "transient"),
        ("pbspro/qsub.unknown-queue.stderr.txt", 170, "permanent"),
        ("torque/qsub.max-user-queued.stderr.txt", 228, "transient"),
        ("torque/qsub.max-queued-global-server-limit.stderr.txt", 200, "transient"),
        ("torque/qsub.bad-uid-ruserok.stderr.txt", 177, "auth"),
        ("torque/qsub.trqauthd-unable-to-authenticate.stderr.txt", 160, "transient"),
        ("torque/qsub.cannot-connect-to-trqauthd.stderr.txt", 33, "transient"),
        ("torque/qsub.invalid-credential.stderr.txt", 173, "transient"),
        ("torque/qsub.unauthorized-queue-acl.stderr.txt", 159, "auth"),
        ("torque/qsub.exceeds-queue-resource-limits.stderr.txt", 190, "permanent"),
    ],
)
def test_real_refusals(fixtures_dir: Path, name: str, exit_status: int, kind: str) -> None:
    dialect = DIALECTS[name.split("/")[0]]
    with pytest.raises(SubmitRejected) as info:
        dialect.parse_submit("", fx(fixtures_dir, name), exit_status)
    assert (info.value.transient, info.value.auth) == (kind == "transient", kind == "auth")


def test_real_qdel_and_qstat_failures(fixtures_dir: Path) -> None:
    # equinor/ert#7103: qdel of a job that is exiting (exit 168): nothing left to do
    PBS.parse_cancel("", fx(fixtures_dir, "pbspro/qdel.request-invalid-for-state.stderr.txt"), 168)
    # Azure/az-hop#14: no history on this server: history is unavailable, not passing
    stderr = fx(fixtures_dir, "pbspro/qstat-fx.job-history-not-configured.stderr.txt")
    with pytest.raises(RemoteCommandError) as info:
        PBS.parse_history("", stderr, 36)
    assert not info.value.transient and not info.value.auth
    # cBio/cbio-cluster#178: pbs_server down
    stderr = fx(fixtures_dir, "torque/qstat.cannot-connect-pbs-server-down.stderr.txt")
    with pytest.raises(RemoteCommandError) as down:
        TORQUE.parse_status("", stderr, 111)
    assert down.value.transient


def test_slurm_wrapper_unknown_state_is_left_to_the_exit_file() -> None:
    # contribs/torque/qstat.pl prints U for DEADLINE, OUT_OF_MEMORY, ...: all final
    text = "Job Id:\t4107\n\tJob_Name = sd-7-1\n\tjob_state = U\n\nJob Id:\t4108\n\tjob_state = R\n"
    found = TorqueDialect(xml=False).parse_status(text, "", 0)
    assert set(found) == {"4108"}
