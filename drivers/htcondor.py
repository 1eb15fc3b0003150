"""HTCondor: ``condor_submit -terse``, ``condor_q -af:jt``, ``condor_history -af:jt``.

Pure command builders and output parsers (see :mod:`schedulerd.drivers.dialect`); the
refusal table is :mod:`schedulerd.drivers.htcondor_refusals`.

The job script (the wrapper) is the executable of a submit description written next to
it (:meth:`HTCondorDialect.extra_files`); ``batch_name`` carries our job name into
``JobBatchName`` so status lines name their jobs.

Queue and history use the same autoformat query: ``-af:jt`` prints the job id, then each
attribute after a tab (condor_q(1), "-autoformat[:jlhVr,tng]"); missing attributes print
as ``undefined``. The first four attributes are ``JobStatus HoldReasonCode
HoldReasonSubCode HoldReason``, so the space-separated ``-af:j`` form of those four (the
captures in the fixtures) parses too: there, the hold reason is the rest of the line.

About 500 lines, one dialect: the submit description, the autoformat queries and their
parsers; the refusal table is apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.dialect import problems_or_render_error
from schedulerd.drivers.htcondor_refusals import classify
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
    return problems_or_render_error(problems, lambda: HTCondorDialect().submit_description(job))


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
