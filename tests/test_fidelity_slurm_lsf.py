"""Issue 7 for Slurm and LSF: refusals classed by one table per dialect, output that is not
recognised is an error (never an empty queue), array element ids and the extra states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schedulerd.drivers import lsf, lsf_parse, lsf_refusals, slurm_refusals
from schedulerd.drivers.base import Phase
from schedulerd.drivers.lsf import LsfDialect
from schedulerd.drivers.slurm import SQUEUE_FIELDS, SQUEUE_FORMAT, SlurmDialect
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

S = SlurmDialect()
POLICY = (
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
    " (job submit limit, user's size and/or time limits)\n"
)


def fixture(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / name).read_text()


def lsf_dialect(output: lsf.OutputMode = "json") -> LsfDialect:
    return LsfDialect(output=output, clock=lambda: 1_700_000_000.0)


def assert_class(exc: SubmitRejected | RemoteCommandError, kind: str) -> None:
    assert (exc.transient, exc.auth) == (kind == "transient", kind == "auth"), exc.message


# --- the tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("row", slurm_refusals.REFUSALS, ids=lambda r: r.pattern.pattern[:40])
def test_slurm_refusal_row(row: slurm_refusals.Refusal) -> None:
    # the row's own real sample is classed by this row (not shadowed by an earlier one)
    assert slurm_refusals.classify(row.sample) is row
    assert row.source
    with pytest.raises(SubmitRejected) as info:
        S.parse_submit("", row.sample + "\n", 1)
    assert_class(info.value, row.kind)


@pytest.mark.parametrize("row", lsf_refusals.REFUSALS, ids=lambda r: r.pattern.pattern[:40])
def test_lsf_refusal_row(row: lsf_refusals.Refusal) -> None:
    assert lsf_refusals.classify(row.sample) is row
    assert row.source
    with pytest.raises(SubmitRejected) as info:
        lsf_dialect().parse_submit("", row.sample + "\n", 255)
    assert_class(info.value, row.kind)


def test_slurm_unknown_refusal_is_permanent() -> None:
    with pytest.raises(SubmitRejected) as info:
        S.parse_submit("", "sbatch: error: Batch job submission failed: Something new\n", 1)
    assert_class(info.value, "permanent")


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("", "transient"),  # no reason line: the scheduler's pause covers a repeated one
        ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n", "transient"),
        ("sbatch: error: AssocGrpSubmitJobsLimit\n", "transient"),
        ("sbatch: error: AssocMaxSubmitJobLimit\n", "transient"),
        ("sbatch: error: QOSMaxWallDurationPerJobLimit\n", "permanent"),
        ("sbatch: error: qosmaxwalldurationperjoblimit\n", "permanent"),  # lower-cased
        ("sbatch: error: QOSMaxCpuPerJobLimit\n", "permanent"),
        ("sbatch: error: QOSMaxNodePerJobLimit\n", "permanent"),
        ("sbatch: error: QOSMinCpuNotSatisfied\n", "permanent"),
        ("sbatch: error: QOSGrpGRES\n", "permanent"),
        (
            "sbatch: error:     --> error: requested timelimit exceeds max of 24 hours\n",
            "permanent",
        ),
    ],
)
def test_slurm_accounting_policy_is_decided_by_the_reason_line(reason: str, kind: str) -> None:
    with pytest.raises(SubmitRejected) as info:
        S.parse_submit("", reason + POLICY, 1)
    assert_class(info.value, kind)


def test_slurm_accounting_policy_fixtures(fixtures_dir: Path) -> None:
    for name, kind in (
        ("slurm/sbatch.accounting-policy-no-reason.stderr.txt", "transient"),
        ("slurm/sbatch.accounting-policy-qosgrpgres.stderr.txt", "permanent"),
    ):
        with pytest.raises(SubmitRejected) as info:
            S.parse_submit("", fixture(fixtures_dir, name), 1)
        assert_class(info.value, kind)


def test_slurm_munge_failures_are_auth(fixtures_dir: Path) -> None:
    with pytest.raises(SubmitRejected) as info:
        S.parse_submit("", fixture(fixtures_dir, "slurm/sbatch.munged-down.stderr.txt"), 1)
    assert_class(info.value, "auth")
    zero = "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received\n"
    with pytest.raises(SubmitRejected) as alone:
        S.parse_submit("", zero, 1)
    assert_class(alone.value, "transient")  # an overloaded controller
    with pytest.raises(SubmitRejected) as with_auth:
        S.parse_submit("", "sbatch: error: Munge decode failed: Invalid credential\n" + zero, 1)
    assert_class(with_auth.value, "auth")
    with pytest.raises(SubmitRejected) as user_cred:
        S.parse_submit(
            "", "sbatch: error: Batch job submission failed: Invalid user credential\n", 1
        )
    assert_class(user_cred.value, "auth")


def test_slurm_queries_class_head_errors_by_the_table() -> None:
    munge = "slurm_load_jobs error: Protocol authentication error\n"
    with pytest.raises(RemoteCommandError) as status:
        S.parse_status("", munge, 1)
    assert_class(status.value, "auth")
    with pytest.raises(RemoteCommandError) as history:
        S.parse_history("", "sacct: error: slurmdbd: Unknown error 1021\n", 1)
    assert_class(history.value, "transient")
    with pytest.raises(RemoteCommandError) as cancel:
        S.parse_cancel(
            "", "scancel: error: Kill job error on job id 5: Protocol authentication error\n", 1
        )
    assert_class(cancel.value, "auth")


def test_lsf_unknown_refusal_is_permanent_and_the_text_decides_exit_255() -> None:
    d = lsf_dialect()
    with pytest.raises(SubmitRejected) as unknown:
        d.parse_submit("", "Something new. Job not submitted.\n", 255)
    assert_class(unknown.value, "permanent")
    with pytest.raises(SubmitRejected) as exit0:  # bsub has refused with exit 0 (balsam#34)
        d.parse_submit("", "Too many processors requested. Job not submitted.\n", 0)
    assert_class(exit0.value, "permanent")
    # a site's bsub that goes through ssh: 255 from ssh, and ssh's text says which
    with pytest.raises(SubmitRejected) as unreachable:
        d.parse_submit("", "ssh: connect to host submit01 port 22: Connection refused\n", 255)
    assert_class(unreachable.value, "transient")
    with pytest.raises(SubmitRejected) as refused:
        d.parse_submit("", "alice@submit01: Permission denied (publickey).\n", 255)
    assert_class(refused.value, "auth")


def test_lsf_refusal_fixtures(fixtures_dir: Path) -> None:
    d = lsf_dialect()
    for name, kind in (
        ("lsf/bsub.esub-abort.stderr.txt", "permanent"),
        ("lsf/bsub.pending-job-threshold-retrying.stderr.txt", "transient"),
        ("lsf/bsub.user-cannot-use-queue.stderr.txt", "auth"),
        ("lsf/bsub.rusage-section-error.stderr.txt", "permanent"),
    ):
        with pytest.raises(SubmitRejected) as info:
            d.parse_submit("", fixture(fixtures_dir, name), 255)
        assert_class(info.value, kind)


def test_lsf_queries_class_head_errors_by_the_table() -> None:
    d = lsf_dialect()
    eauth = "Failed in an LSF library call: External authentication failed\n"
    for parse in (d.parse_status, d.parse_history, d.parse_cancel):
        with pytest.raises(RemoteCommandError) as info:
            parse("", eauth, 255)
        assert_class(info.value, "auth")


# --- not recognised is an error -------------------------------------------------------------------

FOREIGN = [
    ("bash: squeue: command not found\n", "", 0),
    ("", "bash: squeue: command not found\n", 0),
    ("<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n", "", 0),
    ("squeue is disabled on the login nodes; use 'myjobs' instead\n", "", 0),
    ("", "", 0),
]


def sq_line(job_id: str, state: str, reason: str = "None", start: str = "1700000100") -> str:
    f = [job_id, state, reason, "n/a", "alice", "1", "1", "(x)", "batch", "1:00:00", "0:00"]
    return "^^^".join([*f, start, "sd-1-1", "1700000000"])


SQ_TITLES = ("JOBID", "STATE", "REASON", "EXEC_HOST", "USER", "NODES", "CPUS", "NODELIST(REASON)",
             "PARTITION", "TIME_LIMIT", "TIME", "START_TIME", "NAME", "SUBMIT_TIME")  # fmt: skip
SQ_HEADER = "^^^".join(SQ_TITLES)


@pytest.mark.parametrize(("stdout", "stderr", "status"), FOREIGN)
def test_squeue_foreign_output_is_a_parse_error(stdout: str, stderr: str, status: int) -> None:
    with pytest.raises(ParseError):
        S.parse_status(stdout, stderr, status)


def test_squeue_other_layout_is_a_parse_error_not_an_empty_queue(fixtures_dir: Path) -> None:
    text = fixture(fixtures_dir, "slurm/squeue.default-layout.array-elements.das5.txt")
    with pytest.raises(ParseError):
        S.parse_status(text, "", 0)
    with pytest.raises(ParseError):  # a separated line whose first field is no job id
        S.parse_status(SQ_HEADER + "\n" + sq_line("alice", "RUNNING") + "\n", "", 0)


def test_squeue_header_alone_is_an_empty_queue() -> None:
    assert len(SQ_HEADER.split("^^^")) == len(SQUEUE_FIELDS)
    assert S.parse_status(SQ_HEADER + "\n", "", 0) == {}
    noisy = "*** maintenance on Saturday ***\n" + SQ_HEADER + "\nhave a nice day\n"
    assert S.parse_status(noisy, "", 0) == {}
    assert S.status_argv("alice", [])[-1] == SQUEUE_FORMAT


@pytest.mark.parametrize(("stdout", "stderr", "status"), FOREIGN)
def test_sacct_foreign_output_is_a_parse_error(stdout: str, stderr: str, status: int) -> None:
    with pytest.raises(ParseError):
        S.parse_history(stdout, stderr, status)


def test_sacct_other_layout_is_a_parse_error_and_the_header_alone_is_empty(
    fixtures_dir: Path,
) -> None:
    with pytest.raises(ParseError):
        S.parse_history(
            fixture(fixtures_dir, "slurm/sacct.default-layout.array-element-failed.txt"), "", 0
        )
    with pytest.raises(ParseError):
        S.parse_history("a|b|c|d|e|f|g|h|i|j|k|l\n", "", 0)
    header = "JobID|ExitCode|State|NCPUS|Elapsed|TotalCPU|Submit|Start|End|MaxRSS|MaxVMSize|JobName"
    assert S.parse_history(header + "\n", "", 0) == {}


@pytest.mark.parametrize(("stdout", "stderr"), [(s, e) for s, e, _ in FOREIGN[:4]])
def test_scancel_foreign_output(stdout: str, stderr: str) -> None:
    with pytest.raises(ParseError):
        S.parse_cancel(stdout.replace("squeue", "scancel"), stderr.replace("squeue", "scancel"), 0)
    with pytest.raises(RemoteCommandError):
        S.parse_cancel(stdout, stderr, 127)
    S.parse_cancel("", "", 0)  # scancel is silent when it succeeds


def test_scontrol_notes_are_not_failures() -> None:
    S.parse_cancel("", "Invalid job id specified for job 5\n", 1)
    S.parse_cancel("", "Job is no longer pending execution for job 5\n", 1)
    with pytest.raises(RemoteCommandError):
        S.parse_cancel("", "Access/permission denied for job 5\n", 1)


def test_sbatch_foreign_output_is_a_parse_error() -> None:
    for stdout, _, status in FOREIGN:
        with pytest.raises(ParseError):
            S.parse_submit(stdout.replace("squeue", "sbatch"), "", status)


@pytest.mark.parametrize("mode", ["json", "delimited", "wide"])
@pytest.mark.parametrize(("stdout", "stderr", "status"), FOREIGN)
def test_bjobs_foreign_output_is_a_parse_error(
    mode: lsf.OutputMode, stdout: str, stderr: str, status: int
) -> None:
    d = lsf_dialect(mode)
    with pytest.raises(ParseError):
        d.parse_status(stdout.replace("squeue", "bjobs"), stderr.replace("squeue", "bjobs"), status)


def test_bjobs_row_with_an_unknown_state_is_a_parse_error() -> None:
    table = (
        "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n"
        "5085604 alice   NEWST normal     head        node1       sd-1-1     Oct 31 14:44\n"
    )
    with pytest.raises(ParseError):
        lsf_dialect("wide").parse_status(table, "", 0)


@pytest.mark.parametrize(("stdout", "stderr", "status"), FOREIGN)
def test_bhist_foreign_output_is_a_parse_error(stdout: str, stderr: str, status: int) -> None:
    with pytest.raises(ParseError):
        lsf_dialect().parse_history(
            stdout.replace("squeue", "bhist"), stderr.replace("squeue", "bhist"), status
        )


@pytest.mark.parametrize(("stdout", "stderr"), [(s, e) for s, e, _ in FOREIGN[:4]])
def test_bkill_foreign_output(stdout: str, stderr: str) -> None:
    d = lsf_dialect()
    with pytest.raises(ParseError):
        d.parse_cancel(stdout.replace("squeue", "bkill"), stderr.replace("squeue", "bkill"), 0)
    with pytest.raises(RemoteCommandError):
        d.parse_cancel(stdout, stderr, 127)


def test_lsf_empty_answers_stay_empty() -> None:
    d = lsf_dialect()
    assert (
        d.parse_status("LSF is processing your request. Please wait ...\n", "No job found\n", 255)
        == {}
    )
    assert d.parse_status('{"COMMAND":"bjobs","JOBS":0,"RECORDS":[]}\n', "", 0) == {}
    assert d.parse_history("", "No matching job found\n", 255) == {}


def test_bsub_foreign_output_is_a_parse_error() -> None:
    for stdout, _, status in FOREIGN:
        with pytest.raises(ParseError):
            lsf_dialect().parse_submit(stdout.replace("squeue", "bsub"), "", status)


# --- array element ids and the extra states ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PREEMPTED", Phase.FAILED),
        ("PR", Phase.FAILED),
        ("OUT_OF_MEMORY", Phase.FAILED),
        ("OOM", Phase.FAILED),
        ("REQUEUED", Phase.QUEUED),
        ("RQ", Phase.QUEUED),
        ("BOOT_FAIL", Phase.FAILED),
        ("BF", Phase.FAILED),
        ("NODE_FAIL", Phase.FAILED),
        ("NF", Phase.FAILED),
    ],
)
def test_slurm_extra_states_in_squeue(state: str, phase: Phase) -> None:
    found = S.parse_status(SQ_HEADER + "\n" + sq_line("123_4", state) + "\n", "", 0)
    assert found["123_4"].phase is phase


@pytest.mark.parametrize(
    ("state", "exit_code", "phase", "code"),
    [
        ("PREEMPTED", "0:0", Phase.FAILED, None),
        ("OUT_OF_MEMORY", "0:125", Phase.FAILED, 253),
        ("REQUEUED", "0:0", Phase.QUEUED, None),
        ("BOOT_FAIL", "0:0", Phase.FAILED, None),
        ("NODE_FAIL", "1:0", Phase.FAILED, None),
    ],
)
def test_slurm_extra_states_and_array_ids_in_sacct(
    state: str, exit_code: str, phase: Phase, code: int | None
) -> None:
    fields = ["2681683_420", exit_code, state, "1", "00:00:05", "00:00:00"]
    times = ["1700000000", "1700000010", "1700000020", "", "", "sd-1-1"]
    obs = S.parse_history("|".join(fields + times) + "\n", "", 0)["2681683_420"]
    assert (obs.phase, obs.exit_code) == (phase, code)
    assert obs.reason == state


def test_slurm_array_ids_in_squeue() -> None:
    text = "\n".join(
        [SQ_HEADER, sq_line("2653325_1", "RUNNING"), sq_line("2653343_[3-4%2]", "PENDING", "JobArrayTaskLimit", "N/A"),
         sq_line("77+1", "RUNNING")]
    )  # fmt: skip
    found = S.parse_status(text + "\n", "", 0)
    assert sorted(found) == ["2653325_1", "2653343_[3-4%2]", "77+1"]
    assert found["2653343_[3-4%2]"].reason == "JobArrayTaskLimit"


@pytest.mark.parametrize(
    ("stat", "phase"),
    [
        ("PSUSP", Phase.HELD),
        ("USUSP", Phase.HELD),
        ("SSUSP", Phase.HELD),
        ("ZOMBI", Phase.FAILED),
        ("UNKWN", Phase.RUNNING),
    ],
)
def test_lsf_extra_states_with_array_ids(stat: str, phase: Phase) -> None:
    record = {"JOBID": "123", "JOBINDEX": "4", "STAT": stat, "EXIT_CODE": "", "EXIT_REASON": "",
              "PEND_REASON": "", "START_TIME": "", "FINISH_TIME": "", "JOB_NAME": "sd-1-1[4]"}  # fmt: skip
    document = json.dumps({"COMMAND": "bjobs", "JOBS": 1, "RECORDS": [record]}) + "\n"
    obs = lsf_dialect().parse_status(document, "", 0)["123[4]"]
    assert obs.phase is phase and obs.reason
    row = f"123[4]|{stat}|-|-|-|-|-|sd-1-1"
    fields = (
        "jobid",
        "stat",
        "exit_code",
        "exit_reason",
        "pend_reason",
        "start_time",
        "finish_time",
        "job_name",
    )
    assert lsf_parse.parse_delimited(row, fields)[0]["JOBID"] == "123[4]"
    table = (
        "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n"
        f"123[4]  alice   {stat:<5} normal     head        node1       sd-1-1     Oct 31 14:44\n"
    )
    assert lsf_dialect("wide").parse_status(table, "", 0)["123[4]"].phase is phase


def test_lsf_array_ids_in_bsub_bkill_and_bhist(fixtures_dir: Path) -> None:
    d = lsf_dialect()
    assert d.parse_submit("Job <123[4]> is submitted to queue <normal>.\n", "", 0) == "123[4]"
    d.parse_cancel(fixture(fixtures_dir, "lsf/bkill.array-element.being-terminated.txt"), "", 0)
    record = (
        "Job <123[4]>, Job Name <sd-1-1[4]>, User <alice>, Project <default>, Command <x>\n"
        "Thu Nov 14 13:00:00: Submitted from host <head>, to Queue <normal>;\n"
        "Thu Nov 14 13:00:05: Dispatched to <node1>;\n"
        "Thu Nov 14 13:01:00: Done successfully. The CPU time used is 0.1 seconds;\n"
    )
    assert d.parse_history(record, "", 0)["123[4]"].phase is Phase.COMPLETED
