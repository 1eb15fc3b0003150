"""IBM Spectrum LSF (and Platform LSF, OpenLava): ``#BSUB`` scripts, ``bsub``, ``bjobs``.

Pure functions only (see :mod:`schedulerd.drivers.dialect`). This module builds the
commands and the script; their answers are read by :mod:`schedulerd.drivers.lsf_parse`.

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

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

from schedulerd.drivers.base import JobRequest, Observation
from schedulerd.drivers.dialect import problems_or_render_error
from schedulerd.drivers.lsf_parse import (
    STATUS_FIELDS,
    parse_bhist,
    parse_bjobs,
    parse_bkill,
    parse_bsub,
    parse_lsid,
    version_numbers,
)
from schedulerd.drivers.shell import is_one_line
from schedulerd.drivers.wrapper import render_wrapper

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
    return problems_or_render_error(problems, lambda: dialect.directives(job))


def _directive_word(what: str, value: str) -> str:
    """One word of a ``#BSUB`` line: bare when safe, else double-quoted."""
    if not is_one_line(value):
        raise ValueError(f"{what} must be one line: {value!r}")
    if '"' in value:
        raise ValueError(f"{what} may not contain a double quote: {value!r}")
    if value and re.fullmatch(r"[A-Za-z0-9_@%+=:,./\[\]-]+", value):
        return value
    return f'"{value}"'


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
            if not is_one_line(extra):
                raise ValueError(f"extra directive must be one line: {extra!r}")
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
        return parse_bsub(stdout, stderr, exit_status)

    # --- status ---------------------------------------------------------------------------

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        fields = " ".join(STATUS_FIELDS)
        if self.output == "json":
            return ["bjobs", "-u", user, "-a", "-json", "-o", fields]
        if self.output == "delimited":
            return ["bjobs", "-u", user, "-a", "-noheader", "-o", f"{fields} delimiter='|'"]
        return ["bjobs", "-u", user, "-a", "-w"]

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        return parse_bjobs(stdout, stderr, exit_status, self.clock())

    # --- history --------------------------------------------------------------------------

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        return ["bhist", "-l", "-n", str(self.history_logfiles), *native_ids]

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        return parse_bhist(stdout, stderr, exit_status, self.clock())

    # --- cancel / hold / release -----------------------------------------------------------

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["bkill", *native_ids]

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        return parse_bkill(stdout, stderr, exit_status)

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
