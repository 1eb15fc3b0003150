"""PBS Professional / OpenPBS: ``#PBS`` scripts, ``qsub``, ``qstat -f -F json``, ``qdel``.

Pure functions only (see :mod:`schedulerd.drivers.dialect`). This module builds the
commands and scripts (the directive checks that PBS Pro and Torque share live here and
:mod:`schedulerd.drivers.torque` imports them); the answers are read by
:mod:`schedulerd.drivers.pbs_parse` (shared with Torque), the refusal table is
:mod:`schedulerd.drivers.pbspro_refusals`.

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

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from schedulerd.drivers.base import JobRequest, Observation
from schedulerd.drivers.dialect import problems_or_render_error
from schedulerd.drivers.pbs_parse import (
    PBSPRO_STATE_MAP,
    PBSPRO_WALLTIME_EXIT,
    parse_qdel,
    parse_qselect,
    parse_qstat_common,
    parse_qstat_version,
    parse_qsub,
    pbspro_jobs,
)
from schedulerd.drivers.pbspro_refusals import REFUSALS
from schedulerd.drivers.refusals import Refusal
from schedulerd.drivers.shell import CONTROL_CHARS
from schedulerd.drivers.wrapper import render_wrapper

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


# --- the dialect ---------------------------------------------------------------------------


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
            pbspro_jobs,
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


def validate_pbs(
    job: JobRequest, dialect: PbsProDialect, *, max_cpus: int, system: str
) -> list[str]:
    """Why qsub (of ``dialect``) could never take ``job``; empty when it can."""
    problems = pbs_forbidden_directives(job.extra_directives)
    problems += pbs_limit_problems(job, max_cpus=max_cpus, system=system)
    return problems_or_render_error(problems, lambda: dialect.directives(job))


def validate_job(job: JobRequest) -> list[str]:
    """Why PBS Pro could never take ``job`` (characters a ``#PBS`` line or a ``-o`` path
    cannot carry, sizes beyond its types, forbidden directives); empty when it can."""
    return validate_pbs(job, PbsProDialect(), max_cpus=PBS_MAX_CPUS, system="PBS Pro")
