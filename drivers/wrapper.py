"""The job wrapper every driver submits, and the exit-file protocol (DESIGN.md invariant 4).

The wrapper is POSIX ``sh``. It runs the user command in the background so that traps
fire at once, forwards TERM/INT/HUP/USR2/XCPU to it, and when the command ends writes
``<workdir>/.schedulerd/<name>.exit`` atomically (temp file + ``mv`` in the same
directory) with the exit code, start and end times and the trapped signal. When the
batch system forgets a job, that file decides its final state.

Everything here is pure: strings in, strings out.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Iterable, Sequence

from schedulerd.drivers.base import ExitRecord, JobRequest
from schedulerd.errors import ParseError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: the wrapper's own variables start with this; a job's ``env`` may not set such a name
RESERVED_ENV_PREFIX = "__sd_"
#: what the wrapper exports to the job itself; a job's ``env`` may not set these either
RESERVED_ENV_NAMES = frozenset({"SCHEDULERD_JOB_ID", "SCHEDULERD_ATTEMPT", "SCHEDULERD_JOB_NAME"})
TRAPPED_SIGNALS = ("TERM", "INT", "HUP", "USR2", "XCPU")
EXIT_MARKER = "@@schedulerd-exit-file "


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one of a job's environment variables, or None."""
    if not ENV_NAME.match(name):
        return f"{name!r} is not a valid variable name"
    if name.startswith(RESERVED_ENV_PREFIX) or name in RESERVED_ENV_NAMES:
        return (
            f"{name} is reserved for the job wrapper (names starting with {RESERVED_ENV_PREFIX},"
            f" {', '.join(sorted(RESERVED_ENV_NAMES))})"
        )
    return None


def render_wrapper(job: JobRequest, directives: Sequence[str] = ()) -> str:
    """The whole job script: shebang, scheduler directives, wrapper, user command.

    The job's ``env`` is set only in the subshell that ``exec``s the command: the
    wrapper's own variables and its ``PATH`` (``date``, ``mv``) stay its own whatever the
    job sets, so the exit file is always written.
    """
    q = shlex.quote
    lines = ["#!/bin/sh", *directives]
    lines.append(f"# schedulerd job {job.job_id}, attempt {job.attempt}: {job.name}")
    lines += [
        f"__sd_dir={q(job.control_dir)}",
        f"__sd_exit={q(job.exit_path)}",
        "__sd_started=",
        "__sd_child=",
        "__sd_signal=",
        "__sd_record() {",
        '    __sd_tmp="$__sd_dir/.tmp.$$.exit"',
        (
            "    printf 'exit_code=%s\\nstarted=%s\\nfinished=%s\\nsignal=%s\\n' "
            '"$1" "$__sd_started" "$(date +%s)" "$__sd_signal" > "$__sd_tmp" '
            '&& mv -f -- "$__sd_tmp" "$__sd_exit"'
        ),
        "}",
        "__sd_on_signal() {",
        "    __sd_signal=$1; __sd_signal_rc=$2",
        '    if [ -n "$__sd_child" ]; then kill -TERM "$__sd_child" 2>/dev/null; fi',
        "}",
    ]
    for sig in TRAPPED_SIGNALS:
        lines.append(f"trap '__sd_on_signal {sig} {128 + signal.Signals['SIG' + sig].value}' {sig}")
    lines += [
        "__sd_started=$(date +%s)",
        'mkdir -p -- "$__sd_dir" || exit 1',
        f"cd -- {q(job.workdir)} || {{ __sd_record 1; exit 1; }}",
        f"SCHEDULERD_JOB_ID={job.job_id}; export SCHEDULERD_JOB_ID",
        f"SCHEDULERD_ATTEMPT={job.attempt}; export SCHEDULERD_ATTEMPT",
        f"SCHEDULERD_JOB_NAME={q(job.name)}; export SCHEDULERD_JOB_NAME",
    ]
    lines += [
        "# a signal before the command starts: it never starts",
        'if [ -n "$__sd_signal" ]; then __sd_record "$__sd_signal_rc"; exit "$__sd_signal_rc"; fi',
        "# the job's environment only in the subshell that becomes the command",
        "(",
    ]
    for key, value in job.env.items():
        problem = env_name_problem(key)
        if problem is not None:
            raise ValueError(f"env: {problem}")
        lines.append(f"{key}={q(value)}; export {key}")
    lines += [
        f"exec {shlex.join(job.argv)}",
        ") </dev/null &",
        "__sd_child=$!",
        "# a signal between the start and the line above found no child to pass it on to",
        'if [ -n "$__sd_signal" ]; then kill -TERM "$__sd_child" 2>/dev/null; fi',
        "while :; do",
        '    wait "$__sd_child"; __sd_rc=$?',
        "    # a trapped signal interrupts wait; keep waiting until the command is gone",
        '    if [ -n "$__sd_signal" ] && kill -0 "$__sd_child" 2>/dev/null; then continue; fi',
        "    break",
        "done",
        '__sd_record "$__sd_rc"',
        'exit "$__sd_rc"',
        "",
    ]
    return "\n".join(lines)


def parse_exit_file(text: str) -> ExitRecord:
    """Parse the ``key=value`` lines the wrapper writes."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        exit_code = int(fields["exit_code"])
    except (KeyError, ValueError) as exc:
        raise ParseError(f"exit file has no valid exit_code: {text[:200]!r}") from exc

    def _time(key: str) -> float | None:
        raw = fields.get(key, "")
        try:
            return float(raw) if raw else None
        except ValueError:
            return None

    return ExitRecord(
        exit_code=exit_code,
        started_at=_time("started"),
        finished_at=_time("finished"),
        signal=fields.get("signal") or None,
    )


def read_exit_files_command(paths: Iterable[str]) -> tuple[str, str]:
    """ONE shell command that prints every existing exit file among ``paths``, and the
    input to feed it: the paths go one per line on stdin, never on the command line,
    so 5,000 of them fit (an SSH packet or a single argument would not)."""
    script = (
        'while IFS= read -r f; do if [ -f "$f" ]; then '
        f'printf \'{EXIT_MARKER}%s\\n\' "$f"; cat -- "$f"; echo; fi; done'
    )
    return shlex.join(["sh", "-c", script]), "".join(f"{p}\n" for p in paths)


def parse_exit_files(output: str) -> dict[str, ExitRecord]:
    """Parse the output of :func:`read_exit_files_command`; unreadable files are skipped."""
    found: dict[str, ExitRecord] = {}
    path: str | None = None
    body: list[str] = []

    def _flush() -> None:
        if path is None:
            return
        try:
            found[path] = parse_exit_file("\n".join(body))
        except ParseError:
            pass  # a half-written or foreign file: treat as absent, the timeout decides

    for line in output.splitlines():
        if line.startswith(EXIT_MARKER):
            _flush()
            path, body = line[len(EXIT_MARKER) :], []
        else:
            body.append(line)
    _flush()
    return found
