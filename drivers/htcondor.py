"""HTCondor: ``condor_submit -terse``, ``condor_q -af:jt``, ``condor_history -af:jt``.

Pure command builders and output parsers (see :mod:`schedulerd.drivers.dialect`).

The job script (the wrapper) is the executable of a submit description written next to
it (:meth:`HTCondorDialect.extra_files`); ``batch_name`` carries our job name into
``JobBatchName`` so status lines name their jobs.

Queue and history use the same autoformat query: ``-af:jt`` prints the job id, then each
attribute after a tab (condor_q(1), "-autoformat[:jlhVr,tng]"); missing attributes print
as ``undefined``. The first four attributes are ``JobStatus HoldReasonCode
HoldReasonSubCode HoldReason``, so the space-separated ``-af:j`` form of those four (the
captures in the fixtures) parses too: there, the hold reason is the rest of the line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.shell import is_one_line
from schedulerd.drivers.wrapper import render_wrapper
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

#: JobStatus values, HTCondor manual "Job ClassAd Attributes" (JobStatus)
STATE_MAP: dict[int, Phase] = {
    1: Phase.QUEUED,  # Idle
    2: Phase.RUNNING,  # Running
    3: Phase.CANCELLED,  # Removed (TIMEOUT when our walltime PeriodicRemove fired)
    4: Phase.COMPLETED,  # Completed (FAILED when ExitCode != 0 or ExitBySignal)
    5: Phase.HELD,  # Held
    6: Phase.RUNNING,  # Transferring Output
    7: Phase.HELD,  # Suspended
}

ATTRIBUTES = (
    "JobStatus",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "HoldReason",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "JobCurrentStartDate",
    "JobStartDate",
    "EnteredCurrentStatus",
    "CompletionDate",
    "JobBatchName",
    "RemoveReason",
)
(
    _STATUS,
    _HOLD_CODE,
    _HOLD_SUBCODE,
    _HOLD_REASON,
    _EXIT_CODE,
    _BY_SIGNAL,
    _EXIT_SIGNAL,
    _CURRENT_START,
    _FIRST_START,
    _ENTERED,
    _COMPLETION,
    _BATCH_NAME,
    _REMOVE_REASON,
) = range(len(ATTRIBUTES))

#: the RemoveReason HTCondor writes when a job's own periodic_remove fired; in our
#: submit descriptions periodic_remove only enforces the walltime
WALLTIME_REMOVE = "job attribute PeriodicRemove expression"

Kind = Literal["transient", "permanent", "auth"]


class Refusal(NamedTuple):
    """One row of :data:`REFUSALS`."""

    pattern: str  # searched (case-insensitive) in the command's whole stdout + stderr
    kind: Kind  # transient: retry later; permanent: this job never; auth: our credentials
    source: str  # where the wording comes from (htcondor/htcondor @7491a145f6 unless noted)
    sample: str  # a real text it matches (a capture, or the source's format string filled in)


#: How HTCondor's refusals read: condor_submit, and the head errors of condor_q,
#: condor_history, condor_rm/hold/release. FIRST MATCH WINS over the whole output, so the
#: most specific rows come first: an authentication line anywhere in the error stack
#: makes the answer ``auth`` even when "Failed to connect to queue manager" (transient
#: alone) heads it; a schedd limit is transient, a per-submission cap permanent.
#: condor_submit prints ``ERROR: <what>`` and then the error stack, one
#: ``SUBSYS:CODE:message`` frame a line (CondorError::getFullText(true)); codes from
#: src/condor_includes/condor_error_codes.h. A refusal no row matches is permanent
#: (condor_submit exits 1 with an ``ERROR:`` line: the job was not submitted); a failed
#: query or job action no row matches is a permanent RemoteCommandError.
REFUSALS: tuple[Refusal, ...] = (
    # --- our credentials: authentication and authorisation (no retry can fix them) ---
    Refusal(
        r"\bSECMAN:20(?:08|09|10):",
        "auth",
        "src/condor_io/condor_secman.cpp l.2306, l.2518 (2010 AUTHORIZATION_FAILED), l.1236"
        " (2009 CLIENT_AUTH_FAILED); sample: htcondor/htcondor PR #125",
        "ERROR: Failed to connect to local queue manager\n"
        'SECMAN:2010:Received "DENIED" from server for user build@07a87ab21a6b using method FS.',
    ),
    Refusal(
        r"\bAUTHENTICATE:1003:",
        "auth",
        "src/condor_io/authentication.cpp l.332 (OUT_OF_METHODS); sample: DIRACGrid/DIRAC"
        " issue #8048 (condor_submit -terse -remote to an HTCondor-CE, SciTokens refused)",
        "ERROR: Failed to connect to queue manager ce504.cern.ch\n"
        "AUTHENTICATE:1003:Failed to authenticate with any method\n"
        "AUTHENTICATE:1004:Failed to authenticate using SCITOKENS",
    ),
    Refusal(
        # handshake = the exchange of method lists; it fails when the socket does
        r"\bAUTHENTICATE:1002:",
        "transient",
        "src/condor_io/authentication.cpp l.242 (HANDSHAKE_FAILED, after a failed read/write)",
        "ERROR: Failed to connect to local queue manager\n"
        "AUTHENTICATE:1002:Failure performing handshake",
    ),
    Refusal(
        # the deadline ran out while methods were left to try (1003 comes first when none)
        r"\bAUTHENTICATE:1006:",
        "transient",
        "src/condor_io/authentication.cpp l.223, l.376 (TIMEOUT); sample: cms-sw/genproductions"
        " issue #1177 (lxplus)",
        "ERROR: Failed to connect to local queue manager\n"
        "AUTHENTICATE:1006:exceeded 1506425125 deadline during authentication",
    ),
    Refusal(
        r"\bAUTHENTICATE:100\d:",
        "auth",
        "src/condor_io/authentication.cpp l.400, l.410 (1004 METHOD_FAILED), 1001/1005/1007"
        " (NOT_BUILT/KEYEXCHANGE/PLUGIN); sample: DIRACGrid/DIRAC issue #8048",
        "AUTHENTICATE:1004:Failed to authenticate using SCITOKENS",
    ),
    Refusal(
        r"\bSCITOKENS:\d+:",
        "auth",
        "src/condor_utils/condor_scitokens.cpp l.270-361",
        "SCITOKENS:2:Failed to verify token and generate ACLs: token expired",
    ),
    Refusal(
        r"\bTOKEN:\d+:",
        "auth",
        "src/condor_utils/store_cred.cpp l.2639, l.2704 (IDTOKENS files)",
        "TOKEN:1:Failed to read file /home/alice/.condor/tokens.d/ap.token securely.",
    ),
    Refusal(
        r"\bGSI:\d+:",
        "auth",
        "usegalaxy-eu/infrastructure-playbook PR #855 (condor_rm -name, fixture"
        " condor_rm.auth-failure-remote-schedd.txt)",
        "GSI:5003:Failed to authenticate.  Globus is reporting error (851968:50).  There is"
        " probably a problem with your credentials.  (Did you run grid-proxy-init?)",
    ),
    Refusal(
        r"\bPermission denied to (?:remove|force removal of|transfer and remove|hold|release)"
        r" job \d+\.\d+",
        "auth",
        "src/condor_daemon_client/dc_schedd.cpp l.1630 (AR_PERMISSION_DENIED)",
        "Permission denied to remove job 123.4",
    ),
    Refusal(
        r"\bUnknown User \S+\. Use condor_qusers\b",
        "auth",
        "src/condor_schedd.V6/qmgmt.cpp l.3815",
        "ERROR: Unknown User alice@ap1.example.org. Use condor_qusers to add user before"
        " submitting jobs.\nUser is disabled",
    ),
    Refusal(
        r"\bUser (?:\S+ )?is disabled\b",
        "auth",
        "src/condor_schedd.V6/qmgmt.cpp l.3847-3849; src/condor_submit.V6/submit.cpp l.2228",
        "ERROR: User alice@ap1.example.org is disabled\nUser is disabled",
    ),
    Refusal(
        r"\bThe given user is not allowed to own jobs\b",
        "auth",
        "src/condor_submit.V6/submit.cpp l.2230 (NEWJOB_ERR_DISALLOWED_USER)",
        "ERROR: Failed to create new User record for alice.\n"
        "The given user is not allowed to own jobs",
    ),
    Refusal(
        r"\bNo credential stored for\b",
        "auth",
        "src/condor_submit.V6/submit.cpp l.836",
        "ERROR: No credential stored for alice@EXAMPLE\n\n\tCorrect this by running:\n"
        "\tcondor_store_cred add",
    ),
    # --- caps that the same job meets again (before the limits: same "would exceed") ---
    Refusal(
        r"\bwould exceed MAX_JOBS_PER_SUBMISSION\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2301-2303; qmgmt.cpp l.3969 (a cap per submit: a"
        " one-job submit refused by it is refused every time)",
        "ERROR: Failed to create proc\n"
        "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION",
    ),
    Refusal(
        r"\bwould exceed -maxjobs\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2286",
        "ERROR: Number of submitted jobs would exceed -maxjobs (0)",
    ),
    Refusal(
        r"\bNumber of submitted clusters would exceed \d+ and -single-cluster\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2211",
        "ERROR: Number of submitted clusters would exceed 1 and -single-cluster was specified",
    ),
    Refusal(
        r"\bSUBMIT_MAX_PROCS_IN_CLUSTER\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2310",
        "ERROR: number of procs exceeds SUBMIT_MAX_PROCS_IN_CLUSTER",
    ),
    # --- the schedd's limits on jobs in the queue: they pass as jobs leave ---
    Refusal(
        r"\bMAX_JOBS_SUBMITTED\b",
        "transient",
        "src/condor_schedd.V6/qmgmt.cpp l.3791 (NewCluster), l.3920 (NewProc);"
        " src/condor_submit.V6/submit.cpp l.2219-2222, l.2294-2297",
        "ERROR: MAX_JOBS_SUBMITTED exceeded. Current=10000, Limit=10000\n"
        "Number of submitted jobs would exceed MAX_JOBS_SUBMITTED",
    ),
    Refusal(
        r"\bMAX_JOBS_PER_OWNER\b",
        "transient",
        "src/condor_schedd.V6/qmgmt.cpp l.3957 (NewProc); src/condor_submit.V6/submit.cpp"
        " l.2298-2300",
        "ERROR: Failed to create proc\nNumber of submitted jobs would exceed MAX_JOBS_PER_OWNER",
    ),
    # --- the site's policy on the job itself ---
    Refusal(
        r"\bSubmit requirement \S+ (?:not met|evaluated to non-boolean|failed to evaluate)",
        "permanent",
        "src/condor_schedd.V6/schedd.cpp l.21020-21056 (checkSubmitRequirements)",
        "ERROR: Failed to commit job submission into the queue.\n"
        "ERROR: Submit requirement NotStandardUniverse not met.",
    ),
    Refusal(
        # the second ERROR line is the admin's SUBMIT_REQUIREMENT_<NAME>_REASON when set
        r"\bFailed to commit job submission into the queue\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.978-981; sample: docs/admin-manual/"
        "ap-policy-configuration.rst (fixture condor_submit.submit-requirement-rejected.txt)",
        "Submitting job(s).\nERROR: Failed to commit job submission into the queue.\n"
        "ERROR: This pool does not accept standard universe jobs.",
    ),
    Refusal(
        r"doesn't contain any \"queue\" commands",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.965",
        'ERROR: "/w/.schedulerd/sd-1-1.sub" doesn\'t contain any "queue" commands -- no jobs'
        " queued",
    ),
    # --- the schedd could not answer now ---
    Refusal(
        # the limits and user checks above print their own line after it; bare, it is the
        # schedd failing the call (seen under load: dmwm/WMCore issue #9381)
        r"\bFailed to create (?:new )?(?:cluster|proc)\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.2217-2219, l.2294",
        "ERROR: Failed to create cluster",
    ),
    Refusal(
        r"\bCEDAR:60\d\d:",
        "transient",
        "src/condor_daemon_client/daemon.cpp l.556 (6001 CONNECT_FAILED; 6002-6009 socket errors)",
        "ERROR: Failed to connect to local queue manager\n"
        "CEDAR:6001:Failed to connect to <127.0.0.1:9618?addrs=127.0.0.1-9618&noUDP&sock=schedd_1>",
    ),
    Refusal(
        r"\bSECMAN:2003:",
        "transient",
        "src/condor_io/condor_secman.cpp l.1361, l.1376 (CONNECT_FAILED)",
        "SECMAN:2003:TCP connection to <192.0.2.7:9618> failed.",
    ),
    Refusal(
        # alone, a socket write that failed: a busy schedd (it follows a refused
        # authentication only together with the AUTHENTICATE/SECMAN:2010 lines above)
        r"\bSECMAN:2007:",
        "transient",
        "src/condor_io/condor_secman.cpp l.2000 (COMMUNICATIONS_ERROR); sample:"
        " radical-cybertools/radical.saga issue #600 (condor_q on a busy schedd)",
        "-- Failed to fetch ads from: <129.79.53.198:9615?addrs=129.79.53.198-9615&noUDP&"
        "sock=39334_efb7_3> : xd-login.opensciencegrid.org\n"
        "SECMAN:2007:Failed to end classad message.",
    ),
    Refusal(
        r"^-- Failed to fetch ads from:",
        "transient",
        "src/condor_q.V6/queue.cpp l.4098 (the error stack follows; rows above read it)",
        "-- Failed to fetch ads from: <192.0.2.7:9618> : ap1.example.org",
    ),
    Refusal(
        r"\bFailed to connect to (?:local )?queue manager\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.2050, l.2054 (the error stack follows; rows above"
        " read it)",
        "ERROR: Failed to connect to local queue manager",
    ),
    Refusal(
        r"\bCan't find address of (?:local )?schedd\b|\bCould not find the local condor_schedd\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.766-769; src/condor_q.V6/queue.cpp l.679; sample:"
        " cms-sw/genproductions issue #1177",
        "ERROR: Can't find address of local schedd",
    ),
    Refusal(
        r"\bUnable to send request to remote\b",
        "transient",
        "src/condor_tools/history.cpp l.1205",
        "Unable to send request to remote schedd; likely a server or network error.",
    ),
)
_REFUSALS = tuple((re.compile(row.pattern, re.IGNORECASE | re.MULTILINE), row) for row in REFUSALS)


def classify(text: str) -> Refusal | None:
    """The first row of :data:`REFUSALS` that matches ``text``, or None."""
    for pattern, row in _REFUSALS:
        if pattern.search(text):
            return row
    return None


#: condor_rm/hold/release per-job answers (dc_schedd.cpp l.1603-1690, rm.cpp l.859):
#: done, and "already gone" (accepted: the job left the queue or is leaving it)
_ACTED = re.compile(
    r"^(?:Job \d+\.\d+ (?:marked for removal|removed locally|held|released)\b"
    r"|All jobs\b.* have been (?:removed|held|released)$)"
)
_GONE = re.compile(
    r"^(?:Job \d+\.\d+ (?:not found|already marked for removal|already removed)$"
    r"|Couldn't find/remove all jobs\b)"
)

_TERSE = re.compile(r"^(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)$")
_SUBMITTED = re.compile(r"^(\d+) job\(s\) submitted to cluster (\d+)\.$")
_JOB_LINE = re.compile(r"^(\d+\.\d+)(?:\t|\s+)(.*)$")
_JOB_ID = re.compile(r"^\d+\.\d+$")
_VERSION = re.compile(r"\$CondorVersion:\s*(\d[\w.\-]*)")
#: lines of the other condor_q/condor_history layouts (schedd banner, column headings,
#: long ClassAd form, -json/-xml), or an HTML page: an answer in one of those is not
#: ours and must not read as empty, with or without job lines
_FOREIGN = re.compile(
    r"^(?:-- |ID\s+OWNER\b|OWNER\s+BATCH_NAME\b|[A-Za-z_]\w* = |[\[{]$|\{\s*\"|<)"
)
#: what may stand around an answer that has no job line and still read as "no jobs":
#: banner lines (``*** ... ***``, ``### ...``, ``===``) and HTCondor's own warnings
_NOISE = re.compile(r"^(?:([*#=])\1\1|WARNING\b)")
#: the shell could not run the command itself (a wrapper may still exit 0)
_SHELL_ERROR = re.compile(
    r"\bcondor_\w+: (?:command not found|not found|No such file or directory|Permission denied)"
)
#: one frame of an HTCondor error stack (``SUBSYS:CODE:message``)
_STACK_FRAME = re.compile(r"^[A-Z][A-Z0-9_]*:-?\d+:")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _error_lines(lines: list[str]) -> list[str]:
    """The lines that say what went wrong: ``ERROR``/``Error`` lines, error-stack frames
    and the lines a row of :data:`REFUSALS` recognises."""
    return [
        ln
        for ln in lines
        if ln.lower().startswith("error") or _STACK_FRAME.match(ln) or classify(ln) is not None
    ]


def _check(what: str, value: str) -> str:
    if not is_one_line(value):
        raise ValueError(f"{what} must not contain a newline: {value!r}")
    if "$(" in value:
        raise ValueError(f"{what} must not contain a submit macro '$(': {value!r}")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with blanks: {value!r}")
    return value


def _check_path(what: str, value: str) -> str:
    """A path for a submit command: one line, no macro, no double quote (condor_submit
    turns it into a ClassAd string and older versions do not escape quotes)."""
    _check(what, value)
    if '"' in value:
        raise ValueError(f"{what} must not contain a double quote: {value!r}")
    return value


# --- what a job may ask for (checked at job.submit) -------------------------------------------

#: ClassAd integers are 64 bits, but execute slots advertise ``Cpus`` and ``Memory`` (MB)
#: as C ints: a request above INT_MAX never matches any slot
MAX_CPUS = 2**31 - 1
MAX_MEMORY_MB = 2**31 - 1
MAX_WALLTIME_S = 2**63 - 1

_WHY_OURS = (
    "schedulerd writes it (one job, one run: script, directory, output paths, name, walltime)"
)
#: submit commands (lower case) a job's directives may not set, and why
FORBIDDEN_COMMANDS: dict[str, str] = {
    "executable": _WHY_OURS,
    "transfer_executable": _WHY_OURS,
    "universe": "the job wrapper runs in the vanilla universe",
    "initialdir": "use the workdir field",
    "output": "use the workdir field (stdout goes to <workdir>/<submit name>.out)",
    "error": "use the workdir field (stderr goes to <workdir>/<submit name>.err)",
    "log": _WHY_OURS,
    "batch_name": "schedulerd finds the job again by the name it gives it",
    "periodic_remove": "it carries the walltime",
    "periodic_hold": "it keeps an evicted job from running twice (use the requeue field)",
    "periodic_hold_reason": "it keeps an evicted job from running twice (use the requeue field)",
    "on_exit_remove": "a job kept in the queue after it exits would run again",
    "max_retries": "a retried job would run several times (use the retries field)",
    "retry_until": "a retried job would run several times (use the retries field)",
}
#: the same, as job ClassAd attributes (``+Attr = ...`` / ``MY.Attr = ...``), lower case
FORBIDDEN_ATTRIBUTES: dict[str, str] = {
    "cmd": _WHY_OURS,
    "transferexecutable": _WHY_OURS,
    "jobuniverse": FORBIDDEN_COMMANDS["universe"],
    "iwd": FORBIDDEN_COMMANDS["initialdir"],
    "out": FORBIDDEN_COMMANDS["output"],
    "err": FORBIDDEN_COMMANDS["error"],
    "userlog": _WHY_OURS,
    "jobbatchname": FORBIDDEN_COMMANDS["batch_name"],
    "periodicremove": FORBIDDEN_COMMANDS["periodic_remove"],
    "periodichold": FORBIDDEN_COMMANDS["periodic_hold"],
    "onexitremove": FORBIDDEN_COMMANDS["on_exit_remove"],
    "schedulerdjobid": _WHY_OURS,
    "schedulerdattempt": _WHY_OURS,
}
_ASSIGNMENT = re.compile(r"\s*(\+|(?i:my)\.)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")


def forbidden_directives(directives: Sequence[str]) -> list[str]:
    """One problem per directive that is not a plain ``name = value`` line (``queue``,
    ``include``, ``if``, a trailing backslash that would continue onto our next line) or
    that sets a submit command or job attribute schedulerd writes itself."""
    problems = []
    for directive in directives:
        text = directive.strip()
        shown = f"directive {text!r}"
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            problems.append(f"{shown}: a trailing backslash would continue onto the next line")
            continue
        if re.match(r"(?i)queue\b", text):
            problems.append(f"{shown}: queue is not allowed (schedulerd queues exactly one job)")
            continue
        match = _ASSIGNMENT.match(text)
        if match is None:
            problems.append(f"{shown}: only 'name = value' lines are allowed")
            continue
        attribute, name = match.group(1) is not None, match.group(2).lower()
        why = (FORBIDDEN_ATTRIBUTES if attribute else FORBIDDEN_COMMANDS).get(name)
        if why is not None:
            problems.append(f"{shown}: {match.group(0).rstrip('= ').strip()} is not allowed: {why}")
    return problems


def validate_job(job: JobRequest) -> list[str]:
    """Why condor_submit could never take ``job``; empty when it can."""
    problems = forbidden_directives(job.extra_directives)
    if problems:
        return problems
    try:
        HTCondorDialect().submit_description(job)
    except ValueError as exc:
        return [str(exc)]
    return []


def _classad_string(value: str) -> str:
    """A ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(raw: str) -> str | None:
    raw = raw.strip()
    return None if raw in ("", "undefined") else raw


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(float(raw))
    except (ValueError, OverflowError):
        return None


def _time(raw: str | None) -> float | None:
    value = _int(raw)
    return float(value) if value and value > 0 else None


class HTCondorDialect:
    """HTCondor batch system (condor_submit/condor_q/condor_history/condor_rm)."""

    name = "htcondor"
    has_dry_run = True

    # --- scripts ------------------------------------------------------------------------

    def submit_path(self, job: JobRequest) -> str:
        return f"{job.control_dir}/{job.name}.sub"

    def render_script(self, job: JobRequest) -> str:
        return render_wrapper(job)

    def submit_description(self, job: JobRequest) -> str:
        forbidden = forbidden_directives(job.extra_directives)
        if forbidden:
            raise ValueError(forbidden[0])
        if job.cpus is not None and not 0 < job.cpus <= MAX_CPUS:
            raise ValueError(f"cpus {job.cpus}: HTCondor slots hold 1 to {MAX_CPUS}")
        if job.memory_mb is not None and not 0 < job.memory_mb <= MAX_MEMORY_MB:
            raise ValueError(
                f"memory {job.memory_mb} MB: HTCondor slots hold at most {MAX_MEMORY_MB} MB"
            )
        if job.walltime_s is not None and not 0 < job.walltime_s <= MAX_WALLTIME_S:
            raise ValueError(f"walltime {job.walltime_s}s: more than HTCondor can hold")
        _check_path("workdir", job.workdir)  # named first: every path below starts with it
        lines = [
            f"# schedulerd job {job.job_id}, attempt {job.attempt}",
            "universe = vanilla",
            f"executable = {_check_path('script path', job.script_path)}",
            "transfer_executable = false",
            f"initialdir = {_check_path('workdir', job.workdir)}",
            f"output = {_check_path('stdout', job.stdout_path)}",
            f"error = {_check_path('stderr', job.stderr_path)}",
            f"log = {_check_path('log', f'{job.control_dir}/{job.name}.log')}",
            f"batch_name = {_check('name', job.name)}",
            f"+SchedulerdJobId = {int(job.job_id)}",
            f"+SchedulerdAttempt = {int(job.attempt)}",
        ]
        if job.queue is not None:
            _check("queue", job.queue)  # HTCondor has no queues: accepted, not used
        if job.cpus is not None:
            lines.append(f"request_cpus = {int(job.cpus)}")
        if job.memory_mb is not None:
            lines.append(f"request_memory = {int(job.memory_mb)}M")
        if job.account:
            lines.append(f"accounting_group = {_check('account', job.account)}")
        if job.walltime_s is not None:
            walltime = max(int(job.walltime_s), 1)
            lines += [
                f"+MaxRuntime = {walltime}",
                # removal by this expression is reported as TIMEOUT (WALLTIME_REMOVE)
                (
                    "periodic_remove = (JobStatus == 2) && "
                    f"((time() - JobCurrentStartDate) > {walltime})"
                ),
            ]
        if not job.requeue:
            # an evicted vanilla job goes back to Idle and runs again: hold it instead
            lines += [
                "periodic_hold = (JobStatus == 1) && (NumJobStarts > 0)",
                'periodic_hold_reason = "schedulerd: evicted and requeue is off"',
            ]
        for extra in job.extra_directives:
            _check("extra directive", extra)
            lines.append(extra)
        lines += ["queue 1", ""]
        return "\n".join(lines)

    def extra_files(self, job: JobRequest) -> dict[str, str]:
        return {self.submit_path(job): self.submit_description(job)}

    # --- submit -------------------------------------------------------------------------

    def submit_argv(self, job: JobRequest) -> list[str]:
        return ["condor_submit", "-terse", self.submit_path(job)]

    def dry_run_argv(self, job: JobRequest) -> list[str] | None:
        # -dry-run FILE: parse and build the job ads, write them to FILE, queue nothing
        return ["condor_submit", "-dry-run", "/dev/null", self.submit_path(job)]

    def parse_submit(self, stdout: str, stderr: str, exit_status: int) -> str:
        """The first job id of ``-terse`` (``C.P - C.P``) or of the long form; a refusal
        (exit status not 0, an ``ERROR`` line, an error stack) is classified by
        :data:`REFUSALS` (unknown: permanent)."""
        text = f"{stdout}\n{stderr}"
        lines = _lines(text)
        errors = _error_lines(lines)
        if exit_status == 0 and not any(ln.startswith("ERROR") for ln in lines):
            for line in _lines(stdout):
                m = _TERSE.match(line)
                if m:
                    return f"{m.group(1)}.{m.group(2)}"
                m = _SUBMITTED.match(line)
                if m:
                    return f"{m.group(2)}.0"
            if not errors:
                raise ParseError(f"no job id in condor_submit output: {stdout[:200]!r}")
        message = "; ".join(errors or _lines(stderr) or _lines(stdout))
        message = message or f"condor_submit exited with status {exit_status}"
        row = classify(text)
        kind = row.kind if row is not None else "permanent"
        raise SubmitRejected(message[:500], transient=kind == "transient", auth=kind == "auth")

    # --- status and history -----------------------------------------------------------------

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        return ["condor_q", user, "-af:jt", *ATTRIBUTES]

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        if not native_ids:
            return [
                "condor_history", user, "-completedsince", str(int(since)), "-af:jt", *ATTRIBUTES
            ]  # fmt: skip
        clauses = []
        for native_id in native_ids:
            if not _JOB_ID.match(native_id):
                raise ValueError(f"not an HTCondor job id: {native_id!r}")
            cluster, proc = native_id.split(".")
            clauses.append(f"(ClusterId == {cluster} && ProcId == {proc})")
        return [
            "condor_history",
            "-constraint",
            " || ".join(clauses),
            # stop reading the history file once every job was found
            "-match",
            str(len(native_ids)),
            "-af:jt",
            *ATTRIBUTES,
        ]

    def _raise_for_failure(self, command: str, stdout: str, stderr: str, status: int) -> None:
        """A query that failed (exit status, or ``-- Failed to fetch ads``) raises
        RemoteCommandError classified by :data:`REFUSALS` (unknown: permanent); a shell
        that could not run it raises ParseError (a wrapper may exit 0 after that)."""
        # job lines carry hold reasons, which may quote any error: never classify those
        text = "\n".join(
            [stderr, *(ln for ln in stdout.splitlines() if not _JOB_LINE.match(ln.strip()))]
        )
        failed = status != 0 or "Failed to fetch ads" in text
        if not failed:
            shell = _SHELL_ERROR.search(text)
            if shell:
                raise ParseError(f"{command} did not run: {shell.group(0)!r}")
            return
        summary = "; ".join(_lines(stderr) or _lines(stdout))[:300]
        row = classify(text)
        kind = row.kind if row is not None else "permanent"
        raise RemoteCommandError(
            f"{command} failed (status {status}): {summary}",
            exit_status=status,
            stderr=stderr,
            transient=kind == "transient",
            auth=kind == "auth",
        )

    def _parse_ads(self, command: str, stdout: str) -> dict[str, Observation]:
        """Every ``-af:jt`` job line. A line of another layout is a ParseError; so is
        an answer with no job line but lines we do not know (an empty queue is an empty
        answer, or banners and warnings only)."""
        found: dict[str, Observation] = {}
        unknown: list[str] = []
        for line in stdout.splitlines():
            # -af:jt may or may not put a tab before the job id: accept both
            stripped = line.strip()
            m = _JOB_LINE.match(stripped)
            if not m:
                if _FOREIGN.match(stripped):
                    raise ParseError(f"{command}: not -af output: {line[:200]!r}")
                if stripped and not _NOISE.match(stripped):
                    unknown.append(stripped)
                continue  # banners and other noise
            native_id, rest = m.group(1), m.group(2)
            if "\t" in stripped:
                values = [v.strip() for v in stripped.split("\t")[1:]]
            else:
                values = rest.split(None, _HOLD_REASON)
            values += ["undefined"] * (len(ATTRIBUTES) - len(values))
            found[native_id] = self._observation(native_id, [_value(v) for v in values])
        if unknown and not found:
            raise ParseError(f"{command}: not -af output: {unknown[0][:200]!r}")
        return found

    @staticmethod
    def _observation(native_id: str, v: list[str | None]) -> Observation:
        status = _int(v[_STATUS])
        if status is None or status not in STATE_MAP:
            raise ParseError(f"job {native_id}: JobStatus {v[_STATUS]!r} is not 1..7")
        phase = STATE_MAP[status]
        exit_code: int | None = None
        reason: str | None = None
        if status == 4:
            if (v[_BY_SIGNAL] or "").lower() == "true":
                signal = _int(v[_EXIT_SIGNAL])
                exit_code = 128 + signal if signal is not None else None
                reason = f"killed by signal {signal}" if signal is not None else "killed by signal"
            else:
                exit_code = _int(v[_EXIT_CODE])
                if exit_code is None:
                    exit_code = 0  # Completed without an ExitCode (older schedds)
            phase = Phase.COMPLETED if exit_code == 0 else Phase.FAILED
        elif status == 3:
            reason = v[_REMOVE_REASON]
            if reason and WALLTIME_REMOVE in reason:
                phase = Phase.TIMEOUT
        elif status == 5:
            code, sub = v[_HOLD_CODE], v[_HOLD_SUBCODE]
            text = v[_HOLD_REASON]
            codes = f"[{code}/{sub}]" if code and sub else (f"[{code}]" if code else "")
            reason = " ".join(p for p in (text, codes) if p) or None
        elif status == 7:
            reason = "suspended"
        started = _time(v[_CURRENT_START]) or _time(v[_FIRST_START])
        if phase is Phase.QUEUED:
            started = None
        finished: float | None = None
        if status in (3, 4):
            finished = _time(v[_COMPLETION]) or _time(v[_ENTERED])
        return Observation(
            native_id=native_id,
            phase=phase,
            exit_code=exit_code,
            reason=reason,
            name=v[_BATCH_NAME],
            started_at=started,
            finished_at=finished,
        )

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        self._raise_for_failure("condor_q", stdout, stderr, exit_status)
        return self._parse_ads("condor_q", stdout)

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        self._raise_for_failure("condor_history", stdout, stderr, exit_status)
        return self._parse_ads("condor_history", stdout)

    # --- cancel, hold, release --------------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["condor_rm", *native_ids]

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        """condor_rm/condor_hold/condor_release: every job acted on, or already gone
        (``Job C.P not found``, ``already marked for removal``). Refused credentials
        raise RemoteCommandError(auth=True); other failures are classified by
        :data:`REFUSALS` (unknown: permanent); an exit status 0 without a single answer
        about a job is not recognised (ParseError)."""
        text = f"{stdout}\n{stderr}"
        lines = _lines(text)
        row = classify(text)
        if row is not None and row.kind == "auth":
            raise RemoteCommandError(
                f"the head refused our credentials for the job action: {'; '.join(lines)[:300]}",
                exit_status=exit_status,
                stderr=stderr,
                auth=True,
            )
        answered = [ln for ln in lines if _ACTED.match(ln) or _GONE.match(ln)]
        if exit_status == 0:
            shell = _SHELL_ERROR.search(text)
            if answered and not shell:
                return
            raise ParseError(f"no job answered in the job action's output: {text.strip()[:200]!r}")
        problems = [ln for ln in lines if ln not in answered and not _NOISE.match(ln)]
        if answered and not problems:
            return  # only "not found"/"Couldn't find/remove all jobs": already gone
        shown = "; ".join(problems)[:300] or f"no output, exit status {exit_status}"
        raise RemoteCommandError(
            f"job action failed (status {exit_status}): {shown}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row is not None and row.kind == "transient",
        )

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["condor_hold", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["condor_release", *native_ids]

    # --- version -----------------------------------------------------------------------------

    def version_argv(self) -> list[str]:
        return ["condor_version"]

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        if exit_status != 0:
            raise RemoteCommandError(
                f"condor_version exited with status {exit_status}",
                exit_status=exit_status,
                stderr=stderr,
            )
        m = _VERSION.search(stdout)
        if not m:
            raise ParseError(f"no $CondorVersion in {stdout[:200]!r}")
        return f"HTCondor {m.group(1)}"
