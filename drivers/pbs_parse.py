"""Reading the answers of PBS Professional / OpenPBS and Torque (the parsers the two
share; :mod:`schedulerd.drivers.torque` adds Torque's XML): state maps, ``qsub``,
``qdel``, ``qselect`` and ``qstat --version`` answers, ``qstat -f`` text, ``qstat -f -F
json`` with its known quirks (strict, then repaired line by line, then scanned), and the
observation of one job from its attributes. The commands are built in
:mod:`schedulerd.drivers.pbspro` and :mod:`schedulerd.drivers.torque`; the refusal table
is :mod:`schedulerd.drivers.pbspro_refusals`.

Longer than ~500 lines because it is one thing: one job's attributes read the same way
whichever of the three ``qstat`` shapes (JSON, its repaired or scanned forms, ``-f``
text) and whichever of the two systems printed them. Pure functions only; they raise
only ParseError, SubmitRejected or RemoteCommandError.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from schedulerd.drivers.base import Observation, Phase
from schedulerd.drivers.pbspro_refusals import REFUSALS, classify
from schedulerd.drivers.refusals import Refusal
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
        raise ParseError(f"qstat JSON: job {odd[0][:100]!r} is not an object")
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


def pbspro_jobs(stdout: str) -> Mapping[str, Mapping[str, object]]:
    if json_start(stdout) is None and "Job Id:" in stdout:
        return parse_full_text(stdout)
    return parse_json_jobs(stdout)


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
