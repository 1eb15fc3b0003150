"""HTCondor read the way real sites word it (issue 7): the refusal table row by row, real
captures of refused credentials and busy schedds, foreign output refused by every parser,
and ``cluster.proc`` ids everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedulerd.drivers.base import Phase
from schedulerd.drivers.htcondor import ATTRIBUTES, HTCondorDialect
from schedulerd.drivers.htcondor_refusals import REFUSALS, classify
from schedulerd.drivers.refusals import Refusal
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

D = HTCondorDialect()


def read(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "htcondor" / name).read_text()


def ad_line(native_id: str, **values: object) -> str:
    cells = [str(values.get(a, "undefined")) for a in ATTRIBUTES]
    return "\t".join([native_id, *cells])


# --- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("row", REFUSALS, ids=lambda r: r.pattern)
def test_each_row_is_reached_by_its_sample(row: Refusal) -> None:
    """First match wins: the row's own sample must land on the row (not on an earlier,
    broader one), and condor_submit's refusal carries the row's class."""
    assert row.kind in ("transient", "permanent", "auth")
    assert row.source and row.sample
    assert classify(row.sample) is row
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", row.sample + "\n", 1)
    assert (info.value.transient, info.value.auth) == (
        row.kind == "transient",
        row.kind == "auth",
    )


def test_an_unknown_refusal_is_permanent() -> None:
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", "\nERROR: on line 3 of the submit file: no such command foo\n", 1)
    assert (info.value.transient, info.value.auth) == (False, False)
    assert "no such command foo" in info.value.message
    # exit status 1 and nothing said at all
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", "", 1)
    assert (info.value.transient, info.value.auth) == (False, False)


def test_failed_to_connect_is_transient_alone_and_auth_with_an_authentication_error() -> None:
    alone = "\nERROR: Failed to connect to local queue manager\n\n"
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", alone, 1)
    assert (info.value.transient, info.value.auth) == (True, False)
    refused = alone + "AUTHENTICATE:1003:Failed to authenticate with any method\n"
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", refused, 1)
    assert (info.value.transient, info.value.auth) == (False, True)
    # the whole error stack is in the message, not only the ERROR line
    assert "AUTHENTICATE:1003" in info.value.message


def test_per_owner_limit_is_transient_and_per_submission_cap_permanent() -> None:
    head = "\nERROR: Failed to create proc\nNumber of submitted jobs would exceed "
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", head + "MAX_JOBS_PER_OWNER\n", 1)
    assert info.value.transient is True
    assert "MAX_JOBS_PER_OWNER" in info.value.message
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", head + "MAX_JOBS_PER_SUBMISSION\n", 1)
    assert (info.value.transient, info.value.auth) == (False, False)


# --- real captures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("condor_submit-terse.auth-scitokens-remote-ce.stderr.txt", "auth"),
        ("condor_submit.authorization-denied.stderr.txt", "auth"),
        ("condor_submit.authorization-denied-stale-errstack.stderr.txt", "auth"),
        ("condor_submit.auth-timeout-deadline.stderr.txt", "transient"),
        ("condor_submit.no-local-schedd.stderr.txt", "transient"),
        ("condor_submit.submit-requirement-rejected.txt", "permanent"),
    ],
)
def test_real_submit_refusals(fixtures_dir: Path, name: str, kind: str) -> None:
    with pytest.raises(SubmitRejected) as info:
        D.parse_submit("", read(fixtures_dir, name), 1)
    assert (info.value.transient, info.value.auth) == (kind == "transient", kind == "auth")


@pytest.mark.parametrize(
    "name",
    [
        "condor_q.failed-to-fetch-ads-busy-schedd.txt",
        "condor_q-l.failed-to-fetch-ads-busy-schedd.stderr.txt",
    ],
)
def test_real_busy_schedd_is_transient(fixtures_dir: Path, name: str) -> None:
    text = read(fixtures_dir, name)
    for parse in (D.parse_status, D.parse_history):
        for out, err in ((text, ""), ("", text)):
            with pytest.raises(RemoteCommandError) as info:
                parse(out, err, 1)
            assert (info.value.transient, info.value.auth) == (True, False)


def test_queue_refused_credentials_is_auth() -> None:
    stderr = (
        "\n-- Failed to fetch ads from: <192.0.2.7:9618?addrs=192.0.2.7-9618> : ap1\n"
        "AUTHENTICATE:1003:Failed to authenticate with any method\n"
        "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS\n"
    )
    for parse in (D.parse_status, D.parse_history):
        with pytest.raises(RemoteCommandError) as info:
            parse("", stderr, 1)
        assert (info.value.transient, info.value.auth) == (False, True)
    denied = stderr.replace(
        "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS",
        'SECMAN:2010:Received "DENIED" from server for user alice@ap1 using method IDTOKENS.',
    )
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status("", denied, 1)
    assert info.value.auth is True


def test_a_hold_reason_quoting_an_error_is_not_a_failure() -> None:
    """Job lines are never classified: a held job's reason may quote any error stack."""
    line = ad_line(
        "123.4",
        JobStatus=5,
        HoldReasonCode=13,
        HoldReasonSubCode=0,
        HoldReason="Transfer input files failure: SECMAN:2010:Received DENIED from server",
    )
    found = D.parse_status(line + "\n", "", 0)
    assert found["123.4"].phase is Phase.HELD
    # and when the query failed after it, the failure is read from the rest only
    with pytest.raises(RemoteCommandError) as info:
        D.parse_status(line + "\n", "CEDAR:6001:Failed to connect to <192.0.2.7:9618>\n", 1)
    assert (info.value.transient, info.value.auth) == (True, False)


def test_rm_refused_credentials_is_auth(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "condor_rm.auth-failure-remote-schedd.txt")
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel("", text, 1)
    assert (info.value.transient, info.value.auth) == (False, True)
    for verb in ("remove", "hold", "release"):
        with pytest.raises(RemoteCommandError) as info:
            D.parse_cancel("", f"Permission denied to {verb} job 123.4\n", 1)
        assert info.value.auth is True


# --- foreign output ------------------------------------------------------------------------------

HTML = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>\n"
FOREIGN_QUERY = [
    "bash: condor_q: command not found\n",
    HTML,
    "condor_q is not available on login nodes; please use ap2.example.org\n",
    '[\n  {\n    "ClusterId": 12,\n    "ProcId": 0,\n    "JobStatus": 2\n  }\n]\n',
    # a -nobatch row (HTCondor manual, managing-a-job.rst) without its header
    "1297254.0   nemo   5/31 18:05  14+17:40:01 R  0   7.3  condor_dagman\n",
]


@pytest.mark.parametrize("text", FOREIGN_QUERY)
def test_queue_and_history_refuse_foreign_output(text: str) -> None:
    for parse in (D.parse_status, D.parse_history):
        with pytest.raises(ParseError):
            parse(text, "", 0)


def test_a_shell_error_on_stderr_is_not_an_empty_queue() -> None:
    for parse in (D.parse_status, D.parse_history):
        with pytest.raises(ParseError):
            parse("", "sh: 1: condor_history: not found\n", 0)
    # other login-shell complaints are noise: the answer stays an empty queue
    assert D.parse_status("", "bash: module: command not found\n", 0) == {}


def test_only_a_recognised_empty_answer_is_an_empty_queue() -> None:
    assert D.parse_status("", "", 0) == {}
    assert D.parse_status("\n\n", "", 0) == {}
    banner = "*** fakehead: the schedd will be restarted on Saturday 08:00 ***\n"
    assert D.parse_history(banner, "", 0) == {}
    warning = "WARNING: GSI authentication is enabled by your security configuration!\n"
    assert D.parse_status(warning, "", 0) == {}
    # banner text next to job lines stays noise
    found = D.parse_status("Welcome to ap1\n" + ad_line("7.0", JobStatus=1) + "\n", "", 0)
    assert list(found) == ["7.0"]


@pytest.mark.parametrize(
    "text",
    [HTML, "bash: condor_submit: command not found\n", "Submissions are closed until Monday.\n"],
)
def test_submit_refuses_foreign_output(text: str) -> None:
    with pytest.raises(ParseError):
        D.parse_submit(text, "", 0)


@pytest.mark.parametrize(
    "out",
    ["", "bash: condor_rm: command not found\n", HTML, "condor_rm: disabled on this host\n"],
)
def test_job_actions_refuse_output_that_answers_no_job(out: str) -> None:
    with pytest.raises(ParseError):
        D.parse_cancel(out, "", 0)


def test_a_shell_error_is_not_an_already_gone_job() -> None:
    """ "command not found" contains "not found": it must not read as "Job C.P not found"."""
    with pytest.raises(RemoteCommandError) as info:
        D.parse_cancel("", "bash: condor_rm: command not found\n", 127)
    assert (info.value.transient, info.value.auth) == (False, False)
    with pytest.raises(RemoteCommandError):
        D.parse_cancel("", "", 1)


# --- cluster.proc ids ------------------------------------------------------------------------------


def test_proc_ids_everywhere() -> None:
    assert D.parse_submit("123.4 - 123.4\n", "", 0) == "123.4"
    text = "\n".join(
        [
            ad_line("123.0", JobStatus=2, JobBatchName="sd-1-1"),
            ad_line("123.4", JobStatus=5, HoldReasonCode=1, HoldReasonSubCode=0,
                    HoldReason="via condor_hold (by user alice)"),
            ad_line("123.17", JobStatus=4, ExitCode=2, ExitBySignal="false"),
            "",
        ]
    )  # fmt: skip
    for parse in (D.parse_status, D.parse_history):
        found = parse(text, "", 0)
        assert sorted(found) == ["123.0", "123.17", "123.4"]
        assert found["123.4"].phase is Phase.HELD
        assert (found["123.17"].phase, found["123.17"].exit_code) == (Phase.FAILED, 2)
    argv = D.history_argv("alice", ["123.4"], 0.0)
    assert argv is not None and "(ClusterId == 123 && ProcId == 4)" in argv
    assert D.cancel_argv(["123.4"]) == ["condor_rm", "123.4"]
    D.parse_cancel("Job 123.4 marked for removal\n", "", 0)
    D.parse_cancel("Job 123.4 held\n", "", 0)
    D.parse_cancel("Job 123.4 released\n", "", 0)
    D.parse_cancel("Job 123.3 marked for removal\n", "Job 123.4 not found\n", 1)
    D.parse_cancel("", "Job 123.4 already marked for removal\n", 1)
