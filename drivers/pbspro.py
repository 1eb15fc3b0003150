"""PBS Professional / OpenPBS: ``#PBS`` scripts, ``qsub``, ``qstat -f -F json``, ``qdel``.

Pure functions only (see :mod:`schedulerd.drivers.dialect`). The helpers that PBS Pro and
Torque share -- directive checks, ``qsub`` output, ``qdel`` wordings, ``qstat -f`` text,
exit-status interpretation -- live here and :mod:`schedulerd.drivers.torque` imports them.

Formats handled (see ``shared/fixtures/batch-outputs/pbspro``):

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
from schedulerd.drivers.wrapper import render_wrapper
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

# --- states ------------------------------------------------------------------------------

#: PBS Professional Reference Guide, chapter "Job States" (job_state letters; the same
#: table is in qstat(1B), "Job states"). ``None`` means "finished: decide from
#: Exit_status". M (moved to another server) leaves our view of the queue.
PBSPRO_STATE_MAP: Final[Mapping[str, Phase | None]] = {
    "B": Phase.RUNNING,  # array job: at least one subjob has started
    "E": Phase.RUNNING,  # exiting after having run
    "F": None,  # finished (only with -x / history)
    "H": Phase.HELD,  # held
    "M": Phase.GONE,  # moved to another server
    "Q": Phase.QUEUED,  # queued, eligible to run or be routed
    "R": Phase.RUNNING,  # running
    "S": Phase.HELD,  # suspended (by the scheduler or an admin)
    "T": Phase.QUEUED,  # being moved to a new location
    "U": Phase.HELD,  # suspended: the workstation became busy
    "W": Phase.QUEUED,  # waiting for its execution time (-a) or a stage-in
    "X": None,  # subjob: finished (expired)
}

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

#: stderr lines that mean "retry later": the server (or the network) is unreachable.
UNREACHABLE: Final = re.compile(
    r"cannot connect to server|Connection refused|No route to host|Connection timed out"
    r"|Unable to communicate with|Communication failure|pbs_iff: cannot|"
    r"Network is unreachable|Cannot connect to specified server host",
    re.IGNORECASE,
)

#: stderr lines about one id that has left the queue (PBS Pro, old and new Torque).
UNKNOWN_OR_FINISHED: Final = re.compile(
    r"Unknown Job Id|Job has finished|Request invalid for state of job"
    r"|job has finished|Unknown job id",
)

#: qsub rejections that may go away by themselves (limits, server load).
SUBMIT_TRANSIENT: Final = re.compile(
    r"would exceed|per-user limit|Maximum number of jobs already in queue"
    r"|Resource temporarily unavailable|Server is busy|try again",
    re.IGNORECASE,
)

#: control characters would end the directive line; quotes and backslashes are read
#: differently by the directive parsers of qsub versions, so they are refused too.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_VALUE: Final = re.compile(r"[\x00-\x1f\x7f'\"\\]")


# --- scripts -----------------------------------------------------------------------------


def check_value(what: str, value: str, *, spaces: bool = False) -> str:
    """A directive value: no control characters (a newline would end the directive and
    start a shell line); unless ``spaces`` (a whole extra directive) also no whitespace,
    quotes or backslashes."""
    bad = _CONTROL if spaces else _UNSAFE_VALUE
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


def raise_if_unreachable(stderr: str, exit_status: int, stdout: str = "") -> None:
    """``RemoteCommandError(transient=True)`` when the head could not reach its server."""
    if UNREACHABLE.search(stderr):
        raise RemoteCommandError(
            "batch server unreachable: " + " / ".join(_lines(stderr))[:300],
            exit_status=exit_status,
            stderr=stderr,
            transient=True,
        )


def unexpected_stderr(stderr: str) -> list[str]:
    """stderr lines that are not about a job having left the queue."""
    return [line for line in _lines(stderr) if not UNKNOWN_OR_FINISHED.search(line)]


def parse_qsub(stdout: str, stderr: str, exit_status: int) -> str:
    """The job id ``qsub`` printed (PBS Pro and Torque print the same).

    The id is the last line that looks like one; banner lines before it are ignored.
    """
    if UNREACHABLE.search(stderr):
        raise SubmitRejected(
            "batch server unreachable: " + " / ".join(_lines(stderr))[:300], transient=True
        )
    if exit_status == 0:
        for line in reversed(_lines(stdout)):
            if NATIVE_ID.fullmatch(line):
                return line
        raise ParseError(f"qsub printed no job id: {stdout[:200]!r} {stderr[:200]!r}")
    message = " / ".join(line for line in _lines(stderr) if "qsub" in line or "MSG=" in line)
    if not message:
        raise ParseError(f"qsub failed (exit {exit_status}) without a message: {stderr[:200]!r}")
    raise SubmitRejected(message[:500], transient=bool(SUBMIT_TRANSIENT.search(message)))


def parse_qdel(stdout: str, stderr: str, exit_status: int) -> None:
    """Accept "Unknown Job Id" / "Job has finished" / "invalid state" complaints."""
    raise_if_unreachable(stderr, exit_status)
    if exit_status == 0:
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


def parse_qstat_version(stdout: str, stderr: str, exit_status: int) -> str:
    """``qstat --version``: ``pbs_version = 19.1.3`` (PBS) or ``Version: 6.1.2`` (Torque)."""
    text = f"{stdout}\n{stderr}"
    match = _VERSION_PBS.search(text)
    if match:
        return f"PBS {match.group(1)}"
    match = _VERSION_TORQUE.search(text)
    if match:
        return f"Torque {match.group(1)}"
    raise_if_unreachable(stderr, exit_status)
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
) -> Observation | None:
    """One job from its attributes (``job_state``, ``Job_Name``, ``Exit_status`` /
    ``exit_status``, ``Hold_Types``, ``comment``, start/end times); None if it has no
    known state."""
    state = as_text(attrs.get("job_state"))
    if state is None or state[:1] not in state_map:
        return None
    phase = state_map[state[:1]]
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
            if state[:1] == "H"
            else f"suspended{': ' + comment if comment else ''}"
        )
    elif phase is Phase.GONE:
        reason = "moved to another server"
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
    for raw in text.splitlines():
        if raw.startswith("Job Id:"):
            native_id = raw[len("Job Id:") :].strip()
            current = jobs.setdefault(native_id, {}) if native_id else None
            key = indent = None
            continue
        if current is None or not raw.strip():
            continue
        match = _ATTR_LINE.match(raw)
        if match and indent in (None, match.group(1)):
            indent, key = match.group(1), match.group(2)
            current[key] = match.group(3)
        elif key is not None and raw[:1] in "\t ":
            current[key] += raw.strip()
    return jobs


# --- qstat -f -F json ----------------------------------------------------------------------

_KEY_VALUE_LINE: Final = re.compile(r'^(\s*"(?:[^"\\]|\\.)*"\s*:\s*)(.*?)(\s*,?\s*)$')
_JOB_HEADER: Final = re.compile(r'^\s*"(\d+(?:\[\d*\])?(?:\.[^"\s]*)?)"\s*:\s*\{\s*$', re.MULTILINE)
_SCAN_KEYS: Final = (
    "Job_Name",
    "job_state",
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
    return {str(k): v for k, v in raw_jobs.items() if isinstance(v, dict)}


def parse_qstat_common(
    stdout: str,
    stderr: str,
    exit_status: int,
    jobs_of: Any,
    state_map: Mapping[str, Phase | None],
    *,
    walltime_exit: int,
) -> dict[str, Observation]:
    """Shared tail of PBS Pro and Torque status parsing: errors, then each job."""
    raise_if_unreachable(stderr, exit_status, stdout)
    jobs: dict[str, Mapping[str, object]] = jobs_of(stdout)
    if not jobs and exit_status != 0:
        other = unexpected_stderr(stderr)
        if other or not _lines(stderr):
            raise RemoteCommandError(
                "qstat failed: " + (" / ".join(other) or f"exit status {exit_status}")[:300],
                exit_status=exit_status,
                stderr=stderr,
            )
    found: dict[str, Observation] = {}
    for native_id, attrs in jobs.items():
        obs = observe(native_id, attrs, state_map, walltime_exit=walltime_exit)
        if obs is not None:
            found[native_id] = obs
    return found


def _pbspro_jobs(stdout: str) -> Mapping[str, Mapping[str, object]]:
    if json_start(stdout) is None and "Job Id:" in stdout:
        return parse_full_text(stdout)
    return parse_json_jobs(stdout)


# --- the dialect ---------------------------------------------------------------------------


def parse_qselect(stdout: str, stderr: str, exit_status: int) -> list[str]:
    """Job ids, one per line, from ``qselect``."""
    raise_if_unreachable(stderr, exit_status, stdout)
    if exit_status != 0:
        raise RemoteCommandError(
            f"qselect failed (exit {exit_status}): {' / '.join(_lines(stderr))[:300]}",
            exit_status=exit_status,
            stderr=stderr,
        )
    ids = []
    for line in _lines(stdout):
        if not re.fullmatch(r"\d+(\[\d*\])?(\.[\w.-]+)?", line):
            raise ParseError(f"qselect printed {line[:100]!r}, not a job id")
        ids.append(line)
    return ids


class PbsProDialect:
    """PBS Professional and OpenPBS."""

    name = "pbspro"
    has_dry_run = False
    #: the status command lists only the ids we give it; ``qselect -u`` counts the rest
    status_lists_user_jobs = False

    def list_user_argv(self, user: str) -> list[str]:
        return ["qselect", "-u", user]

    def parse_list_user(self, stdout: str, stderr: str, exit_status: int) -> list[str]:
        return parse_qselect(stdout, stderr, exit_status)

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
        return parse_qsub(stdout, stderr, exit_status)

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
        parse_qdel(stdout, stderr, exit_status)

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *native_ids]

    def version_argv(self) -> list[str]:
        return ["qstat", "--version"]

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        return parse_qstat_version(stdout, stderr, exit_status)

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
