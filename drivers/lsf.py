"""IBM Spectrum LSF (and Platform LSF, OpenLava): ``#BSUB`` scripts, ``bsub``, ``bjobs``.

Pure functions only (see :mod:`schedulerd.drivers.dialect`).

Commands we build:

* submit: ``sh -c 'bsub < "$1"' sh <script>`` -- ``bsub`` reads the ``#BSUB`` directives
  only when the script comes on standard input, and the driver joins argv with
  ``shlex.join`` so a redirect cannot be a word of its own.
* status, one of three output modes (:attr:`LsfDialect.output`):

  - ``json`` (LSF 10.1+, the default): ``bjobs -u USER -a -json -o "FIELDS"``;
  - ``delimited`` (LSF 9.1.x, which has ``-o`` but no ``-json``):
    ``bjobs -u USER -a -noheader -o "FIELDS delimiter='|'"``;
  - ``wide`` (OpenLava, LSF before 9.1: no ``-o`` at all): ``bjobs -u USER -a -w``
    (no exit code there: the exit file decides).

  :meth:`LsfDialect.for_version` picks the mode from ``lsid`` output. The status parser
  recognises all three shapes whatever the mode, and skips the banner lines a busy or
  unreachable ``mbatchd`` prints on stdout ("LSF is processing your request. Please
  wait ...", "Cannot connect to LSF. Please wait ...").
* history: ``bhist -l -n N ID...`` -- ``bjobs -a`` forgets a finished job after
  ``CLEAN_PERIOD`` (lsb.params, one hour by default); ``bhist`` reads the event logs and
  prints "Done successfully" / "Exited with exit code N" / "Completed <exit>; TERM_...".
  ``-n N`` searches the current and N-1 archived ``lsb.events`` files (0: all of them);
  the long-format parser also reads ``bjobs -l`` and ``bacct -l`` records.
* cancel ``bkill ID...``, hold ``bstop ID...`` (PSUSP when pending, USUSP when running),
  release ``bresume ID...``, version ``lsid``.

Times: ``bjobs -o`` and ``bhist -l`` print local times of the head without a year
("Dec 17 00:36 L", "Thu Apr 18 10:01:28"); we read them in the daemon's local time zone
and take the latest year that does not put them in the future.

Memory: ``-M`` and ``rusage[mem=]`` are in the unit of ``LSF_UNIT_FOR_LIMITS`` (lsf.conf;
KB when unset, MB in the lsf.conf that LSF 10.1 installs). We assume MB; pass
``memory_unit="KB"`` (or ``"GB"``) for sites that differ.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.wrapper import render_wrapper
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

# --- states ------------------------------------------------------------------------------

#: IBM Spectrum LSF 10.1 Command Reference, bjobs, "Output: Default format", field STAT
#: (the job states; also "About job states" in the user guide). ``None`` for DONE/EXIT:
#: decided from the exit code and the exit reason.
STATE_MAP: Final[Mapping[str, Phase | None]] = {
    "PEND": Phase.QUEUED,  # pending: waiting in a queue to be scheduled and dispatched
    "PROV": Phase.QUEUED,  # dispatched to a host that is being provisioned
    "WAIT": Phase.QUEUED,  # chunk job member waiting to run
    "RUN": Phase.RUNNING,  # running
    "PSUSP": Phase.HELD,  # suspended by its owner or the LSF administrator while pending
    "USUSP": Phase.HELD,  # suspended by its owner or the LSF administrator while running
    "SSUSP": Phase.HELD,  # suspended by LSF (load, run window, preemption)
    "UNKWN": Phase.RUNNING,  # mbatchd lost contact with the execution host's sbatchd
    "ZOMBI": Phase.FAILED,  # killed (or requeued) while its execution host was unreachable
    "DONE": None,  # finished with exit status 0
    "EXIT": None,  # finished with a non-zero exit status, or killed
}

#: What we say when the output gives no reason of its own.
DEFAULT_REASONS: Final[Mapping[str, str]] = {
    "PSUSP": "PSUSP: suspended by its owner or the LSF administrator while pending",
    "USUSP": "USUSP: suspended by its owner or the LSF administrator while running",
    "SSUSP": "SSUSP: suspended by LSF (host load, run window or preemption)",
    "UNKWN": "UNKWN: mbatchd lost contact with the execution host",
    "ZOMBI": "ZOMBI: killed while its execution host was unreachable",
}

#: Exit reasons (bjobs ``exit_reason``, bacct/bhist "Completed <exit>; TERM_...") that
#: mean the job ran out of its run limit, or that someone killed it.
TIMEOUT_TERMS: Final = ("TERM_RUNLIMIT", "TERM_DEADLINE")
CANCEL_TERMS: Final = (
    "TERM_OWNER",
    "TERM_ADMIN",
    "TERM_FORCE_OWNER",
    "TERM_FORCE_ADMIN",
    "TERM_REQUEUE_OWNER",
    "TERM_REQUEUE_ADMIN",
)

#: The ``bjobs -o`` fields we ask for (JSON keys are the upper-case names). ``job_name``
#: is last so that the delimited form can keep a ``|`` inside a name.
STATUS_FIELDS: Final = (
    "jobid",
    "jobindex",
    "stat",
    "exit_code",
    "exit_reason",
    "pend_reason",
    "start_time",
    "finish_time",
    "job_name",
)

# --- wordings ----------------------------------------------------------------------------

RefusalKind = Literal["transient", "permanent", "auth"]


class Refusal(NamedTuple):
    """One row of :data:`REFUSALS`: a wording, its class, where the wording comes from, and
    a real sample of it (the tests check every row's sample against the table)."""

    pattern: re.Pattern[str]
    kind: RefusalKind
    source: str
    sample: str


def _row(pattern: str, kind: RefusalKind, source: str, sample: str) -> Refusal:
    return Refusal(re.compile(pattern, re.IGNORECASE | re.MULTILINE), kind, source, sample)


_VOLCLAVA = "volclava (openlava fork keeping Platform LSF's tables)"

#: How a refusal of ``bsub`` (or a failed bjobs/bhist/bkill) is classed: the first row
#: whose pattern occurs in the output wins, so the rows go from the most specific to the
#: most general. bsub prints ``[<prefix>: ]<reason>. Job not submitted.`` (cmd.sub.c);
#: the reasons are ``lsb_errmsg[]`` (lsbatch/lib/lsb.err.c) and, after "Failed in an LSF
#: library call: ", the base library's (lsf/lib/lib.err.c), cited by line of the volclava
#: snapshot; IBM-only wordings by the public threads that quote them. bsub exits 255 on a
#: refusal, like ssh, and has been seen to exit 0: the text decides. Unknown text:
#: ``permanent`` when bsub said "Job not submitted" or exited non-zero.
REFUSALS: tuple[Refusal, ...] = (
    # -- our credentials or identity refused: no retry helps ---------------------------------
    _row(
        r"External authentication failed",
        "auth",
        f"{_VOLCLAVA} lib.err.c l.108 (eauth refused our credential)",
        "Failed in an LSF library call: External authentication failed. Job not submitted.",
    ),
    _row(
        r"Operation permission denied by LIM|Root user rejected|\bBad user ID\b",
        "auth",
        f"{_VOLCLAVA} lib.err.c l.45, l.60-61",
        "Failed in an LSF library call: Operation permission denied by LIM. Job not submitted.",
    ),
    _row(
        r"User permission denied|^(?:Failed in an LSF library call: )?Permission denied\b",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.65 (LSBE_PERMISSION), lib.err.c l.62, l.75",
        "User permission denied. Job not submitted.",
    ),
    _row(
        r"Unknown user|No user is defined in the lsb\.users file|Root job submission is disabled",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.55, l.63-64",
        "Unknown user. Job not submitted.",
    ),
    _row(
        r"User cannot use the queue",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.70 (LSBE_QUEUE_USE; the queue's USERS list); real in an "
        "ATLAS LAr tool's comment",
        "atlaslarcal: User cannot use the queue. Job not submitted.",
    ),
    _row(
        r"User not in the specified user group|Bad user group name"
        r"|Invoker is not in specified project group",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.140, l.143, l.160",
        "Invoker is not in specified project group. Job not submitted.",
    ),
    _row(
        r"Request from (?:a )?non-LSF host rejected",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.82, lib.err.c l.88: the head is no LSF client host",
        "Request from non-LSF host rejected. Job not submitted.",
    ),
    _row(
        r"^(?:ssh: )?\S+@\S+: Permission denied \(|^Permission denied \((?:publickey|password)",
        "auth",
        "OpenSSH sshconnect2.c 'Permission denied (%s)': a site's bsub that logs in to a "
        "submit host (exit 255 like ssh)",
        "alice@submit01: Permission denied (publickey,gssapi-with-mic).",
    ),
    # -- passing: limits that clear as jobs finish, a busy or unreachable mbatchd/LIM -------
    _row(
        r"Pending job (?:slots )?threshold reached",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.191-192 (LSBE_JOB_MAX_PEND, LSBE_SLOTS_MAX_PEND), the "
        "retry loop of cmd.sub.c l.126-143; real in TheRoddyWMS/BatchEuphoria",
        "Group <resUsers>: Pending job threshold reached. Retrying in 60 seconds...",
    ),
    _row(
        r"has reached its job limit|does not have enough (?:per-\w+ )?job slots"
        r"|No job Id can be used now",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.59, l.78, l.81, l.93, l.120, l.128",
        "The destination queue has reached its job limit. Job not submitted.",
    ),
    _row(
        r"Queue has been closed",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.68 (LSBE_QUEUE_CLOSED: an administrator closed it, "
        "usually for a while)",
        "normal: Queue has been closed. Job not submitted.",
    ),
    _row(
        r"Operation is in progress|Communication timeout|Timeout on connect call to server"
        r"|Connection refused by server|Batch protocol error|XDR encode/decode error"
        r"|Master batch daemon internal error|Batch daemon cannot fork|Cannot allocate memory"
        r"|Server is not connected|Unable to contact execution host",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.99-115, l.119",
        "Contacting batch daemon: Communication timeout. Job not submitted.",
    ),
    _row(
        r"LSF is down|Cannot connect to LSF|batch system daemon not responding"
        r"|LSF daemon \(LIM\) not responding|LIM is (?:down|not responding)"
        r"|Cannot locate master LIM now|LIM configuration is not ready yet"
        r"|Failed in sending/receiving a message|Communication time out|Connection is lost",
        "transient",
        f"{_VOLCLAVA} lsb.comm.c l.527-536, l.618, lib.err.c l.31-124; IBM's 'Cannot connect "
        "to LSF' in DataBiosphere/toil#3097",
        "Failed in an LSF library call: Slave LIM configuration is not ready yet",
    ),
    _row(
        r"^ssh: (?:connect to host|Could not resolve hostname)|Connection timed out during "
        r"banner exchange|^Connection closed by",
        "transient",
        "OpenSSH's client: a site's bsub that logs in to a submit host could not reach it",
        "ssh: connect to host submit01 port 22: Connection refused",
    ),
    # -- the client's environment is broken (every job meets it; no retry helps) ----------
    _row(
        r"Unable to open file lsf\.conf|Bad configuration environment"
        r"|Bad syntax in lsf\.conf|Batch service not registered|LSB_SHAREDIR not defined",
        "permanent",
        f"{_VOLCLAVA} lib.err.c l.55-56, l.98, lsb.err.c l.105-106 (profile.lsf not sourced)",
        "Failed in an LSF library call: Unable to open file lsf.conf. Job not submitted.",
    ),
    _row(
        r"Failed in an LSF library call",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.102, l.235 (LSBE_LSLIB with another base-library text, "
        "e.g. lib.err.c ls_errmsg[6])",
        "Failed in an LSF library call: LIM protocol error. Job not submitted.",
    ),
    # -- this job can never be taken as it is -------------------------------------------------
    _row(
        r"No such queue|Queue name must be specified|Queue does not accept EXCLUSIVE jobs",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.54, l.66-67; real in equinor/ert's tests",
        "missingqueue: No such queue. Job not submitted.",
    ),
    _row(
        r"Bad host name, host group name or cluster name|Host or host group is not used by the "
        r"queue|Bad host specification|Too (?:many|few) processors requested",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.71-72, l.77, l.142, l.184; real in equinor/ert's tests",
        "Too many processors requested. Job not submitted.",
    ),
    _row(
        r"Bad resource requirement syntax|Bad resource name|No resource defined"
        r"|^Error (?:in|near|with) .*(?:section|select|rusage)"
        r"|Cannot exceed queue's (?:hard limit|resource reservation)",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.89, l.130, l.134-135, l.141; IBM's resource-requirement "
        "parser in equinor/ert's tests and bcbio/bcbio-nextgen#2803",
        "Error in rusage section. Job not submitted.",
    ),
    _row(
        r"Bad CPU limit specification|Bad time specification"
        r"|Start time is later than termination time|Bad rlimit specification",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.86-88, l.193",
        "Bad time specification. Job not submitted.",
    ),
    _row(
        r"Dependency condition syntax error|No matching job found|Job array index (?:error|too "
        r"large)|Bad job name|Empty job|No command is specified"
        r"|Interactive job cannot be rerunnable",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.48, l.53, l.90, l.92, l.136, l.152-153, l.195",
        "-J: No matching job found. Job not submitted.",
    ),
    _row(
        r"Request aborted by esub|Pack submission disabled|illegal option",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.144 (LSBE_ESUB_ABORT: the site's esub), cmd.sub.c "
        "l.187-200; real in ExaWorks/psij-python#523",
        "Returning output by mail is not supported on this cluster.\n"
        "Please use the -o option to write output to disk.\n"
        "Request aborted by esub. Job not submitted.",
    ),
)
#: the class of a refusal no row matches
DEFAULT_REFUSAL: RefusalKind = "permanent"


def classify(text: str) -> Refusal | None:
    """The first row of :data:`REFUSALS` whose wording occurs in ``text``."""
    for row in REFUSALS:
        if row.pattern.search(text):
            return row
    return None


#: Lines a busy or unreachable mbatchd prints before the real output.
BANNER: Final = re.compile(
    r"^\s*(?:LSF is processing your request\. Please wait \.\.\."
    r"|Cannot connect to LSF\. Please wait \.\.\.|LSF is down\. Please wait \.\.\."
    r"|batch system daemon not responding \.\.\. still trying)\s*$",
    re.IGNORECASE,
)

#: "This id is not (or no longer) known": bjobs, bkill, bhist wordings.
NOT_FOUND: Final = re.compile(
    r"is not found|No matching job found|No job found|No unfinished job found"
    r"|Job has already finished|Job array does not exist",
    re.IGNORECASE,
)

#: "Job <1234> is submitted to queue <normal>." / "... to default queue <normal>."
SUBMITTED: Final = re.compile(
    r"Job <(?P<id>\d+(?:\[\d+\])?)> is submitted to (?:default )?queue <(?P<queue>[^>]*)>"
)

#: bkill/bstop/bresume acknowledgements.
ACKNOWLEDGED: Final = re.compile(
    r"^Job <[^>]+> is being (?:terminated|signaled|signalled|killed|stopped|resumed)"
    r"|^Job <[^>]+>: Operation is in progress"
)

NATIVE_ID: Final = re.compile(r"\d+(?:\[\d+\])?\Z")

# --- small helpers -----------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not BANNER.match(line)]


def _clean(value: object) -> str | None:
    """A field value, or None for the empty/placeholder values LSF prints."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text if text and text != "-" else None


def _int(value: object) -> int | None:
    text = _clean(value)
    if text is None or not re.fullmatch(r"-?\d{1,9}", text):
        return None
    return int(text)


def _check_line(what: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{what} must be one line: {value!r}")
    return value


# --- what a job may ask for (checked at job.submit) -------------------------------------------

#: LSF keeps a job's slots (``-n``) and resource limits (``-M`` in LSF_UNIT_FOR_LIMITS,
#: the run limit ``-W`` in seconds) in C ints (lsbatch.h, ``struct submit``)
MAX_INT: Final = 2**31 - 1
#: bsub options a job's directives may not set (whole words: bsub has no clustering),
#: with the reason: each breaks "one job, one run" or moves what schedulerd relies on
FORBIDDEN_OPTIONS: Final[Mapping[str, str]] = {
    "-J": "schedulerd finds the job again by the name it gives it, and name[1-N] is an array",
    "-o": "use the workdir field (stdout goes to <workdir>/<submit name>.out)",
    "-oo": "use the workdir field (stdout goes to <workdir>/<submit name>.out)",
    "-e": "use the workdir field (stderr goes to <workdir>/<submit name>.err)",
    "-eo": "use the workdir field (stderr goes to <workdir>/<submit name>.err)",
    "-cwd": "use the workdir field",
    "-outdir": "use the workdir field",
    "-r": "use the requeue field",
    "-rn": "use the requeue field",
    "-K": "bsub would wait until the job ends",
}
#: interactive submissions (-I, -Ip, -Is, -IS, -ISp, -ISs, -IX): not a batch job
_INTERACTIVE: Final = re.compile(r"-I(?:p|s|S|Sp|Ss|X)?\Z")


def forbidden_directives(directives: Sequence[str]) -> list[str]:
    """One problem per directive that sets a forbidden bsub option (with or without
    ``#BSUB``, several options on one line)."""
    problems = []
    for directive in directives:
        text = directive.strip().removeprefix("#BSUB")
        for word in text.split():
            why = FORBIDDEN_OPTIONS.get(word)
            if why is None and _INTERACTIVE.match(word):
                why = "an interactive job cannot run in the background"
            if why is not None:
                problems.append(f"directive {directive.strip()!r}: {word} is not allowed: {why}")
                break
    return problems


def validate_job(job: JobRequest, dialect: LsfDialect | None = None) -> list[str]:
    """Why bsub could never take ``job`` (values a ``#BSUB`` line cannot carry, numbers
    beyond its C ints, forbidden directives); empty when it can."""
    dialect = dialect or LsfDialect()
    problems = forbidden_directives(job.extra_directives)
    if problems:
        return problems
    try:
        dialect.directives(job)
    except ValueError as exc:
        return [str(exc)]
    return []


def _directive_word(what: str, value: str) -> str:
    """One word of a ``#BSUB`` line: bare when safe, else double-quoted."""
    _check_line(what, value)
    if '"' in value:
        raise ValueError(f"{what} may not contain a double quote: {value!r}")
    if value and re.fullmatch(r"[A-Za-z0-9_@%+=:,./\[\]-]+", value):
        return value
    return f'"{value}"'


# --- times -------------------------------------------------------------------------------

_MONTHS: Final = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_TIME_MDY: Final = re.compile(
    r"(?:[A-Za-z]{3}\s+)?(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?:\s+(?P<y>\d{4}))?"
    r"(?:\s+[A-Z])?\s*\Z"
)
_TIME_SLASH: Final = re.compile(
    r"(?:(?P<y>\d{4})/)?(?P<mon>\d{1,2})/(?P<day>\d{1,2})-(?P<h>\d{1,2}):(?P<m>\d{2})"
    r"(?::(?P<s>\d{2}))?(?:\s+[A-Z])?\s*\Z"
)


def parse_lsf_time(text: str | None, now: float) -> float | None:
    """Epoch seconds for an LSF time ("Dec 17 00:36 L", "Mon Aug  4 12:28:51 2014",
    "03/31-14:46:42"), read in local time; None when it is not one."""
    if not text:
        return None
    text = text.strip()
    match = _TIME_MDY.match(text)
    if match:
        month = _MONTHS.get(match["mon"].lower())
    else:
        match = _TIME_SLASH.match(text)
        month = int(match["mon"]) if match else None
    if match is None or month is None:
        return None
    day, hour, minute = int(match["day"]), int(match["h"]), int(match["m"])
    second = int(match["s"] or 0)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None

    def _epoch(year: int) -> float | None:
        try:
            return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        except (OverflowError, ValueError):
            return None

    if match["y"]:
        return _epoch(int(match["y"]))
    year = time.localtime(now).tm_year
    found = _epoch(year)
    if found is not None and found > now + 2 * 86400:  # no year: it was last year
        found = _epoch(year - 1)
    return found


# --- observations ------------------------------------------------------------------------


def finished_phase(stat: str, exit_code: int | None, exit_reason: str | None) -> Phase:
    """DONE/EXIT (or a long-format ending) → our phase."""
    reason = (exit_reason or "").upper()
    if any(term in reason for term in TIMEOUT_TERMS) or "RUN TIME LIMIT" in reason:
        return Phase.TIMEOUT
    if any(term in reason for term in CANCEL_TERMS):
        return Phase.CANCELLED
    if stat == "DONE":
        return Phase.COMPLETED if exit_code in (None, 0) else Phase.FAILED
    return Phase.FAILED


def native_id_of(fields: Mapping[str, object]) -> str | None:
    """``JOBID`` (with ``[index]`` for an array element), or None when absent."""
    jobid = _clean(fields.get("JOBID"))
    if jobid is None or not NATIVE_ID.match(jobid):
        return None
    index = _int(fields.get("JOBINDEX"))
    if "[" not in jobid and index:
        jobid = f"{jobid}[{index}]"
    return jobid


def observe_fields(native_id: str, fields: Mapping[str, object], now: float) -> Observation:
    """One ``bjobs -o`` record (upper-case field names) → Observation."""
    stat = (_clean(fields.get("STAT")) or "").upper()
    if stat not in STATE_MAP:
        raise ParseError(f"LSF job {native_id}: unknown state {stat!r}")
    exit_code = _int(fields.get("EXIT_CODE"))
    exit_reason = _clean(fields.get("EXIT_REASON"))
    pend_reason = _clean(fields.get("PEND_REASON"))
    started_at = parse_lsf_time(_clean(fields.get("START_TIME")), now)
    finished_at: float | None = None
    phase = STATE_MAP[stat]
    reason: str | None
    if phase is None:
        if stat == "DONE" and exit_code is None:
            exit_code = 0
        phase = finished_phase(stat, exit_code, exit_reason)
        reason = exit_reason
        # while a job runs, FINISH_TIME is a projection from its run limit
        finished_at = parse_lsf_time(_clean(fields.get("FINISH_TIME")), now)
    elif stat in ("PEND", "PSUSP", "PROV", "WAIT"):
        reason = pend_reason.rstrip(";").strip() if pend_reason else None
        reason = reason or DEFAULT_REASONS.get(stat)
    else:
        reason = DEFAULT_REASONS.get(stat)
    return Observation(
        native_id=native_id,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        name=_clean(fields.get("JOB_NAME")),
        started_at=started_at,
        finished_at=finished_at,
    )


# --- bjobs -json ---------------------------------------------------------------------------


def bjobs_json_records(stdout: str) -> list[dict[str, object]] | None:
    """The ``RECORDS`` of a ``bjobs -json`` document (banner lines before it skipped);
    None when stdout holds no JSON document."""
    start = None
    offset = 0
    for line in stdout.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            start = offset + (len(line) - len(line.lstrip()))
            break
        offset += len(line)
    if start is None:
        return None
    try:
        document, _ = json.JSONDecoder().raw_decode(stdout, start)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"bjobs -json: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ParseError("bjobs -json: the document is not an object")
    records = document.get("RECORDS", [])
    if not isinstance(records, list):
        raise ParseError("bjobs -json: RECORDS is not a list")
    found: list[dict[str, object]] = []
    for record in records:
        if not isinstance(record, dict):
            raise ParseError("bjobs -json: a record is not an object")
        found.append({str(key).upper(): value for key, value in record.items()})
    return found


# --- bjobs -noheader -o "... delimiter='|'" --------------------------------------------------


def parse_delimited(
    stdout: str, fields: Sequence[str], delimiter: str = "|"
) -> list[dict[str, object]]:
    """Rows of ``bjobs -noheader -o "<fields> delimiter='|'"``; the last field may itself
    contain the delimiter. Lines without a delimiter (banners) are skipped."""
    names = [name.upper() for name in fields]
    rows: list[dict[str, object]] = []
    for line in _lines(stdout):
        if delimiter not in line:
            continue
        values = line.strip().split(delimiter, len(names) - 1)
        if len(values) != len(names):
            raise ParseError(f"bjobs: expected {len(names)} fields: {line[:200]!r}")
        rows.append(dict(zip(names, values, strict=True)))
    return rows


# --- bjobs [-w] [-W] (default / wide table) -------------------------------------------------

_ROW: Final = re.compile(
    r"^\s*(?P<id>\d+(?:\[\d+\])?)\s+(?P<user>\S+)\s+(?P<stat>[A-Z]+)\s+(?P<rest>.*)$"
)
_MDY_TAIL: Final = re.compile(r"^[A-Z][a-z]{2}$")


def parse_table(stdout: str) -> list[dict[str, object]]:
    """Rows of the default/``-w``/``-W`` ``bjobs`` table (JOBID USER STAT QUEUE FROM_HOST
    EXEC_HOST JOB_NAME SUBMIT_TIME [...]). EXEC_HOST is blank for a pending job; a name
    with spaces of a pending job without an exec host is read one word short."""
    lines = _lines(stdout)
    header: list[str] | None = None
    rows: list[dict[str, object]] = []
    for line in lines:
        if line.split()[:1] == ["JOBID"]:
            header = line.split()
            continue
        match = _ROW.match(line)
        if match is None:
            continue  # a wrapped EXEC_HOST continuation line, or a note under the table
        if match["stat"] not in STATE_MAP:
            # a job row whose state we do not know: skipping it would read as "left"
            raise ParseError(f"bjobs: unknown state {match['stat']!r} in {line[:200]!r}")
        tokens = match["rest"].split()
        row: dict[str, object] = {
            "JOBID": match["id"],
            "USER": match["user"],
            "STAT": match["stat"],
        }
        extra: list[str] = []
        if header and "SUBMIT_TIME" in header:
            after = header[header.index("SUBMIT_TIME") + 1 :]
            if after and len(tokens) > len(after):
                extra, tokens = (
                    tokens[len(tokens) - len(after) :],
                    tokens[: len(tokens) - len(after)],
                )
                row.update(zip(after, extra, strict=True))
        # SUBMIT_TIME: "Oct 31 13:00" (3 words) or "03/31-14:46:42" (1 word)
        if len(tokens) >= 3 and _MDY_TAIL.match(tokens[-3]):
            row["SUBMIT_TIME"] = " ".join(tokens[-3:])
            tokens = tokens[:-3]
        elif tokens and _TIME_SLASH.match(tokens[-1]):
            row["SUBMIT_TIME"] = tokens[-1]
            tokens = tokens[:-1]
        for key, value in zip(("QUEUE", "FROM_HOST"), tokens, strict=False):
            row[key] = value
        if len(tokens) == 3:
            row["JOB_NAME"] = tokens[2]
        elif len(tokens) > 3:
            row["EXEC_HOST"], row["JOB_NAME"] = tokens[2], " ".join(tokens[3:])
        element = re.search(r"\[(\d+)\]\Z", str(row.get("JOB_NAME") or ""))
        if element and "[" not in match["id"]:
            row["JOBINDEX"] = element[1]  # array element: "name[7]"
        rows.append(row)
    return rows


# --- long formats: bhist -l, bjobs -l, bacct -l ----------------------------------------------

_EVENT: Final = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?: \d{4})?): (?P<text>.*)$"
)
_YEAR_EVENT: Final = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4}: ")
_RECORD_START: Final = re.compile(r"^Job <(?P<id>\d+(?:\[\d+\])?)>,")
_SEPARATOR: Final = re.compile(r"^-{20,}\s*$")


def _logical_lines(block: list[str]) -> list[str]:
    """Undo LSF's wrapping: continuation lines are indented 21 columns (26 when the
    timestamps carry a year) and split words anywhere."""
    width = 26 if any(_YEAR_EVENT.match(line) for line in block) else 21
    logical: list[str] = []
    for line in block:
        line = line.rstrip("\n")
        indent = len(line) - len(line.lstrip(" "))
        if logical and indent >= 20 and line.strip():
            logical[-1] += line[min(indent, width) :]
        else:
            logical.append(line)
    return logical


@dataclass(slots=True)
class _LongRecord:
    native_id: str
    name: str | None = None
    status: str | None = None
    state: str = "PEND"
    exit_code: int | None = None
    term: str | None = None
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lines: list[str] = field(default_factory=list)


def long_records(text: str) -> list[list[str]]:
    """Split ``bhist -l``/``bjobs -l``/``bacct -l`` output into per-job logical lines."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if BANNER.match(line):
            continue
        if _RECORD_START.match(line):
            current = [line]
            blocks.append(current)
        elif _SEPARATOR.match(line) or line.startswith("SUMMARY:"):
            current = None
        elif current is not None:
            current.append(line)
    return [_logical_lines(block) for block in blocks]


def _observe_long(lines: list[str], now: float) -> Observation:
    head = lines[0]
    match = _RECORD_START.match(head)
    if match is None:  # pragma: no cover - long_records only starts blocks on a match
        raise ParseError(f"LSF long format: no job id in {head[:200]!r}")
    rec = _LongRecord(native_id=match["id"])
    name = re.search(r"Job Name <(?P<v>[^>]*)>", head)
    rec.name = name["v"] if name else None
    status = re.search(r"Status <(?P<v>[A-Z]+)>", head)
    rec.status = status["v"] if status else None
    for line in lines[1:]:
        event = _EVENT.match(line)
        if event is None:
            continue
        ts = parse_lsf_time(event["ts"], now)
        body = event["text"]
        code = re.search(r"Exited with exit code (\d{1,9})", body)
        if body.startswith("Submitted from host"):
            rec.state = "PEND"
        elif re.match(r"(?:\[\d+\] )?(?:[Dd]ispatched|Start|Running with)", body):
            rec.state = "RUN"
            rec.started_at = rec.started_at if rec.started_at is not None else ts
            rec.reason = None
        elif body.startswith("Suspended") or "suspended by" in body.lower():
            rec.state = "USUSP" if rec.started_at is not None else "PSUSP"
            rec.reason = body.rstrip(";. ")
        elif body.startswith("Resume"):
            rec.state = "RUN" if rec.started_at is not None else "PEND"
            rec.reason = None
        elif body.startswith("Done successfully"):
            rec.state, rec.exit_code, rec.finished_at = "DONE", 0, ts
        elif code:
            rec.state, rec.exit_code, rec.finished_at = "EXIT", int(code[1]), ts
        elif body.startswith("Exited"):
            signal = re.search(r"Exited by (?:LSF )?signal (\d{1,3})", body)
            rec.state, rec.finished_at = "EXIT", ts
            rec.exit_code = 128 + int(signal[1]) if signal else rec.exit_code
        elif body.startswith("Completed <"):
            rec.state = "DONE" if body.startswith("Completed <done>") else "EXIT"
            rec.finished_at = rec.finished_at or ts
            term = re.search(r"(TERM_[A-Z_]+)(?::\s*(.*))?", body)
            if term:
                rec.term = term[1]
                rec.reason = f"{term[1]}: {term[2]}".rstrip(". ") if term[2] else term[1]
    stat = rec.status or rec.state
    if stat not in STATE_MAP:
        raise ParseError(f"LSF job {rec.native_id}: unknown state {stat!r}")
    phase = STATE_MAP[stat]
    if phase is None:
        exit_code = 0 if stat == "DONE" and rec.exit_code is None else rec.exit_code
        return Observation(
            native_id=rec.native_id,
            phase=finished_phase(stat, exit_code, rec.term),
            exit_code=exit_code,
            reason=rec.reason,
            name=rec.name,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
        )
    return Observation(
        native_id=rec.native_id,
        phase=phase,
        reason=rec.reason or DEFAULT_REASONS.get(stat),
        name=rec.name,
        started_at=rec.started_at,
    )


def parse_long(text: str, now: float) -> dict[str, Observation]:
    """Every job record of ``bhist -l`` / ``bjobs -l`` / ``bacct -l`` output."""
    return {obs.native_id: obs for obs in (_observe_long(b, now) for b in long_records(text))}


# --- errors ------------------------------------------------------------------------------


def _complaints(stdout: str, stderr: str) -> list[str]:
    """stderr lines that are not banners or 'not found' notes."""
    return [line for line in _lines(stderr) if not NOT_FOUND.search(line)]


def _raise_if_unreachable(stdout: str, stderr: str, exit_status: int, command: str) -> None:
    """A passing (mbatchd/LIM unreachable) or credential wording anywhere: that failure."""
    row = classify(f"{stderr}\n{stdout}")
    if row is not None and row.kind != "permanent":
        what = "LSF cannot be reached" if row.kind == "transient" else "our credentials refused"
        raise RemoteCommandError(
            f"{command}: {what}: {stderr.strip()[:300] or stdout.strip()[:300]}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row.kind == "transient",
            auth=row.kind == "auth",
        )


def _raise_for_complaints(stdout: str, stderr: str, exit_status: int, command: str) -> None:
    complaints = _complaints(stdout, stderr)
    if exit_status != 0 and complaints:
        row = classify("\n".join(complaints))
        raise RemoteCommandError(
            f"{command} failed: {' / '.join(complaints)[:300]}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row is not None and row.kind == "transient",
            auth=row is not None and row.kind == "auth",
        )


def _raise_unless_empty_answer(stdout: str, stderr: str, command: str) -> None:
    """Nothing listed: only LSF's own "nothing found" wording ("No job found", "No
    unfinished job found", "No matching job found", "Job <n> is not found") is an empty
    answer; anything else (no output at all, a shell's or a wrapper's text) is not one."""
    lines = _lines(stdout) + _lines(stderr)
    if not lines or not all(NOT_FOUND.search(line) for line in lines):
        raise ParseError(
            f"{command}: output not understood: {stdout.strip()[:200]!r} / {stderr.strip()[:200]!r}"
        )


# --- version -----------------------------------------------------------------------------

_VERSION_LINE: Final = re.compile(
    r"^(?P<product>(?:IBM Spectrum LSF|IBM Platform LSF|Platform LSF|LSF|openlava project"
    r"|OpenLava|Volclava)[^,]*?)\s*(?:,|\s+[A-Z][a-z]{2}\s+\d{1,2}\s+\d{4}|$)",
    re.IGNORECASE,
)


def parse_lsid(stdout: str, stderr: str, exit_status: int) -> str:
    """``lsid`` banner → "IBM Spectrum LSF Standard 10.1.0.6", "openlava project 2.2", ..."""
    for line in _lines(stdout):
        match = _VERSION_LINE.match(line.strip())
        if match:
            return str(match["product"]).strip()
    _raise_if_unreachable(stdout, stderr, exit_status, "lsid")
    raise ParseError(f"lsid: no version banner in {stdout[:200]!r} / {stderr[:200]!r}")


def version_numbers(version: str) -> tuple[int, ...]:
    """(10, 1, 0, 6) from "IBM Spectrum LSF Standard 10.1.0.6"; (7, 6) from "Platform LSF 7
    Update 6"; () when there is no number."""
    update = re.search(r"\b(\d+)\s+Update\s+(\d+)", version)
    if update:
        return (int(update[1]), int(update[2]))
    numbers = re.search(r"\b(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in numbers[1].split(".")) if numbers else ()


# --- the dialect -------------------------------------------------------------------------

OutputMode = Literal["json", "delimited", "wide"]
MemoryUnit = Literal["KB", "MB", "GB"]


def output_mode_for(version: str) -> OutputMode:
    """``json`` for LSF 10.1+, ``delimited`` for 9.1.x, ``wide`` for OpenLava and older."""
    if re.search(r"openlava|volclava", version, re.IGNORECASE):
        return "wide"
    numbers = version_numbers(version)
    if numbers >= (10, 1):
        return "json"
    if numbers >= (9, 1):
        return "delimited"
    return "wide" if numbers else "json"


class LsfDialect:
    """IBM Spectrum LSF 10.1 by default; see the module docstring for the choices.

    ``output``: the status command's format; ``memory_unit``: the site's
    ``LSF_UNIT_FOR_LIMITS``; ``history_logfiles``: ``bhist -n`` (event log files to
    search, 0: all); ``clock``: "now", to place year-less LSF times.
    """

    name = "lsf"
    has_dry_run = False

    def __init__(
        self,
        *,
        output: OutputMode = "json",
        memory_unit: MemoryUnit = "MB",
        history_logfiles: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if output not in ("json", "delimited", "wide"):
            raise ValueError(f"unknown bjobs output mode {output!r}")
        if memory_unit not in ("KB", "MB", "GB"):
            raise ValueError(f"unknown LSF memory unit {memory_unit!r}")
        if history_logfiles < 0:
            raise ValueError("history_logfiles must be >= 0")
        self.output: OutputMode = output
        self.memory_unit: MemoryUnit = memory_unit
        self.history_logfiles = history_logfiles
        self.clock = clock

    @classmethod
    def for_version(cls, version: str, **kwargs: Any) -> LsfDialect:
        """A dialect whose status command suits the ``parse_version`` string."""
        return cls(output=output_mode_for(version), **kwargs)

    # --- scripts -------------------------------------------------------------------------

    def _memory(self, memory_mb: int) -> int:
        if self.memory_unit == "KB":
            return memory_mb * 1024
        if self.memory_unit == "GB":
            return max(1, math.ceil(memory_mb / 1024))
        return memory_mb

    def directives(self, job: JobRequest) -> list[str]:
        def relative(path: str) -> str:
            # bsub runs in the workdir; LSF resolves relative -o/-e paths against it
            prefix = job.workdir.rstrip("/") + "/"
            return path.removeprefix(prefix)

        lines = [f"-J {_directive_word('job name', job.name)}"]
        if job.queue is not None:
            lines.append(f"-q {_directive_word('queue', job.queue)}")
        if job.account is not None:
            lines.append(f"-P {_directive_word('account', job.account)}")
        forbidden = forbidden_directives(job.extra_directives)
        if forbidden:
            raise ValueError(forbidden[0])
        resources: list[str] = []
        if job.cpus is not None:
            if not 0 < job.cpus <= MAX_INT:
                raise ValueError(f"cpus {job.cpus}: LSF takes 1 to {MAX_INT} slots")
            lines.append(f"-n {job.cpus}")
            if job.cpus > 1:
                resources.append("span[hosts=1]")
        if job.memory_mb is not None:
            if job.memory_mb < 1:
                raise ValueError(f"memory_mb must be positive: {job.memory_mb}")
            amount = self._memory(job.memory_mb)
            if amount > MAX_INT:
                raise ValueError(
                    f"memory {job.memory_mb} MB: more than LSF can hold ({MAX_INT} {self.memory_unit})"
                )
            lines.append(f"-M {amount}")
            resources.insert(0, f"rusage[mem={amount}]")
        if resources:
            lines.append(f'-R "{" ".join(resources)}"')
        if job.walltime_s is not None:
            if job.walltime_s < 1:
                raise ValueError(f"walltime_s must be positive: {job.walltime_s}")
            minutes = max(1, math.ceil(job.walltime_s / 60))
            if minutes * 60 > MAX_INT:
                raise ValueError(
                    f"walltime {job.walltime_s}s: LSF's run limit is at most {MAX_INT // 60} minutes"
                )
            lines.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        lines.append(f"-o {_directive_word('stdout path', relative(job.stdout_path))}")
        lines.append(f"-e {_directive_word('stderr path', relative(job.stderr_path))}")
        lines.append("-r" if job.requeue else "-rn")
        directives = [f"#BSUB {line}" for line in lines]
        for extra in job.extra_directives:
            _check_line("extra directive", extra)
            text = extra.strip()
            directives.append(text if text.startswith("#BSUB") else f"#BSUB {text}")
        return directives

    def render_script(self, job: JobRequest) -> str:
        return render_wrapper(job, self.directives(job))

    def extra_files(self, job: JobRequest) -> dict[str, str]:
        return {}

    # --- submit ---------------------------------------------------------------------------

    def submit_argv(self, job: JobRequest) -> list[str]:
        return ["sh", "-c", 'bsub < "$1"', "sh", job.script_path]

    def parse_submit(self, stdout: str, stderr: str, exit_status: int) -> str:
        for line in _lines(stdout) + _lines(stderr):
            match = SUBMITTED.search(line)
            if match:
                return match["id"]
        message = " / ".join(_lines(stderr) + _lines(stdout))[:500]
        text = f"{stderr}\n{stdout}"
        row = classify(text)
        if row is not None or exit_status != 0 or "Job not submitted" in text:
            kind = DEFAULT_REFUSAL if row is None else row.kind
            raise SubmitRejected(
                f"bsub: {message or f'exit status {exit_status}'}",
                transient=kind == "transient",
                auth=kind == "auth",
            )
        raise ParseError(f"bsub: no job id in {stdout[:200]!r} / {stderr[:200]!r}")

    # --- status ---------------------------------------------------------------------------

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        fields = " ".join(STATUS_FIELDS)
        if self.output == "json":
            return ["bjobs", "-u", user, "-a", "-json", "-o", fields]
        if self.output == "delimited":
            return ["bjobs", "-u", user, "-a", "-noheader", "-o", f"{fields} delimiter='|'"]
        return ["bjobs", "-u", user, "-a", "-w"]

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        now = self.clock()
        records = bjobs_json_records(stdout)
        if records is None:
            body = [line for line in _lines(stdout) if not NOT_FOUND.search(line)]
            if any("|" in line for line in body):
                records = parse_delimited(stdout, STATUS_FIELDS)
            elif any(line.split()[:1] == ["JOBID"] for line in body):
                records = parse_table(stdout)
            elif body:
                _raise_if_unreachable(stdout, stderr, exit_status, "bjobs")
                raise ParseError(f"bjobs: output not understood: {stdout[:200]!r}")
            else:
                _raise_if_unreachable(stdout, stderr, exit_status, "bjobs")
                _raise_for_complaints(stdout, stderr, exit_status, "bjobs")
                _raise_unless_empty_answer(stdout, stderr, "bjobs")
                return {}
        found: dict[str, Observation] = {}
        for record in records:
            if _clean(record.get("ERROR")):
                continue  # "Job <n> is not found" as a record
            native_id = native_id_of(record)
            if native_id is None:
                continue  # a record without an id cannot be one of ours
            found[native_id] = observe_fields(native_id, record, now)
        return found

    # --- history --------------------------------------------------------------------------

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        return ["bhist", "-l", "-n", str(self.history_logfiles), *native_ids]

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        found = parse_long(stdout, self.clock())
        if not found:
            _raise_if_unreachable(stdout, stderr, exit_status, "bhist")
            _raise_for_complaints(stdout, stderr, exit_status, "bhist")
            _raise_unless_empty_answer(stdout, stderr, "bhist")
        return found

    # --- cancel / hold / release -----------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bkill", *native_ids]

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        _raise_if_unreachable(stdout, stderr, exit_status, "bkill")
        complaints = [
            line
            for line in _lines(stderr) + _lines(stdout)
            if not NOT_FOUND.search(line) and not ACKNOWLEDGED.search(line)
        ]
        if not complaints:
            return
        row = classify("\n".join(complaints))
        lsf_words = row is not None or any(re.match(r"Job <[^>]+>", c) for c in complaints)
        if exit_status == 0 and not lsf_words:
            # neither LSF's acknowledgement nor its refusal: a wrapper's or a shell's text
            raise ParseError(f"bkill: output not understood: {' / '.join(complaints)[:300]!r}")
        raise RemoteCommandError(
            f"bkill failed: {' / '.join(complaints)[:300]}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row is not None and row.kind == "transient",
            auth=row is not None and row.kind == "auth",
        )

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bstop", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bresume", *native_ids]

    # --- version / dry run ----------------------------------------------------------------

    def version_argv(self) -> list[str]:
        return ["lsid"]

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        return parse_lsid(stdout, stderr, exit_status)

    def dry_run_argv(self, job: JobRequest) -> list[str] | None:
        return None


def observations_by_id(
    records: Iterable[Mapping[str, object]], now: float
) -> dict[str, Observation]:
    """Observations for records that carry an id (helper for tests and tools)."""
    found: dict[str, Observation] = {}
    for record in records:
        native_id = native_id_of(record)
        if native_id is not None:
            found[native_id] = observe_fields(native_id, record, now)
    return found
