"""Slurm: ``sbatch --parsable``, ``squeue``, ``sacct``, ``scancel``, ``scontrol hold``.

Pure command builders and output parsers (see :mod:`schedulerd.drivers.dialect`); the
refusal table is :mod:`schedulerd.drivers.slurm_refusals`.

Time stamps: every query runs under ``env SLURM_TIME_FORMAT=%s`` so Slurm prints epoch
seconds (the variable accepts a ``strftime`` format, see ENVIRONMENT VARIABLES in
squeue(1)/sacct(1)); the parsers also accept the ``standard`` ISO form
(``2013-05-23T11:41:30``, read as local time of this machine) and ignore anything else
(``relative`` times, ``N/A``, ``Unknown``).

Layouts: the ``squeue`` format is the 14-field ``^^^``-separated layout also used by
other tools (so real captures of it test this parser), with ``%T`` (long state names);
the parser accepts the compact ``%t`` codes as well. The ``sacct`` fields start with the
11 fields of the captures in the fixtures and add ``JobName`` last.

History without accounting: ``sacct`` on a cluster without slurmdbd answers "SLURM
accounting storage is disabled"; :meth:`SlurmDialect.parse_history` then returns ``{}``
(no history), and the job's exit file decides its final state.

Longer than ~500 lines because it is one dialect whose parsers are methods next to the
argv they read: ``squeue``/``sacct`` field lists and the parsers that index them are
kept side by side so a field added to one is read by the other. The refusal table, the
one large block of data, is apart.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schedulerd.drivers.base import FINISHED_PHASES, JobRequest, Observation, Phase
from schedulerd.drivers.dialect import problems_or_render_error
from schedulerd.drivers.shell import is_one_line
from schedulerd.drivers.slurm_refusals import classify, refusal_kind
from schedulerd.drivers.wrapper import render_wrapper
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

# --- state map ------------------------------------------------------------------------------

#: squeue(1) "JOB STATE CODES" (long names as printed by ``%T``; compact codes by ``%t``),
#: also the states sacct(1) "JOB STATE CODES" prints.
STATE_MAP: dict[str, Phase] = {
    "BOOT_FAIL": Phase.FAILED,  # BF: terminated due to launch failure (node boot)
    "CANCELLED": Phase.CANCELLED,  # CA: cancelled by the user or administrator
    "COMPLETED": Phase.COMPLETED,  # CD: all processes terminated with exit code zero
    "CONFIGURING": Phase.QUEUED,  # CF: allocated, waiting for nodes to boot
    "COMPLETING": Phase.RUNNING,  # CG: in the process of completing
    "DEADLINE": Phase.TIMEOUT,  # DL: terminated on deadline
    "FAILED": Phase.FAILED,  # F: non-zero exit code or other failure
    "NODE_FAIL": Phase.FAILED,  # NF: terminated due to failure of allocated node(s)
    "OUT_OF_MEMORY": Phase.FAILED,  # OOM: experienced out of memory error
    "PENDING": Phase.QUEUED,  # PD: awaiting resource allocation
    "PREEMPTED": Phase.FAILED,  # PR: terminated due to preemption
    "RUNNING": Phase.RUNNING,  # R: currently has an allocation
    "RESV_DEL_HOLD": Phase.HELD,  # RD: held because its reservation was deleted
    "REQUEUE_FED": Phase.QUEUED,  # RF: requeued by a federation
    "REQUEUE_HOLD": Phase.HELD,  # RH: held job being requeued
    "REQUEUED": Phase.QUEUED,  # RQ: completing job being requeued
    "RESIZING": Phase.RUNNING,  # RS: about to change size
    "REVOKED": Phase.CANCELLED,  # RV: sibling removed from the cluster (federation)
    "SIGNALING": Phase.RUNNING,  # SI: being signalled
    "SPECIAL_EXIT": Phase.FAILED,  # SE: requeued in a special state
    "STAGE_OUT": Phase.RUNNING,  # SO: staging out files
    "STOPPED": Phase.HELD,  # ST: stopped with SIGSTOP
    "SUSPENDED": Phase.HELD,  # S: allocated resources, execution suspended
    "TIMEOUT": Phase.TIMEOUT,  # TO: terminated upon reaching its time limit
    "LAUNCH_FAILED": Phase.FAILED,  # sacct only (older releases)
    "POWER_UP_NODE": Phase.QUEUED,
}

#: the ``%t`` compact codes of squeue(1) "JOB STATE CODES"
COMPACT_STATES: dict[str, str] = {
    "BF": "BOOT_FAIL",
    "CA": "CANCELLED",
    "CD": "COMPLETED",
    "CF": "CONFIGURING",
    "CG": "COMPLETING",
    "DL": "DEADLINE",
    "F": "FAILED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PD": "PENDING",
    "PR": "PREEMPTED",
    "R": "RUNNING",
    "RD": "RESV_DEL_HOLD",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RQ": "REQUEUED",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SI": "SIGNALING",
    "SE": "SPECIAL_EXIT",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "S": "SUSPENDED",
    "TO": "TIMEOUT",
}

#: squeue(1) "JOB REASON CODES" that mean a pending job is held
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin", "launch failed requeued held"})

# --- formats ----------------------------------------------------------------------------------

SQUEUE_SEPARATOR = "^^^"
#: id, state, reason, batch host, user, nodes, cpus, reason/nodelist, partition,
#: time limit, time used, start time, name, submit time
SQUEUE_FIELDS = ("%i", "%T", "%r", "%B", "%u", "%D", "%C", "%R", "%P", "%l", "%M", "%S", "%j", "%V")
SQUEUE_FORMAT = SQUEUE_SEPARATOR.join(SQUEUE_FIELDS)
_SQ_ID, _SQ_STATE, _SQ_REASON, _SQ_START, _SQ_NAME = 0, 1, 2, 11, 12

SACCT_FIELDS = (
    "jobid",
    "exitcode",
    "state",
    "ncpus",
    "elapsed",
    "totalcpu",
    "submit",
    "start",
    "end",
    "maxrss",
    "maxvmsize",
    "jobname",
)
_SA_ID, _SA_EXIT, _SA_STATE, _SA_START, _SA_END, _SA_NAME = 0, 1, 2, 7, 8, 11
_SA_MIN_FIELDS = 11

#: how far before ``since`` the sacct window opens: sacct reads --starttime in the head's
#: local time zone, which we do not know; -j restricts the output to our jobs anyway
HISTORY_MARGIN_S = 2 * 86400

TIME_ENV = "SLURM_TIME_FORMAT=%s"

# --- error wordings ---------------------------------------------------------------------------

#: "unknown job" complaints that are not errors for status/cancel/hold: the job has left
#: (squeue/scancel/scontrol: ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE) or is past being
#: held (scontrol: ESLURM_JOB_NOT_PENDING; the poll reports what it is doing)
UNKNOWN_JOB_ERRORS = (
    "invalid job id specified",
    "already completing or completed",
    "job is no longer pending execution",
)
ACCOUNTING_DISABLED = "accounting storage is disabled"

_PARSABLE_ID = re.compile(r"^(\d+(?:_\d+)?)(?:;(\S+))?$")
_SUBMITTED = re.compile(r"^Submitted batch job (\d+)(?: on cluster (\S+))?$")
_VERSION = re.compile(r"^slurm(?:-wlm)?\s+(\d[\w.\-]*)", re.IGNORECASE)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_EXIT = re.compile(r"^(-?\d+):(-?\d+)$")
#: a job id as squeue %i / sacct JobID print it: ``123``, an array element ``123_4``, a
#: pending array's meta-record ``123_[5-9%2]`` (squeue/print.c, slurmdb_defs.c), a
#: heterogeneous job's component ``123+1``
_JOB_ID = re.compile(r"^\d+(?:_(?:\d+|\[[^\]\s]*\]))?(?:\+\d+)?$")
#: scancel's own lines (src/scancel: "scancel: error: Kill job error on job id N: <why>";
#: with -v "scancel: Terminating job N", "scancel: Signal N to job N") and scontrol
#: hold/release's per-job lines ("<why> for job N", src/scontrol/update_job.c)
_SCANCEL_ERROR = re.compile(r"^scancel: error: (?P<why>.*)$")
_SCANCEL_NOTE = re.compile(r"^scancel: (?:Terminating|Signal \d+ to|Sending signal) ")
_SCONTROL_JOB = re.compile(r"^(?P<why>[A-Z][^:]*) for job \S+$")
_SCONTROL_ERROR = re.compile(r"^(?:scontrol: error: |slurm_update error: )(?P<why>.*)$")


def _error_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _parse_time(raw: str) -> float | None:
    """Epoch seconds from ``%s`` or ``standard`` output; None for N/A, Unknown, relative."""
    raw = raw.strip()
    if raw.isdigit():
        value = float(raw)
        return value if value > 0 else None
    if _ISO.match(raw):
        try:
            return datetime.fromisoformat(raw).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    return None


def _parse_exit(raw: str) -> tuple[int, int] | None:
    """``code:signal`` (sacct ExitCode) -> (code, signal)."""
    m = _EXIT.match(raw.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


def _state_name(raw: str) -> str:
    """The state word: ``CANCELLED by 1000`` -> ``CANCELLED``, ``PD`` -> ``PENDING``."""
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return COMPACT_STATES.get(word, word)


def _check_value(what: str, value: str) -> str:
    if not is_one_line(value):
        raise ValueError(f"{what} must not contain a newline: {value!r}")
    return value


def _directive_value(what: str, value: str) -> str:
    """A value for an ``#SBATCH --opt=value`` line: sbatch reads double quotes, and a
    backslash escapes the next character (it would vanish from the path)."""
    _check_value(what, value)
    if '"' in value or "\\" in value:
        raise ValueError(f"{what} must not contain a double quote or a backslash: {value!r}")
    if value == "" or re.search(r"[\s'\\]", value):
        return f'"{value}"'
    return value


def _filename_pattern(path: str) -> str:
    """sbatch(1) "filename pattern": ``%`` starts a replacement symbol, ``%%`` is a ``%``."""
    return path.replace("%", "%%")


# --- what a job may ask for -------------------------------------------------------------------

#: Upper bounds sbatch can carry (slurm.h ``job_desc_msg_t``): ``cpus_per_task`` is a
#: uint16_t whose two top values mean NO_VAL16/INFINITE16, ``time_limit`` a uint32_t of
#: minutes whose two top values mean NO_VAL/INFINITE (sbatch rounds seconds up to
#: minutes), ``pn_min_memory`` a uint64_t of MB whose top bit flags "per CPU".
MAX_CPUS = 0xFFFD
MAX_WALLTIME_S = 0xFFFFFFFD * 60
MAX_MEMORY_MB = 2**63 - 1

#: sbatch options a job may not set: each breaks "one job, one run" (--array runs it N
#: times; --requeue/--no-requeue override the job's ``requeue`` field) or moves what
#: schedulerd relies on (the job name for reconciliation, the directory of the exit file,
#: the stdout/stderr paths it reports). Long name -> short letter.
FORBIDDEN_OPTIONS: dict[str, str | None] = {
    "array": "a",
    "job-name": "J",
    "output": "o",
    "error": "e",
    "chdir": "D",
    "requeue": None,
    "no-requeue": None,
}
_FORBIDDEN_SHORT = {short: long for long, short in FORBIDDEN_OPTIONS.items() if short}
_WHY = {
    "array": "an array would run the job several times",
    "job-name": "schedulerd finds the job again by the name it gives it",
    "output": "use the workdir field (stdout goes to <workdir>/<submit name>.out)",
    "error": "use the workdir field (stderr goes to <workdir>/<submit name>.err)",
    "chdir": "use the workdir field",
    "requeue": "use the requeue field",
    "no-requeue": "use the requeue field",
}
#: sbatch's short options that take an argument (the rest of a clustered word is it);
#: ``k`` takes an optional one
_SHORT_WITH_ARGUMENT = frozenset("ABcCdDeFGiJkLmMnNopqStwx")


def forbidden_directives(directives: Sequence[str]) -> list[str]:
    """One problem per directive that sets a forbidden sbatch option, in every spelling
    sbatch reads: ``--array=1-3``, ``--array 1-3``, ``--arr=1-3`` (getopt_long takes
    unique abbreviations), ``-a1-3``, ``-a 1-3``, ``-Ha1-3`` (clustered), with or
    without ``#SBATCH`` in front, several options on one line."""
    problems = []
    for directive in directives:
        text = directive.strip().removeprefix("#SBATCH")
        for word in _words(text):
            found = _forbidden_in_word(word)
            if found is not None:
                short = FORBIDDEN_OPTIONS[found]
                shown = (
                    f"--{found}"
                    if short is None or word.startswith("--")
                    else f"-{short} (--{found})"
                )
                problems.append(
                    f"directive {directive.strip()!r}: {shown} is not allowed: {_WHY[found]}"
                )
                break
    return problems


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: sbatch would refuse the line anyway
        return text.split()


def _forbidden_in_word(word: str) -> str | None:
    if word.startswith("--"):
        name = word[2:].split("=", 1)[0]
        if name:
            for long in FORBIDDEN_OPTIONS:
                if long.startswith(name):
                    return long
        return None
    if word.startswith("-") and len(word) > 1:
        for letter in word[1:]:
            if letter in _FORBIDDEN_SHORT:
                return _FORBIDDEN_SHORT[letter]
            if letter in _SHORT_WITH_ARGUMENT:
                return None
    return None


def _check_limits(job: JobRequest) -> None:
    if job.cpus is not None and not 0 < job.cpus <= MAX_CPUS:
        raise ValueError(f"cpus {job.cpus}: Slurm takes 1 to {MAX_CPUS} CPUs per task")
    if job.memory_mb is not None and not 0 < job.memory_mb <= MAX_MEMORY_MB:
        raise ValueError(f"memory {job.memory_mb} MB: more than Slurm can hold")
    if job.walltime_s is not None and not 0 < job.walltime_s <= MAX_WALLTIME_S:
        raise ValueError(
            f"walltime {job.walltime_s}s: Slurm's time limit is at most {MAX_WALLTIME_S // 60} minutes"
        )


def validate_job(job: JobRequest) -> list[str]:
    """Why sbatch could never take ``job`` (empty: it can), without rendering the wrapper."""
    problems = forbidden_directives(job.extra_directives)
    return problems_or_render_error(problems, lambda: SlurmDialect().directives(job))


def _walltime(seconds: int) -> str:
    """sbatch --time in ``days-hours:minutes:seconds``."""
    seconds = max(int(seconds), 1)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True, slots=True)
class _SacctRecord:
    state: str
    raw_state: str
    exit: tuple[int, int] | None
    start: float | None
    end: float | None
    name: str | None


class SlurmDialect:
    """Slurm batch system (sbatch/squeue/sacct/scancel/scontrol)."""

    name = "slurm"
    has_dry_run = True

    # --- scripts ------------------------------------------------------------------------

    def directives(self, job: JobRequest) -> list[str]:
        _check_limits(job)
        forbidden = forbidden_directives(job.extra_directives)
        if forbidden:
            raise ValueError(forbidden[0])
        d = "#SBATCH "
        lines = [
            f"{d}--job-name={_directive_value('name', job.name)}",
            f"{d}--chdir={_directive_value('workdir', job.workdir)}",
            f"{d}--output={_directive_value('stdout', _filename_pattern(job.stdout_path))}",
            f"{d}--error={_directive_value('stderr', _filename_pattern(job.stderr_path))}",
        ]
        if job.queue:
            lines.append(f"{d}--partition={_directive_value('queue', job.queue)}")
        if job.cpus is not None:
            lines.append(f"{d}--cpus-per-task={int(job.cpus)}")
        if job.memory_mb is not None:
            lines.append(f"{d}--mem={int(job.memory_mb)}M")
        if job.walltime_s is not None:
            lines.append(f"{d}--time={_walltime(job.walltime_s)}")
        if job.account:
            lines.append(f"{d}--account={_directive_value('account', job.account)}")
        lines.append(f"{d}--requeue" if job.requeue else f"{d}--no-requeue")
        for extra in job.extra_directives:
            _check_value("extra directive", extra)
            extra = extra.strip()
            lines.append(extra if extra.startswith("#SBATCH") else f"{d}{extra}")
        return lines

    def render_script(self, job: JobRequest) -> str:
        return render_wrapper(job, self.directives(job))

    def extra_files(self, job: JobRequest) -> dict[str, str]:
        return {}

    # --- submit -------------------------------------------------------------------------

    def submit_argv(self, job: JobRequest) -> list[str]:
        return ["sbatch", "--parsable", job.script_path]

    def dry_run_argv(self, job: JobRequest) -> list[str] | None:
        return ["sbatch", "--test-only", job.script_path]

    def parse_submit(self, stdout: str, stderr: str, exit_status: int) -> str:
        errors = [line for line in _error_lines(stderr) if "error" in line.lower()]
        if exit_status != 0 or any("submission failed" in e.lower() for e in errors):
            lines = errors or _error_lines(stderr) or _error_lines(stdout)
            message = "; ".join(lines) or f"sbatch exited with status {exit_status}"
            kind = refusal_kind(f"{stderr}\n{stdout}")
            raise SubmitRejected(message[:500], transient=kind == "transient", auth=kind == "auth")
        for line in _error_lines(stdout):
            m = _PARSABLE_ID.match(line) or _SUBMITTED.match(line)
            if m:
                # "<id>;<cluster>": the id alone; squeue/sacct print it without the cluster
                return m.group(1)
        raise ParseError(f"no job id in sbatch output: {stdout[:200]!r}")

    # --- status -------------------------------------------------------------------------

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        # with its header: the header alone is an empty queue, no header is no answer
        return ["env", TIME_ENV, "squeue", "-u", user, "-o", SQUEUE_FORMAT]

    def _raise_for_status(self, command: str, stderr: str, exit_status: int) -> None:
        """A failed squeue/sacct, classed by :data:`REFUSALS` (a passing or credential
        wording fails the command whatever its exit status); "unknown job" notes alone
        are not a failure."""
        lines = _error_lines(stderr)
        row = classify(stderr) if lines else None
        if row is not None and row.kind != "permanent":
            raise RemoteCommandError(
                f"{command}: {'; '.join(lines)[:300]}",
                exit_status=exit_status,
                stderr=stderr,
                transient=row.kind == "transient",
                auth=row.kind == "auth",
            )
        if exit_status != 0:
            if lines and all(any(u in ln.lower() for u in UNKNOWN_JOB_ERRORS) for ln in lines):
                return
            raise RemoteCommandError(
                f"{command} exited with status {exit_status}: {'; '.join(lines)[:300]}",
                exit_status=exit_status,
                stderr=stderr,
            )

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        """squeue's header (we ask for it) and rows; lines without the separator are banners.

        Recognised answers only: a row whose first field is no job id, or an output with
        neither our header nor a row (another layout, a wrapper's text, an error page, a
        shell's "command not found"), is a :class:`ParseError`, never an empty queue. Only
        our header alone is an empty queue (or an "Invalid job id" answer, for ``-j``)."""
        self._raise_for_status("squeue", stderr, exit_status)
        unknown_ids = exit_status != 0  # only "unknown job" notes: those ids are not queued
        found: dict[str, Observation] = {}
        n = len(SQUEUE_FIELDS)
        header = False
        for line in stdout.splitlines():
            if SQUEUE_SEPARATOR not in line:
                continue  # banners and other noise
            parts = line.strip().split(SQUEUE_SEPARATOR)
            if parts[0].strip().upper() == "JOBID" and len(parts) == n:
                header = True
                continue
            if len(parts) < n:
                raise ParseError(f"squeue line has {len(parts)} fields, expected {n}: {line!r}")
            # the name may itself contain the separator: it is everything between
            # the start time and the submit time
            name = SQUEUE_SEPARATOR.join(parts[_SQ_NAME:-1])
            native_id = parts[_SQ_ID].strip()
            if not _JOB_ID.match(native_id):
                raise ParseError(f"squeue line without a job id: {line[:200]!r}")
            raw_state = parts[_SQ_STATE].strip()
            if not re.fullmatch(r"[A-Z_]+", raw_state):
                raise ParseError(f"squeue line without a job state: {line[:200]!r}")
            state = _state_name(raw_state)
            reason = parts[_SQ_REASON].strip()
            reason_or_none = None if reason in ("", "None", "(null)") else reason
            phase = STATE_MAP.get(state)
            if phase is None:
                phase, reason_or_none = Phase.QUEUED, f"unrecognised Slurm state {raw_state}"
            elif phase is Phase.QUEUED and reason in HELD_REASONS:
                phase = Phase.HELD
            elif state in ("SUSPENDED", "STOPPED") and reason_or_none is None:
                reason_or_none = state.lower()
            started = None
            if phase in (Phase.RUNNING, Phase.HELD) or phase in FINISHED_PHASES:
                started = _parse_time(parts[_SQ_START])
            found[native_id] = Observation(
                native_id=native_id,
                phase=phase,
                exit_code=0 if phase is Phase.COMPLETED else None,
                reason=reason_or_none,
                name=name.strip() or None,
                started_at=started,
            )
        if not header and not found and not unknown_ids:
            raise ParseError(
                f"squeue: output not understood (no header, no job line): {stdout[:200]!r}"
                + (f" / {stderr.strip()[:200]!r}" if stderr.strip() else "")
            )
        return found

    # --- history ------------------------------------------------------------------------

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        start = datetime.fromtimestamp(max(since - HISTORY_MARGIN_S, 0), UTC)
        argv = [
            "env",
            TIME_ENV,
            "sacct",
            "--parsable2",
            "--starttime",
            start.strftime("%Y-%m-%dT%H:%M:%S"),
            "--format",
            ",".join(SACCT_FIELDS),
        ]
        if native_ids:
            argv += ["-j", ",".join(native_ids)]
        else:
            argv += ["-u", user]
        return argv

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        if ACCOUNTING_DISABLED in (stderr + stdout).lower():
            return {}  # no accounting: the exit file decides
        self._raise_for_status("sacct", stderr, exit_status)
        unknown_ids = exit_status != 0  # only "unknown job" notes
        allocations: dict[str, _SacctRecord] = {}
        batch_steps: dict[str, _SacctRecord] = {}
        header = False
        for line in stdout.splitlines():
            if "|" not in line:
                continue  # noise
            parts = line.strip().split("|")
            if [p.strip().lower() for p in parts[: len(SACCT_FIELDS)]] == list(SACCT_FIELDS):
                header = True  # --parsable2 with its header: JobID|ExitCode|State|...
                continue
            if len(parts) < _SA_MIN_FIELDS:
                raise ParseError(f"sacct line has {len(parts)} fields: {line!r}")
            job_id = parts[_SA_ID].strip()
            if not _JOB_ID.match(job_id.split(".", 1)[0]):
                raise ParseError(f"sacct line without a job id: {line[:200]!r}")
            name = "|".join(parts[_SA_NAME:]) if len(parts) > _SA_NAME else ""
            record = _SacctRecord(
                state=_state_name(parts[_SA_STATE]),
                raw_state=parts[_SA_STATE].strip(),
                exit=_parse_exit(parts[_SA_EXIT]),
                start=_parse_time(parts[_SA_START]),
                end=_parse_time(parts[_SA_END]),
                name=name or None,
            )
            base, dot, step = job_id.partition(".")
            if not dot:
                allocations[base] = record  # a requeued job: the last record wins
            elif step == "batch":
                batch_steps[base] = record
        if not header and not allocations and not batch_steps and not unknown_ids:
            raise ParseError(
                f"sacct: output not understood (no header, no job line): {stdout[:200]!r}"
            )
        return {
            job_id: self._observation(job_id, record, batch_steps.get(job_id))
            for job_id, record in allocations.items()
        }

    @staticmethod
    def _observation(job_id: str, record: _SacctRecord, batch: _SacctRecord | None) -> Observation:
        phase = STATE_MAP.get(record.state)
        reason: str | None = None
        if phase is None:
            phase, reason = Phase.QUEUED, f"unrecognised Slurm state {record.raw_state}"
        elif record.state not in ("COMPLETED", "FAILED", "PENDING", "RUNNING"):
            reason = record.raw_state
            m = re.match(r"^CANCELLED by (\d+)$", record.raw_state)
            if m:
                reason = f"cancelled by uid {m.group(1)}"
        exit_code: int | None = None
        if phase in (Phase.COMPLETED, Phase.FAILED) and record.state not in (
            "NODE_FAIL",
            "BOOT_FAIL",
            "PREEMPTED",
        ):
            exit_code = _exit_code(record.exit)
            if not exit_code and batch is not None:
                exit_code = _exit_code(batch.exit) or exit_code
            if phase is Phase.COMPLETED and exit_code is None:
                exit_code = 0
        finished = record.end if phase in FINISHED_PHASES else None
        return Observation(
            native_id=job_id,
            phase=phase,
            exit_code=exit_code,
            reason=reason,
            name=record.name,
            started_at=record.start,
            finished_at=finished,
        )

    # --- cancel, hold, release ------------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scancel", *native_ids]

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        """scancel (and scontrol hold/release): silent on success. Its error lines fail it
        even with exit status 0 (scancel exits 0 after "Access/permission denied"), classed
        by :data:`REFUSALS`; "unknown job" notes do not. A line that is neither scancel's
        nor scontrol's is not an answer: :class:`ParseError` (exit 0) or a failure."""
        problems: list[str] = []
        foreign: list[str] = []
        lines = _error_lines(stderr) + _error_lines(stdout)
        for line in lines:
            low = line.lower()
            if any(u in low for u in UNKNOWN_JOB_ERRORS) or _SCANCEL_NOTE.match(line):
                continue
            if (
                _SCANCEL_ERROR.match(line)
                or _SCONTROL_ERROR.match(line)
                or _SCONTROL_JOB.match(line)
                or classify(line) is not None
            ):
                problems.append(line)
            else:
                foreign.append(line)
        text = "; ".join(problems + foreign)[:300]
        kind = refusal_kind("\n".join(problems + foreign))
        if problems or (exit_status != 0 and (foreign or not lines)):
            raise RemoteCommandError(
                f"scancel failed: {text or f'exit status {exit_status}'}",
                exit_status=exit_status,
                stderr=stderr,
                transient=kind == "transient",
                auth=kind == "auth",
            )
        if foreign:
            raise ParseError(f"scancel: output not understood: {text!r}")

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scontrol", "hold", ",".join(native_ids)]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["scontrol", "release", ",".join(native_ids)]

    # --- version --------------------------------------------------------------------------

    def version_argv(self) -> list[str]:
        return ["sbatch", "--version"]

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        if exit_status != 0:
            raise RemoteCommandError(
                f"sbatch --version exited with status {exit_status}",
                exit_status=exit_status,
                stderr=stderr,
                transient=refusal_kind(stderr) == "transient",
                auth=refusal_kind(stderr) == "auth",
            )
        for line in _error_lines(stdout):
            m = _VERSION.match(line)
            if m:
                return f"slurm {m.group(1)}"
        raise ParseError(f"no Slurm version in {stdout[:200]!r}")


def _exit_code(value: tuple[int, int] | None) -> int | None:
    """sacct ExitCode ``code:signal``: the code, or 128+signal when a signal ended it."""
    if value is None:
        return None
    code, sig = value
    if code == 0 and sig > 0:
        return 128 + sig
    return code
