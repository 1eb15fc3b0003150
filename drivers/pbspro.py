"""PBS Professional / OpenPBS: ``#PBS`` scripts, ``qsub``, ``qstat -f -F json``, ``qdel``.

Pure functions only (see :mod:`schedulerd.drivers.dialect`). The helpers that PBS Pro and
Torque share -- directive checks, ``qsub`` output, ``qdel`` wordings, ``qstat -f`` text,
exit-status interpretation -- live here and :mod:`schedulerd.drivers.torque` imports them.

Formats handled (see ``tests/fixtures/batch-outputs/pbspro``):

* ``qstat -f -F json``: PBS Pro 19/20 (4-space indent, ``"key":value``), OpenPBS 23 (TABs),
  re-serialised variants. Known quirks: all-digit environment values printed as bare
  (invalid) JSON numbers such as ``"foo":005`` (openpbs#1255); unescaped text inside
  strings (openpbs#2541); plain-text ``qstat -a`` tables printed before the JSON
  (openpbs#2675); a header object without a ``"Jobs"`` key when there is nothing to show
  or the server cannot be reached. We parse strictly first, then repair line by line,
  then fall back to scanning the text for each job's few attributes we need.
* ``qstat -f`` plain text (``Job Id:`` blocks with wrapped continuation lines).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.refusals import Refusal, first_match, refusal
from schedulerd.drivers.shell import CONTROL_CHARS
from schedulerd.drivers.wrapper import render_wrapper
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

# --- states ------------------------------------------------------------------------------

#: PBS Professional Reference Guide, chapter "Job States" (job_state letters; the same
#: table is in qstat(1B), "Job states"; OpenPBS src/include/job.h, JOB_STATE_LTR_*).
#: ``None`` means "finished: decide from Exit_status". The letters and what they mean
#: for the one job we submitted:
PBSPRO_STATE_MAP: Final[Mapping[str, Phase | None]] = {
    # B: "Job arrays only: job array has begun" (at least one subjob started); we never
    # submit arrays (-J is refused at job.submit), an array parent is running as a whole
    "B": Phase.RUNNING,
    "E": Phase.RUNNING,  # exiting after having run (obit, stage-out): not finished yet
    "F": None,  # finished (history: qstat -x); Exit_status decides
    "H": Phase.HELD,  # held
    # M: "Job was moved to another server" (peer scheduling, qmove to a remote queue).
    # The record left on this server is a history job (shown with -x only) while the job
    # lives on at the destination, where qstat without -x follows it (qstat.c
    # locate_job; svr_chk_histjob in server/svr_jobfunc.c answers "unknown" here for a
    # moved job still active there). So it is still waiting or running: queued, not
    # gone (gone would have it retried while it runs). Once the destination reports its
    # end the record's substate becomes 92, "Job finished at" (server/req_track.c):
    # then the job left and its exit file decides (see MOVED_FINISHED_SUBSTATE).
    "M": Phase.QUEUED,
    "Q": Phase.QUEUED,  # queued, eligible to run or be routed
    "R": Phase.RUNNING,  # running
    "S": Phase.HELD,  # suspended by the server (a higher-priority job, an admin)
    "T": Phase.QUEUED,  # in transit (being moved to a new location)
    "U": Phase.HELD,  # user-suspended: its workstation became busy
    # W: waiting for its requested execution time (qsub -a) or for a stage-in retry after
    # a failed stage-in: it will run without anyone acting, so it is queued
    "W": Phase.QUEUED,
    "X": None,  # subjobs only: subjob finished (expired); Exit_status decides
}
#: the substate of a moved job's record once the job finished at its destination
#: (JOB_SUBSTATE_FINISHED, src/include/job.h; set by server/req_track.c)
MOVED_FINISHED_SUBSTATE: Final = 92
#: the reason given for a W job without a comment
WAITING_REASON: Final = "waiting for its execution time (qsub -a) or a stage-in retry"

#: Hold_Types letters (PBS Professional Reference Guide, "Job Attributes", Hold_Types;
#: Torque qhold(1B) -h): n means no hold.
HOLD_TYPE_NAMES: Final[Mapping[str, str]] = {
    "u": "user",
    "o": "operator",
    "s": "system",
    "p": "bad password",
}

#: PBS Pro sets Exit_status to JOB_EXEC_KILL_WALLTIME when the MoM kills a job for
#: exceeding its walltime (``job.h``, "JOB_EXEC_* exit codes").
PBSPRO_WALLTIME_EXIT: Final = -29

#: ``<seq>``, ``<seq>[]`` (array parent), ``<seq>[<index>]`` (subjob), optionally
#: followed by ``.<server>``.
NATIVE_ID: Final = re.compile(r"\d+(?:\[\d*\])?(?:\.[A-Za-z0-9][A-Za-z0-9._-]*)?")

#: stderr lines about one id that has left the queue (PBS Pro, old and new Torque).
UNKNOWN_OR_FINISHED: Final = re.compile(
    r"Unknown Job Id|Job has finished|Request invalid for state of job"
    r"|job has finished|Unknown job id",
)

# --- refusals and head errors ------------------------------------------------------------

#: How PBS Pro / OpenPBS wordings are classed, for ``qsub`` refusals and for failed
#: ``qstat``/``qdel``/``qselect``: the first row whose pattern occurs anywhere in the
#: command's stderr wins, so the rows go from the most specific to the most general (the
#: credential rows come before the "cannot connect" rows that follow them in the same
#: output). The server's texts are ``pbs_messages.c`` (src/lib/Liblog/pbs_messages.c,
#: ``pbs_err_to_txt[]``; ``msg_*`` names below); ``qsub`` prints them as ``qsub: <text>``
#: and exits with the PBSE code & 0xff (exit codes wrap and differ from Torque's, so only
#: the text is used). Unknown ``qsub: ...`` text is ``permanent`` (qsub said it did not
#: submit, for a reason we do not know to be passing); output without a ``qsub:`` line and
#: without a known wording (a shell error, a wrapper's text) is not a refusal at all: the
#: driver looks the job up by name (``ParseError``).
REFUSALS: Final[tuple[Refusal, ...]] = (
    # -- our credentials refused (authentication, authorisation): no retry helps ----------
    refusal(
        r"MUNGE user-authentication on (?:en|de)code failed|User credentials do not match",
        "auth",
        "src/lib/Libauth/munge/munge_supp.c (munge_get_auth_data / munge_validate_auth_data);"
        " the client's lines when munged is not running, as asserted by OpenPBS's "
        "test/tests/security/pbs_multiple_auth.py (test_munge_not_running_state); the same "
        "class as the Slurm dialect's munge rows",
        "munge_get_auth_data: MUNGE user-authentication on encode failed with "
        "`Munged communication error`\n"
        "auth: error returned: 15010\n"
        "auth: MUNGE user-authentication on encode failed with `Munged communication error`\n"
        "qsub: cannot connect to server pbsserver (errno=15010)",
    ),
    refusal(
        r"auth: Unable to authenticate connection"
        r"|auth: Failed to send auth request|auth: error returned: 15029",
        "auth",
        "src/lib/Libauth (the client's auth lines): the server does not take our "
        "PBS_AUTH_METHOD (PBSE_NOSUP 15029) or refuses the connection's authentication; "
        "pbs_multiple_auth.py (test_not_listed_auth_method and the resvport/munge mix test)",
        "auth: error returned: 15029\n"
        "auth: Failed to send auth request\n"
        "No support for requested service.\n"
        "qsub: cannot connect to server pbsserver (errno=15029)",
    ),
    refusal(
        r"Unauthorized Request",
        "auth",
        "msg_perm 'Unauthorized Request ' (PBSE_PERM 15007, exit 159): svr_chkque "
        "(src/server/svr_jobfunc.c) returns it when a queue's user or group ACL refuses us",
        "qsub: Unauthorized Request ",
    ),
    refusal(
        r"Access from host not allowed, or unknown host",
        "auth",
        "msg_reqbadhost (PBSE_BADHOST 15008): the queue's host ACL refuses the submit host "
        "(svr_jobfunc.c; test/tests/functional/pbs_acl_host_queue.py)",
        "qsub: Access from host not allowed, or unknown host",
    ),
    refusal(
        r"Bad [UG]ID for job execution",
        "auth",
        "msg_baduser / msg_badgrp (PBSE_BADUSER 15023, exit 175; PBSE_BADGRP 15045): the "
        "server will not run jobs as our user or group (unknown there, or not allowed)",
        "qsub: Bad UID for job execution",
    ),
    refusal(
        r"Expired credential",
        "auth",
        "msg_expired (PBSE_EXPIRED 15020): our credential (Kerberos ticket, ...) expired; "
        "someone must renew it",
        "qsub: Expired credential",
    ),
    refusal(
        r"^No Permission\.$",
        "auth",
        "src/lib/Libcmds/cnt2server.c: the connection itself was refused for permission "
        "(PBSE_PERM)",
        "No Permission.\nqsub: cannot connect to server pbsserver (errno=15007)",
    ),
    # -- passing: limits on what is queued, a busy or unreachable server ------------------
    refusal(
        r"Invalid credential",
        "transient",
        "msg_badcred (PBSE_BADCRED 15019, exit 171): the server could not check the "
        "connection's credential; seen passing under load (resubmitting worked) in real "
        "outputs: equinor/ert#7103 ('qsub: Invalid credential', exit 171, retried by ert), "
        "tudo-r/BatchJobs#122 (Torque)",
        "qsub: Invalid credential",
    ),
    refusal(
        r"Maximum number of jobs in 'Q' state (?:for (?:user|group|project) \S+ )?"
        r"already in (?:queue|complex)",
        "transient",
        "msg_et_qct_q / msg_et_sct_q / msg_et_suq_q / msg_et_sus_q (and the group and "
        "project variants): a queued_jobs_threshold limit (PBSE_ENTLIMCT 15142, exit 38); "
        "server/svr_func.c builds the text; test/tests/functional/pbs_test_entity_limits.py",
        "qsub: Maximum number of jobs in 'Q' state for user alice already in queue workq",
    ),
    refusal(
        r"Maximum number of jobs (?:for (?:user|group|project) \S+ )?"
        r"already in (?:queue|complex)",
        "transient",
        "msg_maxqueued (PBSE_MAXQUED 15046) and msg_et_qct / msg_et_sct / msg_et_suq / "
        "msg_et_sus (and the group and project variants): a max_queued limit on jobs "
        "queued or running (PBSE_ENTLIMCT); pbs_test_entity_limits.py",
        "qsub: Maximum number of jobs for user alice already in queue workq",
    ),
    refusal(
        r"would exceed (?:queue \S+'s|complex's) per-(?:user|group|project) limit",
        "transient",
        "msg_et_guq / msg_et_gus / msg_et_ggq / ... and their 'of jobs in 'Q' state' "
        "variants: a generic (PBS_GENERIC) max_queued or queued_jobs_threshold limit; "
        "pbs_test_entity_limits.py; real on ALCF Polaris (tests/fixtures "
        "pbspro/qsub.would-exceed-queue-generic-per-user-limit.stderr.txt)",
        "qsub: would exceed queue generic's per-user limit of jobs in 'Q' state",
    ),
    refusal(
        r"would exceed (?:per-(?:user|group|project) |(?:user|group|project) \S+'s )?"
        r"limit on resource",
        "transient",
        "msg_et_raq / msg_et_ras / msg_et_rguq / msg_et_rsuq / ... (PBSE_ENTLIMRESC 15143): a "
        "max_queued_res or queued_jobs_threshold_res limit on what is queued; passes as "
        "our other jobs finish (the same wording is used when this job alone is over the "
        "limit: we cannot tell, the scheduler's refusal pause paces the retries)",
        "qsub: would exceed per-user limit on resource ncpus in complex",
    ),
    refusal(
        r"Request not allowed: Server shutting down",
        "transient",
        "msg_svrshut (PBSE_SVRDOWN 15060)",
        "qsub: Request not allowed: Server shutting down",
    ),
    refusal(
        r"Server connection table full|No free connections|^Too many open connections\.$",
        "transient",
        "msg_connfull (PBSE_CONNFULL 15117), msg_noconnects (PBSE_NOCONNECTS 15033), "
        "cnt2server.c 'Too many open connections.'",
        "qsub: Server connection table full",
    ),
    refusal(
        r"Resource temporarily unavailable",
        "transient",
        "msg_rescunav (PBSE_RESCUNAV 15044)",
        "qsub: Resource temporarily unavailable",
    ),
    refusal(
        r"Failed to save job/resv",
        "transient",
        "msg_save_err (PBSE_SAVE_ERR 15161, exit 57): the server's database; "
        "test/tests/functional/pbs_qsub_opts_args.py, openpbs/openpbs#1104",
        "qsub: Failed to save job/resv, refer server logs for details",
    ),
    refusal(
        r"Batch protocol error|Premature end of message|End of File",
        "transient",
        "msg_protocol (PBSE_PROTOCOL 15031, exit 183) and the DIS texts of "
        "src/lib/Libdis/dis.c (dis_emsg[]); real 'qsub: Premature end of message' (exit "
        "183) in equinor/ert#7103",
        "qsub: Premature end of message",
    ),
    refusal(
        r"PBS server internal error|System error",
        "transient",
        "msg_internal (PBSE_INTERNAL 15011), msg_system 'System error: ' (PBSE_SYSTEM "
        "15010): the server failed, not this job",
        "qsub: PBS server internal error",
    ),
    refusal(
        r"Queue is not enabled",
        "transient",
        "msg_qunoenb (PBSE_QUNOENB 15021): svr_chkque refuses while the queue's 'enabled' "
        "is false, which admins set for maintenance",
        "qsub: Queue is not enabled",
    ),
    refusal(
        r"request rejected as filter hook '[^']*' got an alarm call",
        "transient",
        "src/server/hook_func.c: a site's queuejob hook ran out of time (server load)",
        "qsub: request rejected as filter hook 'site_check' got an alarm call. "
        "Please inform Admin",
    ),
    refusal(
        r"cannot connect to server|Connection refused|No route to host|Connection timed out"
        r"|Network is unreachable|Communication failure|pbs_iff: cannot",
        "transient",
        "src/cmds/qsub.c 'qsub: cannot connect to server <s> (errno=<n>)' after a "
        "cnt2server.c or perror() line; real in openpbs/openpbs#2070 and equinor/ert#7103 "
        "(exit 162), tests/fixtures pbspro/qstat-x-f-F-JSON.cannot-connect.*",
        "Connection refused\nqsub: cannot connect to server s034-lc (errno=15010)",
    ),
    # -- permanent: this job can never be taken as it is -----------------------------------
    refusal(
        r"Job violates queue and/or server resource limits|Resource limit exceeds allowable"
        r"|Array job exceeds server or queue size limit",
        "permanent",
        "msg_excqresc (PBSE_EXCQRESC 15036, exit 188), msg_exceedlmt (PBSE_EXLIMIT), "
        "msg_maxarraysize: the job's own request is beyond the queue's resources_max (or "
        "below resources_min); no amount of waiting changes it",
        "qsub: Job violates queue and/or server resource limits",
    ),
    refusal(
        r"Unknown queue|No default queue specified|Access to queue is denied"
        r"|Job rejected by all possible destinations",
        "permanent",
        "msg_unkque (PBSE_UNKQUE), msg_quenodflt, msg_qacess (PBSE_QACESS: svr_chkque "
        "returns it for a from_route_only queue, so it is about the queue we asked for, "
        "not our credentials), msg_routebad (PBSE_ROUTEREJ); real 'qsub: Unknown queue' "
        "(tests/fixtures pbspro/qsub.unknown-queue.stderr.txt)",
        "qsub: Unknown queue",
    ),
    refusal(
        r"Unknown resource|Illegal attribute or resource value|illegal -\w value"
        r"|Resource invalid in \"select\" specification|node\(s\) specification error"
        r"|Cannot have \"place\" without \"select\"|Invalid Account|Invalid Job Dependency"
        r"|jobscript size exceeded|hook rejected request",
        "permanent",
        "msg_unkresc, msg_badatval, qsub.c 'illegal -<opt> value', msg_invalselectresc, "
        "msg_BadNodespec, msg_placenoselect, msg_badacct, msg_baddepend, "
        "msg_jobscript_max_size, msg_hook_reject: what this job asks for",
        "qsub: Illegal attribute or resource value",
    ),
)


def classify(text: str, table: Sequence[Refusal] = REFUSALS) -> Refusal | None:
    """The first row of ``table`` whose wording occurs in ``text``."""
    return first_match(table, text)


#: control characters would end the directive line; quotes and backslashes are read
#: differently by the directive parsers of qsub versions, so they are refused too.
_UNSAFE_VALUE: Final = re.compile(r"[\x00-\x1f\x7f'\"\\]")


# --- scripts -----------------------------------------------------------------------------


def check_value(what: str, value: str, *, spaces: bool = False) -> str:
    """A directive value: no control characters (a newline would end the directive and
    start a shell line); unless ``spaces`` (a whole extra directive) also no whitespace,
    quotes or backslashes."""
    bad = CONTROL_CHARS if spaces else _UNSAFE_VALUE
    if not value or bad.search(value) or (not spaces and any(c.isspace() for c in value)):
        raise ValueError(f"invalid {what} for a #PBS directive: {value!r}")
    return value


def directive_path(what: str, path: str) -> str:
    """A path for ``-o``/``-e``; PBS reads ``host:path``, so a colon is not allowed."""
    check_value(what, path)
    if ":" in path:
        raise ValueError(f"{what} {path!r}: PBS would read the part before ':' as a host")
    return path


def format_walltime(seconds: int) -> str:
    if seconds <= 0:
        raise ValueError(f"walltime must be positive, not {seconds}")
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def common_directives(job: JobRequest, resources: Iterable[str]) -> list[str]:
    """``#PBS`` lines both systems understand, with ``resources`` (``-l`` values)."""
    lines = [
        f"#PBS -N {check_value('job name', job.name)}",
        # the wrapper is POSIX sh; without -S the user's login shell (csh?) would run it
        "#PBS -S /bin/sh",
    ]
    if job.queue is not None:
        lines.append(f"#PBS -q {check_value('queue', job.queue)}")
    if job.account is not None:
        lines.append(f"#PBS -A {check_value('account', job.account)}")
    lines += [f"#PBS -l {value}" for value in resources]
    if job.walltime_s is not None:
        lines.append(f"#PBS -l walltime={format_walltime(job.walltime_s)}")
    lines.append(f"#PBS -o {directive_path('stdout path', job.stdout_path)}")
    lines.append(f"#PBS -e {directive_path('stderr path', job.stderr_path)}")
    lines.append(f"#PBS -r {'y' if job.requeue else 'n'}")
    for extra in job.extra_directives:
        check_value("extra directive", extra, spaces=True)
        lines.append(extra if extra.startswith("#PBS") else f"#PBS {extra}")
    return lines


def positive(what: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"{what} must be positive, not {value}")
    return value


# --- small parsing helpers -----------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def raise_for_head_error(
    command: str, stderr: str, exit_status: int, table: Sequence[Refusal] = REFUSALS
) -> None:
    """``RemoteCommandError`` when ``stderr`` carries a wording ``table`` classes as passing
    (the server unreachable or busy: ``transient``) or as our credentials refused
    (``auth``); the caller decides what any other output means."""
    row = classify(stderr, table)
    if row is None or row.kind == "permanent":
        return
    raise RemoteCommandError(
        f"{command}: " + " / ".join(_lines(stderr))[:300],
        exit_status=exit_status,
        stderr=stderr,
        transient=row.kind == "transient",
        auth=row.kind == "auth",
    )


def unexpected_stderr(stderr: str) -> list[str]:
    """stderr lines that are not about a job having left the queue."""
    return [line for line in _lines(stderr) if not UNKNOWN_OR_FINISHED.search(line)]


def parse_qsub(
    stdout: str, stderr: str, exit_status: int, table: Sequence[Refusal] = REFUSALS
) -> str:
    """The job id ``qsub`` printed (PBS Pro and Torque print the same), or its refusal
    classed by ``table``.

    The id is the last line that looks like one; banner lines before it are ignored. A
    refusal is a wording of ``table`` or a ``qsub:`` line (unknown text: permanent);
    anything else (a shell's "qsub: not found", a wrapper's text) is not understood.
    """
    if exit_status == 0:
        for line in reversed(_lines(stdout)):
            if NATIVE_ID.fullmatch(line):
                return line
        raise ParseError(f"qsub printed no job id: {stdout[:200]!r} {stderr[:200]!r}")
    lines = _lines(stderr) + _lines(stdout)
    text = "\n".join(lines)
    row = classify(text, table)
    if row is None and not any(line.startswith("qsub:") for line in lines):
        raise ParseError(f"qsub failed (exit {exit_status}) without a refusal: {text[:200]!r}")
    kind = "permanent" if row is None else row.kind
    raise SubmitRejected(
        " / ".join(lines)[:500], transient=kind == "transient", auth=kind == "auth"
    )


def parse_qdel(
    stdout: str, stderr: str, exit_status: int, table: Sequence[Refusal] = REFUSALS
) -> None:
    """Accept "Unknown Job Id" / "Job has finished" / "invalid state" complaints."""
    raise_for_head_error("qdel", stderr, exit_status, table)
    if exit_status == 0:
        odd = unexpected_stderr(stdout + "\n" + stderr)
        if odd:
            # qdel prints nothing when it succeeds: this is someone else's answer
            raise ParseError(f"qdel exit 0 with {' / '.join(odd)[:200]!r}")
        return
    other = unexpected_stderr(stderr)
    if not other and _lines(stderr):
        return
    raise RemoteCommandError(
        "qdel failed: " + (" / ".join(other) or f"exit status {exit_status}")[:300],
        exit_status=exit_status,
        stderr=stderr,
        transient=False,
    )


_VERSION_PBS: Final = re.compile(r"pbs_version\s*=\s*(\S+)")
_VERSION_TORQUE: Final = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)


def parse_qstat_version(
    stdout: str, stderr: str, exit_status: int, table: Sequence[Refusal] = REFUSALS
) -> str:
    """``qstat --version``: ``pbs_version = 19.1.3`` (PBS) or ``Version: 6.1.2`` (Torque)."""
    text = f"{stdout}\n{stderr}"
    match = _VERSION_PBS.search(text)
    if match:
        return f"PBS {match.group(1)}"
    match = _VERSION_TORQUE.search(text)
    if match:
        return f"Torque {match.group(1)}"
    raise_for_head_error("qstat --version", stderr, exit_status, table)
    raise ParseError(f"no version in qstat --version output: {text[:200]!r}")


def parse_ctime(value: object) -> float | None:
    """PBS date attributes: ``"Tue Oct  4 21:23:20 2022"`` (server local time) or epoch."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit() and len(text) < 15:
        return float(text) if int(text) > 0 else None
    try:
        return time.mktime(time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,12}\s*", value):
        return int(value)
    return None


def as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def hold_reason(hold_types: str | None, comment: str | None) -> str:
    kinds = [HOLD_TYPE_NAMES.get(c, c) for c in (hold_types or "") if c not in "n "]
    reason = f"{'+'.join(kinds)} hold" if kinds else "held"
    return f"{reason}: {comment}" if comment else reason


def finished_observation(
    native_id: str,
    exit_status: int | None,
    *,
    name: str | None,
    started_at: float | None,
    finished_at: float | None,
    comment: str | None,
    walltime_exit: int,
) -> Observation:
    """A finished job from its Exit_status (PBS Pro and Torque agree on the encoding:
    0..255 the job script's status, 256+N killed by signal N, negative: the batch system
    failed it -- JOB_EXEC_* codes)."""

    def obs(phase: Phase, exit_code: int | None, reason: str | None) -> Observation:
        if comment and reason:
            reason = f"{reason} ({comment})"
        return Observation(
            native_id=native_id,
            phase=phase,
            exit_code=exit_code,
            reason=reason or comment,
            name=name,
            started_at=started_at,
            finished_at=finished_at,
        )

    if exit_status is None:
        if started_at is None:
            return obs(Phase.CANCELLED, None, "deleted before it ran")
        return obs(Phase.FAILED, None, "finished without an exit status")
    if exit_status == walltime_exit:
        return obs(Phase.TIMEOUT, None, f"walltime exceeded (Exit_status={exit_status})")
    if exit_status < 0:
        return obs(
            Phase.FAILED, None, f"the batch system failed the job (Exit_status={exit_status})"
        )
    if exit_status > 256:
        signo = exit_status - 256
        return obs(Phase.FAILED, 128 + signo, f"killed by signal {signo}")
    if exit_status == 0:
        return obs(Phase.COMPLETED, 0, None)
    return obs(Phase.FAILED, exit_status, None)


def observe(
    native_id: str,
    attrs: Mapping[str, object],
    state_map: Mapping[str, Phase | None],
    *,
    walltime_exit: int,
) -> Observation:
    """One job from its attributes (``job_state``, ``Job_Name``, ``Exit_status`` /
    ``exit_status``, ``Hold_Types``, ``comment``, start/end times). A job without a
    state letter of ``state_map`` is not understood (``ParseError``): dropping it would
    read it as gone from the queue."""
    state = as_text(attrs.get("job_state"))
    if state is None or len(state) != 1 or state not in state_map:
        raise ParseError(f"job {native_id[:100]}: job_state {state!r} not understood")
    phase = state_map[state]
    name = as_text(attrs.get("Job_Name"))
    comment = as_text(attrs.get("comment"))
    started_at = parse_ctime(attrs.get("stime")) or parse_ctime(attrs.get("start_time"))
    finished_at = parse_ctime(attrs.get("obittime")) or parse_ctime(attrs.get("comp_time"))
    if phase is None:
        exit_raw = attrs.get("Exit_status", attrs.get("exit_status"))
        return finished_observation(
            native_id,
            as_int(exit_raw),
            name=name,
            started_at=started_at,
            finished_at=finished_at,
            comment=comment,
            walltime_exit=walltime_exit,
        )
    reason: str | None = comment
    if phase is Phase.HELD:
        reason = (
            hold_reason(as_text(attrs.get("Hold_Types")), comment)
            if state == "H"
            else f"suspended{': ' + comment if comment else ''}"
        )
    elif state == "M":
        reason = comment or "moved to another server"
        if as_int(attrs.get("substate")) == MOVED_FINISHED_SUBSTATE or (
            comment is not None and comment.startswith("Job finished at")
        ):
            phase = Phase.GONE  # it finished at its destination: the exit file decides
    elif state == "W" and comment is None:
        reason = WAITING_REASON
    return Observation(
        native_id=native_id,
        phase=phase,
        reason=reason,
        name=name,
        started_at=started_at,
        finished_at=finished_at,
    )


# --- qstat -f plain text -------------------------------------------------------------------

_ATTR_LINE: Final = re.compile(r"^([ \t]+)([A-Za-z_][\w.]*) = ?(.*)$")


def parse_full_text(text: str) -> dict[str, dict[str, str]]:
    """``qstat -f`` blocks: ``Job Id: X`` then ``key = value`` lines.

    PBS and Torque indent attributes by 4 spaces and continue long values on lines
    indented by a TAB (or more spaces), wrapped mid-token. Torque-compatible ``qstat``
    front ends (Slurm's ``qstat`` wrapper) indent attributes by a TAB and never wrap. So
    the first attribute line of a block sets that block's attribute indent; any other
    indented line continues the previous value.
    """
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    key: str | None = None
    indent: str | None = None
    started = False
    for raw in text.splitlines():
        if raw.startswith("Job Id:"):
            native_id = raw[len("Job Id:") :].strip()
            if not NATIVE_ID.fullmatch(native_id):
                raise ParseError(f"qstat -f: {raw[:100]!r} is not a job id line")
            current = jobs.setdefault(native_id, {})
            key = indent = None
            started = True
            continue
        if not raw.strip() or not started:
            continue  # blank lines between blocks; banner lines before the first one
        match = _ATTR_LINE.match(raw)
        if current is not None and match and indent in (None, match.group(1)):
            indent, key = match.group(1), match.group(2)
            current[key] = match.group(3)
        elif current is not None and key is not None and raw[:1] in "\t ":
            current[key] += raw.strip()
        # any other line inside a block is the rest of a value Torque printed with its
        # raw newlines (sched_hint: torque/qstat-f.held-running-completed-queued.ichec.txt);
        # a block we cannot read still fails in observe() (no job_state)
    return jobs


# --- qstat -f -F json ----------------------------------------------------------------------

_KEY_VALUE_LINE: Final = re.compile(r'^(\s*"(?:[^"\\]|\\.)*"\s*:\s*)(.*?)(\s*,?\s*)$')
_JOB_HEADER: Final = re.compile(r'^\s*"(\d+(?:\[\d*\])?(?:\.[^"\s]*)?)"\s*:\s*\{\s*$', re.MULTILINE)
_SCAN_KEYS: Final = (
    "Job_Name",
    "job_state",
    "substate",
    "Exit_status",
    "Hold_Types",
    "comment",
    "stime",
    "obittime",
)


def _valid_json(value: str) -> bool:
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def repair_json_lines(text: str) -> str:
    """Quote bare invalid values (``005``, words) and re-escape broken strings, line by line."""
    out = []
    for line in text.splitlines():
        match = _KEY_VALUE_LINE.match(line)
        if match:
            head, value, tail = match.groups()
            if value and value not in ("{", "[") and not _valid_json(value):
                inner = value[1:-1] if value.startswith('"') and value.endswith('"') else value
                line = head + json.dumps(inner) + tail
        out.append(line)
    return "\n".join(out)


def json_start(text: str) -> int | None:
    """Offset of the JSON document: the first line that starts with ``{`` (the lines
    before it are banners or the plain-text table of the OpenPBS 23 bug)."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            return offset + (len(line) - len(line.lstrip()))
        offset += len(line)
    return None


def _load_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def scan_jobs(text: str) -> dict[str, dict[str, object]]:
    """Last resort for JSON that no repair fixes: each job's header line, then the few
    attributes we need by pattern, within that job's part of the text."""
    headers = list(_JOB_HEADER.finditer(text))
    jobs: dict[str, dict[str, object]] = {}
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        part = text[header.end() : end]
        attrs: dict[str, object] = {}
        for key in _SCAN_KEYS:
            match = re.search(rf'"{key}"\s*:\s*("(?:[^"\\\n]|\\.)*"|-?\d+)', part)
            if match:
                raw = match.group(1)
                attrs[key] = raw[1:-1] if raw.startswith('"') else int(raw)
        jobs[header.group(1)] = attrs
    return jobs


def parse_json_jobs(text: str) -> dict[str, dict[str, object]]:
    """The ``"Jobs"`` object of ``qstat -f -F json`` output, quirks tolerated."""
    start = json_start(text)
    if start is None:
        if not text.strip():
            return {}
        raise ParseError(f"no JSON in qstat output: {text[:200]!r}")
    body = text[start:]
    data = _load_object(body)
    if data is None:
        data = _load_object(repair_json_lines(body))
    if data is None:
        jobs = scan_jobs(body)
        if not jobs and ('"Jobs"' in body or '"pbs_' not in body):
            raise ParseError(f"qstat JSON not understood: {body[:200]!r}")
        return jobs
    raw_jobs = data.get("Jobs")
    if raw_jobs is None:
        if not ({"pbs_version", "pbs_server", "timestamp"} & data.keys()):
            raise ParseError(f"not qstat JSON: {body[:200]!r}")
        return {}
    if not isinstance(raw_jobs, dict):
        raise ParseError(f'qstat JSON "Jobs" is not an object: {body[:200]!r}')
    odd = [str(k) for k, v in raw_jobs.items() if not isinstance(v, dict)]
    if odd:
        raise ParseError(f'qstat JSON: job {odd[0][:100]!r} is not an object')
    return {str(k): v for k, v in raw_jobs.items()}


def parse_qstat_common(
    stdout: str,
    stderr: str,
    exit_status: int,
    jobs_of: Any,
    state_map: Mapping[str, Phase | None],
    *,
    walltime_exit: int,
    table: Sequence[Refusal] = REFUSALS,
) -> dict[str, Observation]:
    """Shared tail of PBS Pro and Torque status parsing: errors, then each job."""
    raise_for_head_error("qstat", stderr, exit_status, table)
    jobs: dict[str, Mapping[str, object]] = jobs_of(stdout)
    if not jobs and exit_status != 0:
        other = unexpected_stderr(stderr)
        if other or not _lines(stderr):
            raise RemoteCommandError(
                "qstat failed: " + (" / ".join(other) or f"exit status {exit_status}")[:300],
                exit_status=exit_status,
                stderr=stderr,
            )
    if not stdout.strip() and exit_status == 0 and unexpected_stderr(stderr):
        # nothing on stdout, and stderr is not about our ids: not qstat's answer
        raise ParseError(f"qstat printed nothing but {' / '.join(_lines(stderr))[:200]!r}")
    return {
        native_id: observe(native_id, attrs, state_map, walltime_exit=walltime_exit)
        for native_id, attrs in jobs.items()
    }


def _pbspro_jobs(stdout: str) -> Mapping[str, Mapping[str, object]]:
    if json_start(stdout) is None and "Job Id:" in stdout:
        return parse_full_text(stdout)
    return parse_json_jobs(stdout)


# --- the dialect ---------------------------------------------------------------------------


def parse_qselect(
    stdout: str, stderr: str, exit_status: int, table: Sequence[Refusal] = REFUSALS
) -> list[str]:
    """Job ids, one per line, from ``qselect``."""
    raise_for_head_error("qselect", stderr, exit_status, table)
    if exit_status != 0:
        raise RemoteCommandError(
            f"qselect failed (exit {exit_status}): {' / '.join(_lines(stderr))[:300]}",
            exit_status=exit_status,
            stderr=stderr,
        )
    ids = []
    for line in _lines(stdout):
        if not NATIVE_ID.fullmatch(line):
            raise ParseError(f"qselect printed {line[:100]!r}, not a job id")
        ids.append(line)
    if not ids and unexpected_stderr(stderr):
        raise ParseError(f"qselect printed no ids but {' / '.join(_lines(stderr))[:200]!r}")
    return ids


class PbsProDialect:
    """PBS Professional and OpenPBS."""

    name = "pbspro"
    has_dry_run = False
    #: how this system's refusals and head errors are classed
    refusals: Sequence[Refusal] = REFUSALS

    def list_user_argv(self, user: str) -> list[str]:
        # the status command lists only the ids we give it (ListsUserJobs): qselect -u
        # lists the rest
        return ["qselect", "-u", user]

    def parse_list_user(self, stdout: str, stderr: str, exit_status: int) -> list[str]:
        return parse_qselect(stdout, stderr, exit_status, self.refusals)

    def directives(self, job: JobRequest) -> list[str]:
        chunk = ["1"]
        if job.cpus is not None:
            chunk.append(f"ncpus={positive('cpus', job.cpus)}")
        if job.memory_mb is not None:
            chunk.append(f"mem={positive('memory_mb', job.memory_mb)}mb")
        resources = [f"select={':'.join(chunk)}"] if len(chunk) > 1 else []
        return common_directives(job, resources)

    def render_script(self, job: JobRequest) -> str:
        return render_wrapper(job, self.directives(job))

    def extra_files(self, job: JobRequest) -> dict[str, str]:
        return {}

    def submit_argv(self, job: JobRequest) -> list[str]:
        return ["qsub", job.script_path]

    def parse_submit(self, stdout: str, stderr: str, exit_status: int) -> str:
        return parse_qsub(stdout, stderr, exit_status, self.refusals)

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        # Why the ids and not the user: PBS Pro has no user filter for the full/JSON
        # display -- "-u" is an option of the alternate (-a) table, and combined with
        # -F json it prints that table plus a JSON object with no jobs (OpenPBS 23,
        # openpbs PR #2675) or, once fixed, "qstat: conflicting options". Without ids,
        # qstat -f dumps every job on the server: megabytes of JSON on a 50k-job cluster,
        # every poll. With ids the server looks up only our jobs; ids that finished are
        # answered on stderr ("Job has finished, use -x") and go to history_argv.
        # (Some OpenPBS development builds print only the first listed id in JSON mode,
        # openpbs#2672; a missing job then goes to history, then to its exit file.)
        if not native_ids:
            return ["true"]  # nothing to ask; qstat with no ids would list every job
        return ["qstat", "-f", "-F", "json", *native_ids]

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        return parse_qstat_common(
            stdout,
            stderr,
            exit_status,
            _pbspro_jobs,
            PBSPRO_STATE_MAP,
            walltime_exit=PBSPRO_WALLTIME_EXIT,
            table=self.refusals,
        )

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        # -x adds finished and moved jobs (kept for the server's job_history_duration);
        # regular users may query their own jobs' history.
        if not native_ids:
            return ["true"]
        return ["qstat", "-x", "-f", "-F", "json", *native_ids]

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        return self.parse_status(stdout, stderr, exit_status)

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qdel", *native_ids]

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        parse_qdel(stdout, stderr, exit_status, self.refusals)

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *native_ids]

    def version_argv(self) -> list[str]:
        return ["qstat", "--version"]

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        return parse_qstat_version(stdout, stderr, exit_status, self.refusals)

    def dry_run_argv(self, job: JobRequest) -> list[str] | None:
        return None


# --- what a job may ask for (checked at job.submit) -------------------------------------------

#: PBS Pro keeps ``ncpus`` and ``walltime`` in C longs (64 bits) and compares sizes such
#: as ``mem`` in bytes in 64 bits: the largest values that survive those
PBS_MAX_CPUS: Final = 2**63 - 1
PBS_MAX_MEMORY_MB: Final = (2**63 - 1) >> 20
PBS_MAX_WALLTIME_S: Final = 2**63 - 1

#: qsub options (PBS Pro and Torque) a job's directives may not set, with the reason:
#: each breaks "one job, one run" or moves what schedulerd relies on
PBS_FORBIDDEN_OPTIONS: Final[Mapping[str, str]] = {
    "J": "an array would run the job several times",
    "t": "an array would run the job several times",  # Torque's array option
    "N": "schedulerd finds the job again by the name it gives it",
    "o": "use the workdir field (stdout goes to <workdir>/<submit name>.out)",
    "e": "use the workdir field (stderr goes to <workdir>/<submit name>.err)",
    "r": "use the requeue field",
    "S": "the job wrapper is a POSIX sh script",
    "I": "an interactive job cannot run in the background",
    "z": "schedulerd reads the job id that qsub prints",
}
#: qsub options without an argument: in a clustered word (``-hV``) the next letter is
#: another option; after any other letter the rest of the word is its argument
_PBS_FLAGS: Final = frozenset("fhInVXxz")


def pbs_forbidden_directives(directives: Sequence[str]) -> list[str]:
    """One problem per directive that sets a forbidden qsub option (``-J 1-3``, ``-J1-3``,
    ``-hN x``, ``#PBS -N x``, several options on one line) or ``-W block=true`` (qsub
    would wait for the job to end)."""
    problems = []
    for directive in directives:
        text = directive.strip().removeprefix("#PBS")
        words = text.split()
        for n, word in enumerate(words):
            found = _pbs_forbidden_in_word(word, words[n + 1] if n + 1 < len(words) else "")
            if found is not None:
                problems.append(f"directive {directive.strip()!r}: {found}")
                break
    return problems


def _pbs_forbidden_in_word(word: str, following: str) -> str | None:
    if not word.startswith("-") or len(word) < 2:
        return None
    for i, letter in enumerate(word[1:], start=1):
        if letter in PBS_FORBIDDEN_OPTIONS:
            return f"-{letter} is not allowed: {PBS_FORBIDDEN_OPTIONS[letter]}"
        if letter == "W":
            value = word[i + 1 :] or following
            if value.lower().startswith("block"):
                return "-W block is not allowed: qsub would wait until the job ends"
            return None
        if letter not in _PBS_FLAGS:
            return None
    return None


def pbs_limit_problems(job: JobRequest, *, max_cpus: int, system: str) -> list[str]:
    problems = []
    if job.cpus is not None and not 0 < job.cpus <= max_cpus:
        problems.append(f"cpus {job.cpus}: {system} takes 1 to {max_cpus}")
    if job.memory_mb is not None and not 0 < job.memory_mb <= PBS_MAX_MEMORY_MB:
        problems.append(f"memory {job.memory_mb} MB: more than {system} can hold")
    if job.walltime_s is not None and not 0 < job.walltime_s <= PBS_MAX_WALLTIME_S:
        problems.append(f"walltime {job.walltime_s}s: more than {system} can hold")
    return problems


def validate_pbs(job: JobRequest, dialect: PbsProDialect, *, max_cpus: int, system: str) -> list[str]:
    """Why qsub (of ``dialect``) could never take ``job``; empty when it can."""
    problems = pbs_forbidden_directives(job.extra_directives)
    problems += pbs_limit_problems(job, max_cpus=max_cpus, system=system)
    if problems:
        return problems
    try:
        dialect.directives(job)
    except ValueError as exc:
        return [str(exc)]
    return []


def validate_job(job: JobRequest) -> list[str]:
    """Why PBS Pro could never take ``job`` (characters a ``#PBS`` line or a ``-o`` path
    cannot carry, sizes beyond its types, forbidden directives); empty when it can."""
    return validate_pbs(job, PbsProDialect(), max_cpus=PBS_MAX_CPUS, system="PBS Pro")
